"""
Small helpers shared by the whole package; imports nothing from it (the bottom of the import graph).

- :func:`to_jsonable`: THE conversion of results to JSON types. The one rule for non-finite numbers: NaN and
  +-inf become ``None`` (``null``), because JSON has no NaN and strict parsers reject python's ``NaN`` token;
  a ``None`` in a result therefore means "not finite / not measured".
- :class:`Result`: the base class of every dataclass result object (metrics, evaluations); its ``to_dict()``
  is :func:`to_jsonable` of the public fields.
- :func:`index_labels`, :func:`one_hot`: label formats through ART's ``check_and_transform_label_format``.
- :func:`as_sample_ids`: THE normalisation of per-sample ids (default ``arange(n)``).
- :func:`norm_label`, :func:`parse_norm`: THE norm vocabulary. The API takes ART's spelling (``np.inf``, ``1``,
  ``2``); results are keyed by the label of the norm (``"linf"``, ``"l1"``, ``"l2"``).
- :func:`check_int`: THE integer check of parameters (``bool`` is not an int here).
"""
from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import numpy as np

__all__ = ["Result", "as_sample_ids", "check_int", "index_labels", "norm_label", "one_hot", "parse_norm", "to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """
    Recursively convert a value to plain, JSON-serialisable python.

    Dicts get ``str`` keys; lists and tuples become lists; numpy arrays become (nested) lists; numpy
    booleans, integers and floats become ``bool``, ``int`` and ``float``; non-finite floats (NaN, +-inf)
    become ``None``; objects with a ``to_dict()`` method are replaced by its result; ``None`` and
    strings are kept; anything else becomes ``str(value)``.
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if value is None or isinstance(value, str):
        return value
    return str(value)


class Result:
    """
    Base class of the dataclass result objects: ``to_dict()`` gives the public fields (names not starting with
    ``_``) as plain JSON types by :func:`to_jsonable` (so NaN and inf become ``None``; nested results are
    converted by their own ``to_dict()``).
    """

    def to_dict(self) -> dict[str, Any]:
        """The public fields as JSON types (non-finite floats become ``None``)."""
        return {f.name: to_jsonable(getattr(self, f.name)) for f in fields(self) if not f.name.startswith("_")}


def index_labels(y: Any, nb_classes: int | None = None) -> np.ndarray:
    """Integer class labels ``(n,)`` from index labels ``(n,)`` / ``(n, 1)`` or one-hot ``(n, nb_classes)``
    (ART's ``check_and_transform_label_format``)."""
    from art.utils import check_and_transform_label_format

    labels = check_and_transform_label_format(np.asarray(y), nb_classes, return_one_hot=False)
    return np.asarray(labels).reshape(-1).astype(np.int64)


def one_hot(y: Any, nb_classes: int) -> np.ndarray:
    """One-hot float32 labels ``(n, nb_classes)`` from index or one-hot labels (ART's rules)."""
    from art.utils import check_and_transform_label_format

    return np.asarray(check_and_transform_label_format(np.asarray(y), int(nb_classes)), dtype=np.float32)


def as_sample_ids(sample_ids: Any, n: int) -> np.ndarray:
    """Per-sample ids as int64 ``(n,)``: ``arange(n)`` for ``None``; a ``ValueError`` unless there are ``n``."""
    ids = np.arange(n, dtype=np.int64) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64).reshape(-1)
    if len(ids) != n:
        raise ValueError(f"Got {len(ids)} sample_ids for {n} samples")
    return ids


# ---------------------------------------------------------------------------------------------- norms
#: ART's norms and their result keys. The labels are the keys of every per-norm dict in results and reports.
_LABELS = {np.inf: "linf", 1: "l1", 2: "l2"}
#: Strings accepted for a norm (lower case): the labels, and the numbers as text.
_SPELLINGS = {**{label: norm for norm, label in _LABELS.items()}, "inf": np.inf, "1": 1, "2": 2}


def _unknown_norm(norm: Any) -> ValueError:
    return ValueError(f"Unknown norm {norm!r}; expected np.inf, 1 or 2 (ART's spelling; also "
                      f"{', '.join(repr(s) for s in _SPELLINGS)})")


def parse_norm(norm: Any) -> float | int:
    """
    ART's spelling of a norm, ``np.inf``, ``1`` or ``2``, from a number (``2``, ``2.0``, ``np.inf``,
    ``float("inf")``, numpy scalars) or a string (``"l2"``, ``"linf"``, ``"inf"``, ``"l1"``, ``"2"``, ``"1"``,
    case-insensitive; command-line input). ``bool`` and anything else raise a ``ValueError``.
    """
    if isinstance(norm, str):
        if norm.lower() in _SPELLINGS:
            return _SPELLINGS[norm.lower()]
        raise _unknown_norm(norm)
    if isinstance(norm, (int, float, np.integer, np.floating)) and not isinstance(norm, (bool, np.bool_)):
        if math.isinf(norm) and norm > 0:
            return np.inf
        if norm in (1, 2):
            return int(norm)
    raise _unknown_norm(norm)


def norm_label(norm: Any) -> str:
    """The result key of a norm: ``"linf"``, ``"l2"`` or ``"l1"``, for any spelling :func:`parse_norm` accepts."""
    return _LABELS[parse_norm(norm)]


# ---------------------------------------------------------------------------------------------- checks
def check_int(value: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """
    ``value`` as a python ``int``; a ``ValueError`` naming ``name`` unless it is an integer (python or numpy;
    ``bool`` is refused: ``True`` is no count) of at least ``minimum`` and at most ``maximum`` (when given).
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or (
            minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {_int_wanted(minimum, maximum)}, got {value!r}")
    return int(value)


def _int_wanted(minimum: int | None, maximum: int | None) -> str:
    if maximum is not None:
        return f"an int in [{'-inf' if minimum is None else minimum}, {maximum}]"
    if minimum is None:
        return "an int"
    return {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")


def ordered_sum(values: Any) -> float:
    """
    The floats of ``values`` added left to right in double precision: the same bits on every Python (3.12's
    ``sum()`` compensates rounding, 3.11's does not), so that a report resumed under another Python renders the
    committed totals exactly.
    """
    total = 0.0
    for value in values:
        total += float(value)
    return total
