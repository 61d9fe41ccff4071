"""
Small helpers shared by the whole package; imports nothing from it (the bottom of the import graph).

- :func:`to_jsonable`: THE conversion of results to JSON types. The one rule for non-finite numbers: NaN and
  +-inf become ``None`` (``null``), because JSON has no NaN and strict parsers reject python's ``NaN`` token;
  a ``None`` in a result therefore means "not finite / not measured".
- :class:`Result`: the base class of every dataclass result object (metrics, evaluations); its ``to_dict()``
  is :func:`to_jsonable` of the public fields.
- :func:`index_labels`, :func:`one_hot`: label formats through ART's ``check_and_transform_label_format``.
- :func:`as_sample_ids`: THE normalisation of per-sample ids (default ``arange(n)``).
"""
from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import numpy as np

__all__ = ["Result", "as_sample_ids", "index_labels", "one_hot", "to_jsonable"]


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
