"""Singular-value spectrum of the Jacobian of a purifier with fixed randomness (Fig. 3a)."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from art_diffpure._utils import check_int
from art_diffpure.metrics._common import (
    _as_numpy, _call_purify, _check_ids, _check_purifier, _clip_values, _Result, _summary,
)

__all__ = ["JACOBIAN_BACKENDS", "JACOBIAN_METHODS", "JacobianResult", "jacobian_spectrum"]

JACOBIAN_METHODS = ("exact", "randomized")
JACOBIAN_BACKENDS = ("auto", "autograd", "finite_difference")


@dataclass
class JacobianResult(_Result):
    """
    Singular values of the Jacobian of f_xi at x0 (Fig. 3a).

    :param singular_values: ``(n_images, r)``, descending (``r = D`` exact, ``k`` randomized).
    :param n_dims: the input dimension ``D``.
    :param frac_below: ``(n_images,)`` fraction of the ``D`` singular values below ``low``.
    :param frac_above: ``(n_images,)`` fraction of the ``D`` singular values above ``high``.
    :param mean: dataset means of ``frac_below`` and ``frac_above``.
    :param std: dataset population stds (ddof=0).
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



def _resolve_backend(purifier: Any, method: str, backend: str, k: Any, fd_step: Any) -> tuple[str, Any]:
    """Check ``method``/``backend`` (and ``k`` or ``fd_step`` where used); ``(backend, k)`` with ``"auto"`` resolved."""
    if method not in JACOBIAN_METHODS:
        raise ValueError(f"Unknown method {method!r}; expected one of {JACOBIAN_METHODS}")
    if backend not in JACOBIAN_BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}; expected one of {JACOBIAN_BACKENDS}")
    if backend == "auto":
        backend = "autograd" if _has_autograd(purifier) else "finite_difference"
    if backend == "autograd" and not _has_autograd(purifier):
        raise ValueError("The autograd backend needs a purifier with forward() and randomness() and gradient='full'")
    if method == "randomized":
        if backend != "autograd":
            raise ValueError("method='randomized' needs the autograd backend (a differentiable purifier)")
        k = check_int(k, "k", 1)
    if backend == "finite_difference" and (not math.isfinite(fd_step) or fd_step <= 0):
        raise ValueError(f"fd_step must be positive, got {fd_step!r}")
    return backend, k


def _spectrum_result(sv: np.ndarray, d: int, low: float, high: float, method: str, backend: str) -> JacobianResult:
    """Fractions over all ``d`` singular values; unestimated ones (randomized) are taken <= the smallest estimate."""
    tail = d - sv.shape[1]
    below = ((sv < low).sum(axis=1) + np.where(sv[:, -1] < low, tail, 0)) / d
    above = (sv > high).sum(axis=1) / d
    mean, std = _summary({"frac_below": below, "frac_above": above})
    return JacobianResult(sv, d, float(low), float(high), method, backend, below, above, mean, std)


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
    x0_np, template = _as_numpy(x0, "x0")
    n, d = len(x0_np), int(np.prod(x0_np.shape[1:]))
    seed = check_int(seed, "seed", 0)
    ids = _check_ids(sample_ids, n)
    batch_size = check_int(batch_size, "batch_size", 1)
    backend, k = _resolve_backend(purifier, method, backend, k, fd_step)
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
    return _spectrum_result(np.stack(spectra), d, low, high, method, backend)
