"""A trained digits classifier + diffusion purifier for measurements in tests.

Uses the shipped weights of :mod:`art_diffpure.models.digits` when both are present; otherwise trains a
tiny classifier on scikit-learn's digits inline (seeded, a few seconds) and uses a tiny random UNet.
"""
from __future__ import annotations

import os

import torch


def _embedded_available() -> bool:
    try:
        from art_diffpure.models import digits as embedded
    except Exception:  # pragma: no cover - module being written
        return False
    return all(os.path.exists(os.path.join(embedded.WEIGHTS_DIR, f))
               for f in (embedded.CLASSIFIER_FILE, embedded.UNET_FILE))


def _inline_classifier() -> torch.nn.Module:
    from art_diffpure.models.data import load_digits_split

    x, y = load_digits_split("train")
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(16 * 64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    order = torch.Generator().manual_seed(0)
    for _ in range(15):
        perm = torch.randperm(len(xt), generator=order)
        for b in range(0, len(xt), 64):
            idx = perm[b:b + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    torch.random.set_rng_state(gen_state)
    return model.eval()


def digits_setup(t_star: int, n: int):
    """
    ``(classifier, purifier, x, y, source)``: an ART classifier with a seeded purifier (``seed=0``) on the
    first ``n`` images of the digits test split; ``source`` says which models were used.
    """
    from art_diffpure.models.data import load_digits_split

    x, y = load_digits_split("test")
    x, y = x[:n], y[:n]
    if _embedded_available():
        from art_diffpure.models.digits import digits_art_classifier, load_digits_purifier

        purifier = load_digits_purifier(t_star=t_star, seed=0, batch_size=256)
        return digits_art_classifier(purifier), purifier, x, y, "embedded"
    from conftest import art_classifier, make_purifier

    purifier = make_purifier(t_star=t_star, seed=0, batch_size=256)
    return art_classifier(_inline_classifier(), purifier), purifier, x, y, "inline"
