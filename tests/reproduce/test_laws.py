"""Verdicts on the paper's laws (art_diffpure.reproduce.laws, .comparisons) from synthetic results dicts."""
import json

import numpy as np
import pytest

from art_diffpure.reproduce import comparisons, laws
from art_diffpure.reproduce.laws import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE


def _correct(acc, n, seed):
    """A correctness vector with exactly round(acc * n) correct images, in a seeded order."""
    k = int(round(acc * n))
    v = np.zeros(n, dtype=bool)
    v[np.random.default_rng(seed).permutation(n)[:k]] = True
    return v.tolist()


def _report(acc, n, seed, clean=1.0):
    return {"n": n, "adv_correct": _correct(acc, n, seed), "clean_correct": _correct(clean, n, seed + 100),
            "robust_accuracy": acc, "clean_accuracy": clean}


def results(n=32, aligned=0.36, stochastic=0.54, transfer=0.54, corr=0.59, snr=0.185, fixed_ratio=0.3,
            vary_ratio=1.5, l2_increase=0.3, points=None, seeds=(0, 1, 2), shared=False):
    """A minimal results dict with per-image outcomes; ``shared``: transfer/aligned reuse stochastic's vectors."""
    rng = np.random.default_rng(0)
    sto = [_report(stochastic, n, 10 + s) for s in seeds]
    al = [dict(r) for r in sto] if shared and aligned == stochastic else [_report(aligned, n, 20 + s) for s in seeds]
    tr = [{"adv_correct": r["adv_correct"]} for r in sto] if shared and transfer == stochastic else \
        [{"adv_correct": _correct(transfer, n, 30 + s)} for s in seeds]
    start = rng.uniform(1.0, 1.2, n)
    per_sample = np.clip(corr + 0.05 * rng.standard_normal(n), -1, 1).tolist()
    init = rng.uniform(0.6, 0.7, 16)
    pts = points or [[0.80, 0.10, "ddpm t*=10"], [0.70, 0.15, "ddpm t*=20"], [0.55, 0.35, "ddpm t*=50"],
                     [0.46, 0.45, "ddpm t*=100"], [0.43, 0.52, "reverse t*=100"], [0.53, 0.30, "ddim t*=100"],
                     [0.46, 0.45, "ddpm t*=100"]]
    from art_diffpure.metrics import fit_compression_law

    kept, _ = laws.distinct_points(pts)
    fit = fit_compression_law([p[0] for p in kept], [p[1] for p in kept]).to_dict()
    table1 = {k: {"mean": {"l2": {"start": float(start.mean()), "end": float(start.mean() + l2_increase)}},
                  "per_image": {"l2": {"start": start.tolist(),
                                       "end": (start + l2_increase + 0.02 * rng.standard_normal(n)).tolist()}}}
              for k in ("ddpm", "reverse", "ddim")}
    return {
        "setting": {"sizes": {"neighbourhood_images": 16}},
        "undefended": {"clean_correct": [True] * n, "adv_correct": [False] * n},
        "table2": {"aligned": al, "stochastic": sto, "pgd_eot_stochastic": _report(stochastic, 8, 40)},
        "table4": {"runs": tr},
        "table5": {"perturbation_fixed_vs_fixed": {"mean": float(np.mean(per_sample)), "per_sample": per_sample},
                   "gradients": {"fixed_vs_fixed": {"mean": float(np.mean(per_sample)), "per_sample": per_sample},
                                 "eot_vs_fixed": None}},
        "table1": table1,
        "table6": {k: {"adv_correct": _correct(a, n, 50 + i), "clean_correct": [True] * n}
                   for i, (k, a) in enumerate((("ddpm", aligned), ("reverse", 0.5), ("ddim", 0.25)))},
        "table7": {k: [{"t_star": t, "adv_correct": _correct(a, n, 60 + t), "clean_correct": [True] * n}
                       for t, a in ((10, 0.1), (50, 0.35), (100, aligned))] for k in ("ddpm", "reverse")},
        "tableS5": {"mean": {"snr": snr}, "std": {"snr": 0.02},
                    "per_image": {"snr": (snr + 0.01 * rng.standard_normal(16)).tolist()}},
        "tableS6": {"mean": {"initial": float(init.mean()), "vary_input_fixed_xi": float(init.mean() * fixed_ratio),
                             "vary_xi_fixed_input": float(init.mean() * vary_ratio)},
                    "per_image": {"initial": init.tolist(),
                                  "vary_input_fixed_xi": (init * (fixed_ratio + 0.01 * rng.standard_normal(16))).tolist(),
                                  "vary_xi_fixed_input": (init * (vary_ratio + 0.02 * rng.standard_normal(16))).tolist()}},
        "fig3b": {"points": kept, "fit": fit},
        "repeated_draws": {"adv_correct": [_correct(stochastic, n, 70 + k) for k in range(10)]},
    }


