"""
How :class:`~art_diffpure.RandomnessAlignedAttack` hands samples to its inner attack.

- :func:`sample_groups`: batches of ``batch_size`` samples where every row the purifier sees can be mapped to its
  sample (see :mod:`art_diffpure.randomness`), single samples elsewhere;
- :func:`looped_eot`: ``eot_batched=False``: the classifier's ``loss_gradient`` loops over the K configurations
  instead of expanding the batch K times.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

import numpy as np

from art_diffpure.randomness import RandomnessControl, min_separation

if TYPE_CHECKING:  # pragma: no cover
    from art.estimators.classification import PyTorchClassifier

    from art_diffpure.purifier import DiffusionPurifier


def sample_groups(x: np.ndarray, batch_size: int, control: RandomnessControl, estimator: "PyTorchClassifier",
                  purifier: "DiffusionPurifier") -> tuple[list[slice], str]:
    """
    The slices of ``x`` attacked together, and how rows are identified: batches of ``batch_size`` samples, or
    single samples where rows could not be told apart in a batch (no perturbation bound, a preprocessor before
    the purifier, or clean samples closer than twice the bound).
    """
    batches = [slice(a, min(a + batch_size, len(x))) for a in range(0, len(x), batch_size)]
    if control.configs is None:  # fresh noise needs no sample identity
        return batches, "batch"
    if control.bound is None:
        return [slice(i, i + 1) for i in range(len(x))], "per-sample: the attack has no perturbation bound"
    if estimator.preprocessing_operations[0] is not purifier:
        return [slice(i, i + 1) for i in range(len(x))], "per-sample: a preprocessor runs before the purifier"
    out, split = [], 0
    for sl in batches:
        flat = x[sl].reshape(sl.stop - sl.start, -1).astype(np.float64)
        if min_separation(flat) > 2 * control._slack_bound():
            out.append(sl)
        else:
            out.extend(slice(i, i + 1) for i in range(sl.start, sl.stop))
            split += 1
    return out, "batch" if not split else f"batch; {split} batch(es) per-sample (samples closer than 2 eps)"


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


__all__ = ["looped_eot", "sample_groups"]
