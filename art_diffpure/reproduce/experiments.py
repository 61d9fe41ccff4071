"""
The paper's tables and figures from a :class:`~art_diffpure.reproduce.presets.Setting`: one function per table,
:func:`run_experiments` (digits, cifar10) and :func:`run_imagenet_experiments` run them in order and return plain
results (no files written here).
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any, Callable, Iterator

import numpy as np

from art_diffpure._utils import norm_label
from art_diffpure.samplers import SAMPLERS
from art_diffpure.evaluations import statistics
from art_diffpure.evaluations.result import EvaluationResult
from art_diffpure.reproduce.jobs import (
    _jobs, _numpy_seed, _predict, _reused_attack, _run_attack, _run_jobs, _sweep_configs, _Timer,
)
from art_diffpure.reproduce.presets import REPEATED_DRAW_RULE, REPEATED_DRAWS, Setting, _nb_classes, rel_step

__all__ = ["run_experiments", "run_imagenet_experiments"]


# ---------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _recorded(category: type[Warning]) -> Iterator[list[str]]:
    """
    Catch the warnings of ``category`` (only those) raised in the block; their messages fill the yielded list when
    the block ends. Warnings of other categories are re-issued unchanged.
    """
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", category)
        yield messages
    for w in caught:
        if issubclass(w.category, category):
            messages.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _features_fn(setting: Setting) -> Callable:
    """Numpy in, numpy out: the setting's penultimate features (for the feature-FID)."""
    import torch

    def feats(v):
        with torch.no_grad():
            return setting.features(torch.tensor(np.asarray(v), device=setting.device)).cpu().numpy()

    return feats


def _masked_mean_std(values: np.ndarray, mask: np.ndarray):
    """Mean and std of the finite ``values`` where ``mask``; None when there are none."""
    picked = values[mask]
    picked = picked[np.isfinite(picked)]
    return (float(picked.mean()), float(picked.std())) if len(picked) else None


def _setting_record(setting: Setting) -> dict[str, Any]:
    """The run's settings, as results.json records them."""
    s = setting.sizes
    return {"preset": setting.name, "eps": setting.eps, "t_star": setting.t_star, "gradient": setting.gradient,
            "rel_step": rel_step(s.max_iter), "sizes": dataclasses.asdict(s), "notes": setting.notes}


# ---------------------------------------------------------------------------------------------- the tables
def _undefended(setting: Setting) -> dict[str, Any]:
    """PGD against the classifier alone."""
    from art_diffpure.models.classifier import art_classifier
    from art.attacks.evasion import ProjectedGradientDescent

    s, x, y = setting.sizes, setting.x, setting.y
    plain = art_classifier(setting.model, x.shape[1:], _nb_classes(setting),
                           device_type="cpu" if setting.device == "cpu" else "gpu")
    with _numpy_seed(0):
        adv = ProjectedGradientDescent(plain, eps=setting.eps, eps_step=rel_step(s.max_iter) * setting.eps,
                                       max_iter=s.max_iter, num_random_init=1, batch_size=s.batch_size,
                                       verbose=False).generate(x, y)
    clean_ok, adv_ok = plain.predict(x).argmax(1) == y, plain.predict(adv).argmax(1) == y
    return {"clean_accuracy": float(clean_ok.mean()), "robust_accuracy": float(adv_ok.mean()),
            "n": int(len(y)), "clean_correct": clean_ok.tolist(), "adv_correct": adv_ok.tolist()}


def _table2(setting: Setting, done: dict[str, Any]) -> tuple[dict[str, Any], dict[int, np.ndarray], np.ndarray]:
    """Table 2, and the adversarial examples that Tables 1, 4, 5, 6 reuse: (table, aligned per seed, PGD-EOT)."""
    table2: dict[str, Any] = {"aligned": [], "stochastic": []}
    adv_aligned: dict[int, np.ndarray] = {}
    for seed in setting.sizes.seeds:
        report, adv_aligned[seed] = done[f"table2 aligned seed {seed}"]
        table2["aligned"].append(report)
        table2["stochastic"].append(done[f"table2 stochastic seed {seed}"][0])
    table2["pgd_eot_stochastic"], adv_eot = done["table2 pgd-eot"]
    return table2, adv_aligned, adv_eot


