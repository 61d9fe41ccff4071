"""Tests of art_diffpure.metrics: analytic purifiers with closed forms, and a tiny random-UNet purifier."""
from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch

from conftest import make_purifier, tiny_classifier

from art_diffpure import metrics as M

torch.set_num_threads(1)  # the tiny UNet is far faster single-threaded on a shared CPU

SHAPE = (1, 4, 4)
D = 16


# ---------------------------------------------------------------------------------------------- analytic purifiers
class IdentityPurifier:
    def purify(self, x, seed=None, sample_ids=None):
        return x.clone() if isinstance(x, torch.Tensor) else x.copy()


class ConstantPurifier:
    def purify(self, x, seed=None, sample_ids=None):
        return np.full_like(x, 0.5)


class LinearPurifier:
    """f_xi(x) = A x + b_xi on flattened images, b_xi deterministic in (seed, sample id); records every call."""

    clip_values = (0.0, 1.0)

    def __init__(self, a: np.ndarray, b_scale: float = 0.1):
        self.a = np.asarray(a, dtype=np.float64)
        self.b_scale = b_scale
        self.calls: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def offset(self, seed: int, sid: int) -> np.ndarray:
        return np.random.RandomState((int(seed) * 1_000_003 + int(sid)) % 2**32).randn(len(self.a)) * self.b_scale

    def _rows(self, n, seed, sample_ids):
        seeds = np.broadcast_to(np.asarray(seed, dtype=np.int64), (n,)).copy()
        ids = np.arange(n) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64).reshape(-1)
        return seeds, ids

    def purify(self, x, seed=None, sample_ids=None):
        xn = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        seeds, ids = self._rows(len(x), seed, sample_ids)
        self.calls.append((xn.copy(), seeds, ids))
        b = np.stack([self.offset(s, i) for s, i in zip(seeds, ids)])
        return (xn @ self.a.T + b).reshape(x.shape).astype(x.dtype)


class TorchLinearPurifier(LinearPurifier):
    """The same map with a differentiable forward() inside randomness(), like DiffusionPurifier."""

    gradient = "full"
    _context = None

    @contextlib.contextmanager
    def randomness(self, seed, sample_ids=None):
        self._context = (seed, sample_ids)
        try:
            yield self
        finally:
            self._context = None

    def forward(self, x, y=None):
        seeds, ids = self._rows(len(x), *self._context)
        b = torch.from_numpy(np.stack([self.offset(s, i) for s, i in zip(seeds, ids)])).to(x)
        return (x.reshape(len(x), -1) @ torch.from_numpy(self.a).to(x).T + b).reshape(x.shape), y


