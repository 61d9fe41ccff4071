"""
DiffAttack (Kang et al., NeurIPS 2023): APGD on the classification loss plus a deviated-reconstruction loss at
intermediate steps of the purifier's chain.

| Paper link: https://arxiv.org/abs/2311.16124

Loss of one draw at input x: ``L_cls(f(purify(x))) + lambda * mean_t MSE(x'_t, x_t^ref)`` over every
``every``-th reverse state ``x'_t`` of the chain, where ``x_t^ref = sqrt(abar_t) x + sqrt(1 - abar_t) eps`` is the
input noised to step t with the SAME draw's forward noise, detached. EOT averages the loss over ``eot_samples``
named draws per iteration; restarts run the losses in order (CE, then DLR), each from the best point so far.
The per-step terms enter the chain's states while every UNet call stays checkpointed: the backward recomputes
step by step (the paper's segment-wise backward, here through ``torch.utils.checkpoint``), each term's gradient
joining it at its state, so memory does not grow with the UNet's activations over t*. The purifier returns only
the states in the loss (``trajectory_steps``): beyond the one input each checkpoint saves, no state of the chain
is held twice, nor its gradient.
"""
from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np
from art.attacks.attack import EvasionAttack
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator

from art_diffpure._utils import check_int
from art_diffpure.attacks.apgd import apgd_linf
from art_diffpure.attacks.purified import (PurifiedClassifier, check_common, labelled_batches, per_sample_loss,
                                          random_start)
from art_diffpure.randomness import START_STREAM_DIFFATTACK, aligned_noise