def _table4(setting: Setting, ddpm, adv_aligned: dict[int, np.ndarray]) -> dict[str, Any]:
    """Table 4: the aligned adversarial examples of seed s, tested under another fixed configuration."""
    from art_diffpure.randomness import transfer_test_seed

    y, ids = setting.y, np.arange(len(setting.x))
    runs = []
    for seed in setting.sizes.seeds:
        pred = _predict(setting, ddpm, adv_aligned[seed], transfer_test_seed(seed), ids)
        runs.append({"attack_seed": seed, "test_seed": transfer_test_seed(seed), "n": int(len(y)),
                     "robust_accuracy": float((pred == y).mean()), "adv_correct": (pred == y).tolist(),
                     "adv_pred": pred.tolist()})
    return {"runs": runs, "robust_accuracy": statistics.seed_mean_sd([r["robust_accuracy"] for r in runs])}


def _repeated_draws(setting: Setting, done: dict[str, Any]) -> dict[str, Any]:
    """
    Robustness over repeated test draws: the stochastic attack's examples under N named per-sample test draws of
    its seed (:func:`~art_diffpure.evaluations.draws.draw_predictions`, predictions only). Sample ids are positions
    in the run, as in every table, so a sample's draws do not depend on the batch it is predicted in.
    """
    from art_diffpure.evaluations.draws import draw_predictions

    s, y = setting.sizes, setting.y
    x_adv_sto = done[f"table2 stochastic seed {s.seeds[0]}"][1]
    purifier = setting.make_purifier("ddpm", setting.t_star, None, setting.gradient)
    predictions, seeds = draw_predictions(purifier, lambda v: _predict(setting, purifier, v, None), x_adv_sto,
                                          s.seeds[0], REPEATED_DRAWS, np.arange(len(y)))
    correct_arr = predictions == np.asarray(y)[None, :]
    return {
        "attack": f"table2 stochastic PGD, seed {s.seeds[0]}", "n_draws": REPEATED_DRAWS, "n": int(len(y)),
        "draw_rule": REPEATED_DRAW_RULE, "seed": int(s.seeds[0]), "draw_seeds": seeds,
        "adv_correct": correct_arr.tolist(),
        "robust_accuracy_per_draw": correct_arr.mean(axis=1).tolist(),
        "mean_over_draws": float(correct_arr.mean()),
        "worst_case": float(correct_arr.all(axis=0).mean()),
        "best_case": float(correct_arr.any(axis=0).mean())}


def _table5(setting: Setting, done: dict[str, Any], adv_aligned: dict[int, np.ndarray],
            adv_eot: np.ndarray) -> dict[str, Any]:
    """Table 5: correlations of perturbations / gradients across configurations."""
    from art_diffpure.metrics.correlation import perturbation_correlation

    s, x = setting.sizes, setting.x
    xe = x[: s.eot_images]
    t5: dict[str, Any] = {}
    if len(s.seeds) > 1:
        t5["perturbation_fixed_vs_fixed"] = perturbation_correlation(x, adv_aligned[s.seeds[0]],
                                                                     adv_aligned[s.seeds[1]])
    t5["perturbation_eot_vs_fixed"] = perturbation_correlation(xe, adv_eot, adv_aligned[s.seeds[0]][: len(xe)])
    t5["gradients"] = done["table5 gradients"]
    return t5


