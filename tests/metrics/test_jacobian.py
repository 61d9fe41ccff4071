"""Tests of art_diffpure.metrics.jacobian: singular values of the Jacobian with fixed randomness."""
from __future__ import annotations

import numpy as np
import pytest

from _metric_stubs import D, LinearPurifier, TorchLinearPurifier, random_matrix
from conftest import make_purifier

from art_diffpure import metrics as M


def test_jacobian_linear_finite_difference(x0):
    s = np.linspace(0.05, 1.6, D)
    res = M.jacobian_spectrum(LinearPurifier(random_matrix(s), b_scale=0.5), x0[:2], seed=1, fd_step=1e-4)
    assert res.backend == "finite_difference"
    np.testing.assert_allclose(res.singular_values, np.broadcast_to(np.sort(s)[::-1], (2, D)), atol=1e-8)
    np.testing.assert_allclose(res.frac_below, np.mean(s < 0.25))
    np.testing.assert_allclose(res.frac_above, np.mean(s > 1.0))


def test_jacobian_linear_autograd_exact_and_randomized(x0):
    s = 2.0 * 0.6 ** np.arange(D)
    pur = TorchLinearPurifier(random_matrix(s), b_scale=0.5)
    exact = M.jacobian_spectrum(pur, x0[:1])
    assert exact.backend == "autograd"
    np.testing.assert_allclose(exact.singular_values[0], s, rtol=1e-10)
    rand = M.jacobian_spectrum(pur, x0[:1], method="randomized", k=4, oversample=6, n_iter=2)
    np.testing.assert_allclose(rand.singular_values[0], s[:4], rtol=1e-5)


def test_jacobian_autograd_matches_finite_difference_on_diffusion():
    pur = make_purifier(t_star=3)
    pur.model.double()
    x = np.random.RandomState(5).uniform(0.2, 0.8, (1, 1, 8, 8))
    auto = M.jacobian_spectrum(pur, x, seed=3, backend="autograd")
    fd = M.jacobian_spectrum(pur, x, seed=3, backend="finite_difference", fd_step=1e-6)
    np.testing.assert_allclose(auto.singular_values, fd.singular_values, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("call,match", [
    (lambda p, x: M.jacobian_spectrum(p, x, method="lanczos"), "Unknown method"),
    (lambda p, x: M.jacobian_spectrum(p, x, backend="svd"), "Unknown backend"),
    (lambda p, x: M.jacobian_spectrum(p, x, method="randomized"), "needs the autograd backend"),
    (lambda p, x: M.jacobian_spectrum(p, x, backend="autograd"), "autograd backend needs"),
    (lambda p, x: M.jacobian_spectrum(p, x, fd_step=0.0), "fd_step must be positive"),
])
def test_bad_arguments(x0, call, match):
    with pytest.raises(ValueError, match=match):
        call(LinearPurifier(np.eye(D)), x0)
