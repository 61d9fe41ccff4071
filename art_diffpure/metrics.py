"""Metrics of Liu & Wei (2025), "How Do Diffusion Models Improve Adversarial Robustness?" (arXiv 2505.22839).

Every metric takes a *purifier*: anything with a method ``purify(x, seed=..., sample_ids=...)``
mapping a batch to a batch of the same shape (e.g. :class:`art_diffpure.DiffusionPurifier`, or an
analytic function for testing). Its internal randomness xi is fixed by a base seed ``s`` (an int)
and each row's sample id: for image ``i`` every perturbed copy is purified with sample id ``i``'s
id and the same seed, i.e. under the same xi. ``n_seeds`` configurations use base seeds
``seed0, seed0 + 1, ...``.

Images ``x0`` may be numpy arrays or torch tensors (the purifier then receives the same type);
all statistics are computed in float64 numpy and returned in small dataclasses whose ``to_dict()``
gives plain, JSON-serialisable python lists and floats (NaN becomes ``None``). Gradient-free metrics
run under ``torch.no_grad`` and stack the neighbourhood samples of several images into purify calls
of ``batch_size`` rows. Dataset-level ``std`` values are population standard deviations (ddof=0)
over the per-image values.

Neighbourhoods are uniform samples of the l_inf ball of radius ``eps`` around ``x0`` (the paper's
"uniform noise" perturbations), clipped to the purifier's ``clip_values`` (default ``(0, 1)``),
drawn from ``numpy.random.default_rng(rng_seed)`` (never the global RNG).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import math
import warnings
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

NORMS = ("l2", "linf")
JACOBIAN_METHODS = ("exact", "randomized")
JACOBIAN_BACKENDS = ("auto", "autograd", "finite_difference")
LAW_MODELS = ("logistic4", "logistic3")


# ---------------------------------------------------------------------------------------------- results
def _plain(value: Any) -> Any:
    """Recursively convert numpy / torch values to plain python (NaN and inf to ``None``)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if value is None or isinstance(value, str):
        return value
    return str(value)


class _Result:
    """Mixin: ``to_dict()`` of a dataclass as plain python."""

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if not f.name.startswith("_")}


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std())


@dataclass
class CompressionResult(_Result):
    """
    Compression rates (eq. 10), keyed by norm (``"l2"``, ``"linf"``).

    :param per_sample: ``(n_images, n_seeds, n_samples)`` rate of every perturbed copy under every seed
        (NaN where the perturbation was zero after clipping).
    :param per_image: ``(n_images,)`` mean over samples and seeds.
    :param mean: dataset mean of ``per_image``.
    :param std: dataset std of ``per_image``.
    """

    norms: list[str]
    seeds: list[int]
    per_sample: dict[str, np.ndarray]
    per_image: dict[str, np.ndarray]
    mean: dict[str, float]
    std: dict[str, float]

    @property
    def rate(self) -> float:
        """The dataset mean for the first requested norm."""
        return self.mean[self.norms[0]]


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
    :param std: dataset stds, same keys.
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
    :param std: dataset std of ``per_image`` per setting.
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
    :param std: dataset std per setting.
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


@dataclass
class TrajectoryResult(_Result):
    """
    Distances between clean images and the purification states of their perturbed versions
    (Table 1, S2-S4, Fig. 1c, S1-S3).

    :param per_image: ``{metric: {stage: (n_images,)}}`` for metrics ``l2``, ``linf``, ``ssim`` and stages
        ``start`` (the input x, t = 0), ``max`` (after forward noising; absent without trajectories)
        and ``end`` (the purified output).
    :param mean: ``{metric: {stage: float}}``.
    :param std: ``{metric: {stage: float}}``.
    :param l2_trajectory: ``(T, n_images)`` l2 distance of every state (input, forward state(s), reverse
        steps), or ``None`` when the purifier gives no trajectories.
    :param linf_trajectory: ``(T, n_images)`` likewise.
    :param max_index: index of the ``max`` state in the trajectory (``None`` without trajectories).
    """

    per_image: dict[str, dict[str, np.ndarray]]
    mean: dict[str, dict[str, float]]
    std: dict[str, dict[str, float]]
    l2_trajectory: np.ndarray | None
    linf_trajectory: np.ndarray | None
    max_index: int | None


@dataclass
class JacobianResult(_Result):
    """
    Singular values of the Jacobian of f_xi at x0 (Fig. 3a).

    :param singular_values: ``(n_images, r)``, descending (``r = D`` exact, ``k`` randomized).
    :param n_dims: the input dimension ``D``.
    :param frac_below: ``(n_images,)`` fraction of the ``D`` singular values below ``low``.
    :param frac_above: ``(n_images,)`` fraction of the ``D`` singular values above ``high``.
    :param mean: dataset means of ``frac_below`` and ``frac_above``.
    :param std: dataset stds.
    """

    singular_values: np.ndarray
    n_dims: int
    low: float
    high: float
    method: str
    backend: str
    frac_below: np.ndarray
    frac_above: np.ndarray
    mean: dict[str, float]
    std: dict[str, float]


@dataclass
class CompressionLawFit(_Result):
    """
    Sigmoid fit of robust accuracy against compression rate (Fig. 3b):
    ``acc(c) = b + a / (1 + exp(k (c - c0)))`` (``logistic4``) or with ``b = 0`` (``logistic3``).
    ``k > 0`` means accuracy falls as the compression rate grows; ``predict(0)`` extrapolates to
    (approximately) clean accuracy.
    """

    model: str
    params: dict[str, float]
    r2: float
    n_points: int

    def predict(self, compression_rate: float | Sequence[float] | np.ndarray) -> float | np.ndarray:
        """Predicted robust accuracy at ``compression_rate`` (scalar in, float out)."""
        c = np.asarray(compression_rate, dtype=np.float64)
        out = _logistic(c, self.params["a"], self.params["k"], self.params["c0"], self.params.get("b", 0.0))
        return float(out) if out.ndim == 0 else out


@dataclass
class RankingEntry(_Result):
    """One configuration of :func:`rank_by_compression`."""

    name: str
    rate: float
    std: float
    result: CompressionResult


