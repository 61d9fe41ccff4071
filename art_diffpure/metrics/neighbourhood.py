"""Neighbourhood analyses of Sec. 3.2: variance decomposition and SNR, centroid distances, direction correlations.

All use one crossed design per image: ``n_inputs`` uniform perturbations of the l_inf ball of radius
``eps``, each purified under the same ``n_seeds`` randomness configurations. The configurations are
those of an EOT attack of base seed ``seed``: base seeds ``art_diffpure.randomness.eot_seeds(seed,
n_seeds)`` = ``seed + 7919 k`` for ``k = 0 .. n_seeds - 1``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from art_diffpure._utils import check_int
from art_diffpure.metrics._common import (
    _as_numpy, _check_eps, _check_ids, _check_purifier, _clip_values, _purify_jobs, _Result,
    _sample_ball, _summary,
)
from art_diffpure.randomness import eot_seeds

__all__ = [
    "CentroidResult", "CorrelationResult", "NeighbourhoodDesign", "NeighbourhoodResult", "VarianceResult",
    "centroid_distances", "direction_correlations", "neighbourhood_analysis", "variance_decomposition",
]

_REFERENCES = ("clean", "input")


@dataclass
class VarianceResult(_Result):
    """
    Variance decomposition (eq. 7, eq. 11), per-pixel convention: each variance is the per-pixel
    population variance averaged over pixels, i.e. ``E||f - mu||^2 / D`` (the paper's squared-norm
    definition divided by the number of pixels ``D``; Table S5 reports these values x 1e-3).

    :param total: ``(n_images,)`` Var_{x,xi} f.
    :param input: ``(n_images,)`` E_xi[Var_x f] (signal).
    :param internal: ``(n_images,)`` Var_xi[E_x f] (noise).
    :param snr: ``(n_images,)`` input / internal.
    :param mean: dataset means of the four, keyed ``total``, ``input``, ``internal``, ``snr``.
    :param std: dataset population stds (ddof=0), same keys.
    """

    total: np.ndarray
    input: np.ndarray
    internal: np.ndarray
    snr: np.ndarray
    mean: dict[str, float]
    std: dict[str, float]


@dataclass
class CentroidResult(_Result):
    """
    Mean l2 distances to the respective centroids (Table S6, Fig. 2f).

    ``initial``: the perturbed inputs x_j around their mean. ``vary_input_fixed_xi``: for each xi, the
    outputs f_xi(x_j) around their mean over j (the paper's compression, 1.004 -> 0.241).
    ``vary_xi_fixed_input``: for each input x_j, the outputs over xi around their mean over xi (the
    paper's expansion, 1.004 -> 3.282). ``vary_both``: all outputs around their global mean.

    :param per_image: ``(n_images,)`` mean distance, per setting.
    :param distributions: every individual distance (pooled over images), per setting, for histograms.
    :param mean: dataset mean of ``per_image`` per setting.
    :param std: dataset population std (ddof=0) of ``per_image`` per setting.
    """

    per_image: dict[str, np.ndarray]
    distributions: dict[str, np.ndarray]
    mean: dict[str, float]
    std: dict[str, float]


@dataclass
class CorrelationResult(_Result):
    """
    Mean pairwise Pearson correlations of purification directions (Fig. 2d, 2e).

    ``vary_xi_fixed_input``: directions of one perturbed input under different xi (paper: 0.22).
    ``vary_input_fixed_xi``: directions of different perturbed inputs under one xi (paper: 0.93).

    :param reference: ``"clean"`` (direction ``f_xi(x) - x0``) or ``"input"`` (``f_xi(x) - x``).
    :param per_image: ``(n_images,)`` per setting.
    :param mean: dataset mean per setting.
    :param std: dataset population std (ddof=0) per setting.
    """

    reference: str
    per_image: dict[str, np.ndarray]
    mean: dict[str, float]
    std: dict[str, float]


@dataclass
class NeighbourhoodResult(_Result):
    """The three neighbourhood analyses of Sec. 3.2 computed from one set of purifications."""

    variance: VarianceResult
    centroids: CentroidResult
    correlations: CorrelationResult


# ---------------------------------------------------------------------------------------------- the crossed design
def _grid(purifier: Any, x0: Any, eps: float, n_inputs: int, n_seeds: int, seed: int, sample_ids: Any,
          batch_size: int, rng_seed: int | None, verbose: bool,
          desc: str) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """
    Yield ``(x0_i, X (n_inputs, D), F (n_seeds, n_inputs, D))`` per image, float64, crossed design;
    row ``s`` of ``F`` is purified under base seed ``eot_seeds(seed, n_seeds)[s]``.
    """
    _check_purifier(purifier)
    x0_np, template = _as_numpy(x0, "x0")
    n = x0_np.shape[0]
    eps = _check_eps(eps)
    n_inputs = check_int(n_inputs, "n_inputs", 2)
    n_seeds = check_int(n_seeds, "n_seeds", 2)
    seed = check_int(seed, "seed", 0)
    ids = _check_ids(sample_ids, n)
    batch_size = check_int(batch_size, "batch_size", 1)
    rng = np.random.default_rng(rng_seed)
    clip = _clip_values(purifier)
    seeds = np.asarray(eot_seeds(seed, n_seeds), dtype=np.int64)
    inputs: list[Any] = []

    def jobs():
        for i in range(n):
            x_i = _sample_ball(x0_np[i], eps, n_inputs, rng, clip)
            inputs.append(x_i)
            # The same n_inputs perturbations under every seed: rows ordered (seed, input).
            yield np.concatenate([x_i] * n_seeds), np.repeat(seeds, n_inputs), np.full(n_seeds * n_inputs, ids[i])

    for i, out in enumerate(_purify_jobs(purifier, jobs(), template, batch_size, verbose, desc, n)):
        x_i = inputs[i].reshape(n_inputs, -1).astype(np.float64)
        inputs[i] = None
        yield x0_np[i].reshape(-1).astype(np.float64), x_i, out.reshape(n_seeds, n_inputs, -1)


def _check_reference(reference: str) -> None:
    if reference not in _REFERENCES:
        raise ValueError(f"Unknown reference {reference!r}; expected 'clean' or 'input'")


# ---------------------------------------------------------------------------------------------- per-image statistics
def _variance_stats(F: np.ndarray) -> tuple[float, float, float]:
    """(total, input, internal) per-pixel-mean population variances of ``F (n_seeds, n_inputs, D)``."""
    mu_xi = F.mean(axis=1)  # E_x f(x | xi)
    total = float(F.var(axis=(0, 1)).mean())
    input_var = float(F.var(axis=1).mean(axis=0).mean())
    internal = float(mu_xi.var(axis=0).mean())
    return total, input_var, internal


def _centroid_stats(X: np.ndarray, F: np.ndarray) -> dict[str, np.ndarray]:
    """Distances to the respective centroids (see :class:`CentroidResult`)."""
    dist = lambda d: np.sqrt(np.sum(d * d, axis=-1))  # noqa: E731
    return {
        "initial": dist(X - X.mean(axis=0)),
        "vary_input_fixed_xi": dist(F - F.mean(axis=1, keepdims=True)).reshape(-1),
        "vary_xi_fixed_input": dist(F - F.mean(axis=0, keepdims=True)).reshape(-1),
        "vary_both": dist(F - F.mean(axis=(0, 1))).reshape(-1),
    }


def _mean_pairwise_corr(d: np.ndarray) -> float:
    """Mean off-diagonal Pearson correlation of the rows of ``d (m, D)``."""
    d = d - d.mean(axis=1, keepdims=True)
    scale = np.sqrt(np.sum(d * d, axis=1))
    if np.any(scale == 0):
        return float("nan")
    d = d / scale[:, None]
    c = d @ d.T
    iu = np.triu_indices(len(d), k=1)
    return float(c[iu].mean())


def _correlation_stats(x0: np.ndarray, X: np.ndarray, F: np.ndarray, reference: str) -> dict[str, float]:
    directions = F - (x0 if reference == "clean" else X[None])
    n_seeds, n_inputs = F.shape[:2]
    return {
        "vary_xi_fixed_input": float(np.mean([_mean_pairwise_corr(directions[:, j]) for j in range(n_inputs)])),
        "vary_input_fixed_xi": float(np.mean([_mean_pairwise_corr(directions[s]) for s in range(n_seeds)])),
    }


# ---------------------------------------------------------------------------------------------- dataset results
def _variance_result(rows: list[tuple[float, float, float]]) -> VarianceResult:
    total, input_var, internal = (np.array(v) for v in zip(*rows))
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(internal > 0, input_var / np.where(internal > 0, internal, 1.0), np.inf)
    mean, std = _summary({"total": total, "input": input_var, "internal": internal, "snr": snr})
    return VarianceResult(total, input_var, internal, snr, mean, std)


def _centroid_result(rows: list[dict[str, np.ndarray]]) -> CentroidResult:
    keys = rows[0].keys()
    per_image = {k: np.array([r[k].mean() for r in rows]) for k in keys}
    distributions = {k: np.concatenate([r[k] for r in rows]) for k in keys}
    mean, std = _summary(per_image)
    return CentroidResult(per_image, distributions, mean, std)


def _correlation_result(rows: list[dict[str, float]], reference: str) -> CorrelationResult:
    per_image = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    mean, std = _summary(per_image)
    return CorrelationResult(reference, per_image, mean, std)


# ---------------------------------------------------------------------------------------------- public metrics
@dataclass(frozen=True)
class NeighbourhoodDesign:
    """
    The crossed design every neighbourhood metric shares (one definition instead of one per function): each image
    gets ``n_inputs`` uniform perturbations in the l_inf ball of radius ``eps``, each purified under the same
    ``n_seeds`` randomness configurations, the base seeds ``art_diffpure.randomness.eot_seeds(seed, n_seeds)``
    (those of an EOT attack). The metrics take these fields as keyword arguments.

    :param eps: l_inf radius of the neighbourhood.
    :param n_inputs: perturbations per image (>= 2).
    :param n_seeds: randomness configurations (>= 2).
    :param seed: base seed ``s`` of the configurations.
    :param sample_ids: sample id of each image (default ``0..n-1``).
    :param batch_size: rows per purify call.
    :param rng_seed: seed of the numpy generator drawing the perturbations.
    """

    eps: float = 8 / 255
    n_inputs: int = 16
    n_seeds: int = 16
    seed: int = 0
    sample_ids: Sequence[int] | np.ndarray | None = None
    batch_size: int = 64
    rng_seed: int | None = 0


def _designed_grid(purifier: Any, x0: Any, design: dict[str, Any], verbose: bool, desc: str):
    """The purifications of :func:`_grid` for a :class:`NeighbourhoodDesign` given as keyword arguments."""
    d = NeighbourhoodDesign(**design)
    return _grid(purifier, x0, d.eps, d.n_inputs, d.n_seeds, d.seed, d.sample_ids, d.batch_size, d.rng_seed,
                 verbose, desc)


def neighbourhood_analysis(purifier: Any, x0: Any, reference: str = "clean", verbose: bool = False,
                           **design: Any) -> NeighbourhoodResult:
    """
    :func:`variance_decomposition`, :func:`centroid_distances` and :func:`direction_correlations`
    from one set of ``n_images x n_inputs x n_seeds`` purifications (``design``: the fields of
    :class:`NeighbourhoodDesign`).
    """
    _check_reference(reference)
    var_rows, cent_rows, corr_rows = [], [], []
    for x0_i, X, F in _designed_grid(purifier, x0, design, verbose, "Neighbourhoods"):
        var_rows.append(_variance_stats(F))
        cent_rows.append(_centroid_stats(X, F))
        corr_rows.append(_correlation_stats(x0_i, X, F, reference))
    return NeighbourhoodResult(_variance_result(var_rows), _centroid_result(cent_rows),
                               _correlation_result(corr_rows, reference))


def variance_decomposition(purifier: Any, x0: Any, verbose: bool = False, **design: Any) -> VarianceResult:
    """
    Variance decomposition (Appendix A, eq. 11) and SNR (eq. 7) of f(x, xi) per image:

        Var_{x,xi} f = E_xi[Var_x f(x|xi)] + Var_xi[E_x f(x|xi)],   SNR = E_xi[Var_x f] / Var_xi[E_x f].

    On the crossed design of :class:`NeighbourhoodDesign` (its fields are the keyword arguments ``design``), so
    with population variances (ddof=0) total == input + internal to floating-point precision. Convention:
    per-pixel variance averaged over pixels, i.e. ``E||f - mu||^2 / D`` (Table S5 used 50 x 50 x 50, x 1e-3).

    :param purifier: anything with ``purify(x, seed=..., sample_ids=...)``.
    :param x0: clean images ``(n, ...)``, numpy or torch.
    :param verbose: progress bar.
    """
    rows = [_variance_stats(F) for _, _, F in _designed_grid(purifier, x0, design, verbose, "Variance decomposition")]
    return _variance_result(rows)


def centroid_distances(purifier: Any, x0: Any, verbose: bool = False, **design: Any) -> CentroidResult:
    """
    Mean l2 distance to the respective centroid (Table S6, Fig. 2f), same crossed design as
    :func:`variance_decomposition`: ``initial`` ``||x_j - mean_j x||``; ``vary_input_fixed_xi``
    ``||f_s(x_j) - mean_j f_s(x_j)||`` (compression); ``vary_xi_fixed_input``
    ``||f_s(x_j) - mean_s f_s(x_j)||`` (expansion); ``vary_both`` ``||f_s(x_j) - mean_{s,j} f||``.
    (Table S6's header labels "Fix Inputs" / "Fix Random" look swapped relative to the text.)
    """
    rows = [_centroid_stats(X, F) for _, X, F in _designed_grid(purifier, x0, design, verbose, "Centroid distances")]
    return _centroid_result(rows)


def direction_correlations(purifier: Any, x0: Any, reference: str = "clean", verbose: bool = False,
                           **design: Any) -> CorrelationResult:
    """
    Correlations of purification directions (Fig. 2d, 2e). The direction of a purified input is
    ``f_xi(x) - x0`` (``reference="clean"``, default) or ``f_xi(x) - x`` (``reference="input"``).
    ``vary_xi_fixed_input``: mean pairwise Pearson correlation (over pixels) of the ``n_seeds``
    directions of one perturbed input, averaged over the inputs; ``vary_input_fixed_xi``: of the
    ``n_inputs`` directions under one xi, averaged over the seeds. Design as :func:`variance_decomposition`.
    """
    _check_reference(reference)
    rows = [_correlation_stats(x0_i, X, F, reference)
            for x0_i, X, F in _designed_grid(purifier, x0, design, verbose, "Direction correlations")]
    return _correlation_result(rows, reference)
