"""
Deterministic GPU kernels for the length of a purifier call (``DiffusionPurifier(..., deterministic=True)``).

TF32 off, deterministic cuDNN, no autotuning and ``torch.use_deterministic_algorithms`` while the purifier runs,
forward and backward, then the caller's global flags as they were. ART runs the backward pass after ``forward``
has returned, so an identity autograd node at each end of the chain switches the flags on again when the backward
pass enters the chain and restores them when it leaves.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

#: ``CUBLAS_WORKSPACE_CONFIG`` set by ``deterministic=True`` when unset (cuBLAS' documented deterministic setting).
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"


def current_flags() -> tuple:
    """The global kernel flags deterministic mode changes (to restore them)."""
    import torch

    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled())


def set_flags(flags: tuple) -> None:
    import torch

    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic,
     torch.backends.cudnn.benchmark) = flags[:4]
    torch.use_deterministic_algorithms(flags[4], warn_only=flags[5])


def enter_deterministic() -> tuple:
    """Switch to deterministic kernels; returns the flags to restore."""
    saved = current_flags()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    # A caller's strict deterministic mode stays strict; otherwise an op without a deterministic kernel warns.
    set_flags((False, False, True, False, True, saved[5] if saved[4] else True))
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
           "enter_deterministic", "set_flags"]
