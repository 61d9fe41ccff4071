"""The run store: finished units survive a kill, other settings are refused, nothing half-written is read,
and processes sharing a directory split its units by claims."""
import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from art_diffpure.reproduce.store import KILL_DURING_WRITE_ENV, RunMismatch, RunStore, claimed

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


# ------------------------------------------------------------------------------------- claims (several processes)
def _write_claim(path, host, pid):
    with open(f"{path}.claim", "w") as f:
        json.dump({"host": host, "pid": pid}, f)


def test_a_claim_is_exclusive_and_released_also_on_error(tmp_path):
    unit = str(tmp_path / "unit.json")
    with claimed(unit) as holder:
        assert holder is None and os.path.exists(unit + ".claim")
        rival = subprocess.run([sys.executable, "-c", "import sys; from art_diffpure.reproduce.store import claimed\n"
                                f"with claimed({unit!r}) as h: print(h['pid'])"], capture_output=True, text=True)
        assert rival.returncode == 0, rival.stderr
        assert int(rival.stdout) == os.getpid()  # another process sees this one's live claim
    assert not os.path.exists(unit + ".claim")
    with pytest.raises(ValueError), claimed(unit):
        raise ValueError
    assert not os.path.exists(unit + ".claim")


def test_a_dead_processs_claim_is_taken_over_and_a_live_or_foreign_one_respected(tmp_path):
    unit = str(tmp_path / "unit.json")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_claim(unit, socket.gethostname(), dead.pid)
    with claimed(unit) as holder:
        assert holder is None and json.load(open(unit + ".claim"))["pid"] == os.getpid()
    _write_claim(unit, socket.gethostname(), os.getppid())  # alive on this host
    with claimed(unit) as holder:
        assert holder == {"host": socket.gethostname(), "pid": os.getppid()}
    assert os.path.exists(unit + ".claim")  # someone else's claim is left alone
    _write_claim(unit, "another-host", dead.pid)  # cannot be checked from here: respected
    with claimed(unit) as holder:
        assert holder["host"] == "another-host"


def test_sigterm_releases_the_claim_when_asked_to(tmp_path):
    unit = str(tmp_path / "unit.json")
    code = ("import sys, time\nfrom art_diffpure.reproduce import store\n"
            "if sys.argv[1] == 'clean': store.exit_cleanly_on_sigterm()\n"
            f"with store.claimed({unit!r}):\n    print('claimed', flush=True)\n    time.sleep(60)\n")
    for mode, claim_left, returncode in (("default", True, -signal.SIGTERM), ("clean", False, 128 + signal.SIGTERM)):
        worker = subprocess.Popen([sys.executable, "-c", code, mode], stdout=subprocess.PIPE, text=True)
        assert worker.stdout.readline().strip() == "claimed"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == returncode
        assert os.path.exists(unit + ".claim") is claim_left, mode
        if claim_left:
            os.remove(unit + ".claim")
