"""Analytic purifiers with closed forms for the metric tests (imported by tests/metrics/test_*.py)."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

torch.set_num_threads(1)  # the tiny UNet is far faster single-threaded on a shared CPU

SHAPE = (1, 4, 4)
D = 16


class IdentityPurifier:
    def purify(self, x, seed=None, sample_ids=None):
        return x.clone() if isinstance(x, torch.Tensor) else x.copy()


class ConstantPurifier:
    def purify(self, x, seed=None, sample_ids=None):
        return np.full_like(x, 0.5)


class LinearPurifier:
    """f_xi(x) = A x + b_xi on flattened images, b_xi deterministic in (seed, sample id); records every call."""

    clip_values = (0.0, 1.0)

    def __init__(self, a: np.ndarray, b_scale: float = 0.1):
        self.a = np.asarray(a, dtype=np.float64)
        self.b_scale = b_scale
        self.calls: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def offset(self, seed: int, sid: int) -> np.ndarray:
        return np.random.RandomState((int(seed) * 1_000_003 + int(sid)) % 2**32).randn(len(self.a)) * self.b_scale

    def _rows(self, n, seed, sample_ids):
        seeds = np.broadcast_to(np.asarray(seed, dtype=np.int64), (n,)).copy()
        ids = np.arange(n) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64).reshape(-1)
        return seeds, ids

    def purify(self, x, seed=None, sample_ids=None):
        xn = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        seeds, ids = self._rows(len(x), seed, sample_ids)
        self.calls.append((xn.copy(), seeds, ids))
        b = np.stack([self.offset(s, i) for s, i in zip(seeds, ids)])
        return (xn @ self.a.T + b).reshape(x.shape).astype(x.dtype)

    def recorded(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rows, seeds, ids)`` of every row purified so far, concatenated over calls."""
        return tuple(np.concatenate([c[k] for c in self.calls]) for k in range(3))


class TorchLinearPurifier(LinearPurifier):
    """The same map with a differentiable forward() inside randomness(), like DiffusionPurifier."""

    gradient = "full"
    _context = None

    @contextlib.contextmanager
    def randomness(self, seed, sample_ids=None):
        self._context = (seed, sample_ids)
        try:
            yield self
        finally:
            self._context = None

    def forward(self, x, y=None):
        seeds, ids = self._rows(len(x), *self._context)
        b = torch.from_numpy(np.stack([self.offset(s, i) for s, i in zip(seeds, ids)])).to(x)
        return (x.reshape(len(x), -1) @ torch.from_numpy(self.a).to(x).T + b).reshape(x.shape), y


def random_matrix(singular_values, seed=0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    u, _ = np.linalg.qr(rng.randn(D, D))
    v, _ = np.linalg.qr(rng.randn(D, D))
    return u @ np.diag(singular_values) @ v.T


def grid_inputs(purifier: LinearPurifier, n_images: int, seeds) -> dict[int, np.ndarray]:
    """The recorded perturbations of each image under its first seed (identical under every seed)."""
    rows, s, i = purifier.recorded()
    out = {}
    for img in range(n_images):
        blocks = [rows[(i == img) & (s == seed)] for seed in seeds]
        for b in blocks[1:]:
            np.testing.assert_array_equal(b, blocks[0])
        out[img] = blocks[0]
    return out
