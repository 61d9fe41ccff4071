"""
How :class:`~art_diffpure.RandomnessAlignedAttack` hands samples to its inner attack.

- :func:`sample_groups`: batches of ``batch_size`` samples where every row the purifier sees can be mapped to its
  sample (see :mod:`art_diffpure.randomness`), split into groups of mutually distant samples where a batch holds
  near-duplicates (:func:`distant_groups`), single samples where rows cannot be identified at all;
- :func:`looped_eot`: ``eot_batched=False``: the classifier's ``loss_gradient`` loops over the K configurations
  instead of expanding the batch K times.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

import numpy as np

from art_diffpure.randomness import RandomnessControl

if TYPE_CHECKING:  # pragma: no cover
    from art.estimators.classification import PyTorchClassifier

    from art_diffpure.purifier import DiffusionPurifier


def sample_groups(x: np.ndarray, batch_size: int, control: RandomnessControl, estimator: "PyTorchClassifier",
                  purifier: "DiffusionPurifier") -> tuple[list[np.ndarray], str]:
    """
    The index arrays of ``x`` attacked together, and how rows are identified: batches of ``batch_size`` samples
    (also when the attack calls the estimator on its whole batch in order, ``control.positional``); a batch holding clean samples closer than twice the bound is split into groups of mutually distant samples
    (:func:`distant_groups`); single samples where rows could not be told apart at all (no perturbation bound,
    or a preprocessor before the purifier).
    """
    batches = [np.arange(a, min(a + batch_size, len(x))) for a in range(0, len(x), batch_size)]
    singles = [np.array([i]) for i in range(len(x))]
    if control.configs is None or control.positional:  # fresh noise needs no sample identity; rows in order
        return batches, "batch"
    if control.bound is None:
        return singles, "per-sample: the attack has no perturbation bound"
    if estimator.preprocessing_operations[0] is not purifier:
        return singles, "per-sample: a preprocessor runs before the purifier"
    out, split = [], []
    for idx in batches:
        flat = x[idx].reshape(len(idx), -1).astype(np.float64)
        groups = distant_groups(flat, 2 * control._slack_bound())
        out.extend(idx[g] for g in groups)
        if len(groups) > 1:
            split.append(len(groups))
    if not split:
        return out, "batch"
    return out, (f"batch; {len(split)} batch(es) split into {sum(split)} groups of samples more than 2 eps apart "
                 "(some clean samples are closer than 2 eps)")


def distant_groups(flat: np.ndarray, min_gap: float) -> list[np.ndarray]:
    """
    Partition the rows of ``flat`` (in order, greedily) into groups whose rows are pairwise more than ``min_gap``
    apart in Linf, so that every perturbed row of a group lies in the ball of exactly one of its clean samples.
    One group when all rows are far enough apart; a near-duplicate pair costs one extra group, not a per-sample run.
    """
    groups: list[list[int]] = []
    for i, row in enumerate(flat):
        for g in groups:
            if np.abs(flat[g] - row).max(axis=1).min() > min_gap:
                g.append(i)
                break
        else:
            groups.append([i])
    return [np.asarray(g, dtype=np.int64) for g in groups]


@contextlib.contextmanager
def looped_eot(estimator: "PyTorchClassifier", control: RandomnessControl, eot_samples: int,
               batched: bool) -> Iterator[None]:
    """
    For the block, ``estimator.loss_gradient`` averages ``eot_samples`` calls, one per configuration
    (``control.single_config``), unless ``batched`` or ``eot_samples == 1`` (then the purifier expands the batch).
    """
    if eot_samples == 1 or batched:
        yield
        return
    original = type(estimator).loss_gradient

    def looped(x, y, training_mode: bool = False, **kwargs):
        total = None
        for k in range(eot_samples):
            control.single_config = k if control.configs is not None else 0
            grad = original(estimator, x, y, training_mode=training_mode, **kwargs)
            total = grad if total is None else total + grad
        control.single_config = None
        return total / eot_samples

    estimator.loss_gradient = looped
    try:
        yield
    finally:
        del estimator.loss_gradient
        control.single_config = None


__all__ = ["distant_groups", "looped_eot", "sample_groups"]
