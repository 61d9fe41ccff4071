"""
DiffHammer (Wang et al., NeurIPS 2024): a selective attack over the purifier's draws, with gradient grafting.

| Paper link: https://neurips.cc/virtual/2024/poster/94646

Each iteration at x_adv:

1. N draws of the purifier, without a graph; per draw j the loss l_j and the classifier-only gradient g_j at the
   purified output (success per sample, draw and iteration is recorded: the in-attack N-evaluation).
2. E-step, per sample: the draw j* whose step ``eps * sign(g_j)`` raises the others' losses most to first order,
   ``j* = argmax_j sum_k elu(l_k + eps <sign(g_j), g_k>)``; weights ``w_k = sigmoid(lam (l_k + <sign(g_j*), g_k>))``
   and the incoming gradient ``r = sum_k w_k g_k / sum_k w_k``.
3. M-step (gradient grafting): ONE full backward through draw j*, replaying exactly its noise, with ``r`` as the
   incoming gradient (:meth:`~art_diffpure.DiffusionPurifier.draw_vjp`, :meth:`DiffHammer.grafted_gradient`);
   averaged with the previous step's
   gradient as ``v g + (1 - v) g_prev``, ``v = (i + 1)^-alpha``.
4. An APGD update (:mod:`~art_diffpure.attacks.apgd`) on the worst-case loss over the N draws.

Restarts run the losses in turn (CW, CE, DLR). Per sample the attack returns the iterate that most draws
misclassified (ties: the higher mean loss). Cost per iteration: N no-grad purifications and one backward, where
PGD-EOT-N does N backwards.
"""
from __future__ import annotations

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
from art_diffpure.randomness import START_STREAM_DIFFHAMMER