@dataclass
class RankingResult(_Result):
    """Configurations sorted by compression rate, lowest (most compressive, predicted most robust) first."""

    norm: str
    entries: list[RankingEntry] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]


# ---------------------------------------------------------------------------------------------- helpers
def _check_purifier(purifier: Any) -> None:
    if not callable(getattr(purifier, "purify", None)):
        raise ValueError("purifier must have a purify(x, seed=..., sample_ids=...) method, "
                         f"got {type(purifier).__name__}")


def _as_numpy(x: Any, name: str) -> tuple[np.ndarray, Any]:
    """(numpy array, torch template or None) for a numpy array or torch tensor."""
    template = None
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        template = x
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"{name} must be a batch of shape (n, ...), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return x, template


def _check_eps(eps: Any) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)) or not math.isfinite(eps) \
            or eps <= 0:
        raise ValueError(f"eps must be a positive finite number (the l_inf radius), got {eps!r}")
    return float(eps)


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_seeds(seeds: Any) -> list[int]:
    seeds = [seeds] if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool) else list(seeds)
    if not seeds:
        raise ValueError("seeds must contain at least one base seed")
    for s in seeds:
        _check_int(s, "every seed", 0)
    return [int(s) for s in seeds]


def _check_norms(norm: str | Sequence[str]) -> list[str]:
    norms = list(NORMS) if norm == "both" else [norm] if isinstance(norm, str) else list(norm)
    if not norms or any(n not in NORMS for n in norms):
        raise ValueError(f"Unknown norm {norm!r}; expected 'l2', 'linf', 'both' or a list of those")
    return norms


def _check_ids(sample_ids: Any, n: int) -> np.ndarray:
    if sample_ids is None:
        return np.arange(n, dtype=np.int64)
    ids = np.asarray(sample_ids, dtype=np.int64).reshape(-1)
    if len(ids) != n:
        raise ValueError(f"Got {len(ids)} sample_ids for {n} images")
    return ids


def _clip_values(purifier: Any) -> tuple[float, float]:
    clip = getattr(purifier, "clip_values", None)
    return (0.0, 1.0) if clip is None else (float(clip[0]), float(clip[1]))


def _norm(d: np.ndarray, norm: str) -> np.ndarray:
    """l2 or l_inf norm over the last axis of ``d (..., D)`` (flattened images)."""
    return np.sqrt(np.sum(d * d, axis=-1)) if norm == "l2" else np.max(np.abs(d), axis=-1)


def _sample_ball(x0: np.ndarray, eps: float, k: int, rng: np.random.Generator, clip: tuple[float, float]) -> np.ndarray:
    """``k`` uniform samples of the l_inf ball around one image, clipped, in x0's dtype: ``(k, *shape)``."""
    noise = rng.uniform(-eps, eps, size=(k, *x0.shape))
    return np.clip(x0.astype(np.float64) + noise, clip[0], clip[1]).astype(x0.dtype)


@contextlib.contextmanager
def _no_grad() -> Iterator[None]:
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    with torch.no_grad():
        yield


def _to_float64(v: Any) -> np.ndarray:
    return np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, dtype=np.float64)


def _call_purify(purifier: Any, x: np.ndarray, seeds: np.ndarray, ids: np.ndarray, template: Any,
                 return_trajectory: bool = False):
    """One purify call on numpy rows (converted to a tensor like ``template``), float64 numpy out."""
    seed: Any = int(seeds[0]) if np.all(seeds == seeds[0]) else seeds
    inp: Any = x
    if template is not None:
        import torch

        inp = torch.from_numpy(np.ascontiguousarray(x)).to(template.device)
    kwargs = {"return_trajectory": True} if return_trajectory else {}
    with _no_grad():
        result = purifier.purify(inp, seed=seed, sample_ids=ids, **kwargs)
    out, traj = result if return_trajectory else (result, None)

    out = _to_float64(out)
    if out.shape != x.shape:
        raise ValueError(f"purify returned shape {out.shape} for an input of shape {x.shape}")
    return (out, _to_float64(traj)) if return_trajectory else out


def _purify_jobs(purifier: Any, jobs: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], template: Any,
                 batch_size: int, verbose: bool, desc: str, total: int | None) -> Iterator[np.ndarray]:
    """
    Purify a stream of jobs ``(rows, seeds, ids)`` (one job per image) in calls of ``batch_size`` rows,
    stacking rows of consecutive jobs; yields each job's float64 outputs, in order, once complete.
    """
    pending_x: list[np.ndarray] = []
    pending_s: list[np.ndarray] = []
    pending_i: list[np.ndarray] = []
    sizes: deque[int] = deque()
    done: list[np.ndarray] = []
    n_pending = n_done = 0
    bar = tqdm(total=total, desc=desc, disable=not verbose)

    def run(force: bool) -> None:
        nonlocal pending_x, pending_s, pending_i, n_pending, n_done
        while n_pending >= batch_size or (force and n_pending > 0):
            xs, ss, ii = np.concatenate(pending_x), np.concatenate(pending_s), np.concatenate(pending_i)
            take = min(batch_size, len(xs))
            done.append(_call_purify(purifier, xs[:take], ss[:take], ii[:take], template))
            n_done += take
            pending_x, pending_s, pending_i = [xs[take:]], [ss[take:]], [ii[take:]]
            n_pending -= take

    def completed() -> Iterator[np.ndarray]:
        nonlocal done, n_done
        while sizes and n_done >= sizes[0]:
            m = sizes.popleft()
            out = np.concatenate(done)
            done, n_done = [out[m:]], n_done - m
            bar.update(1)
            yield out[:m]

    try:
        for rows, seeds, ids in jobs:
            pending_x.append(rows)
            pending_s.append(np.asarray(seeds, dtype=np.int64))
            pending_i.append(np.asarray(ids, dtype=np.int64))
            sizes.append(len(rows))
            n_pending += len(rows)
            run(False)
            yield from completed()
        run(True)
        yield from completed()
    finally:
        bar.close()