class DiffAttack(EvasionAttack):
    """DiffAttack: APGD + EOT on classification loss plus deviated reconstruction (Linf)."""

    attack_params = EvasionAttack.attack_params + ["eps", "norm", "max_iter", "eot_samples", "lam", "every",
                                                   "losses", "seed", "batch_size", "verbose"]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)

    def __init__(self, classifier: Any, eps: float = 8 / 255, norm: float = np.inf, max_iter: int = 100,
                 eot_samples: int = 20, lam: float = 1.0, every: int = 10, losses: Sequence[str] = ("ce", "dlr"),
                 seed: int = 0, batch_size: int = 32, verbose: bool = False) -> None:
        """
        :param classifier: an ART ``PyTorchClassifier`` with a ``DiffusionPurifier`` (``gradient="full"``,
            sampler ``"ddpm"`` or ``"ddim"``: the reference states need forward noise).
        :param eps: Linf budget.
        :param max_iter: APGD iterations per loss.
        :param eot_samples: named draws averaged per iteration (the paper: 20).
        :param lam: weight of the deviated-reconstruction term (the paper: 1).
        :param every: use every ``every``-th reverse state (the paper: 10).
        :param losses: classification losses run in turn (the paper: CE, then DLR).
        :param seed: base seed of the attack's named draws and of its random start.
        """
        super().__init__(estimator=classifier)
        self.eps, self.norm, self.max_iter, self.eot_samples = eps, norm, max_iter, eot_samples
        self.lam, self.every, self.losses, self.seed = lam, every, tuple(losses), seed
        self.batch_size, self.verbose = batch_size, verbose
        self._check_params()
        self.head = PurifiedClassifier(classifier)
        if self.head.purifier.sampler == "reverse" or self.head.purifier.gradient != "full":
            raise ValueError("DiffAttack needs a purifier with forward noising (sampler 'ddpm' or 'ddim') and "
                             "gradient='full'")
        self.perturbation_bound = float(eps)  # RandomnessAlignedAttack identifies rows within it
        self.last_wall_time_s: float | None = None

    def _states(self) -> list[tuple[int, int]]:
        """``(trajectory index, timestep)`` of the reverse states in the loss: every ``every``-th, t >= 0."""
        steps = self.head.purifier.trajectory_timesteps()
        first = len(steps) - len(self.head.purifier._reverse_timesteps())  # first reverse state
        return [(k, t) for k, t in enumerate(steps) if k >= first and t >= 0 and (k - first) % self.every == 0]

    def loss_and_gradient(self, x: np.ndarray, y: np.ndarray, draws: Sequence[int], ids: Sequence[int],
                          loss: str = "ce") -> tuple[np.ndarray, np.ndarray]:
        """Per-sample DiffAttack loss averaged over the named ``draws`` and its input gradient (one backward)."""
        import torch

        head, n, e = self.head, len(x), len(draws)
        purifier = head.purifier
        leaf = head.tensor(x).requires_grad_(True)
        xe = torch.cat([leaf] * e)
        seeds = np.repeat(np.asarray(draws, dtype=np.int64), n).tolist()
        rows = np.tile(np.asarray(ids, dtype=np.int64), e).tolist()
        states = self._states() if self.lam else []
        with torch.enable_grad():
            if states:
                out, traj = head.purify(xe, seeds, rows, return_trajectory=True,
                                        trajectory_steps=[k for k, _ in states])
            else:
                out = head.purify(xe, seeds, rows)
            labels = torch.as_tensor(np.tile(y, e), device=out.device)
            total = per_sample_loss(head.logits(out), labels, loss)
            if states:
                lo, hi = purifier.clip_values
                z = ((xe.detach() - lo) * (2.0 / (hi - lo)) - 1.0).to(traj.dtype)
                z = z if purifier.channels_first else z.permute(0, 3, 1, 2)  # the trajectory is channels-first
                eps_fwd = aligned_noise(seeds, rows, [purifier.t_star - 1], z.shape[1:], reverse=False)[0]
                eps_fwd = eps_fwd.to(device=traj.device, dtype=traj.dtype)
                abar = purifier._cpu_scheduler.alphas_cumprod
                deviation = 0
                for state, (_, t) in zip(traj, states):
                    ref = math.sqrt(float(abar[t])) * z + math.sqrt(1.0 - float(abar[t])) * eps_fwd
                    deviation = deviation + ((state - ref) ** 2).flatten(1).mean(dim=1)
                total = total + self.lam * deviation / len(states)
            per_sample = total.reshape(e, n).mean(dim=0)
            (grad,) = torch.autograd.grad(per_sample.sum(), leaf)
        return per_sample.detach().cpu().numpy().astype(np.float64), grad.cpu().numpy()

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        """
        :param x: clean samples in the classifier's clip range.
        :param y: true labels (indices or one-hot); ``None`` for the classifier's predictions.
        :param sample_ids: optional ids of the rows (inside RandomnessAlignedAttack: the wrapper's).
        :return: adversarial samples, same shape and dtype as ``x``.
        """
        x = np.asarray(x)
        clip = tuple(self.estimator.clip_values)
        x_adv = x.copy()
        t0 = time.perf_counter()
        for sl, xb, yb, ib in labelled_batches(self, x, y, kwargs.get("sample_ids"), "DiffAttack"):
            current = random_start(xb, self.eps, clip, self.seed, ib[0], START_STREAM_DIFFATTACK)
            for r, loss in enumerate(self.losses):
                def gradient(z: np.ndarray, it: int, loss=loss, r=r) -> tuple[np.ndarray, np.ndarray]:
                    draws = self.head.draws(self.seed, (r * (self.max_iter + 1) + it) * self.eot_samples,
                                            self.eot_samples)
                    return self.loss_and_gradient(z, yb, draws, ib, loss)

                current, _ = apgd_linf(xb, current, self.eps, self.max_iter, gradient, clip)
            x_adv[sl] = current
        self.last_wall_time_s = time.perf_counter() - t0
        return x_adv

    def _check_params(self) -> None:
        check_common(self)
        for name in ("eot_samples", "every"):
            check_int(getattr(self, name), name, 1)
        if not np.isscalar(self.lam) or self.lam < 0:
            raise ValueError(f"lam must be a non-negative number, got {self.lam!r}")


__all__ = ["DiffAttack"]
