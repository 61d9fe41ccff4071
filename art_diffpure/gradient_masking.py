"""
Gradient-masking checks, one small named function each (in the style of fra31 AutoAttack's ``checks.py``).

Each check takes the per-image outcomes of the attacks it compares (``True`` = the attack broke the image, on
the same images in the same order) and returns a :class:`MaskingCheck`: its verdict (``"pass"`` or ``"warn"``),
the threshold it was held to, and the numbers behind it. The thresholds are module constants, fixed before any
run. Nothing here runs an attack: :mod:`art_diffpure.masking_report` does, at full strength.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from art_diffpure.statistics import mcnemar_exact

#: A stronger or different attack may break at most this fraction of the images beyond the reference attack
#: (rounded down; at least 1 image, so that one image of noise does not warn on small n).
EXTRA_SUCCESS_TOLERANCE = 0.05
#: At the largest budget (the whole input range) robust accuracy must be at most chance.
LARGE_EPS_FACTOR_OF_CHANCE = 1.0


@dataclass
class MaskingCheck:
    """One check: name, verdict, threshold, numbers and a sentence."""

    name: str
    verdict: str
    threshold: str
    numbers: dict[str, Any] = field(default_factory=dict)
    explanation: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def allowed_extra(n: int, tolerance: float = EXTRA_SUCCESS_TOLERANCE) -> int:
    """Images a second attack may break beyond the reference before a check warns: ``max(1, floor(tol * n))``."""
    return max(1, math.floor(tolerance * n))


def _broken(success: Sequence[bool], name: str) -> np.ndarray:
    s = np.asarray(success, dtype=bool).reshape(-1)
    if s.size == 0:
        raise ValueError(f"{name}: no images")
    return s


def _beyond(name: str, reference: Sequence[bool], other: Sequence[bool], ref_name: str, other_name: str,
            why: str) -> MaskingCheck:
    """Warn when ``other`` breaks more than the allowance of images that ``reference`` leaves robust."""
    ref, oth = _broken(reference, ref_name), _broken(other, other_name)
    if ref.shape != oth.shape:
        raise ValueError(f"{name}: {ref_name} and {other_name} have {ref.size} and {oth.size} images")
    only = int((oth & ~ref).sum())
    limit = allowed_extra(ref.size)
    test = mcnemar_exact(~ref, ~oth)  # correctness = not broken
    numbers = {"n": int(ref.size), f"{ref_name}_successes": int(ref.sum()), f"{other_name}_successes": int(oth.sum()),
               f"{other_name}_only": only, f"{ref_name}_only": int((ref & ~oth).sum()), "allowed": limit,
               "mcnemar_p": test.p_value}
    warn = only > limit
    return MaskingCheck(name, "warn" if warn else "pass", f"{other_name}_only <= {limit}", numbers,
                        (f"{other_name} breaks {only} images that {ref_name} does not (> {limit}): {why}" if warn else
                         f"{other_name} breaks {only} image(s) beyond {ref_name} (allowed {limit})."))


def check_gradient_free(pgd: Sequence[bool], square: Sequence[bool]) -> MaskingCheck:
    """A gradient-free attack (Square) must not break images the gradient attack cannot."""
    return _beyond("gradient_free_attack", pgd, square, "pgd", "square",
                   "the gradient attack misses what a gradient-free one finds (masked gradients)")


def check_iterations(iterations: Sequence[int], successes: Sequence[Sequence[bool]], reference: int) -> list[MaskingCheck]:
    """
    PGD with more iterations. ``pgd_converged``: the longest run breaks at most the allowance beyond the
    ``reference`` iteration count (PGD-40 has converged); ``iterations_plateau``: the last two counts differ by at
    most the allowance (the curve is flat, so the longest run is a fair stand-in for "enough").
    """
    if len(iterations) != len(successes) or len(iterations) < 2 or list(iterations) != sorted(iterations):
        raise ValueError("iterations must be increasing, at least two, one success vector each")
    if reference not in iterations:
        raise ValueError(f"reference {reference} is not among the iterations {list(iterations)}")
    counts = [int(_broken(s, f"pgd-{k}").sum()) for k, s in zip(iterations, successes)]
    longest, ref = successes[-1], successes[list(iterations).index(reference)]
    converged = _beyond("pgd_converged", ref, longest, f"pgd{reference}", f"pgd{iterations[-1]}",
                        f"PGD-{reference} has not converged")
    converged.numbers["successes_by_iterations"] = dict(zip(map(str, iterations), counts))
    plateau = _beyond("iterations_plateau", successes[-2], longest, f"pgd{iterations[-2]}", f"pgd{iterations[-1]}",
                      "the success curve is still rising at the largest iteration count")
    plateau.numbers["successes_by_iterations"] = dict(zip(map(str, iterations), counts))
    return [converged, plateau]


def check_restarts(one: Sequence[bool], many: Sequence[bool], restarts: int) -> MaskingCheck:
    """Random restarts must not break many more images than one start."""
    check = _beyond("restarts", one, many, "one_start", f"{restarts}_starts",
                    "single-start PGD is unreliable on this loss surface")
    check.numbers["restarts"] = int(restarts)
    return check


def check_bpda(full: Sequence[bool], bpda: Sequence[bool]) -> MaskingCheck:
    """The exact gradient must be at least as good as the straight-through (BPDA) approximation."""
    return _beyond("bpda_vs_full", full, bpda, "full_gradient", "bpda",
                   "the exact gradient through the chain is worse than ignoring the chain (masked or shattered)")


def check_transfer(white_box: Sequence[bool], transfer: Sequence[bool]) -> MaskingCheck:
    """Examples transferred from the undefended classifier must not beat the white-box attack."""
    return _beyond("transfer_from_undefended", white_box, transfer, "white_box", "transfer",
                   "a black-box transfer attack beats the white-box one")


def check_stronger_attack(pgd: Sequence[bool], other: Sequence[bool], name: str) -> MaskingCheck:
    """A stronger standard attack (e.g. AutoAttack's APGD-CE + APGD-DLR) must not break many more images."""
    return _beyond(f"stronger_attack_{name}", pgd, other, "pgd", name,
                   f"PGD underestimates the attack: {name} is much stronger")


def check_large_eps(eps: float, robust_accuracy: float, nb_classes: int) -> MaskingCheck:
    """Robust accuracy at a budget covering the whole input range must fall to chance."""
    limit = LARGE_EPS_FACTOR_OF_CHANCE / nb_classes
    warn = robust_accuracy > limit
    return MaskingCheck("large_eps", "warn" if warn else "pass", f"robust_accuracy <= {limit:.3g}",
                        {"eps": float(eps), "robust_accuracy": float(robust_accuracy), "chance": 1.0 / nb_classes},
                        (f"Robust accuracy {robust_accuracy:.3f} at eps={eps:g} stays above chance: the attack cannot "
                         "use an unbounded budget (masked gradients)." if warn else
                         f"Robust accuracy {robust_accuracy:.3f} at eps={eps:g} is at most chance."))


def overall(checks: Sequence[MaskingCheck]) -> str:
    """``"warn"`` if any check warns."""
    return "warn" if any(c.verdict == "warn" for c in checks) else "pass"


__all__ = [
    "EXTRA_SUCCESS_TOLERANCE",
    "LARGE_EPS_FACTOR_OF_CHANCE",
    "MaskingCheck",
    "allowed_extra",
    "check_bpda",
    "check_gradient_free",
    "check_iterations",
    "check_large_eps",
    "check_restarts",
    "check_stronger_attack",
    "check_transfer",
    "overall",
]