def _law(r, name):
    return next(law for law in laws.verdicts(r) if law["law"] == name)


# ---------------------------------------------------------------------------------------------- C6
def test_c6_default_report_correlations_do_not_hold():
    # The committed default report: perturbations 0.59, gradients 0.68 -> "does not hold".
    assert _law(results(corr=0.59), "C6")["verdict"] == DOES_NOT_HOLD
    assert _law(results(corr=0.68), "C6")["verdict"] == DOES_NOT_HOLD


def test_c6_small_correlations_hold_and_borderline_is_inconclusive():
    assert _law(results(corr=0.05), "C6")["verdict"] == HOLDS
    r = results(corr=0.05)
    r["table5"]["perturbation_fixed_vs_fixed"]["per_sample"] = [0.0, 0.4] * 8  # mean exactly at the threshold
    assert _law(r, "C6")["verdict"] == INCONCLUSIVE


# ---------------------------------------------------------------------------------------------- C4, C5
def test_c4_large_significant_drop_holds():
    law = _law(results(n=64, aligned=0.2, stochastic=0.7), "C4")
    assert law["verdict"] == HOLDS
    assert law["interval"][0] > 0


def test_c4_no_drop_does_not_hold_and_small_n_is_inconclusive():
    assert _law(results(n=200, aligned=0.5, stochastic=0.5, shared=True), "C4")["verdict"] == DOES_NOT_HOLD
    assert _law(results(n=16, aligned=0.4, stochastic=0.55), "C4")["verdict"] == INCONCLUSIVE


def _c4_from(low, estimate, high, p, monte_carlo=None):
    comparison = {"name": "stochastic vs aligned (robust)", "accuracy_a": 0.578, "accuracy_b": 0.451,
                  "difference": {"estimate": estimate, "low": low, "high": high, "monte_carlo": monte_carlo},
                  "test": {"p_value": p, "b": 32, "c": 14}}
    return laws._c4([comparison])["verdict"]


def test_c4_interval_straddling_the_threshold_is_inconclusive():
    # The committed exploratory report: +12.8 points [+6.5, +19.0], p = 0.011, against a 10-point threshold
    assert _c4_from(0.065, 0.128, 0.190, 0.011) == INCONCLUSIVE
    assert _c4_from(0.105, 0.15, 0.20, 0.011) == HOLDS
    assert _c4_from(0.105, 0.15, 0.20, 0.011, {"low": [0.098, 0.11], "high": [0.19, 0.21]}) == INCONCLUSIVE
    assert _c4_from(0.105, 0.15, 0.20, 0.2) == INCONCLUSIVE  # the interval clears it, the test does not
    assert _c4_from(-0.02, 0.03, 0.095, 0.5) == DOES_NOT_HOLD
    assert _c4_from(-0.02, 0.04, 0.099, 0.5, {"low": [-0.03, -0.01], "high": [0.097, 0.101]}) == INCONCLUSIVE