# ---------------------------------------------------------------------------------------------- compression
def compression_rate(
    purifier: Any,
    x0: Any,
    eps: float = 8 / 255,
    n_samples: int = 16,
    seeds: int | Sequence[int] = (0,),
    norm: str | Sequence[str] = "l2",
    perturbed: Any = None,
    sample_ids: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 64,
    rng_seed: int | None = 0,
    verbose: bool = False,
) -> CompressionResult:
    """
    Compression rate, eq. 10: for a fixed randomness xi,

        alpha_{f_xi}(x, x0) = ||f_xi(x) - f_xi(x0)|| / ||x - x0||  (~ ||J_{f_xi}(x0) eta||),

    with ``x`` uniform in the l_inf ball of radius ``eps`` around ``x0`` (clipped to the purifier's
    ``clip_values``) or the given ``perturbed`` images (e.g. adversarial examples). The anchor
    ``f_xi(x0)`` and every ``f_xi(x)`` of image ``i`` share seed and sample id. Averaged over samples
    and seeds per image, then over images.

    :param purifier: anything with ``purify(x, seed=..., sample_ids=...)``.
    :param x0: clean images ``(n, ...)``, numpy or torch.
    :param eps: l_inf radius of the sampled neighbourhood (ignored with ``perturbed``).
    :param n_samples: perturbed copies per image (>= 2; ignored with ``perturbed``).
    :param seeds: base seed(s) of the fixed randomness configurations xi.
    :param norm: ``"l2"``, ``"linf"``, ``"both"`` or a list of norms (used in numerator and denominator).
    :param perturbed: optional perturbed images ``(n, ...)`` or ``(n, k, ...)``.
    :param sample_ids: sample id of each image (default ``0..n-1``), so xi matches e.g. an attack's.
    :param batch_size: rows per purify call.
    :param rng_seed: seed of the numpy generator drawing the perturbations.
    :param verbose: progress bar.
    """
    _check_purifier(purifier)
    x0_np, template = _as_numpy(x0, "x0")
    n, shape = x0_np.shape[0], x0_np.shape[1:]
    norms = _check_norms(norm)
    seed_list = _check_seeds(seeds)
    ids = _check_ids(sample_ids, n)
    batch_size = _check_int(batch_size, "batch_size", 1)
    if perturbed is None:
        eps = _check_eps(eps)
        n_samples = _check_int(n_samples, "n_samples", 2)
        rng = np.random.default_rng(rng_seed)
        clip = _clip_values(purifier)
        xs = None
    else:
        xs, _ = _as_numpy(perturbed, "perturbed")
        if xs.ndim == x0_np.ndim:
            xs = xs[:, None]
        if xs.ndim != x0_np.ndim + 1 or xs.shape[0] != n or xs.shape[2:] != shape:
            raise ValueError(f"perturbed must have shape (n, ...) or (n, k, ...) matching x0 {x0_np.shape}, "
                             f"got {np.shape(perturbed)}")
        xs = xs.astype(x0_np.dtype)
        n_samples = xs.shape[1]
    n_seeds = len(seed_list)
    inputs: list[np.ndarray] = []

    def jobs():
        # Rows of image i: per seed, the anchor x0 then the n_samples perturbed copies.
        for i in range(n):
            x_i = _sample_ball(x0_np[i], eps, n_samples, rng, clip) if xs is None else xs[i]
            inputs.append(x_i)
            block = np.concatenate([x0_np[i][None], x_i])
            rows = np.concatenate([block] * n_seeds)
            yield rows, np.repeat(seed_list, n_samples + 1), np.full(len(rows), ids[i])

    per_sample = {nm: np.full((n, n_seeds, n_samples), np.nan) for nm in norms}
    stream = _purify_jobs(purifier, jobs(), template, batch_size, verbose, "Compression rate", n)
    for i, out in enumerate(stream):
        out = out.reshape(n_seeds, n_samples + 1, -1)
        d_out = out[:, 1:] - out[:, :1]
        d_in = (inputs[i].astype(np.float64) - x0_np[i].astype(np.float64)).reshape(n_samples, -1)
        for nm in norms:
            denom = _norm(d_in, nm)
            with np.errstate(divide="ignore", invalid="ignore"):
                per_sample[nm][i] = np.where(denom > 0, _norm(d_out, nm) / denom, np.nan)
        inputs[i] = None  # free memory
    if any(np.isnan(v).any() for v in per_sample.values()):
        logger.warning("Some perturbations are zero (after clipping); their compression rates are NaN and ignored")
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN images stay NaN
        per_image = {nm: np.nanmean(v.reshape(n, -1), axis=1) for nm, v in per_sample.items()}
    stats = {nm: _mean_std(v) for nm, v in per_image.items()}
    return CompressionResult(norms, seed_list, per_sample, per_image,
                             {k: v[0] for k, v in stats.items()}, {k: v[1] for k, v in stats.items()})


# ---------------------------------------------------------------------------------------------- neighbourhoods
def _grid(purifier: Any, x0: Any, eps: float, n_inputs: int, n_seeds: int, seed0: int, sample_ids: Any,
          batch_size: int, rng_seed: int | None, verbose: bool, desc: str):
    """Yield ``(x0_i, X (n_inputs, D), F (n_seeds, n_inputs, D))`` per image, float64, crossed design."""
    _check_purifier(purifier)
    x0_np, template = _as_numpy(x0, "x0")
    n = x0_np.shape[0]
    eps = _check_eps(eps)
    n_inputs = _check_int(n_inputs, "n_inputs", 2)
    n_seeds = _check_int(n_seeds, "n_seeds", 2)
    seed0 = _check_int(seed0, "seed0", 0)
    ids = _check_ids(sample_ids, n)
    batch_size = _check_int(batch_size, "batch_size", 1)
    rng = np.random.default_rng(rng_seed)
    clip = _clip_values(purifier)
    seeds = np.arange(seed0, seed0 + n_seeds)
    inputs: list[np.ndarray] = []

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


def _summary(per_image: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, float]]:
    stats = {k: _mean_std(v) for k, v in per_image.items()}
    return {k: v[0] for k, v in stats.items()}, {k: v[1] for k, v in stats.items()}


