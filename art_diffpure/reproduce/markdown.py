"""
``report.md`` from plain results: :func:`markdown` (digits, cifar10) and :func:`imagenet_markdown` put the title,
the verdicts on the paper's laws, the paired comparisons, the tables (:mod:`~art_diffpure.reproduce.sections`),
the disclosure, the figures and the timings together. No model calls and no files here.
"""
from __future__ import annotations

from typing import Any

from art_diffpure.reproduce import render as rp
from art_diffpure.reproduce import sections as sec
from art_diffpure.reproduce.presets import REPEATED_DRAW_RULE, REPEATED_DRAWS
from art_diffpure.reproduce.sections import acc_cell

__all__ = ["imagenet_markdown", "markdown"]


def _md_header(r: dict[str, Any]) -> list[str]:
    """Title, the setting, how to read the accuracies, the setting's notes and the undefended classifier."""
    st = r["setting"]
    lines = [f"# art-diffpure reproduce: preset `{st['preset']}`", "",
             f"Linf eps = {st['eps']:.4g}, t* = {st['t_star']}, gradient = {st['gradient']}, "
             f"PGD-{st['sizes']['max_iter']} with step {st['rel_step']:.4g} x eps and one random start, "
             f"{st['sizes']['n_images']} images, base seeds {list(st['sizes']['seeds'])}.",
             "The paper's CIFAR-10 numbers (Liu & Wei 2025) stand beside ours for reference; the settings differ "
             "(data set, models, eps), so compare directions, not values.",
             "Accuracies are given as `mean% [95% interval over images]`: the Wilson interval for one seed, for "
             "several seeds on the same images the percentile bootstrap over images of each image's mean "
             "correctness; `seed sd` (ddof=1) is the seed-to-seed spread on the same images, a different and smaller "
             "quantity.", ""]
    lines += [f"- {note}" for note in st["notes"]]
    lines += ["", f"Undefended classifier: clean {acc_cell(r, 'undefended.clean')}, PGD robust "
              f"{acc_cell(r, 'undefended.robust')}.", ""]
    return lines


# The full-strength gradient-masking run on the digits test images 0-127 (docs/masking-report-128/results.json,
# aligned randomness, base seed 0, eps 0.2, t* = 100): robust accuracy under PGD-40 and the per-image worst case over
# its 9 aligned attacks, and each sampler's overall verdict.
MASKING_128 = {"ddpm": (0.438, 0.258, "fail"), "reverse": (0.570, 0.352, "fail"), "ddim": (0.383, 0.219, "fail")}


def _md_caveat(r: dict[str, Any]) -> list[str]:
    """Where every aligned PGD figure of a digits report stands: an upper bound, with the converged figure."""
    st = r["setting"]
    if st["preset"] != "digits":
        return []
    on_first_128 = not any("CONFIRMATORY" in n for n in st.get("notes", [])) and st["sizes"]["n_images"] <= 128
    rows = ", ".join(f"{k} {100 * a:.1f}% → {100 * w:.1f}% ({v})" for k, (a, w, v) in MASKING_128.items())
    text = (f"**Caveat on every aligned PGD figure below** (Tables 2, 6 and 7, laws C4 and C7, Fig. 3b, the curves): "
            "each is an upper bound on aligned robust accuracy. On these models PGD-40 has not converged: the "
            "full-strength checks (`art-diffpure masking`, `docs/masking-report-128/`, test images 0-127, seed 0) "
            "show PGD-200 and APGD-CE+DLR breaking 17-26 more of the 128 images on every sampler, none the other "
            f"way. PGD-40 → worst case over the 9 full-strength aligned attacks, with each sampler's overall masking "
            f"verdict: {rows}.")
    text += (" These are the same images as this report's Table 6 (seed 0)." if on_first_128 else
             " This report's images are not those: no full-strength run exists for them.")
    return ["", text, ""]