@pytest.mark.parametrize("check, threshold, inside, outside", [
    (laws._above, 0.5, HOLDS, DOES_NOT_HOLD), (laws._below, 0.5, DOES_NOT_HOLD, HOLDS)])
def test_one_rule_for_every_threshold(check, threshold, inside, outside):
    iv = lambda low, high, mc=None: {"estimate": (low + high) / 2, "low": low, "high": high,  # noqa: E731
                                     "monte_carlo": mc}
    assert check(iv(0.51, 0.7), threshold) == inside
    assert check(iv(0.3, 0.49), threshold) == outside
    assert check(iv(0.45, 0.55), threshold) == INCONCLUSIVE
    assert check(iv(0.3, 0.4999), threshold) == outside
    # the C3 case: the upper end 0.4996 sits within its Monte Carlo band of 0.5
    assert check(iv(0.452, 0.4996, {"low": [0.45, 0.454], "high": [0.4981, 0.5012]}), threshold) == INCONCLUSIVE
    assert check(None, threshold) == INCONCLUSIVE
    assert laws._inside(iv(-0.05, 0.08), 0.1) == HOLDS
    assert laws._inside(iv(-0.05, 0.08, {"low": [-0.06, -0.04], "high": [0.07, 0.11]}), 0.1) == INCONCLUSIVE
    assert laws._inside(iv(0.11, 0.3), 0.1) == DOES_NOT_HOLD


def test_c4_needs_the_mcnemar_test():
    # A drop of 12.5 points on 8 images: the interval may clear 0, but McNemar cannot be significant
    law = _law(results(n=8, aligned=0.375, stochastic=0.5), "C4")
    assert law["verdict"] != HOLDS


def test_c5_equivalence():
    assert _law(results(n=200, transfer=0.54, stochastic=0.54, shared=True), "C5")["verdict"] == HOLDS
    assert _law(results(n=200, transfer=0.95, stochastic=0.3), "C5")["verdict"] == DOES_NOT_HOLD
    assert _law(results(n=32, transfer=0.60, stochastic=0.54), "C5")["verdict"] == INCONCLUSIVE


# ---------------------------------------------------------------------------------------------- C1, C2, C3
def test_c1_per_sampler():
    assert _law(results(l2_increase=0.3), "C1")["verdict"] == HOLDS
    r = results(l2_increase=0.3)
    r["table1"]["ddim"]["per_image"]["l2"]["end"] = (np.asarray(r["table1"]["ddim"]["per_image"]["l2"]["start"])
                                                     - 0.2).tolist()
    law = _law(r, "C1")
    assert law["verdict"] == DOES_NOT_HOLD
    assert law["per_sampler"]["ddpm"]["verdict"] == HOLDS and law["per_sampler"]["ddim"]["verdict"] == DOES_NOT_HOLD
    assert _law(results(l2_increase=0.0), "C1")["verdict"] == INCONCLUSIVE


def test_c2_snr():
    assert _law(results(snr=0.006), "C2")["verdict"] == HOLDS
    law = _law(results(snr=0.185), "C2")
    assert law["verdict"] == DOES_NOT_HOLD and law["snr_below_one"] == HOLDS
    r = results(snr=0.1)
    assert _law(r, "C2")["verdict"] == INCONCLUSIVE
    del r["tableS5"]["per_image"]  # older results: t interval from mean and std
    assert _law(r, "C2")["interval"] is not None


def test_c3_radius_ratios():
    assert _law(results(fixed_ratio=0.24, vary_ratio=3.3), "C3")["verdict"] == HOLDS
    assert _law(results(fixed_ratio=0.8, vary_ratio=3.3), "C3")["verdict"] == DOES_NOT_HOLD
    assert _law(results(fixed_ratio=0.24, vary_ratio=0.6), "C3")["verdict"] == DOES_NOT_HOLD
    assert _law(results(fixed_ratio=0.5, vary_ratio=3.3), "C3")["verdict"] == INCONCLUSIVE


