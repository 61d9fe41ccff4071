"""The run store: finished units survive a kill, other settings are refused, nothing half-written is read."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from art_diffpure.reproduce.store import KILL_DURING_WRITE_ENV, RunMismatch, RunStore

SETTINGS = {"preset": "digits", "sizes": {"n_images": 8, "seeds": [0, 1]}}


def test_units_round_trip_exactly(tmp_path):
    store = RunStore(str(tmp_path), SETTINGS)
    value = {"x_adv": np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32), "acc": 1 / 3}
    assert store.load("table2 aligned seed 0") is None
    store.save("table2 aligned seed 0", value, 1.5)
    again = RunStore(str(tmp_path), SETTINGS)  # a rerun with the same settings
    result, seconds = again.load("table2 aligned seed 0")
    assert seconds == 1.5 and result["acc"] == value["acc"]
    assert result["x_adv"].dtype == np.float32 and np.array_equal(result["x_adv"], value["x_adv"])
    assert again.finished() == ["table2 aligned seed 0"]


def test_other_settings_are_refused_with_what_changed(tmp_path):
    RunStore(str(tmp_path), SETTINGS).save("a", 1, 0.0)
    other = {"preset": "digits", "sizes": {"n_images": 8, "seeds": [7]}}
    with pytest.raises(RunMismatch, match=r"sizes.seeds: \[0, 1\] -> \[7\].*--force"):
        RunStore(str(tmp_path), other)
    fresh = RunStore(str(tmp_path), other, force=True)  # --force discards the old run
    assert fresh.load("a") is None and fresh.finished() == []


def test_foreign_results_are_refused(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(RunMismatch, match="did not record"):
        RunStore(str(tmp_path), SETTINGS, command="art-diffpure reproduce")


def test_a_kill_during_a_write_leaves_the_old_state(tmp_path):
    """SIGKILL halfway through writing the third file: two files intact, a temporary one that is never read."""
    code = ("import sys; from art_diffpure.reproduce.store import RunStore\n"
            "s = RunStore(sys.argv[1], {'a': 1})\n"  # write 1: the manifest
            "s.save('first', list(range(1000)), 1.0)\n"  # write 2
            "s.save('second', list(range(1000)), 2.0)\n")  # write 3: killed halfway
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=dict(os.environ, **{
        KILL_DURING_WRITE_ENV: "3"}), capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert [p for p in os.listdir(tmp_path / "parts") if ".tmp" in p]
    store = RunStore(str(tmp_path), {"a": 1})  # resumes: the temporary file is removed, 'first' is kept
    assert store.finished() == ["first"] and store.load("first") == (list(range(1000)), 1.0)
    assert not [p for p in os.listdir(tmp_path / "parts") if ".tmp" in p]
