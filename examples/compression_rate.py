"""Rank purifier configurations by compression rate, without a single gradient (the paper's Sec. 5).

A lower compression rate ||f(x) - f(x0)|| / ||x - x0|| under fixed randomness predicts higher
aligned robustness; it costs a few purifications per image instead of a 40-step attack.
Run: python examples/compression_rate.py   (about 20 s on 2 idle CPU cores)
"""
import torch

from art_diffpure.metrics import rank_by_compression
from art_diffpure.models.data import load_digits_split
from art_diffpure.models.digits import load_digits_purifier, load_provenance

# The embedded models are tiny: one torch thread is fastest on a CPU and does not crawl when another job holds
# a core (torch's default, all cores, was 20-300x slower on a busy 2-core machine).
torch.set_num_threads(1)

x, _ = load_digits_split("test")
eps = load_provenance()["recommended_eps"]
configs = [(t_star, sampler) for sampler in ("ddpm", "reverse") for t_star in (10, 50, 100, 200)]
ranking = rank_by_compression(
    {f"{sampler} t*={t_star}": (t_star, sampler) for t_star, sampler in configs}, x[:16], eps=eps,
    factory=lambda t_star, sampler: load_digits_purifier(t_star=t_star, sampler=sampler, seed=0),
    n_samples=4)
for entry in ranking.entries:
    print(f"{entry.name:>16}: compression rate {entry.rate:.3f}")
