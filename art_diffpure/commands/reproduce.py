"""``art-diffpure reproduce``: the paper's experiments on a preset, written as a report directory (resumable)."""
from __future__ import annotations

import argparse
import sys
import threading

from art_diffpure.commands._common import at_least, stopped

__all__ = ["register", "run"]

COMMAND = "art-diffpure reproduce"


def register(sub) -> None:
    """The ``reproduce`` sub-command."""
    parser = sub.add_parser("reproduce", help="run the paper's experiments and write a report directory")
    parser.add_argument("--preset", default="digits", choices=["digits", "cifar10", "imagenet"],
                        help="experiment setting (default: digits, the embedded models; runs anywhere)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a small run: Tables 2 and 4 at t*=100 on 32 images with "
                      "PGD-10, the rest at smoke-test size (BENCHMARKS.md has its wall time)")
    size.add_argument("--confirmatory", action="store_true", help="digits: the pre-registered confirmatory run "
                      "(docs/preregistration.md): the default's settings on test images 128-383, never used before it "
                      "(BENCHMARKS.md has its wall time)")
    size.add_argument("--smoke", action="store_true", help="every experiment at the smallest size that runs its code: "
                      "checks the install and the pipeline; its numbers mean nothing")
    parser.add_argument("--out", default="art-diffpure-report", help="report directory (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default: %(default)s)")
    parser.add_argument("--n-images", type=at_least(1), default=None, help="override the number of evaluation images")
    parser.add_argument("--seeds", type=at_least(0), nargs="+", default=None,
                        help="base seeds, integers in [0, 2**32) (default: 0 1 2)")
    parser.add_argument("--model-dir", default=None,
                        help="cifar10/imagenet: RobustBench model dir (<dir>/<dataset>/Linf/<name>.pt)")
    parser.add_argument("--diffusion", default=None,
                        help="cifar10/imagenet: diffusers directory or hub id of the diffusion model")
    parser.add_argument("--data", default=None, help="cifar10/imagenet: dataset directory")
    parser.add_argument("--full-gradient", action="store_true", help="imagenet: full-gradient PGD instead of BPDA")
    parser.add_argument("--batch-size", type=at_least(1), default=None, help="attack batch size")
    parser.add_argument("--jobs", type=at_least(1), default=None,
                        help="processes for the independent experiments (default: one per CPU core, at most 4; "
                             "1 on a GPU); results do not depend on it up to float round-off of thread counts")
    parser.add_argument("--threads", type=at_least(1), default=None,
                        help="torch threads per process on the CPU (default: 1; the embedded models are tiny, one "
                             "thread is fastest and does not crawl when another job holds a core)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--rejudge", action="store_true",
                        help="run nothing: recompute the intervals, comparisons and verdicts of the finished report in "
                             "--out from the per-image outcomes its results.json holds, and rewrite its files")
    parser.add_argument("--force", action="store_true",
                        help="discard what --out holds and start fresh (by default a rerun resumes a run with the same "
                             "settings and refuses one with other settings)")
    parser.set_defaults(run=run)


def _rejudge(out: str) -> int:
    from art_diffpure.reproduce import rejudge

    try:
        results = rejudge(out)
    except FileNotFoundError as err:
        print(f"{COMMAND} --rejudge: {err}", file=sys.stderr)
        return 2
    verdicts = ", ".join(f"{law['law']} {law['verdict']}" for law in results.get("laws", []))
    print(f"rewrote {out}/report.md and results.json: {verdicts}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``reproduce``; the exit status (2: an unavailable preset or an output directory of another run)."""
    from art_diffpure.reproduce import PresetUnavailable, run_preset
    from art_diffpure.reproduce.store import (DirectoryInUse, RunMismatch, StoreWriteError, directory_in_use,
                                              exit_cleanly_on_sigterm)

    if args.rejudge:
        return _rejudge(args.out)
    try:
        if threading.current_thread() is threading.main_thread():
            exit_cleanly_on_sigterm()  # SIGTERM ends through finally blocks, as Ctrl-C does
        with directory_in_use(args.out, COMMAND):
            run_preset(args)
    except PresetUnavailable as err:
        print(f"{COMMAND} --preset {args.preset}: {err}", file=sys.stderr)
        return 2
    except (RunMismatch, DirectoryInUse) as err:
        print(f"{COMMAND}: {err}", file=sys.stderr)
        return 2
    except StoreWriteError as err:
        print(f"{COMMAND}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        return stopped(COMMAND, stop, args.out, "interrupted")
    except SystemExit as stop:  # SIGTERM
        return stopped(COMMAND, stop, args.out)
    return 0
