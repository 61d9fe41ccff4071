"""Tests of art_diffpure.metrics.trajectory: SSIM and distances along purification trajectories."""
from __future__ import annotations

import json

import numpy as np
import pytest

from _metric_stubs import D, LinearPurifier
from conftest import make_purifier

from art_diffpure import metrics as M
from art_diffpure.metrics.trajectory import _gaussian_window


def test_ssim_matches_direct_loop():
    rng = np.random.RandomState(0)
    x, y = rng.rand(2, 2, 8, 8), rng.rand(2, 2, 8, 8)
    got = M.ssim(x, y)
    g = _gaussian_window(7, 1.5)
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


@pytest.mark.parametrize("call,match", [
    (lambda p, x: M.trajectory_distances(p, x, x[:, :, :2]), "x must have the shape"),
    (lambda p, x: M.ssim(x, x[:, :, :3]), "equal shapes"),
])
def test_bad_arguments(x0, call, match):
    with pytest.raises(ValueError, match=match):
        call(LinearPurifier(np.eye(D)), x0)