def _md_laws(r: dict[str, Any]) -> list[str]:
    """The C1..C7 table, with the warnings and the two side statements the paper's Table 2 invites."""
    out = ["## The paper's laws: verdicts", "",
           "Each threshold is a constant in `art_diffpure/reproduce/laws.py` (when it was written: see Disclosure). "
           "One rule for every law: *holds*: the 95% interval (and for accuracy comparisons the exact McNemar test, "
           "seed 0; for C7 Spearman's test) clears the threshold in the paper's direction; *does not hold*: the "
           "interval lies entirely on the other side; *inconclusive at this n*: anything else. A point estimate "
           "never decides, and a bootstrap interval's end counts with its Monte Carlo band (a 95% band for where "
           "the end lies with unlimited resamples): a threshold inside that band is inconclusive, so no verdict "
           "depends on the bootstrap's seed. Each row says how many images it rests on.", ""]
    rows = []
    for law in r.get("laws", []):
        iv = law.get("interval")
        percent = law["law"] in ("C4", "C5")
        rows.append([law["law"], law["claim"] + f" ({law['source']})", law["value"],
                     rp.fmt_interval(iv, percent=percent, signed=percent) if iv else "see value",
                     law["threshold"], f"**{law['verdict']}**", law["paper"]])
    out.append(rp.table(["Law", "Claim", "Value (ours)", "95% interval", "Threshold", "Verdict", "Paper (CIFAR-10)"],
                        rows))
    for law in r.get("laws", []):
        if law["law"] == "C2" and law.get("snr_below_one") == "holds":
            out.append("- C2: SNR < 1 (internal randomness dominates the input's) does hold; \"far below\" "
                       "(an order of magnitude) is what the verdict tests.")
        for w in law.get("warnings", []) or []:
            out.append(f"- {law['law']} warning: {w}")
    comps = {c["name"]: c for c in r.get("statistics", {}).get("comparisons", [])}
    for name, text in (("PGD-EOT vs PGD (stochastic, same images)", "PGD-EOT vs PGD on the same images"),
                       ("stochastic vs aligned (clean)", "Aligned clean-accuracy drop (stochastic clean minus aligned "
                                                         "clean, same images)")):
        c = comps.get(name)
        if c:
            out.append(f"- {text}: {_cmp_text(c)}.")
    out += _md_post_hoc(r)
    from art_diffpure.reproduce.laws import ALPHA

    for family, what in (("table6", "Sampler ranking (Table 6)"), ("table7 ddpm", "t* sweep, DDPM (Table 7)"),
                         ("table7 reverse", "t* sweep, reverse (Table 7)")):
        fam = [c for c in comps.values() if c["family"] == family]
        if fam:
            sig = [c["name"] for c in fam if c.get("p_holm", 1.0) < ALPHA]
            out.append(f"- {what}: " + (f"significant after Holm over its {len(fam)} pairs: {', '.join(sig)}."
                                        if sig else f"no pairwise difference in aligned robust accuracy is "
                                        f"significant (exact McNemar, Holm over its {len(fam)} pairs): the "
                                        "ordering is not established at this n."))
    return out


def _md_post_hoc(r: dict[str, Any]) -> list[str]:
    """Analyses added after the pre-registration: labelled post hoc, beside the verdicts, changing none."""
    ph = r.get("post_hoc") or {}
    if not ph:
        return []
    out = ["", "**Post hoc** (analyses added on 2026-12-04, after the confirmatory run was pre-registered; they "
           "change no verdict above):", ""]
    shape = ph.get("compression_law_shape")
    if shape:
        out.append(f"- C7's shape: {shape['statement']}")
    claims = ph.get("claims") or []
    if claims:
        out += ["", rp.table(["Claim", "Value (ours)", "Threshold", "Verdict"],
                             [[c["claim"], c["value"], c["threshold"], f"**{c['verdict']}**"] for c in claims])]
    return out


def _cmp_text(c: dict[str, Any]) -> str:
    """One paired comparison in words: both accuracies, the difference with its interval, the McNemar test."""
    d = c["difference"]
    return (f"{100 * c['accuracy_a']:.1f}% vs {100 * c['accuracy_b']:.1f}%, difference {100 * d['estimate']:+.1f} "
            f"points {rp.fmt_interval(d, percent=True, signed=True)}, exact McNemar p = {c['test']['p_value']:.3g} "
            f"(seed 0: b = {c['test']['b']}, c = {c['test']['c']}, n = {c['test']['n']})")


