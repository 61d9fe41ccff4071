"""
Small, dependency-light statistics for the evaluation report (numpy and scipy only).

- :func:`wilson_interval`: 95% Wilson score interval of an accuracy ``k / n`` (one seed).
- :func:`bootstrap_interval`: percentile bootstrap over images of a per-image statistic's mean, with the Monte Carlo
  band of each end (:func:`percentile_interval`), so that a verdict never rests on resampling noise.
- :func:`mcnemar_exact`: exact McNemar test (two-sided exact binomial test on the discordant pairs).
- :func:`paired_difference`: difference of two accuracies measured on the same images, with a paired
  percentile bootstrap interval over images and the exact McNemar p-value.
- :func:`seed_mean_sd`: THE rule for a number repeated over seeds: its mean and seed-to-seed standard
  deviation with ``ddof=1`` (the seeds are a sample of the randomness; ``None`` for one seed).
- :func:`seed_summary`: accuracy over several seeds on the same images: mean over seeds, seed-to-seed
  standard deviation (by :func:`seed_mean_sd`) and, separately, the 95% interval over images.
- :func:`mean_interval`: Student-t interval of a mean from its summary (mean, population std, n).
- :func:`holm`: Holm's step-down adjustment of a family of p-values.

Spreads: seed-to-seed spreads are sample standard deviations (``ddof=1``); per-image dataset statistics
(the metrics' ``std`` over images, and the ``std`` taken by :func:`mean_interval`) are population standard
deviations (``ddof=0``). Every random draw comes from ``numpy.random.default_rng(seed)`` with an explicit seed
argument; the global RNG is never used. Result objects are :class:`~art_diffpure._utils.Result` dataclasses
whose ``to_dict()`` gives JSON types (non-finite floats become ``None``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from art_diffpure._utils import Result, check_int

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_N_BOOT",
    "Interval",
    "McNemarResult",
    "PairedDifference",
    "SeedSummary",
    "bootstrap_interval",
    "holm",
    "mcnemar_exact",
    "mean_interval",
    "paired_difference",
    "percentile_interval",
    "seed_mean_sd",
    "seed_summary",
    "wilson_interval",
]

DEFAULT_LEVEL = 0.95
DEFAULT_N_BOOT = 10000


@dataclass(frozen=True)
class Interval(Result):
    """A point estimate with a two-sided interval ``[low, high]`` at ``level``, and how it was computed."""

    estimate: float
    low: float
    high: float
    level: float
    method: str
    #: Bootstrap intervals only: ``{"low": [a, b], "high": [c, d]}``, a 95% Monte Carlo band of each end (where the
    #: end would lie with infinitely many resamples); ``None`` for closed-form intervals (Wilson, Student t).
    monte_carlo: dict[str, list[float]] | None = None

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the closed interval."""
        return self.low <= value <= self.high

    def end_bands(self) -> tuple[list[float], list[float]]:
        """``(low band, high band)``: each end's Monte Carlo band, or the end itself for a closed-form interval."""
        mc = self.monte_carlo
        return (list(mc["low"]), list(mc["high"])) if mc else ([self.low, self.low], [self.high, self.high])


@dataclass(frozen=True)
class McNemarResult(Result):
    """
    Exact McNemar test. ``b``: pairs where A is correct and B is not; ``c``: B correct, A not; ``n``: pairs.
    ``p_value``: two-sided, ``min(1, 2 P(X <= min(b, c)))`` with ``X ~ Bin(b + c, 1/2)`` (1 when b + c = 0).
    """

    b: int
    c: int
    n: int
    p_value: float
    method: str = "exact McNemar (two-sided exact binomial on the discordant pairs)"


@dataclass(frozen=True)
class PairedDifference(Result):
    """Accuracy of A minus accuracy of B on the same images, its interval, and the paired test."""

    accuracy_a: float
    accuracy_b: float
    difference: Interval
    test: McNemarResult
    n_images: int
    note: str = ""
    tests_per_seed: list[McNemarResult] | None = None


@dataclass(frozen=True)
class SeedSummary(Result):
    """
    Accuracy over ``n_seeds`` seeds on the same ``n_images`` images.

    ``mean``: mean over seeds; ``seed_sd``: seed-to-seed standard deviation (:func:`seed_mean_sd`: ddof=1,
    ``None`` for one seed);
    ``values``: per-seed accuracies; ``interval``: 95% interval over images (Wilson for one seed, else the
    percentile bootstrap over images of the per-image mean correctness). The two are different quantities:
    the seed spread says how much the attack/test randomness moves the number on these images, the interval
    over images how much another draw of images would.
    """

    mean: float
    seed_sd: float | None
    values: list[float]
    n_seeds: int
    n_images: int
    interval: Interval


def _check_level(level: float) -> float:
    if not (isinstance(level, (float, int)) and 0.0 < float(level) < 1.0):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return float(level)


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2.0))


