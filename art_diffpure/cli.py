"""The console script ``art-diffpure``: argument parsing only; the work lives in the modules it calls."""
from __future__ import annotations

import argparse
import sys
import threading
from typing import Sequence

__all__ = ["main"]


def _at_least(low: int):
    """An argparse type: an integer >= ``low`` (checked before any work starts)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        if value >= 2**32:
            raise argparse.ArgumentTypeError(f"{value} is not below 2**32")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def _reproduce_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="digits", choices=["digits", "cifar10", "imagenet"],
                        help="experiment setting (default: digits, the embedded models; runs anywhere)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a small run: Tables 2 and 4 at t*=100 on 32 images with PGD-10, the rest at smoke-test size (about 2 minutes on 2 idle CPU cores)")
    size.add_argument("--confirmatory", action="store_true", help="digits: the pre-registered confirmatory run (docs/preregistration.md): the default's settings on test images 128-383, never used before it (about 35 minutes on 2 idle CPU cores)")
    size.add_argument("--smoke", action="store_true", help="every experiment at the smallest size that runs its code: checks the install and the pipeline in well under a minute; its numbers mean nothing")
    parser.add_argument("--out", default="art-diffpure-report", help="report directory (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default: %(default)s)")
    parser.add_argument("--n-images", type=_at_least(1), default=None, help="override the number of evaluation images")
    parser.add_argument("--seeds", type=_at_least(0), nargs="+", default=None,
                        help="base seeds, integers in [0, 2**32) (default: 0 1 2)")
    parser.add_argument("--model-dir", default=None,
                        help="cifar10/imagenet: RobustBench model dir (<dir>/<dataset>/Linf/<name>.pt)")
    parser.add_argument("--diffusion", default=None,
                        help="cifar10/imagenet: diffusers directory or hub id of the diffusion model")
    parser.add_argument("--data", default=None, help="cifar10/imagenet: dataset directory")
    parser.add_argument("--full-gradient", action="store_true", help="imagenet: full-gradient PGD instead of BPDA")
    parser.add_argument("--batch-size", type=_at_least(1), default=None, help="attack batch size")
    parser.add_argument("--jobs", type=_at_least(1), default=None,
                        help="processes for the independent experiments (default: one per CPU core, at most 4; "
                             "1 on a GPU); results do not depend on it up to float round-off of thread counts")
    parser.add_argument("--threads", type=_at_least(1), default=None,
                        help="torch threads per process on the CPU (default: 1; the embedded models are tiny, one "
                             "thread is fastest and does not crawl when another job holds a core)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--rejudge", action="store_true",
                        help="run nothing: recompute the intervals, comparisons and verdicts of the finished report in "
                             "--out from the per-image outcomes its results.json holds, and rewrite its files")
    parser.add_argument("--force", action="store_true",
                        help="discard what --out holds and start fresh (by default a rerun resumes a run with the same "
                             "settings and refuses one with other settings)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``art-diffpure``."""
    parser = argparse.ArgumentParser(prog="art-diffpure", description=__doc__.split(":")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    rep = sub.add_parser("reproduce", help="run the paper's experiments and write a report directory")
    _reproduce_args(rep)

    mask = sub.add_parser("masking", help="the gradient-masking checks at full strength (digits, resumable; "
                          "several processes on one --out split the work)")
    mask.add_argument("--out", default="art-diffpure-masking", help="report directory (default: %(default)s)")
    mask.add_argument("--samplers", nargs="+", default=["ddpm"], choices=["ddpm", "reverse", "ddim"])
    mask.add_argument("--n-images", type=_at_least(1), default=32,
                      help="test images (default: %(default)s; the default report uses 128)")
    mask.add_argument("--square-queries", type=_at_least(1), default=1000, help="Square queries (default: %(default)s)")
    mask.add_argument("--restarts", type=_at_least(1), default=5, help="PGD-40 random restarts (default: %(default)s)")
    mask.add_argument("--batch-size", type=_at_least(1), default=32, help="attack batch size (default: %(default)s)")
    mask.add_argument("--threads", type=_at_least(1), default=1, help="torch threads (default: %(default)s)")
    mask.add_argument("--report-only", action="store_true",
                      help="run nothing: write the report from the finished parts, listing what is still to run")

    from art_diffpure.reproduce import evaluate

    ev = sub.add_parser("evaluate", help="attack your own diffusion model + classifier on your data (resumable)")
    evaluate.add_arguments(ev)

    conv = sub.add_parser("convert-adm", help="convert a guided-diffusion (ADM) checkpoint to a diffusers directory")
    try:
        from art_diffpure.models import convert

        convert.add_arguments(conv)
    except ImportError:  # pragma: no cover - convert module not present
        pass

    args = parser.parse_args(argv)
    if args.command == "reproduce":
        from art_diffpure.reproduce import PresetUnavailable, rejudge, run_preset
        from art_diffpure.reproduce.store import (DirectoryInUse, RunMismatch, StoreWriteError, directory_in_use,
                                                  exit_cleanly_on_sigterm)

        if args.rejudge:
            try:
                results = rejudge(args.out)
            except FileNotFoundError as err:
                print(f"art-diffpure reproduce --rejudge: {err}", file=sys.stderr)
                return 2
            verdicts = ", ".join(f"{law['law']} {law['verdict']}" for law in results.get("laws", []))
            print(f"rewrote {args.out}/report.md and results.json: {verdicts}")
            return 0
        resume = f"rerun the same command to resume from what {args.out} holds"
        try:
            if threading.current_thread() is threading.main_thread():
                exit_cleanly_on_sigterm()  # SIGTERM ends through finally blocks, as Ctrl-C does
            with directory_in_use(args.out, "art-diffpure reproduce"):
                run_preset(args)
        except PresetUnavailable as err:
            print(f"art-diffpure reproduce --preset {args.preset}: {err}", file=sys.stderr)
            return 2
        except (RunMismatch, DirectoryInUse) as err:
            print(f"art-diffpure reproduce: {err}", file=sys.stderr)
            return 2
        except StoreWriteError as err:
            print(f"art-diffpure reproduce: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"art-diffpure reproduce: interrupted; {resume}", file=sys.stderr)
            return 130
        except SystemExit as stop:  # SIGTERM
            print(f"art-diffpure reproduce: stopped; {resume}", file=sys.stderr)
            return int(stop.code or 143)
        return 0
    if args.command == "masking":
        import torch

        from art_diffpure.reproduce import masking as masking_report
        from art_diffpure.reproduce.store import exit_cleanly_on_sigterm

        torch.set_num_threads(args.threads)
        exit_cleanly_on_sigterm()  # a stopped worker releases its claim at once

        try:
            res = masking_report.run(args.out, tuple(args.samplers), n_images=args.n_images,
                                     square_queries=args.square_queries, restarts=args.restarts,
                                     batch_size=args.batch_size, attack=not args.report_only)
        except (KeyboardInterrupt, SystemExit) as stop:
            print(f"art-diffpure masking: stopped (claims released); rerun the same command to resume from what "
                  f"{args.out} holds", file=sys.stderr)
            return 130 if isinstance(stop, KeyboardInterrupt) else int(stop.code or 143)
        print(f"wrote {args.out}/report.md: " + ", ".join(f"{k} {v['overall']}" for k, v in res["samplers"].items()))
        return 0
    if args.command == "evaluate":
        return evaluate.run(args)
    if args.command == "convert-adm":
        from art_diffpure.models import convert

        return int(convert.run(args) or 0)
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
