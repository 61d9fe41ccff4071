"""Aligned vs stochastic evaluation of a diffusion purifier (the paper's Table 2 in miniature).

"stochastic": the attack's gradients and the final test each draw fresh randomness (the usual
DiffPure evaluation, really a transfer attack); "aligned": attack and test share the same xi.
Run: python examples/aligned_evaluation.py   (about 30 s on 2 idle CPU cores)
"""
import torch

from art_diffpure import RandomnessAlignedAttack
from art_diffpure.models.data import load_digits_split
from art_diffpure.models.digits import digits_art_classifier, load_digits_purifier, load_provenance
from art_diffpure.evaluations import evaluate_aligned

# The embedded models are tiny: one torch thread is fastest on a CPU and does not crawl when another job holds
# a core (torch's default, all cores, was 20-300x slower on a busy 2-core machine).
torch.set_num_threads(1)

x, y = load_digits_split("test")
x, y = x[:16], y[:16]
eps = load_provenance()["recommended_eps"]
classifier = digits_art_classifier(load_digits_purifier(t_star=50, seed=0))

for randomness in ("stochastic", "transfer", "aligned"):
    attack = RandomnessAlignedAttack(classifier, randomness=randomness, seed=0, eps=eps, eps_step=eps / 4,
                                     max_iter=5, batch_size=16)
    report = evaluate_aligned(attack, x, y).to_dict()
    print(f"{randomness:>10}: clean {report['clean_accuracy']:.1%}, robust {report['robust_accuracy']:.1%} "
          f"({report['wall_time_s']:.1f} s)")
