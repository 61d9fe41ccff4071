"""
Deterministic GPU kernels for the length of a purifier call (``DiffusionPurifier(..., deterministic=True)``).

TF32 off, deterministic cuDNN, no autotuning, ``torch.use_deterministic_algorithms`` and the math attention kernel
(the flash and memory-efficient scaled-dot-product attention backwards are not deterministic, and with
``warn_only`` PyTorch would only warn) while the purifier runs, forward and backward, then the caller's global flags
as they were. ART runs the backward pass after ``forward`` has returned, so an identity autograd node at each end of
the chain switches the flags on again when the backward pass enters the chain and restores them when it leaves.

TF32 is read and set through whichever of PyTorch's two APIs the process uses: the legacy ``allow_tf32`` flags, or,
once anyone has used the ``fp32_precision`` API (torch >= 2.9), that API, whose use makes the legacy flags raise.
cuBLAS reads ``CUBLAS_WORKSPACE_CONFIG`` once, when it starts: set it in the environment before any CUDA call
(``DiffusionPurifier(deterministic=True)`` sets it when it is unset and warns if CUDA has already started).
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

#: ``CUBLAS_WORKSPACE_CONFIG`` set by ``deterministic=True`` when unset (cuBLAS' documented deterministic setting).
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"


def _precision_objects():
    import torch

    cudnn = torch.backends.cudnn
    return torch.backends.cuda.matmul, getattr(cudnn, "conv", None), getattr(cudnn, "rnn", None)


def tf32_state() -> tuple[str, tuple]:
    """``("legacy", (matmul, cudnn))`` booleans, or ``("precision", (matmul, conv, rnn))`` strings where the process
    has used the ``fp32_precision`` API (reading the legacy flags then raises)."""
    import torch

    try:
        return "legacy", (bool(torch.backends.cuda.matmul.allow_tf32), bool(torch.backends.cudnn.allow_tf32))
    except RuntimeError:  # a mix of the two APIs: only the new one answers
        return "precision", tuple(obj.fp32_precision for obj in _precision_objects())


def set_tf32(state: tuple[str, tuple]) -> None:
    """Restore a :func:`tf32_state`, through the API it was read with."""
    import torch

    api, values = state
    if api == "legacy":
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = values
    else:
        for obj, value in zip(_precision_objects(), values):
            obj.fp32_precision = value


def _sdp_flags() -> tuple[bool, ...]:
    import torch

    cuda = torch.backends.cuda
    return (cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled(), cuda.math_sdp_enabled(),
            cuda.cudnn_sdp_enabled() if hasattr(cuda, "cudnn_sdp_enabled") else False)


def _set_sdp_flags(flags: tuple[bool, ...]) -> None:
    import torch

    cuda = torch.backends.cuda
    cuda.enable_flash_sdp(flags[0])
    cuda.enable_mem_efficient_sdp(flags[1])
    cuda.enable_math_sdp(flags[2])
    if hasattr(cuda, "enable_cudnn_sdp"):
        cuda.enable_cudnn_sdp(flags[3])


def current_flags() -> tuple:
    """The global kernel flags deterministic mode changes: ``(TF32 matmul, TF32 cuDNN, cuDNN deterministic, cuDNN
    benchmark, deterministic algorithms, warn only)``; TF32 as booleans whichever API holds it."""
    import torch

    api, values = tf32_state()
    tf32 = values if api == "legacy" else (values[0] == "tf32", values[1] == "tf32")
    return (*tf32, torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
            torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())


def set_flags(flags: tuple) -> None:
    """Set :func:`current_flags` (6 values), or restore what :func:`enter_deterministic` saved (with the TF32
    state in its own API and the attention kernels)."""
    import torch

    if len(flags) > 6:
        set_tf32(flags[6])
        _set_sdp_flags(flags[7])
    else:
        api, values = tf32_state()
        set_tf32((api, tuple(flags[:2]) if api == "legacy" else
                  tuple("tf32" if on else "ieee" for on in (flags[0], flags[1], flags[1]))))
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2:4]
    torch.use_deterministic_algorithms(flags[4], warn_only=flags[5])


def enter_deterministic() -> tuple:
    """Switch to deterministic kernels (the math attention kernel only); returns the flags to restore."""
    saved = (*current_flags(), tf32_state(), _sdp_flags())
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    # A caller's strict deterministic mode stays strict; otherwise an op without a deterministic kernel warns.
    set_flags((False, False, True, False, True, saved[5] if saved[4] else True))
    _set_sdp_flags((False, False, True, False))
    return saved


@contextlib.contextmanager
def deterministic_flags(enabled: bool = True) -> Iterator[None]:
    """TF32 off, deterministic cuDNN and ``torch.use_deterministic_algorithms`` for the block (when ``enabled``),
    then the global flags as they were."""
    if not enabled:
        yield
        return
    saved = enter_deterministic()
    try:
        yield
    finally:
        set_flags(saved)


def _flags_boundary_class():
    import torch

    class FlagsBoundary(torch.autograd.Function):
        """Identity; its backward enters deterministic mode (``enter=True``, at the chain's output) or restores the
        flags saved in ``box`` (at the chain's input, the last node of the chain the backward pass reaches)."""

        @staticmethod
        def forward(ctx, x, box, enter):
            ctx.box, ctx.enter = box, enter
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad):
            if ctx.enter:
                ctx.box.append(enter_deterministic())
            elif ctx.box:
                set_flags(ctx.box.pop())
            return grad, None, None

    return FlagsBoundary


class _LazyBoundary:
    """``FlagsBoundary.apply`` without importing torch at module import."""

    _cls = None

    def apply(self, x, box, enter):
        if _LazyBoundary._cls is None:
            _LazyBoundary._cls = _flags_boundary_class()
        return _LazyBoundary._cls.apply(x, box, enter)


FlagsBoundary = _LazyBoundary()


__all__ = ["CUBLAS_DETERMINISTIC_WORKSPACE", "FlagsBoundary", "current_flags", "deterministic_flags",
           "enter_deterministic", "set_flags", "set_tf32", "tf32_state"]
