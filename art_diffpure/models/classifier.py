"""The one builder of an ART classifier in the package: a torch model behind a purifier (and other defences)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
    from art.estimators.classification import PyTorchClassifier

    from art_diffpure.purifier import DiffusionPurifier


def art_classifier(
    model: "torch.nn.Module",
    input_shape: Sequence[int],
    nb_classes: int,
    purifier: "DiffusionPurifier | None" = None,
    other_defences: Sequence["PreprocessorPyTorch | Any"] = (),
    device_type: str = "gpu",
    clip_values: tuple[float, float] = (0.0, 1.0),
) -> "PyTorchClassifier":
    """
    An ART ``PyTorchClassifier`` of ``model`` (logits, cross-entropy loss) with the purifier as a preprocessing
    defence.

    :param model: a ``torch.nn.Module`` mapping a batch ``(n, *input_shape)`` to logits ``(n, nb_classes)``; it is
        put in eval mode.
    :param input_shape: shape of one input, e.g. ``(3, 32, 32)``.
    :param nb_classes: number of classes.
    :param purifier: a :class:`~art_diffpure.DiffusionPurifier` (or any ART ``PreprocessorPyTorch``), or ``None``
        for the undefended classifier.
    :param other_defences: further ART preprocessing defences; they run *before* the purifier, in this order.
        (:class:`~art_diffpure.RandomnessAlignedAttack` then attacks one sample at a time: rows reaching the
        purifier can no longer be matched to their samples by the attack's eps-ball.)
    :param device_type: ART's ``"gpu"`` (CUDA when available, else the CPU) or ``"cpu"``.
    :param clip_values: the input range.
    """
    import torch
    from art.estimators.classification import PyTorchClassifier

    defences = list(other_defences) + ([purifier] if purifier is not None else [])
    return PyTorchClassifier(
        model=model.eval(),
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=tuple(input_shape),
        nb_classes=int(nb_classes),
        clip_values=clip_values,
        preprocessing_defences=defences or None,
        device_type=device_type,
    )


__all__ = ["art_classifier"]
