"""`art-diffpure reproduce`: the quick digits run writes a complete report, reproducibly."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

TABLES = ["undefended", "table1", "table2", "table4", "table5", "table6", "table7", "tableS5", "tableS6",
          "fig1c", "fig2f", "fig3a", "fig3b", "fig2de", "setting", "repeated_draws", "statistics", "laws"]
FIGURES = ["fig1c_trajectory_l2.png", "fig2f_centroid_distances.png", "fig3a_jacobian_spectrum.png",
           "fig3b_compression_law.png"]


def _run(*args, timeout=900):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "art_diffpure.commands", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _main(capsys, *args):
    """``art-diffpure ARGS`` in this process: (exit code, stdout, stderr); argparse's exit is an exit code too."""
    from art_diffpure import commands as cli

    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    return code, out.out, out.err


# The smoke run covers every experiment and the whole report in about a minute; the README's --quick (at 8 images,
# its Tables 2 and 4 use 32) runs the same code at larger sizes in the slow suite.
SIZES = {"smoke": ("reproduce", "--smoke"), "quick": ("reproduce", "--quick", "--n-images", "8")}


#: The units the interrupted run computes again (the rest it finds on disk): Table 2's attacks and PGD-EOT.
DROPPED = "table2_"


def _start(args, log, **env):
    """The CLI in its own process group (its pool workers die with it when the test kills the group)."""
    return subprocess.Popen([sys.executable, "-m", "art_diffpure.commands", *args], stdout=log, stderr=log,
                            env=dict(os.environ, HF_HUB_OFFLINE="1", **env), start_new_session=True)


def _kill_group(proc):
    try:  # the pool workers outlive a killed main process otherwise
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def _group_members(pgid):
    """Pids of the live processes of process group ``pgid`` (from /proc)."""
    members = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.add(int(entry))
    return members


def _parts(out):
    return sorted(p.name for p in (out / "parts").glob("*.npz")) if (out / "parts").exists() else []


def _interrupted_run(out, size, reference):
    """
    The run resumed from a copy of the uninterrupted ``reference`` run with its Table 2 units removed (so only
    those few experiments are computed again, not the whole run), killed with SIGKILL twice, then resumed to the
    end: (1) halfway through writing its first unit (a half-written temporary file is left), (2) the parent alone
    in the middle of the experiments, one more unit after the restart: its pool workers must be gone 10 s later;
    (smoke size) (3) a write failing with ENOSPC. Returns everything the processes printed.
    """
    (out / "parts").mkdir()
    shutil.copy(reference / "run.json", out / "run.json")
    for unit in (reference / "parts").glob("*.npz"):
        if not unit.name.startswith(DROPPED):
            shutil.copy(unit, out / "parts" / unit.name)
    kept = len(_parts(out))
    assert len(_parts(reference)) - kept >= 4, "too few units left to kill a run in the middle of them"
    from art_diffpure.reproduce.store import KILL_DURING_WRITE_ENV

    cmd = (*SIZES[size], "--out", str(out), "--no-progress")
    log_path = out.parent / f"{out.name}-killed.log"
    log = open(log_path, "w")
    inline = (*cmd, "--jobs", "1")  # no pool where no worker is checked: the run is the same (jobs is no setting)
    proc = _start(inline, log, **{KILL_DURING_WRITE_ENV: "1"})
    proc.wait(timeout=900)
    _kill_group(proc)
    assert proc.returncode == -signal.SIGKILL, log_path.read_text()[-4000:]
    assert len(_parts(out)) == kept and list((out / "parts").glob("*.tmp*")), "killed while writing its first unit"
    proc = _start(cmd, log)
    deadline = time.time() + 900
    while len(_parts(out)) < kept + 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = _group_members(proc.pid) - {proc.pid}
    log.flush()
    before_kill = log_path.stat().st_size
    os.kill(proc.pid, signal.SIGKILL)  # the parent alone, as an OOM killer does: its workers must follow it
    killed_at = time.time()
    proc.wait(timeout=60)
    while _group_members(proc.pid) and time.time() < killed_at + 10:  # the dead stay dead: stop polling early
        time.sleep(0.2)
    time.sleep(0.5)  # the resource tracker's report of the killed parent's semaphores reaches the log
    orphans = _group_members(proc.pid)
    _kill_group(proc)
    # multiprocessing's resource tracker reports the semaphores it cleans up after the SIGKILLed parent: the
    # expected trace of that kill, not a warning of a normal run.
    text = log_path.read_text()
    after = re.sub(r"[^\n]*resource_tracker: There appear to be \d+ leaked semaphore[^\n]*\n[^\n]*warnings.warn[^\n]*\n",
                   "", text[before_kill:])
    log.seek(before_kill)
    log.truncate()
    log.write(after)
    log.flush()
    assert workers and not orphans, f"pool workers {sorted(orphans)} outlived their killed parent by 10 s"
    assert proc.returncode == -signal.SIGKILL and not (out / "results.json").exists()
    if size == "smoke":  # disk full at this process's first unit: one line, how to resume, no partial unit
        from art_diffpure.reproduce.store import FAIL_WRITE_ENV

        before = len(_parts(out))
        full = subprocess.run([sys.executable, "-m", "art_diffpure.commands", *inline], capture_output=True, text=True,
                              timeout=900, env=dict(os.environ, HF_HUB_OFFLINE="1", **{FAIL_WRITE_ENV: "1"}))
        log.write(full.stderr)
        assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr[-4000:]
        assert "No space left on device" in full.stderr and "to resume" in full.stderr.strip().splitlines()[-1]
        assert len(_parts(out)) == before and not list((out / "parts").glob("*.tmp*"))
    log.close()
    resumed = _run(*cmd)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert not list((out / "parts").glob("*.tmp*"))
    assert "resuming:" in resumed.stderr
    return log_path.read_text() + resumed.stderr


