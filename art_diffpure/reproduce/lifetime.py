"""
Worker processes that end with the process that started them.

A pool worker of ``reproduce`` or a rank of ``evaluate --jobs`` re-parented to init (its parent was killed with
SIGKILL: an OOM killer, a cluster scheduler) would otherwise keep computing units nobody collects, then wait
forever on a dead queue holding its memory. :func:`exit_with_parent` starts a watchdog thread that notices the
parent's death within a second, stops the worker through SIGTERM (so ``finally`` blocks release what it holds, see
:func:`~art_diffpure.reproduce.store.exit_cleanly_on_sigterm`) and, should that not end it, exits it hard.
"""
from __future__ import annotations

import os
import signal
import threading
import time

__all__ = ["PARENT_PID_ENV", "exit_with_parent"]

#: A rank started by ``evaluate --jobs`` finds its launcher's pid here.
PARENT_PID_ENV = "ART_DIFFPURE_PARENT_PID"
POLL_S = 0.5
GRACE_S = 5.0


def exit_with_parent(parent_pid: int | None = None, poll_s: float = POLL_S, grace_s: float = GRACE_S) -> None:
    """End this process within about ``poll_s + grace_s`` seconds of its parent's death (default: the current
    parent, or ``PARENT_PID_ENV``)."""
    from art_diffpure.reproduce.store import exit_cleanly_on_sigterm

    if parent_pid is None:
        parent_pid = int(os.environ.get(PARENT_PID_ENV) or os.getppid())
    if threading.current_thread() is threading.main_thread():
        exit_cleanly_on_sigterm()

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        # To the main thread itself: a signal the kernel hands to this thread would wait for the main thread's
        # next bytecode (after a sleep or a blocking call) before its handler ran.
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
