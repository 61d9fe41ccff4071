"""Every benchmark script runs in --smoke mode and writes a JSON with its keys (no timing asserted)."""
from __future__ import annotations

import importlib
import json
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")

CASES = {
    "b1_paper_pipeline": (["speedup", "ours", "paper", "robust_accuracy_diff_points", "x_adv_max_abs_diff", "noise"],
                          []),
    "b2_memory": (["rows", "summary", "metric"], ["--in-process", "--live"]),
    "b3_eot": (["speedup", "batched_median_s", "sequential_median_s", "grad_max_rel_diff"], []),
    "b4_compression_cost": (["cost_ratio", "compression_rate_median_s", "pgd_median_s", "robust_accuracy"], []),
    "b5_gpu": (["rows", "flops", "measured_peak_flops_per_s", "projection"], []),
    "b6_purification_attacks": (["time_ratio", "memory_ratio", "diffhammer_median_s", "pgd_eot_median_s", "memory"],
                                []),
}


@pytest.fixture(scope="module")
def bench_path():
    sys.path.insert(0, BENCH)  # the scripts import their _common helper
    yield
    sys.path.remove(BENCH)


@pytest.mark.parametrize("name", sorted(CASES))
def test_smoke(name, tmp_path, bench_path):
    keys, extra = CASES[name]
    out = tmp_path / f"{name}.json"
    module = importlib.import_module(name)  # in-process: no second torch/ART import per script
    module.main(["--smoke", "--threads", "1", "--out", str(out), *extra])
    data = json.loads(out.read_text())
    assert data["benchmark"] == name and data["smoke"] is True
    for key in keys + ["environment", "settings"]:
        assert key in data, key
    assert data["environment"]["torch"]


# ---------------------------------------------------------------------------------------------- smoke output location
SCRIPTS = sorted(f[:-3] for f in os.listdir(BENCH) if f.startswith("b") and f.endswith(".py"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_writes_only_through_write_json(name):
    """Every script marks smoke runs and writes by ``_common.write_json`` (which sends smoke runs to results/smoke)."""
    with open(os.path.join(BENCH, f"{name}.py"), encoding="utf-8") as f:
        source = f.read()
    assert '"smoke": bool(args.smoke)' in source
    assert "common.write_json(result, args.out, NAME)" in source
    assert "RESULTS_DIR" not in source and "open(" not in source


def test_smoke_without_out_goes_to_the_ignored_smoke_dir(tmp_path, monkeypatch, bench_path):
    common = importlib.import_module("_common")
    results, smoke = tmp_path / "results", tmp_path / "results" / "smoke"
    monkeypatch.setattr(common, "RESULTS_DIR", str(results))
    monkeypatch.setattr(common, "SMOKE_DIR", str(smoke))
    importlib.import_module("b3_eot").main(["--smoke", "--threads", "1"])  # no --out
    assert os.listdir(results) == ["smoke"] and os.listdir(smoke) == ["b3_eot.json"]
    assert common.output_path(None, "b3_eot", smoke=False) == str(results / "b3_eot.json")
    assert common.output_path("x.json", "b3_eot", smoke=True) == "x.json"
    with open(os.path.join(os.path.dirname(BENCH), ".gitignore"), encoding="utf-8") as f:
        assert "benchmarks/results/smoke/" in f.read().split()


def test_summarize_skips_smoke_output(tmp_path, capsys, bench_path):
    summarize = importlib.import_module("summarize")
    with open(os.path.join(BENCH, "results", "b3_eot.json"), encoding="utf-8") as f:
        committed = json.load(f)
    (tmp_path / "b3_eot.json").write_text(json.dumps(committed))
    summarize.main(str(tmp_path))
    assert "## B3" in capsys.readouterr().out
    (tmp_path / "b3_eot.json").write_text(json.dumps(dict(committed, smoke=True)))
    summarize.main(str(tmp_path))
    out = capsys.readouterr()
    assert "## B3" not in out.out and "skipped" in out.err
    (tmp_path / "smoke").mkdir()
    (tmp_path / "smoke" / "b3_eot.json").write_text(json.dumps(committed))  # never read from smoke/
    (tmp_path / "b3_eot.json").unlink()
    summarize.main(str(tmp_path))
    assert "## B3" not in capsys.readouterr().out


def test_b5_skips_batches_that_do_not_fit_and_separates_the_flops(tmp_path, bench_path, monkeypatch):
    import torch

    from art_diffpure import checkpointing

    b5 = importlib.import_module("b5_gpu")
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        args = ["--smoke", "--threads", "1", "--no-checkpoint", "--batch-sizes", "1,4"]
        first = b5.main([*args, "--out", str(tmp_path / "a.json")])
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)  # restored
        per_row = first["memory"]["per_row_bytes"]
        need = {r["batch"]: r["estimated_bytes"] for r in first["rows"]}
        # no checkpointing: every step's graph for every row, plus the classifier's
        t_star = first["settings"]["t_star"]
        assert need[4] == int(int(per_row["reverse_step_graph"] * 4) * t_star + per_row["classifier_graph"] * 4)
        # A device with room for batch 1 but not batch 4: batch 4 is skipped and says why.
        free = int((need[1] + need[4]) / 2 / b5.MEMORY_HEADROOM)
        monkeypatch.setattr(checkpointing, "free_bytes", lambda device: free)
        second = b5.main([*args, "--out", str(tmp_path / "b.json")])
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert {r["batch"] for r in second["rows"]} == {1}
    assert [s["batch"] for s in second["skipped"]] == [4] and "estimated" in second["skipped"][0]["skipped"]
    flops = second["flops"]
    assert flops["checkpoint_recompute_batch1"] == 0  # nothing recomputed without checkpointing
    assert flops["useful_per_loss_gradient_batch1"] == flops["chain_per_image"] + flops["classifier_per_image"]
    assert flops["chain_per_image_step"] == flops["chain_per_image"] / second["settings"]["t_star"]


def test_b5_counts_checkpoint_recompute_separately(tmp_path, bench_path):
    b5 = importlib.import_module("b5_gpu")
    data = b5.main(["--smoke", "--threads", "1", "--batch-sizes", "1", "--out", str(tmp_path / "c.json")])
    flops, t_star = data["flops"], data["settings"]["t_star"]
    # every reverse step is checkpointed: the backward pass reruns each UNet forward once
    assert flops["checkpoint_recompute_batch1"] == t_star * flops["unet_forward_per_image"]
    row = data["rows"][0]
    assert row["executed_fraction_of_measured_peak"] > row["fraction_of_measured_peak"]
