"""
Robust accuracy against the Linf budget, per randomness mode, beside the undefended classifier and the paper's
compression-rate prediction.

A single robust-accuracy number at one budget hides whether the attack's randomness matches the test's
(Section 4 of the paper): :func:`robustness_curve` runs the same PGD on the same images for every randomness
mode (``"aligned"``, ``"transfer"``, ``"stochastic"``, optionally ``"eot"``), next to the undefended
classifier's curve and the prediction of Section 5 (the purified classifier at eps behaves like the plain
classifier at ``alpha * eps``, alpha the compression rate). :func:`plot_robustness_curve` draws it.

| Paper link: https://arxiv.org/abs/2505.22839 (Liu & Wei, "How Do Diffusion Models Improve Adversarial Robustness?")
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from art_diffpure._utils import Result, index_labels
from art_diffpure.attacks.protocols import rel_step as protocol_rel_step
from art_diffpure.evaluations.pgd import as_classifier, run_pgd, undefended
from art_diffpure.metrics._common import _metric_norm_label
from art_diffpure.purifier import find_purifier

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["CURVE_MODES", "RobustnessCurve", "plot_robustness_curve", "robustness_curve"]

CURVE_MODES = ("aligned", "transfer", "stochastic", "eot")


@dataclass
class RobustnessCurve(Result):
    """
    Robust accuracy as a function of the Linf budget.

    :param eps: the budgets, in the order given.
    :param modes: the randomness modes evaluated.
    :param robust_accuracy: per mode, robust accuracy at every eps (under that mode's test randomness).
    :param clean_accuracy: per mode, clean accuracy at every eps (varies with eps only in fresh-randomness modes).
    :param success: per mode, per eps, the per-sample attack success.
    :param undefended: robust accuracy of the classifier WITHOUT its preprocessing defences, same PGD.
    :param undefended_clean_accuracy: clean accuracy of the undefended classifier.
    :param compression_rate: per eps, the purifier's compression rate alpha (eq. 10, ``compression_norm``,
        at a fixed seed; 1.0 without a purifier, ``None`` if it could not be measured).
    :param theory_eps: ``eps * compression_rate`` per eps.
    :param theory: the undefended PGD evaluated at ``theory_eps`` (the paper's prediction; not interpolated).
    :param monotone: per mode, whether the curve is non-increasing in eps (within ``monotone_tolerance``).
    :param notes: explanations, e.g. why a curve is not monotone or why the theory curve is missing.
    :param config: the attack settings.
    """

    eps: list[float]
    modes: list[str]
    robust_accuracy: dict[str, list[float]]
    clean_accuracy: dict[str, list[float]]
    success: dict[str, list[list[bool]]]
    undefended: list[float]
    undefended_clean_accuracy: float
    compression_rate: list[float | None] | None
    theory_eps: list[float | None] | None
    theory: list[float | None] | None
    monotone: dict[str, bool]
    notes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


def _check_curve_args(eps_list: Sequence[float], modes: Sequence[str]) -> tuple[list[float], list[str]]:
    eps_values = [float(e) for e in eps_list]
    modes = list(modes)
    if not eps_values or any(e <= 0 for e in eps_values):
        raise ValueError(f"eps_list must be non-empty and positive, got {eps_list!r}")
    bad = [m for m in modes if m not in CURVE_MODES]
    if bad or not modes:
        raise ValueError(f"Unknown modes {bad}; expected some of {CURVE_MODES}")
    return eps_values, modes


def _is_non_increasing(values: Sequence[float], eps: Sequence[float], tol: float) -> bool:
    order = np.argsort(eps, kind="stable")
    v = np.asarray(values, dtype=float)[order]
    return bool(np.all(np.diff(v) <= tol + 1e-12))


def _compression_rates(purifier: Any, x: np.ndarray, eps_values: list[float], n_samples: int, norm: Any,
                       purifier_seed: int, rng_seed: int) -> list[float | None]:
    """alpha per eps (1.0 without a purifier: the identity compresses nothing; ``None`` when not finite)."""
    if purifier is None:
        return [1.0] * len(eps_values)
    from art_diffpure.metrics import compression_rate

    rates: list[float | None] = []
    for eps in eps_values:
        rate = compression_rate(purifier, x, eps=eps, n_samples=n_samples, seeds=(int(purifier_seed),), norm=norm,
                                batch_size=max(purifier.batch_size, 1), rng_seed=rng_seed).rate
        rates.append(float(rate) if math.isfinite(rate) else None)
    return rates


def _theory(plain: Any, x: np.ndarray, labels: np.ndarray, eps_values: list[float], rates: list[float | None],
            clean_accuracy: float, pgd: dict[str, Any]) -> tuple[list[float | None], list[float | None]]:
    """``(theory_eps, theory)``: the undefended PGD RUN at ``eps * alpha`` (a zero budget leaves clean accuracy)."""
    theory_eps: list[float | None] = []
    theory: list[float | None] = []
    for eps, rate in zip(eps_values, rates):
        reduced = None if rate is None else eps * rate
        theory_eps.append(reduced)
        if reduced is None:
            theory.append(None)
        else:
            theory.append(run_pgd(plain, x, labels, reduced, "aligned", **pgd)["robust_accuracy"]
                          if reduced > 0 else clean_accuracy)
    return theory_eps, theory


def _monotone_notes(robust: dict[str, list[float]], undef: list[float], eps_values: list[float],
                    monotone: dict[str, bool], tol: float) -> list[str]:
    """Why each non-monotone curve is not monotone."""
    notes = []
    for m, ok in monotone.items():
        if ok:
            continue
        if m in ("stochastic", "eot"):
            notes.append(f"Mode {m!r} is not monotone in eps: its purifier randomness is fresh on every call, so "
                         f"clean and robust accuracy fluctuate between budgets (sampling noise, not a bug).")
        else:
            notes.append(f"Mode {m!r} is not monotone in eps ({robust[m]} at {eps_values}): PGD with a fixed number "
                         f"of steps of size rel_step*eps and one random start is a local search whose path changes "
                         f"with eps, so a larger ball can end in a worse local optimum; more iterations or restarts "
                         f"(see gradient_masking_diagnostics) should remove it, otherwise suspect masked gradients.")
    if not _is_non_increasing(undef, eps_values, tol):
        notes.append(f"The undefended curve is not monotone in eps ({undef}): PGD is a local search; "
                     f"use more iterations or restarts.")
    return notes


def robustness_curve(
    classifier: Any,
    x: np.ndarray,
    y: np.ndarray,
    eps_list: Sequence[float],
    purifier: Any = None,
    modes: Sequence[str] = ("aligned", "transfer", "stochastic"),
    rel_step: float | None = None,
    max_iter: int = 10,
    num_random_init: int = 1,
    seed: int = 0,
    batch_size: int = 32,
    eot_samples: int = 4,
    compression: bool = True,
    compression_samples: int = 4,
    compression_norm: Any = 2,
    compression_seed: int | None = None,
    nb_classes: int | None = None,
    monotone_tolerance: float = 0.0,
) -> RobustnessCurve:
    """
    Robust accuracy against the Linf budget for each randomness mode, on the same images and PGD settings,
    with the undefended classifier's curve and the paper's compression-rate prediction beside it: alpha is
    measured per eps with :func:`art_diffpure.metrics.compression_rate` (random perturbations in the eps-ball,
    one fixed seed) and the undefended PGD is RUN at ``alpha * eps``. Robust accuracy counts clean errors.

    :param classifier: an ART ``PyTorchClassifier`` (with or without a purifier) or a torch model.
    :param x: clean images ``(n, ...)`` in the classifier's clip range; ``y``: labels (indices or one-hot).
    :param eps_list: Linf budgets, e.g. from the undefended classifier's breaking point down to small values.
    :param purifier: a purifier to add to the classifier's preprocessing defences (optional).
    :param modes: randomness modes among ``"aligned"``, ``"transfer"``, ``"stochastic"``, ``"eot"``.
    :param rel_step: PGD step ``eps_step = rel_step * eps`` (default: the one rule,
        :func:`~art_diffpure.attacks.protocols.rel_step` ``(max_iter)``).
    :param max_iter: PGD iterations; ``num_random_init``: PGD random starts; ``batch_size``: attack batch size.
    :param seed: base seed of the attack randomness (and of numpy's global RNG during each attack).
    :param eot_samples: EOT copies of the ``"eot"`` mode.
    :param compression: measure the compression rate and the theory curve, with ``compression_samples``
        random perturbations per image, in ``compression_norm`` (ART's spelling ``2`` / ``np.inf``; the strings
        of :func:`~art_diffpure._utils.parse_norm` too), under purifier seed ``compression_seed`` (default: the
        purifier's own, else ``seed``).
    :param nb_classes: classes of a torch model (default: inferred).
    :param monotone_tolerance: allowed increase of accuracy between consecutive budgets.
    """
    x = np.asarray(x, dtype=np.float32)
    labels = index_labels(y)
    classifier = as_classifier(classifier, x, purifier, nb_classes)
    eps_values, modes = _check_curve_args(eps_list, modes)
    norm_key = _metric_norm_label(compression_norm)
    purifier, plain = find_purifier(classifier), undefended(classifier)
    rel_step = protocol_rel_step(max_iter) if rel_step is None else float(rel_step)
    pgd = dict(rel_step=rel_step, max_iter=max_iter, num_random_init=num_random_init, seed=seed,
               batch_size=batch_size, eot_samples=eot_samples)
    runs = {m: [run_pgd(classifier, x, labels, eps, m, **pgd) for eps in eps_values] for m in modes}
    robust = {m: [r["robust_accuracy"] for r in rs] for m, rs in runs.items()}
    plain_runs = [run_pgd(plain, x, labels, eps, "aligned", **pgd) for eps in eps_values]
    undef, undef_clean = [r["robust_accuracy"] for r in plain_runs], plain_runs[0]["clean_accuracy"]
    notes = [] if purifier is not None else [
        "The classifier has no DiffusionPurifier: every randomness mode runs the same seeded attack."]
    rates = theory_eps = theory = None
    if compression and purifier is None and classifier.preprocessing_defences:
        notes.append("No DiffusionPurifier to measure a compression rate of: no theory curve.")
    elif compression:
        cseed = compression_seed if compression_seed is not None else (
            purifier.seed if purifier is not None and purifier.seed is not None else seed)
        rates = _compression_rates(purifier, x, eps_values, compression_samples, compression_norm, cseed, seed)
        theory_eps, theory = _theory(plain, x, labels, eps_values, rates, undef_clean, pgd)
    monotone = {m: _is_non_increasing(robust[m], eps_values, monotone_tolerance) for m in modes}
    notes += _monotone_notes(robust, undef, eps_values, monotone, monotone_tolerance)
    config = dict(attack="PGD", norm="inf", rel_step=rel_step, max_iter=max_iter, num_random_init=num_random_init,
                  seed=seed, batch_size=batch_size, eot_samples=eot_samples if "eot" in modes else None, n=len(x),
                  compression_norm=norm_key, compression_samples=compression_samples,
                  purifier=None if purifier is None else {k: getattr(purifier, k) for k in
                                                          ("t_star", "sampler", "gradient", "seed")})
    return RobustnessCurve(eps_values, modes, robust, {m: [r["clean_accuracy"] for r in rs] for m, rs in runs.items()},
                           {m: [r["success"] for r in rs] for m, rs in runs.items()}, undef, undef_clean, rates,
                           theory_eps, theory, monotone, notes, config)


def plot_robustness_curve(result: RobustnessCurve | dict, title: str | None = None) -> "Figure":
    """
    Draw a :class:`RobustnessCurve` (or its ``to_dict()``) as ONE matplotlib figure: robust accuracy against eps
    per randomness mode, the undefended curve, and the compression-rate prediction. Nothing is written to disk.

    :param result: the curve.
    :param title: optional title.
    :return: the ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    d = result.to_dict() if hasattr(result, "to_dict") else result
    eps = np.asarray(d["eps"], dtype=float)
    order = np.argsort(eps)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    styles = {"aligned": "o-", "transfer": "s--", "stochastic": "^:", "eot": "d-."}
    for mode in d["modes"]:
        ax.plot(eps[order], np.asarray(d["robust_accuracy"][mode], dtype=float)[order], styles.get(mode, "o-"),
                label=f"purified, {mode}")
    ax.plot(eps[order], np.asarray(d["undefended"], dtype=float)[order], "k-", lw=2, label="undefended")
    if d.get("theory"):
        th = np.array([np.nan if v is None else v for v in d["theory"]], dtype=float)[order]
        ax.plot(eps[order], th, "k--", alpha=0.6, label=r"theory: undefended at $\alpha\,\epsilon$")
    ax.set_xlabel(r"$\epsilon$ ($L_\infty$)")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
