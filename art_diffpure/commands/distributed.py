"""
The sharded aligned evaluation of the embedded digits models under ``torchrun`` (or one process), as a command::

    torchrun --nproc_per_node=2 -m art_diffpure.commands.distributed --n-images 64 --out results.json

The sharding itself is :func:`art_diffpure.evaluations.distributed.sharded_evaluate`.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any, Sequence

from art_diffpure._utils import to_jsonable
from art_diffpure.evaluations.distributed import init_from_env, rank_and_world, sharded_evaluate

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m art_diffpure.commands.distributed`` / ``torchrun ... -m art_diffpure.commands.distributed``:
    aligned PGD on the embedded digits models, sharded across the launched processes; rank 0 writes the JSON report."""
    import torch

    p = argparse.ArgumentParser(description=main.__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n-images", type=int, default=32, help="first N images of the digits test split")
    p.add_argument("--t-star", type=int, default=100)
    p.add_argument("--max-iter", type=int, default=40)
    p.add_argument("--eps", type=float, default=None, help="default: provenance.json's recommended_eps, else 0.1")
    p.add_argument("--rel-step", type=float, default=None,
                   help="eps_step = rel_step * eps (default: attacks.protocols.rel_step(max_iter), 1/30 at 40)")
    p.add_argument("--eot-samples", type=int, default=1)
    p.add_argument("--randomness", default="aligned", choices=("aligned", "transfer", "stochastic"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="attack batch size (and shard granularity)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per process (default: 1 with --device cpu, as several ranks share the cores)")
    p.add_argument("--backend", default=None, help="gloo or nccl (default: nccl with --device gpu, else gloo)")
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--out", default=None, help="JSON report path (written by rank 0)")
    args = p.parse_args(argv)

    if args.threads or args.device == "cpu":
        torch.set_num_threads(args.threads or 1)
    launched = init_from_env(args.backend, args.device)
    from art_diffpure.attacks.protocols import rel_step
    from art_diffpure.attacks.randomness_aligned import RandomnessAlignedAttack
    from art_diffpure.models.data import load_digits_split
    from art_diffpure.models.digits import digits_art_classifier, load_digits_purifier, load_provenance

    eps = args.eps
    if eps is None:
        try:
            eps = float(load_provenance().get("recommended_eps", 0.1))
        except (FileNotFoundError, TypeError, ValueError):
            eps = 0.1
    x, y = load_digits_split("test")
    x, y = x[:args.n_images], y[:args.n_images]
    if args.rel_step is None:
        args.rel_step = rel_step(args.max_iter)

    def factory():
        purifier = load_digits_purifier(t_star=args.t_star, seed=args.seed, device_type=args.device)
        classifier = digits_art_classifier(purifier, device_type=args.device)
        return RandomnessAlignedAttack(classifier, randomness=args.randomness, eot_samples=args.eot_samples,
                                       seed=args.seed, eps=eps, eps_step=args.rel_step * eps,
                                       max_iter=args.max_iter, batch_size=args.batch_size)

    report = sharded_evaluate(factory, x, y)
    report["settings"] = {k: v for k, v in vars(args).items() if k != "out"}
    report["settings"]["eps"] = eps
    rank, world = rank_and_world()
    if rank == 0:
        print(f"world_size={world} n={report['n']} clean={report['clean_accuracy']:.4f} "
              f"robust={report['robust_accuracy']:.4f} wall={report['total_wall_time_s']:.1f}s")
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w", encoding="utf-8") as f:
                json.dump(to_jsonable(report), f, indent=2)
    if launched:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return report


if __name__ == "__main__":
    main()
