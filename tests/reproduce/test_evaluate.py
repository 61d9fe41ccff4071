"""`art-diffpure evaluate`: a user's own models from the command line, resumable, with named errors for bad input."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from art_diffpure.commands import main
from art_diffpure.attacks.registry import ATTACKS

# Tiny on purpose: 8 images in batches of 4, t* = 5, PGD-2: two modes x two seeds x two batches = 8 units, ~2 s.
MODELS = ["--diffusion", "digits", "--classifier", "digits", "--data", "digits"]
TINY = ["--n-images", "8", "--batch-size", "4", "--t-star", "5", "--attack", "pgd", "--max-iter", "2", "--eps", "0.1",
        "--randomness", "aligned", "stochastic", "--seeds", "0", "1", "--test-draws", "2", "--no-progress"]


def evaluate(capsys, *args) -> tuple[int, str, str]:
    code = main(["evaluate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _subprocess(*args, env=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "art_diffpure.commands", "evaluate", *args], capture_output=True,
                          text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted tiny run on the embedded models."""
    out = tmp_path_factory.mktemp("reference")
    code = main(["evaluate", *MODELS, *TINY, "--out", str(out)])
    assert code == 0
    return out


def test_embedded_models_end_to_end(reference):
    results = json.loads((reference / "results.json").read_text())
    assert set(results["versions"]) == {"art_diffpure", "adversarial-robustness-toolbox", "torch", "diffusers",
                                        "numpy"}
    assert results["settings"]["attack_options"]["eps_step"] == pytest.approx(0.1 * (4 / 3) / 2)
    for mode in ("aligned", "stochastic"):
        for seed in ("0", "1"):
            run = results["runs"][mode][seed]
            assert run["sample_ids"] == list(range(8))
            assert len(run["adv_correct"]) == len(run["clean_pred"]) == 8
            assert max(run["perturbation_linf"]) <= 0.1 + 1e-6
            assert np.asarray(run["test_draws"]["adv_correct"]).shape == (2, 8)
            assert run["audit_ok"] and [a["samples"] for a in run["audit"]] == [[0, 3], [4, 7]]
            # the per-row audit: every sample's rows were purified under the intended randomness
            assert set(run["audit"][0]["attack"]["rows_per_sample"]) == {"0", "1", "2", "3"}
            assert run["robust_accuracy"] == np.mean(run["adv_correct"])
        assert results["runs"][mode]["0"]["test_seeds"][0] == (0 if mode == "aligned" else None)
    assert "aligned - stochastic" in results["comparisons"]
    assert "time" not in json.dumps(results)  # wall times live in timings.json only
    timings = json.loads((reference / "timings.json").read_text())
    assert len(timings["units_s"]) == 8 and timings["found"] == []
    report = (reference / "report.md").read_text()
    assert "robust accuracy [95% CI]" in report and "| aligned |" in report and "| stochastic |" in report
    assert (reference / "robustness.png").read_bytes()[:4] == b"\x89PNG"


