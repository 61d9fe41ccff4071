"""
The paper's tables in ``report.md``: one renderer per table (each returns its lines, from plain results). No model
calls and no files here; :mod:`~art_diffpure.reproduce.markdown` puts them together.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from art_diffpure._utils import norm_label
from art_diffpure.evaluations import statistics
from art_diffpure.randomness import EVALUATION_DRAW_OFFSET
from art_diffpure.reproduce import render as rp
from art_diffpure.reproduce.paper import PAPER
from art_diffpure.samplers import SAMPLERS

__all__ = ["acc_cell", "draw_rule_text", "md_diagnostics", "md_fig3b", "md_imagenet_table3", "md_imagenet_tableS2",
           "md_neighbourhood", "md_repeated_draws", "md_robustness_curve", "md_table1", "md_table2", "md_table4",
           "md_table5", "md_table6", "md_table7"]


# ---------------------------------------------------------------------------------------------- cells
def acc_cell(r: dict[str, Any], key: str) -> str:
    """The accuracy cell of ``key`` in the run's statistics (``mean% [95%] (seed sd)``)."""
    return rp.fmt_accuracy(r.get("statistics", {}).get("accuracies", {}).get(key))


def _first_seed(report: dict[str, Any]) -> dict[str, Any]:
    """An evaluate() report's robust accuracy as a one-seed summary."""
    return statistics.seed_summary(report["adv_correct"]).to_dict()


def _runs_acc(runs: list[dict], key: str) -> str:
    """Accuracy cell from evaluate() reports' per-image outcomes (seeds x images)."""
    return rp.fmt_accuracy(statistics.seed_summary([run[key] for run in runs]).to_dict())


def _corr_cell(item: dict[str, Any]) -> str:
    """A Table 5 correlation: mean±std over images, then the 95% bootstrap interval of the mean."""
    iv = None
    if item.get("per_sample") is not None:
        from art_diffpure.reproduce.laws import _per_image_interval
        iv = _per_image_interval(item["per_sample"])
    return f"{rp.fmt((item['mean'], item['std']), 4)} {rp.fmt_interval(iv) if iv else ''}".strip()


# ---------------------------------------------------------------------------------------------- tables
def md_table2(r: dict[str, Any]) -> list[str]:
    """Table 2: robustness with and without fixed randomness."""
    st, eot = r["setting"], r["table2"]["pgd_eot_stochastic"]
    return ["", "## Table 2: robustness with and without fixed randomness", "",
            rp.table(["Fix random", "Clean (ours)", "PGD (ours)", "PGD-EOT (ours)", "Clean (paper)", "PGD (paper)",
                      "PGD-EOT (paper)"],
                     [["✗", acc_cell(r, "table2.stochastic.clean"), acc_cell(r, "table2.stochastic.robust"),
                       f"{acc_cell(r, 'table2.pgd_eot_stochastic.robust')} (K={st['sizes']['eot_samples']}, "
                       f"n={eot['n']})", *PAPER["table2"]["stochastic"].values()],
                      ["✓", acc_cell(r, "table2.aligned.clean"), acc_cell(r, "table2.aligned.robust"), "–",
                       *PAPER["table2"]["aligned"].values()]])]


def draw_rule_text(draws: dict[str, Any], brief: bool = False) -> str:
    """
    The number and rule of a report's repeated test draws, as its record names them (``brief``: the disclosure's
    words). A record without ``draw_rule`` holds ``generator_seeds``: the batch-generator rule the committed digits
    reports were pre-registered and measured with, worded as those reports were written, so that judging them
    again rewrites them byte for byte.
    """
    n = draws["n_draws"]
    if "draw_rule" not in draws:
        return (f"{n}, generator seeds {draws['generator_seeds'][0]}+k" if brief
                else f"{n} independent fresh draws of the purifier's noise")
    seeds = f"base seeds s + {EVALUATION_DRAW_OFFSET} + j"
    if brief:
        return f"{n}, {draws['draw_rule']}: {seeds} of the attack's seed s"
    return (f"{n} {draws['draw_rule']} of the purifier's noise (draw j under {seeds}, s = {draws['seed']} the "
            "attack's seed, each sample under its own id: a sample's draws do not depend on its batch)")


