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


# ------------------------------------------------------------------------------------- faults a long run survives
def test_units_hold_numpy_scalars_tuples_and_non_finite_floats_exactly(tmp_path):
    from art_diffpure.reproduce.store import decode_unit, encode_unit

    value = {"f32": np.float32(0.1), "i": np.int64(3), "t": (1, "a"), 3: [float("nan"), -0.0, float("inf"), None],
             "nested": {"arr": np.arange(4, dtype=np.int16)}}
    back = decode_unit(encode_unit({"fingerprint": "f", "name": "n", "result": value, "seconds": 0.0}))["result"]
    assert type(back["f32"]) is np.float32 and back["f32"] == value["f32"] and back["t"] == (1, "a")
    assert np.isnan(back[3][0]) and str(back[3][1]) == "-0.0" and back[3][2:] == [float("inf"), None]
    assert back["nested"]["arr"].dtype == np.int16
    with pytest.raises(TypeError, match="cannot hold"):
        encode_unit({"fingerprint": "f", "name": "n", "result": object(), "seconds": 0.0})


def test_an_unreadable_unit_is_set_aside_and_recomputed(tmp_path, caplog):
    store = RunStore(str(tmp_path), SETTINGS)
    store.save("a", [1.0, 2.0], 1.0)
    path = tmp_path / "parts" / "a.npz"
    path.write_bytes(path.read_bytes()[:40])  # truncated: an interrupted copy, a full disk outside our writes
    again = RunStore(str(tmp_path), SETTINGS)
    assert again.load("a") is None and again.finished() == []
    assert (tmp_path / "parts" / "a.npz.unreadable").exists() and "set aside" in caplog.text
    again.save("a", [1.0, 2.0], 1.0)
    assert RunStore(str(tmp_path), SETTINGS).load("a") == ([1.0, 2.0], 1.0)


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_unit_crafted_to_run_code_has_no_effect(tmp_path, monkeypatch, caplog):
    import pickle

    monkeypatch.chdir(tmp_path)
    store = RunStore(str(tmp_path / "run"), SETTINGS)
    evil = pickle.dumps({"fingerprint": store.fingerprint, "name": "a", "result": _Boom(), "seconds": 0})
    (tmp_path / "run" / "parts" / "a.npz").write_bytes(evil)  # a pickle under a unit's name
    (tmp_path / "run" / "parts" / "b.pkl").write_bytes(evil)  # and in the old pickle format
    again = RunStore(str(tmp_path / "run"), SETTINGS)
    assert again.load("a") is None and again.finished() == []
    assert not (tmp_path / "PWNED").exists()
    assert "never loads" in caplog.text and "unreadable" in caplog.text
    assert sorted(os.listdir(tmp_path / "run" / "parts")) == ["a.npz.unreadable", "b.pkl.unreadable"]


def test_a_failed_write_leaves_no_partial_unit_and_says_how_to_resume(tmp_path, monkeypatch):
    from art_diffpure.reproduce import store as store_module

    store = RunStore(str(tmp_path), SETTINGS, command="art-diffpure reproduce")
    store.save("a", 1, 0.0)
    monkeypatch.setenv(store_module.FAIL_WRITE_ENV, str(store_module._WRITES[0] + 1))
    with pytest.raises(store_module.StoreWriteError, match="No space left.*1 finished unit.*rerun art-diffpure "
                                                           "reproduce with the same options to resume"):
        store.save("b", 2, 0.0)
    assert sorted(os.listdir(tmp_path / "parts")) == ["a.npz"]
    monkeypatch.delenv(store_module.FAIL_WRITE_ENV)
    store.save("b", 2, 0.0)  # space freed: the run goes on
    assert RunStore(str(tmp_path), SETTINGS).finished() == ["a", "b"]


def test_a_second_process_on_the_same_directory_stops_at_once(tmp_path, capsys):
    from art_diffpure import commands as cli
    from art_diffpure.reproduce.store import DirectoryInUse, directory_in_use

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from art_diffpure.reproduce.store import directory_in_use\n"
        "with directory_in_use(sys.argv[1], 'test'):\n    print('held', flush=True); time.sleep(60)\n"),
        str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DirectoryInUse, match=f"in use by process {holder.pid}"):
            with directory_in_use(str(tmp_path), "art-diffpure reproduce"):
                pass
        assert cli.main(["reproduce", "--smoke", "--out", str(tmp_path), "--no-progress"]) == 2
        assert f"in use by process {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    with directory_in_use(str(tmp_path), "art-diffpure reproduce"):  # the dead holder's claim is taken over
        pass