def neighbourhood_analysis(
    purifier: Any,
    x0: Any,
    eps: float = 8 / 255,
    n_inputs: int = 16,
    n_seeds: int = 16,
    seed0: int = 0,
    reference: str = "clean",
    sample_ids: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 64,
    rng_seed: int | None = 0,
    verbose: bool = False,
) -> NeighbourhoodResult:
    """
    :func:`variance_decomposition`, :func:`centroid_distances` and :func:`direction_correlations`
    from one set of ``n_images x n_inputs x n_seeds`` purifications (same parameters as those).
    """
    if reference not in ("clean", "input"):
        raise ValueError(f"Unknown reference {reference!r}; expected 'clean' or 'input'")
    var_rows, cent_rows, corr_rows = [], [], []
    for x0_i, X, F in _grid(purifier, x0, eps, n_inputs, n_seeds, seed0, sample_ids, batch_size, rng_seed, verbose,
                            "Neighbourhoods"):
        var_rows.append(_variance_stats(F))
        cent_rows.append(_centroid_stats(X, F))
        corr_rows.append(_correlation_stats(x0_i, X, F, reference))
    return NeighbourhoodResult(_variance_result(var_rows), _centroid_result(cent_rows),
                               _correlation_result(corr_rows, reference))


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


def variance_decomposition(
    purifier: Any,
    x0: Any,
    eps: float = 8 / 255,
    n_inputs: int = 16,
    n_seeds: int = 16,
    seed0: int = 0,
    sample_ids: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 64,
    rng_seed: int | None = 0,
    verbose: bool = False,
) -> VarianceResult:
    """
    Variance decomposition (Appendix A, eq. 11) and SNR (eq. 7) of f(x, xi) per image:

        Var_{x,xi} f = E_xi[Var_x f(x|xi)] + Var_xi[E_x f(x|xi)],   SNR = E_xi[Var_x f] / Var_xi[E_x f].

    Each image gets ``n_inputs`` uniform perturbations (l_inf ``eps``), each purified under the same
    ``n_seeds`` configurations (base seeds ``seed0 ..``): a crossed design, so with population
    variances (ddof=0) total == input + internal to floating-point precision. Convention: per-pixel
    variance averaged over pixels, i.e. ``E||f - mu||^2 / D`` (Table S5 used 50 x 50 x 50, x 1e-3).

    :param purifier: anything with ``purify(x, seed=..., sample_ids=...)``.
    :param x0: clean images ``(n, ...)``, numpy or torch.
    :param eps: l_inf radius of the neighbourhood.
    :param n_inputs: perturbations per image (>= 2).
    :param n_seeds: randomness configurations (>= 2).
    :param seed0: first base seed.
    :param sample_ids: sample id of each image (default ``0..n-1``).
    :param batch_size: rows per purify call.
    :param rng_seed: seed of the numpy generator drawing the perturbations.
    :param verbose: progress bar.
    """
    rows = [_variance_stats(F) for _, _, F in _grid(purifier, x0, eps, n_inputs, n_seeds, seed0, sample_ids,
                                                     batch_size, rng_seed, verbose, "Variance decomposition")]
    return _variance_result(rows)


def centroid_distances(
    purifier: Any,
    x0: Any,
    eps: float = 8 / 255,
    n_inputs: int = 16,
    n_seeds: int = 16,
    seed0: int = 0,
    sample_ids: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 64,
    rng_seed: int | None = 0,
    verbose: bool = False,
) -> CentroidResult:
    """
    Mean l2 distance to the respective centroid (Table S6, Fig. 2f), same crossed design as
    :func:`variance_decomposition`: ``initial`` ``||x_j - mean_j x||``; ``vary_input_fixed_xi``
    ``||f_s(x_j) - mean_j f_s(x_j)||`` (compression); ``vary_xi_fixed_input``
    ``||f_s(x_j) - mean_s f_s(x_j)||`` (expansion); ``vary_both`` ``||f_s(x_j) - mean_{s,j} f||``.
    (Table S6's header labels "Fix Inputs" / "Fix Random" look swapped relative to the text.)

    Parameters as :func:`variance_decomposition`.
    """
    rows = [_centroid_stats(X, F) for _, X, F in _grid(purifier, x0, eps, n_inputs, n_seeds, seed0, sample_ids,
                                                        batch_size, rng_seed, verbose, "Centroid distances")]
    return _centroid_result(rows)


def direction_correlations(
    purifier: Any,
    x0: Any,
    eps: float = 8 / 255,
    n_inputs: int = 16,
    n_seeds: int = 16,
    seed0: int = 0,
    reference: str = "clean",
    sample_ids: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 64,
    rng_seed: int | None = 0,
    verbose: bool = False,
) -> CorrelationResult:
    """
    Correlations of purification directions (Fig. 2d, 2e). The direction of a purified input is
    ``f_xi(x) - x0`` (``reference="clean"``, default) or ``f_xi(x) - x`` (``reference="input"``).
    ``vary_xi_fixed_input``: mean pairwise Pearson correlation (over pixels) of the ``n_seeds``
    directions of one perturbed input, averaged over the inputs; ``vary_input_fixed_xi``: of the
    ``n_inputs`` directions under one xi, averaged over the seeds. Other parameters as
    :func:`variance_decomposition`.
    """
    if reference not in ("clean", "input"):
        raise ValueError(f"Unknown reference {reference!r}; expected 'clean' or 'input'")
    rows = [_correlation_stats(x0_i, X, F, reference)
            for x0_i, X, F in _grid(purifier, x0, eps, n_inputs, n_seeds, seed0, sample_ids, batch_size, rng_seed,
                                    verbose, "Direction correlations")]
    return _correlation_result(rows, reference)


# ---------------------------------------------------------------------------------------------- trajectories
def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    g = np.exp(-0.5 * ((np.arange(size) - (size - 1) / 2.0) / sigma) ** 2)
    return g / g.sum()


