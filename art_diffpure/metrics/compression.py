"""Compression rate (eq. 10) of a purifier with fixed randomness, and rankings of configurations by it.

The compression rate is the paper's gradient-free predictor of aligned robustness (Sec. 5, Fig. 3b):
:func:`rank_by_compression` orders purifier configurations by it, lowest (most robust) first.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from art_diffpure._utils import check_int
from art_diffpure.metrics._common import (
    _as_numpy, _check_eps, _check_ids, _check_norms, _check_purifier, _check_seeds, _clip_values,
    _L2, _LINF, _mean_std, _norm, _purify_jobs, _Result, _sample_ball,
)

__all__ = ["CompressionResult", "RankingEntry", "RankingResult", "compression_rate", "rank_by_compression"]

logger = logging.getLogger(__name__)


@dataclass
class CompressionResult(_Result):
    """
    Compression rates (eq. 10), keyed by the norm's label (:func:`~art_diffpure._utils.norm_label`: l2 and/or
    linf), however the norm was spelled.

    :param per_sample: ``(n_images, n_seeds, n_samples)`` rate of every perturbed copy under every seed
        (NaN where the perturbation was zero after clipping).
    :param per_image: ``(n_images,)`` mean over samples and seeds.
    :param mean: dataset mean of ``per_image``.
    :param std: dataset population std (ddof=0) of ``per_image``.
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


# ---------------------------------------------------------------------------------------------- compression rate
def _perturbation_source(purifier: Any, x0_np: np.ndarray, perturbed: Any, eps: Any, n_samples: Any,
                         rng_seed: int | None) -> tuple[Callable[[int], np.ndarray], int]:
    """``(copies, k)``: ``copies(i)`` gives the ``k`` perturbed copies ``(k, ...)`` of image ``i``, drawn in order."""
    if perturbed is None:
        eps = _check_eps(eps)
        n_samples = check_int(n_samples, "n_samples", 2)
        rng = np.random.default_rng(rng_seed)
        clip = _clip_values(purifier)
        return (lambda i: _sample_ball(x0_np[i], eps, n_samples, rng, clip)), n_samples
    xs, _ = _as_numpy(perturbed, "perturbed")
    if xs.ndim == x0_np.ndim:
        xs = xs[:, None]
    if xs.ndim != x0_np.ndim + 1 or xs.shape[0] != len(x0_np) or xs.shape[2:] != x0_np.shape[1:]:
        raise ValueError(f"perturbed must have shape (n, ...) or (n, k, ...) matching x0 {x0_np.shape}, "
                         f"got {np.shape(perturbed)}")
    xs = xs.astype(x0_np.dtype)
    return (lambda i: xs[i]), xs.shape[1]


def _compression_jobs(x0_np: np.ndarray, copies: Callable[[int], np.ndarray], seed_list: list[int], n_samples: int,
                      ids: np.ndarray, inputs: list) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Rows of image ``i``: per seed, the anchor x0 then the ``n_samples`` perturbed copies (kept in ``inputs``)."""
    for i in range(len(x0_np)):
        x_i = copies(i)
        inputs.append(x_i)
        block = np.concatenate([x0_np[i][None], x_i])
        rows = np.concatenate([block] * len(seed_list))
        yield rows, np.repeat(seed_list, n_samples + 1), np.full(len(rows), ids[i])


def _image_rates(out: np.ndarray, x_i: np.ndarray, x0_i: np.ndarray, norms: list[str], n_seeds: int,
                 n_samples: int) -> dict[str, np.ndarray]:
    """``{norm: (n_seeds, n_samples)}`` rates of one image from its purified rows (NaN for zero perturbations)."""
    out = out.reshape(n_seeds, n_samples + 1, -1)
    d_out = out[:, 1:] - out[:, :1]
    d_in = (x_i.astype(np.float64) - x0_i.astype(np.float64)).reshape(n_samples, -1)
    rates = {}
    for nm in norms:
        denom = _norm(d_in, nm)
        with np.errstate(divide="ignore", invalid="ignore"):
            rates[nm] = np.where(denom > 0, _norm(d_out, nm) / denom, np.nan)
    return rates


def _compression_result(norms: list[str], seed_list: list[int], per_sample: dict[str, np.ndarray]) -> CompressionResult:
    if any(np.isnan(v).any() for v in per_sample.values()):
        logger.warning("Some perturbations are zero (after clipping); their compression rates are NaN and ignored")
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN images stay NaN
        per_image = {nm: np.nanmean(v.reshape(len(v), -1), axis=1) for nm, v in per_sample.items()}
    stats = {nm: _mean_std(v) for nm, v in per_image.items()}
    return CompressionResult(norms, seed_list, per_sample, per_image,
                             {k: v[0] for k, v in stats.items()}, {k: v[1] for k, v in stats.items()})


def compression_rate(
    purifier: Any,
    x0: Any,
    eps: float = 8 / 255,
    n_samples: int = 16,
    seeds: int | Sequence[int] = (0,),
    norm: Any = 2,
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
    :param norm: used in numerator and denominator: ``2`` or ``np.inf`` (ART's spelling; the strings of
        :func:`~art_diffpure._utils.parse_norm` too), ``"both"`` or a list of norms. Results are keyed by
        :func:`~art_diffpure._utils.norm_label` (l2, linf).
    :param perturbed: optional perturbed images ``(n, ...)`` or ``(n, k, ...)``.
    :param sample_ids: sample id of each image (default ``0..n-1``), so xi matches e.g. an attack's.
    :param batch_size: rows per purify call.
    :param rng_seed: seed of the numpy generator drawing the perturbations.
    :param verbose: progress bar.
    """
    _check_purifier(purifier)
    x0_np, template = _as_numpy(x0, "x0")
    n = x0_np.shape[0]
    norms = _check_norms(norm)
    seed_list = _check_seeds(seeds)
    ids = _check_ids(sample_ids, n)
    batch_size = check_int(batch_size, "batch_size", 1)
    copies, n_samples = _perturbation_source(purifier, x0_np, perturbed, eps, n_samples, rng_seed)
    n_seeds = len(seed_list)
    inputs: list[Any] = []
    jobs = _compression_jobs(x0_np, copies, seed_list, n_samples, ids, inputs)
    per_sample = {nm: np.full((n, n_seeds, n_samples), np.nan) for nm in norms}
    for i, out in enumerate(_purify_jobs(purifier, jobs, template, batch_size, verbose, "Compression rate", n)):
        for nm, rates in _image_rates(out, inputs[i], x0_np[i], norms, n_seeds, n_samples).items():
            per_sample[nm][i] = rates
        inputs[i] = None  # free memory
    return _compression_result(norms, seed_list, per_sample)