def _md_comparisons(r: dict[str, Any]) -> list[str]:
    """The paired comparisons (same images): differences with bootstrap intervals, McNemar and Holm p-values."""
    comps = r.get("statistics", {}).get("comparisons", [])
    if not comps:
        return []
    rows = []
    for c in comps:
        d, t = c["difference"], c["test"]
        per_seed = c.get("tests_per_seed")
        rows.append([c["name"], c["n_images"], f"{100 * c['accuracy_a']:.1f}%", f"{100 * c['accuracy_b']:.1f}%",
                     f"{100 * d['estimate']:+.1f} {rp.fmt_interval(d, percent=True, signed=True)}",
                     f"{t['b']} / {t['c']}", f"{t['p_value']:.3g}",
                     f"{c['p_holm']:.3g}" if "p_holm" in c else "–",
                     ", ".join(f"{p['p_value']:.3g}" for p in per_seed) if per_seed else "–"])
    return ["", "## Paired comparisons (same images)", "",
            "A − B in accuracy points. The difference is of the seed-mean accuracies, with a 95% paired percentile "
            f"bootstrap interval over images ({comps[0]['difference']['method'].split('(')[-1].rstrip(')')}). "
            "The test is the exact McNemar test (two-sided exact binomial on the discordant pairs b: A right and B "
            "wrong, c: the reverse) on seed 0; seeds are not pooled into one test because they re-use the same "
            "images, so pooled discordant pairs are not independent and the p-value would be too small. With several "
            "seeds on both sides the per-seed McNemar p-values are listed too. Holm adjusts within a family (Table 6 "
            "samplers; Table 7 t* per sampler).", "",
            rp.table(["Comparison (A vs B)", "n", "A", "B", "A − B [95%]", "b / c (seed 0)", "McNemar p",
                      "Holm p", "per-seed p"], rows)]


def _md_disclosure(r: dict[str, Any]) -> list[str]:
    """What was fixed before the run, what was changed after seeing results, and why."""
    st = r["setting"]
    quick = any(note.startswith("--quick") for note in st.get("notes", []))
    confirmatory = any("CONFIRMATORY" in note for note in st.get("notes", []))
    images = ("the images (test images 128-383, never used by any earlier run)" if confirmatory else
              "the images (the first n of the fixed digits test split)")
    draws = r.get("repeated_draws") or {"n_draws": REPEATED_DRAWS, "draw_rule": REPEATED_DRAW_RULE}
    lines = ["", "## Disclosure: what was chosen when, and why", "",
             f"- **Fixed before any run of this report**: {images}, "
             "the base seeds, every size (`Sizes` presets in `art_diffpure/reproduce/presets.py`), the attack "
             "(PGD, Linf, one random start, step keeping 4/3 eps of total travel), the number of repeated test draws "
             f"({sec.draw_rule_text(draws, brief=True)}) and every threshold of the "
             "verdicts (`art_diffpure/reproduce/laws.py`). Nothing in the run reads its own results to change a setting.",
             "- **eps**: 0.2, by the rule stated when the models were trained (2026-11-21, "
             "`art_diffpure/weights/provenance.json`): the smallest budget of the sweep at which undefended PGD-40 "
             "leaves at most 10% accuracy (2.2% at 0.2).",
             "- **A first setting was tried and dropped.** The first session fixed, before measuring: the first 60 test "
             "images, t* = 20, Linf eps = 0.1, PGD-10 (step 0.025, no random start), seed 0. It gave aligned 80.0% vs "
             "stochastic 71.7% (one fresh test draw), transfer 81.7%, undefended 58.3%: aligned was NOT below "
             "stochastic, the paper's relation did not hold there (re-testing both attacks' examples under 5 fresh "
             "draws: 79.0% vs 78.7%). The setting then moved to the paper's t* = 100 (DiffPure's t* = 0.1) and the "
             "eps = 0.2 of the pre-stated rule above; there (n = 60, PGD-10) aligned was 33.3% vs stochastic 46.7%. "
             "That move was made after seeing the t* = 20 result, so the t* = 100 setting is not a pre-registered "
             "test of the relation; this record is kept in `tests/attacks/test_randomness_aligned.py` and commit b83c973.",
             "- **Sizes** (32 images, seeds 0, 1, 2, PGD-40, EOT-15 on 8 images, the t* sweep, the diagnostics' "
             "sizes) were set by the 2-core CPU budget of the default run (commit 433340b). On 2026-12-01 (fourth "
             "session), before this run and for cost reasons only, they became: 128 images for Tables 2, 4, 6 and 1 "
             "(the issue asked for 128 images with three seeds), EOT-15 on 16 images, and three seeds for every "
             "Fig. 3b / Table 7 configuration on the first 32 images (it was one seed). The budget came from "
             "internal batches of 128 images (about 1.5x cheaper per image than 32 on this CPU, measured) and from "
             "reusing the Table 2 / Table 6 attacks for Table 7 at the default t* (the aligned attack is per "
             "sample: the first rows of a larger run are the same attack on those rows, bit-identical to a separate "
             "run with the same batching, tested), and from splitting a batch with near-duplicate digits into "
             "groups of samples more than 2 eps apart instead of attacking it one sample at a time (the first "
             "attempt of this run fell back to one sample at a time for the 128 images, 1185 s per attack instead "
             "of about 100 s, and was stopped and fixed before any result was read). Sizes have not been changed "
             "in response to results.",
             "- **Thresholds** of C1–C7 were written on 2026-12-01, after the earlier default report (n = 32, commit "
             "d8c1dd1) had been read, including its Table 5 correlations (0.59, 0.68), SNR 0.185, Table S6 radii "
             "(0.657 initial, 0.307 fixed xi, 0.733 varying xi) and Table 2 numbers: C3's 0.5 was set after a fixed-xi "
             "ratio of 0.467 had been seen, C7's R² 0.8 after R² 0.879, C4's 10 points after a 17.7-point drop. Each "
             "threshold follows a stated reading of the paper's claim (the comments in `laws.py`), but they were not "
             "written blind, and the n = 128 exploratory report was not the first run they were applied to: an "
             "n = 32 report with the same thresholds had C4 inconclusive (McNemar p = 0.092).",
             "- **The verdict rule** stated above (a law holds only when its 95% interval clears the threshold) was "
             "the stated rule from the start, but until 2026-12-04 the code compared the point estimate for C4 and "
             "C7 and ignored the bootstrap's Monte Carlo error; both were corrected then, and the n = 128 "
             "exploratory report was judged again from the same per-image outcomes (`art-diffpure reproduce "
             "--rejudge`): C3, C4 and C7 moved from holds to inconclusive. C7's former second threshold (R² < 0.5: "
             "does not hold) was replaced by the same interval rule (R² interval below 0.8).",
             "- **Exploratory and confirmatory**: the default report (images 0-127) is exploratory: its thresholds "
             "were chosen after looking at its predecessors. The pre-registered test is the confirmatory run "
             "(`art-diffpure reproduce --confirmatory`, images 128-383, settings, thresholds and analyses frozen in "
             "`docs/preregistration.md` and committed before it ran).",
             "- **Fig. 3b** fits each distinct configuration once, each with every base seed on the same first "
             "images (until 2026-12-01 one seed per configuration, and DDPM / reverse at the default t* were "
             "counted twice before that was fixed)."]
    if quick:
        lines.append("- **--quick** was changed on 2026-12-01 from a t* = 20 smoke run (8 images, PGD-5: numbers "
                     "that meant nothing) to this small t* = 100 run, so that Tables 2 and 4 carry intervals that "
                     "say something; it is still a small run.")
    return lines


