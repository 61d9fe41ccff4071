"""Add diffusion purification to an existing ART pipeline and attack it.

The classifier and the DDPM are the embedded digits models; swap in your own `torch.nn.Module` and
`DiffusionPurifier.from_pretrained("google/ddpm-cifar10-32")` for CIFAR-10.
Run: python examples/drop_in_defence.py   (about 15 s on 2 idle CPU cores)
"""
import numpy as np
import torch
from art.attacks.evasion import ProjectedGradientDescent
from art.estimators.classification import PyTorchClassifier

from art_diffpure.models.data import load_digits_split
from art_diffpure.models.digits import load_digits_classifier, load_digits_purifier, load_provenance

# The embedded models are tiny: one torch thread is fastest on a CPU and does not crawl when another job holds
# a core (torch's default, all cores, was 20-300x slower on a busy 2-core machine).
torch.set_num_threads(1)

x, y = load_digits_split("test")
x, y = x[:16], y[:16]
eps = load_provenance()["recommended_eps"]
model = load_digits_classifier()

# The purifier is a standard ART PyTorch preprocessor: pass it as a preprocessing defence.
purifier = load_digits_purifier(t_star=20, sampler="ddpm", seed=0)  # seed=0: fixed randomness xi
defended = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
                             clip_values=(0.0, 1.0), preprocessing_defences=[purifier], device_type="cpu")
undefended = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                               nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")

for name, clf in [("undefended", undefended), ("purified", defended)]:
    np.random.seed(0)  # ART's random start uses numpy's global RNG
    attack = ProjectedGradientDescent(clf, eps=eps, eps_step=eps / 10, max_iter=10, num_random_init=1, verbose=False)
    x_adv = attack.generate(x, y)  # full gradient through the purifier (gradient="full")
    clean = (clf.predict(x).argmax(1) == y).mean()
    robust = (clf.predict(x_adv).argmax(1) == y).mean()
    print(f"{name:>10}: clean accuracy {clean:.1%}, PGD-10 robust accuracy at eps={eps}: {robust:.1%}")
