"""scripts/gpu_check.sh --smoke: the offline GPU check's steps (versions, pytest, B5) run to the end on this machine
and write every file they promise into --out (the GPU run writes the same files)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "gpu_check.sh")


@pytest.mark.slow  # half a minute: the suite CI runs (bash dev test --all) has it
def test_gpu_check_smoke_writes_every_file(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", PIP_NO_INDEX="1")
    env.pop("PYTHONPATH", None)
    # No --wheels: the packages of this environment are used (the GPU run installs carried wheels first).
    proc = subprocess.run(["bash", SCRIPT, "--smoke", "--python", sys.executable, "--out", str(out)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for name in ("gpu_check.log", "summary.json", "steps.tsv", "versions.json", "versions.txt", "nvidia-smi.txt",
                 "pytest.log", "pytest.xml", "b5.log", "b5_gpu.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not (out / "install.log").exists()  # nothing to install without --wheels

    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["all_ok"] and summary["smoke"]
    assert [s["name"] for s in summary["steps"]] == ["versions", "pytest", "b5"]
    assert all(s["status"] == "ok" and s["rc"] == 0 for s in summary["steps"])

    versions = json.loads((out / "versions.json").read_text())
    assert not {"torch", "numpy", "diffusers", "art", "art_diffpure"} & set(versions["missing"])
    import torch

    assert versions["modules"]["torch"]["version"] == torch.__version__
    assert versions["cuda"]["torch_cuda"] == torch.version.cuda and "available" in versions["cuda"]
    assert versions["modules"]["art_diffpure"]["path"].startswith(ROOT)  # the checkout, from PYTHONPATH
    printed = (out / "versions.txt").read_text()
    for word in ("GPU (nvidia-smi)", "cuDNN", "torch", "numpy", "diffusers", "art "):
        assert word in printed, word

    suite = ET.parse(out / "pytest.xml").getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    assert int(suite.get("tests")) >= 5 and int(suite.get("failures")) == 0 and int(suite.get("errors")) == 0
    assert int(suite.get("tests")) > int(suite.get("skipped"))  # some tests ran, not only the skipped GPU ones

    b5 = json.loads((out / "b5_gpu.json").read_text())
    assert b5["benchmark"] == "b5_gpu" and b5["smoke"] is True and b5["complete"] is True
    assert {(r["cudnn_benchmark"], r["checkpoint"], r["dtype"]) for r in b5["rows"]} == {
        (False, True, "fp32"), (False, True, "bf16"), (True, True, "fp32"), (True, True, "bf16"),
        (True, "auto", "fp32"), (True, "auto", "bf16")}
    log = (out / "gpu_check.log").read_text()
    assert "== pytest: ok" in log and "== b5: ok" in log and "gpu_check.sh: done" in log


def test_gpu_check_refuses_bad_arguments(tmp_path):
    run = lambda *a: subprocess.run(["bash", SCRIPT, *a], capture_output=True, text=True, timeout=60)  # noqa: E731
    assert run("--smoke").returncode == 2 and "--out" in run("--smoke").stderr
    missing = run("--out", str(tmp_path / "o"), "--wheels", str(tmp_path / "none"))
    assert missing.returncode == 2 and "not a folder" in missing.stderr
    assert run("--bogus").returncode == 2
    assert "--wheels DIR" in run("--help").stdout


def _wheel(folder, dist: str, version: str, module: str) -> str:
    """A minimal pure-Python wheel (one module) as a registry would serve it."""
    import base64
    import hashlib
    import zipfile

    files = {f"{module}/__init__.py": f"__version__ = {version!r}\n",
             f"{dist}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
             f"{dist}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                  "Tag: py3-none-any\n"}
    def digest(text: str) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).decode().rstrip("=")

    record = "".join(f"{name},sha256={digest(text)},{len(text.encode())}\n" for name, text in files.items())
    files[f"{dist}-{version}.dist-info/RECORD"] = record + f"{dist}-{version}.dist-info/RECORD,,\n"
    path = os.path.join(folder, f"{dist}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def test_gpu_check_installs_carried_wheels_offline_without_shadowing(tmp_path):
    """--wheels: a missing distribution is installed into --site with pip --no-index --no-deps; one already
    installed here (six) is left alone, so a carried wheel never shadows the machine's own copy."""
    wheels, site, out = tmp_path / "wheels", tmp_path / "site", tmp_path / "out"
    wheels.mkdir()
    _wheel(str(wheels), "gpucheck_fake", "0.1", "gpucheck_fake")
    _wheel(str(wheels), "six", "0.0.1", "six")
    env = dict(os.environ, PIP_NO_INDEX="1")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(["bash", SCRIPT, "--wheels", str(wheels), "--site", str(site), "--out", str(out),
                           "--python", sys.executable, "--steps", "install"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    plan = {line.split("\t")[1]: line.split("\t")[0] for line in (out / "wheels.tsv").read_text().splitlines()[1:]}
    assert plan == {"gpucheck_fake-0.1-py3-none-any.whl": "install", "six-0.0.1-py3-none-any.whl": "skip"}
    assert (site / "gpucheck_fake" / "__init__.py").is_file() and not (site / "six").exists()
    assert "Successfully installed gpucheck-fake-0.1" in (out / "install.log").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["steps"]] == ["install"] and summary["all_ok"]
