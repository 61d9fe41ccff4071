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
