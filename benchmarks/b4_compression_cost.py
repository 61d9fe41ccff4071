"""B4: the cost of the compression-rate estimate against the aligned PGD-40 robust accuracy, same images.

Compression rate: :func:`art_diffpure.metrics.compression_rate` (``n_samples`` perturbed copies per image in
the eps-ball, one seed: ``n_samples + 1`` purifications per image, forward only). Robust accuracy:
``RandomnessAlignedAttack(randomness="aligned")`` PGD-40 (40 full gradients through the purifier plus the
test predictions). Timed side by side, interleaved, median over repeats.

    python benchmarks/b4_compression_cost.py          # N=16 digits, t*=100
    python benchmarks/b4_compression_cost.py --smoke
"""
from __future__ import annotations

import _common as common  # noqa: E402
from art_diffpure.evaluations.aligned import evaluate_aligned

NAME = "b4_compression_cost"


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=None)
    p.add_argument("--t-star", type=int, default=None)
    common.add_checkpoint_arg(p)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--n-samples", type=int, default=8)
    args = p.parse_args(argv)
    threads = common.setup_threads(args.threads)
    n = args.n_images or (2 if args.smoke else 16)
    t_star = args.t_star or (3 if args.smoke else 100)
    steps = args.steps or (2 if args.smoke else 40)
    repeats_pgd = 1
    repeats_cr = args.repeats or (1 if args.smoke else 5)

    from art_diffpure.attacks import RandomnessAlignedAttack
    from art_diffpure.metrics import compression_rate

    eps, eps_source = common.recommended_eps()
    x, y = common.digits_data(n)
    classifier, purifier, sources = common.digits_setup(t_star, checkpoint=common.checkpoint_value(args), seed=0,
                                                        batch_size=256)
    attack = RandomnessAlignedAttack(classifier, randomness="aligned", seed=0, eps=eps, eps_step=eps / 30,
                                     max_iter=steps, batch_size=n)

    def run_cr():
        return compression_rate(purifier, x, eps=eps, n_samples=args.n_samples, seeds=(0,), norm="l2",
                                batch_size=256)

    t_cr, cr = common.timed(run_cr, repeats_cr)
    t_pgd, report = common.timed(lambda: evaluate_aligned(attack, x, y).to_dict(), repeats_pgd)
    t_cr2, _ = common.timed(run_cr, repeats_cr)  # again after the attack: same machine state on both sides
    t_cr_all = t_cr + t_cr2
    result = {
        "benchmark": NAME, "smoke": bool(args.smoke),
        "settings": {"checkpoint": args.checkpoint, "n_images": n, "t_star": t_star, "pgd_steps": steps, "eps": eps, "eps_source": eps_source,
                     "compression_n_samples": args.n_samples, "compression_seeds": [0], "threads": threads,
                     "models": sources},
        "compression_rate_s": t_cr_all, "compression_rate_median_s": common.median(t_cr_all),
        "compression_rate_l2": cr.rate,
        "pgd_s": t_pgd, "pgd_median_s": common.median(t_pgd), "robust_accuracy": report["robust_accuracy"],
        "clean_accuracy": report["clean_accuracy"],
        "purifications_per_image": {"compression": args.n_samples + 1,
                                    "pgd_gradients": steps, "pgd_test_predictions": 3},
        "cost_ratio": common.median(t_pgd) / common.median(t_cr_all),
        "targets": {"cheaper_by_at_least": 50.0},
    }
    result["targets"]["met"] = result["cost_ratio"] >= 50.0
    print(f"compression {result['compression_rate_median_s']:.2f}s PGD {result['pgd_median_s']:.1f}s "
          f"ratio {result['cost_ratio']:.1f}x")
    common.write_json(result, args.out, NAME)
    return result


if __name__ == "__main__":
    main()