@pytest.fixture(scope="module", params=["smoke", pytest.param("quick", marks=pytest.mark.slow)])
def size(request):
    return request.param


@pytest.fixture(scope="module")
def in_process_run(size, tmp_path_factory):
    """One uninterrupted run through ``cli.main`` in this process (its experiments in spawned pool workers)."""
    import torch

    from art_diffpure import commands as cli

    out = tmp_path_factory.mktemp(f"{size}-run")
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        assert cli.main([*SIZES[size], "--out", str(out), "--no-progress"]) == 0
    finally:  # the command sets this process's torch threads for its run; the tests after it keep theirs
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return out


@pytest.fixture(scope="module")
def killed_run(size, in_process_run, tmp_path_factory):
    """
    The same run as a separate process, resumed from part of the in-process run's units, killed twice and resumed;
    what it printed is in printed.txt.
    """
    out = tmp_path_factory.mktemp(f"{size}-killed")
    (out.parent / f"{out.name}-printed.txt").write_text(_interrupted_run(out, size, in_process_run))
    return out


@pytest.fixture(scope="module")
def two_quick_runs(in_process_run, killed_run):
    return [in_process_run, killed_run]


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


def test_quick_prints_no_library_warnings(two_quick_runs):
    killed = two_quick_runs[1]
    printed = (killed.parent / f"{killed.name}-printed.txt").read_text()  # all three processes, workers included
    assert "Warning" not in printed, printed[-4000:]
    results = json.loads((two_quick_runs[0] / "results.json").read_text())
    # the feature-FID's singular-covariance warning is recorded with the value instead
    assert all(isinstance(results["table1"][k]["fid_warnings"], list) for k in results["table1"])


