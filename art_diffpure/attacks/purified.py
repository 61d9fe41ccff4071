"""
What the attacks built for purification need of a purified ART classifier: its chain split at the purifier,
per-sample losses, and the named draws they run under.

An ART ``PyTorchClassifier`` purifies inside ``forward``; DiffHammer, DiffAttack and the surrogate attack need the
pieces: the preprocessing before the purifier, the purifier under draws the attack names
(:meth:`~art_diffpure.DiffusionPurifier.purify_draw`), and the preprocessing after it with the model. This module
finds them on the classifier itself (no wrapper), so the attacks run on any classifier whose
``preprocessing_defences`` hold a :class:`~art_diffpure.DiffusionPurifier`, and inside
:class:`~art_diffpure.RandomnessAlignedAttack`.

Draws. Alone, an attack names its own draws (:func:`~art_diffpure.randomness.attack_draw_seeds`). Inside
:class:`~art_diffpure.RandomnessAlignedAttack` with aligned or transfer randomness, the draws are the control's
attack configurations (the attack then sees what the wrapper promises: xi_attack = its configurations); with
stochastic randomness the attack's own named draws, never a test draw.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from art_diffpure._utils import check_int, index_labels, norm_label
from art_diffpure.purifier import find_purifier
from art_diffpure.randomness import attack_draw_seeds, numpy_seeded, start_seed

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from art.estimators.classification import PyTorchClassifier

LOSSES = ("ce", "dlr", "cw")


class PurifiedClassifier:
    """A purified ART classifier split at its purifier: ``pre`` -> purifier (named draws) -> ``post`` -> model."""

    def __init__(self, classifier: "PyTorchClassifier") -> None:
        self.classifier = classifier
        self.purifier = find_purifier(classifier, required=True)
        ops = list(classifier.preprocessing_operations)
        at = next(k for k, op in enumerate(ops) if op is self.purifier)
        self._pre, self._post = ops[:at], ops[at + 1:]
        self.device = classifier.device

    def tensor(self, x: np.ndarray) -> "torch.Tensor":
        """``x`` on the classifier's device, in its model's float precision (float64 models: float64)."""
        import torch

        dtype = next((p.dtype for p in self.classifier.model.parameters() if p.is_floating_point()), torch.float32)
        return torch.as_tensor(np.asarray(x), device=self.device).to(dtype)

    def _apply(self, ops: list, x: "torch.Tensor") -> "torch.Tensor":
        for op in ops:
            x, _ = op.forward(x)
        return x

    def purify(self, x: "torch.Tensor", seeds: Sequence[int], ids: Sequence[int], return_trajectory: bool = False,
               trajectory_steps: Sequence[int] | None = None):
        """The purifier under the named draws ``(seeds, ids)``, one per row (differentiable in grad mode); the
        trajectory arguments as in :meth:`~art_diffpure.DiffusionPurifier.purify_draw`."""
        return self.purifier.purify_draw(self._apply(self._pre, x), seeds, ids, return_trajectory=return_trajectory,
                                         trajectory_steps=trajectory_steps)

    def draw_vjp(self, x: np.ndarray, incoming: np.ndarray, seeds: Sequence[int], ids: Sequence[int],
                 checkpoint: bool | str | None = None) -> np.ndarray:
        """``incoming`` (shaped like the purified output) pulled back to ``x`` through the named draws, one full
        backward replaying their noise (the preprocessing before the purifier included).

        :param checkpoint: the purifier's checkpointing for this backward only (``True``, ``False`` or ``"auto"``);
            ``None``: its own setting. Checkpointing changes the memory and time of the backward, not its result.
        """
        import torch

        purifier = self.purifier
        setting = purifier.checkpoint
        if checkpoint is not None:
            if checkpoint not in (True, False, "auto"):
                raise ValueError(f"checkpoint must be True, False, 'auto' or None, got {checkpoint!r}")
            purifier.checkpoint = checkpoint
        try:
            with torch.enable_grad():
                leaf = self.tensor(x).requires_grad_(True)
                out = self.purify(leaf, seeds, ids)
                (grad,) = torch.autograd.grad(out, leaf, grad_outputs=torch.as_tensor(incoming, dtype=out.dtype,
                                                                                      device=out.device))
        finally:
            purifier.checkpoint = setting
        return grad.cpu().numpy()

    def logits(self, purified: "torch.Tensor") -> "torch.Tensor":
        """The classifier's logits on purified inputs (the preprocessing after the purifier, then the model)."""
        out = self.classifier.model(self._apply(self._post, purified))
        return out[-1] if isinstance(out, (list, tuple)) else out

    def sample_ids(self, n: int, given: Sequence[int] | None = None) -> np.ndarray:
        """The sample id of each of ``n`` rows: the installed control's (the wrapper's batch), else ``given``,
        else the positions."""
        control = self.purifier._live_control()
        if control is not None and control._ids is not None and len(control._ids) == n:
            return control._ids.copy()
        ids = np.arange(n, dtype=np.int64) if given is None else np.asarray(given, dtype=np.int64).reshape(-1)
        if len(ids) != n:
            raise ValueError(f"Got {len(ids)} sample_ids for {n} samples")
        return ids

    def draws(self, seed: int, start: int, n: int) -> list[int]:
        """Up to ``n`` draw seeds for the attack: the installed control's distinct configurations when it has them
        (aligned / transfer: the attack sees exactly the configurations the wrapper promises, at most ``n``),
        else the attack's own named draws ``start .. start + n - 1``."""
        control = self.purifier._live_control()
        if control is not None and control.configs is not None:
            return list(control.configs[:max(1, min(n, control.eot_samples))])
        return attack_draw_seeds(seed, start, n)