def _filter_valid(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' Gaussian filtering over the last two axes."""
    from numpy.lib.stride_tricks import sliding_window_view

    a = np.einsum("...k,k->...", sliding_window_view(a, len(g), axis=-1), g)
    a = np.einsum("...k,k->...", sliding_window_view(a, len(g), axis=-2), g)
    return a


def ssim(
    x: Any,
    y: Any,
    data_range: float = 1.0,
    window_size: int | None = None,
    sigma: float = 1.5,
    channels_first: bool = True,
) -> np.ndarray:
    """
    SSIM of Wang et al. (2004) per image: Gaussian window (std ``sigma``), 'valid' filtering,
    ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` with ``L = data_range``, the SSIM map averaged over
    positions and channels.

    :param x: images ``(n, C, H, W)`` (``(n, H, W, C)`` with ``channels_first=False``) or ``(n, H, W)``.
    :param y: same shape.
    :param data_range: the dynamic range ``L`` (the clip range, 1 for [0, 1] images).
    :param window_size: window side; default 11 (the paper's standard), or 7 if an image side is
        below 11, or 3 below 7 (e.g. 8x8 images use 7x7).
    :param sigma: Gaussian std of the window.
    :return: ``(n,)`` SSIM values.
    """
    x, _ = _as_numpy(x, "x")
    y, _ = _as_numpy(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"SSIM needs equal shapes, got {x.shape} and {y.shape}")
    x, y = x.astype(np.float64), y.astype(np.float64)
    if x.ndim == 3:
        x, y = x[:, None], y[:, None]
    elif x.ndim == 4 and not channels_first:
        x, y = np.moveaxis(x, -1, 1), np.moveaxis(y, -1, 1)
    elif x.ndim != 4:
        raise ValueError(f"SSIM needs (n, H, W) or (n, C, H, W) images, got shape {x.shape}")
    side = min(x.shape[-2:])
    if window_size is None:
        window_size = 11 if side >= 11 else 7 if side >= 7 else 3
    if window_size < 1 or window_size > side:
        raise ValueError(f"window_size must be in [1, {side}] for {x.shape[-2]}x{x.shape[-1]} images, "
                         f"got {window_size}")
    g = _gaussian_window(window_size, sigma)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mu_x**2
    syy = _filter_valid(y * y, g) - mu_y**2
    sxy = _filter_valid(x * y, g) - mu_x * mu_y
    smap = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return smap.reshape(len(x), -1).mean(axis=1)


def _supports_trajectory(purifier: Any) -> bool:
    try:
        return "return_trajectory" in inspect.signature(purifier.purify).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def trajectory_distances(
    purifier: Any,
    x0: Any,
    x: Any,
    seed: int | None = 0,
    sample_ids: Sequence[int] | np.ndarray | None = None,
    ssim_window: int | None = None,
    batch_size: int = 64,
    verbose: bool = False,
) -> TrajectoryResult:
    """
    Distances to the clean images along purification (Table 1, S2-S4; Fig. 1c): l2 ``||s - x0||_2``,
    l_inf ``||s - x0||_inf`` (over all pixels) and SSIM(x0, s) for the states ``s`` at ``start`` (the
    input x, t = 0), ``max`` (after forward noising) and ``end`` (purified output), plus the l2 / l_inf
    distance of every trajectory state for plots. Uses ``purify(..., return_trajectory=True)`` when the
    purifier supports it (trajectory = input, forward state(s), states after each reverse step; ``max``
    is the last forward state, the input itself for the reverse-only sampler; for a purifier that is
    not a :class:`DiffusionPurifier`, the state farthest from x0 on average); otherwise only
    ``start`` and ``end``.

    :param purifier: anything with ``purify(x, seed=..., sample_ids=...)``.
    :param x0: clean images ``(n, ...)``.
    :param x: perturbed (e.g. adversarial) images, same shape.
    :param seed: base seed of xi (``None``: the purifier's own randomness).
    :param sample_ids: sample id of each image (default ``0..n-1``).
    :param ssim_window: SSIM window side (see :func:`ssim`); data range = the clip range.
    :param batch_size: images per purify call.
    :param verbose: progress bar.
    """
    _check_purifier(purifier)
    x0_np, template = _as_numpy(x0, "x0")
    x_np, _ = _as_numpy(x, "x")
    if x_np.shape != x0_np.shape:
        raise ValueError(f"x must have the shape of x0 {x0_np.shape}, got {x_np.shape}")
    x_np = x_np.astype(x0_np.dtype)
    n = len(x0_np)
    ids = _check_ids(sample_ids, n)
    batch_size = _check_int(batch_size, "batch_size", 1)
    if seed is not None:
        seed = _check_int(seed, "seed", 0)
    lo, hi = _clip_values(purifier)
    channels_first = bool(getattr(purifier, "channels_first", True))
    with_traj = _supports_trajectory(purifier)

    ends, trajs = [], []
    kwargs = {"return_trajectory": True} if with_traj else {}
    for start in tqdm(range(0, n, batch_size), desc="Trajectories", disable=not verbose):
        rows = slice(start, min(start + batch_size, n))
        inp: Any = x_np[rows]
        if template is not None:
            import torch

            inp = torch.from_numpy(np.ascontiguousarray(inp)).to(template.device)
        with _no_grad():
            res = purifier.purify(inp, seed=seed, sample_ids=ids[rows], **kwargs)
        out, traj = res if with_traj else (res, None)
        ends.append(_to_float64(out))
        if traj is not None:
            trajs.append(_to_float64(traj))
    end = np.concatenate(ends)
    if end.shape != x0_np.shape:
        raise ValueError(f"purify returned shape {end.shape} for an input of shape {x0_np.shape}")
    ref = x0_np.astype(np.float64)
    flat = lambda a: a.reshape(*a.shape[: a.ndim - ref.ndim + 1], -1)  # noqa: E731

    states = {"start": x_np.astype(np.float64), "end": end}
    l2_traj = linf_traj = None
    max_index = None
    if trajs:
        traj = np.concatenate(trajs, axis=1)  # (T, n, ...)
        diff = flat(traj - ref[None])
        l2_traj, linf_traj = _norm(diff, "l2"), _norm(diff, "linf")
        if hasattr(purifier, "_reverse_timesteps"):
            max_index = traj.shape[0] - 1 - len(purifier._reverse_timesteps())
        else:
            max_index = int(np.argmax(l2_traj.mean(axis=1)))
        states = {"start": states["start"], "max": traj[max_index], "end": end}

    per_image: dict[str, dict[str, np.ndarray]] = {"l2": {}, "linf": {}, "ssim": {}}
    for stage, s in states.items():
        d = flat(s - ref)
        per_image["l2"][stage] = _norm(d, "l2")
        per_image["linf"][stage] = _norm(d, "linf")
        per_image["ssim"][stage] = ssim(ref, s, data_range=hi - lo, window_size=ssim_window,
                                        channels_first=channels_first)
    summary = {m: _summary(v) for m, v in per_image.items()}
    return TrajectoryResult(per_image, {m: v[0] for m, v in summary.items()}, {m: v[1] for m, v in summary.items()},
                            l2_traj, linf_traj, max_index)


# ---------------------------------------------------------------------------------------------- FID
def feature_fid(features_a: Any, features_b: Any) -> float:
    """
    Fréchet distance between Gaussians fitted to two feature sets (the FID of Heusel et al. 2017 with
    any feature extractor, e.g. a classifier's penultimate layer, since Inception weights may be
    unavailable): ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})``, covariances with ddof=1.

    :param features_a: ``(n_a, d)`` features (higher-rank arrays are flattened per row).
    :param features_b: ``(n_b, d)``.
    """
    from scipy import linalg

    a, _ = _as_numpy(features_a, "features_a")
    b, _ = _as_numpy(features_b, "features_b")
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"Feature dimensions differ: {a.shape[1]} and {b.shape[1]}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("feature_fid needs at least 2 samples per set")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():  # near-singular product: regularise as pytorch-fid does
        offset = np.eye(len(s_a)) * 1e-6
        covmean = linalg.sqrtm((s_a + offset) @ (s_b + offset))
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    return float(max(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean), 0.0))


