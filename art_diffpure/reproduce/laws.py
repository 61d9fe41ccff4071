"""
A verdict for each of the paper's laws C1..C7, computed from a plain results dict (``art-diffpure reproduce``'s
``results.json``) with the intervals and paired comparisons of :mod:`art_diffpure.reproduce.comparisons`;
numpy and scipy only, no torch.

Every threshold below is a module-level constant, written into the code before the run whose report applies it
(see the report's Disclosure section for what had been seen when they were written). A verdict is one of
:data:`HOLDS`, :data:`DOES_NOT_HOLD` or :data:`INCONCLUSIVE`, by ONE rule for every law: *holds* when the 95%
interval lies beyond the threshold in the paper's direction (and, for accuracy comparisons and Spearman's test, the
test is significant at :data:`ALPHA`), *does not hold* when the interval lies entirely on the other side, and
*inconclusive at this n* otherwise. A point estimate alone never decides. For bootstrap intervals each end is taken
with its Monte Carlo band (:meth:`~art_diffpure.evaluations.statistics.Interval.end_bands`): a threshold inside the
band of an end is inconclusive, so no verdict depends on the bootstrap's own seed.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from art_diffpure.evaluations import statistics as st
from art_diffpure.reproduce.comparisons import SAMPLERS, _get, accuracy_summaries, paired_comparisons

__all__ = [
    "ALPHA",
    "C1_MIN_INCREASE",
    "C2_SNR_MAX",
    "C3_FIXED_XI_RATIO_MAX",
    "C3_VARYING_XI_RATIO_MIN",
    "C4_MIN_DROP",
    "C5_EQUIVALENCE_MARGIN",
    "C6_MAX_CORRELATION",
    "C7_MIN_R2",
    "DOES_NOT_HOLD",
    "HOLDS",
    "INCONCLUSIVE",
    "N_BOOT",
    "N_BOOT_FIT",
    "THRESHOLDS",
    "distinct_points",
    "evaluate",
    "fit_intervals",
    "stability",
    "verdicts",
]

HOLDS, DOES_NOT_HOLD, INCONCLUSIVE = "holds", "does not hold", "inconclusive at this n"

# ---------------------------------------------------------------------------------------------- thresholds
# Written on 2026-12-01, before the first run that applies them but after the earlier default report (n=32, commit
# d8c1dd1) had been read; the report's Disclosure section says so. Do not change them after seeing a run's verdicts.
# Significance level of every paired test (exact McNemar, two-sided) and of Spearman's test in C7.
ALPHA = 0.05
# Bootstrap resamples over images for every interval (seeded: results.json stays reproducible); fewer for the
# refits of the Fig. 3b sigmoid (each resample is a least-squares fit).
N_BOOT = 10000
N_BOOT_FIT = 2000
# C1 (Table 1): the purified output is farther (l2) from the clean image than the attacked input: the mean per-image
# increase end - start must exceed 0 (any increase counts; the paper's is 2-3x).
C1_MIN_INCREASE = 0.0
# C2 (Table S5): SNR = input variance / internal variance "far below 1": an order of magnitude, SNR < 0.1 (the
# paper's is 0.006). SNR < 1 alone (internal randomness dominates) is reported beside the verdict.
C2_SNR_MAX = 0.1
# C3 (Table S6): per-image radius ratios to the initial neighbourhood: fixed xi shrinks it below half (paper 0.24),
# varying xi grows it (ratio > 1; paper 3.27).
C3_FIXED_XI_RATIO_MAX = 0.5
C3_VARYING_XI_RATIO_MIN = 1.0
# C4 (Table 2): aligned robust accuracy "well below" stochastic: stochastic - aligned >= 10 points (the paper's drop
# is 48 points), significant by the exact McNemar test (seed 0) and with the interval's lower end above 0.
C4_MIN_DROP = 0.10
# C5 (Table 4): transfer across xi "close to" stochastic: equivalence when the 95% interval of transfer - stochastic
# lies inside +-10 points (the paper's gap is 5.5 points); not close when it lies entirely outside.
C5_EQUIVALENCE_MARGIN = 0.10
# C6 (Table 5): "nearly uncorrelated": every mean correlation (perturbations and loss gradients, fixed vs fixed and
# EOT vs fixed) below 0.2 (the paper's are 0.08 and 0.17).
C6_MAX_CORRELATION = 0.2
# C7 (Fig. 3b, Tables 6-7): over DISTINCT configurations, compression must predict aligned robustness: a
# significantly negative Spearman correlation and a sigmoid fit whose R^2 interval lies above 0.8; an R^2 interval
# below 0.8 or a significantly positive correlation does not hold. A fitted inflection outside the data's range is
# reported as a warning.
C7_MIN_R2 = 0.8

THRESHOLDS = ("ALPHA", "N_BOOT", "N_BOOT_FIT", "C1_MIN_INCREASE", "C2_SNR_MAX", "C3_FIXED_XI_RATIO_MAX",
              "C3_VARYING_XI_RATIO_MIN", "C4_MIN_DROP", "C5_EQUIVALENCE_MARGIN", "C6_MAX_CORRELATION", "C7_MIN_R2")


# ---------------------------------------------------------------------------------------------- helpers
def _iv(interval: Any) -> list[float] | None:
    if interval is None:
        return None
    d = interval if isinstance(interval, dict) else interval.to_dict()
    return [d["low"], d["high"]]


def _per_image_interval(values: Any, seed: int = 0) -> dict[str, Any] | None:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return None
    return st.bootstrap_interval(v, n_boot=N_BOOT, seed=seed).to_dict()


# ---------------------------------------------------------------------------------------------- Fig. 3b
def distinct_points(points: Sequence[Sequence[Any]]) -> tuple[list[list[Any]], list[str]]:
    """Fig. 3b points ``(compression, accuracy, label)`` with each configuration (label) once; also the dropped labels."""
    seen: set[str] = set()
    kept, dropped = [], []
    for p in points:
        if p[2] in seen:
            dropped.append(p[2])
            continue
        seen.add(p[2])
        kept.append(list(p))
    return kept, dropped


def fit_intervals(points: Sequence[Sequence[Any]], correct: dict[str, Any], n_boot: int = 200,
                  seed: int = 0) -> dict[str, Any] | None:
    """
    95% percentile intervals of the sigmoid's parameters and R² by a bootstrap over images: each resample draws
    images (the same draw for every configuration, which all attack the first images of the same split), recomputes
    each configuration's accuracy (the seed mean of each image's correctness when ``correct[label]`` is
    ``(seeds, images)``) and refits; compression rates are held fixed. Fits that fail are counted.
    """
    import warnings

    from scipy.optimize import OptimizeWarning

    from art_diffpure.metrics import fit_compression_law

    labels = [p[2] for p in points]
    if not labels or any(lab not in correct for lab in labels):
        return None
    per_config = [np.atleast_2d(np.asarray(correct[lab], dtype=np.float64)) for lab in labels]  # (seeds, images)
    n = min(v.shape[1] for v in per_config)
    mat = np.asarray([v[:, :n].mean(axis=0) for v in per_config])  # (configs, n): each image's seed-mean
    c = np.asarray([p[0] for p in points], dtype=np.float64)
    rng = np.random.default_rng(seed)
    try:  # each refit starts from the fit to all images: the same optimum, found in a fraction of the evaluations
        start = list(fit_compression_law(c, mat.mean(axis=1)).params.values())
    except (ValueError, RuntimeError):
        start = None
    params: dict[str, list[float]] = {}
    r2s, failed, optimize_warnings = [], 0, 0
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        acc = mat[:, idx].mean(axis=1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", OptimizeWarning)
            try:
                fit = fit_compression_law(c, acc, p0=start)
            except (ValueError, RuntimeError):
                failed += 1
                continue
        optimize_warnings += sum(issubclass(w.category, OptimizeWarning) for w in caught)
        if not np.isfinite(fit.r2):
            failed += 1
            continue
        r2s.append(fit.r2)
        for k, v in fit.params.items():
            params.setdefault(k, []).append(v)
    if not r2s:
        return {"n_boot": n_boot, "failed": failed}
    q = lambda v: [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))]  # noqa: E731
    r2_mc = st.percentile_interval(float(np.median(r2s)), r2s).monte_carlo if len(r2s) >= 100 else None
    return {"n_boot": n_boot, "failed": failed, "optimize_warnings": optimize_warnings, "n_images": n,
            "r2": q(r2s), "r2_monte_carlo": r2_mc, "params": {k: q(v) for k, v in params.items()},
            "method": f"percentile bootstrap over {n} images ({n_boot} resamples, seed {seed}), compression fixed"}


# ---------------------------------------------------------------------------------------------- verdicts
def _law(law: str, claim: str, source: str, value: str, interval: list[float] | None, threshold: str,
         verdict: str, paper: str, n: str | None = None, **details: Any) -> dict[str, Any]:
    """One row of the law table; ``n`` (how many images the verdict rests on) ends its value."""
    value = f"{value} (n = {n})" if n else value
    return {"law": law, "claim": claim, "source": source, "value": value, "interval": interval,
            "threshold": threshold, "verdict": verdict, "paper": paper, "n": n, **details}


def _n_of(values: Any) -> int:
    return int(np.isfinite(np.asarray(values, dtype=np.float64)).sum())


def _combine(verdicts: Sequence[str]) -> str:
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    if any(v == DOES_NOT_HOLD for v in verdicts):
        return DOES_NOT_HOLD
    return INCONCLUSIVE


def _bands(interval: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Each end of an interval dict with its Monte Carlo band (the end itself where the interval has none)."""
    mc = interval.get("monte_carlo")
    if mc:
        return list(mc["low"]), list(mc["high"])
    return [interval["low"]] * 2, [interval["high"]] * 2


