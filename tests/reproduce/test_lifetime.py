"""A worker ends with the process that started it (reproduce's pool workers, evaluate --jobs ranks)."""
import os
import signal
import subprocess
import sys
import time

CHILD = ("import os, sys, time\n"
         "from art_diffpure.reproduce.lifetime import exit_with_parent\n"
         "exit_with_parent()\n"
         "try:\n    open(sys.argv[1] + '.ready', 'w').close()\n    time.sleep(120)\n"
         "finally:\n    open(sys.argv[1], 'w').write('released')\n")  # a finally block runs: claims are released


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_rank_exits_within_seconds_of_its_launchers_sigkill(tmp_path):
    marker = tmp_path / "released"
    parent_code = ("import subprocess, sys, os\n"
                   "from art_diffpure.reproduce.lifetime import PARENT_PID_ENV\n"
                   "env = dict(os.environ, **{PARENT_PID_ENV: str(os.getpid())})\n"
                   f"p = subprocess.Popen([sys.executable, '-c', {CHILD!r}, sys.argv[1]], env=env)\n"
                   "print(p.pid, flush=True)\n"
                   "p.wait()\n")
    parent = subprocess.Popen([sys.executable, "-c", parent_code, str(marker)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    deadline = time.time() + 120
    while not os.path.exists(f"{marker}.ready") and time.time() < deadline:  # the child is up and watching
        time.sleep(0.1)
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while _alive(child) and time.time() < deadline:
        time.sleep(0.1)
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the child outlived its killed parent by 10 s"
    assert marker.read_text() == "released"