def feature_fid_from_model(model_features_fn: Callable, x_a: Any, x_b: Any, batch_size: int = 256) -> float:
    """
    :func:`feature_fid` of ``model_features_fn`` applied to two image sets, under ``torch.no_grad``.

    :param model_features_fn: callable taking a float torch tensor batch (e.g. a module returning the
        classifier's penultimate features) and returning a tensor or array ``(batch, ...)``.
    :param x_a: images ``(n_a, ...)``, numpy or torch.
    :param x_b: images ``(n_b, ...)``.
    :param batch_size: images per call.
    """
    import torch

    batch_size = _check_int(batch_size, "batch_size", 1)

    def features(x: Any, name: str) -> np.ndarray:
        x_np, template = _as_numpy(x, name)
        device = template.device if template is not None else "cpu"
        outs = []
        with torch.no_grad():
            for start in range(0, len(x_np), batch_size):
                f = model_features_fn(torch.from_numpy(np.ascontiguousarray(x_np[start:start + batch_size])).to(device))
                f = f.detach().cpu().numpy() if hasattr(f, "detach") else np.asarray(f)
                outs.append(f.reshape(len(f), -1).astype(np.float64))
        return np.concatenate(outs)

    return feature_fid(features(x_a, "x_a"), features(x_b, "x_b"))


# ---------------------------------------------------------------------------------------------- Jacobian
def _has_autograd(purifier: Any) -> bool:
    return (callable(getattr(purifier, "forward", None)) and callable(getattr(purifier, "randomness", None))
            and getattr(purifier, "gradient", "full") == "full")


def _jacobian_fd(purifier: Any, x0_i: np.ndarray, seed: int, sid: int, h: float, template: Any,
                 batch_size: int, clip: tuple[float, float]) -> np.ndarray:
    """Finite-difference Jacobian ``(D_out, D_in)``: central, one-sided where x0 +- h leaves the clip range."""
    d = x0_i.size
    base = x0_i.reshape(-1).astype(np.float64)
    plus_ok = base + h <= clip[1]
    minus_ok = base - h >= clip[0]
    if not np.all(plus_ok | minus_ok):
        raise ValueError(f"fd_step {h} is larger than the clip range allows")
    eye = np.eye(d) * h
    rows = np.concatenate([base[None] + eye * plus_ok[:, None], base[None] - eye * minus_ok[:, None], base[None]])
    rows = rows.reshape(-1, *x0_i.shape).astype(x0_i.dtype)
    outs = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        outs.append(_call_purify(purifier, chunk, np.full(len(chunk), seed), np.full(len(chunk), sid), template))
    out = np.concatenate(outs).reshape(len(rows), -1)
    f_plus, f_minus, f0 = out[:d], out[d:2 * d], out[2 * d]
    # Actual steps after casting to the input dtype.
    steps = rows.reshape(len(rows), -1).astype(np.float64)
    step_plus = np.diag(steps[:d]) - base
    step_minus = base - np.diag(steps[d:2 * d])
    upper = np.where(plus_ok[:, None], f_plus, f0[None])
    lower = np.where(minus_ok[:, None], f_minus, f0[None])
    width = np.where(plus_ok, step_plus, 0.0) + np.where(minus_ok, step_minus, 0.0)
    return ((upper - lower) / width[:, None]).T


class _AutogradJacobian:
    """
    Batched Jacobian products of ``x -> f_xi(x)`` at one image through the purifier's differentiable
    ``forward`` (inside ``purifier.randomness(seed, ids)``): each product of ``m`` vectors is one
    forward and one backward pass on ``m`` copies of the image, all with the image's xi.
    """

    def __init__(self, purifier: Any, x0_i: np.ndarray, seed: int, sid: int, template: Any, batch_size: int):
        import torch

        self.purifier, self.seed, self.sid, self.batch_size = purifier, seed, sid, batch_size
        device = template.device if template is not None else "cpu"
        self.x = torch.from_numpy(np.ascontiguousarray(x0_i)).to(device)
        self.d = x0_i.size

    def _forward(self, m: int):
        import torch

        x_rep = self.x.expand(m, *self.x.shape).clone().requires_grad_(True)
        with torch.enable_grad(), self.purifier.randomness(self.seed, np.full(m, self.sid)):
            out, _ = self.purifier.forward(x_rep)
        return x_rep, out.reshape(m, -1)

    def _chunks(self, v: np.ndarray, fn: Callable) -> np.ndarray:
        """Apply ``fn`` to column blocks of ``v`` (``(dim, m)``), stacking the results as columns."""
        return np.concatenate([fn(v[:, s:s + self.batch_size]) for s in range(0, v.shape[1], self.batch_size)], axis=1)

    def vjp(self, u: np.ndarray) -> np.ndarray:
        """``J^T u`` for the columns of ``u (d_out, m)``."""
        import torch

        def block(ub: np.ndarray) -> np.ndarray:
            x_rep, out = self._forward(ub.shape[1])
            g = torch.from_numpy(np.ascontiguousarray(ub.T)).to(out)
            (grad,) = torch.autograd.grad(out, x_rep, grad_outputs=g)
            return grad.reshape(ub.shape[1], -1).detach().cpu().numpy().astype(np.float64).T

        return self._chunks(u, block)

    def jvp(self, v: np.ndarray) -> np.ndarray:
        """``J v`` for the columns of ``v (d_in, m)`` by the double-backward trick (math attention kernel)."""
        import torch

        def block(vb: np.ndarray) -> np.ndarray:
            with _math_attention():
                x_rep, out = self._forward(vb.shape[1])
                with torch.enable_grad():
                    u = torch.zeros_like(out, requires_grad=True)
                    (g,) = torch.autograd.grad(out, x_rep, grad_outputs=u, create_graph=True)  # u^T J, linear in u
                    t = torch.from_numpy(np.ascontiguousarray(vb.T)).to(g).reshape(g.shape)
                    (jv,) = torch.autograd.grad(g, u, grad_outputs=t)
            return jv.detach().cpu().numpy().astype(np.float64).T

        return self._chunks(v, block)

    def full(self) -> np.ndarray:
        """The full ``(D_out, D_in)`` Jacobian from ``D_out`` batched VJPs."""
        return self.vjp(np.eye(self.d)).T