# ---------------------------------------------------------------------------------------------- C7
def test_distinct_points():
    pts = [[0.4, 0.5, "ddpm t*=100"], [0.5, 0.3, "ddim t*=100"], [0.4, 0.5, "ddpm t*=100"]]
    kept, dropped = laws.distinct_points(pts)
    assert [p[2] for p in kept] == ["ddpm t*=100", "ddim t*=100"] and dropped == ["ddpm t*=100"]


def _r2_interval(monkeypatch, low, high, band=None):
    """C7 with its R² interval set to ``[low, high]`` (and an optional Monte Carlo band of each end)."""
    monkeypatch.setattr(laws, "fit_intervals", lambda *a, **k: {"r2": [low, high], "r2_monte_carlo": band})
    r = results()
    r["fig3b"]["adv_correct"] = {p[2]: [True] for p in r["fig3b"]["points"]}
    return _law(r, "C7")


def test_c7_monotone_law_holds_and_warns_on_an_outside_inflection(monkeypatch):
    law = _law(results(), "C7")
    assert law["n_configurations"] == 6  # the duplicate ddpm t*=100 is counted once
    assert law["spearman_rho"] < 0
    assert law["verdict"] == INCONCLUSIVE  # no per-image outcomes: no R² interval, so it cannot hold
    law = _r2_interval(monkeypatch, 0.85, 0.97)
    assert law["verdict"] == HOLDS and law["interval"] == [0.85, 0.97]
    r = results()
    r["fig3b"]["fit"]["params"]["c0"] = -2.78  # the committed default report's fit
    assert any("outside the data" in w for w in _law(r, "C7")["warnings"])


def test_c7_r2_interval_straddling_the_threshold_is_inconclusive(monkeypatch):
    # The committed exploratory report: R² 0.919 [0.746, 0.977], point above 0.8, interval across it
    assert _r2_interval(monkeypatch, 0.746, 0.977)["verdict"] == INCONCLUSIVE
    assert _r2_interval(monkeypatch, 0.3, 0.75)["verdict"] == DOES_NOT_HOLD
    # above the threshold, but the Monte Carlo band of the low end reaches it: inconclusive
    law = _r2_interval(monkeypatch, 0.81, 0.97, band={"low": [0.795, 0.82], "high": [0.96, 0.98]})
    assert law["verdict"] == INCONCLUSIVE


def test_c7_increasing_relation_does_not_hold():
    pts = [[0.8, 0.5, "a"], [0.7, 0.4, "b"], [0.6, 0.3, "c"], [0.5, 0.2, "d"], [0.4, 0.1, "e"]]
    r = results(points=pts)
    assert _law(r, "C7")["verdict"] == DOES_NOT_HOLD


# ---------------------------------------------------------------------------------------------- comparisons
def test_comparisons_cover_every_table():
    comps = comparisons.paired_comparisons(results())
    names = {c["name"] for c in comps}
    for name in ("stochastic vs aligned (robust)", "stochastic vs aligned (clean)", "aligned vs undefended (robust)",
                 "transfer vs stochastic",
                 "transfer vs aligned", "PGD-EOT vs PGD (stochastic, same images)", "ddpm vs reverse (aligned)",
                 "ddpm vs ddim (aligned)", "reverse vs ddim (aligned)", "ddpm t*=50 vs t*=10 (aligned)",
                 "reverse t*=100 vs t*=50 (aligned)", "stochastic worst case over draws vs aligned"):
        assert name in names, name
    assert all("p_holm" in c for c in comps if c["family"].startswith(("table6", "table7")))
    assert all(c["p_holm"] >= c["test"]["p_value"] for c in comps if "p_holm" in c)