def _table6_row(setting: Setting, purifier, report: dict[str, Any], x_adv: np.ndarray,
                uniform: dict[str, float]) -> dict[str, Any]:
    """Table 6 for one sampler: compression rates (uniform; PGD, robust / non-robust images), aligned accuracy."""
    from art_diffpure import metrics

    s, x = setting.sizes, setting.x
    success = np.asarray(report["success"], dtype=bool)
    adv_rate = metrics.compression_rate(purifier, x, perturbed=x_adv, seeds=(s.seeds[0],), batch_size=s.batch_size)
    per_image = np.asarray(adv_rate.per_image["l2"])
    return {
        "compression_uniform": (uniform["mean"], uniform["std"]),
        "compression_pgd_robust": _masked_mean_std(per_image, ~success),
        "compression_pgd_nonrobust": _masked_mean_std(per_image, success),
        "aligned_robust_accuracy": report["robust_accuracy"],
        "clean_accuracy": report["clean_accuracy"],
        "mean_perturbation_l2": float(np.linalg.norm((x_adv - x).reshape(len(x), -1), axis=1).mean()),
        "n": int(report["n"]), "seed": int(s.seeds[0]),
        "adv_correct": list(report["adv_correct"]), "clean_correct": list(report["clean_correct"]),
    }


