"""
Every accuracy of a results dict (``art-diffpure reproduce``'s ``results.json``) with its 95% interval over
images, and every paired comparison the report draws (A - B on the same images, with a paired bootstrap
interval, the exact McNemar test and Holm's adjustment within each family); numpy and scipy only.

:mod:`art_diffpure.reproduce.laws` turns these into the C1..C7 verdicts.
"""
from __future__ import annotations

import functools
import itertools
from typing import Any, Sequence

import numpy as np

from art_diffpure.samplers import SAMPLERS
from art_diffpure.evaluations import statistics as st
from art_diffpure.evaluations.statistics import DEFAULT_N_BOOT

__all__ = ["SAMPLERS", "accuracy_summaries", "paired_comparisons"]

#: The samplers of Tables 1 and 6, in report order.


# ---------------------------------------------------------------------------------------------- helpers
def _rows(reports: Sequence[dict], key: str = "adv_correct", n: int | None = None) -> np.ndarray:
    arr = np.asarray([np.asarray(r[key], dtype=bool) for r in reports], dtype=bool)
    return arr if n is None else arr[:, :n]


def _seed_summary(correct: Any, n_boot: int, seed: int = 0) -> dict[str, Any]:
    return st.seed_summary(correct, n_boot=n_boot, seed=seed).to_dict()


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