# ---------------------------------------------------------------------------------------------- ranking
def _config_name(config: Any) -> str:
    """A readable name of a factory configuration: ``t_star=100, sampler=ddpm`` or ``100, ddpm``."""
    if isinstance(config, dict):
        return ", ".join(f"{k}={v}" for k, v in config.items())
    if isinstance(config, tuple):
        return ", ".join(str(v) for v in config)
    return str(config)


def _named_purifier(item: Any, idx: int, factory: Callable | None, name: str | None = None) -> tuple[str, Any]:
    """``(name, purifier)`` of one entry of ``configs`` (see :func:`rank_by_compression`)."""
    if factory is not None:
        purifier = factory(**item) if isinstance(item, dict) else factory(*item) if isinstance(item, tuple) \
            else factory(item)
        return name or _config_name(item), purifier
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        return item[0], item[1]
    return name or getattr(item, "name", None) or f"config_{idx}", item


def rank_by_compression(
    configs: Any,
    x0: Any,
    eps: float = 8 / 255,
    factory: Callable | None = None,
    norm: Any = 2,
    **kwargs: Any,
) -> RankingResult:
    """
    Rank purifier configurations by compression rate (eq. 10), lowest first: the paper's gradient-free
    predictor of aligned robustness (Sec. 5, Fig. 3b). No gradients are computed.

    :param configs: purifiers, ``(name, purifier)`` pairs or a ``{name: purifier}`` dict; with ``factory``,
        configurations passed to it (a list, or a ``{name: configuration}`` dict): a dict as keyword arguments, a
        tuple as positional arguments (e.g. ``(t_star, sampler)``), anything else as the single argument; entries
        are named by their key, else readably from the configuration (``"100, ddpm"``).
    :param x0: clean images.
    :param eps: l_inf radius of the neighbourhood.
    :param factory: optional callable building a purifier from a configuration.
    :param norm: one norm, ``2`` or ``np.inf`` (ART's spelling; the strings of
        :func:`~art_diffpure._utils.parse_norm` too); ``RankingResult.norm`` is its result key
        (:func:`~art_diffpure._utils.norm_label`: l2 or linf).
    :param kwargs: passed to :func:`compression_rate` (``n_samples``, ``seeds``, ``batch_size``, ...);
        the same ``rng_seed`` gives every configuration the same perturbations.
    """
    norms = _check_norms(norm)
    if len(norms) != 1:
        raise ValueError(f"rank_by_compression ranks by one norm: 2 ({_L2!r}) or np.inf ({_LINF!r})")
    items = list(configs.items()) if isinstance(configs, dict) else [(None, c) for c in configs]
    if not items:
        raise ValueError("configs is empty")
    entries = []
    for idx, (key, item) in enumerate(items):
        name, purifier = _named_purifier(item, idx, factory, None if key is None else str(key))
        result = compression_rate(purifier, x0, eps=eps, norm=norms[0], **kwargs)
        entries.append(RankingEntry(name, result.mean[norms[0]], result.std[norms[0]], result))
    entries.sort(key=lambda e: (math.isnan(e.rate), e.rate))
    return RankingResult(norms[0], entries)