def md_repeated_draws(r: dict[str, Any]) -> list[str]:
    """The stochastic attack's examples under N test draws (mean and worst case), beside Table 2."""
    draws = r.get("repeated_draws")
    if not draws:
        return []
    return ["", f"## Robustness over repeated test draws (stochastic defence, N = {draws['n_draws']})", "",
            f"The stochastic attack's adversarial examples ({draws['attack']}) tested under {draw_rule_text(draws)} "
            "(as DiffHammer's N-evaluation and ADDT's fixed-draw evaluation report it). *Worst case*: an image "
            "counts as robust only if it is classified correctly under every draw.", "",
            rp.table(["Evaluation", "Robust accuracy [95%]"],
                     [["stochastic, one test draw (Table 2, seed 0)",
                       rp.fmt_accuracy(_first_seed(r["table2"]["stochastic"][0]))],
                      [f"stochastic, mean over {draws['n_draws']} draws",
                       acc_cell(r, "repeated_draws.mean_over_draws").replace("seed sd", "draw-to-draw sd")],
                      [f"stochastic, worst case over {draws['n_draws']} draws",
                       acc_cell(r, "repeated_draws.worst_case")],
                      ["aligned (Table 2, seeds mean)", acc_cell(r, "table2.aligned.robust")]])]


def md_table4(r: dict[str, Any]) -> list[str]:
    """Table 4: transfer across randomness configurations."""
    t4 = r["table4"]
    return ["", "## Table 4: transfer across randomness configurations", "",
            rp.table(["Attack xi", "Test xi", "Robust acc. (ours)", "Paper (CIFAR-10)"],
                     [["fixed s", "fixed s + 1000000007",
                       acc_cell(r, "table4.transfer.robust") if "adv_correct" in t4["runs"][0]
                       else rp.fmt(t4["robust_accuracy"], percent=True), PAPER["table4"]]])]


def md_table5(r: dict[str, Any]) -> list[str]:
    """Table 5: correlations between attacks (perturbations, loss gradients)."""
    t5 = r["table5"]
    rows = []
    if "perturbation_fixed_vs_fixed" in t5:
        rows.append(["PGD (Fix) vs. PGD (Fix), perturbations", _corr_cell(t5["perturbation_fixed_vs_fixed"]),
                     PAPER["table5"]["fixed_vs_fixed"]])
    rows.append(["PGD-EOT vs. PGD (Fix), perturbations", _corr_cell(t5["perturbation_eot_vs_fixed"]),
                 PAPER["table5"]["eot_vs_fixed"]])
    g = t5["gradients"]
    rows.append(["fixed vs. fixed, loss gradients", _corr_cell(g["fixed_vs_fixed"]), "–"])
    if g.get("eot_vs_fixed"):
        rows.append([f"EOT-{g['eot_samples']} vs. fixed, loss gradients", _corr_cell(g["eot_vs_fixed"]), "–"])
    return ["", "## Table 5: correlations between attacks", "",
            "mean±std over images, then the 95% bootstrap interval of the mean.", "",
            rp.table(["Attacks", "Correlation (ours)", "Paper"], rows)]


def _samplers(table: dict[str, Any]) -> list[str]:
    """A per-sampler table's keys in the paper's order (DDPM, reverse-only, DDIM), whatever the dict's order."""
    order = SAMPLERS
    return sorted(table, key=lambda k: (order.index(k) if k in order else len(order), k))


