"""
The evaluation of a user's own models that ``art-diffpure evaluate`` runs: its units of work, their assembly and
its report.

The work is cut into *units*, one batch of samples under one randomness mode and one base seed
(:func:`make_units`), each attacked and tested by :func:`run_unit` through
:func:`~art_diffpure.evaluations.aligned.evaluate_aligned`. Every source of randomness of a unit is seeded from the
unit itself (the stochastic mode's generator too), so a resumed run's results equal an uninterrupted run's.
:func:`assemble` joins the units into per-mode, per-seed runs with intervals and paired comparisons;
:func:`markdown` and :func:`figure` render them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from art_diffpure.attacks.registry import ATTACKS, NamedAttack

if TYPE_CHECKING:  # pragma: no cover
    from art.estimators.classification import PyTorchClassifier

__all__ = ["COMMAND", "Plan", "Unit", "assemble", "figure", "make_units", "markdown", "run_unit", "versions"]

#: The command whose report this is.
COMMAND = "art-diffpure evaluate"


@dataclass
class Plan:
    """The validated attack settings of a run."""

    attack: NamedAttack
    options: dict[str, Any]  # resolved: eps, norm, eps_step, rel_step, max_iter, restarts, eot (those it takes)
    modes: list[str]
    seeds: list[int]

    def jsonable_options(self) -> dict[str, Any]:
        out = dict(self.options)
        if "norm" in out:
            out["norm"] = "inf" if np.isinf(out["norm"]) else int(out["norm"])  # as --norm spells it
        return out


# ---------------------------------------------------------------------------------------------- units of work
@dataclass(frozen=True)
class Unit:
    """One batch of samples (positions into the data) under one randomness mode and base seed."""

    mode: str
    seed: int
    positions: tuple[int, ...]
    first_id: int
    last_id: int

    @property
    def name(self) -> str:
        return f"{self.mode} seed {self.seed} samples {self.first_id}-{self.last_id}"


def make_units(plan: Plan, sample_ids: np.ndarray, positions: np.ndarray, batch_size: int) -> list[Unit]:
    """The units over ``positions`` (a contiguous shard starting on a batch boundary), mode-major."""
    out = []
    for mode in plan.modes:
        for seed in plan.seeds:
            for start in range(0, len(positions), batch_size):
                pos = positions[start:start + batch_size]
                out.append(Unit(mode, int(seed), tuple(int(p) for p in pos), int(sample_ids[pos[0]]),
                                int(sample_ids[pos[-1]])))
    return out


def run_unit(unit: Unit, plan: Plan, classifier: "PyTorchClassifier", x: np.ndarray, y: np.ndarray,
             sample_ids: np.ndarray, batch_size: int, test_draws: int) -> dict[str, Any]:
    """
    Attack one unit and test it; the per-sample outcomes, the attack's randomness audit and its configuration
    (no wall times: they go to ``timings.json``).
    """
    from art_diffpure.attacks.randomness_aligned import RandomnessAlignedAttack
    from art_diffpure.evaluations.aligned import evaluate_aligned
    from art_diffpure.evaluations.draws import evaluate_draws
    from art_diffpure.purifier import find_purifier
    from art_diffpure.randomness import FRESH_GENERATOR_TAG, seed_hash

    pos = np.asarray(unit.positions)
    xb, yb, ids = x[pos], y[pos], sample_ids[pos]
    purifier = find_purifier(classifier, required=True)
    # The stochastic mode's fresh noise comes from the purifier's own generator: seeded from the unit alone, so
    # a resumed run draws what an uninterrupted one draws.
    purifier.reseed_fresh(seed_hash(unit.seed, unit.first_id, FRESH_GENERATOR_TAG))
    o = plan.options
    attack = RandomnessAlignedAttack(
        classifier, attack=lambda c: plan.attack.build(c, o, unit.seed, batch_size), randomness=unit.mode,
        eot_samples=1 if plan.attack.own_draws else o["eot"], seed=unit.seed, batch_size=batch_size, verbose=False)
    report = evaluate_aligned(attack, xb, yb, sample_ids=ids).to_dict()
    x_adv = attack.last_x_adv
    delta = (x_adv.astype(np.float64) - xb).reshape(len(xb), -1)
    draws = None  # named per-sample test draws: the same draw whatever the batch or shard
    if test_draws:
        draws = evaluate_draws(classifier, x_adv, yb, seed=unit.seed, n_draws=test_draws, vote=test_draws,
                               sample_ids=ids, batch_size=batch_size)
    return {
        "sample_ids": ids.tolist(),
        "labels": yb.tolist(),
        "clean_pred": report["clean_pred"],
        "adv_pred": report["adv_pred"],
        "clean_correct": report["clean_correct"],
        "adv_correct": report["adv_correct"],
        "success": report["success"],
        "attack_seeds": report["attack_seeds"],
        "test_seeds": report["test_seeds"],
        "perturbation_linf": np.abs(delta).max(axis=1).tolist(),
        "perturbation_l2": np.linalg.norm(delta, axis=1).tolist(),
        "test_draws_pred": [] if draws is None else draws.predictions.tolist(),
        "test_draws_seeds": [] if draws is None else draws.seeds,
        "audit": {"samples": [unit.first_id, unit.last_id], "identification": report["identification"],
                  **report["audit"]},
        "config": report["config"],
    }


# ---------------------------------------------------------------------------------------------- assembly
def assemble(plan: Plan, units: Sequence[Unit], parts: dict[str, dict[str, Any]], n: int,
             test_draws: int, vote: int = 0) -> dict[str, Any]:
    """The ``runs`` (mode -> seed -> per-sample lists in data order, audits, config) and their summaries."""
    from art_diffpure.evaluations import statistics
    from art_diffpure.evaluations.draws import DrawEvaluation

    per_sample = ("sample_ids", "labels", "clean_pred", "adv_pred", "clean_correct", "adv_correct", "success",
                  "attack_seeds", "test_seeds", "perturbation_linf", "perturbation_l2")
    runs: dict[str, dict[str, Any]] = {}
    for mode in plan.modes:
        runs[mode] = {}
        for seed in plan.seeds:
            mine = [u for u in units if u.mode == mode and u.seed == seed]
            run: dict[str, Any] = {k: [] for k in per_sample}
            draws = [[] for _ in range(test_draws)]
            audits = []
            for u in mine:
                part = parts[u.name]
                for k in per_sample:
                    run[k].extend(part[k])
                for k in range(test_draws):
                    draws[k].extend(part["test_draws_pred"][k])
                audits.append(part["audit"])
            assert len(run["sample_ids"]) == n, (mode, seed, len(run["sample_ids"]), n)
            run["clean_accuracy"] = float(np.mean(run["clean_correct"]))
            run["robust_accuracy"] = float(np.mean(run["adv_correct"]))
            labels = np.asarray(run["labels"])
            run["test_draws"] = {"seeds": parts[mine[0].name]["test_draws_seeds"], "adv_pred": draws,
                                 "adv_correct": (np.asarray(draws, dtype=np.int64).reshape(test_draws, n)
                                                 == labels).tolist()}
            run["audit"] = audits
            run["audit_ok"] = all(a["attack"]["ok"] and a["test"]["ok"] for a in audits)
            run["config"] = parts[mine[0].name]["config"]
            runs[mode][str(seed)] = run
    summary: dict[str, Any] = {}
    for mode, by_seed in runs.items():
        seeds = [by_seed[str(s)] for s in plan.seeds]
        clean = np.asarray([r["clean_correct"] for r in seeds], dtype=bool)
        adv = np.asarray([r["adv_correct"] for r in seeds], dtype=bool)
        entry = {"clean": statistics.seed_summary(clean).to_dict(), "robust": statistics.seed_summary(adv).to_dict(),
                 "audit_ok": all(r["audit_ok"] for r in seeds),
                 "rows_purified": sum(a["attack"]["rows_purified"] + a["test"]["rows_purified"]
                                      for r in seeds for a in r["audit"]),
                 "median_perturbation_l2": float(np.median([r["perturbation_l2"] for r in seeds])),
                 "max_perturbation_linf": float(np.max([r["perturbation_linf"] for r in seeds]))}
        if test_draws:
            d = np.asarray([r["test_draws"]["adv_correct"] for r in seeds], dtype=bool)  # (seeds, draws, n)
            entry["test_draws"] = {
                "n_draws": test_draws, "n_images": n,
                "mean_over_draws": statistics.bootstrap_interval(d.mean(axis=(0, 1))).to_dict(),
                "worst_case": statistics.seed_summary(d.all(axis=1)).to_dict()}
            if vote:
                voted = [DrawEvaluation(np.asarray(r["test_draws"]["adv_pred"], dtype=np.int64), np.asarray(r["labels"]),
                                        r["test_draws"]["seeds"], test_draws, vote).per_image()["majority_vote"]
                         for r in seeds]
                entry["test_draws"]["majority_vote"] = dict(statistics.seed_summary(np.asarray(voted)).to_dict(),
                                                            vote=vote)
        summary[mode] = entry
    comparisons = {}
    for i, a in enumerate(plan.modes):
        for b in plan.modes[i + 1:]:
            ca = [runs[a][str(s)]["adv_correct"] for s in plan.seeds]
            cb = [runs[b][str(s)]["adv_correct"] for s in plan.seeds]
            comparisons[f"{a} - {b}"] = statistics.paired_difference(ca, cb).to_dict()
    return {"runs": runs, "summary": summary, "comparisons": comparisons}


def versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers."""
    import art
    import diffusers
    import torch

    import art_diffpure

    return {"art_diffpure": art_diffpure.__version__, "adversarial-robustness-toolbox": art.__version__,
            "torch": torch.__version__, "diffusers": diffusers.__version__, "numpy": np.__version__}