def wilson_interval(k: int, n: int, level: float = DEFAULT_LEVEL) -> Interval:
    """
    Wilson score interval for a proportion ``k / n`` (Wilson 1927; Newcombe 1998, method 3)::

        (p + z^2 / 2n +- z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n)

    :param k: successes (e.g. correctly classified images), ``0 <= k <= n``.
    :param n: trials, ``n >= 1``.
    :param level: two-sided coverage.
    """
    level = _check_level(level)
    k, n = check_int(k, "k"), check_int(n, "n")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, n] = [0, {n}], got {k}")
    z = _z(level)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    if k == 0:
        low = 0.0
    if k == n:
        high = 1.0
    return Interval(p, low, high, level, "Wilson score")


def _as_2d(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] == 0 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (n_images,) or (n_seeds, n_images) array, got shape "
                         f"{np.shape(values)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _as_correct(values: Any, name: str) -> np.ndarray:
    arr = _as_2d(values, name)
    if not np.isin(arr, (0.0, 1.0)).all():
        raise ValueError(f"{name} must hold per-image correctness (booleans or 0/1)")
    return arr


def _check_n_boot(n_boot: int) -> int:
    return check_int(n_boot, "n_boot", 100)


def _boot_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(check_int(seed, "seed")).integers(0, n, size=(n_boot, n))


def _quantile_band(sorted_boots: np.ndarray, q: float) -> list[float]:
    """
    A distribution-free 95% band of the ``q`` quantile of the bootstrap distribution from ``B`` sorted resamples:
    the order statistics at ranks ``qB -+ 1.96 sqrt(B q (1 - q))`` (the binomial count of resamples below it).
    """
    n = len(sorted_boots)
    half = 1.96 * math.sqrt(n * q * (1 - q))
    lo = int(max(0, math.floor(q * (n - 1) - half)))
    hi = int(min(n - 1, math.ceil(q * (n - 1) + half)))
    return [float(sorted_boots[lo]), float(sorted_boots[hi])]


def percentile_interval(estimate: float, boots: Sequence[float] | np.ndarray, level: float = DEFAULT_LEVEL,
                        method: str = "percentile bootstrap") -> Interval:
    """The percentile interval of bootstrap replicates ``boots`` around ``estimate``, with each end's Monte Carlo
    band (:func:`_quantile_band`); non-finite replicates are not allowed."""
    level = _check_level(level)
    b = np.sort(np.asarray(boots, dtype=np.float64).reshape(-1))
    if len(b) < 100 or not np.all(np.isfinite(b)):
        raise ValueError(f"percentile_interval needs >= 100 finite replicates, got {len(b)}")
    q_low, q_high = (1 - level) / 2, (1 + level) / 2
    low, high = np.quantile(b, [q_low, q_high])
    return Interval(float(estimate), float(low), float(high), level, method,
                    {"low": _quantile_band(b, q_low), "high": _quantile_band(b, q_high)})


def bootstrap_interval(values: Sequence[float] | np.ndarray, level: float = DEFAULT_LEVEL,
                       n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                       statistic: Callable[[np.ndarray], np.ndarray] | None = None) -> Interval:
    """
    Percentile bootstrap interval over images.

    :param values: per-image values ``(n_images,)``, or ``(n_seeds, n_images)``: then each image's mean over
        seeds is the per-image value (images, not seeds, are resampled: they are the independent units).
    :param level: two-sided coverage.
    :param n_boot: bootstrap resamples (>= 100).
    :param seed: seed of the resampling generator (``numpy.random.default_rng(seed)``; never the global RNG).
    :param statistic: maps a ``(n_boot, n_images)`` array of resampled per-image values to ``(n_boot,)``;
        default the mean over images.
    """
    level = _check_level(level)
    n_boot = _check_n_boot(n_boot)
    per_image = _as_2d(values, "values").mean(axis=0)
    stat = statistic or (lambda a: a.mean(axis=-1))
    estimate = float(stat(per_image[None])[0])
    boots = np.asarray(stat(per_image[_boot_indices(len(per_image), n_boot, seed)]), dtype=np.float64)
    return percentile_interval(estimate, boots, level,
                               f"percentile bootstrap over {len(per_image)} images ({n_boot} resamples, seed {seed})")


