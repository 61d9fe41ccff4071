"""
The result of one attack-then-test evaluation: THE place where its schema is built.

:class:`EvaluationResult` holds the per-sample outcomes (labels, clean and adversarial predictions, the seeds each
sample ran under) and derives the accuracies from them, so a merged, cut or reloaded result cannot disagree with
its own per-sample lists. ``to_dict()`` gives the JSON form every command writes; ``from_dict`` reads it back.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from art_diffpure._utils import Result, to_jsonable

__all__ = ["EvaluationResult", "PER_SAMPLE_KEYS"]

#: The per-sample lists of a result's JSON form, in data order.
PER_SAMPLE_KEYS = ("clean_correct", "adv_correct", "success", "clean_pred", "adv_pred", "labels", "sample_ids",
                   "attack_seeds", "test_seeds")
_STORED = ("labels", "sample_ids", "clean_pred", "adv_pred", "attack_seeds", "test_seeds")


@dataclass
class EvaluationResult(Result):
    """
    Per-sample outcomes of an attack and its test.

    ``labels`` are the true classes (the targets for a targeted attack: success then means reaching them and the
    accuracies are against them too). ``attack_seeds`` / ``test_seeds``: per sample, the base seeds it was
    attacked / tested under (``None`` where the randomness was fresh). ``audit``: the purifier's row audits
    (``{"attack": ..., "test": ...}``); ``identification``: how the attack's rows were identified. Times in
    seconds: ``wall_time_s`` (attack and test), ``attack_time_s``, ``time_per_iteration_s`` (attack time per
    batch and iteration, ``None`` when the attack has no fixed iteration count).
    """

    labels: Sequence[int]
    clean_pred: Sequence[int]
    adv_pred: Sequence[int]
    sample_ids: Sequence[int]
    targeted: bool = False
    attack_seeds: Sequence[Any] | None = None
    test_seeds: Sequence[Any] | None = None
    max_perturbation_linf: float = 0.0
    config: dict[str, Any] | None = None
    identification: str | None = None
    audit: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0
    attack_time_s: float = 0.0
    time_per_iteration_s: float | None = None
    subset_of: str | None = None

    def __post_init__(self) -> None:
        for name in ("labels", "clean_pred", "adv_pred", "sample_ids"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64).reshape(-1))
        n = len(self.labels)
        if not len(self.clean_pred) == len(self.adv_pred) == len(self.sample_ids) == n:
            raise ValueError("labels, clean_pred, adv_pred and sample_ids must have one entry per sample")
        for name in ("attack_seeds", "test_seeds"):
            if getattr(self, name) is None:
                setattr(self, name, [None] * n)
            elif len(getattr(self, name)) != n:
                raise ValueError(f"{name} must have one entry per sample")

    # ---------------------------------------------------------------------------------- derived per sample
    @property
    def n(self) -> int:
        return int(len(self.labels))

    @property
    def clean_correct(self) -> np.ndarray:
        return self.clean_pred == self.labels

    @property
    def adv_correct(self) -> np.ndarray:
        return self.adv_pred == self.labels

    @property
    def success(self) -> np.ndarray:
        """Per sample: the attack reached its goal (misclassified, or the target for a targeted attack)."""
        return self.adv_correct if self.targeted else ~self.adv_correct

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.mean()) if self.n else 0.0

    @property
    def robust_accuracy(self) -> float:
        """Accuracy on the adversarial examples (for a targeted attack: the rate of NOT reaching the target)."""
        if not self.n:
            return 0.0
        return float((~self.adv_correct).mean()) if self.targeted else float(self.adv_correct.mean())

    @property
    def attack_success_rate(self) -> float:
        return float(self.success.mean()) if self.n else 0.0

    # ---------------------------------------------------------------------------------- JSON form
    def to_dict(self) -> dict[str, Any]:
        """
        The JSON form: accuracies first, then the per-sample lists, configuration, audit and times (whether the
        attack was targeted is in ``config["inner_params"]``, where :meth:`from_dict` reads it).
        """
        out = {"n": self.n, "clean_accuracy": self.clean_accuracy, "robust_accuracy": self.robust_accuracy,
               "attack_success_rate": self.attack_success_rate, "clean_correct": self.clean_correct,
               "adv_correct": self.adv_correct, "success": self.success, "clean_pred": self.clean_pred,
               "adv_pred": self.adv_pred, "labels": self.labels, "sample_ids": self.sample_ids,
               "attack_seeds": list(self.attack_seeds), "test_seeds": list(self.test_seeds),
               "max_perturbation_linf": self.max_perturbation_linf, "config": self.config,
               "identification": self.identification, "audit": self.audit, "wall_time_s": self.wall_time_s,
               "attack_time_s": self.attack_time_s, "time_per_iteration_s": self.time_per_iteration_s}
        if self.subset_of is not None:
            out["subset_of"] = self.subset_of
        return to_jsonable(out)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvaluationResult":
        """The result whose :meth:`to_dict` is ``data`` (derived keys are recomputed, not read)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if "targeted" not in data and data.get("config"):
            kwargs["targeted"] = bool(data["config"].get("inner_params", {}).get("targeted", False))
        return cls(**kwargs)

    # ---------------------------------------------------------------------------------- combining
    def head(self, n: int) -> "EvaluationResult":
        """The result restricted to its first ``n`` samples (accuracies follow from the cut lists)."""
        if n == self.n:
            return self
        cut = {name: getattr(self, name)[:n] for name in _STORED}
        return dataclasses.replace(self, **cut, subset_of=f"the first {n} of {self.n} images of the same attack")

    @classmethod
    def merge(cls, parts: Sequence[tuple[np.ndarray, "EvaluationResult | None"]], n: int) -> "EvaluationResult":
        """
        One result over ``n`` samples from parts ``(global positions, result)`` (e.g. one per rank): per-sample
        lists in global order; the slowest part's wall and attack times; the largest perturbation.
        """
        lists: dict[str, list] = {k: [None] * n for k in _STORED}
        filled = np.zeros(n, dtype=bool)
        done = [(np.asarray(p).tolist(), r) for p, r in parts if r is not None and len(p)]
        for positions, result in done:
            filled[positions] = True
            for k in _STORED:
                values = list(getattr(result, k))
                for j, pos in enumerate(positions):
                    lists[k][pos] = values[j]
        if not filled.all():
            raise RuntimeError(f"samples {np.flatnonzero(~filled).tolist()} were evaluated by no part")
        results = [r for _, r in done]
        per_iteration = [r.time_per_iteration_s for r in results if r.time_per_iteration_s is not None]
        first = results[0] if results else None
        return cls(**lists, targeted=bool(first and first.targeted), config=first and first.config,
                   max_perturbation_linf=max([r.max_perturbation_linf for r in results], default=0.0),
                   wall_time_s=max([r.wall_time_s for r in results], default=0.0),
                   attack_time_s=max([r.attack_time_s for r in results], default=0.0),
                   time_per_iteration_s=float(np.mean(per_iteration)) if per_iteration else None)
