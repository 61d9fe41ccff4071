"""Shared models and data of the evaluation tests (small digits models, CPU); not a conftest, so that
``from conftest import ...`` keeps meaning tests/conftest.py."""
from __future__ import annotations

import pytest
import torch

from _trained import _embedded_available, _inline_classifier

from art_diffpure import DiffusionPurifier


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: attacks on 8x8 images gain nothing from more, and the CI cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RoundedPurifier(DiffusionPurifier):
    """A purifier with a deliberately masked gradient: its output is rounded, and ``torch.round`` has zero gradient."""

    def forward(self, x, y=None):
        out, y = super().forward(x, y)
        return torch.round(out * 8) / 8, y


_PLAIN = {}


def plain_model() -> torch.nn.Module:
    """The digits classifier (embedded weights when present, else trained inline), cached."""
    if "model" not in _PLAIN:
        if _embedded_available():
            from art_diffpure.models.digits import load_digits_classifier

            _PLAIN["model"] = load_digits_classifier()
        else:
            _PLAIN["model"] = _inline_classifier()
    return _PLAIN["model"]


def digits(n: int):
    """The first ``n`` images and labels of the digits test split."""
    from art_diffpure.models.data import load_digits_split

    x, y = load_digits_split("test")
    return x[:n], y[:n]


def tiny_masking_kwargs(monkeypatch) -> dict:
    """``masking.run`` keyword arguments of a tiny full-strength run (4 images, t* = 2, the plan's iteration counts
    cut: the code path is the same), with the cuts applied to the masking module for the test."""
    import numpy as np
    from conftest import art_classifier, make_purifier, tiny_classifier

    from art_diffpure.reproduce import masking as masking_report

    torch.set_num_threads(1)
    for name, value in (("PGD_ITERATIONS", (1, 2, 3, 4)), ("REFERENCE_ITERATIONS", 2), ("APGD_ITERATIONS", 3),
                        ("AUTOATTACK_RAND_EOT", 2)):
        monkeypatch.setattr(masking_report, name, value)
    x = np.random.RandomState(0).rand(4, 1, 8, 8).astype(np.float32)

    def make(sampler, gradient):
        return art_classifier(tiny_classifier(), make_purifier(t_star=2, sampler=sampler, seed=0, gradient=gradient))

    y = make("ddpm", "full").predict(x).argmax(1)
    return dict(samplers=("ddpm",), n_images=4, eps=0.1, square_queries=5, restarts=2, batch_size=4,
                make_classifier=make, data=(x, y), progress=False)
