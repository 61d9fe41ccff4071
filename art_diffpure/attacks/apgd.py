"""
The APGD update rule (Croce & Hein 2020) driven by any gradient, for the attacks built for purification.

ART's ``AutoProjectedGradientDescent`` asks its estimator for the loss gradient. DiffHammer's grafted gradient,
DiffAttack's deviated-reconstruction gradient and a surrogate's gradient are not an estimator's loss gradient,
so those attacks drive this loop instead: the same step-size schedule (checkpoints at 0, 0.22, ... of the budget;
halve the step where fewer than rho = 0.75 of the steps since the last checkpoint raised the loss, or where
neither the step nor the best loss changed), momentum 0.75 and restart from the best point at each halving.
Linf only, the threat model of every evaluation here.

| Paper link: https://arxiv.org/abs/2003.01690
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

#: ``gradient(x_adv, iteration) -> (loss per sample, gradient)``: the loss is to be maximised.
GradientFn = Callable[[np.ndarray, int], "tuple[np.ndarray, np.ndarray]"]

MOMENTUM = 0.75
RHO = 0.75


def checkpoints(max_iter: int) -> list[int]:
    """APGD's checkpoint iterations: ``ceil(p_j * max_iter)``, ``p_0 = 0``, ``p_1 = 0.22``,
    ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * max_iter, 9)) for q in p if q <= 1})  # round: 0.57 * 100 is 57.000...01


def apgd_linf(x: np.ndarray, x_init: np.ndarray, eps: float, max_iter: int, gradient: GradientFn,
              clip_values: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """
    Maximise a per-sample loss in the Linf ball of radius ``eps`` around ``x`` from ``x_init``.

    :return: ``(x_best, loss_best)``: per sample the iterate with the highest loss seen, and that loss.
    """
    lo, hi = clip_values

    def project(z: np.ndarray) -> np.ndarray:
        return np.clip(np.clip(z, x - eps, x + eps), lo, hi).astype(x.dtype)

    n = len(x)
    shape = (n,) + (1,) * (x.ndim - 1)
    step = np.full(shape, 2.0 * eps)
    x_cur = project(x_init)
    loss, grad = gradient(x_cur, 0)
    x_best, loss_best, grad_best = x_cur.copy(), loss.copy(), grad.copy()
    x_prev = x_cur.copy()
    marks = checkpoints(max_iter)
    last_mark, increases = 0, np.zeros(n)
    step_at_mark, best_at_mark = step.copy(), loss_best.copy()
    for it in range(max_iter):
        z = project(x_cur + step * np.sign(grad))
        alpha = 1.0 if it == 0 else MOMENTUM
        x_next = project(x_cur + alpha * (z - x_cur) + (1 - alpha) * (x_cur - x_prev))
        x_prev, x_cur = x_cur, x_next
        new_loss, grad = gradient(x_cur, it + 1)
        increases += new_loss > loss
        loss = new_loss
        better = loss > loss_best
        x_best[better], loss_best[better], grad_best[better] = x_cur[better], loss[better], grad[better]
        if it + 1 in marks and it + 1 > last_mark:
            few = increases < RHO * (it + 1 - last_mark)
            stuck = (step_at_mark.reshape(n) == step.reshape(n)) & (best_at_mark == loss_best)
            halve = few | stuck
            step_at_mark, best_at_mark = step.copy(), loss_best.copy()
            step[halve] /= 2.0
            # Restart from the best point (and its gradient, no momentum) where the step shrank.
            x_cur[halve], x_prev[halve], grad[halve] = x_best[halve], x_best[halve], grad_best[halve]
            last_mark, increases = it + 1, np.zeros(n)
    return x_best, loss_best


__all__ = ["GradientFn", "apgd_linf", "checkpoints"]
