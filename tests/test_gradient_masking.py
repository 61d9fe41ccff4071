"""Gradient-masking checks: each small check against hand-made outcomes, and the full-strength run (tiny)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from conftest import art_classifier, make_purifier, tiny_classifier

from art_diffpure import gradient_masking as gm
from art_diffpure import masking_report


def test_allowance_is_five_percent_and_at_least_one_image():
    assert gm.allowed_extra(10) == 1 and gm.allowed_extra(32) == 1 and gm.allowed_extra(128) == 6


def test_gradient_free_check_warns_only_beyond_the_allowance():
    pgd = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    one_more = pgd.copy()
    one_more[2] = True
    two_more = one_more.copy()
    two_more[3] = True
    assert gm.check_gradient_free(pgd, one_more).verdict == "pass"
    check = gm.check_gradient_free(pgd, two_more)
    assert check.verdict == "warn" and check.numbers["square_only"] == 2
    assert check.numbers["mcnemar_p"] == pytest.approx(0.5)  # b=0, c=2: 2 * 0.25
    with pytest.raises(ValueError, match="images"):
        gm.check_gradient_free(pgd, two_more[:5])


def test_iteration_checks_tell_convergence_from_plateau():
    n = 20
    s = lambda k: np.arange(n) < k  # noqa: E731 - k images broken
    converged, plateau = gm.check_iterations([10, 40, 100, 200], [s(5), s(8), s(11), s(11)], 40)
    assert converged.verdict == "warn" and plateau.verdict == "pass"  # flat at the end, but PGD-40 is short of it
    converged, plateau = gm.check_iterations([10, 40, 100, 200], [s(5), s(8), s(8), s(9)], 40)
    assert converged.verdict == "pass" and plateau.verdict == "pass"
    assert converged.numbers["successes_by_iterations"] == {"10": 5, "40": 8, "100": 8, "200": 9}
    with pytest.raises(ValueError, match="reference"):
        gm.check_iterations([10, 100], [s(1), s(2)], 40)


def test_large_eps_and_overall():
    assert gm.check_large_eps(1.0, 0.05, 10).verdict == "pass"
    warn = gm.check_large_eps(1.0, 0.3, 10)
    assert warn.verdict == "warn" and gm.overall([warn, gm.check_large_eps(1.0, 0.0, 10)]) == "warn"


def test_full_strength_run_resumes_and_reports(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    x = np.random.RandomState(0).rand(4, 1, 8, 8).astype(np.float32)
    make = lambda sampler, gradient: art_classifier(  # noqa: E731
        tiny_classifier(), make_purifier(t_star=2, sampler=sampler, seed=0, gradient=gradient))
    y = make("ddpm", "full").predict(x).argmax(1)
    kwargs = dict(samplers=("ddpm",), n_images=4, eps=0.1, square_queries=5, restarts=2, batch_size=4,
                  make_classifier=make, data=(x, y), progress=False)
    first = masking_report.run(str(tmp_path), **kwargs)
    names = {c["name"] for c in first["samplers"]["ddpm"]["checks"]}
    assert names == {"gradient_free_attack", "pgd_converged", "iterations_plateau", "restarts", "bpda_vs_full",
                     "transfer_from_undefended", "stronger_attack_apgd_ce_dlr", "large_eps"}
    assert len(os.listdir(tmp_path / "parts")) == 10
    calls = []
    monkeypatch.setattr(masking_report, "run_attack", lambda *a, **k: calls.append(a) or {})
    again = masking_report.run(str(tmp_path), **kwargs)  # every part found: nothing is attacked again
    assert calls == [] and again["samplers"] == first["samplers"]
    assert json.load(open(tmp_path / "results.json"))["samplers"] == first["samplers"]
    assert "gradient_free_attack" in open(tmp_path / "report.md").read()
    with pytest.raises(RuntimeError, match="other settings"):
        masking_report.run(str(tmp_path), **dict(kwargs, square_queries=6, restarts=2, eps=0.2))