def _above(interval: dict[str, Any] | None, threshold: float) -> str:
    """Verdict for "the mean is above ``threshold``": the whole band of the interval's low end above it holds, the
    whole band of its high end below it does not hold, anything else is inconclusive."""
    if interval is None:
        return INCONCLUSIVE
    low, high = _bands(interval)
    if min(low) > threshold:
        return HOLDS
    if max(high) < threshold:
        return DOES_NOT_HOLD
    return INCONCLUSIVE


def _below(interval: dict[str, Any] | None, threshold: float) -> str:
    """Verdict for "the mean is below ``threshold``" (the mirror of :func:`_above`)."""
    if interval is None:
        return INCONCLUSIVE
    low, high = _bands(interval)
    if max(high) < threshold:
        return HOLDS
    if min(low) > threshold:
        return DOES_NOT_HOLD
    return INCONCLUSIVE


def _inside(interval: dict[str, Any] | None, margin: float) -> str:
    """Verdict for equivalence "the mean lies within +-``margin``": the whole interval (with its ends' bands)
    inside holds, the whole interval outside on one side does not hold."""
    if interval is None:
        return INCONCLUSIVE
    low, high = _bands(interval)
    if min(low) > -margin and max(high) < margin:
        return HOLDS
    if min(low) > margin or max(high) < -margin:
        return DOES_NOT_HOLD
    return INCONCLUSIVE


