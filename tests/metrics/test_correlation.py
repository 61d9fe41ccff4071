"""Table 5 correlations (art_diffpure.metrics.correlation): the gradients are exactly the aligned attack's."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import art_classifier, make_purifier, tiny_classifier

from art_diffpure import metrics
from art_diffpure.attacks.randomness_aligned import RandomnessAlignedAttack
from art_diffpure.metrics.correlation import _loss_gradients, _pearson_rows, gradient_correlation

pytestmark = pytest.mark.usefixtures("one_thread")


def test_gradients_are_the_attacks_and_batching_does_not_change_correlations(images):
    classifier = art_classifier(tiny_classifier(), make_purifier(t_star=4, seed=0))
    y = np.arange(6) % 10
    ids = np.arange(20, 26)
    for seed, k in ((0, 1), (3, 2)):
        attack = RandomnessAlignedAttack(classifier, seed=seed, eot_samples=k, batch_size=6)
        expected = attack.loss_gradient(images, y, sample_ids=ids)
        np.testing.assert_allclose(_loss_gradients(classifier, images, y, seed, k, ids, batch_size=6), expected,
                                   rtol=0, atol=0)
        # ART's mean-reduced loss scales a batch's gradients by 1 / its size: the correlations do not see it
        other = _loss_gradients(classifier, images, y, seed, k, ids, batch_size=4)
        np.testing.assert_allclose(_pearson_rows(other, expected), 1.0, atol=1e-5)
    out = gradient_correlation(classifier, images, y, seed_a=0, seed_b=1, sample_ids=ids, batch_size=6)
    g_a = RandomnessAlignedAttack(classifier, seed=0, batch_size=6).loss_gradient(images, y, sample_ids=ids)
    g_b = RandomnessAlignedAttack(classifier, seed=1, batch_size=6).loss_gradient(images, y, sample_ids=ids)
    np.testing.assert_allclose(out["fixed_vs_fixed"]["per_sample"], _pearson_rows(g_a, g_b), atol=1e-12)
    assert out["eot_vs_fixed"] is None and metrics.gradient_correlation is gradient_correlation


def test_correlation_arguments_are_checked(images):
    classifier = art_classifier(tiny_classifier(), make_purifier(t_star=2, seed=0))
    with pytest.raises(ValueError, match="differ"):
        gradient_correlation(classifier, images, np.zeros(6, dtype=int), seed_a=1, seed_b=1)
    with pytest.raises(ValueError, match="sample_ids"):
        gradient_correlation(classifier, images, np.zeros(6, dtype=int), sample_ids=[0, 1])
    with pytest.raises(ValueError, match="DiffusionPurifier"):
        gradient_correlation(art_classifier(tiny_classifier()), images, np.zeros(6, dtype=int))
    delta = np.random.RandomState(0).randn(*images.shape) * 0.01
    a = images + delta
    a[0] = images[0]  # a zero perturbation has no correlation: NaN, left out of mean and std
    out = metrics.perturbation_correlation(images, a, images + delta)
    assert np.isnan(out["per_sample"][0]) and out["per_sample"][1:] == pytest.approx([1.0] * 5)
    assert out["mean"] == pytest.approx(1.0) and out["std"] == pytest.approx(0.0, abs=1e-12)
