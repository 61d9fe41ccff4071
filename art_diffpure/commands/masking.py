"""``art-diffpure masking``: the gradient-masking checks at full strength on the embedded models (resumable)."""
from __future__ import annotations

import argparse

from art_diffpure.commands._common import at_least, stopped
from art_diffpure.samplers import SAMPLERS

__all__ = ["register", "run"]


def register(sub) -> None:
    """The ``masking`` sub-command."""
    parser = sub.add_parser("masking", help="the gradient-masking checks at full strength (digits, resumable; "
                            "several processes on one --out split the work)")
    parser.add_argument("--out", default="art-diffpure-masking", help="report directory (default: %(default)s)")
    parser.add_argument("--samplers", nargs="+", default=["ddpm"], choices=list(SAMPLERS))
    parser.add_argument("--n-images", type=at_least(1), default=32,
                        help="test images (default: %(default)s; the default report uses 128)")
    parser.add_argument("--square-queries", type=at_least(1), default=1000,
                        help="Square queries (default: %(default)s)")
    parser.add_argument("--restarts", type=at_least(1), default=5,
                        help="PGD-40 random restarts (default: %(default)s)")
    parser.add_argument("--batch-size", type=at_least(1), default=32, help="attack batch size (default: %(default)s)")
    parser.add_argument("--threads", type=at_least(1), default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: write the report from the finished parts, listing what is still to run")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``masking``; several processes on one ``--out`` share the parts through claims."""
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
        return stopped("art-diffpure masking", stop, args.out, "stopped (claims released)")
    print(f"wrote {args.out}/report.md: " + ", ".join(f"{k} {v['overall']}" for k, v in res["samplers"].items()))
    return 0
