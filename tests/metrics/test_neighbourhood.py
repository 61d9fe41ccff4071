"""Tests of art_diffpure.metrics.neighbourhood: variance decomposition / SNR, centroids, direction correlations."""
from __future__ import annotations

import json

import numpy as np
import pytest

from _metric_stubs import D, LinearPurifier, grid_inputs, random_matrix
from conftest import make_purifier

from art_diffpure import metrics as M
from art_diffpure.randomness import eot_seeds


def test_variance_linear_closed_form(x0):
    a = random_matrix(np.linspace(0.2, 2.0, D))
    pur = LinearPurifier(a, b_scale=0.3)
    res = M.variance_decomposition(pur, x0, eps=0.05, n_inputs=6, n_seeds=4, seed=5, batch_size=9)
    seeds = eot_seeds(5, 4)
    inputs = grid_inputs(pur, 3, seeds)
    for i in range(3):
        cov = np.cov(inputs[i].T, ddof=0)
        input_var = np.trace(a @ cov @ a.T) / D
        b = np.stack([pur.offset(s, i) for s in seeds])
        internal = np.mean(np.sum((b - b.mean(axis=0)) ** 2, axis=1)) / D
        assert res.input[i] == pytest.approx(input_var, rel=1e-9)
        assert res.internal[i] == pytest.approx(internal, rel=1e-9)
        assert res.snr[i] == pytest.approx(input_var / internal, rel=1e-9)
    np.testing.assert_allclose(res.total, res.input + res.internal, rtol=1e-12)
    assert res.mean["snr"] == pytest.approx(res.snr.mean())


def test_variance_total_law_on_diffusion(x8):
    res = M.variance_decomposition(make_purifier(t_star=10), x8, eps=8 / 255, n_inputs=4, n_seeds=3, batch_size=16)
    np.testing.assert_allclose(res.total, res.input + res.internal, rtol=1e-12, atol=1e-18)
    assert np.all(res.input > 0) and np.all(res.internal > 0)
    json.dumps(res.to_dict())


def test_centroids_scaled_identity(x0):
    c = 0.4
    pur = LinearPurifier(c * np.eye(D), b_scale=0.2)
    res = M.centroid_distances(pur, x0, eps=0.05, n_inputs=5, n_seeds=3)
    np.testing.assert_allclose(res.per_image["vary_input_fixed_xi"], c * res.per_image["initial"], rtol=1e-9)
    for i in range(3):
        b = np.stack([pur.offset(s, i) for s in eot_seeds(0, 3)])
        expected = np.linalg.norm(b - b.mean(axis=0), axis=1).mean()
        assert res.per_image["vary_xi_fixed_input"][i] == pytest.approx(expected, rel=1e-9)
    assert res.distributions["vary_both"].shape == (3 * 5 * 3,)
    assert res.distributions["initial"].shape == (3 * 5,)


def test_direction_correlations(x0):
    pur = LinearPurifier(np.eye(D), b_scale=1.0)
    res = M.direction_correlations(pur, x0, eps=0.01, n_inputs=4, n_seeds=5)
    # Same large offset under one xi: directions nearly identical; independent offsets: weakly correlated.
    assert np.all(res.per_image["vary_input_fixed_xi"] > 0.99)
    assert np.all(np.abs(res.per_image["vary_xi_fixed_input"]) < 0.5)
    # Recompute image 0 by hand.
    seeds = eot_seeds(0, 5)
    x_in = grid_inputs(pur, 3, seeds)[0]
    out = np.stack([x_in + pur.offset(s, 0) for s in seeds])  # (seed, input, D)
    dirs = out - x0[0].reshape(-1)
    corr = lambda m: np.corrcoef(m)[np.triu_indices(len(m), 1)].mean()  # noqa: E731
    assert res.per_image["vary_xi_fixed_input"][0] == pytest.approx(np.mean([corr(dirs[:, j]) for j in range(4)]))
    assert res.per_image["vary_input_fixed_xi"][0] == pytest.approx(np.mean([corr(dirs[s]) for s in range(5)]))


def test_neighbourhood_analysis_matches_separate(x8):
    pur = make_purifier(t_star=10)
    kw = dict(eps=8 / 255, n_inputs=3, n_seeds=3, batch_size=32)
    both = M.neighbourhood_analysis(pur, x8, **kw)
    np.testing.assert_allclose(both.variance.snr, M.variance_decomposition(pur, x8, **kw).snr, rtol=1e-5)
    np.testing.assert_allclose(both.centroids.per_image["vary_both"],
                               M.centroid_distances(pur, x8, **kw).per_image["vary_both"], rtol=1e-5)
    json.dumps(both.to_dict())


@pytest.mark.parametrize("fn", [M.neighbourhood_analysis, M.variance_decomposition, M.centroid_distances,
                                M.direction_correlations])
def test_neighbourhood_configurations_are_eot_seeds(x0, fn):
    """The n_seeds configurations are the attack's EOT configurations eot_seeds(seed, n_seeds)."""
    pur = LinearPurifier(np.eye(D), b_scale=0.1)
    fn(pur, x0, eps=0.05, n_inputs=3, n_seeds=4, seed=11, sample_ids=[7, 8, 9], batch_size=5)
    rows, seeds, ids = pur.recorded()
    expected = eot_seeds(11, 4)
    assert expected == [11, 11 + 7919, 11 + 2 * 7919, 11 + 3 * 7919]
    assert sorted(set(seeds.tolist())) == expected
    for sid in (7, 8, 9):  # every image: the same 3 inputs under each of the 4 configurations
        for s in expected:
            assert np.sum((ids == sid) & (seeds == s)) == 3
    assert len(rows) == 3 * 3 * 4


# ---------------------------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("call,match", [
    (lambda p, x: M.variance_decomposition(p, x, eps=0.1, n_inputs=1), "n_inputs must be"),
    (lambda p, x: M.variance_decomposition(p, x, eps=0.1, n_seeds=1), "n_seeds must be"),
    (lambda p, x: M.variance_decomposition(p, x, eps=0.1, seed=-1), "seed must be"),
    (lambda p, x: M.centroid_distances(p, x, eps=float("nan")), "eps must be a positive"),
    (lambda p, x: M.direction_correlations(p, x, reference="other"), "Unknown reference"),
    (lambda p, x: M.neighbourhood_analysis(p, x, reference="other"), "Unknown reference"),
])
def test_bad_arguments(x0, call, match):
    with pytest.raises(ValueError, match=match):
        call(LinearPurifier(np.eye(D)), x0)
