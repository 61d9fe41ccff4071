"""
The report of a randomness-aligned evaluation, and its repetition over base seeds.

:meth:`RandomnessAlignedAttack.evaluate <art_diffpure.RandomnessAlignedAttack.evaluate>` attacks, tests and
hands its predictions to :func:`evaluation_report`, which builds the JSON-serialisable dict; :func:`evaluate_repeats`
runs it once per base seed (the paper's 0, 1, 2) and summarises.
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from art.attacks.attack import EvasionAttack

from art_diffpure.randomness import RandomnessAudit

if TYPE_CHECKING:  # pragma: no cover
    from art_diffpure.attacks.randomness_aligned import RandomnessAlignedAttack


def evaluation_report(
    attack: "RandomnessAlignedAttack",
    x: np.ndarray,
    x_adv: np.ndarray,
    labels: np.ndarray,
    sample_ids: np.ndarray,
    clean_pred: np.ndarray,
    adv_pred: np.ndarray,
    audits: dict[str, RandomnessAudit],
    times: dict[str, float],
) -> dict[str, Any]:
    """
    The report of one :meth:`~art_diffpure.RandomnessAlignedAttack.evaluate` (keys described there).

    :param labels: true labels (targets for a targeted attack), integer indices.
    :param clean_pred: predicted classes of ``x`` under the test randomness; ``adv_pred`` those of ``x_adv``.
    :param audits: ``{"attack": ..., "test": ...}`` audits of the purifier's rows.
    :param times: ``{"start", "attack"}``: ``time.perf_counter()`` when the evaluation began and the seconds the
        attack took.
    """
    clean_correct = clean_pred == labels
    adv_correct = adv_pred == labels
    success = adv_correct if attack.targeted else ~adv_correct
    steps = getattr(attack.inner, "max_iter", None)
    n_batches = math.ceil(len(x) / attack.batch_size)
    test_seed = attack.test_seed()
    configs = attack.attack_seeds()
    t_attack = times["attack"]
    return {
        "n": int(len(x)),
        "clean_accuracy": float(clean_correct.mean()),
        "robust_accuracy": float(adv_correct.mean()) if not attack.targeted else float((~adv_correct).mean()),
        "attack_success_rate": float(success.mean()),
        "clean_correct": clean_correct.tolist(),
        "adv_correct": adv_correct.tolist(),
        "success": success.tolist(),
        "clean_pred": clean_pred.tolist(),
        "adv_pred": adv_pred.tolist(),
        "labels": labels.tolist(),
        "sample_ids": sample_ids.tolist(),
        "attack_seeds": [configs for _ in sample_ids],
        "test_seeds": [test_seed for _ in sample_ids],
        "max_perturbation_linf": float(np.abs(x_adv - x).reshape(len(x), -1).max()) if len(x) else 0.0,
        "config": attack.config(),
        "identification": attack.last_generation["identification"],
        "audit": {name: audit.to_dict() for name, audit in audits.items()},
        "wall_time_s": time.perf_counter() - times["start"],
        "attack_time_s": t_attack,
        "time_per_step_s": (t_attack / (n_batches * steps)) if isinstance(steps, int) and steps > 0 else None,
    }


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
    Repeat :meth:`RandomnessAlignedAttack.evaluate <art_diffpure.RandomnessAlignedAttack.evaluate>` over base
    seeds (the paper uses 0, 1, 2).

    :param attack: an attack (its ``seed`` is set to each base seed in turn) or a factory ``seed -> attack``.
    :param seeds: base seeds.
    :return: ``{"seeds", "runs", "clean_accuracy": {"mean", "std", "values"}, "robust_accuracy": {...},
        "wall_time_s"}``; ``std`` is the sample standard deviation (ddof=1; 0 for one seed).
    """
    t0 = time.perf_counter()
    runs = []
    for s in seeds:
        if isinstance(attack, EvasionAttack):
            attack.set_params(seed=int(s))  # checks the parameters; the inner attack is kept
            run_attack = attack
        else:
            run_attack = attack(int(s))
        runs.append(run_attack.evaluate(x, y, sample_ids=sample_ids))
    return {"seeds": [int(s) for s in seeds], "runs": runs,
            "clean_accuracy": _summary([r["clean_accuracy"] for r in runs]),
            "robust_accuracy": _summary([r["robust_accuracy"] for r in runs]), "wall_time_s": time.perf_counter() - t0}


__all__ = ["evaluate_repeats", "evaluation_report"]
