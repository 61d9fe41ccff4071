"""Robustness curves (art_diffpure.evaluations.robustness_curve), on small digits models (CPU)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from _evaluation_models import _one_thread, digits, plain_model  # noqa: F401  (_one_thread: autouse fixture)
from _trained import digits_setup

from art_diffpure.evaluations.robustness_curve import plot_robustness_curve, robustness_curve


def test_curve_without_defence_modes_coincide_and_fall_to_zero():
    from matplotlib.figure import Figure

    x, y = digits(24)
    eps = [0.5, 0.2, 0.1, 0.05]
    curve = robustness_curve(plain_model(), x, y, eps, modes=("aligned", "transfer", "stochastic", "eot"),
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


def test_invalid_arguments():
    x, y = digits(4)
    with pytest.raises(ValueError, match="Unknown modes"):
        robustness_curve(plain_model(), x, y, [0.1], modes=("bogus",))
    with pytest.raises(ValueError, match="positive"):
        robustness_curve(plain_model(), x, y, [0.0])
    with pytest.raises(ValueError, match="Unknown norm"):
        robustness_curve(plain_model(), x, y, [0.1], compression_norm=1)


def test_compression_norm_takes_art_spelling():
    x, y = digits(4)
    for norm, key in ((2, "l2"), (np.inf, "linf"), ("l2", "l2")):
        curve = robustness_curve(plain_model(), x, y, [0.1], modes=("aligned",), max_iter=1, compression_norm=norm)
        assert curve.config["compression_norm"] == key