def select_draw(grads: np.ndarray, losses: np.ndarray, eps: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """
    DiffHammer's E-step for one iteration.

    :param grads: classifier gradients at the purified outputs, ``(N, n, d)`` (draw, sample, pixel).
    :param losses: per-draw losses, ``(N, n)``.
    :return: ``(chosen draw per sample (n,), weights (N, n))``.
    """
    unit = np.sign(grads)
    delta = np.einsum("jbd,kbd->jkb", unit, grads)  # first-order loss change of draw k after draw j's step
    raised = losses[None, :, :] + eps * delta
    elu = np.where(raised > 0, raised, np.expm1(np.minimum(raised, 0)))
    chosen = elu.sum(axis=1).argmax(axis=0)
    n = grads.shape[1]
    agreement = np.einsum("bd,kbd->kb", unit[chosen, np.arange(n)], grads)
    weights = 1.0 / (1.0 + np.exp(-lam * (losses + agreement)))
    return chosen, weights


class DiffHammer(EvasionAttack):
    """DiffHammer: selective EM attack over N draws with gradient grafting and APGD updates (Linf)."""

    attack_params = EvasionAttack.attack_params + ["eps", "norm", "max_iter", "n_draws", "lam", "alpha", "losses",
                                                   "seed", "batch_size", "verbose"]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)

    def __init__(self, classifier: Any, eps: float = 8 / 255, norm: float = np.inf, max_iter: int = 100,
                 n_draws: int = 10, lam: float = 5.0, alpha: float = 0.5, losses: Sequence[str] = ("cw", "ce", "dlr"),
                 seed: int = 0, batch_size: int = 32, verbose: bool = False) -> None:
        """
        :param classifier: an ART ``PyTorchClassifier`` with a ``DiffusionPurifier`` (``gradient="full"``).
        :param max_iter: APGD iterations per loss.
        :param n_draws: N, the draws per iteration (the paper: 10).
        :param lam: the E-step's weight sharpness (the paper: 5).
        :param alpha: exponent of the stepwise gradient averaging (the paper: 0.5).
        :param losses: one restart per loss, in turn (the paper: CW, CE, DLR).
        :param seed: base seed of the attack's named draws and random starts.
        """
        super().__init__(estimator=classifier)
        self.eps, self.norm, self.max_iter, self.n_draws = eps, norm, max_iter, n_draws
        self.lam, self.alpha, self.losses, self.seed = lam, alpha, tuple(losses), seed
        self.batch_size, self.verbose = batch_size, verbose
        self._check_params()
        self.head = PurifiedClassifier(classifier)
        if self.head.purifier.gradient != "full":
            raise ValueError("DiffHammer backpropagates through the purifier: build it with gradient='full'")
        self.perturbation_bound = float(eps)
        #: In-attack success per (restart x iteration, draw, sample) of the last generate: DiffHammer's own
        #: N-evaluation (a sample falls if any draw at any iteration misclassifies it), not a test on fresh draws.
        self.last_success: np.ndarray | None = None
        self.last_wall_time_s: float | None = None

    def draw_statistics(self, x: np.ndarray, y: np.ndarray, draws: Sequence[int], ids: Sequence[int],
                        loss: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        """Per draw (no graph through the purifier): losses ``(N, n)``, classifier gradients at the purified
        outputs ``(N, n, d)`` and successes ``(N, n)``, and the draw seeds ``(N,)``."""
        import torch

        head, n, e = self.head, len(x), len(draws)
        seeds = np.repeat(np.asarray(draws, dtype=np.int64), n).tolist()
        rows = np.tile(np.asarray(ids, dtype=np.int64), e).tolist()
        with torch.no_grad():
            out = head.purify(torch.cat([head.tensor(x)] * e), seeds, rows)
        out = out.detach().requires_grad_(True)
        labels = torch.as_tensor(np.tile(y, e), device=out.device)
        with torch.enable_grad():
            logits = head.logits(out)
            losses = per_sample_loss(logits, labels, loss)
            (grad,) = torch.autograd.grad(losses.sum(), out)
        success = (logits.argmax(dim=1) != labels).reshape(e, n)
        return (losses.detach().reshape(e, n).cpu().numpy().astype(np.float64),
                grad.reshape(e, n, -1).cpu().numpy().astype(np.float64), success.cpu().numpy(), list(draws))

    def grafted_gradient(self, x: np.ndarray, losses: np.ndarray, grads: np.ndarray, seeds: Sequence[int],
                         ids: Sequence[int]) -> np.ndarray:
        """
        Steps 2 and 3 of one iteration at ``x``: the E-step on the draws' statistics (:meth:`draw_statistics`),
        then ONE backward through the chosen draw of each sample with the weighted incoming gradient.

        The backward follows the purifier's ``checkpoint`` setting like every other gradient: a forced
        ``checkpoint=True`` is kept although one draw's graph is a ``1/N`` share of the no-grad pass's rows
        (:meth:`~art_diffpure.attacks.purified.PurifiedClassifier.draw_vjp` takes a setting for one backward where a
        caller wants another).

        :return: the gradient with respect to ``x``, shaped like ``x``.
        """
        chosen, weights = select_draw(grads, losses, self.eps, self.lam)
        incoming = (weights[..., None] * grads).sum(axis=0) / weights.sum(axis=0)[:, None]
        chosen_seeds = [int(seeds[j]) for j in chosen]
        return self.head.draw_vjp(x, incoming.reshape(x.shape), chosen_seeds, np.asarray(ids).tolist())

    def _attack_batch(self, xb: np.ndarray, yb: np.ndarray, ib: np.ndarray, clip: tuple[float, float],
                      records: list[np.ndarray]) -> np.ndarray:
        best = xb.copy()
        best_score = np.full((len(xb), 2), -np.inf)  # (draws misclassified, mean loss), lexicographic
        for r, loss in enumerate(self.losses):
            start = random_start(xb, self.eps, clip, self.seed, ib[0], START_STREAM_DIFFHAMMER + r)
            past: dict[str, np.ndarray] = {}

            def gradient(z: np.ndarray, it: int, loss=loss, r=r, past=past) -> tuple[np.ndarray, np.ndarray]:
                draws = self.head.draws(self.seed, (r * (self.max_iter + 1) + it) * self.n_draws, self.n_draws)
                losses, grads, success, seeds = self.draw_statistics(z, yb, draws, ib, loss)
                records.append(success)
                score = np.stack([success.sum(axis=0), losses.mean(axis=0)], axis=1)
                better = (score[:, 0] > best_score[:, 0]) | ((score[:, 0] == best_score[:, 0])
                                                              & (score[:, 1] > best_score[:, 1]))
                best[better], best_score[better] = z[better], score[better]
                g = self.grafted_gradient(z, losses, grads, seeds, ib)
                if "g" in past:
                    v = (it + 1) ** -self.alpha
                    g = v * g + (1 - v) * past["g"]
                past["g"] = g
                return losses.max(axis=0), g

            apgd_linf(xb, start, self.eps, self.max_iter, gradient, clip)
        return best

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        """
        :param x: clean samples in the classifier's clip range.
        :param y: true labels (indices or one-hot); ``None`` for the classifier's predictions.
        :param sample_ids: optional ids of the rows (inside RandomnessAlignedAttack: the wrapper's).
        :return: adversarial samples; ``last_success`` holds the in-attack record.
        """
        x = np.asarray(x)
        clip = tuple(self.estimator.clip_values)
        x_adv = x.copy()
        per_batch = []
        t0 = time.perf_counter()
        for sl, xb, yb, ib in labelled_batches(self, x, y, kwargs.get("sample_ids"), "DiffHammer"):
            records: list[np.ndarray] = []
            x_adv[sl] = self._attack_batch(xb, yb, ib, clip, records)
            per_batch.append(np.stack(records))
        self.last_success = np.concatenate(per_batch, axis=2)
        self.last_wall_time_s = time.perf_counter() - t0
        return x_adv

    def _check_params(self) -> None:
        check_common(self)
        check_int(self.n_draws, "n_draws", 1)
        if not np.isscalar(self.lam) or self.lam <= 0 or not np.isscalar(self.alpha) or self.alpha < 0:
            raise ValueError("lam must be positive and alpha non-negative")


__all__ = ["DiffHammer", "select_draw"]
