"""Tests of art_diffpure.metrics._common and art_diffpure._utils: norms, summaries, JSON conversion."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from art_diffpure import metrics as M
from art_diffpure._utils import to_jsonable
from art_diffpure.metrics._common import _check_norms, _mean_std, _metric_norm_label, _norm, _plain, _Result


@pytest.mark.parametrize("norm,key", [(np.inf, "linf"), (float("inf"), "linf"), (np.float32(np.inf), "linf"),
                                      ("inf", "linf"), ("linf", "linf"), ("Linf", "linf"),
                                      (2, "l2"), (2.0, "l2"), (np.int64(2), "l2"), ("l2", "l2"), ("L2", "l2")])
def test_metric_norms_accept_art_spelling(norm, key):
    assert _metric_norm_label(norm) == key
    assert _check_norms(norm) == [key]


@pytest.mark.parametrize("norm", [1, "l1", True, -np.inf, 0, None, "both "])
def test_metric_norms_reject(norm):
    with pytest.raises(ValueError, match="Unknown norm"):
        _check_norms(norm)


def test_check_norms_lists():
    assert _check_norms("both") == ["l2", "linf"] == _check_norms([2, np.inf]) == list(M.NORMS)
    assert _check_norms(["linf", np.inf, 2]) == ["linf", "l2"]


def test_norm_values():
    d = np.array([[3.0, -4.0], [0.0, 1.0]])
    np.testing.assert_array_equal(_norm(d, 2), [5.0, 1.0])
    np.testing.assert_array_equal(_norm(d, np.inf), _norm(d, "linf"))
    np.testing.assert_array_equal(_norm(d, np.inf), [4.0, 1.0])


def test_mean_std_is_population_std_of_finite_values():
    mean, std = _mean_std(np.array([1.0, 2.0, 3.0, 4.0, np.nan, np.inf]))
    assert mean == pytest.approx(2.5) and std == pytest.approx(np.std([1, 2, 3, 4], ddof=0))
    assert all(math.isnan(v) for v in _mean_std(np.array([np.nan])))


def test_to_jsonable_keeps_plain_behaviour():
    @dataclass
    class R(_Result):
        a: np.ndarray
        _hidden: int = 0

    value = {1: (np.float32(0.5), np.int64(3), np.bool_(True)), "x": np.array([1.0, np.nan, -np.inf]),
             "r": R(np.arange(2)), "none": None, "s": "t", "obj": object}
    out = to_jsonable(value)
    assert out == {"1": [0.5, 3, True], "x": [1.0, None, None], "r": {"a": [0, 1]}, "none": None, "s": "t",
                   "obj": str(object)}
    json.dumps(out)
    assert _plain is to_jsonable  # one converter