def random_matrix(singular_values, seed=0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    u, _ = np.linalg.qr(rng.randn(D, D))
    v, _ = np.linalg.qr(rng.randn(D, D))
    return u @ np.diag(singular_values) @ v.T


@pytest.fixture
def x0() -> np.ndarray:
    return np.random.RandomState(0).uniform(0.2, 0.8, (3, *SHAPE))


@pytest.fixture
def x8() -> np.ndarray:
    return np.random.RandomState(1).uniform(0.2, 0.8, (2, 1, 8, 8)).astype(np.float32)


def grid_inputs(purifier: LinearPurifier, n_images: int, seeds) -> dict[int, np.ndarray]:
    """The recorded perturbations of each image under its first seed (identical under every seed)."""
    rows = np.concatenate([c[0] for c in purifier.calls])
    s = np.concatenate([c[1] for c in purifier.calls])
    i = np.concatenate([c[2] for c in purifier.calls])
    out = {}
    for img in range(n_images):
        blocks = [rows[(i == img) & (s == seed)] for seed in seeds]
        for b in blocks[1:]:
            np.testing.assert_array_equal(b, blocks[0])
        out[img] = blocks[0]
    return out


# ---------------------------------------------------------------------------------------------- compression rate
@pytest.mark.parametrize("as_torch", [False, True])
def test_compression_identity_and_constant(x0, as_torch):
    x = torch.from_numpy(x0) if as_torch else x0
    ident = M.compression_rate(IdentityPurifier(), x, eps=0.05, n_samples=4, seeds=(0, 3), norm="both")
    for nm in ("l2", "linf"):
        np.testing.assert_allclose(ident.per_sample[nm], 1.0, rtol=1e-12)
        assert ident.mean[nm] == pytest.approx(1.0) and ident.std[nm] == pytest.approx(0.0, abs=1e-12)
    assert ident.per_sample["l2"].shape == (3, 2, 4)
    const = M.compression_rate(ConstantPurifier(), x0, eps=0.05, n_samples=4)
    assert const.rate == 0.0 and np.all(const.per_image["l2"] == 0.0)
    json.dumps(ident.to_dict())


def test_compression_linear_exact_per_sample(x0):
    a = random_matrix(np.linspace(0.1, 1.5, D))
    pur = LinearPurifier(a, b_scale=1.0)  # large offsets: any xi mismatch would blow the rate up
    pert = np.clip(x0[:, None] + np.random.RandomState(2).uniform(-0.05, 0.05, (3, 5, *SHAPE)), 0, 1)
    res = M.compression_rate(pur, x0, perturbed=pert, seeds=(0, 1, 2), norm="both", batch_size=7)
    eta = (pert - x0[:, None]).reshape(3, 5, D)
    a_eta = eta @ a.T
    for nm, fn in (("l2", np.linalg.norm), ("linf", lambda v, axis: np.abs(v).max(axis=axis))):
        expected = fn(a_eta, axis=-1) / fn(eta, axis=-1)
        np.testing.assert_allclose(res.per_sample[nm], np.broadcast_to(expected[:, None], (3, 3, 5)), rtol=1e-10)
        np.testing.assert_allclose(res.per_image[nm], expected.mean(axis=1), rtol=1e-10)
    # Sampled neighbourhoods: every row of image i carries i's id; rates lie within A's singular values.
    pur.calls.clear()
    res = M.compression_rate(pur, x0, eps=0.03, n_samples=6, sample_ids=[10, 11, 12], batch_size=5)
    assert np.all(res.per_sample["l2"] >= 0.1 - 1e-9) and np.all(res.per_sample["l2"] <= 1.5 + 1e-9)
    assert set(np.concatenate([c[2] for c in pur.calls]).tolist()) == {10, 11, 12}


def test_compression_batching_invariant_on_diffusion(x8):
    pur = make_purifier(t_star=5)
    results = [M.compression_rate(pur, x8, eps=8 / 255, n_samples=3, seeds=(0, 1), batch_size=bs, rng_seed=4)
               for bs in (1, 5, 1000)]
    for r in results[1:]:
        np.testing.assert_allclose(r.per_sample["l2"], results[0].per_sample["l2"], rtol=1e-4)
    assert 0.5 < results[0].rate < 2.0


# ---------------------------------------------------------------------------------------------- neighbourhoods
def test_variance_linear_closed_form(x0):
    a = random_matrix(np.linspace(0.2, 2.0, D))
    pur = LinearPurifier(a, b_scale=0.3)
    res = M.variance_decomposition(pur, x0, eps=0.05, n_inputs=6, n_seeds=4, seed0=5, batch_size=9)
    seeds = [5, 6, 7, 8]
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
        b = np.stack([pur.offset(s, i) for s in range(3)])
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
    x_in = grid_inputs(pur, 3, range(5))[0]
    out = np.stack([x_in + pur.offset(s, 0) for s in range(5)])  # (seed, input, D)
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


# ---------------------------------------------------------------------------------------------- trajectories, SSIM, FID
def test_ssim_matches_direct_loop():
    rng = np.random.RandomState(0)
    x, y = rng.rand(2, 2, 8, 8), rng.rand(2, 2, 8, 8)
    got = M.ssim(x, y)
    g = M._gaussian_window(7, 1.5)
    w = np.outer(g, g)
    c1, c2 = 0.01**2, 0.03**2
    for n in range(2):
        vals = []
        for ch in range(2):
            for r in range(2):
                for c in range(2):
                    px, py = x[n, ch, r:r + 7, c:c + 7], y[n, ch, r:r + 7, c:c + 7]
                    mx, my = (w * px).sum(), (w * py).sum()
                    vx, vy = (w * px * px).sum() - mx**2, (w * py * py).sum() - my**2
                    cxy = (w * px * py).sum() - mx * my
                    vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
        assert got[n] == pytest.approx(np.mean(vals), rel=1e-10)
    np.testing.assert_allclose(M.ssim(x, x), 1.0)
    np.testing.assert_allclose(M.ssim(x, y), M.ssim(y, x))


@pytest.mark.parametrize("sampler,forward_noising,max_index", [("ddpm", "one_shot", 1), ("reverse", "one_shot", 0),
                                                              ("ddpm", "multistep", 4)])
def test_trajectory_distances(x8, sampler, forward_noising, max_index):
    pur = make_purifier(t_star=4, sampler=sampler, forward_noising=forward_noising)
    x = np.clip(x8 + np.random.RandomState(3).uniform(-0.03, 0.03, x8.shape), 0, 1).astype(np.float32)
    res = M.trajectory_distances(pur, x8, x, seed=2, batch_size=1)
    flat = lambda a: a.reshape(len(a), -1).astype(np.float64)  # noqa: E731
    np.testing.assert_allclose(res.per_image["l2"]["start"], np.linalg.norm(flat(x) - flat(x8), axis=1), rtol=1e-6)
    end = pur.purify(x, seed=2)
    np.testing.assert_allclose(res.per_image["l2"]["end"], np.linalg.norm(flat(end) - flat(x8), axis=1), rtol=1e-5)
    assert res.max_index == max_index
    assert res.l2_trajectory.shape[0] == res.linf_trajectory.shape[0] == max_index + 1 + 4
    np.testing.assert_allclose(res.l2_trajectory[max_index], res.per_image["l2"]["max"])
    np.testing.assert_allclose(res.linf_trajectory[-1], res.per_image["linf"]["end"], rtol=1e-6)
    assert np.all(res.per_image["ssim"]["start"] <= 1.0)
    json.dumps(res.to_dict())


def test_trajectory_without_trajectory_support(x0):
    res = M.trajectory_distances(LinearPurifier(np.eye(D), b_scale=0.0), x0, x0 + 0.01)
    assert set(res.per_image["l2"]) == {"start", "end"} and res.l2_trajectory is None
    np.testing.assert_allclose(res.per_image["l2"]["end"], res.per_image["l2"]["start"], rtol=1e-9)


def test_feature_fid():
    rng = np.random.RandomState(0)
    a = rng.randn(200, 5)
    shift = np.array([1.0, -2.0, 0.5, 0.0, 0.0])
    assert M.feature_fid(a, a) == pytest.approx(0.0, abs=1e-8)
    assert M.feature_fid(a, a + shift) == pytest.approx(shift @ shift, rel=1e-6)
    model = tiny_classifier()
    features = model.net[:3]  # penultimate (flattened conv) features
    x = np.random.RandomState(1).rand(8, 1, 8, 8).astype(np.float32)
    near = M.feature_fid_from_model(features, x, x)
    far = M.feature_fid_from_model(features, x, np.clip(x + 0.3, 0, 1).astype(np.float32), batch_size=3)
    assert near == pytest.approx(0.0, abs=1e-3) and far > near


# ---------------------------------------------------------------------------------------------- Jacobian
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


# ---------------------------------------------------------------------------------------------- compression law
@pytest.mark.parametrize("model,params", [("logistic4", dict(a=0.45, k=18.0, c0=0.3, b=0.02)),
                                          ("logistic3", dict(a=0.5, k=12.0, c0=0.35))])
def test_fit_compression_law_recovers_parameters(model, params):
    c = np.linspace(0.05, 0.8, 14)
    y = M._logistic(c, params["a"], params["k"], params["c0"], params.get("b", 0.0))
    fit = M.fit_compression_law(c, y, model=model)
    for key, value in params.items():
        assert fit.params[key] == pytest.approx(value, rel=1e-4)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.predict(0.3) == pytest.approx(float(M._logistic(0.3, **params)), rel=1e-6)
    assert fit.predict([0.1, 0.2]).shape == (2,)
    json.dumps(fit.to_dict())
    noisy = y + np.random.RandomState(0).normal(0, 0.005, y.shape)
    assert M.fit_compression_law(c, noisy, model=model).params["c0"] == pytest.approx(params["c0"], abs=0.03)


def test_rank_by_compression(x0):
    configs = [("identity", IdentityPurifier()), ("half", LinearPurifier(0.5 * np.eye(D))),
               ("constant", ConstantPurifier())]
    ranking = M.rank_by_compression(configs, x0, eps=0.05, n_samples=3)
    assert ranking.names == ["constant", "half", "identity"]
    assert [e.rate for e in ranking.entries] == pytest.approx([0.0, 0.5, 1.0])
    by_factory = M.rank_by_compression([(0.9,), (0.2,), (0.6,)], x0, eps=0.05, n_samples=3,
                                       factory=lambda scale: LinearPurifier(scale * np.eye(D)))
    assert [e.rate for e in by_factory.entries] == pytest.approx([0.2, 0.6, 0.9])
    json.dumps(by_factory.to_dict())


# ---------------------------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("call,match", [
    (lambda p, x: M.compression_rate(p, x, eps=0.0), "eps must be a positive"),
    (lambda p, x: M.compression_rate(p, x, eps=-0.1), "eps must be a positive"),
    (lambda p, x: M.compression_rate(p, x, n_samples=1), "n_samples must be an int >= 2"),
    (lambda p, x: M.compression_rate(p, x, norm="l1"), "Unknown norm"),
    (lambda p, x: M.compression_rate(p, x, perturbed=x[:2]), "perturbed must have shape"),
    (lambda p, x: M.compression_rate(p, x, sample_ids=[0]), "sample_ids"),
    (lambda p, x: M.compression_rate(p, x, seeds=()), "at least one base seed"),
    (lambda p, x: M.compression_rate(object(), x), "purify"),
    (lambda p, x: M.variance_decomposition(p, x, eps=0.1, n_inputs=1), "n_inputs must be"),
    (lambda p, x: M.variance_decomposition(p, x, eps=0.1, n_seeds=1), "n_seeds must be"),
    (lambda p, x: M.centroid_distances(p, x, eps=float("nan")), "eps must be a positive"),
    (lambda p, x: M.direction_correlations(p, x, reference="other"), "Unknown reference"),
    (lambda p, x: M.trajectory_distances(p, x, x[:, :, :2]), "x must have the shape"),
    (lambda p, x: M.jacobian_spectrum(p, x, method="lanczos"), "Unknown method"),
    (lambda p, x: M.jacobian_spectrum(p, x, method="randomized"), "needs the autograd backend"),
    (lambda p, x: M.jacobian_spectrum(p, x, backend="autograd"), "autograd backend needs"),
    (lambda p, x: M.fit_compression_law([0.1, 0.2, 0.3], [0.1, 0.2]), "compression rates"),
    (lambda p, x: M.fit_compression_law([0.1, 0.2], [0.1, 0.2], model="logistic3"), "at least 3 points"),
    (lambda p, x: M.fit_compression_law([0.1] * 4, [0.1] * 4, model="tanh"), "Unknown model"),
    (lambda p, x: M.feature_fid(np.zeros((4, 3)), np.zeros((4, 2))), "Feature dimensions"),
    (lambda p, x: M.ssim(x, x[:, :, :3]), "equal shapes"),
    (lambda p, x: M.rank_by_compression([], x), "configs is empty"),
])
def test_bad_arguments(x0, call, match):
    with pytest.raises(ValueError, match=match):
        call(LinearPurifier(np.eye(D)), x0)