def test_quick_keeps_per_image_outcomes_of_every_attack(two_quick_runs):
    r = json.loads((two_quick_runs[0] / "results.json").read_text())
    n = r["setting"]["sizes"]["n_images"]
    t2 = r["table2"]
    for run in t2["aligned"] + t2["stochastic"]:
        assert len(run["adv_correct"]) == n and len(run["clean_correct"]) == n
    assert len(t2["pgd_eot_stochastic"]["adv_correct"]) == r["setting"]["sizes"]["eot_images"]
    assert [len(run["adv_correct"]) for run in r["table4"]["runs"]] == [n] * len(r["setting"]["sizes"]["seeds"])
    for k in ("ddpm", "reverse", "ddim"):
        assert len(r["table6"][k]["adv_correct"]) == n and len(r["table6"][k]["clean_correct"]) == n
        assert len(r["table1"][k]["adv_correct"]) == n
        assert len(r["table1"][k]["per_image"]["l2"]["start"]) == n
    for k in ("ddpm", "reverse"):
        for row in r["table7"][k]:  # (seeds, images): every seed of the sweep on the same images
            assert [len(v) for v in row["adv_correct"]] == [row["n"]] * len(row["seeds"]) == \
                [row["n"]] * len(r["setting"]["sizes"]["seeds"])
    assert r["fig3b"]["n_seeds_per_point"] == len(r["setting"]["sizes"]["seeds"])
    assert {p[2] for p in r["fig3b"]["points"]} == set(r["fig3b"]["adv_correct"])
    draws = r["repeated_draws"]
    assert len(draws["adv_correct"]) == draws["n_draws"] == 10
    assert all(len(v) == n for v in draws["adv_correct"])
    assert draws["worst_case"] <= draws["mean_over_draws"] <= draws["best_case"]
    assert len(r["undefended"]["adv_correct"]) == n
    assert len(r["tableS5"]["per_image"]["snr"]) == r["tableS5"]["n"]


def test_quick_report_has_intervals_comparisons_and_verdicts(two_quick_runs, size):
    out = two_quick_runs[0]
    r = json.loads((out / "results.json").read_text())
    assert [law["law"] for law in r["laws"]] == ["C1", "C2", "C3", "C4", "C5", "C6", "C7"]
    assert set(r["post_hoc"]) == {"compression_law_shape", "claims"}
    assert all(law["verdict"] in ("holds", "does not hold", "inconclusive at this n") for law in r["laws"])
    names = {c["name"] for c in r["statistics"]["comparisons"]}
    for name in ("stochastic vs aligned (robust)", "stochastic vs aligned (clean)", "transfer vs stochastic",
                 "transfer vs aligned", "PGD-EOT vs PGD (stochastic, same images)", "ddpm vs reverse (aligned)",
                 "stochastic worst case over draws vs aligned"):
        assert name in names, name
    for c in r["statistics"]["comparisons"]:
        assert 0 <= c["test"]["p_value"] <= 1
        assert c["difference"]["low"] <= c["difference"]["estimate"] <= c["difference"]["high"]
    acc = r["statistics"]["accuracies"]
    for key in ("table2.aligned.robust", "table2.stochastic.robust", "table4.transfer.robust",
                "repeated_draws.worst_case", "repeated_draws.mean_over_draws", "table6.ddim.robust"):
        assert acc[key]["interval"]["low"] <= acc[key]["mean"] <= acc[key]["interval"]["high"], key
    labels = [p[2] for p in r["fig3b"]["points"]]
    assert len(labels) == len(set(labels))  # distinct configurations only
    report = (out / "report.md").read_text()
    for heading in ("The paper's laws: verdicts", "Paired comparisons", "Robustness over repeated test draws",
                    "Disclosure", {"smoke": "SMOKE run", "quick": "SMALL run"}[size], "**Post hoc**",
                    "Caveat on every aligned PGD figure"):
        assert heading in report, heading


def test_quick_runs_are_identical(two_quick_runs):
    """A run in this process and one in another, killed twice and resumed: byte-identical results.json."""
    a, b = ((o / "results.json").read_text() for o in two_quick_runs)
    assert a == b