def test_accuracies_and_evaluate_are_json():
    r = results()
    ev = laws.evaluate(r)
    acc = ev["accuracies"]
    assert acc["table2.aligned.robust"]["n_seeds"] == 3 and acc["table2.aligned.robust"]["seed_sd"] is not None
    assert acc["table6.ddim.robust"]["interval"]["method"] == "Wilson score"
    assert acc["repeated_draws.worst_case"]["mean"] <= acc["repeated_draws.mean_over_draws"]["mean"]
    assert [law["law"] for law in ev["laws"]] == ["C1", "C2", "C3", "C4", "C5", "C6", "C7"]
    assert all(law["verdict"] in (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE) for law in ev["laws"])
    assert ev["thresholds"]["C6_MAX_CORRELATION"] == laws.C6_MAX_CORRELATION
    text = json.dumps(ev)
    assert json.loads(text) == ev


@pytest.mark.parametrize("missing", ["table1", "tableS5", "tableS6", "table5", "fig3b"])
def test_missing_tables_leave_their_law_out(missing):
    r = results()
    del r[missing]
    assert len(laws.verdicts(r)) == 6


def test_c7_fit_intervals_from_a_bootstrap_over_images(monkeypatch):
    monkeypatch.setattr(laws, "N_BOOT_FIT", 400)  # the plumbing, not the Monte Carlo precision of 2000 refits
    r = results(n=32)
    kept = r["fig3b"]["points"]
    rng = np.random.default_rng(1)
    r["fig3b"]["adv_correct"] = {p[2]: (rng.random(32) < p[1]).tolist() for p in kept}
    law = _law(r, "C7")
    boot = law["fit_intervals"]
    assert boot["n_boot"] == laws.N_BOOT_FIT and boot["n_images"] == 32
    assert set(boot["params"]) == set(law["fit_params"])
    assert boot["r2"][0] <= boot["r2"][1] <= 1.0
    assert laws.fit_intervals(kept, {}) is None


def test_c7_fit_intervals_average_the_seeds_of_each_image():
    """With (seeds, images) outcomes the bootstrap refits each image's seed mean: identical seeds change nothing,
    and a second seed that differs moves the intervals."""
    r = results(n=32)
    kept = r["fig3b"]["points"]
    rng = np.random.default_rng(1)
    one = {p[2]: (rng.random(32) < p[1]).tolist() for p in kept}
    twice = {k: [v, v] for k, v in one.items()}
    assert laws.fit_intervals(kept, twice) == laws.fit_intervals(kept, one)
    other = {k: [v, (rng.random(32) < 0.5).tolist()] for k, v in one.items()}
    assert laws.fit_intervals(kept, other)["r2"] != laws.fit_intervals(kept, one)["r2"]


def test_t_star_comparisons_pair_every_seed_on_the_same_images():
    r = results(n=16)
    for row in r["table7"]["ddpm"]:
        row["adv_correct"] = [row["adv_correct"], row["adv_correct"], row["adv_correct"]]
    comps = [c for c in comparisons.paired_comparisons(r) if c["family"] == "table7 ddpm"]
    assert comps and all(c["n_images"] == 16 and c.get("tests_per_seed") and len(c["tests_per_seed"]) == 3
                         for c in comps)


@pytest.mark.slow  # five full judgements of the committed report (C7's 2000 refits each): about 3 minutes
def test_committed_report_verdicts_do_not_depend_on_the_bootstrap_seed():
    import os

    root = os.path.join(os.path.dirname(__file__), "..", "..", "docs")
    for name in ("digits-report", "digits-report-confirmatory"):
        path = os.path.join(root, name, "results.json")
        if not os.path.exists(path):
            assert name == "digits-report-confirmatory", path  # the exploratory report is always there
            continue
        with open(path) as handle:
            r = json.load(handle)
        res = laws.stability(r)
        assert res["stable"], res["verdicts"]
        assert {law: v[0] for law, v in res["verdicts"].items()} == {law["law"]: law["verdict"] for law in r["laws"]}
