"""Robustness curves and gradient-masking diagnostics (art_diffpure.diagnostics), on small digits models (CPU)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _trained import _embedded_available, _inline_classifier, digits_setup
from conftest import art_classifier, tiny_scheduler, tiny_unet

from art_diffpure import DiffusionPurifier
from art_diffpure.diagnostics import (
    diagnostics_table,
    gradient_masking_diagnostics,
    plot_robustness_curve,
    robustness_curve,
    run_pgd,
    seeded_numpy,
)


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


def _plain_model() -> torch.nn.Module:
    if "model" not in _PLAIN:
        if _embedded_available():
            from art_diffpure.embedded import load_digits_classifier

            _PLAIN["model"] = load_digits_classifier()
        else:
            _PLAIN["model"] = _inline_classifier()
    return _PLAIN["model"]


def _digits(n: int):
    from art_diffpure.data import load_digits_split

    x, y = load_digits_split("test")
    return x[:n], y[:n]


def test_masked_gradient_is_flagged():
    x, y = _digits(12)
    purifier = RoundedPurifier(tiny_unet(), tiny_scheduler(), t_star=2, seed=0, device_type="cpu")
    result = gradient_masking_diagnostics(
        art_classifier(_plain_model(), purifier), x, y, eps=0.1, max_iter=5, iterations=(5, 10), square_queries=50,
        large_eps=(0.5, 1.0), n_gradient_samples=4)
    verdicts = {c.name: c.verdict for c in result.checks}
    print(verdicts, {c.name: c.numbers for c in result.checks})
    assert result.overall == "warn"
    for name in ("gradient_free_attack", "gradient_health", "chain_gradients", "loss_gradient_check"):
        assert verdicts[name] == "warn", name
    assert result.check("gradient_health").numbers["zero_fraction"] == 1.0
    assert result.check("chain_gradients").numbers["per_step_grad_norm"] == [0.0, 0.0]
    assert result.check("loss_gradient_check").numbers["zero_gradient_samples"] == 4
    square = result.check("gradient_free_attack").numbers
    assert square["square_only"] > 0 and square["square_success_rate"] > square["pgd_success_rate"]
    table = diagnostics_table(result)
    assert table.count("\n") == len(result.checks) + 2 and "**warn**" in table
    assert json.loads(json.dumps(result.to_dict()))["overall"] == "warn"


def test_plain_classifier_is_not_flagged():
    x, y = _digits(24)
    result = gradient_masking_diagnostics(_plain_model(), x, y, eps=0.1, max_iter=10, iterations=(5, 10, 20))
    verdicts = {c.name: c.verdict for c in result.checks}
    print(verdicts)
    assert result.overall == "pass", diagnostics_table(result)
    assert verdicts["chain_gradients"] == "n/a"
    assert result.check("large_eps").numbers["robust_accuracy"][-1] == 0.0
    json.dumps(result.to_dict())


def test_curve_without_defence_modes_coincide_and_fall_to_zero():
    from matplotlib.figure import Figure

    x, y = _digits(24)
    eps = [0.5, 0.2, 0.1, 0.05]
    curve = robustness_curve(_plain_model(), x, y, eps, modes=("aligned", "transfer", "stochastic", "eot"),
                             max_iter=10)
    print(curve.robust_accuracy, curve.undefended)
    acc = curve.robust_accuracy
    assert acc["aligned"] == acc["transfer"] == acc["stochastic"] == acc["eot"] == curve.undefended
    assert curve.success["aligned"] == curve.success["stochastic"]
    assert acc["aligned"][0] == 0.0 and acc["aligned"][-1] > 0.5
    assert curve.compression_rate == [1.0] * 4 and curve.theory == curve.undefended
    assert all(curve.monotone.values()) and any("no DiffusionPurifier" in n for n in curve.notes)
    d = json.loads(json.dumps(curve.to_dict()))
    fig = plot_robustness_curve(d, title="undefended")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert len(fig.axes[0].get_lines()) == 4 + 1 + 1  # modes, undefended, theory


def test_aligned_curve_is_monotone_or_explained():
    classifier, purifier, x, y, source = digits_setup(t_star=10, n=16)
    eps = [0.3, 0.15, 0.05]
    curve = robustness_curve(classifier, x, y, eps, modes=("aligned", "transfer"), max_iter=10,
                             compression_samples=2)
    print(source, curve.robust_accuracy, curve.undefended, curve.compression_rate, curve.theory, curve.notes)
    if not curve.monotone["aligned"]:
        assert any("'aligned' is not monotone" in n for n in curve.notes)
    else:
        acc = curve.robust_accuracy["aligned"]  # eps decreasing: accuracy non-decreasing along the list
        assert all(a <= b for a, b in zip(acc, acc[1:]))
    assert len(curve.compression_rate) == 3 and all(r is not None and r > 0 for r in curve.compression_rate)
    assert curve.theory_eps == pytest.approx([e * r for e, r in zip(eps, curve.compression_rate)])
    assert curve.undefended[0] <= curve.undefended[-1]
    fig = plot_robustness_curve(curve)
    assert len(fig.axes[0].get_lines()) == 2 + 1 + 1


def test_stochastic_mode_is_reproducible_and_numpy_state_restored():
    classifier, purifier, x, y, _ = digits_setup(t_star=3, n=6)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = run_pgd(classifier, x, y, 0.1, "stochastic", max_iter=2, seed=5)
    b = run_pgd(classifier, x, y, 0.1, "stochastic", max_iter=2, seed=5)
    assert a == b
    assert np.array_equal(np.random.get_state()[1], before)
    with seeded_numpy(1):
        first = np.random.rand()
    with seeded_numpy(1):
        assert np.random.rand() == first


def test_invalid_arguments():
    x, y = _digits(4)
    with pytest.raises(ValueError, match="Unknown modes"):
        robustness_curve(_plain_model(), x, y, [0.1], modes=("bogus",))
    with pytest.raises(ValueError, match="positive"):
        robustness_curve(_plain_model(), x, y, [0.0])
