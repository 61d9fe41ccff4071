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
    parser.add_argument("--purification-attacks", action="store_true",
                        help="also run the attacks built for purification (DiffHammer, DiffAttack, surrogate "
                             "PGD-EOT; as evaluate --attack NAME, aligned, the registry's budgets) after the others, "
                             "each a stronger-attack check against PGD-40. GPU work at the report's size: at t* = 100 "
                             "and 128 images about 12 h (DiffHammer), 4 h (DiffAttack) and 0.5 h (surrogate) of one "
                             "CPU core per sampler (default: off)")
    parser.add_argument("--purification-max-iter", type=at_least(1), default=None,
                        help="iterations of each of those attacks (evaluate --max-iter, per loss; default: the "
                             "registry's, 100 / 100 / 200); only with --purification-attacks")
    parser.set_defaults(run=run, _masking_parser=parser)


def run(args: argparse.Namespace) -> int:
    """Run ``masking``; several processes on one ``--out`` share the parts through claims."""
    import torch

    from art_diffpure.reproduce import masking as masking_report
    from art_diffpure.reproduce.store import exit_cleanly_on_sigterm

    if args.purification_max_iter is not None and not args.purification_attacks:
        args._masking_parser.error("--purification-max-iter: only with --purification-attacks")
    torch.set_num_threads(args.threads)
    exit_cleanly_on_sigterm()  # a stopped worker releases its claim at once
    try:
        res = masking_report.run(args.out, tuple(args.samplers), n_images=args.n_images,
                                 square_queries=args.square_queries, restarts=args.restarts,
                                 batch_size=args.batch_size, attack=not args.report_only,
                                 purification_attacks=args.purification_attacks,
                                 purification_max_iter=args.purification_max_iter)
    except (KeyboardInterrupt, SystemExit) as stop:
        return stopped("art-diffpure masking", stop, args.out, "stopped (claims released)")
    print(f"wrote {args.out}/report.md: " + ", ".join(f"{k} {v['overall']}" for k, v in res["samplers"].items()))
    return 0
