"""Seed alignment: the Gaussian noise of every (base seed, sample, step) from its own seed.

This follows Appendix B of Liu & Wei (2025), "How Do Diffusion Models Improve Adversarial
Robustness?" (arXiv 2505.22839), eq. 12-13::

    seed(s, i, t) = hash(s, i, 2t)      forward (noising) step t
                  = hash(s, i, 2t + 1)  reverse (denoising) step t
    hash(s, i, t) = ((p_s * s) XOR (p_i * i) XOR (p_t * t)) mod 2**32

with ``i`` the sample's own index (never its position in a batch), so a sample is purified
identically whatever batch it is in. Noise is drawn on the CPU with one ``torch.Generator`` per
(sample, step): the values are the same on every device, and no global RNG state is touched.
Nothing here knows ART.
"""
from __future__ import annotations

from typing import Sequence

import torch

P_S = 83492791
P_I = 73856093
P_T = 19349663
_MASK = 2**32 - 1


def seed_hash(s: int, i: int, t: int) -> int:
    """The multiplicative hash of eq. 13: ``((p_s*s) ^ (p_i*i) ^ (p_t*t)) mod 2**32``."""
    return ((P_S * int(s)) ^ (P_I * int(i)) ^ (P_T * int(t))) & _MASK


def step_seed(s: int, i: int, t: int, reverse: bool) -> int:
    """The seed of eq. 12 for forward (``reverse=False``) or reverse step ``t`` of sample ``i``."""
    return seed_hash(s, i, 2 * int(t) + (1 if reverse else 0))


def aligned_noise(
    seeds: Sequence[int],
    sample_ids: Sequence[int],
    steps: Sequence[int],
    shape: Sequence[int],
    reverse: bool,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise of shape ``(len(steps), len(sample_ids), *shape)`` on the CPU.

    Row ``b`` at step ``steps[k]`` is drawn from a generator seeded with
    ``step_seed(seeds[b], sample_ids[b], steps[k], reverse)``: it depends only on that triple.

    :param seeds: base seed per row (one base seed per sample, or a different one per EOT copy).
    :param sample_ids: the sample index per row.
    :param steps: diffusion timesteps (diffusers indexing, 0 .. num_train_timesteps - 1).
    :param shape: the shape of one sample, e.g. ``(3, 32, 32)``.
    :param reverse: ``False`` for forward-process noise, ``True`` for reverse-process noise.
    """
    if len(seeds) != len(sample_ids):
        raise ValueError(f"seeds ({len(seeds)}) and sample_ids ({len(sample_ids)}) differ in length")
    out = torch.empty((len(steps), len(sample_ids), *shape), dtype=torch.float32)
    gen = torch.Generator(device="cpu")
    one = (1, *shape)  # drawn as a batch of one, the way diffusers' randn_tensor draws per generator
    for k, t in enumerate(steps):
        for b, (s, i) in enumerate(zip(seeds, sample_ids)):
            gen.manual_seed(step_seed(s, i, t, reverse))
            out[k, b] = torch.randn(one, generator=gen)[0]
    return out.to(dtype)