# ---------------------------------------------------------------------------------------------- accuracies
def accuracy_summaries(r: dict[str, Any], n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> dict[str, dict[str, Any]]:
    """
    Every accuracy of the report with its 95% interval over images (Wilson for one seed, bootstrap of the per-image
    mean for several, ``n_boot`` resamples, bootstrap seed ``seed``) and, separately, the seed-to-seed sd (ddof=1).
    Keys name the table cell, e.g. ``table2.aligned.robust``.
    """
    out: dict[str, dict[str, Any]] = {}
    _summary = functools.partial(_seed_summary, n_boot=n_boot, seed=seed)
    und = r.get("undefended", {})
    for key, name in (("clean_correct", "clean"), ("adv_correct", "robust")):
        if key in und:
            out[f"undefended.{name}"] = _summary(und[key])
    t2 = r.get("table2", {})
    for mode in ("stochastic", "aligned"):
        if t2.get(mode):
            out[f"table2.{mode}.clean"] = _summary(_rows(t2[mode], "clean_correct"))
            out[f"table2.{mode}.robust"] = _summary(_rows(t2[mode]))
    if t2.get("pgd_eot_stochastic"):
        out["table2.pgd_eot_stochastic.robust"] = _summary(t2["pgd_eot_stochastic"]["adv_correct"])
    runs = _get(r, "table4", "runs") or []
    if runs and all("adv_correct" in run for run in runs):
        out["table4.transfer.robust"] = _summary(_rows(runs))
    for k, row in (r.get("table6") or {}).items():
        if "adv_correct" in row:
            out[f"table6.{k}.robust"] = _summary(row["adv_correct"])
            out[f"table6.{k}.clean"] = _summary(row["clean_correct"])
    t7 = r.get("table7") or {}
    for k in ("ddpm", "reverse"):
        for row in t7.get(k, []):
            if "adv_correct" in row:
                out[f"table7.{k}.t{row['t_star']}.robust"] = _summary(row["adv_correct"])
                out[f"table7.{k}.t{row['t_star']}.clean"] = _summary(row["clean_correct"])
    draws = r.get("repeated_draws")
    if draws:
        out["repeated_draws.mean_over_draws"] = _summary(draws["adv_correct"])
        out["repeated_draws.worst_case"] = _summary(np.asarray(draws["adv_correct"], dtype=bool).all(axis=0))
    return out


# ---------------------------------------------------------------------------------------------- comparisons
def _compare_pair(name: str, family: str, a: Any, b: Any, label_a: str, label_b: str, n_boot: int,
                  seed: int = 0) -> dict[str, Any]:
    res = st.paired_difference(a, b, n_boot=n_boot, seed=seed).to_dict()
    res.update(name=name, family=family, a=label_a, b=label_b)
    return res


def paired_comparisons(r: dict[str, Any], n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> list[dict[str, Any]]:
    """
    Every comparison the report draws, as A - B on the same images: the difference of the (seed-mean) accuracies
    with a paired bootstrap interval over images, the exact McNemar p-value on seed 0, and Holm-adjusted p-values
    within each family (Table 6 samplers, Table 7 t* per sampler). Intervals: ``n_boot`` resamples, bootstrap seed
    ``seed``.
    """
    out: list[dict[str, Any]] = []
    _compare = functools.partial(_compare_pair, n_boot=n_boot, seed=seed)
    t2 = r.get("table2", {})
    if t2.get("aligned") and t2.get("stochastic"):
        al, sto = _rows(t2["aligned"]), _rows(t2["stochastic"])
        out.append(_compare("stochastic vs aligned (robust)", "table2", sto, al, "stochastic PGD", "aligned PGD"))
        out.append(_compare("stochastic vs aligned (clean)", "table2", _rows(t2["stochastic"], "clean_correct"),
                            _rows(t2["aligned"], "clean_correct"), "stochastic clean", "aligned clean"))
        und = r.get("undefended") or {}
        if "adv_correct" in und:
            out.append(_compare("aligned vs undefended (robust)", "table2", al, und["adv_correct"][: al.shape[1]],
                                "aligned PGD", "undefended PGD"))
        eot = t2.get("pgd_eot_stochastic")
        if eot:
            n_e = len(eot["adv_correct"])
            out.append(_compare("PGD-EOT vs PGD (stochastic, same images)", "table2", eot["adv_correct"],
                                sto[:, :n_e], "stochastic PGD-EOT", "stochastic PGD"))
        runs = _get(r, "table4", "runs") or []
        if runs and all("adv_correct" in run for run in runs):
            tr = _rows(runs)
            out.append(_compare("transfer vs stochastic", "table4", tr, sto, "transfer", "stochastic PGD"))
            out.append(_compare("transfer vs aligned", "table4", tr, al, "transfer", "aligned PGD"))
    t6 = r.get("table6") or {}
    names = [k for k in SAMPLERS if k in t6 and "adv_correct" in t6[k]]
    fam = [_compare(f"{a} vs {b} (aligned)", "table6", t6[a]["adv_correct"], t6[b]["adv_correct"], a, b)
           for a, b in itertools.combinations(names, 2)]
    out += _holm(fam)
    t7 = r.get("table7") or {}
    for k in ("ddpm", "reverse"):
        rows = [row for row in t7.get(k, []) if "adv_correct" in row]
        fam = []
        for ra, rb in itertools.combinations(rows, 2):
            a_ok, b_ok = np.atleast_2d(ra["adv_correct"]), np.atleast_2d(rb["adv_correct"])  # (seeds, images)
            n = min(a_ok.shape[1], b_ok.shape[1])  # the first n images are the same images
            fam.append(_compare(f"{k} t*={rb['t_star']} vs t*={ra['t_star']} (aligned)", f"table7 {k}",
                                b_ok[:, :n], a_ok[:, :n], f"t*={rb['t_star']}", f"t*={ra['t_star']}"))
        out += _holm(fam)
    draws = r.get("repeated_draws")
    if draws and t2.get("aligned"):
        worst = np.asarray(draws["adv_correct"], dtype=bool).all(axis=0)
        out.append(_compare("stochastic worst case over draws vs aligned", "repeated_draws", worst,
                            _rows(t2["aligned"])[:, : len(worst)], "worst case over draws", "aligned PGD"))
    return out


def _holm(family: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if family:
        for c, p in zip(family, st.holm([c["test"]["p_value"] for c in family])):
            c["p_holm"] = p
    return family
