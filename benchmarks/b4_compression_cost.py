"""B4: the cost of the compression-rate estimate against the aligned PGD-40 robust accuracy, same images.

Compression rate: :func:`art_diffpure.metrics.compression_rate` (``n_samples`` perturbed copies per image in
the eps-ball, one seed: ``n_samples + 1`` purifications per image, forward only). Robust accuracy:
``RandomnessAlignedAttack(randomness="aligned")`` PGD-40 (40 full gradients through the purifier plus the
test predictions). The estimate's cost is its UNet forward work, set by ``n_samples``, so B4 reports the
pre-registered trade-off ``n_samples`` in {2, 4, 8} (``--n-samples``), every value, with two run modes:

Timing (default; writes ``results/b4_compression_cost.json``): the estimate for each ``n_samples`` and the one
PGD-40 run on the same images. The estimates are timed in rounds (each ``n_samples`` once per round, the order
reversed every other round), ``--repeats`` rounds before the attack and as many after it; per ``n_samples`` the
median seconds, the ratio PGD / estimate and whether it meets the 50x target (``per_n_samples``). The top-level
keys ``compression_rate_*``, ``cost_ratio`` and ``targets.met`` describe ``n_samples`` = 8 (the reports' value;
the largest given value when 8 is not among them, named by ``reference_n_samples``).

Agreement (``--agreement [DIR]``, default ``docs/digits-report-confirmatory``; writes
``results/b4_compression_agreement.json``): what the cheaper estimates give up. DIR is a digits report of
``art-diffpure reproduce``; its ``fig3b.points`` pair each t* sweep configuration's compression rate (8 samples)
with its aligned PGD-40 robust accuracy (mean of the seeds). The compression rate of every configuration is
recomputed for each ``n_samples`` exactly as the report's job computed it (same setting, images, eps, seed,
perturbation generator, purifier; only ``n_samples`` changed). The report's own value checks the run: the
recomputation at the report's ``n_samples`` must reproduce it (``reproduces_report``). Per ``n_samples``: the
Spearman rho (and p) between the compression rates and the robust accuracies over the configurations, and the
Spearman rho with the ranking at the report's ``n_samples``. The first k of 8 draws are not what ``n_samples=k``
draws (the generator draws each image's copies in turn), so every ``n_samples`` is recomputed, never subsampled.

    python benchmarks/b4_compression_cost.py                # timing: N=16 digits, t*=100, n_samples 2 4 8
    python benchmarks/b4_compression_cost.py --smoke
    python benchmarks/b4_compression_cost.py --agreement --threads 1 [docs/digits-report]
    python benchmarks/b4_compression_cost.py --agreement --smoke   # 3 configurations, 4 images
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib

import _common as common  # noqa: E402
from art_diffpure.evaluations.aligned import evaluate_aligned

NAME = "b4_compression_cost"
AGREEMENT_NAME = "b4_compression_agreement"
#: The pre-registered sample counts (every one is reported; none is chosen after seeing the results).
N_SAMPLES = (2, 4, 8)
TARGET_RATIO = 50.0
DEFAULT_REPORT = os.path.join(common.ROOT, "docs", "digits-report-confirmatory")
#: ``--agreement --smoke``: the first configurations and images of the report (a check that the mode runs).
SMOKE_CONFIGS, SMOKE_IMAGES = 3, 4


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=None)
    p.add_argument("--t-star", type=int, default=None)
    common.add_checkpoint_arg(p)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--n-samples", type=int, nargs="+", default=list(N_SAMPLES),
                   help="perturbed copies per image of each timed estimate (default: 2 4 8)")
    p.add_argument("--agreement", nargs="?", const=DEFAULT_REPORT, default=None, metavar="DIR",
                   help="instead of timing: Spearman agreement of each estimate with the robust accuracies of the "
                        "report in DIR (default docs/digits-report-confirmatory)")
    args = p.parse_args(argv)
    if min(args.n_samples) < 2:
        p.error("--n-samples: each value must be at least 2 (compression_rate's minimum)")
    threads = common.setup_threads(args.threads)
    return agreement(args, threads) if args.agreement else timing(args, threads)


# ---------------------------------------------------------------------------------------------- timing
def _reference_k(ks) -> int:
    """The k the top-level keys describe: 8 (the reports' sample count) when timed, else the largest."""
    return 8 if 8 in ks else max(ks)


def _time_rounds(run, ks, rounds: int, times: dict, reverse_first: bool) -> dict:
    """``rounds`` rounds of one estimate per k, appended to ``times[k]``; alternate rounds reverse the order so that
    no k always runs first. Returns the last result per k."""
    results = {}
    for r in range(rounds):
        order = list(ks)[::-1] if (r % 2 == 0) == reverse_first else list(ks)
        for k in order:
            t, results[k] = common.timed(lambda: run(k), 1)
            times[k] += t
    return results


def _per_k(ks, times: dict, rates: dict, pgd_median: float) -> list[dict]:
    """One row per k: its times, median, rate, ratio PGD / estimate and whether the ratio meets the target."""
    rows = []
    for k in ks:
        med = common.median(times[k])
        ratio = pgd_median / med
        rows.append({"n_samples": k, "purifications_per_image": k + 1, "compression_rate_s": times[k],
                     "median_s": med, "compression_rate_l2": rates[k].rate, "cost_ratio": ratio,
                     "target_met": ratio >= TARGET_RATIO})
    return rows


def timing(args, threads: int) -> dict:
    """The timing mode: each estimate side by side with one aligned PGD run on the same images."""
    n = args.n_images or (2 if args.smoke else 16)
    t_star = args.t_star or (3 if args.smoke else 100)
    steps = args.steps or (2 if args.smoke else 40)
    ks = list(dict.fromkeys(args.n_samples))
    repeats_pgd = 1
    rounds = args.repeats or (1 if args.smoke else 5)

    from art_diffpure.attacks import RandomnessAlignedAttack
    from art_diffpure.metrics import compression_rate

    eps, eps_source = common.recommended_eps()
    x, y = common.digits_data(n)
    classifier, purifier, sources = common.digits_setup(t_star, checkpoint=common.checkpoint_value(args), seed=0,
                                                        batch_size=256)
    attack = RandomnessAlignedAttack(classifier, randomness="aligned", seed=0, eps=eps, eps_step=eps / 30,
                                     max_iter=steps, batch_size=n)

    def run_cr(k):
        return compression_rate(purifier, x, eps=eps, n_samples=k, seeds=(0,), norm="l2", batch_size=256)

    times = {k: [] for k in ks}
    _time_rounds(run_cr, ks, rounds, times, reverse_first=False)
    # one untimed gradient at the attack's shapes (the estimates' medians absorb their own cold first round), its
    # noise discarded: the timed run builds its noise as a cold run does
    attack.loss_gradient(x, y)
    purifier._noise_cache.clear()
    t_pgd, report = common.timed(lambda: evaluate_aligned(attack, x, y).to_dict(), repeats_pgd)
    # again after the attack: same machine state on both sides
    rates = _time_rounds(run_cr, ks, rounds, times, reverse_first=rounds % 2 == 1)
    per_k = _per_k(ks, times, rates, common.median(t_pgd))
    ref = next(row for row in per_k if row["n_samples"] == _reference_k(ks))
    result = {
        "benchmark": NAME, "smoke": bool(args.smoke),
        "settings": {"checkpoint": args.checkpoint, "n_images": n, "t_star": t_star, "pgd_steps": steps, "eps": eps,
                     "eps_source": eps_source, "compression_n_samples": ks, "compression_seeds": [0],
                     "rounds_before_and_after_attack": rounds, "threads": threads, "models": sources},
        "per_n_samples": per_k, "reference_n_samples": ref["n_samples"],
        "compression_rate_s": ref["compression_rate_s"], "compression_rate_median_s": ref["median_s"],
        "compression_rate_l2": ref["compression_rate_l2"],
        "pgd_s": t_pgd, "pgd_median_s": common.median(t_pgd), "robust_accuracy": report["robust_accuracy"],
        "clean_accuracy": report["clean_accuracy"],
        "purifications_per_image": {"compression": ref["purifications_per_image"],
                                    "pgd_gradients": steps, "pgd_test_predictions": 3},
        "cost_ratio": ref["cost_ratio"],
        "targets": {"cheaper_by_at_least": TARGET_RATIO, "met": ref["target_met"],
                    "met_by_n_samples": [row["n_samples"] for row in per_k if row["target_met"]]},
    }
    for row in per_k:
        print(f"n_samples {row['n_samples']}: compression {row['median_s']:.2f}s ratio {row['cost_ratio']:.1f}x")
    print(f"PGD {result['pgd_median_s']:.1f}s")
    common.write_json(result, args.out, NAME)
    return result


# ---------------------------------------------------------------------------------------------- agreement
def _report_setting(report: dict):
    """The digits setting the report ran with, rebuilt by the preset; refuses a report whose recorded setting
    differs from the rebuilt one (other sizes, eps or t*: the recomputation would not be the report's)."""
    from art_diffpure.reproduce.experiments import _setting_record
    from art_diffpure.reproduce.presets import digits_setting

    recorded = report["setting"]
    if recorded.get("preset") != "digits":
        raise SystemExit(f"--agreement: the report's preset is {recorded.get('preset')!r}, only digits is rebuilt")
    # the rule by which the report renderer tells the confirmatory run (images 128-383) from the default one
    confirmatory = any("CONFIRMATORY" in note for note in recorded.get("notes", []))
    setting = digits_setting(False, "cpu", None, None, verbose=False, confirmatory=confirmatory)
    rebuilt = json.loads(json.dumps(_setting_record(setting)))
    for key in ("eps", "t_star", "gradient", "sizes", "notes"):
        if rebuilt[key] != recorded.get(key):
            raise SystemExit(f"--agreement: the report's setting {key!r} differs from the rebuilt digits setting "
                             f"({recorded.get(key)!r} vs {rebuilt[key]!r})")
    return setting, confirmatory


def _recompute(setting, configs, k: int, n: int) -> list[float]:
    """The compression rate of each configuration with ``n_samples=k``, by the report's own job on a fresh
    purifier (its seeding, images, eps, seed and batch size)."""
    from art_diffpure.reproduce.jobs import _run_job

    with_k = dataclasses.replace(setting, sizes=dataclasses.replace(setting.sizes, compression_samples=k))
    return [_run_job(with_k, "compression", dict(sampler=sampler, t_star=t, n=n))["mean"] for sampler, t in configs]


def _spearman(a, b) -> tuple[float | None, float | None]:
    from scipy.stats import spearmanr

    rho, p = spearmanr(a, b)
    return tuple(None if math.isnan(v) else float(v) for v in (rho, p))


def _load_report(directory: str) -> tuple[dict, dict]:
    """results.json of ``directory`` and its Fig. 3b points keyed by configuration label."""
    report = json.loads(pathlib.Path(directory, "results.json").read_text(encoding="utf-8"))
    points = {label: (compression, robust) for compression, robust, label in report["fig3b"]["points"]}
    return report, points


def agreement(args, threads: int) -> dict:
    """The agreement mode: each ``n_samples``'s compression rates against the report's aligned robust accuracies."""
    import time

    from art_diffpure.reproduce.jobs import _sweep_configs

    directory = os.path.abspath(args.agreement)
    report, points = _load_report(directory)
    setting, confirmatory = _report_setting(report)
    s = setting.sizes
    configs = [c for c in _sweep_configs(setting) if f"{c[0]} t*={c[1]}" in points]
    n = min(s.sweep_images, s.n_images)
    if args.smoke:
        configs, n = configs[:SMOKE_CONFIGS], min(n, SMOKE_IMAGES)
    labels = [f"{sampler} t*={t}" for sampler, t in configs]
    ks = list(dict.fromkeys(args.n_samples))
    if s.compression_samples not in ks:
        raise SystemExit(f"--agreement: --n-samples must include the report's {s.compression_samples} (the check "
                         "that the recomputation reproduces the report, and the reference ranking)")
    robust = [points[label][1] for label in labels]
    rates, seconds = {}, {}
    for k in ks:
        t0 = time.perf_counter()
        rates[k] = _recompute(setting, configs, k, n)
        seconds[k] = time.perf_counter() - t0
        print(f"n_samples {k}: {seconds[k]:.0f}s rho {_spearman(rates[k], robust)[0]}")
    reported = [points[label][0] for label in labels]
    diff = max(abs(a - b) for a, b in zip(rates[s.compression_samples], reported))
    result = {
        "benchmark": AGREEMENT_NAME, "smoke": bool(args.smoke),
        "settings": {"report": os.path.relpath(directory, common.ROOT), "confirmatory": confirmatory,
                     "n_images": n, "n_configurations": len(configs), "eps": setting.eps,
                     "compression_seed": s.seeds[0], "batch_size": s.batch_size, "n_samples": ks,
                     "report_n_samples": s.compression_samples, "threads": threads,
                     "robust_accuracy": "the report's fig3b aligned PGD robust accuracy, mean over seeds "
                                        f"{list(s.sweep_seed_list())}, on {min(s.sweep_images, s.n_images)} images"},
        "configurations": [{"label": label, "compression_report": reported[i], "robust_accuracy": robust[i],
                            "compression_by_n_samples": {str(k): rates[k][i] for k in ks}}
                           for i, label in enumerate(labels)],
        "reproduces_report": None if args.smoke else {"n_samples": s.compression_samples, "max_abs_diff": diff},
        "agreement": _agreement_rows(rates, robust, s.compression_samples, seconds),
    }
    if args.smoke:
        result["reproduces_report_note"] = "not checked: a smoke run uses fewer images than the report"
    common.write_json(result, args.out, AGREEMENT_NAME)
    return result


def _agreement_rows(rates: dict, robust: list, reference: int, seconds: dict) -> list[dict]:
    """Per ``n_samples``: Spearman rho and p against the robust accuracies, and against the reference's rates."""
    rows = []
    for k, values in rates.items():
        rho, p = _spearman(values, robust)
        rows.append({"n_samples": k, "spearman_rho": rho, "spearman_p": p,
                     "rank_rho_with_reference": _spearman(values, rates[reference])[0],
                     "same_ranking_as_reference": _order(values) == _order(rates[reference]),
                     "seconds": seconds[k]})
    return rows


def _order(values) -> list[int]:
    """The configurations' indices from the lowest compression rate to the highest."""
    return sorted(range(len(values)), key=lambda i: values[i])


if __name__ == "__main__":
    main()