def markdown(results: dict[str, Any]) -> str:
    """``report.md``: one row per randomness mode, accuracies with their 95% intervals over images."""
    from art_diffpure.reproduce import render as rp

    s = results["settings"]
    o = s["attack_options"]
    attack = ATTACKS[s["attack"]]
    lines = [f"# {COMMAND}: {s['attack']} against {s['classifier']} behind {s['diffusion']}", "",
             f"- data: {s['data']}, {s['n_images']} images from offset {s['offset']} (sample ids "
             f"{s['offset']}..{s['offset'] + s['n_images'] - 1}; sha256 {s['data_sha256']})",
             f"- purifier: sampler {s['sampler']}, t* = {s['t_star']}, gradient {s['gradient']}",
             f"- attack: {attack.runs}; " + ", ".join(f"{k} = {v:.6g}" if isinstance(v, float) else f"{k} = {v}"
                                                      for k, v in sorted(o.items())),
             f"- randomness modes: {', '.join(s['randomness'])}; base seeds {', '.join(map(str, s['seeds']))}; batch "
             f"size {s['batch_size']}; device {s['device']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()), ""]
    if not attack.bounded:
        lines += [f"{s['attack']} is a minimum-norm attack: its examples are not confined to an eps-ball, so the "
                  "robust accuracy below is the accuracy on its examples whatever their size; read it with their "
                  "median L2 perturbation.", ""]
    header = ["randomness", "clean accuracy [95% CI]", "robust accuracy [95% CI]", "max Linf", "median L2",
              "audit"]
    draws = any("test_draws" in v for v in results["summary"].values())
    voted = any("majority_vote" in v.get("test_draws", {}) for v in results["summary"].values())
    if draws:
        header[4:4] = ["mean over test draws [95% CI]", "worst case over draws [95% CI]"]
    if voted:
        header[6:6] = ["majority vote [95% CI]"]
    rows = []
    for mode, v in results["summary"].items():
        row = [mode, rp.fmt_accuracy(v["clean"]), rp.fmt_accuracy(v["robust"]), rp.fmt(v["max_perturbation_linf"], 4),
               rp.fmt(v["median_perturbation_l2"], 4),
               f"ok ({v['rows_purified']} rows)" if v["audit_ok"] else "NOT OK (see results.json)"]
        if draws:
            t = v["test_draws"]
            row[4:4] = [f"{100 * t['mean_over_draws']['estimate']:.1f}% "
                        f"{rp.fmt_interval(t['mean_over_draws'], percent=True)}", rp.fmt_accuracy(t["worst_case"])]
            if voted:
                row[6:6] = [rp.fmt_accuracy(t["majority_vote"])]
        rows.append(row)
    lines += [rp.table(header, rows), "",
              "Intervals are over images: Wilson for one seed, else the percentile bootstrap over images of each "
              "image's mean over seeds; the seed sd (several seeds) is the seed-to-seed spread. The audit counts "
              "every row the purifier saw under the intended randomness (per batch in results.json)."]
    if draws:
        lines += ["", f"Test draws: every adversarial example is also classified under N = {s['test_draws']} named "
                  "draws of the purifier's noise per sample (base seed s + 3000000019 + k, never an attack draw; "
                  f"n = {s['n_images']} images); worst case = correct under every draw"
                  + (f"; majority vote = the most frequent label of the first K = {s['vote']} draws." if voted else ".")]
    if results["comparisons"]:
        lines += ["", "## Paired differences of robust accuracy (same images)", "",
                  rp.table(["modes", "difference [95% CI]", "exact McNemar p (first seed)", "p per seed"],
                           [[k, f"{100 * v['difference']['estimate']:+.1f} points "
                                f"{rp.fmt_interval(v['difference'], percent=True, signed=True)}",
                             rp.fmt(v["test"]["p_value"], 3),
                             ", ".join(rp.fmt(t["p_value"], 3) for t in v.get("tests_per_seed") or []) or "–"]
                            for k, v in results["comparisons"].items()]),
                  "", "The difference is of the seed-mean accuracies (paired bootstrap over images); McNemar tests one "
                      "seed pair at a time, since seeds re-use the same images."]
    lines += ["", "![robust accuracy per randomness mode](robustness.png)", ""]
    return "\n".join(lines)


def figure(results: dict[str, Any], out: str) -> str:
    """``robustness.png``: robust (and clean) accuracy per randomness mode with the 95% intervals."""
    from art_diffpure.reproduce import render as rp

    summary = results["summary"]
    modes = list(summary)
    fig, ax = rp.new_figure()
    pos = np.arange(len(modes))
    for key, offset, label in (("clean", -0.2, "clean"), ("robust", 0.2, "robust")):
        est = np.array([summary[m][key]["mean"] for m in modes])
        low = np.array([summary[m][key]["interval"]["low"] for m in modes])
        high = np.array([summary[m][key]["interval"]["high"] for m in modes])
        ax.bar(pos + offset, est, width=0.38, yerr=[est - low, high - est], capsize=4, label=label)
    ax.set_xticks(pos, modes)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (95% CI over images)")
    s = results["settings"]
    ax.set_title(f"{s['attack']}, t* = {s['t_star']}, {s['n_images']} images")
    ax.legend()
    return rp.save_figure(fig, out, "robustness.png")