def _c1(r: dict[str, Any], seed: int = 0) -> dict[str, Any] | None:
    t1 = r.get("table1")
    if not t1:
        return None
    per, parts, values, ns = {}, [], [], set()
    for k in SAMPLERS:
        if k not in t1:
            continue
        img = _get(t1[k], "per_image", "l2")
        if img:
            ns.add(_n_of(img["start"]))
        iv = _per_image_interval(np.asarray(img["end"]) - np.asarray(img["start"]), seed) if img else None
        verdict = _above(iv, C1_MIN_INCREASE)
        per[k] = {"start": t1[k]["mean"]["l2"]["start"], "end": t1[k]["mean"]["l2"]["end"], "increase": iv,
                  "verdict": verdict}
        parts.append(verdict)
        values.append(f"{k} {t1[k]['mean']['l2']['start']:.3f}→{t1[k]['mean']['l2']['end']:.3f}"
                      + (f" ({iv['estimate']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}])" if iv else ""))
    return _law("C1", "purified outputs are farther (l2) from the clean image than the attacked input, per sampler",
                "Table 1", "; ".join(values), None, f"mean l2 increase > {C1_MIN_INCREASE:g} for every sampler "
                "(95% bootstrap interval over images)", _combine(parts),
                "ddpm 1.077→3.641, reverse 1.149→3.078, ddim 1.080→2.810",
                n=" / ".join(f"{v} images" for v in sorted(ns)) or None, per_sampler=per)