def md_table1(r: dict[str, Any]) -> list[str]:
    """Table 1: distances before -> after purification, with the C1 interval and the feature-FID's caveat."""
    t1 = r["table1"]
    c1 = next((law for law in r.get("laws", []) if law["law"] == "C1"), None)
    lines = ["", "## Table 1: distances to the clean images before → after purification (aligned PGD inputs)", "",
             rp.table(["Sampling", norm_label(2), f"{norm_label(2)} increase [95%]", norm_label(np.inf), "SSIM",
                       "feature-FID", "paper l2",
                       "paper linf", "paper SSIM", "paper FID"],
                      [[k, f"{rp.fmt(t1[k]['mean']['l2']['start'])} → {rp.fmt(t1[k]['mean']['l2']['end'])}",
                        (lambda iv: f"{iv['estimate']:+.3f} {rp.fmt_interval(iv, signed=True)}" if iv else "–")(
                            (c1 or {}).get("per_sampler", {}).get(k, {}).get("increase")),
                        *(f"{rp.fmt(t1[k]['mean'][m]['start'])} → {rp.fmt(t1[k]['mean'][m]['end'])}"
                          for m in (norm_label(np.inf), "ssim")),
                        f"{rp.fmt(t1[k]['fid'][0])} → {rp.fmt(t1[k]['fid'][1])}" + (" ¹" if t1[k].get("fid_warnings")
                                                                                     else ""),
                        *(f"{a} → {b}" for a, b in PAPER["table1"][k].values())] for k in _samplers(t1)])]
    fid_notes = sorted({w for k in t1 for w in t1[k].get("fid_warnings", [])})
    if fid_notes:
        lines += ["", f"¹ feature-FID on {len(t1[next(iter(t1))]['per_image']['l2']['start'])} images: fewer images "
                  "than feature dimensions make the feature covariances singular, and scipy's matrix square root "
                  f"warned: \"{fid_notes[0]}\". These FID values are unreliable at this n; l2, linf and SSIM are not "
                  "affected."]
    return lines


def md_table6(r: dict[str, Any]) -> list[str]:
    """Table 6: compression rates (l2) and aligned robustness per sampler."""
    t6 = r["table6"]
    return ["", "## Table 6: compression rates (l2) and aligned robustness per sampler", "",
            rp.table(["Sampling", "PGD (robust)", "PGD (non-robust)", "Uniform", "PGD (Fix) [95%]",
                      "paper: PGD (robust)", "PGD (non-robust)", "Uniform", "PGD (Fix)"],
                     [[k, rp.fmt(t6[k]["compression_pgd_robust"]), rp.fmt(t6[k]["compression_pgd_nonrobust"]),
                       rp.fmt(t6[k]["compression_uniform"]), acc_cell(r, f"table6.{k}.robust"),
                       *PAPER["table6"][k]] for k in _samplers(t6)])]


def md_table7(r: dict[str, Any]) -> list[str]:
    """Table 7: the effect of t* (compression, aligned and clean accuracy per t*, the paper's row beside)."""
    st, t7 = r["setting"], r["table7"]
    header = ["Model", "", *(f"t={t}" for t in t7["t_star"])]
    rows = []
    for k in ("ddpm", "reverse"):
        rows.append([k, "Compress", *(rp.fmt(row["compression"]) for row in t7[k])])
        rows.append(["", "PGD (Fix) [95%]", *(acc_cell(r, f"table7.{k}.t{row['t_star']}.robust") for row in t7[k])])
        rows.append(["", "Clean [95%]", *(acc_cell(r, f"table7.{k}.t{row['t_star']}.clean") for row in t7[k])])
        paper = PAPER["table7"]
        ref = dict(zip(paper["t"], zip(paper[k]["compress"], paper[k]["pgd_fix"])))
        rows.append(["", "paper Compress / PGD (Fix)",
                     *(f"{ref[t][0]:.3f} / {100 * ref[t][1]:.1f}%" if t in ref else "–" for t in t7["t_star"])])
    first = t7["ddpm"][0] if t7.get("ddpm") else {}
    return ["", "## Table 7: the effect of t*", "",
            f"Seeds {first.get('seeds', [st['sizes']['seeds'][0]])} on the first {first.get('n')} images per "
            "configuration (accuracies are seed means; at the default t* the rows are the first images of the "
            "Table 2 / Table 6 attacks); pairs of t* are compared in the paired table above.",
            "", rp.table(header, rows)]


