"""
Surrogate-schedule PGD-EOT (Lee & Kim, ICCV 2023): attack a coarser stochastic copy of the purifier.

| Paper link: https://arxiv.org/abs/2303.09051

The attack differentiates a surrogate purifier that shares the defence's UNet and t* but runs fewer, respaced
stochastic reverse steps (DDIM with eta = 1 on a strided schedule); the defence keeps its own schedule for
every test. PGD with EOT over named draws of the surrogate (the paper: 200 iterations, EOT 20, step 0.007 at
eps = 8/255, scaled here to eps). Its rows are counted in the defence purifier's audit when an attack's control
is installed there, as rows under the draws this attack chose.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
from art.attacks.attack import EvasionAttack
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator

from art_diffpure._utils import check_int
from art_diffpure.attacks.purified import (PurifiedClassifier, check_common, labelled_batches, per_sample_loss,
                                          random_start)
from art_diffpure.purifier import DiffusionPurifier
from art_diffpure.randomness import START_STREAM_SURROGATE

#: The paper's step at eps = 8/255; the step is scaled with eps.
PAPER_STEP, PAPER_EPS = 0.007, 8 / 255


def surrogate_purifier(purifier: DiffusionPurifier, steps: int) -> DiffusionPurifier:
    """A stochastic DDIM (eta = 1) copy of ``purifier`` with ``steps`` reverse steps, sharing its UNet object."""
    return DiffusionPurifier(
        purifier.model, purifier.scheduler, t_star=purifier.t_star, sampler="ddim", ddim_steps=steps, ddim_eta=1.0,
        seed=None, gradient="full", checkpoint=purifier.checkpoint, batch_size=purifier.batch_size,
        clip_values=purifier.clip_values, channels_first=purifier.channels_first,
        device_type="cpu" if purifier.device.type == "cpu" else "gpu",
    )


class SurrogatePGDEOT(EvasionAttack):
    """PGD-EOT through a coarser stochastic surrogate of the purifier (Linf)."""

    attack_params = EvasionAttack.attack_params + ["eps", "norm", "max_iter", "eot_samples", "surrogate_steps",
                                                   "eps_step", "losses", "seed", "batch_size", "verbose"]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)

    def __init__(self, classifier: Any, eps: float = 8 / 255, norm: float = np.inf, max_iter: int = 200,
                 eot_samples: int = 20, surrogate_steps: int = 10, eps_step: float | None = None,
                 losses: Sequence[str] = ("ce",), seed: int = 0, batch_size: int = 32, verbose: bool = False) -> None:
        """
        :param classifier: an ART ``PyTorchClassifier`` with a ``DiffusionPurifier``.
        :param surrogate_steps: reverse steps of the surrogate (DDIM, eta = 1), at most the purifier's t*.
        :param eps_step: PGD step (default: 0.007 scaled to eps, the paper's step).
        :param losses: the loss (one entry; CE as in the paper).
        """
        super().__init__(estimator=classifier)
        self.eps, self.norm, self.max_iter, self.eot_samples = eps, norm, max_iter, eot_samples
        self.surrogate_steps, self.losses, self.seed = surrogate_steps, tuple(losses), seed
        self.eps_step = PAPER_STEP * eps / PAPER_EPS if eps_step is None else eps_step
        self.batch_size, self.verbose = batch_size, verbose
        self._check_params()
        self.head = PurifiedClassifier(classifier)
        if not 1 <= surrogate_steps <= self.head.purifier.t_star:
            raise ValueError(f"surrogate_steps must lie in [1, t_star={self.head.purifier.t_star}]")
        self.surrogate = surrogate_purifier(self.head.purifier, surrogate_steps)
        self.perturbation_bound = float(eps)
        self.last_wall_time_s: float | None = None

    def loss_and_gradient(self, x: np.ndarray, y: np.ndarray, draws: Sequence[int],
                          ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample loss through the surrogate averaged over the named ``draws``, and its input gradient."""
        import torch

        head, n, e = self.head, len(x), len(draws)
        seeds = np.repeat(np.asarray(draws, dtype=np.int64), n).tolist()
        rows = np.tile(np.asarray(ids, dtype=np.int64), e).tolist()
        control = head.purifier._live_control()
        if control is not None:
            control.record_chosen(rows)  # the defence's audit counts the surrogate's rows too
        with torch.enable_grad():
            leaf = head.tensor(x).requires_grad_(True)
            out = self.surrogate.purify_draw(head._apply(head._pre, torch.cat([leaf] * e)), seeds, rows)
            labels = torch.as_tensor(np.tile(y, e), device=out.device)
            per_sample = per_sample_loss(head.logits(out), labels, self.losses[0]).reshape(e, n).mean(dim=0)
            (grad,) = torch.autograd.grad(per_sample.sum(), leaf)
        return per_sample.detach().cpu().numpy(), grad.cpu().numpy()

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        """
        :param x: clean samples in the classifier's clip range.
        :param y: true labels (indices or one-hot); ``None`` for the classifier's predictions.
        :return: adversarial samples (the last PGD iterate, as PGD-EOT).
        """
        x = np.asarray(x)
        lo, hi = clip = tuple(self.estimator.clip_values)
        x_adv = x.copy()
        t0 = time.perf_counter()
        for sl, xb, yb, ib in labelled_batches(self, x, y, kwargs.get("sample_ids"), "SurrogatePGDEOT"):
            z = random_start(xb, self.eps, clip, self.seed, ib[0], START_STREAM_SURROGATE)
            for it in range(self.max_iter):
                draws = self.head.draws(self.seed, it * self.eot_samples, self.eot_samples)
                _, grad = self.loss_and_gradient(z, yb, draws, ib)
                z = np.clip(np.clip(z + self.eps_step * np.sign(grad), xb - self.eps, xb + self.eps), lo, hi)
                z = z.astype(x.dtype)
            x_adv[sl] = z
        self.last_wall_time_s = time.perf_counter() - t0
        return x_adv

    def _check_params(self) -> None:
        check_common(self)
        check_int(self.eot_samples, "eot_samples", 1)
        if not np.isscalar(self.eps_step) or self.eps_step <= 0:
            raise ValueError(f"eps_step must be positive, got {self.eps_step!r}")
        if len(self.losses) != 1:
            raise ValueError("SurrogatePGDEOT takes one loss")


__all__ = ["SurrogatePGDEOT", "surrogate_purifier"]