def _c2(r: dict[str, Any], seed: int = 0) -> dict[str, Any] | None:
    s5 = r.get("tableS5")
    if not s5:
        return None
    per = _get(s5, "per_image", "snr")
    if per is not None:
        iv = _per_image_interval(per, seed)
        n = _n_of(per)
    else:
        n = int(_get(r, "setting", "sizes", "neighbourhood_images") or 0)
        iv = st.mean_interval(s5["mean"]["snr"], s5["std"]["snr"], n).to_dict() if n >= 2 else None
    snr = s5["mean"]["snr"]
    below_one = _below(iv, 1.0)
    return _law("C2", "SNR = input variance / internal variance is far below 1", "Table S5", f"{snr:.3g}", _iv(iv),
                f"SNR < {C2_SNR_MAX:g} (an order of magnitude below 1)", _below(iv, C2_SNR_MAX), "0.0059",
                n=f"{n} images" if n else None, snr_below_one=below_one)


def _c3(r: dict[str, Any], seed: int = 0) -> dict[str, Any] | None:
    s6 = r.get("tableS6")
    if not s6:
        return None
    per = s6.get("per_image")
    m = s6["mean"]
    if per:
        init = np.asarray(per["initial"], dtype=np.float64)
        fixed = _per_image_interval(np.asarray(per["vary_input_fixed_xi"]) / init, seed)
        vary = _per_image_interval(np.asarray(per["vary_xi_fixed_input"]) / init, seed)
    else:
        fixed = vary = None
    v_fixed, v_vary = _below(fixed, C3_FIXED_XI_RATIO_MAX), _above(vary, C3_VARYING_XI_RATIO_MIN)
    rf = fixed["estimate"] if fixed else m["vary_input_fixed_xi"] / m["initial"]
    rv = vary["estimate"] if vary else m["vary_xi_fixed_input"] / m["initial"]
    value = f"fixed xi {rf:.3f}" + (f" [{fixed['low']:.3f}, {fixed['high']:.3f}]" if fixed else "") + \
        f"; varying xi {rv:.3f}" + (f" [{vary['low']:.3f}, {vary['high']:.3f}]" if vary else "")
    return _law("C3", "fixed-xi neighbourhoods shrink, varying-xi ones grow (radius / initial radius)", "Table S6",
                value, None, f"fixed-xi ratio < {C3_FIXED_XI_RATIO_MAX:g} and varying-xi ratio > "
                f"{C3_VARYING_XI_RATIO_MIN:g} (95% bootstrap intervals of the per-image ratios)",
                _combine([v_fixed, v_vary]), "fixed 0.240, varying 3.27 (0.241 and 3.282 over 1.004)",
                n=f"{_n_of(per['initial'])} images" if per else None,
                fixed_xi_ratio=fixed, varying_xi_ratio=vary, fixed_xi_verdict=v_fixed, varying_xi_verdict=v_vary)


