"""Gradient-masking checks (art_diffpure.evaluations.gradient_masking): each small check against hand-made
outcomes, the quick checklist on small digits models, and the full-strength run (tiny)."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from _evaluation_models import RoundedPurifier, _one_thread, digits, plain_model, tiny_masking_kwargs  # noqa: F401
from conftest import art_classifier, tiny_scheduler, tiny_unet

from art_diffpure.reproduce import masking as masking_report
from art_diffpure.evaluations import gradient_masking as gm
from art_diffpure.evaluations.gradient_masking import diagnostics_table, gradient_masking_diagnostics


# ---------------------------------------------------------------------------------------------- full-strength checks
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


@pytest.mark.parametrize("check, name", [
    (lambda a, b: gm.check_restarts(a, b, 5), "restarts"),
    (gm.check_bpda, "bpda_vs_full"),
    (gm.check_transfer, "transfer_from_undefended"),
    (lambda a, b: gm.check_stronger_attack(a, b, "apgd"), "stronger_attack_apgd"),
])
def test_pairwise_checks_warn_beyond_the_allowance(check, name):
    ref = np.arange(20) < 4
    assert check(ref, np.arange(20) < 5).verdict == "pass"  # one more image: within max(1, 5% of 20)
    warn = check(ref, np.arange(20) < 6)
    assert warn.name == name and warn.verdict == "warn" and warn.numbers["allowed"] == 1
    assert check(ref, ref).numbers["mcnemar_p"] == 1.0


def test_a_pairwise_check_fails_when_the_paired_test_shows_the_difference():
    ref = np.arange(20) < 4
    fail = gm.check_stronger_attack(ref, np.arange(20) < 12, "apgd")  # 8 beyond, none the other way: p = 0.008
    assert fail.verdict == "fail" and fail.numbers["mcnemar_p"] < gm.FAIL_ALPHA
    assert "8 images that pgd leaves robust" in fail.explanation
    assert gm.overall([fail, gm.check_stronger_attack(ref, np.arange(20) < 6, "x")]) == "fail"
    # beyond the allowance, but as many images the other way: warn, not fail
    mixed = gm.check_stronger_attack(np.arange(20) < 8, np.arange(20) >= 12, "apgd")
    assert mixed.verdict == "warn"


def test_randomness_modes_compare_the_same_attack_family():
    aligned = np.arange(20) < 10  # the aligned attack breaks 10 images
    fewer = np.arange(20) < 3  # the stochastic attack breaks fewer: the overstatement, not a masking sign
    check = gm.check_randomness_modes(aligned, fewer, "autoattack")
    assert check.name == "stochastic_autoattack_beyond_aligned" and check.verdict == "pass"
    assert check.numbers["aligned_only"] == 7 and check.numbers["stochastic_only"] == 0
    beyond = gm.check_randomness_modes(aligned, aligned | (np.arange(20) >= 17), "autoattack")
    assert beyond.verdict == "warn" and beyond.numbers["stochastic_only"] == 3


def test_large_eps_and_overall():
    assert gm.check_large_eps(1.0, 0.05, 10).verdict == "pass"
    warn = gm.check_large_eps(1.0, 0.3, 10)
    assert warn.verdict == "warn" and gm.overall([warn, gm.check_large_eps(1.0, 0.0, 10)]) == "warn"


# ---------------------------------------------------------------------------------------------- quick-checklist checks
def test_gradient_free_rate_check():
    pgd = np.arange(20) < 4
    assert gm.check_gradient_free_rate(pgd, pgd, 0.05, 0.1, 10).verdict == "pass"
    square = pgd | (np.arange(20) == 10)  # one image beyond PGD: 1 > 0.05 * 20 is False, rate +0.05 is not > 0.05
    assert gm.check_gradient_free_rate(pgd, square, 0.05, 0.1, 10).verdict == "pass"
    square = square | (np.arange(20) == 11)
    check = gm.check_gradient_free_rate(pgd, square, 0.05, 0.1, 10)
    assert check.verdict == "warn" and check.numbers["square_only"] == 2 and check.numbers["pgd_only"] == 0
    assert check.numbers["square_success_rate"] == pytest.approx(0.3) and check.name == "gradient_free_attack"


def test_large_eps_curve_check():
    check = gm.check_large_eps_curve([0.25, 0.5, 1.0], [0.4, 0.1, 0.0], 0.1, 0.1)
    assert check.verdict == "pass" and check.numbers["robust_accuracy"] == [0.4, 0.1, 0.0]
    assert gm.check_large_eps_curve([0.5, 1.0], [0.5, 0.3], 0.1, 0.1).verdict == "warn"


def test_iterations_restarts_check():
    check = gm.check_iterations_restarts([5, 10, 20], [3, 5, 5], [1, 3], [5, 6], n=10, tolerance=1, eps=0.1)
    assert check.verdict == "pass" and check.numbers["largest_drop_iterations"] == 0
    check = gm.check_iterations_restarts([5, 10, 20], [3, 6, 4], [1, 3], [5, 6], n=10, tolerance=1, eps=0.1)
    assert check.verdict == "warn" and check.numbers["largest_drop_iterations"] == 2
    check = gm.check_iterations_restarts([5, 10], [3, 3], [1, 3], [5, 3], n=10, tolerance=1, eps=0.1)
    assert check.verdict == "warn" and check.numbers["largest_drop_restarts"] == 2
    # successes that still rise at the largest iteration count: not converged
    check = gm.check_iterations_restarts([5, 10, 20], [3, 5, 8], [1, 3], [5, 6], n=10, tolerance=1, eps=0.1)
    assert check.verdict == "warn" and check.numbers["last_rise_iterations"] == 3
    assert "still rises" in check.explanation and "upper bound" in check.explanation


def test_gradient_health_check():
    rng = np.random.default_rng(0)
    assert gm.check_gradient_health(rng.standard_normal((4, 8)), 1e-8, 0.5).verdict == "pass"
    check = gm.check_gradient_health(np.zeros((4, 8)), 1e-8, 0.5)
    assert check.verdict == "warn" and check.numbers["zero_fraction"] == 1.0 and "vanishing" in check.explanation
    bad = rng.standard_normal((4, 8))
    bad[0, 0] = np.nan
    check = gm.check_gradient_health(bad, 1e-8, 0.5)
    assert check.verdict == "warn" and check.numbers["finite"] is False


def test_chain_gradients_check():
    assert gm.check_chain_gradients([1.0, 2.0, 4.0], 1e4).verdict == "pass"
    check = gm.check_chain_gradients([0.0, 0.0], 1e4)
    assert check.verdict == "warn" and "every reverse step" in check.explanation
    assert check.numbers["max_min_ratio"] == math.inf and check.to_dict()["numbers"]["max_min_ratio"] is None
    assert gm.check_chain_gradients([1.0, 0.0, 1.0], 1e4).numbers["zero_steps"] == 1
    assert gm.check_chain_gradients([1.0, 1e5], 1e4).verdict == "warn"
    na = gm.check_chain_gradients(None, 1e4, "no DiffusionPurifier")
    assert na.verdict == "n/a" and "no DiffusionPurifier" in na.explanation


def test_loss_gradients_check():
    flags = np.zeros((4, 3), dtype=bool)
    assert gm.check_loss_gradients(flags, 0.5).verdict == "pass"
    flags[:2, 0] = True  # two of four all-zero: not more than half
    assert gm.check_loss_gradients(flags, 0.5).verdict == "pass"
    flags[2, 0] = True
    assert gm.check_loss_gradients(flags, 0.5).verdict == "warn"
    flags = np.zeros((4, 3), dtype=bool)
    flags[3, 1] = True
    check = gm.check_loss_gradients(flags, 0.5)
    assert check.verdict == "warn" and check.numbers["nan_gradient_samples"] == 1


# ---------------------------------------------------------------------------------------------- the quick checklist
def test_masked_gradient_is_flagged():
    x, y = digits(12)
    purifier = RoundedPurifier(tiny_unet(), tiny_scheduler(), t_star=2, seed=0, device_type="cpu")
    result = gradient_masking_diagnostics(
        art_classifier(plain_model(), purifier), x, y, eps=0.1, max_iter=5, iterations=(5, 10), square_queries=50,
        large_eps=(0.5, 1.0), n_gradient_samples=4)
    verdicts = {c.name: c.verdict for c in result.checks}
    print(verdicts, {c.name: c.numbers for c in result.checks})
    assert result.overall == "warn"
    for name in ("gradient_free_attack", "gradient_health", "chain_gradients", "loss_gradient_check"):
        assert verdicts[name] == "warn", name
    assert result.check("gradient_health").numbers["zero_fraction"] == 1.0
    assert result.check("chain_gradients").numbers["per_step_grad_norm"] == [0.0, 0.0]
    assert result.check("loss_gradient_check").numbers["zero_gradient_samples"] == 4
    square = result.check("gradient_free_attack").numbers
    assert square["square_only"] > 0 and square["square_success_rate"] > square["pgd_success_rate"]
    table = diagnostics_table(result)
    assert table.count("\n") == len(result.checks) + 2 and "**warn**" in table
    assert json.loads(json.dumps(result.to_dict()))["overall"] == "warn"


def test_plain_classifier_is_not_flagged():
    x, y = digits(24)
    result = gradient_masking_diagnostics(plain_model(), x, y, eps=0.1, max_iter=10, iterations=(5, 10, 20))
    verdicts = {c.name: c.verdict for c in result.checks}
    # no sign of masking: every check passes but the convergence one, which says whether PGD still gains
    masking_signs = {k: v for k, v in verdicts.items() if k not in ("iterations_restarts", "chain_gradients")}
    assert set(masking_signs.values()) == {"pass"}, diagnostics_table(result)
    its = result.check("iterations_restarts")
    assert its.numbers["largest_drop_iterations"] == its.numbers["largest_drop_restarts"] == 0
    rises = max(its.numbers["last_rise_iterations"], its.numbers["last_rise_restarts"]) > its.numbers["tolerance"]
    assert its.verdict == ("warn" if rises else "pass") and ("still rises" in its.explanation) == rises
    assert verdicts["chain_gradients"] == "n/a"
    assert result.check("large_eps").numbers["robust_accuracy"][-1] == 0.0
    json.dumps(result.to_dict())


# ---------------------------------------------------------------------------------------------- full strength, tiny
def test_full_strength_run_resumes_and_reports(tmp_path, monkeypatch):
    """Every attack and check of the plan, resumed from its parts; iteration counts cut (the code path is the same)."""
    kwargs = tiny_masking_kwargs(monkeypatch)
    first = masking_report.run(str(tmp_path), **kwargs)
    names = {c["name"] for c in first["samplers"]["ddpm"]["checks"]}
    assert names == {"gradient_free_attack", "pgd_converged", "iterations_plateau", "restarts", "bpda_vs_full",
                     "transfer_from_undefended", "stronger_attack_apgd_ce_dlr", "large_eps",
                     "stochastic_autoattack_beyond_aligned"}
    assert len(os.listdir(tmp_path / "parts")) == 11
    calls = []
    monkeypatch.setattr(masking_report, "run_attack", lambda *a, **k: calls.append(a) or {})
    again = masking_report.run(str(tmp_path), **kwargs)  # every part found: nothing is attacked again
    assert calls == [] and again["samplers"] == first["samplers"]
    assert json.load(open(tmp_path / "results.json"))["samplers"] == first["samplers"]
    assert "gradient_free_attack" in open(tmp_path / "report.md").read()
    with pytest.raises(RuntimeError, match="other settings"):
        masking_report.run(str(tmp_path), **dict(kwargs, square_queries=6, restarts=2, eps=0.2))


def test_a_chunked_attack_is_saved_per_chunk_and_joined_in_image_order(tmp_path, monkeypatch):
    """AutoAttack-rand runs in chunks of images (each a resumable part); the checks see one per-image list."""
    monkeypatch.setattr(masking_report, "AUTOATTACK_RAND_CHUNK", 3)
    calls = []

    def fake(name, kw, make, x, y, batch_size, first_image=0):
        calls.append((name, first_image, len(x)))
        adv = [(first_image + i) % 2 == 0 for i in range(len(x))]
        return {"adv_correct": adv, "success": [not a for a in adv], "robust_accuracy": float(np.mean(adv))}

    monkeypatch.setattr(masking_report, "run_attack", fake)
    x, y = np.zeros((7, 1, 8, 8), np.float32), np.zeros(7, np.int64)
    kwargs = dict(samplers=("ddpm",), n_images=7, square_queries=5, restarts=2, make_classifier=lambda s, g: None,
                  data=(x, y), progress=False)
    res = masking_report.run(str(tmp_path), **kwargs)
    aa = [c for c in calls if c[0].startswith("autoattack_rand")]
    assert aa == [("autoattack_rand_eot20", 0, 3), ("autoattack_rand_eot20", 3, 3), ("autoattack_rand_eot20", 6, 1)]
    files = sorted(f for f in os.listdir(tmp_path / "parts") if f.startswith("ddpm__autoattack"))
    assert files == ["ddpm__autoattack_rand_eot20__0000-0002.json", "ddpm__autoattack_rand_eot20__0003-0005.json",
                     "ddpm__autoattack_rand_eot20__0006-0006.json"]
    assert res["samplers"]["ddpm"]["robust_accuracy"]["autoattack_rand_eot20"] == pytest.approx(4 / 7)
    comparisons = res["samplers"]["ddpm"]["comparisons"]  # every attack left the same images robust here
    assert [c["b"] for c in comparisons] == ["apgd_ce_dlr (aligned)", "pgd40 (aligned)",
                                             "worst case over the aligned attacks"]
    assert all(c["difference"] == 0 and c["mcnemar_p"] == 1 and c["n"] == 7 for c in comparisons)
    os.remove(tmp_path / "parts" / files[1])  # an interrupted run: only the missing chunk is attacked again
    calls.clear()
    masking_report.run(str(tmp_path), **kwargs)
    assert calls == [("autoattack_rand_eot20", 3, 3)]


def test_report_only_shows_finished_parts_and_lists_what_is_pending(tmp_path, monkeypatch):
    """``attack=False`` (``--report-only``) runs nothing: checks only where all their attacks finished."""
    monkeypatch.setattr(masking_report, "AUTOATTACK_RAND_CHUNK", 2)
    x, y = np.zeros((4, 1, 8, 8), np.float32), np.zeros(4, np.int64)

    def fake(name, kw, make, x, y, batch_size, first_image=0):
        adv = [name != "pgd200"] * len(x)  # PGD-200 breaks every image PGD-40 leaves robust
        return {"adv_correct": adv, "success": [not a for a in adv], "robust_accuracy": float(np.mean(adv))}

    monkeypatch.setattr(masking_report, "run_attack", fake)
    kwargs = dict(samplers=("ddpm",), n_images=4, square_queries=5, restarts=2, make_classifier=lambda s, g: None,
                  data=(x, y), progress=False)
    full = masking_report.run(str(tmp_path), **kwargs)["samplers"]["ddpm"]
    worst = full["worst_case_aligned"]  # PGD-200 broke every image: nothing survives all the aligned attacks
    assert worst["robust_accuracy"] == 0 and worst["n"] == 4 and len(worst["attacks"]) == 9
    assert "square5" in worst["attacks"] and "large_eps" not in worst["attacks"]
    vs_worst = full["comparisons"][-1]  # AutoAttack-rand left all 4 robust, the worst case none: 4 discordant
    assert (vs_worst["difference"], vs_worst["only_a_robust"], vs_worst["only_b_robust"]) == (1.0, 4, 0)
    assert vs_worst["mcnemar_p"] == pytest.approx(0.125)
    for f in ("ddpm__square5.json", "ddpm__autoattack_rand_eot20__0002-0003.json"):
        os.remove(tmp_path / "parts" / f)
    monkeypatch.setattr(masking_report, "run_attack", lambda *a, **k: pytest.fail("report-only attacked"))
    res = masking_report.run(str(tmp_path), attack=False, **kwargs)["samplers"]["ddpm"]
    names = {c["name"] for c in res["checks"]}
    assert "gradient_free_attack" not in names and "stochastic_autoattack_beyond_aligned" not in names
    assert {"pgd_converged", "bpda_vs_full", "large_eps"} <= names
    assert res["pending"] == ["square5", "autoattack_rand_eot20 images 2-3"]
    assert res["overall"] == "incomplete" and res["overall_of_finished_checks"] == "warn"
    assert res["accuracy"]["autoattack_rand_eot20"]["n"] == 2  # the finished chunk, shown with its n
    assert res["worst_case_aligned"] is None and res["comparisons"] == []  # they wait for all their attacks
    low, high = res["accuracy"]["pgd200"]["interval"]
    assert res["accuracy"]["pgd200"]["robust_accuracy"] == 0.0 and low == 0.0 and 0.4 < high < 0.6  # Wilson, n = 4
    report = open(tmp_path / "report.md").read()
    assert "incomplete (2 attacks or chunks not yet run; checks so far: warn)" in report
    assert "square5, autoattack_rand_eot20 images 2-3" in report


_WORKER = r'''
import json, os, sys, time
import numpy as np
from art_diffpure.reproduce import masking as masking_report

out, me, other = sys.argv[1], sys.argv[2], sys.argv[3]
masking_report.AUTOATTACK_RAND_CHUNK = 1
ran = []

def fake(name, kw, make, x, y, batch_size, first_image=0):
    ran.append(f"{name}@{first_image}")
    time.sleep(0.2)
    adv = [(first_image + i) % 2 == 0 for i in range(len(x))]
    return {"adv_correct": adv, "success": [not a for a in adv], "robust_accuracy": float(np.mean(adv))}

masking_report.run_attack = fake
open(os.path.join(out, me + ".ready"), "w").close()
while not os.path.exists(os.path.join(out, other + ".ready")):  # start together
    time.sleep(0.01)
x, y = np.zeros((6, 1, 8, 8), np.float32), np.zeros(6, np.int64)
res = masking_report.run(out, samplers=("ddpm",), n_images=6, square_queries=5, restarts=2,
                         make_classifier=lambda s, g: None, data=(x, y), progress=False)
print(json.dumps({"ran": ran, "pending": res["samplers"]["ddpm"]["pending"]}))
'''


def test_processes_sharing_an_output_directory_split_the_parts(tmp_path, monkeypatch):
    """Two processes on one ``--out`` each claim a part while they run it: every part runs exactly once."""
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path), me, other], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for me, other in (("a", "b"), ("b", "a"))]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    ran_a, ran_b = (set(o["ran"]) for o in outs)
    assert ran_a and ran_b and not ran_a & ran_b  # both worked, nothing twice
    assert len(ran_a | ran_b) == 10 + 6  # 10 attacks, AutoAttack-rand in 6 one-image chunks
    assert not [f for f in os.listdir(tmp_path / "parts") if f.endswith(".claim")]
    monkeypatch.setattr(masking_report, "AUTOATTACK_RAND_CHUNK", 1)  # the finished directory, read back
    x, y = np.zeros((6, 1, 8, 8), np.float32), np.zeros(6, np.int64)
    res = masking_report.run(str(tmp_path), samplers=("ddpm",), n_images=6, square_queries=5, restarts=2,
                             make_classifier=lambda s, g: None, data=(x, y), progress=False, attack=False)
    assert res["samplers"]["ddpm"]["pending"] == [] and res["samplers"]["ddpm"]["overall"] != "incomplete"
    assert res["samplers"]["ddpm"]["robust_accuracy"]["autoattack_rand_eot20"] == pytest.approx(0.5)


def test_the_checklist_runs_each_distinct_attack_once(monkeypatch):
    """The reference PGD, the restart count 1 and the iteration count max_iter are the same deterministic run."""
    x, y = digits(4)
    classifier = gm.as_classifier(plain_model(), x)
    calls = []
    real = gm.run_pgd

    def counted(*args, **kwargs):
        calls.append((args[3], kwargs.get("max_iter"), kwargs.get("num_random_init", 1),
                      kwargs.get("attack_factory") is not None))
        return real(*args, **kwargs)

    monkeypatch.setattr(gm, "run_pgd", counted)
    gradient_masking_diagnostics(classifier, x, y, eps=0.1, max_iter=4, iterations=(2, 4), restarts=(1, 2),
                                 square_queries=3, large_eps=(0.5,), n_gradient_samples=2)
    assert len(calls) == len(set(calls)) == 5  # reference (= 4 iterations = 1 restart), 2 iterations, 2 restarts,
    #                                            Square, eps 0.5
