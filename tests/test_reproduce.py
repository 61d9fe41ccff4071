"""`art-diffpure reproduce`: the quick digits run writes a complete report, reproducibly."""
import json
import os
import subprocess
import sys

import pytest

TABLES = ["undefended", "table1", "table2", "table4", "table5", "table6", "table7", "tableS5", "tableS6",
          "fig1c", "fig2f", "fig3a", "fig3b", "fig2de", "setting"]
FIGURES = ["fig1c_trajectory_l2.png", "fig2f_centroid_distances.png", "fig3a_jacobian_spectrum.png",
           "fig3b_compression_law.png"]


def _run(*args, timeout=600):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "art_diffpure.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def two_quick_runs(tmp_path_factory):
    outs = []
    for k in range(2):
        out = tmp_path_factory.mktemp(f"quick{k}")
        proc = _run("reproduce", "--quick", "--out", str(out), "--no-progress")
        assert proc.returncode == 0, proc.stderr[-4000:]
        outs.append(out)
    return outs


def test_quick_report_is_complete(two_quick_runs):
    out = two_quick_runs[0]
    results = json.loads((out / "results.json").read_text())
    missing = [k for k in TABLES if k not in results]
    assert not missing, missing
    report = (out / "report.md").read_text()
    for heading in ("Table 1", "Table 2", "Table 4", "Table 5", "Table 6", "Table 7", "Table S5", "Table S6"):
        assert heading in report
    for fig in FIGURES:
        assert (out / fig).stat().st_size > 1000


def test_quick_runs_are_identical(two_quick_runs):
    a, b = ((o / "results.json").read_text() for o in two_quick_runs)
    assert a == b


@pytest.mark.parametrize("preset", ["cifar10", "imagenet"])
def test_paper_presets_without_weights_exit_clearly(preset, tmp_path):
    proc = _run("reproduce", "--preset", preset, "--out", str(tmp_path / "r"), "--model-dir", str(tmp_path),
                timeout=120)
    assert proc.returncode != 0
    assert "missing" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()
