"""The report's figures (Fig. 1c, 2f, 3a, 3b and the robustness curve) as PNG files, from plain results."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from art_diffpure.reproduce import render as rp
from art_diffpure.evaluations import statistics

__all__ = ["figures"]


def _fig1c(r: dict[str, Any], out: str) -> str:
    """Fig. 1c: the mean l2 distance to the clean image along the purification trajectory, per sampler."""
    fig, ax = rp.new_figure()
    for k, v in r["fig1c"].items():
        ax.plot(np.arange(len(v)), v, label=k)
    ax.axhline(r["table1"]["ddpm"]["mean"]["l2"]["start"], color="grey", ls=":", label="input (start)")
    ax.set_xlabel("purification state (input, forward noising, reverse steps)")
    ax.set_ylabel("mean l2 distance to the clean image")
    ax.set_title("Fig. 1c: distance along the purification trajectory")
    ax.legend()
    return rp.save_figure(fig, out, "fig1c_trajectory_l2.png")


def _fig2f(r: dict[str, Any], out: str) -> str:
    """Fig. 2f: histograms of the distances to the centroids of the four neighbourhoods."""
    fig, ax = rp.new_figure()
    labels = {"initial": "initial neighbourhood", "vary_input_fixed_xi": "fixed xi, vary input",
              "vary_xi_fixed_input": "fixed input, vary xi", "vary_both": "vary both"}
    for k, v in r["fig2f"].items():
        ax.hist(np.asarray(v), bins=40, alpha=0.5, label=labels.get(k, k))
    ax.set_xlabel("l2 distance to centroid")
    ax.set_ylabel("count")
    ax.set_title("Fig. 2f: distances to centroids")
    ax.legend()
    return rp.save_figure(fig, out, "fig2f_centroid_distances.png")


def _fig3a(r: dict[str, Any], out: str) -> str:
    """Fig. 3a: the singular values of the purifier's Jacobian under fixed randomness."""
    fig, ax = rp.new_figure()
    sv = np.asarray(r["fig3a"]["singular_values"])
    ax.hist(sv.ravel(), bins=50)
    ax.axvline(0.25, color="grey", ls=":")
    ax.axvline(1.0, color="grey", ls="--")
    ax.set_xlabel("singular value of J_f(x0), fixed xi")
    ax.set_ylabel("count")
    ax.set_title("Fig. 3a: Jacobian spectrum")
    return rp.save_figure(fig, out, "fig3a_jacobian_spectrum.png")


def _fig3b(r: dict[str, Any], out: str) -> str:
    """Fig. 3b: compression against aligned robustness per configuration, with the sigmoid fit when there is one."""
    fig, ax = rp.new_figure()
    pts = r["fig3b"]["points"]
    per_image = r["fig3b"].get("adv_correct") or {}
    for c, acc, label in pts:
        if label in per_image:  # 95% interval over the configuration's images (seeds x images)
            iv = statistics.seed_summary(per_image[label]).interval
            ax.errorbar(c, acc, yerr=[[acc - iv.low], [iv.high - acc]], fmt="o", ms=4, capsize=2, lw=0.8)
        else:
            ax.scatter(c, acc, s=18)
        ax.annotate(label, (c, acc), fontsize=6)
    fit = r["fig3b"].get("fit")
    if fit:
        from art_diffpure.metrics import CompressionLawFit

        law = CompressionLawFit(model=fit["model"], params=fit["params"], r2=fit["r2"], n_points=fit["n_points"])
        grid = np.linspace(0, max(p[0] for p in pts) * 1.1, 200)
        ax.plot(grid, law.predict(grid), color="k", lw=1, label=f"sigmoid fit, R²={fit['r2']:.2f}")
        ax.legend()
    ax.set_xlabel("compression rate (uniform, l2)")
    ax.set_ylabel("aligned robust accuracy")
    ax.set_title("Fig. 3b: compression vs aligned robustness (seed means, 95% over images)")
    return rp.save_figure(fig, out, "fig3b_compression_law.png")


def _robustness_curve(r: dict[str, Any], out: str) -> str:
    """Robust accuracy against eps per randomness mode."""
    from art_diffpure.evaluations.robustness_curve import plot_robustness_curve

    fig = plot_robustness_curve(r["robustness_curve"], title="Robust accuracy against eps per randomness mode")
    return rp.save_figure(fig, out, "robustness_curve.png")


def figures(r: dict[str, Any], out: str) -> list[str]:
    """Write the figures of the digits / cifar10 results into ``out``; returns their file names."""
    return [os.path.basename(draw(r, out)) for draw in (_fig1c, _fig2f, _fig3a, _fig3b, _robustness_curve)]
