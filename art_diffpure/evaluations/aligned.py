"""
The randomness-aligned evaluation: attack with a :class:`~art_diffpure.RandomnessAlignedAttack`, test under its
test randomness, refuse a number when any purified row escaped the intended randomness.

The attack generates; this module evaluates (ART's split between ``art.attacks`` and ``art.evaluations``).
:func:`evaluate_aligned` returns an :class:`~art_diffpure.evaluations.result.EvaluationResult`;
:func:`evaluate_repeats` runs it once per base seed (the paper's 0, 1, 2) and summarises.
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from art.attacks.attack import EvasionAttack

from art_diffpure._utils import index_labels
from art_diffpure.evaluations.result import EvaluationResult
from art_diffpure.randomness import RandomnessAudit, RandomnessEscapeError

if TYPE_CHECKING:  # pragma: no cover
    from art_diffpure.attacks.randomness_aligned import RandomnessAlignedAttack

__all__ = ["evaluate_aligned", "evaluate_repeats"]


def evaluate_aligned(attack: "RandomnessAlignedAttack", x: np.ndarray, y: np.ndarray,
                     sample_ids: Any = None) -> EvaluationResult:
    """
    Attack ``x`` with ``attack`` and test the result under the attack's test randomness.

    :param x: clean samples.
    :param y: true labels (indices or one-hot); for a targeted attack, ``y`` are the targets and success means
        reaching them (accuracies are then against the targets too).
    :param sample_ids: per-sample ids (default: the attack's, else ``arange(n)``).
    :return: the per-sample outcomes, seeds, configuration, the purifier's audits of the attack and the test, and
        the times. The adversarial examples are kept in ``attack.last_x_adv``.
    :raises RandomnessEscapeError: when any row ran under randomness other than the intended one.
    """
    x = np.asarray(x)
    labels = index_labels(y, attack.estimator.nb_classes)
    ids = attack.ids_for(len(x), sample_ids)
    t0 = time.perf_counter()
    x_adv = attack.generate(x, labels, sample_ids=ids)
    t_attack = time.perf_counter() - t0
    audit, test_audit = RandomnessAudit(), RandomnessAudit()
    audit.add(attack.last_audit)
    clean_pred = attack.predict_test(x, ids).argmax(axis=1)
    test_audit.add(attack.last_test_audit)
    adv_pred = attack.predict_test(x_adv, ids).argmax(axis=1)
    test_audit.add(attack.last_test_audit)
    if not (audit.ok and test_audit.ok):
        raise RandomnessEscapeError(
            f"Refusing to report a robust accuracy: rows ran under unintended randomness (attack audit "
            f"{audit.to_dict()}, test audit {test_audit.to_dict()})")
    attack.last_x_adv = x_adv
    iterations = getattr(attack.inner, "max_iter", None)
    steps = math.ceil(len(x) / attack.batch_size) * iterations if isinstance(iterations, int) else 0
    return EvaluationResult(
        labels=labels, clean_pred=clean_pred, adv_pred=adv_pred, sample_ids=ids, targeted=bool(attack.targeted),
        attack_seeds=[attack.attack_seeds() for _ in ids], test_seeds=[attack.test_seed() for _ in ids],
        max_perturbation_linf=float(np.abs(x_adv - x).reshape(len(x), -1).max()) if len(x) else 0.0,
        config=attack.config(), identification=attack.last_generation["identification"],
        audit={"attack": audit.to_dict(), "test": test_audit.to_dict()}, wall_time_s=time.perf_counter() - t0,
        attack_time_s=t_attack, time_per_iteration_s=t_attack / steps if steps > 0 else None)


def _summary(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "values"}``; ``std`` is the sample standard deviation (ddof=1; 0 for one value)."""
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "values": values.tolist()}


def evaluate_repeats(
    attack: "RandomnessAlignedAttack | Callable[[int], RandomnessAlignedAttack]",
    x: np.ndarray,
    y: np.ndarray,
    seeds: Sequence[int] = (0, 1, 2),
    sample_ids: Any = None,
) -> dict[str, Any]:
    """
    :func:`evaluate_aligned` repeated over base seeds (the paper uses 0, 1, 2).

    :param attack: an attack (its ``seed`` is set to each base seed in turn) or a factory ``seed -> attack``.
    :param seeds: base seeds.
    :return: ``{"seeds", "runs" (each a result's JSON form), "clean_accuracy": {"mean", "std", "values"},
        "robust_accuracy": {...}, "wall_time_s"}``; ``std`` is the sample standard deviation (ddof=1; 0 for one).
    """
    t0 = time.perf_counter()
    runs = []
    for s in seeds:
        if isinstance(attack, EvasionAttack):
            attack.set_params(seed=int(s))  # checks the parameters; the inner attack is kept
            run_attack = attack
        else:
            run_attack = attack(int(s))
        runs.append(evaluate_aligned(run_attack, x, y, sample_ids=sample_ids))
    return {"seeds": [int(s) for s in seeds], "runs": [r.to_dict() for r in runs],
            "clean_accuracy": _summary([r.clean_accuracy for r in runs]),
            "robust_accuracy": _summary([r.robust_accuracy for r in runs]), "wall_time_s": time.perf_counter() - t0}
