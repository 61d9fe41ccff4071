"""
Gradients of a purified classifier under FIXED randomness, for the gradient-masking checks.

- :func:`chain_gradients`: the input gradient of the loss and, with a purifier whose model is a torch module,
  the norm of dL/dx_t at every reverse step of the chain;
- :func:`loss_gradient_flags`: ART's ``art.metrics.loss_gradient_check`` per sample, each under its own fixed
  randomness (base seed, sample id = position).
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np

from art_diffpure._utils import one_hot

if TYPE_CHECKING:  # pragma: no cover
    from art.estimators.classification import PyTorchClassifier

__all__ = ["chain_gradients", "loss_gradient_flags"]


def chain_gradients(classifier: "PyTorchClassifier", purifier: Any, x: np.ndarray, labels: np.ndarray,
                    seed: int) -> tuple[np.ndarray, list[float] | None]:
    """
    Input gradient of the loss under fixed randomness (base seed ``seed``, sample id = position) and, with a
    purifier whose model is a torch module, the norm of dL/dx_t at every reverse step (mean over samples), in
    chain order (first reverse step, timestep t*-1, first): a forward pre-hook on ``purifier.model`` records every
    x_t it is called with and ``retain_grad()``s it; ART's ``loss_gradient`` then backpropagates. The per-step
    list is ``None`` without a purifier or without hooks.
    """
    import torch

    labels_1h = one_hot(labels, classifier.nb_classes)
    if purifier is None:
        return np.asarray(classifier.loss_gradient(x, labels_1h)), None
    states: list[torch.Tensor] = []

    def hook(_module, args):
        x_t = args[0] if args else None
        if isinstance(x_t, torch.Tensor) and x_t.requires_grad:
            x_t.retain_grad()
            states.append(x_t)

    handle = purifier.model.register_forward_pre_hook(hook) if isinstance(purifier.model, torch.nn.Module) else None
    checkpoint = purifier.checkpoint
    purifier.checkpoint = False  # checkpointing would re-run the hook while recomputing; gradients are identical
    try:
        with purifier.randomness(seed, np.arange(len(x))):
            grad = np.asarray(classifier.loss_gradient(x, labels_1h))
    finally:
        purifier.checkpoint = checkpoint
        if handle is not None:
            handle.remove()
    if handle is None:
        return grad, None
    per_step = []
    for s in states:
        g = s.grad
        per_step.append(0.0 if g is None else float(g.detach().reshape(len(g), -1).norm(dim=1).mean()))
    return grad, per_step


def loss_gradient_flags(classifier: "PyTorchClassifier", purifier: Any, x: np.ndarray, labels: np.ndarray,
                        seed: int) -> np.ndarray:
    """
    ART's ``loss_gradient_check`` for each sample ``i`` under its fixed randomness (base seed ``seed``, sample id
    ``i``): a ``(n, 3)`` boolean array, columns all-zero / NaN / inf gradient.
    """
    from art.metrics.gradient_check import loss_gradient_check

    labels_1h = one_hot(labels, classifier.nb_classes)
    flags = []
    for i in range(len(x)):
        ctx = purifier.randomness(seed, [i]) if purifier is not None else contextlib.nullcontext()
        with ctx:
            flags.append(loss_gradient_check(classifier, x[i:i + 1], labels_1h[i:i + 1], verbose=False)[0])
    return np.asarray(flags, dtype=bool).reshape(len(x), 3)
