"""Quick start, offline: the embedded digits models, a drop-in ART defence, the aligned evaluation, a compression
rate and the gradient-masking checks (the README's first code block is the part between the markers).
Run: python examples/quick_start.py   (well under a minute on one CPU core)
"""
# quick start: begin
import json

import numpy as np
import torch
from art.attacks.evasion import ProjectedGradientDescent
from art.estimators.classification import PyTorchClassifier

from art_diffpure import RandomnessAlignedAttack, metrics
from art_diffpure.evaluations import evaluate_aligned, gradient_masking_diagnostics
from art_diffpure.models.data import load_digits_split
from art_diffpure.models.digits import load_digits_classifier, load_digits_purifier

torch.set_num_threads(1)  # small models: one thread is fastest, and does not crawl when another job holds a core
x, y = load_digits_split("test")  # 8x8 digits, NCHW float32 in [0, 1]
x, y = x[:8], y[:8]
eps = 0.2

# 1. Drop-in defence: the purifier (an ART PreprocessorPyTorch) before your classifier, attacked by plain ART.
purifier = load_digits_purifier(t_star=20, seed=0)  # seed=0 fixes the randomness xi; seed=None draws fresh noise
classifier = PyTorchClassifier(load_digits_classifier(), loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                               nb_classes=10, clip_values=(0.0, 1.0), preprocessing_defences=[purifier])
np.random.seed(0)  # ART's random start uses numpy's global RNG
x_adv = ProjectedGradientDescent(classifier, eps=eps, eps_step=eps / 4, max_iter=5, verbose=False).generate(x, y)
print("ART PGD-5, robust accuracy:", (classifier.predict(x_adv).argmax(1) == y).mean())

# 2. The randomness-aligned evaluation: attack and test share xi ("stochastic" is the usual DiffPure evaluation).
attack = RandomnessAlignedAttack(classifier, randomness="aligned", seed=0, eps=eps, eps_step=eps / 4, max_iter=5)
aligned = evaluate_aligned(attack, x, y)  # accuracies, per-sample outcomes, seeds, the purifier's audit, config
print("aligned: clean", aligned.clean_accuracy, "robust", aligned.robust_accuracy)

# 3. The compression rate (eq. 10), gradient-free: a lower rate predicts higher aligned robustness.
rate = metrics.compression_rate(purifier, x, eps=eps, n_samples=4)
print("compression rate:", round(rate.rate, 3))  # mean over images; rate.per_image["l2"]: per image

# 4. Gradient-masking checks (small settings here): every check says "pass", "warn" or "n/a" with its numbers.
result = gradient_masking_diagnostics(classifier, x, y, eps=eps, max_iter=5, iterations=(2, 5), restarts=(1, 2),
                                      square_queries=20, large_eps=(0.5, 1.0), n_gradient_samples=4)
for check in result.checks:
    print(f"{check.name:>22}: {check.verdict:4}  {check.explanation}")
print("overall:", result.overall)  # "warn" if any check warns: read that check's numbers before trusting a number

# 5. Every result serialises with .to_dict() (plain JSON types).
summary = json.dumps({"aligned": aligned.to_dict(), "compression": rate.to_dict(), "diagnostics": result.to_dict()})
print(f"{len(summary)} characters of JSON")
# quick start: end
