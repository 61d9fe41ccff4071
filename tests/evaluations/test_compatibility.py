"""The ART compatibility matrix: every ART evasion attack runs against the defended classifier, directly and
wrapped in each randomness mode, within its promises, with every purified row under the intended randomness.
The cells in ``FAST_CELLS`` run in CI; the whole matrix with ``pytest -m slow``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import art_classifier, make_purifier, tiny_classifier

from art_diffpure.evaluations.compatibility import (ATTACKS, FAST_CELLS, KNOWN_ART_FAILURES, MODES, NOT_APPLICABLE, run_cell,
                                               run_undefended)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _in_tmp(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # GeoDA writes its DCT basis to the working directory


def _model(probabilities: bool) -> torch.nn.Module:
    model = tiny_classifier()
    return torch.nn.Sequential(model, torch.nn.Softmax(dim=1)) if probabilities else model


def make_defended(gradient: str = "full", probabilities: bool = False):
    return art_classifier(_model(probabilities), make_purifier(t_star=2, seed=5, gradient=gradient))


def make_plain(probabilities: bool = False):
    return art_classifier(_model(probabilities))


X = np.random.RandomState(0).rand(3, 1, 8, 8).astype(np.float32)


def _labels() -> np.ndarray:
    return make_defended().predict(X).argmax(1)


def _cells():
    fast = set(FAST_CELLS)
    for name in ATTACKS:
        for mode in MODES:
            marks = () if (name, mode) in fast else (pytest.mark.slow,)
            yield pytest.param(name, mode, marks=marks, id=f"{name}-{mode}")


@pytest.mark.parametrize("name, mode", list(_cells()))
def test_cell(name, mode):
    spec = ATTACKS[name]
    cell = run_cell(spec, mode, make_defended, X, _labels())
    if (name, mode) in NOT_APPLICABLE:
        assert not cell.runs and NOT_APPLICABLE[name, mode] in cell.error, cell.error
        return
    if not cell.runs and name in KNOWN_ART_FAILURES:
        # allowed only where ART fails undefended too, with the same error
        plain = run_undefended(spec, make_plain, X, _labels())
        assert not plain.runs and plain.error.split(":")[0] == cell.error.split(":")[0], (plain.error, cell.error)
        return
    assert cell.runs, cell.error
    assert cell.within_eps is not False, "left the eps-ball it promises"
    assert cell.within_clip, "left the clip range"
    assert cell.finite, "NaN or inf in the adversarial examples"
    if not mode.startswith("direct"):
        assert cell.audit_ok and cell.rows_intended == cell.rows_purified > 0
    if mode == "aligned" and not spec.random:
        assert cell.batch_invariant, f"batch vs alone differ by {cell.batch_max_diff}"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ATTACKS))
def test_undefended_baseline_is_recorded(name):
    cell = run_undefended(ATTACKS[name], make_plain, X, _labels())
    if (name, "undefended") in NOT_APPLICABLE:
        assert not cell.runs and NOT_APPLICABLE[name, "undefended"] in cell.error, cell.error
        return
    # ART itself cannot run HopSkipJump and Boundary on a float32 PyTorch model (they pass float64 arrays);
    # the purifier hands float64 on as float32, so they do run defended.
    assert cell.runs == (name not in ("HopSkipJump", "Boundary", *KNOWN_ART_FAILURES)), cell.error
