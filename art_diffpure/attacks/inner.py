"""
What :class:`~art_diffpure.RandomnessAlignedAttack` needs to know about the ART attack it runs inside.

- :func:`perturbation_bound`: how far from its clean sample a row the attack hands to the estimator can be
  (rows of a batch are told apart by it, see :mod:`art_diffpure.randomness`);
- :func:`check_inner`: the attack (and its sub-attacks) is built on the classifier whose purifier carries the
  randomness, not on a copy with another purifier object;
- :func:`attack_params_jsonable`: an attack's ``attack_params`` for a report;
- :func:`unlogged_success_rate`: ART's PGD does not purify twice more for a log line.
"""
from __future__ import annotations

import contextlib
import sys
import threading
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
from art.attacks.attack import EvasionAttack

from art_diffpure.purifier import find_purifier

if TYPE_CHECKING:  # pragma: no cover
    from art_diffpure.purifier import DiffusionPurifier


def perturbation_bound(attack: EvasionAttack) -> float | None:
    """
    The Linf distance from its clean sample that no row an ART attack hands to the estimator exceeds, or ``None``
    when the attack promises none. Gradient and score attacks that project onto an eps-ball (FGSM, BIM, PGD, MIM,
    APGD, Square) are bounded by ``eps`` in any norm (an Lp ball lies inside the Linf ball of the same radius);
    AutoAttack is bounded when all its sub-attacks are. Minimum-norm and decision attacks (C&W, DeepFool, EAD,
    HopSkipJump, Boundary, FAB, ...) are not: their intermediate queries go anywhere.
    """
    from art.attacks.evasion import (AutoAttack, AutoProjectedGradientDescent, FastGradientMethod,
                                     ProjectedGradientDescent, SquareAttack)

    if isinstance(attack, AutoAttack):
        bounds = [perturbation_bound(a) for a in attack.attacks]
        return None if any(b is None for b in bounds) else max(bounds, default=0.0)
    bounded = (FastGradientMethod, ProjectedGradientDescent, AutoProjectedGradientDescent, SquareAttack)
    declared = getattr(attack, "perturbation_bound", None)  # our own attacks (e.g. the fra31 driver) declare it
    if callable(declared):
        return declared()
    if isinstance(attack, bounded) and getattr(attack, "eps", None) is not None:
        return float(np.max(attack.eps))
    return None


def check_inner(inner: Any, purifier: "DiffusionPurifier") -> EvasionAttack:
    """
    ``inner`` itself, once checked: an ART ``EvasionAttack`` whose estimator (and those of its sub-attacks, as
    AutoAttack's) has no DiffusionPurifier other than the ``purifier`` object.

    :raises ValueError: otherwise.
    """
    if not isinstance(inner, EvasionAttack):
        raise ValueError(f"The attack factory returned {type(inner).__name__}, not an ART EvasionAttack")
    estimators = [inner.estimator] + [a.estimator for a in getattr(inner, "attacks", None) or []
                                      if isinstance(a, EvasionAttack)]
    for estimator in estimators:
        found = find_purifier(estimator)
        if found is not None and found is not purifier:
            raise ValueError(f"{type(inner).__name__} is built on a classifier with another DiffusionPurifier "
                             "object; build it on the classifier given to RandomnessAlignedAttack")
    return inner


def _jsonable(value: Any) -> Any:
    """Best-effort conversion of one attack parameter to JSON types (``inf`` as ``"inf"``, objects by type name)."""
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return "inf" if np.isinf(value) else float(value)
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else f"array{tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return type(value).__name__


def attack_params_jsonable(obj: Any, names: Any = None) -> dict[str, Any]:
    """
    ``{name: value}`` of ``obj``'s ``names`` (default: its ART ``attack_params`` without ``estimator``) as JSON
    types: numbers and strings as they are, ``inf`` as ``"inf"``, arrays of more than 64 entries by shape, other
    objects (estimators, attacks, modules) by their type name.
    """
    names = [k for k in obj.attack_params if k != "estimator"] if names is None else names
    return {k: _jsonable(getattr(obj, k)) for k in names if hasattr(obj, k)}


_PATCH_LOCK = threading.Lock()
_PATCHED: dict[str, tuple[Any, int]] = {}  # module name -> (ART's compute_success, number of open blocks)


def _skipped_success_rate(*args: Any, **kwargs: Any) -> float:
    """Stands in for ``art.utils.compute_success`` where its value only feeds a disabled INFO log line."""
    return float("nan")


@contextlib.contextmanager
def unlogged_success_rate(attack: EvasionAttack) -> Iterator[None]:
    """
    For the block, ART's projected gradient descent skips the success rate it computes at the end of every
    ``generate`` for an INFO log line: two more purified predictions of the whole batch, evaluated whatever the log
    level. Skipped always, not only while INFO is off, so that what the purifier draws (its fresh noise in
    ``"stochastic"`` mode, the audit's call count) never depends on logging; with INFO on the line reads ``nan%``.
    The returned examples are unchanged. Other attacks are left as they are.
    """
    from art.utils import compute_success

    impl = getattr(attack, "_attack", attack)  # ART's ProjectedGradientDescent delegates to a framework class
    name = type(impl).__module__
    module = sys.modules.get(name)
    if not name.startswith("art.attacks.evasion.projected_gradient_descent.") or module is None:
        yield
        return
    with _PATCH_LOCK:
        original, depth = _PATCHED.get(name, (getattr(module, "compute_success", None), 0))
        patch = original is compute_success  # else not the function this was written against: leave it alone
        if patch:
            _PATCHED[name] = (original, depth + 1)
            module.compute_success = _skipped_success_rate
    if not patch:
        yield
        return
    try:
        yield
    finally:
        with _PATCH_LOCK:
            original, depth = _PATCHED.pop(name)
            if depth > 1:
                _PATCHED[name] = (original, depth - 1)
            else:
                module.compute_success = original


__all__ = ["attack_params_jsonable", "check_inner", "perturbation_bound", "unlogged_success_rate"]