def _table1_row(setting: Setting, purifier, report: dict[str, Any],
                x_adv: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """Table 1 for one sampler (distances before -> after purification, feature-FID) and its Fig. 1c curve."""
    from scipy.linalg import LinAlgWarning

    from art_diffpure import metrics

    s, x = setting.sizes, setting.x
    traj = metrics.trajectory_distances(purifier, x, x_adv, seed=s.seeds[0], batch_size=s.batch_size)
    feats = _features_fn(setting)
    # With fewer images than feature dimensions the feature covariances are singular and scipy's sqrtm
    # warns that its square root may be inaccurate: record that with the value instead of printing it.
    with _recorded(LinAlgWarning) as fid_warnings:
        fid_before = metrics.feature_fid_from_model(feats, x_adv, x)
        fid_after = metrics.feature_fid_from_model(feats, purifier.purify(x_adv, seed=s.seeds[0]),
                                                   purifier.purify(x, seed=s.seeds[0]))
    row = {"mean": traj.mean, "std": traj.std, "fid": (fid_before, fid_after),
           "fid_warnings": sorted(set(fid_warnings)),
           "attack": f"aligned PGD, seed {s.seeds[0]} (the Table 6 attack)",
           "adv_correct": list(report["adv_correct"]),
           "per_image": {m: {k: np.asarray(traj.per_image[m][k]).tolist() for k in ("start", "end")}
                         for m in (norm_label(2), norm_label(np.inf), "ssim")}}
    return row, np.asarray(traj.l2_trajectory).mean(axis=1)


def _tables_6_and_1(setting: Setting, timer: _Timer, ddpm, table2: dict[str, Any], adv_aligned: dict[int, np.ndarray],
                    done: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """Table 6 and Table 1 per sampler at t*, on the aligned attack of the first seed: (table6, table1, fig1c)."""
    table6, table1, fig1c = {}, {}, {}
    for sampler in SAMPLERS:
        purifier = ddpm if sampler == "ddpm" else setting.make_purifier(sampler, setting.t_star, 0, setting.gradient)
        with timer(f"table6 {sampler}"):
            if sampler == "ddpm":
                report, x_adv = table2["aligned"][0], adv_aligned[setting.sizes.seeds[0]]
            else:
                report, x_adv = done[f"table6 {sampler} attack"]
            table6[sampler] = _table6_row(setting, purifier, report, x_adv, done[f"table6 {sampler} compression"])
        with timer(f"table1 {sampler}"):
            table1[sampler], fig1c[sampler] = _table1_row(setting, purifier, report, x_adv)
    return table6, table1, fig1c


def _sweep_results(setting: Setting, done: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """Table 7 / Fig. 3b rows per configuration: compression, and aligned accuracy per seed and as the seed mean."""
    s = setting.sizes
    n = min(s.sweep_images, s.n_images)
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for sampler, t in _sweep_configs(setting):
        reports = [EvaluationResult.from_dict(done[_reused_attack(setting, sampler, t, seed)
                                                   or f"sweep {sampler} t*={t} seed {seed} attack"][0]).head(n).to_dict()
                   for seed in s.sweep_seed_list()]
        rate = done[f"sweep {sampler} t*={t} compression"]
        robust = [r["robust_accuracy"] for r in reports]
        clean = [r["clean_accuracy"] for r in reports]
        out[(sampler, t)] = {
            "t_star": t, "compression": rate["mean"], "compression_std": rate["std"],
            "aligned_robust_accuracy": float(np.mean(robust)), "aligned_robust_accuracy_per_seed": robust,
            "clean_accuracy": float(np.mean(clean)), "n": n, "seeds": list(s.sweep_seed_list()),
            "adv_correct": [list(r["adv_correct"]) for r in reports],
            "clean_correct": [list(r["clean_correct"]) for r in reports]}
    return out


def _table7(sweep: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    """Table 7: every sweep configuration with every seed on the first sweep_images images."""
    table7: dict[str, Any] = {"t_star": sorted({t for k, t in sweep if k != "ddim"})}
    for sampler in ("ddpm", "reverse"):
        table7[sampler] = [row for (k, _), row in sweep.items() if k == sampler]
    return table7


def _fig3b(setting: Setting, sweep: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    """Fig. 3b: the compression law over the distinct configurations, each with every seed."""
    from scipy.optimize import OptimizeWarning

    from art_diffpure import metrics
    from art_diffpure.reproduce import laws

    s = setting.sizes
    points = [(row["compression"], row["aligned_robust_accuracy"], f"{k} t*={t}") for (k, t), row in sweep.items()]
    points, dropped = laws.distinct_points(points)
    fig3b: dict[str, Any] = {"points": points, "duplicates_removed": dropped,
                             "n_seeds_per_point": len(s.sweep_seed_list()),
                             "n_images_per_point": min(s.sweep_images, s.n_images), "warnings": [],
                             "adv_correct": {f"{k} t*={t}": row["adv_correct"] for (k, t), row in sweep.items()}}
    try:
        with _recorded(OptimizeWarning) as fit_warnings:
            fit = metrics.fit_compression_law([p[0] for p in points], [p[1] for p in points])
        fig3b["fit"] = fit.to_dict()
        fig3b["fit_predict_at_0"] = float(fit.predict(0.0))
        fig3b["warnings"] += sorted(set(fit_warnings))
        lo, hi = min(p[0] for p in points), max(p[0] for p in points)
        c0 = fit.params["c0"]
        fig3b["inflection"] = c0
        fig3b["inflection_in_data_range"] = bool(lo <= c0 <= hi)
        if not lo <= c0 <= hi:
            fig3b["warnings"].append(
                f"the fitted inflection c0 = {c0:.3g} lies outside the data's compression range [{lo:.3g}, "
                f"{hi:.3g}]: the sigmoid is extrapolated, its shape is not supported by the data")
    except (ValueError, RuntimeError) as err:  # too few or degenerate points: say so, do not invent a fit
        fig3b["fit"] = None
        fig3b["fit_error"] = str(err)
    return fig3b


def judge(res: dict[str, Any]) -> None:
    """Intervals, paired comparisons and the verdicts on the laws (statistics only: no model calls), into ``res``."""
    from art_diffpure.reproduce import laws

    from art_diffpure.reproduce import post_hoc

    evaluation = laws.evaluate(res)
    res["statistics"] = {k: evaluation[k] for k in ("accuracies", "comparisons", "thresholds")}
    res["laws"] = evaluation["laws"]
    points = laws.distinct_points(res["fig3b"]["points"])[0] if (res.get("fig3b") or {}).get("points") else []
    res["post_hoc"] = {"compression_law_shape": post_hoc.compression_law_shape(points),
                       "claims": post_hoc.other_claims(res)}


# ---------------------------------------------------------------------------------------------- the runs
def run_experiments(setting: Setting, timer: _Timer, n_procs: int = 1, args: Any = None,
                    store: Any = None) -> dict[str, Any]:
    """
    Run every experiment of the setting and return plain results (no files written here but ``store``'s). With
    ``n_procs > 1`` the independent experiments run in that many processes, each rebuilding the setting from
    ``args``; with a :class:`~art_diffpure.reproduce.store.RunStore` finished experiments are kept and resumed.
    """
    res: dict[str, Any] = {"setting": _setting_record(setting)}
    with timer("undefended"):
        res["undefended"] = _undefended(setting)
    done = _run_jobs(setting, _jobs(setting), n_procs, args, timer, store)
    ddpm = setting.make_purifier("ddpm", setting.t_star, 0, setting.gradient)
    res["table2"], adv_aligned, adv_eot = _table2(setting, done)
    with timer("table4"):
        res["table4"] = _table4(setting, ddpm, adv_aligned)
    with timer("repeated test draws"):
        res["repeated_draws"] = _repeated_draws(setting, done)
    res["table5"] = _table5(setting, done, adv_aligned, adv_eot)
    res["table6"], res["table1"], res["fig1c"] = _tables_6_and_1(setting, timer, ddpm, res["table2"], adv_aligned,
                                                                 done)
    sweep = _sweep_results(setting, done)
    res["table7"] = _table7(sweep)
    with timer("fig3b"):
        res["fig3b"] = _fig3b(setting, sweep)
    # Tables S5, S6, Fig. 2d-f (neighbourhood analysis), robustness curves, diagnostics, Fig. 3a
    res.update(done["tableS5 S6"])
    res["robustness_curve"] = done["robustness curves"]
    res["diagnostics"] = done["gradient-masking diagnostics"]
    res["fig3a"] = done["fig3a"]
    with timer("statistics"):
        judge(res)
    return res


def run_imagenet_experiments(setting: Setting, timer: _Timer, store: Any = None) -> dict[str, Any]:
    """Table 3 (BPDA and BPDA-EOT with and without fixed randomness) and Table S2 (distances along DiffPure)."""
    from art_diffpure import metrics

    s, x, y = setting.sizes, setting.x, setting.y
    res: dict[str, Any] = {"setting": _setting_record(setting)}
    purifier = setting.make_purifier("ddpm", setting.t_star, 0, setting.gradient)
    table3: dict[str, Any] = {"aligned": [], "stochastic": []}
    adv: dict[str, np.ndarray] = {}

    def unit(name: str, compute):  # one attack: loaded from the store when a previous run finished it
        found = store.load(name) if store is not None else None
        if found is not None:
            timer.times[name] = found[1]
            return found[0]
        with timer(name):
            result = compute()
        if store is not None:
            store.save(name, result, timer.times[name])
        return result

    for seed in s.seeds:
        for mode in ("aligned", "stochastic"):
            report, x_adv = unit(f"table3 {mode} seed {seed}", lambda: _run_attack(setting, purifier, mode, seed, x, y))
            table3[mode].append(report)
            adv.setdefault(mode, x_adv)
    table3["eot_stochastic"], adv["eot"] = unit("table3 eot", lambda: _run_attack(
        setting, purifier, "stochastic", s.seeds[0], x[: s.eot_images], y[: s.eot_images], eot=s.eot_samples))
    res["table3"] = table3
    with timer("tableS2"):
        res["tableS2"] = {
            name: metrics.trajectory_distances(purifier, x[: len(v)], v, seed=s.seeds[0],
                                               batch_size=s.batch_size).to_dict()
            for name, v in (("bpda", adv["aligned"]), ("bpda_eot", adv["eot"]))}
    return res
