"""Every benchmark script runs in --smoke mode and writes a JSON with its keys (no timing asserted)."""
from __future__ import annotations

import importlib
import json
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")

CASES = {
    "b1_paper_pipeline": (["speedup", "ours", "paper", "robust_accuracy_diff_points", "x_adv_max_abs_diff", "noise",
                           "unet_work"],
                          []),
    "b2_memory": (["rows", "summary", "metric"], ["--in-process", "--live"]),
    "b3_eot": (["speedup", "batched_median_s", "sequential_median_s", "grad_max_rel_diff"], []),
    "b4_compression_cost": (["cost_ratio", "compression_rate_median_s", "pgd_median_s", "robust_accuracy",
                             "per_n_samples", "reference_n_samples"], []),
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
    if name == "b1_paper_pipeline":  # the same attack on both sides; the traced diagnostic computes what eager does
        assert data["x_adv_max_abs_diff"] == 0.0 and data["unet_work"]["traced_bit_identical"] is True


def test_b1_unet_only_times_the_unet_alone(tmp_path, bench_path):
    b1 = importlib.import_module("b1_paper_pipeline")
    data = b1.main(["--smoke", "--unet-only", "--threads", "1", "--n-images", "3", "--steps", "2",
                    "--out", str(tmp_path / "u.json")])
    assert json.loads((tmp_path / "u.json").read_text())["benchmark"] == "b1_paper_pipeline_unet_work"
    work = data["unet_work"]
    assert work["traced_bit_identical"] is True and "unet_work_ratio_compiled_ours_only" not in work
    eager = [work[f"eager_batch{b}_{k}_s_per_call"] for b in (1, 3) for k in ("with_backward", "forward")]
    g1, f1, g3, f3 = eager
    assert work["unet_work_ratio_eager"] == pytest.approx((2 * g1 + 2 * f1) / ((2 * g3 + 2 * f3) / 3))


@pytest.mark.slow  # a cold torch.compile of the UNet per batch shape: about a minute each on 2 cores (needs the
# C++ compiler that torch.compile's CPU backend calls, as CI's machines have)
def test_b1_compiled_unet_is_timed_and_its_difference_from_eager_recorded(tmp_path, bench_path):
    b1 = importlib.import_module("b1_paper_pipeline")
    work = b1.main(["--smoke", "--unet-only", "--compile", "--threads", "1", "--n-images", "2", "--steps", "2",
                    "--out", str(tmp_path / "u.json")])["unet_work"]
    for b in (1, 2):
        assert 0.0 <= work[f"compiled_batch{b}_max_abs_diff_vs_eager"] < 1e-4
        assert work[f"compiled_batch{b}_warmup_s"] > 0 and work[f"compiled_batch{b}_with_backward_s_per_call"] > 0
    g1, f1 = work["eager_batch1_with_backward_s_per_call"], work["eager_batch1_forward_s_per_call"]
    g2, f2c = work["eager_batch2_with_backward_s_per_call"], work["compiled_batch2_forward_s_per_call"]
    assert work["unet_work_ratio_compiled_predictions_ours_only"] == pytest.approx(
        (2 * g1 + 2 * f1) / ((2 * g2 + 2 * f2c) / 2))


def test_b4_times_every_n_samples(tmp_path, bench_path):
    b4 = importlib.import_module("b4_compression_cost")
    data = b4.main(["--smoke", "--threads", "1", "--repeats", "2", "--out", str(tmp_path / "b4.json")])
    assert [row["n_samples"] for row in data["per_n_samples"]] == [2, 4, 8] and data["reference_n_samples"] == 8
    for row in data["per_n_samples"]:
        assert len(row["compression_rate_s"]) == 4  # two rounds before the attack, two after
        assert row["cost_ratio"] == pytest.approx(data["pgd_median_s"] / row["median_s"])
        assert row["target_met"] == (row["cost_ratio"] >= 50.0)
    assert data["cost_ratio"] == data["per_n_samples"][-1]["cost_ratio"]  # the top-level keys describe 8 samples


def test_b4_agreement_runs_on_the_committed_report(tmp_path, bench_path):
    b4 = importlib.import_module("b4_compression_cost")
    out = tmp_path / "agreement.json"
    b4.main(["--agreement", "--smoke", "--threads", "1", "--n-samples", "2", "8", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["benchmark"] == "b4_compression_agreement" and data["smoke"] is True
    assert data["settings"]["report"] == os.path.join("docs", "digits-report-confirmatory")
    assert data["settings"]["n_images"] == b4.SMOKE_IMAGES and data["environment"]["command"]
    assert [c["label"] for c in data["configurations"]] == ["ddpm t*=10", "ddpm t*=20", "ddpm t*=50"]
    assert all(set(c["compression_by_n_samples"]) == {"2", "8"} for c in data["configurations"])
    assert data["reproduces_report"] is None  # fewer images than the report: nothing to compare
    assert [row["n_samples"] for row in data["agreement"]] == [2, 8]
    for row in data["agreement"]:
        assert {"spearman_rho", "spearman_p", "rank_rho_with_reference", "same_ranking_as_reference"} <= set(row)
    assert data["agreement"][1]["rank_rho_with_reference"] == pytest.approx(1.0)


def test_b4_agreement_refuses_a_report_of_another_setting(tmp_path, bench_path):
    b4 = importlib.import_module("b4_compression_cost")
    root = os.path.dirname(BENCH)
    with open(os.path.join(root, "docs", "digits-report-confirmatory", "results.json"), encoding="utf-8") as f:
        report = json.load(f)
    report["setting"]["sizes"]["sweep_images"] = 16
    (tmp_path / "results.json").write_text(json.dumps(report))
    with pytest.raises(SystemExit, match="sizes"):
        b4.main(["--agreement", str(tmp_path), "--smoke", "--threads", "1", "--out", str(tmp_path / "a.json")])
    with pytest.raises(SystemExit, match="must include"):
        b4.main(["--agreement", "--smoke", "--threads", "1", "--n-samples", "2", "4",
                 "--out", str(tmp_path / "b.json")])


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


@pytest.mark.slow  # B5's CPU smoke (test_smoke) stays in the default run
def test_b5_skips_batches_that_do_not_fit_and_separates_the_flops(tmp_path, bench_path, monkeypatch):
    import torch

    from art_diffpure import checkpointing

    b5 = importlib.import_module("b5_gpu")
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = False
    try:
        args = ["--smoke", "--threads", "1", "--no-checkpoint", "--batch-sizes", "1,4", "--cudnn-benchmark", "on",
                "--no-auto-rows"]
        first = b5.main([*args, "--out", str(tmp_path / "a.json")])
        restored = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                    torch.backends.cudnn.benchmark)
        assert restored == (True, True, False)  # the run set benchmark on and TF32 off; both restored
        graphs, t_star = first["memory"]["graph_bytes"], first["settings"]["t_star"]
        # no checkpointing: every step's graph (fixed + per row, fitted per precision), plus the classifier's
        for r in first["rows"]:
            g = graphs[r["dtype"]]
            step = int(g["reverse_step_graph"]["fixed"] + g["reverse_step_graph"]["per_row"] * r["batch"])
            clf = g["classifier_graph"]["fixed"] + g["classifier_graph"]["per_row"] * r["batch"]
            assert r["estimated_bytes"] == int(step * t_star + clf)
        # under bf16 autocast every step saves bf16 copies of the weights: a fixed part the fp32 graph lacks
        assert graphs["bf16"]["reverse_step_graph"]["fixed"] > graphs["fp32"]["reverse_step_graph"]["fixed"]
        need = {}
        for r in first["rows"]:
            need.setdefault(r["batch"], []).append(r["estimated_bytes"])
        assert max(need[1]) < min(need[4])
        # A device with room for batch 1 but not batch 4: batch 4 is skipped and says why.
        free = int((max(need[1]) + min(need[4])) / 2 / b5.MEMORY_HEADROOM)
        monkeypatch.setattr(checkpointing, "free_bytes", lambda device: free)
        second = b5.main([*args, "--out", str(tmp_path / "b.json")])
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved
    assert {r["batch"] for r in second["rows"]} == {1}
    assert [(s["batch"], s["dtype"]) for s in second["skipped"]] == [(4, "fp32"), (4, "bf16")]
    assert all("estimated" in s["skipped"] for s in second["skipped"])
    flops = second["flops"]
    assert flops["checkpoint_recompute_batch1"] == 0  # nothing recomputed without checkpointing
    assert flops["useful_per_loss_gradient_batch1"] == flops["chain_per_image"] + flops["classifier_per_image"]
    assert flops["chain_per_image_step"] == flops["chain_per_image"] / second["settings"]["t_star"]


@pytest.mark.slow  # B5's CPU smoke (test_smoke) stays in the default run
def test_b5_counts_checkpoint_recompute_separately(tmp_path, bench_path):
    b5 = importlib.import_module("b5_gpu")
    data = b5.main(["--smoke", "--threads", "1", "--batch-sizes", "1", "--cudnn-benchmark", "off", "--no-auto-rows",
                    "--out", str(tmp_path / "c.json")])
    flops, t_star = data["flops"], data["settings"]["t_star"]
    # every reverse step is checkpointed: the backward pass reruns each UNet forward once
    assert flops["checkpoint_recompute_batch1"] == t_star * flops["unet_forward_per_image"]
    row = data["rows"][0]
    assert row["executed_fraction_of_measured_peak"] > row["fraction_of_measured_peak"]


def test_b5_writes_each_row_as_it_is_measured_to_the_given_path(tmp_path, bench_path, monkeypatch):
    import torch

    b5 = importlib.import_module("b5_gpu")
    out = tmp_path / "deep" / "b5.json"
    on_disk = []
    real = b5.common.write_json

    def spy(data, path, name, quiet=False):
        written = real(data, path, name, quiet=quiet)
        assert written == str(out)
        on_disk.append(json.loads(out.read_text()))  # the file itself, complete JSON at every point
        return written

    monkeypatch.setattr(b5.common, "write_json", spy)
    data = b5.main(["--smoke", "--threads", "1", "--batch-sizes", "1", "--out", str(out)])
    # One row per (cudnn.benchmark off/on, checkpoint forced) and the checkpoint="auto" row, in fp32 and bf16.
    assert [(r["cudnn_benchmark"], r["checkpoint"], r["dtype"]) for r in data["rows"]] == [
        (False, True, "fp32"), (False, True, "bf16"), (True, True, "fp32"), (True, True, "bf16"),
        (True, "auto", "fp32"), (True, "auto", "bf16")]
    assert all(r["checkpointed"] is True for r in data["rows"][:4])
    assert all(isinstance(r["checkpointed"], bool) for r in data["rows"][4:])  # what "auto" chose
    # the file grew by one row at a time, and only the last write marks the run complete
    counts = [len(d["rows"]) for d in on_disk]
    assert counts == sorted(counts) and set(range(len(data["rows"]) + 1)) <= set(counts)
    assert [d["complete"] for d in on_disk] == [False] * (len(on_disk) - 1) + [True]
    assert all("environment" in d and "settings" in d for d in on_disk)
    assert "flops" in on_disk[counts.index(1)]  # FLOPs and peak are written before the first timed row
    # random weights: the bf16 cosine is labelled timing only
    assert all("timing only" in r["bf16_vs_fp32_cosine_note"] for r in data["rows"])
    assert "timing only" in data["bf16_cosine_timing_only"]["note"]
    # syncs per call (CUDA), never divided by t*
    syncs = data["host_device_syncs"]
    if torch.cuda.is_available():
        assert set(syncs) >= {"per_loss_gradient_call", "per_purify_call"} and "per_reverse_step" not in syncs
    else:
        assert syncs is None
    assert data["settings"]["unet_attention_head_dim"] is None  # the published model's attention (one head)
    # without --out, a real run writes outside the source tree
    root = os.path.dirname(BENCH)
    assert not os.path.abspath(b5.default_out()).startswith(root + os.sep)


@pytest.mark.slow  # B5's CPU smoke (test_smoke) stays in the default run
def test_b5_time_budget_skips_rows_and_still_completes(tmp_path, bench_path):
    b5 = importlib.import_module("b5_gpu")
    data = b5.main(["--smoke", "--threads", "1", "--batch-sizes", "1", "--cudnn-benchmark", "off", "--no-auto-rows",
                    "--time-budget", "0", "--out", str(tmp_path / "t.json")])
    assert data["rows"] == [] and data["complete"] is True
    assert [(s["batch"], s["dtype"]) for s in data["skipped"]] == [(1, "fp32"), (1, "bf16")]
    assert all(s["skipped"].startswith("time budget") for s in data["skipped"])


def test_b5_cifar_unet_has_the_published_attention(bench_path):
    """google/ddpm-cifar10-32's config.json has attention_head_dim null: one head over the 256 channels in the
    16x16 attention blocks and the middle block (diffusers' default of 8 would make 32 heads of width 8)."""
    common = importlib.import_module("_common")
    config = common.cifar_unet_config()
    assert config["attention_head_dim"] is None and config["norm_num_groups"] == 32
    assert config["down_block_types"] == ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D")
    assert config["up_block_types"] == ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    unet = common.cifar_unet()
    assert sum(p.numel() for p in unet.parameters()) == 35_746_307
    attentions = [a for block in (*unet.down_blocks, unet.mid_block, *unet.up_blocks)
                  for a in (getattr(block, "attentions", None) or [])]
    assert len(attentions) == 2 + 1 + 3  # 2 per down level, the middle block, 3 per up level (one level each)
    assert all(a.heads == 1 and a.inner_dim == 256 for a in attentions)


def test_b5_wideresnet_is_robustbenchs_standard_architecture(bench_path):
    """B5's own WRN-28-10 (no RobustBench import) has the parameter count of RobustBench's ``Standard`` model;
    where RobustBench is installed, its class has the same count and its state dict loads here and gives the same
    logits."""
    import torch

    wrn = importlib.import_module("wideresnet")
    assert sum(p.numel() for p in wrn.WideResNet(28, 10).parameters()) == wrn.WRN_28_10_PARAMETERS == 36_479_194
    with torch.no_grad():
        assert wrn.WideResNet(10, 1).eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    try:
        from art_diffpure.models.robustbench import import_robustbench

        import_robustbench()
        from robustbench.model_zoo.architectures.wide_resnet import WideResNet as Reference
    except ImportError:  # not installed (e.g. the offline GPU machine): the count above is the check
        return
    assert sum(p.numel() for p in Reference(depth=28, widen_factor=10).parameters()) == 36_479_194
    torch.manual_seed(0)
    reference = Reference(depth=10, widen_factor=2).eval()
    for m in reference.modules():  # non-trivial batch-norm statistics, so that every parameter matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    mine = wrn.WideResNet(10, 2).eval()
    mine.load_state_dict(reference.state_dict(), strict=True)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(mine(x), reference(x), rtol=1e-5, atol=1e-5)