def _find(comparisons: Sequence[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((c for c in comparisons if c["name"] == name), None)


def _n_images(c: dict[str, Any]) -> str | None:
    return f"{c['n_images']} images" if c.get("n_images") else None


def _cmp_value(c: dict[str, Any]) -> str:
    d = c["difference"]
    return (f"{100 * c['accuracy_a']:.1f}% vs {100 * c['accuracy_b']:.1f}%: difference {100 * d['estimate']:+.1f} "
            f"points [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}], McNemar p = {c['test']['p_value']:.3g} "
            f"(seed 0, b={c['test']['b']}, c={c['test']['c']})")


def _c4(comparisons: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    c = _find(comparisons, "stochastic vs aligned (robust)")
    if c is None:
        return None
    d = c["difference"]
    verdict = _above(d, C4_MIN_DROP)
    if verdict == HOLDS and not c["test"]["p_value"] < ALPHA:
        verdict = INCONCLUSIVE
    return _law("C4", "aligned robust accuracy is well below stochastic", "Table 2", _cmp_value(c),
                [d["low"], d["high"]], f"95% interval of stochastic - aligned above {100 * C4_MIN_DROP:g} points and "
                f"McNemar p < {ALPHA:g} (does not hold: interval below {100 * C4_MIN_DROP:g} points)", verdict,
                "71.9% vs 23.7% (drop 48.2 points)", n=_n_images(c))


def _c5(comparisons: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    c = _find(comparisons, "transfer vs stochastic")
    if c is None:
        return None
    d, m = c["difference"], C5_EQUIVALENCE_MARGIN
    verdict = _inside(d, m)
    return _law("C5", "transfer across xi is close to stochastic", "Table 4", _cmp_value(c), [d["low"], d["high"]],
                f"95% interval of transfer - stochastic inside ±{100 * m:g} points (equivalence); entirely outside: "
                "does not hold", verdict, "77.4% vs 71.9% (+5.5 points)", n=_n_images(c))


def _c6(r: dict[str, Any], seed: int = 0) -> dict[str, Any] | None:
    t5 = r.get("table5")
    if not t5:
        return None
    items = {"perturbations, fixed vs fixed": t5.get("perturbation_fixed_vs_fixed"),
             "perturbations, EOT vs fixed": t5.get("perturbation_eot_vs_fixed"),
             "gradients, fixed vs fixed": _get(t5, "gradients", "fixed_vs_fixed"),
             "gradients, EOT vs fixed": _get(t5, "gradients", "eot_vs_fixed")}
    per, parts, values, ns = {}, [], [], set()
    for name, item in items.items():
        if not item:
            continue
        if item.get("per_sample") is not None:
            ns.add(_n_of(item["per_sample"]))
        iv = _per_image_interval(item["per_sample"], seed) if item.get("per_sample") is not None else None
        verdict = _below(iv, C6_MAX_CORRELATION)
        per[name] = {"mean": item["mean"], "interval": iv, "verdict": verdict}
        parts.append(verdict)
        values.append(f"{name} {item['mean']:.2f}" + (f" [{iv['low']:.2f}, {iv['high']:.2f}]" if iv else ""))
    return _law("C6", "adversarial perturbations and loss gradients under different xi are nearly uncorrelated",
                "Table 5", "; ".join(values), None, f"every mean correlation < {C6_MAX_CORRELATION:g} (95% bootstrap "
                "interval over images)", _combine(parts), "perturbations 0.082 (fixed vs fixed), 0.168 (EOT vs fixed)",
                n=" / ".join(f"{v} images" for v in sorted(ns)) or None, correlations=per)


def _c7(r: dict[str, Any], seed: int = 0) -> dict[str, Any] | None:
    from scipy.stats import spearmanr

    f3 = r.get("fig3b")
    if not f3 or not f3.get("points"):
        return None
    pts, dropped = distinct_points(f3["points"])
    warnings = list(f3.get("warnings", []))
    if dropped and not f3.get("duplicates_removed"):
        warnings.append(f"duplicate configurations {dropped} were dropped before testing")
    c = np.asarray([p[0] for p in pts], dtype=np.float64)
    a = np.asarray([p[1] for p in pts], dtype=np.float64)
    rho, p = (float("nan"), float("nan"))
    if len(pts) >= 3 and np.ptp(c) > 0 and np.ptp(a) > 0:
        res = spearmanr(c, a)
        rho, p = float(res.statistic), float(res.pvalue)
    fit = f3.get("fit")
    r2 = fit["r2"] if fit else None
    if fit and "c0" in fit["params"] and not (c.min() <= fit["params"]["c0"] <= c.max()):
        msg = (f"the fitted inflection c0 = {fit['params']['c0']:.3g} lies outside the data's compression range "
               f"[{c.min():.3g}, {c.max():.3g}]: the sigmoid is extrapolated, its shape is not supported by the data")
        if msg not in warnings:
            warnings.append(msg)
    boot = (fit_intervals(pts, f3["adv_correct"], n_boot=N_BOOT_FIT, seed=seed) if fit and f3.get("adv_correct")
            else None)
    r2_iv = boot.get("r2") if boot else None
    r2_verdict = (_above({"low": r2_iv[0], "high": r2_iv[1], "monte_carlo": boot.get("r2_monte_carlo")}, C7_MIN_R2)
                  if r2_iv else INCONCLUSIVE)
    significant = math.isfinite(rho) and p < ALPHA
    if significant and rho < 0 and r2_verdict == HOLDS:
        verdict = HOLDS
    elif (significant and rho > 0) or r2_verdict == DOES_NOT_HOLD:
        verdict = DOES_NOT_HOLD
    else:
        verdict = INCONCLUSIVE
    value = (f"{len(pts)} distinct configurations: Spearman rho = {rho:.2f} (p = {p:.3g})"
             + (f", sigmoid R² = {r2:.3f}" if r2 is not None else ", no sigmoid fit")
             + (f" [{r2_iv[0]:.2f}, {r2_iv[1]:.2f}]" if r2_iv else ""))
    return _law("C7", "the compression rate predicts aligned robustness (monotone, sigmoid)", "Fig. 3b, Tables 6-7",
                value, r2_iv, f"Spearman rho < 0 with p < {ALPHA:g} and the 95% interval of the sigmoid's R² above "
                f"{C7_MIN_R2:g} over distinct configurations (does not hold: R² interval below {C7_MIN_R2:g}, or rho "
                f"> 0 with p < {ALPHA:g})", verdict,
                "monotone sigmoid over 14 configurations (Fig. 3b)",
                n=(f"{len(pts)} configurations x {boot['n_images']} images" if boot and boot.get("n_images")
                   else f"{len(pts)} configurations"), n_configurations=len(pts), spearman_rho=rho,
                spearman_p=p, r2=r2, fit_params=fit["params"] if fit else None, fit_intervals=boot,
                warnings=warnings)


def verdicts(r: dict[str, Any], comparisons: Sequence[dict[str, Any]] | None = None,
             seed: int = 0) -> list[dict[str, Any]]:
    """The C1..C7 table: per law its value, interval, threshold, verdict and the paper's value (laws whose inputs
    are missing from ``r`` are left out); ``seed`` is the bootstrap's seed (verdicts must not depend on it)."""
    comparisons = paired_comparisons(r, n_boot=N_BOOT, seed=seed) if comparisons is None else comparisons
    laws = [_c1(r, seed), _c2(r, seed), _c3(r, seed), _c4(comparisons), _c5(comparisons), _c6(r, seed),
            _c7(r, seed)]
    return [law for law in laws if law is not None]


def evaluate(r: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """``{"accuracies", "comparisons", "laws", "thresholds"}`` for a results dict (bootstrap seed ``seed``)."""
    comparisons = paired_comparisons(r, n_boot=N_BOOT, seed=seed)
    thresholds = {k: globals()[k] for k in THRESHOLDS}
    return {"accuracies": accuracy_summaries(r, n_boot=N_BOOT, seed=seed), "comparisons": comparisons,
            "laws": verdicts(r, comparisons, seed), "thresholds": thresholds}


def stability(r: dict[str, Any], seeds: Sequence[int] = (0, 1, 2, 3, 4)) -> dict[str, Any]:
    """
    Each law's verdict under every bootstrap seed in ``seeds``: ``{"seeds", "verdicts": {law: [verdict per seed]},
    "stable": bool}``. With each interval end taken with its Monte Carlo band, no verdict should change.
    """
    table: dict[str, list[str]] = {}
    for seed in seeds:
        for law in verdicts(r, seed=int(seed)):
            table.setdefault(law["law"], []).append(law["verdict"])
    return {"seeds": [int(s) for s in seeds], "verdicts": table,
            "stable": all(len(set(v)) == 1 for v in table.values())}
