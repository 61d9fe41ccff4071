"""Shared machinery of the metrics: result base class, argument checks, norms, ball sampling, purify calls.

Private to :mod:`art_diffpure.metrics`; nothing here is public API.
"""
from __future__ import annotations

import contextlib
import math
from collections import deque
from typing import Any, Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from art_diffpure._utils import Result, check_int, norm_label, to_jsonable

__all__ = [
    "NORMS", "_L2", "_LINF", "_Result", "_as_numpy", "_call_purify", "_check_eps", "_check_ids", "_check_norms",
    "_check_purifier", "_check_seeds", "_clip_values", "_mean_std", "_no_grad", "_norm", "_plain",
    "_purify_jobs", "_sample_ball", "_summary", "_to_float64",
]

#: Result keys of the two norms the metrics measure, 2 and np.inf (the keys of every per-norm dict in the results).
NORMS = (norm_label(2), norm_label(np.inf))
_L2, _LINF = NORMS

#: The JSON conversion of every metric result (one implementation: :func:`art_diffpure._utils.to_jsonable`).
_plain = to_jsonable


# ---------------------------------------------------------------------------------------------- results
#: The base class of every metric result (one implementation: :class:`art_diffpure._utils.Result`).
_Result = Result


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """
    Mean and *population* standard deviation (``ddof=0``) of the finite entries of ``values``
    (NaN and +-inf are dropped first); ``(nan, nan)`` when none is finite.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std())


def _summary(per_image: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, float]]:
    """``({key: mean}, {key: std})`` of each per-image array, by :func:`_mean_std` (ddof=0)."""
    stats = {k: _mean_std(v) for k, v in per_image.items()}
    return {k: v[0] for k, v in stats.items()}, {k: v[1] for k, v in stats.items()}


# ---------------------------------------------------------------------------------------------- norms
def _unknown_norm(norm: Any) -> ValueError:
    return ValueError(f"Unknown norm {norm!r}; expected 2 (or {_L2!r}), np.inf (or 'inf', {_LINF!r}), "
                      "'both' or a list of those")


def _metric_norm_label(norm: Any) -> str:
    """The result key (:func:`~art_diffpure._utils.norm_label`) of one norm the metrics measure: 2 or np.inf."""
    try:
        label = norm_label(norm)
    except ValueError:
        raise _unknown_norm(norm) from None
    if label not in NORMS:
        raise _unknown_norm(norm)
    return label


def _check_norms(norm: Any) -> list[str]:
    """
    The result keys of ``norm``: one norm (2 or np.inf, any spelling of :func:`~art_diffpure._utils.norm_label`),
    ``"both"`` (:data:`NORMS`) or a sequence of norms (duplicates dropped, order kept).
    """
    if isinstance(norm, str) and norm.lower() == "both":
        return list(NORMS)
    if isinstance(norm, (str, int, float, np.integer, np.floating)):
        return [_metric_norm_label(norm)]
    try:
        items = list(norm)
    except TypeError:
        raise _unknown_norm(norm) from None
    if not items:
        raise _unknown_norm(norm)
    return list(dict.fromkeys(_metric_norm_label(n) for n in items))


def _norm(d: np.ndarray, norm: Any) -> np.ndarray:
    """l2 or l_inf norm (2 or np.inf, any spelling of :func:`~art_diffpure._utils.norm_label`) over the last axis
    of ``d (..., D)``."""
    return np.sqrt(np.sum(d * d, axis=-1)) if _metric_norm_label(norm) == _L2 else np.max(np.abs(d), axis=-1)


# ---------------------------------------------------------------------------------------------- checks
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


def _check_seeds(seeds: Any) -> list[int]:
    seeds = [seeds] if isinstance(seeds, (int, np.integer)) else list(seeds)  # a bool fails check_int below
    if not seeds:
        raise ValueError("seeds must contain at least one base seed")
    return [check_int(s, "every seed", 0) for s in seeds]


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


# ---------------------------------------------------------------------------------------------- sampling, purifying
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
