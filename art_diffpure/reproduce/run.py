"""
The only part of ``art-diffpure reproduce`` that writes files or prints: :func:`run_preset` runs a preset and
:func:`write_report` writes its report directory.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from typing import Any

import numpy as np

from art_diffpure.reproduce import render as rp
from art_diffpure.reproduce.experiments import judge, run_experiments, run_imagenet_experiments
from art_diffpure.reproduce.figures import figures
from art_diffpure.reproduce.jobs import _Timer, cpu_threads, n_processes
from art_diffpure.reproduce.markdown import imagenet_markdown, markdown
from art_diffpure.reproduce.presets import Setting, build_setting
from art_diffpure.reproduce.store import RunStore, atomic_write

__all__ = ["rejudge", "run_preset", "write_report"]


def _strip_timings(obj: Any, path: str, sink: dict) -> Any:
    """Move wall-clock entries out of the results (they differ between identical runs)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, str) and (k.endswith("time_s") or k.startswith("time_per_")):
                sink[f"{path}.{k}"] = v
            else:
                out[k] = _strip_timings(v, f"{path}.{k}", sink)
        return out
    if isinstance(obj, list):
        return [_strip_timings(v, f"{path}[{i}]", sink) for i, v in enumerate(obj)]
    return obj


def write_report(results: dict[str, Any], timings: dict[str, float], out: str) -> None:
    """The figures, report.md, timings.json and, last and atomically, results.json (its presence means done)."""
    os.makedirs(out, exist_ok=True)
    rp.write_json(os.path.join(out, "timings.json"), timings)
    if results["setting"]["preset"] == "imagenet":
        text = imagenet_markdown(results, timings)
    else:
        text = markdown(results, timings, figures(results, out))
    with open(os.path.join(out, "report.md"), "w") as handle:
        handle.write(text)
    atomic_write(os.path.join(out, "results.json"), rp.json_text(results).encode())


def rejudge(out: str) -> dict[str, Any]:
    """
    Recompute the intervals, comparisons and verdicts of a finished report from the per-image outcomes its
    ``results.json`` holds (no model runs) and rewrite its files: what a reviewer runs to check a report against
    today's statistics code. On an unchanged code base the files come out byte-identical.
    """
    path = os.path.join(out, "results.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: only a finished report can be judged again")
    with open(path) as handle:
        results = json.load(handle)
    timings_path = os.path.join(out, "timings.json")
    timings: dict[str, float] = {}
    if os.path.isfile(timings_path):
        with open(timings_path) as handle:
            timings = json.load(handle)
    if results["setting"]["preset"] != "imagenet":
        judge(results)
    write_report(results, timings, out)
    return results


def run_identity(setting: Setting, args: Any) -> dict[str, Any]:
    """Everything that decides a run's results (not ``--jobs``, ``--threads``, ``--out``): its fingerprint."""
    import art
    import diffusers
    import torch

    import art_diffpure

    data = hashlib.sha256(np.ascontiguousarray(setting.x).tobytes() + np.ascontiguousarray(setting.y).tobytes())
    return {"preset": setting.name, "quick": bool(getattr(args, "quick", False)), "device": setting.device,
            "eps": setting.eps, "t_star": setting.t_star, "gradient": setting.gradient,
            "sizes": dataclasses.asdict(setting.sizes), "data_sha256": data.hexdigest(),
            "model_dir": getattr(args, "model_dir", None), "diffusion": getattr(args, "diffusion", None),
            "versions": {"art_diffpure": art_diffpure.__version__, "torch": torch.__version__,
                         "art": art.__version__, "diffusers": diffusers.__version__}}


def run_preset(args) -> dict[str, Any]:
    """
    Build the preset's setting, run it (resuming what ``args.out`` already holds from the same settings), write
    the report; returns the results. A finished report with the same settings is returned, not recomputed; one
    with other settings raises :class:`~art_diffpure.reproduce.store.RunMismatch` unless ``args.force``.
    """
    import torch

    setting = build_setting(args)
    store = RunStore(args.out, run_identity(setting, args), force=bool(getattr(args, "force", False)),
                     command="art-diffpure reproduce")
    if store.report_finished():
        print(f"{os.path.join(args.out, 'report.md')} is already finished with these settings; nothing to do "
              f"(--force reruns it)")
        with open(os.path.join(args.out, "results.json")) as handle:
            return json.load(handle)
    if setting.device == "cpu":
        torch.set_num_threads(cpu_threads(args))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.use_deterministic_algorithms(False)
    timer = _Timer()
    t0 = time.perf_counter()
    if setting.name == "imagenet":
        results = run_imagenet_experiments(setting, timer, store)
    else:
        n_procs = n_processes(args, setting)
        results = run_experiments(setting, timer, n_procs, args, store)
        timer.times["processes"] = n_procs
    timings = {k: v for k, v in timer.times.items()}
    results = _strip_timings(results, "results", timings)
    timings["total"] = time.perf_counter() - t0
    # The report is written from results.json's own content (sorted keys, JSON types), so that --rejudge, which
    # has only that file, rewrites it byte for byte.
    results, timings = json.loads(rp.json_text(results)), json.loads(rp.json_text(timings))
    write_report(results, timings, args.out)
    print(f"report written to {os.path.join(args.out, 'report.md')} ({timings['total']:.0f} s)")
    return results