def mean_interval(mean: float, std: float, n: int, level: float = DEFAULT_LEVEL) -> Interval:
    """
    Student-t interval of a mean over ``n`` images from its summary: ``mean +- t_{n-1} s / sqrt(n)`` with
    ``s = std sqrt(n / (n - 1))`` (``std`` is the population standard deviation over images, ddof=0).
    For results saved without per-image values.
    """
    from scipy.stats import t as student_t

    level = _check_level(level)
    check_int(n, "n", 2)
    if not (math.isfinite(mean) and math.isfinite(std)) or std < 0:
        raise ValueError(f"mean and std must be finite and std >= 0, got {mean!r}, {std!r}")
    sd = std * math.sqrt(n / (n - 1))
    half = float(student_t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(float(mean), float(mean) - half, float(mean) + half, level,
                    f"Student t over {int(n)} images (from mean and std)")


def mcnemar_exact(correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray) -> McNemarResult:
    """
    Exact McNemar test of two paired per-image correctness vectors (same images, same order).

    ``b`` = #(A correct, B wrong), ``c`` = #(A wrong, B correct); under H0 (equal accuracies) the discordant
    pairs split as ``Bin(b + c, 1/2)``; the two-sided p-value is ``min(1, 2 P(X <= min(b, c)))``.
    """
    from scipy.stats import binom

    a = _as_correct(correct_a, "correct_a")
    b_ = _as_correct(correct_b, "correct_b")
    if a.shape[0] != 1 or b_.shape[0] != 1:
        raise ValueError("mcnemar_exact takes two 1-D correctness vectors (one seed each)")
    a, b_ = a[0].astype(bool), b_[0].astype(bool)
    if a.shape != b_.shape:
        raise ValueError(f"correct_a and correct_b must pair up: {a.size} and {b_.size} images")
    b = int((a & ~b_).sum())
    c = int((~a & b_).sum())
    m = b + c
    p = 1.0 if m == 0 else min(1.0, 2.0 * float(binom.cdf(min(b, c), m, 0.5)))
    return McNemarResult(b, c, int(a.size), p)


def paired_difference(correct_a: Any, correct_b: Any, level: float = DEFAULT_LEVEL, n_boot: int = DEFAULT_N_BOOT,
                      seed: int = 0) -> PairedDifference:
    """
    Accuracy of A minus accuracy of B on the same images.

    :param correct_a: per-image correctness ``(n_images,)`` or ``(n_seeds_a, n_images)``.
    :param correct_b: likewise (the number of seeds may differ; the images must be the same, in order).
    :return: the difference of the (seed-mean) accuracies with a paired percentile bootstrap interval over
        images (each resample draws images and keeps both of their outcomes, so the pairing is kept), and the
        exact McNemar test on the first seed of each (seed 0 in this project). Seeds are not pooled into one
        McNemar test: the seeds re-use the same images, so pooled discordant pairs are not independent and the
        pooled p-value would be too small. With the same number (> 1) of seeds on both sides, the McNemar test
        of each seed pair (row k of A against row k of B) is given too, in ``tests_per_seed``.
    """
    a = _as_correct(correct_a, "correct_a")
    b = _as_correct(correct_b, "correct_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"correct_a and correct_b must be on the same images: {a.shape[1]} and {b.shape[1]}")
    diff = bootstrap_interval(a.mean(axis=0) - b.mean(axis=0), level=level, n_boot=n_boot, seed=seed)
    diff = dataclasses.replace(diff, method="paired " + diff.method)
    test = mcnemar_exact(a[0], b[0])
    note = ("difference of the seed-mean accuracies; McNemar on the first seed of each"
            if max(len(a), len(b)) > 1 else "one seed each")
    per_seed = [mcnemar_exact(ra, rb) for ra, rb in zip(a, b)] if len(a) == len(b) > 1 else None
    return PairedDifference(float(a.mean()), float(b.mean()), diff, test, int(a.shape[1]), note, per_seed)


def seed_mean_sd(values: Sequence[float] | np.ndarray) -> tuple[float, float | None]:
    """
    Mean and seed-to-seed standard deviation of one number measured under several seeds (e.g. robust accuracy
    per base seed). The sd is the SAMPLE standard deviation (``ddof=1``): the seeds are a sample of the
    attack/test randomness; ``None`` for a single seed, where no spread can be estimated.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("values must hold at least one seed")
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)


def seed_summary(correct: Any, level: float = DEFAULT_LEVEL, n_boot: int = DEFAULT_N_BOOT,
                 seed: int = 0) -> SeedSummary:
    """
    Summary of per-image correctness ``(n_seeds, n_images)`` (or ``(n_images,)`` for one seed): mean over
    seeds, seed-to-seed sd (:func:`seed_mean_sd`, ddof=1), and the 95% interval over images — Wilson for one
    seed, else the percentile bootstrap over images of each image's mean correctness over seeds.
    """
    arr = _as_correct(correct, "correct")
    values = arr.mean(axis=1)
    if len(arr) == 1:
        interval = wilson_interval(int(arr.sum()), arr.shape[1], level)
    else:
        interval = bootstrap_interval(arr, level=level, n_boot=n_boot, seed=seed)
    mean, sd = seed_mean_sd(values)
    return SeedSummary(mean, sd, [float(v) for v in values], int(len(arr)), int(arr.shape[1]), interval)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm (1979) step-down adjusted p-values of a family of tests, in the input order."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or not np.isfinite(p).all() or ((p < 0) | (p > 1)).any():
        raise ValueError("p_values must be a 1-D sequence of numbers in [0, 1]")
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adjusted[idx] = running
    return [float(v) for v in adjusted]
