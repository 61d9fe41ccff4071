"""
One reproducible attack-and-test run, shared by the robustness curve and the gradient-masking checks.

- :func:`run_pgd`: Linf PGD (or any ART attack from a factory) on a classifier, randomness-aligned through
  :class:`~art_diffpure.RandomnessAlignedAttack` when the classifier holds a :class:`~art_diffpure.DiffusionPurifier`,
  with numpy's global RNG (ART's random starts, SquareAttack) seeded for the call and restored afterwards;
- :func:`as_classifier`: an ART ``PyTorchClassifier`` from a classifier or torch model, a purifier appended;
- :func:`undefended`: the same classifier without its preprocessing defences.

Without an explicit ``rel_step`` every evaluation takes the package's one rule for the relative PGD step,
:func:`art_diffpure.attacks.protocols.rel_step` of its (reference) iteration count.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np

from art_diffpure._utils import index_labels, one_hot
from art_diffpure.attacks.protocols import rel_step as protocol_rel_step
from art_diffpure.attacks.randomness_aligned import RandomnessAlignedAttack
from art_diffpure.evaluations.aligned import evaluate_aligned
from art_diffpure.evaluations.result import EvaluationResult
from art_diffpure.models.classifier import art_classifier
from art_diffpure.purifier import find_purifier
from art_diffpure.randomness import numpy_seeded

if TYPE_CHECKING:  # pragma: no cover
    from art.estimators.classification import PyTorchClassifier

__all__ = ["as_classifier", "run_pgd", "undefended"]


def _clone(classifier: "PyTorchClassifier", defences: list | None) -> "PyTorchClassifier":
    params = classifier.get_params()
    params["preprocessing_defences"] = defences or None
    return type(classifier)(**params)


def as_classifier(classifier: Any, x: np.ndarray, purifier: Any = None, nb_classes: int | None = None,
                  clip_values: tuple[float, float] = (0.0, 1.0)) -> "PyTorchClassifier":
    """
    An ART ``PyTorchClassifier`` from an ART classifier or a torch model, with ``purifier`` appended to its
    preprocessing defences when given (and not already there).

    :param classifier: an ART ``PyTorchClassifier`` or a ``torch.nn.Module`` returning logits.
    :param x: sample inputs (their shape gives ``input_shape`` for a torch model).
    :param purifier: an optional ART ``PreprocessorPyTorch`` (e.g. a :class:`DiffusionPurifier`).
    :param nb_classes: classes of a torch model (default: from its output on ``x[:1]``).
    :param clip_values: input range of a torch model.
    """
    import torch
    from art.estimators.classification import PyTorchClassifier

    if isinstance(classifier, PyTorchClassifier):  # a clone keeps its loss, preprocessing, device, ...
        defences = list(classifier.preprocessing_defences or [])
        if purifier is None or any(d is purifier for d in defences):
            return classifier
        return _clone(classifier, defences + [purifier])
    if not isinstance(classifier, torch.nn.Module):
        raise ValueError("classifier must be an ART PyTorchClassifier or a torch.nn.Module, got "
                         f"{type(classifier).__name__}")
    device = next(iter(classifier.parameters()), torch.empty(0)).device
    if nb_classes is None:
        with torch.no_grad():
            nb_classes = int(classifier.eval()(torch.as_tensor(x[:1]).to(device)).shape[1])
    # The model stays where the caller put it: ART moves it to cuda:<current device> with "gpu", so a CPU model gets
    # "cpu", and a model on cuda:k is wrapped with cuda:k current.
    on_gpu = device.type == "cuda"
    with torch.cuda.device(device) if on_gpu else contextlib.nullcontext():
        return art_classifier(classifier, input_shape=x.shape[1:], nb_classes=nb_classes, purifier=purifier,
                              device_type="gpu" if on_gpu else "cpu", clip_values=clip_values)


def undefended(classifier: "PyTorchClassifier") -> "PyTorchClassifier":
    """A clone of ``classifier`` (same torch model) without its preprocessing defences."""
    return _clone(classifier, None) if classifier.preprocessing_defences else classifier


def _plain_attack(classifier: "PyTorchClassifier", attack: Any, x: np.ndarray, labels: np.ndarray,
                  batch_size: int) -> EvaluationResult:
    """Attack a classifier without a purifier and test it."""
    x_adv = attack.generate(x, one_hot(labels, classifier.nb_classes))
    clean = classifier.predict(x, batch_size=batch_size).argmax(axis=1)
    adv = classifier.predict(x_adv, batch_size=batch_size).argmax(axis=1)
    return EvaluationResult(labels=labels, clean_pred=clean, adv_pred=adv, sample_ids=np.arange(len(x)),
                            max_perturbation_linf=float(np.abs(x_adv - x).max()) if len(x) else 0.0)


def run_pgd(classifier: "PyTorchClassifier", x: np.ndarray, y: np.ndarray, eps: float, mode: str = "aligned", *,
            rel_step: float | None = None, max_iter: int = 10, num_random_init: int = 1, seed: int = 0,
            batch_size: int = 32, eot_samples: int = 4, attack_factory: Any = None) -> dict[str, Any]:
    """
    Attack ``x`` with Linf PGD (or ``attack_factory(estimator)``) and test it, reproducibly.

    With a :class:`DiffusionPurifier` in the classifier this is :class:`RandomnessAlignedAttack` in ``mode``
    (``"eot"``: stochastic with ``eot_samples`` EOT copies; the fresh-randomness generator is reseeded from
    ``seed`` first); without one, the plain ART attack on the classifier (every mode is then the same attack).
    Numpy's global RNG is seeded from ``seed`` for the call and restored afterwards.

    :param rel_step: PGD step ``rel_step * eps`` (default: :func:`~art_diffpure.attacks.protocols.rel_step`
        ``(max_iter)``, the package's one rule).
    :return: ``robust_accuracy``, ``clean_accuracy``, per-sample ``success`` / ``adv_correct`` / ``clean_correct``.
    """
    labels = index_labels(y)
    eps = float(eps)  # ART's PGD wants eps and eps_step of the same python type
    eps_step = float((protocol_rel_step(max_iter) if rel_step is None else rel_step) * eps)
    purifier = find_purifier(classifier)
    with numpy_seeded(seed):
        if purifier is not None:
            randomness = "stochastic" if mode in ("stochastic", "eot") else mode
            if randomness == "stochastic":
                purifier.reseed_fresh(seed)
            attack = RandomnessAlignedAttack(
                classifier, attack=attack_factory, randomness=randomness, seed=seed,
                eot_samples=eot_samples if mode == "eot" else 1, eps=eps, eps_step=eps_step,
                max_iter=int(max_iter), num_random_init=int(num_random_init), batch_size=int(batch_size))
            result = evaluate_aligned(attack, x, labels)
        else:
            if attack_factory is None:
                from art.attacks.evasion import ProjectedGradientDescent

                attack = ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=eps_step,
                                                  max_iter=max_iter, num_random_init=num_random_init,
                                                  batch_size=batch_size, verbose=False)
            else:
                attack = attack_factory(classifier)
            result = _plain_attack(classifier, attack, x, labels, batch_size)
    report = result.to_dict()
    return {k: report[k] for k in ("robust_accuracy", "clean_accuracy", "success", "adv_correct", "clean_correct")}