@contextlib.contextmanager
def _math_attention() -> Iterator[None]:
    """Use the math SDPA kernel (the fused CPU kernels have no double backward)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield


def _randomized_singular_values(jac: _AutogradJacobian, k: int, oversample: int, n_iter: int,
                                rng: np.random.Generator) -> np.ndarray:
    """Top-``k`` singular values by randomized SVD (Halko et al. 2011, Alg. 4.4 + 5.1) with JVPs and VJPs."""
    ell = min(k + oversample, jac.d)
    y = jac.jvp(rng.standard_normal((jac.d, ell)))
    for _ in range(n_iter):
        q, _ = np.linalg.qr(y)
        z, _ = np.linalg.qr(jac.vjp(q))
        y = jac.jvp(z)
    q, _ = np.linalg.qr(y)
    b = jac.vjp(q).T  # (ell, d_in) = Q^T J
    return np.linalg.svd(b, compute_uv=False)[:k]


def jacobian_spectrum(
    purifier: Any,
    x0: Any,
    seed: int = 0,
    method: str = "exact",
    k: int = 32,
    backend: str = "auto",
    sample_ids: Sequence[int] | np.ndarray | None = None,
    low: float = 0.25,
    high: float = 1.0,
    fd_step: float = 1e-3,
    oversample: int = 10,
    n_iter: int = 2,
    batch_size: int = 64,
    rng_seed: int | None = 0,
    verbose: bool = False,
) -> JacobianResult:
    """
    Singular values of ``J_{f_xi}(x0)``, the Jacobian of eq. 6 for a fixed xi (Fig. 3a: > 90% below
    0.25, 1.3% above 1 on CIFAR-10).

    Backends: ``"autograd"`` for a differentiable purifier (a :class:`DiffusionPurifier` with
    ``gradient="full"``: ``forward`` inside ``purifier.randomness(seed, [id])``); ``"finite_difference"``
    (central differences over ``purify``, one-sided at the clip boundary; exact method only, for small
    images, ``2 D + 1`` purifications per image); ``"auto"`` picks autograd when available.
    ``method="exact"`` builds the full ``D x D`` Jacobian; ``"randomized"`` estimates the top ``k``
    singular values by a randomized SVD (Halko et al. 2011; ``n_iter`` power iterations, JVPs and VJPs by
    autograd). Fractions are over all ``D`` singular values; for the randomized method the ``D - k``
    unestimated ones are taken to be <= the k-th estimate (``frac_below`` is then exact when that estimate
    is below ``low``; ``frac_above`` is a lower bound when it is above ``high``).

    :param purifier: anything with ``purify(x, seed=..., sample_ids=...)``.
    :param x0: clean images ``(n, ...)`` (use float64 images and model for precise finite differences).
    :param seed: base seed of the fixed xi.
    :param method: ``"exact"`` or ``"randomized"``.
    :param k: number of singular values estimated by the randomized method.
    :param backend: ``"auto"``, ``"autograd"`` or ``"finite_difference"``.
    :param sample_ids: sample id of each image (default ``0..n-1``).
    :param low: threshold of ``frac_below``.
    :param high: threshold of ``frac_above``.
    :param fd_step: finite-difference step.
    :param oversample: randomized-SVD oversampling.
    :param n_iter: randomized-SVD power iterations.
    :param batch_size: rows per purify call (finite differences).
    :param rng_seed: seed of the randomized SVD's test matrix.
    :param verbose: progress bar.
    """
    _check_purifier(purifier)
    if method not in JACOBIAN_METHODS:
        raise ValueError(f"Unknown method {method!r}; expected one of {JACOBIAN_METHODS}")
    if backend not in JACOBIAN_BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}; expected one of {JACOBIAN_BACKENDS}")
    x0_np, template = _as_numpy(x0, "x0")
    n, d = len(x0_np), int(np.prod(x0_np.shape[1:]))
    seed = _check_int(seed, "seed", 0)
    ids = _check_ids(sample_ids, n)
    batch_size = _check_int(batch_size, "batch_size", 1)
    if backend == "auto":
        backend = "autograd" if _has_autograd(purifier) else "finite_difference"
    if backend == "autograd" and not _has_autograd(purifier):
        raise ValueError("The autograd backend needs a purifier with forward() and randomness() and gradient='full'")
    if method == "randomized":
        if backend != "autograd":
            raise ValueError("method='randomized' needs the autograd backend (a differentiable purifier)")
        k = _check_int(k, "k", 1)
    if backend == "finite_difference" and (not math.isfinite(fd_step) or fd_step <= 0):
        raise ValueError(f"fd_step must be positive, got {fd_step!r}")
    rng = np.random.default_rng(rng_seed)
    clip = _clip_values(purifier)

    spectra = []
    for i in tqdm(range(n), desc="Jacobian spectrum", disable=not verbose):
        if backend == "finite_difference":
            jac = _jacobian_fd(purifier, x0_np[i], seed, int(ids[i]), fd_step, template, batch_size, clip)
            spectra.append(np.linalg.svd(jac, compute_uv=False))
            continue
        jac = _AutogradJacobian(purifier, x0_np[i], seed, int(ids[i]), template, batch_size)
        if method == "exact":
            spectra.append(np.linalg.svd(jac.full(), compute_uv=False))
        else:
            spectra.append(_randomized_singular_values(jac, k, oversample, n_iter, rng))
    sv = np.stack(spectra)
    r = sv.shape[1]
    tail = d - r  # unestimated singular values, assumed <= the smallest estimate
    below = ((sv < low).sum(axis=1) + np.where(sv[:, -1] < low, tail, 0)) / d
    above = (sv > high).sum(axis=1) / d
    mean, std = _summary({"frac_below": below, "frac_above": above})
    return JacobianResult(sv, d, float(low), float(high), method, backend, below, above, mean, std)


# ---------------------------------------------------------------------------------------------- compression law
def _logistic(c: np.ndarray, a: float, k: float, c0: float, b: float = 0.0) -> np.ndarray:
    from scipy.special import expit

    return b + a * expit(-k * (np.asarray(c, dtype=np.float64) - c0))


def fit_compression_law(
    compression_rates: Sequence[float] | np.ndarray,
    robust_accuracies: Sequence[float] | np.ndarray,
    model: str = "logistic4",
    p0: Sequence[float] | None = None,
) -> CompressionLawFit:
    """
    Fit the sigmoid law of Fig. 3b, robust accuracy against compression rate, by least squares
    (``scipy.optimize.curve_fit``):

        logistic4: acc(c) = b + a / (1 + exp(k (c - c0)))     (4 parameters: a, k, c0, b)
        logistic3: acc(c) = a / (1 + exp(k (c - c0)))         (b = 0: accuracy vanishes without compression)

    :param compression_rates: compression rate of each configuration.
    :param robust_accuracies: its aligned (fixed-randomness) robust accuracy, any consistent unit.
    :param model: ``"logistic4"`` or ``"logistic3"``.
    :param p0: optional initial ``(a, k, c0[, b])``.
    :return: parameters, R^2 and ``predict(c)``.
    """
    from scipy.optimize import curve_fit

    if model not in LAW_MODELS:
        raise ValueError(f"Unknown model {model!r}; expected one of {LAW_MODELS}")
    c = np.asarray(compression_rates, dtype=np.float64).reshape(-1)
    y = np.asarray(robust_accuracies, dtype=np.float64).reshape(-1)
    if c.shape != y.shape:
        raise ValueError(f"Got {c.size} compression rates and {y.size} accuracies")
    n_params = 4 if model == "logistic4" else 3
    if c.size < n_params:
        raise ValueError(f"{model} needs at least {n_params} points, got {c.size}")
    if not (np.isfinite(c).all() and np.isfinite(y).all()):
        raise ValueError("compression_rates and robust_accuracies must be finite")
    if p0 is None:
        span = max(float(np.ptp(c)), 1e-12)
        p0 = [max(float(np.ptp(y)), 1e-3), 8.0 / span, float(np.median(c))]
        p0 += [float(y.min())] if n_params == 4 else []
    if len(p0) != n_params:
        raise ValueError(f"p0 must have {n_params} values for {model}")
    fn = _logistic if n_params == 4 else (lambda cc, a, k, c0: _logistic(cc, a, k, c0, 0.0))
    params, _ = curve_fit(fn, c, y, p0=list(p0), maxfev=20000)
    pred = fn(c, *params)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    names = ["a", "k", "c0", "b"][:n_params]
    return CompressionLawFit(model, {nm: float(v) for nm, v in zip(names, params)}, r2, int(c.size))


def rank_by_compression(
    configs: Any,
    x0: Any,
    eps: float = 8 / 255,
    factory: Callable | None = None,
    norm: str = "l2",
    **kwargs: Any,
) -> RankingResult:
    """
    Rank purifier configurations by compression rate (eq. 10), lowest first: the paper's gradient-free
    predictor of aligned robustness (Sec. 5, Fig. 3b). No gradients are computed.

    :param configs: purifiers, ``(name, purifier)`` pairs or a ``{name: purifier}`` dict; with ``factory``,
        configurations passed to it: a dict as keyword arguments, a tuple as positional arguments (e.g.
        ``(t_star, sampler)``), anything else as the single argument.
    :param x0: clean images.
    :param eps: l_inf radius of the neighbourhood.
    :param factory: optional callable building a purifier from a configuration.
    :param norm: ``"l2"`` or ``"linf"``.
    :param kwargs: passed to :func:`compression_rate` (``n_samples``, ``seeds``, ``batch_size``, ...);
        the same ``rng_seed`` gives every configuration the same perturbations.
    """
    norms = _check_norms(norm)
    if len(norms) != 1:
        raise ValueError("rank_by_compression ranks by one norm: 'l2' or 'linf'")
    items = list(configs.items()) if isinstance(configs, dict) else list(configs)
    if not items:
        raise ValueError("configs is empty")
    entries = []
    for idx, item in enumerate(items):
        if factory is not None:
            name = str(item)
            purifier = factory(**item) if isinstance(item, dict) else factory(*item) if isinstance(item, tuple) \
                else factory(item)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            name, purifier = item
        else:
            name, purifier = getattr(item, "name", None) or f"config_{idx}", item
        result = compression_rate(purifier, x0, eps=eps, norm=norms[0], **kwargs)
        entries.append(RankingEntry(name, result.mean[norms[0]], result.std[norms[0]], result))
    entries.sort(key=lambda e: (math.isnan(e.rate), e.rate))
    return RankingResult(norms[0], entries)


__all__ = [
    "CentroidResult", "CompressionLawFit", "CompressionResult", "CorrelationResult", "JacobianResult",
    "NeighbourhoodResult", "RankingEntry", "RankingResult", "TrajectoryResult", "VarianceResult",
    "centroid_distances", "compression_rate", "direction_correlations", "feature_fid", "feature_fid_from_model",
    "fit_compression_law", "jacobian_spectrum", "neighbourhood_analysis", "rank_by_compression", "ssim",
    "trajectory_distances", "variance_decomposition",
]
