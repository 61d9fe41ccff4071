"""Small helpers shared by the whole package; imports nothing from it (the bottom of the import graph)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["to_jsonable"]


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