def test_rerun_keeps_a_finished_report_and_refuses_other_settings(two_quick_runs, size, capsys):
    out = two_quick_runs[1]
    before = (out / "results.json").stat().st_mtime_ns
    code, stdout, _ = _main(capsys, *SIZES[size], "--out", out, "--no-progress")
    assert code == 0 and "already finished" in stdout
    code, _, stderr = _main(capsys, *SIZES[size], "--seeds", "7", "--out", out, "--no-progress")
    assert code == 2 and "--force" in stderr and "seeds" in stderr
    assert (out / "results.json").stat().st_mtime_ns == before


def test_rejudging_a_finished_report_rewrites_it_byte_identically(in_process_run, tmp_path, capsys):
    """The statistics and verdicts recomputed from results.json alone: the same files, byte for byte."""
    import shutil

    copy = tmp_path / "report"
    shutil.copytree(in_process_run, copy)
    (copy / "report.md").unlink()
    code, stdout, _ = _main(capsys, "reproduce", "--rejudge", "--out", copy)
    assert code == 0 and "C1 " in stdout
    for name in ("results.json", "report.md"):
        assert (copy / name).read_bytes() == (in_process_run / name).read_bytes(), name
    code, _, stderr = _main(capsys, "reproduce", "--rejudge", "--out", tmp_path / "none")
    assert code == 2 and "only a finished report" in stderr


@pytest.mark.slow  # each committed report judged again (C7's 2000 refits): about a minute each
@pytest.mark.parametrize("name", ["digits-report", "digits-report-confirmatory"])
def test_committed_reports_match_todays_statistics_code(name, tmp_path, capsys):
    """A committed report's statistics, verdicts and report.md are what today's code computes from its outcomes."""
    import shutil

    committed = os.path.join(os.path.dirname(__file__), "..", "..", "docs", name)
    if name == "digits-report-confirmatory" and not os.path.exists(os.path.join(committed, "results.json")):
        pytest.fail("the confirmatory report is missing")  # it is committed with the code that judged it
    copy = tmp_path / name
    shutil.copytree(committed, copy, ignore=shutil.ignore_patterns("parts"))
    code, _, _ = _main(capsys, "reproduce", "--rejudge", "--out", copy)
    assert code == 0
    for f in ("results.json", "report.md"):
        assert (copy / f).read_text() == open(os.path.join(committed, f)).read(), f


@pytest.mark.parametrize("args, message", [(("--n-images", "0"), "--n-images: 0 is below 1"),
                                           (("--seeds", "-1"), "--seeds: -1 is below 0"),
                                           (("--jobs", "x"), "not an integer"),
                                           (("--smoke",), "not allowed with argument --quick")])
def test_bad_arguments_fail_before_any_work(args, message, tmp_path, capsys):
    code, _, stderr = _main(capsys, "reproduce", "--quick", *args, "--out", tmp_path / "r")
    assert code == 2 and message in stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, message", [(("--n-images", "0"), "--n-images: 0 is below 1"),
                                           (("--restarts", "-2"), "--restarts: -2 is below 1")])
def test_bad_masking_arguments_fail_before_any_work(args, message, tmp_path, capsys):
    code, _, stderr = _main(capsys, "masking", *args, "--out", tmp_path / "m")
    assert code == 2 and message in stderr
    assert not (tmp_path / "m").exists()


def test_the_console_script_reports_bad_input_without_a_traceback(tmp_path):
    """The console script itself (not only ``cli.main``): an argument error in a real process."""
    proc = _run("reproduce", "--smoke", "--n-images", "0", "--out", str(tmp_path / "r"), timeout=120)
    assert proc.returncode == 2 and "--n-images: 0 is below 1" in proc.stderr and "Traceback" not in proc.stderr


