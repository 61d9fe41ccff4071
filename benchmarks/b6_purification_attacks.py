"""B6: the cost of the attacks built for purification, side by side with what they replace.

(a) Time per iteration: DiffHammer (N no-grad purifications, the classifier's gradient at each, the E-step, ONE
    backward through the selected draw) against PGD-EOT-N (N backwards: ``RandomnessAlignedAttack(eot_samples=N)``
    in stochastic mode, batched). Interleaved repeats; the ratio of medians. Target: <= 0.4x at N = 10.
(b) DiffAttack's live memory (peak of live CPU tensor bytes, torch profiler) of one loss gradient with the
    deviated-reconstruction terms at t* = 200 against t* = 10, every UNet call checkpointed. Target: <= 1.5x.

    python benchmarks/b6_purification_attacks.py          # digits, 8 images, N = 10, t* = 100; memory t* 10 / 200
    python benchmarks/b6_purification_attacks.py --smoke
"""
from __future__ import annotations

import numpy as np

import _common as common  # noqa: E402
from b2_memory import live_peak_mib  # noqa: E402

NAME = "b6_purification_attacks"


def hammer_iteration(attack, x: np.ndarray, y: np.ndarray, it: int) -> np.ndarray:
    """One DiffHammer iteration's gradient (the work of its ``gradient`` callback, without the APGD update)."""
    ids = np.arange(len(x))
    draws = attack.head.draws(attack.seed, it * attack.n_draws, attack.n_draws)
    losses, grads, _, seeds = attack.draw_statistics(x, y, draws, ids, "ce")
    return attack.grafted_gradient(x, losses, grads, seeds, ids)


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=None)
    p.add_argument("--t-star", type=int, default=None)
    p.add_argument("--draws", type=int, default=None, help="N (default 10)")
    args = p.parse_args(argv)
    threads = common.setup_threads(args.threads)
    n = args.n_images or (2 if args.smoke else 8)
    t_star = args.t_star or (3 if args.smoke else 100)
    draws = args.draws or (2 if args.smoke else 10)
    repeats = args.repeats or (1 if args.smoke else 3)
    memory_t = (2, 4) if args.smoke else (10, 200)

    from art_diffpure.attacks import DiffAttack, DiffHammer, RandomnessAlignedAttack

    x, y = common.digits_data(n)
    classifier, purifier, sources = common.digits_setup(t_star, checkpoint=True, seed=None, batch_size=4096)
    hammer = DiffHammer(classifier, eps=0.2, n_draws=draws, batch_size=n)
    eot = RandomnessAlignedAttack(classifier, randomness="stochastic", eot_samples=draws, seed=0, batch_size=n)
    times_h, times_e = [], []
    for r in range(repeats + 1):  # interleaved, so both see the same load; the first round warms up
        th, _ = common.timed(lambda: hammer_iteration(hammer, x, y, r), 1)
        te, _ = common.timed(lambda: eot.loss_gradient(x, y), 1)
        if r:
            times_h += th
            times_e += te
    rows = []
    for t in memory_t:
        clf, _, _ = common.digits_setup(t, checkpoint=True, seed=None, batch_size=4096)
        attack = DiffAttack(clf, eps=0.2, eot_samples=1, every=10 if t >= 20 else 1, batch_size=n)
        attack.loss_and_gradient(x, y, [0], np.arange(n))  # warm-up: lazily built code and buffers
        peak = live_peak_mib(lambda: attack.loss_and_gradient(x, y, [0], np.arange(n)))
        rows.append({"t_star": t, "deviation_states": len(attack._states()), "live_tensor_peak_mib": peak})
    ratio_time = common.median(times_h) / common.median(times_e)
    ratio_memory = rows[1]["live_tensor_peak_mib"] / rows[0]["live_tensor_peak_mib"]
    result = {
        "benchmark": NAME, "smoke": bool(args.smoke),
        "settings": {"n_images": n, "t_star": t_star, "draws": draws, "repeats": repeats, "threads": threads,
                     "checkpoint": True, "memory_t_star": list(memory_t), "models": sources},
        "diffhammer_iteration_s": times_h, "pgd_eot_iteration_s": times_e,
        "diffhammer_median_s": common.median(times_h), "pgd_eot_median_s": common.median(times_e),
        "time_ratio": ratio_time, "memory": rows, "memory_ratio": ratio_memory,
        "targets": {"time_ratio_at_most": 0.4, "memory_ratio_at_most": 1.5},
    }
    result["targets"]["met"] = bool(ratio_time <= 0.4 and ratio_memory <= 1.5)
    print(f"DiffHammer {result['diffhammer_median_s']:.2f}s vs PGD-EOT-{draws} {result['pgd_eot_median_s']:.2f}s per "
          f"iteration: {ratio_time:.2f}x; DiffAttack live memory t*={memory_t[1]} / t*={memory_t[0]}: {ratio_memory:.2f}x")
    common.write_json(result, args.out, NAME)
    return result


if __name__ == "__main__":
    main()