def md_neighbourhood(r: dict[str, Any]) -> list[str]:
    """Tables S5 (variances, SNR) and S6 (centroid distances), the Fig. 2d-e correlations, the Fig. 3a spectrum."""
    s5, s6 = r["tableS5"], r["tableS6"]
    lines = ["", "## Table S5: variances (per-pixel, x1e-3) and SNR (x1e-3)", "",
             rp.table(["", "Total Var.", "Input Var.", "Internal Var.", "SNR"],
                      [["ours", *(rp.fmt((1e3 * s5["mean"][k], 1e3 * s5["std"][k])) for k in
                                  ("total", "input", "internal", "snr"))],
                       ["paper", *PAPER["tableS5"].values()]])]
    keys = ("initial", "vary_input_fixed_xi", "vary_xi_fixed_input", "vary_both")
    lines += ["", "## Table S6: l2 distances to the centroids", "",
              "`vary_input_fixed_xi` is the paper's compression (fixed noise, 0.241), `vary_xi_fixed_input` its "
              "expansion (varying noise, 3.282).", "",
              rp.table(["", *keys], [["ours", *(rp.fmt((s6["mean"][k], s6["std"][k])) for k in keys)],
                                     ["paper", *(PAPER["tableS6"][k] for k in keys)]])]
    c = r["fig2de"]
    lines += ["", "Direction correlations (Fig. 2d, 2e): vary xi, fixed input "
              f"{rp.fmt((c['mean']['vary_xi_fixed_input'], c['std']['vary_xi_fixed_input']))} (paper 0.22); "
              f"vary input, fixed xi {rp.fmt((c['mean']['vary_input_fixed_xi'], c['std']['vary_input_fixed_xi']))} "
              "(paper 0.93)."]
    j = r["fig3a"]
    lines += ["", f"Jacobian spectrum (Fig. 3a, exact, {j['n_dims']} dims): fraction of singular values below 0.25 "
              f"{rp.fmt(j['mean']['frac_below'])} (paper > 0.90), above 1 {rp.fmt(j['mean']['frac_above'])} "
              "(paper 0.013)."]
    return lines


def md_fig3b(r: dict[str, Any]) -> list[str]:
    """The compression law's fit (Fig. 3b) with the C7 bootstrap intervals, or why there is none."""
    f3 = r["fig3b"]
    dup = f3.get("duplicates_removed")
    dup_text = f" ({', '.join(dup)} counted once)" if dup else ""
    if not f3.get("fit"):
        return ["", f"Compression law (Fig. 3b): no sigmoid fit ({f3.get('fit_error')})."] + [
            f"- warning: {w}" for w in f3.get("warnings", [])]
    fit = f3["fit"]
    c7 = next((law for law in r.get("laws", []) if law["law"] == "C7"), None)
    boot = (c7 or {}).get("fit_intervals") or {}

    def with_iv(name, value):
        iv = boot.get("r2") if name == "R²" else boot.get("params", {}).get(name)
        return f"{name} = {value:.3g}" + (f" [{iv[0]:.3g}, {iv[1]:.3g}]" if iv else "")

    return ["", f"Compression law (Fig. 3b): sigmoid `b + a / (1 + exp(k (c - c0)))` fit over {fit['n_points']} "
            f"distinct configurations{dup_text}, {f3.get('n_seeds_per_point', 1)} seeds each on "
            f"{f3.get('n_images_per_point', '?')} images (seed-mean accuracies): {with_iv('R²', fit['r2'])}, "
            f"{', '.join(with_iv(k, v) for k, v in fit['params'].items())}"
            + (f" (95% intervals: {boot['method']}; {boot['failed']} of {boot['n_boot']} refits failed)"
               if boot.get("method") else "")
            + f"; extrapolated to zero compression: {rp.fmt(f3['fit_predict_at_0'], percent=True)} (clean "
            f"accuracy of the undefended classifier: {rp.fmt(r['undefended']['clean_accuracy'], percent=True)})."] + [
        f"- warning: {w}" for w in f3.get("warnings", [])]


