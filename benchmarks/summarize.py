"""Print a markdown summary of benchmarks/results/*.json (the figures BENCHMARKS.md reports).

    python benchmarks/summarize.py [results_dir]

Smoke output is never summarised: ``results/smoke/`` is not read, and a file marked ``"smoke": true`` (a smoke run
given ``--out``) is skipped with a note.
"""
from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def load(directory: str, name: str) -> dict | None:
    """The result ``<directory>/<name>.json``, or ``None`` when it is missing or comes from a ``--smoke`` run."""
    path = os.path.join(directory, f"{name}.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if data.get("smoke"):
        print(f"(skipped {path}: a --smoke run, not a result)", file=sys.stderr)
        return None
    return data


def main(directory: str | None = None) -> None:
    directory = directory or os.path.join(HERE, "results")
    b1 = load(directory, "b1_paper_pipeline")
    if b1:
        s = b1["settings"]
        print(f"## B1 ({b1['environment']['command']}; {s['n_images']} images, t*={s['t_star']}, "
              f"PGD-{s['pgd_steps']}, eps={s['eps']:.4g}, {s['threads']} threads)")
        print(f"- ours {b1['ours']['wall_time_s']:.1f} s (attack {b1['ours']['attack_time_s']:.1f} s), robust "
              f"{b1['ours']['robust_accuracy']:.4f}; paper {b1['paper']['wall_time_s']:.1f} s (attack "
              f"{b1['paper']['attack_time_s']:.1f} s), robust {b1['paper']['robust_accuracy']:.4f}")
        print(f"- speedup {b1['speedup']:.2f}x (attack only {b1['speedup_attack_only']:.2f}x); robust-accuracy "
              f"difference {b1['robust_accuracy_diff_points']:.2f} points; adv_pred agreement "
              f"{b1['adv_pred_agreement']:.3f}; max |x_adv diff| {b1['x_adv_max_abs_diff']:.2e}")
        print(f"- noise: {b1['noise']}")
        print(f"- paper reseed+draw share of its attack: {b1['paper']['noise_share_of_attack']:.4f}")
        print(f"- gradient throughput: {json.dumps(b1.get('gradient_throughput'), indent=1)}")
    for name in ("b1_paper_pipeline", "b1_paper_pipeline_64_pgd5", "b1_paper_pipeline_unet_work",
                 "b1_paper_pipeline_64_pgd5_intel_xeon"):
        run = load(directory, name)
        if run:  # the UNet's own work ratio, batch n vs batch 1, per backend measured (it bounds B1's speed-up)
            ratios = {k[len("unet_work_ratio_"):]: round(v, 2) for k, v in run["unet_work"].items()
                      if k.startswith("unet_work_ratio_")}
            print(f"- {name} UNet work ratio at {run['settings']['n_images']} images ({run['environment']['cpu']}): "
                  f"{ratios}")
    b2 = load(directory, "b2_memory")
    if b2:
        print(f"## B2 ({b2['environment']['command']}; metric {b2['metric']})")
        print("| model | batch | t* | checkpoint | peak - baseline (MiB) | live tensors (MiB) | time (s) |")
        print("|---|---|---|---|---|---|---|")
        for r in b2["rows"]:
            key = b2["metric"]
            live = f"{r['live_tensor_peak_mib']:.1f}" if "live_tensor_peak_mib" in r else "-"
            print(f"| {r['model']} | {r['batch']} | {r['t_star']} | {r['checkpoint']} | {r[key]:.1f} | {live} | "
                  f"{r['time_s']:.1f} |")
        print(f"summary: {json.dumps(b2['summary'], indent=1)}")
    b3 = load(directory, "b3_eot")
    if b3:
        print(f"## B3 ({b3['environment']['command']})")
        print(f"- batched {b3['batched_median_s']:.2f} s {b3['batched_s']}, sequential {b3['sequential_median_s']:.2f}"
              f" s {b3['sequential_s']}, speedup {b3['speedup']:.2f}x, max rel diff {b3['grad_max_rel_diff']:.2e}, "
              f"cosine {b3['grad_cosine']:.8f}")
    b4 = load(directory, "b4_compression_cost")
    if b4:
        print(f"## B4 ({b4['environment']['command']})")
        print(f"- compression {b4['compression_rate_median_s']:.2f} s {b4['compression_rate_s']}, rate "
              f"{b4['compression_rate_l2']:.4f}; PGD {b4['pgd_median_s']:.1f} s, robust {b4['robust_accuracy']:.4f}; "
              f"ratio {b4['cost_ratio']:.1f}x")
        for row in b4.get("per_n_samples", []):
            print(f"  - n_samples {row['n_samples']}: {row['median_s']:.2f} s {row['compression_rate_s']}, ratio "
                  f"{row['cost_ratio']:.1f}x, target met {row['target_met']}")
    for name in ("b4_compression_agreement", "b4_compression_agreement_default_report"):
        agreement = load(directory, name)
        if agreement:
            check = agreement["reproduces_report"]
            print(f"## B4 agreement ({agreement['environment']['command']}; report {agreement['settings']['report']}, "
                  f"{agreement['settings']['n_configurations']} configurations, {agreement['settings']['n_images']} "
                  f"images; n_samples {check['n_samples']} reproduces the report to {check['max_abs_diff']:.1e})")
            for row in agreement["agreement"]:
                print(f"  - n_samples {row['n_samples']}: Spearman rho {row['spearman_rho']:.3f} (p "
                      f"{row['spearman_p']:.2g}), rank rho with the reference {row['rank_rho_with_reference']:.3f}")
    for name in ("b1_paper_pipeline", "b1_paper_pipeline_unet_work", "b2_memory", "b3_eot", "b4_compression_cost", "b4_compression_agreement",
                 "b4_compression_agreement_default_report"):
        d = load(directory, name)
        if d:
            e = d["environment"]
            print(f"- {name}: {e['date_utc']} load {e['loadavg_at_start']} threads {e['torch_threads']} "
                  f"cpu {e['cpu']} torch {e['torch']} diffusers {e['diffusers']} art {e['art']}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