def _leaves(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, obj


@pytest.mark.slow  # a third run, all of it in one process: 4-10 minutes on 2 cores at --quick size
def test_one_process_gives_the_same_results(two_quick_runs, size, tmp_path):
    """--jobs 1 runs every experiment in this process with all threads: only float round-off may differ."""
    proc = _run(*SIZES[size], "--jobs", "1", "--out", str(tmp_path), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-4000:]
    a = dict(_leaves(json.loads((two_quick_runs[0] / "results.json").read_text())))
    b = dict(_leaves(json.loads((tmp_path / "results.json").read_text())))
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, float):
            assert b[key] == pytest.approx(value, rel=1e-4, abs=1e-9), key
        else:  # accuracies' per-sample flags, predictions, labels, settings: exactly equal
            assert b[key] == value, key


@pytest.mark.parametrize("preset", ["cifar10", "imagenet"])
def test_paper_presets_without_weights_exit_clearly(preset, tmp_path, capsys):
    code, _, stderr = _main(capsys, "reproduce", "--preset", preset, "--out", tmp_path / "r", "--model-dir", tmp_path)
    assert code == 2
    assert "missing" in stderr
    assert not (tmp_path / "r").exists()


def test_imagenet_experiments_and_report_run_on_tiny_models(tmp_path):
    """The ImageNet preset's Table 3 / S2 path, with tiny stand-ins for ADM and ResNet-50 (no weights here)."""
    import numpy as np
    from conftest import make_purifier, tiny_classifier

    from art_diffpure import reproduce as rep
    from art_diffpure.reproduce import jobs

    sizes = rep.Sizes(n_images=4, seeds=(0,), max_iter=2, eot_samples=2, eot_images=2, t_sweep=(), sweep_images=0,
                      compression_samples=2, neighbourhood_images=0, neighbourhood_inputs=0, neighbourhood_seeds=0,
                      jacobian_images=0, curve_eps_factors=(), curve_images=0, curve_max_iter=0,
                      diagnostics_images=0, square_queries=0, batch_size=4)
    model = tiny_classifier()
    setting = rep.Setting("imagenet", model, lambda sampler, t_star, seed, gradient: make_purifier(
        t_star=t_star, sampler=sampler, seed=seed, gradient=gradient), np.random.RandomState(0).rand(
        4, 1, 8, 8).astype(np.float32), np.arange(4), 4 / 255, 3, sizes, "cpu", lambda v: model(v),
        gradient="bpda")
    timer = jobs._Timer()
    results = rep.run_imagenet_experiments(setting, timer)
    rep.write_report(results, timer.times, str(tmp_path))
    report = (tmp_path / "report.md").read_text()
    assert "Table 3" in report and "Table S2" in report
    assert set(results["table3"]) == {"aligned", "stochastic", "eot_stochastic"}
    assert results["table3"]["aligned"][0]["config"]["purifier"]["gradient"] == "bpda"


def test_first_rows_of_an_aligned_attack_are_the_attack_on_those_rows():
    """Table 7 reuses the first rows of the Table 2 / Table 6 attacks: that must equal attacking those rows alone."""
    import dataclasses

    import numpy as np

    from art_diffpure import reproduce as rep
    from art_diffpure.evaluations.result import EvaluationResult
    from art_diffpure.reproduce import jobs

    setting = rep.digits_setting(quick=True, device="cpu", n_images=12, seeds=None, verbose=False)
    setting = dataclasses.replace(setting, sizes=dataclasses.replace(setting.sizes, max_iter=3))
    big, x_big = jobs._run_attack(setting, setting.make_purifier("reverse", 10, 0), "aligned", 1, setting.x, setting.y)
    small, x_small = jobs._run_attack(setting, setting.make_purifier("reverse", 10, 0), "aligned", 1, setting.x[:5],
                                     setting.y[:5])
    np.testing.assert_array_equal(x_big[:5], x_small)
    head = EvaluationResult.from_dict(big).head(5).to_dict()
    for key in ("adv_correct", "clean_correct", "success", "robust_accuracy", "clean_accuracy", "n"):
        assert head[key] == small[key], key
    assert big["n"] == 12 and EvaluationResult.from_dict(big).head(12).to_dict() == big