def test_rerun_resumes_from_finished_units_byte_identical(reference, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    (out / "results.json").unlink()  # as if interrupted after 6 of the 8 units
    for part in (out / "parts").glob("stochastic_seed_1_*"):
        part.unlink()
    code, stdout, _ = evaluate(capsys, *MODELS, *TINY, "--out", str(out))
    assert code == 0
    assert "found 6 of 8 finished units" in stdout and "running the other 2" in stdout
    assert (out / "results.json").read_bytes() == (reference / "results.json").read_bytes()
    assert sorted(json.loads((out / "timings.json").read_text())["computed"]) == [
        "stochastic seed 1 samples 0-3", "stochastic seed 1 samples 4-7"]
    # a finished report is never overwritten silently
    stamp = os.stat(out / "results.json").st_mtime_ns
    code, stdout, _ = evaluate(capsys, *MODELS, *TINY, "--out", str(out))
    assert code == 0 and "finished report" in stdout and "--force" in stdout
    assert os.stat(out / "results.json").st_mtime_ns == stamp


def test_killed_while_writing_a_unit_then_resumed(reference, tmp_path):
    out = tmp_path / "out"
    # write 1 is run.json, write 2 the first unit; SIGKILL halfway through write 3 (the second unit)
    killed = _subprocess(*MODELS, *TINY, "--out", str(out), env={"ART_DIFFPURE_KILL_DURING_WRITE": "3"})
    assert killed.returncode == -9
    assert not (out / "results.json").exists() and len(list((out / "parts").glob("*.npz"))) == 1
    resumed = _subprocess(*MODELS, *TINY, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "found 1 of 8 finished units (aligned seed 0 samples 0-3)" in resumed.stdout
    assert (out / "results.json").read_bytes() == (reference / "results.json").read_bytes()


def test_changed_setting_is_refused_then_force_starts_fresh(reference, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    before = (out / "results.json").read_bytes()
    changed = [a if a != "0.1" else "0.2" for a in TINY]
    code, _, err = evaluate(capsys, *MODELS, *changed, "--out", str(out))
    assert code == 2
    assert "other settings (changed: attack_options.eps: 0.1 -> 0.2" in err and "--force" in err and "another --out" in err
    assert (out / "results.json").read_bytes() == before
    code, _, _ = evaluate(capsys, *MODELS, *changed, "--out", str(out), "--force")
    assert code == 0
    assert json.loads((out / "results.json").read_text())["settings"]["attack_options"]["eps"] == 0.2


def test_local_unet_directory_and_factory_classifier_give_the_embedded_results(reference, tmp_path, capsys):
    from art_diffpure.models.data import load_digits_split
    from art_diffpure.models.digits import digits_scheduler, load_digits_unet

    load_digits_unet().save_pretrained(tmp_path / "ddpm" / "unet")
    digits_scheduler().save_pretrained(tmp_path / "ddpm" / "scheduler")
    (tmp_path / "factory.py").write_text(
        "from art_diffpure.models.digits import DigitsCNN, load_digits_classifier\n\n"
        "def build():\n    return load_digits_classifier()\n")
    x, y = load_digits_split("test")
    np.savez(tmp_path / "digits.npz", x=x[:8], y=y[:8])
    code, _, err = evaluate(capsys, "--diffusion", str(tmp_path / "ddpm"), "--classifier",
                            f"{tmp_path / 'factory.py'}:build", "--data", str(tmp_path / "digits.npz"), *TINY,
                            "--out", str(tmp_path / "out"))
    assert code == 0, err
    mine = json.loads((tmp_path / "out" / "results.json").read_text())
    embedded = json.loads((reference / "results.json").read_text())
    # the same weights and images under the same seeds: the same per-sample outcomes
    for mode in ("aligned", "stochastic"):
        for seed in ("0", "1"):
            for key in ("clean_pred", "adv_pred", "test_seeds", "test_draws"):
                assert mine["runs"][mode][seed][key] == embedded["runs"][mode][seed][key], (mode, seed, key)


def test_two_processes_shard_by_sample_id_and_give_the_same_results(reference, tmp_path):
    proc = _subprocess(*MODELS, *TINY, "--out", str(tmp_path), "--jobs", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["rank0-of-2", "rank1-of-2"]
    assert sorted(p.name for p in (tmp_path / "shards" / "rank1-of-2" / "parts").iterdir())[0] == \
        "aligned_seed_0_samples_4-7.npz"
    assert (tmp_path / "results.json").read_bytes() == (reference / "results.json").read_bytes()


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_runs_under_the_audit(name, tmp_path, capsys):
    attack = ATTACKS[name]
    args = [*MODELS, "--n-images", "2" if name == "cw-l2" else "4", "--batch-size", "4", "--t-star", "3",
            "--attack", name, "--no-progress", "--out", str(tmp_path)]
    args += ["--max-iter", "2"] if "max_iter" in attack.options else []
    args += ["--eps", "0.2"] if "eps" in attack.options else []
    code, _, err = evaluate(capsys, *args)
    assert code == 0, err
    results = json.loads((tmp_path / "results.json").read_text())
    summary = results["summary"]["aligned"]
    assert summary["audit_ok"] and summary["rows_purified"] > 0
    if attack.bounded:
        assert summary["max_perturbation_linf"] <= 0.2 + 1e-6
    assert results["runs"]["aligned"]["0"]["config"]["inner_attack"] != "ProjectedGradientDescent" or name == "pgd"


def _npz(path, x, y):
    np.savez(path, x=x, y=y)
    return str(path)


def _bad_inputs(tmp: str) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments replacing the defaults, a part of the expected message); the names are BAD_NAMES."""
    from art_diffpure.models.data import load_digits_split

    x, y = load_digits_split("test")
    x, y = x[:8], y[:8]
    j = os.path.join
    x_nan = x.copy()
    x_nan[3, 0, 1, 1] = np.nan
    with open(j(tmp, "f.py"), "w") as handle:
        handle.write("def boom():\n    raise RuntimeError('weights missing')\n")
    os.makedirs(j(tmp, "empty"), exist_ok=True)
    with open(j(tmp, "state.pt"), "wb") as handle:
        torch.save({"w": torch.zeros(1)}, handle)
    return {
        "missing data file": (["--data", j(tmp, "nope.npz")], "no such file or directory"),
        "0..255 uint8 data": (["--data", _npz(j(tmp, "u8.npz"), (x * 255).astype(np.uint8), y)],
                              "integer dtype uint8 (values 0..255)"),
        "0..255 float data": (["--data", _npz(j(tmp, "f255.npz"), x * 255, y)], "divide by 255"),
        "NaN in the data": (["--data", _npz(j(tmp, "nan.npz"), x_nan, y)], "NaN or inf (image(s) [3])"),
        "wrong image size": (["--data", _npz(j(tmp, "big.npz"), np.zeros((8, 1, 16, 16), np.float32), y)],
                             "but the diffusion model takes (1, 8, 8)"),
        "channels last": (["--data", _npz(j(tmp, "nhwc.npz"), x.transpose(0, 2, 3, 1), y)], "channels-last"),
        "labels outside the classes": (["--data", _npz(j(tmp, "lab.npz"), x, np.where(y == y[0], 12, y))],
                                       "labels go up to 12"),
        "t* out of range": (["--t-star", "5000"], "--t-star 5000 is out of range"),
        "unknown attack": (["--attack", "pgdd"], "unknown attack; choose one of pgd, fgsm"),
        "option the attack does not take": (["--attack", "deepfool", "--eps", "0.1"],
                                            "--attack deepfool does not take --eps; it takes --max-iter"),
        "norm the attack does not take": (["--attack", "square", "--norm", "1"], "square takes --norm inf or 2"),
        "eps on the 0..255 scale": (["--eps", "8"], "e.g. --eps 8/255"),
        "unknown randomness mode": (["--randomness", "fixed"], "--randomness fixed: give each of aligned"),
        "negative seed": (["--seeds", "-1"], "base seeds must be distinct integers"),
        "zero images": (["--n-images", "0"], "--n-images 0: must be at least 1"),
        "offset past the end": (["--offset", "450"], "past the end of the data (450 images)"),
        "missing classifier file": (["--classifier", j(tmp, "nope.pt")], "no such file"),
        "state dict instead of a model": (["--classifier", j(tmp, "state.pt")], "not a TorchScript model"),
        "factory that fails": (["--classifier", f"{j(tmp, 'f.py')}:boom"], "boom() failed: RuntimeError"),
        "factory not in the module": (["--classifier", f"{j(tmp, 'f.py')}:build"], "has no function 'build'"),
        "RobustBench name without --model-dir": (["--classifier", "Standard"], "needs --model-dir"),
        "RobustBench checkpoint missing": (["--classifier", "Standard", "--model-dir", tmp],
                                           "RobustBench checkpoint not found"),
        "missing diffusion directory": (["--diffusion", j(tmp, "nope") + "/"], "no such directory"),
        "not a diffusers directory": (["--diffusion", j(tmp, "empty")], "not a diffusers model directory"),
        "hub id not in the cache (offline)": (["--diffusion", "nobody/no-such-ddpm"],
                                              "read as a hub id (it is not a local directory)"),
        "no GPU here": (["--device", "cuda:99"], "there are") if torch.cuda.is_available() else (
            ["--device", "cuda"], "no CUDA GPU is available here"),
    }


BAD_NAMES = ["missing data file", "0..255 uint8 data", "0..255 float data", "NaN in the data", "wrong image size",
             "channels last", "labels outside the classes", "t* out of range", "unknown attack",
             "option the attack does not take", "norm the attack does not take", "eps on the 0..255 scale",
             "unknown randomness mode", "negative seed", "zero images", "offset past the end",
             "missing classifier file", "state dict instead of a model", "factory that fails",
             "factory not in the module", "RobustBench name without --model-dir", "RobustBench checkpoint missing",
             "missing diffusion directory", "not a diffusers directory", "hub id not in the cache (offline)",
             "no GPU here"]


@pytest.mark.parametrize("case", BAD_NAMES)
def test_bad_input_is_named_before_any_work_and_writes_nothing(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args, message = _bad_inputs(str(tmp_path))[case]
    defaults = dict(zip(MODELS[::2], MODELS[1::2]))
    for flag, value in zip(args[::2], args[1::2]):
        defaults.pop(flag, None)
    base = [a for k, v in defaults.items() for a in (k, v)]
    out = tmp_path / "out"
    code, stdout, err = evaluate(capsys, *base, "--n-images", "4", "--t-star", "3", "--max-iter", "1",
                                 "--no-progress", "--out", str(out), *args)
    assert code == 2
    assert message in err, err
    assert err.startswith("art-diffpure evaluate: error: ") and "Traceback" not in err
    assert not out.exists()  # nothing that looks like a result


def test_output_directory_of_another_tool_is_refused(tmp_path, capsys):
    (tmp_path / "results.json").write_text("{}")
    code, _, err = evaluate(capsys, *MODELS, "--n-images", "4", "--out", str(tmp_path), "--no-progress")
    assert code == 2 and "did not record" in err and "--force" in err
    assert (tmp_path / "results.json").read_text() == "{}"


@pytest.mark.parametrize("attack", ["diffhammer", pytest.param("diffattack", marks=pytest.mark.slow),
                                    pytest.param("surrogate-pgd-eot", marks=pytest.mark.slow)])
def test_purification_attacks_from_the_command_line_with_draws_and_vote(attack, tmp_path, capsys):
    """The attacks built for purification run from the command line; mean, worst case and majority vote over
    named test draws recount from the per-draw predictions."""
    code, _, err = evaluate(capsys, *MODELS, "--n-images", "4", "--batch-size", "4", "--t-star", "4", "--attack",
                            attack, "--max-iter", "1", "--eot", "2", "--eps", "0.1", "--randomness", "aligned",
                            "stochastic", "--test-draws", "3", "--vote", "3", "--no-progress", "--out",
                            str(tmp_path))
    assert code == 0, err
    results = json.loads((tmp_path / "results.json").read_text())
    for mode in ("aligned", "stochastic"):
        run, summary = results["runs"][mode]["0"], results["summary"][mode]
        assert run["audit_ok"] and max(run["perturbation_linf"]) <= 0.1 + 1e-6
        pred, labels = np.asarray(run["test_draws"]["adv_pred"]), np.asarray(run["labels"])
        assert summary["test_draws"]["worst_case"]["mean"] == np.mean((pred == labels).all(axis=0))
        votes = np.array([np.bincount(pred[:, i], minlength=10).argmax() for i in range(4)])
        assert summary["test_draws"]["majority_vote"]["mean"] == np.mean(votes == labels)
        assert summary["test_draws"]["majority_vote"]["vote"] == 3
    assert "majority vote" in (tmp_path / "report.md").read_text()


def test_vote_needs_test_draws(tmp_path, capsys):
    code, _, err = evaluate(capsys, *MODELS, *TINY[:-3], "--vote", "3", "--out", str(tmp_path))
    assert code == 2 and "--vote 3" in err
