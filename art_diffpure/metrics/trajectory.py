"""Distances along purification trajectories (Table 1, S2-S4, Fig. 1c), with the SSIM they use."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from art_diffpure._utils import check_int
from art_diffpure.metrics._common import (
    _L2, _LINF, _as_numpy, _check_ids, _check_purifier, _clip_values, _no_grad, _norm, _Result, _summary,
    _to_float64,
)

__all__ = ["TrajectoryResult", "ssim", "trajectory_distances"]


@dataclass
class TrajectoryResult(_Result):
    """
    Distances between clean images and the purification states of their perturbed versions
    (Table 1, S2-S4, Fig. 1c, S1-S3).

    :param per_image: ``{metric: {stage: (n_images,)}}`` for metrics ``l2``, ``linf``, ``ssim`` and stages
        ``start`` (the input x, t = 0), ``max`` (after forward noising; absent without trajectories)
        and ``end`` (the purified output).
    :param mean: ``{metric: {stage: float}}``.
    :param std: ``{metric: {stage: float}}``, population stds (ddof=0) over images.
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


# ---------------------------------------------------------------------------------------------- SSIM
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


# ---------------------------------------------------------------------------------------------- trajectories
def _supports_trajectory(purifier: Any) -> bool:
    try:
        return "return_trajectory" in inspect.signature(purifier.purify).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _purify_states(purifier: Any, x_np: np.ndarray, template: Any, seed: int | None, ids: np.ndarray,
                   batch_size: int, verbose: bool, with_traj: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``(end (n, ...), trajectory (T, n, ...) or None)``, float64, in calls of ``batch_size`` images."""
    ends, trajs = [], []
    kwargs = {"return_trajectory": True} if with_traj else {}
    n = len(x_np)
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
    if end.shape != x_np.shape:
        raise ValueError(f"purify returned shape {end.shape} for an input of shape {x_np.shape}")
    return end, (np.concatenate(trajs, axis=1) if trajs else None)


def _max_index(purifier: Any, n_states: int, l2_traj: np.ndarray) -> int:
    """Index of the last forward state (a DiffusionPurifier), else of the state farthest from x0 on average."""
    if hasattr(purifier, "_reverse_timesteps"):
        return n_states - 1 - len(purifier._reverse_timesteps())
    return int(np.argmax(l2_traj.mean(axis=1)))


def _stage_distances(states: dict[str, np.ndarray], ref: np.ndarray, data_range: float, ssim_window: int | None,
                     channels_first: bool) -> dict[str, dict[str, np.ndarray]]:
    """``{metric: {stage: (n,)}}`` l2, l_inf and SSIM of every stage's states against ``ref``."""
    per_image: dict[str, dict[str, np.ndarray]] = {_L2: {}, _LINF: {}, "ssim": {}}
    for stage, s in states.items():
        d = (s - ref).reshape(len(ref), -1)
        per_image[_L2][stage] = _norm(d, 2)
        per_image[_LINF][stage] = _norm(d, np.inf)
        per_image["ssim"][stage] = ssim(ref, s, data_range=data_range, window_size=ssim_window,
                                        channels_first=channels_first)
    return per_image


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
    ids = _check_ids(sample_ids, len(x0_np))
    batch_size = check_int(batch_size, "batch_size", 1)
    if seed is not None:
        seed = check_int(seed, "seed", 0)
    lo, hi = _clip_values(purifier)
    end, traj = _purify_states(purifier, x_np, template, seed, ids, batch_size, verbose,
                               _supports_trajectory(purifier))
    ref = x0_np.astype(np.float64)
    states = {"start": x_np.astype(np.float64), "end": end}
    l2_traj = linf_traj = max_index = None
    if traj is not None:  # (T, n, ...)
        diff = (traj - ref[None]).reshape(len(traj), len(ref), -1)
        l2_traj, linf_traj = _norm(diff, 2), _norm(diff, np.inf)
        max_index = _max_index(purifier, len(traj), l2_traj)
        states = {"start": states["start"], "max": traj[max_index], "end": end}
    per_image = _stage_distances(states, ref, hi - lo, ssim_window, bool(getattr(purifier, "channels_first", True)))
    summary = {m: _summary(v) for m, v in per_image.items()}
    return TrajectoryResult(per_image, {m: v[0] for m, v in summary.items()}, {m: v[1] for m, v in summary.items()},
                            l2_traj, linf_traj, max_index)