def md_robustness_curve(r: dict[str, Any]) -> list[str]:
    """Robust accuracy against eps per randomness mode, beside the undefended classifier and the theory."""
    curve = r["robustness_curve"]
    header = ["eps", *curve["modes"], "undefended", "theory (undefended at α·eps)", "α (compression)"]
    rows = []
    n_curve = len(curve["success"][curve["modes"][0]][0])
    for k, e in enumerate(curve["eps"]):
        theory, alpha = curve.get("theory"), curve.get("compression_rate")
        cells = []
        for m in curve["modes"]:
            n_ok = int(n_curve - sum(bool(v) for v in curve["success"][m][k]))
            cells.append(rp.fmt_accuracy(statistics.seed_summary(
                [True] * n_ok + [False] * (n_curve - n_ok)).to_dict()))
        k_und = int(round(curve["undefended"][k] * n_curve))
        rows.append([rp.fmt(e), *cells, rp.fmt_accuracy(statistics.seed_summary(
                         [True] * k_und + [False] * (n_curve - k_und)).to_dict()),
                     rp.fmt(theory[k], percent=True) if theory else "–", rp.fmt(alpha[k]) if alpha else "–"])
    return ["", f"## Robust accuracy against eps per randomness mode (PGD-{curve['config'].get('max_iter')}, "
            f"{n_curve} images, Wilson 95%)", "", rp.table(header, rows)] + [
        f"- {note}" for note in curve.get("notes", [])]


def md_diagnostics(r: dict[str, Any]) -> list[str]:
    """The lighter gradient-masking diagnostics, pointing to the full-strength ones."""
    from art_diffpure.evaluations.gradient_masking import diagnostics_table

    sizes = r["setting"]["sizes"]
    return ["", "## Gradient-masking diagnostics (fixed randomness): the LIGHTER version", "",
            f"{sizes['diagnostics_images']} images, PGD-{sizes['curve_max_iter']}, "
            f"Square with {sizes['square_queries']} queries, DDPM only: too weak to pass or fail "
            "much. The checks at full strength (32 images, Square 1000 queries, PGD 10/40/100/200, restarts, BPDA, "
            "transfer, APGD-CE + APGD-DLR) are `art-diffpure masking`, committed in `docs/masking-report/`.", "",
            diagnostics_table(r["diagnostics"])]


def md_imagenet_table3(r: dict[str, Any]) -> list[str]:
    """Table 3 (BPDA, BPDA-EOT, with and without fixed randomness) and the paired stochastic-aligned difference."""
    st, t3 = r["setting"], r["table3"]
    paper = PAPER["table3"]
    lines = ["## Table 3: robustness with and without fixed randomness", "",
             "Accuracies: `mean% [95% interval over images]` (Wilson for one seed, bootstrap of the per-image mean "
             "for several), seed-to-seed sd apart.", "",
             rp.table(["Fix random", "Clean (ours)", "BPDA (ours)", "BPDA-EOT (ours)", "paper clean", "paper BPDA",
                       "paper BPDA-EOT"],
                      [["✗", _runs_acc(t3["stochastic"], "clean_correct"), _runs_acc(t3["stochastic"], "adv_correct"),
                        _runs_acc([t3["eot_stochastic"]], "adv_correct"), *paper["stochastic"]],
                       ["✓", _runs_acc(t3["aligned"], "clean_correct"), _runs_acc(t3["aligned"], "adv_correct"),
                        "–", *paper["aligned"]]])]
    if t3["aligned"] and t3["stochastic"]:
        c = statistics.paired_difference([run["adv_correct"] for run in t3["stochastic"]],
                                         [run["adv_correct"] for run in t3["aligned"]])
        d = c.difference
        lines += ["", f"Stochastic minus aligned BPDA robust accuracy (same images): {100 * d.estimate:+.1f} points "
                  f"[{100 * d.low:+.1f}, {100 * d.high:+.1f}] (paired bootstrap over images), exact McNemar p = "
                  f"{c.test.p_value:.3g} (seed {st['sizes']['seeds'][0]}: b = {c.test.b}, c = {c.test.c})."]
    return lines


def md_imagenet_tableS2(r: dict[str, Any]) -> list[str]:
    """Table S2: distances to the clean images during DiffPure (BPDA and BPDA-EOT inputs)."""
    rows = []
    for metric in (norm_label(2), norm_label(np.inf)):
        for name, t in r["tableS2"].items():
            rows.append([metric, name, *(rp.fmt((t["mean"][metric][k], t["std"][metric][k]))
                                         for k in ("start", "max", "end"))])
    return ["", "## Table S2: distances to the clean images during DiffPure", "",
            rp.table(["Distance", "Attack", "Init (t=0)", "Max (t=t*)", "End"], rows), "",
            f"Paper (BPDA): {PAPER['tableS2']}"]


