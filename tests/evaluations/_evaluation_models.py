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