def per_sample_loss(logits: "torch.Tensor", y: "torch.Tensor", kind: str) -> "torch.Tensor":
    """Per-sample loss to maximise: cross-entropy, DLR (Croce & Hein 2020) or the CW margin."""
    import torch

    if kind == "ce":
        return torch.nn.functional.cross_entropy(logits, y, reduction="none")
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.masked_fill(torch.nn.functional.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    margin = others.max(dim=1).values - true
    if kind == "cw":
        return margin
    if kind == "dlr":
        top = logits.sort(dim=1, descending=True).values
        return margin / (top[:, 0] - top[:, 2] + 1e-12)
    raise ValueError(f"Unknown loss {kind!r}; expected one of {LOSSES}")


def labelled_batches(attack: Any, x: np.ndarray, y: Any, given_ids: Any, desc: str
                     ) -> Iterator[tuple[slice, np.ndarray, np.ndarray, np.ndarray]]:
    """``(slice, x, labels, sample ids)`` per batch of ``attack.batch_size`` (labels: ``y`` as indices, or the
    classifier's predictions when ``y`` is None), with a progress bar when ``attack.verbose``."""
    labels = (np.argmax(attack.estimator.predict(x), axis=1) if y is None
              else index_labels(y, attack.estimator.nb_classes)).astype(np.int64)
    ids = attack.head.sample_ids(len(x), given_ids)
    for start in tqdm(range(0, len(x), attack.batch_size), desc=desc, disable=not attack.verbose):
        sl = slice(start, start + attack.batch_size)
        yield sl, x[sl], labels[sl], ids[sl]


def random_start(x: np.ndarray, eps: float, clip: Sequence[float], seed: int, first_id: int, stream: int) -> np.ndarray:
    """A uniform start in the Linf ball, from numpy seeded by :func:`~art_diffpure.randomness.start_seed`
    ``(seed, first id of the batch, stream)`` (the streams: ``art_diffpure.randomness.START_STREAM_*``)."""
    with numpy_seeded(start_seed(seed, first_id, stream)):
        return np.clip(x + np.random.uniform(-eps, eps, x.shape), clip[0], clip[1]).astype(x.dtype)


def _is_linf(norm: Any) -> bool:
    try:
        return norm_label(norm) == norm_label(np.inf)
    except ValueError:
        return False


def check_common(attack: Any) -> None:
    """The parameter checks every attack here shares (ART's ``_check_params`` style)."""
    if not np.isscalar(attack.eps) or attack.eps <= 0:
        raise ValueError(f"eps must be a positive number, got {attack.eps!r}")
    if not _is_linf(attack.norm):
        raise ValueError(f"{type(attack).__name__} is implemented for the Linf threat model only (norm=np.inf)")
    for name in ("max_iter", "batch_size"):
        check_int(getattr(attack, name), name, 1)
    for loss in attack.losses:
        if loss not in LOSSES:
            raise ValueError(f"Unknown loss {loss!r}; expected some of {LOSSES}")
    check_int(attack.seed, "seed", 0)
    if not isinstance(attack.verbose, bool):
        raise ValueError("verbose must be a bool")


__all__ = ["LOSSES", "PurifiedClassifier", "check_common", "labelled_batches", "per_sample_loss", "random_start"]