def _md_timings(timings: dict[str, float]) -> list[str]:
    """Seconds per step (and how to read them when several processes ran)."""
    procs = int(timings.get("processes", 1))
    lines = ["", "## Timings (this machine)", ""]
    if procs > 1:
        lines += [f"{procs} processes ran the experiments in parallel: each step's seconds are its own, "
                  "`total` is the wall time of the whole run.", ""]
    return lines + [rp.table(["Step", "Seconds"], [[k, f"{v:.1f}"] for k, v in timings.items()
                                                   if not k.startswith("results") and k != "processes"])]


# ---------------------------------------------------------------------------------------------- the reports
def markdown(r: dict[str, Any], timings: dict[str, float], figures: list[str]) -> str:
    """``report.md`` of the digits and cifar10 presets; ``figures``: the PNG names to show."""
    lines = _md_header(r) + _md_caveat(r) + _md_laws(r) + sec.md_table2(r) + sec.md_repeated_draws(r)
    lines += sec.md_table4(r)
    lines += _md_comparisons(r) + sec.md_table5(r) + sec.md_table1(r) + sec.md_table6(r) + sec.md_table7(r)
    lines += sec.md_neighbourhood(r) + sec.md_fig3b(r) + sec.md_robustness_curve(r) + sec.md_diagnostics(r)
    lines += _md_disclosure(r)
    lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in figures]
    lines += _md_timings(timings)
    return "\n".join(lines) + "\n"


def imagenet_markdown(r: dict[str, Any], timings: dict[str, float]) -> str:
    """``report.md`` of the imagenet preset."""
    st = r["setting"]
    lines = [f"# art-diffpure reproduce: preset `imagenet` ({st['gradient']})", "",
             f"Linf eps = {st['eps']:.4g}, t* = {st['t_star']}, PGD-{st['sizes']['max_iter']}, "
             f"{st['sizes']['n_images']} images, base seeds {list(st['sizes']['seeds'])}.", ""]
    lines += sec.md_imagenet_table3(r) + sec.md_imagenet_tableS2(r)
    lines += ["", "## Timings", "", rp.table(["Step", "Seconds"], [[k, f"{v:.1f}"] for k, v in timings.items()])]
    return "\n".join(lines) + "\n"
