"""Tests of art_diffpure.metrics.compression: compression rate (eq. 10) and rankings by it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _metric_stubs import D, SHAPE, ConstantPurifier, IdentityPurifier, LinearPurifier, random_matrix
from conftest import make_purifier

from art_diffpure import metrics as M


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


# ---------------------------------------------------------------------------------------------- norm spellings
@pytest.mark.parametrize("art_norm,ours", [(np.inf, "linf"), (float("inf"), "inf"), (2, "l2"), (np.int64(2), "L2")])
def test_compression_norm_spellings_identical(x0, art_norm, ours):
    """ART's spelling (np.inf, 2) and the strings give identical results, keyed 'l2' / 'linf'."""
    pur = LinearPurifier(random_matrix(np.linspace(0.1, 1.5, D)), b_scale=0.3)
    a = M.compression_rate(pur, x0, eps=0.05, n_samples=4, seeds=(0, 2), norm=art_norm)
    b = M.compression_rate(pur, x0, eps=0.05, n_samples=4, seeds=(0, 2), norm=ours)
    key = "l2" if art_norm == 2 else "linf"
    assert a.norms == b.norms == [key]
    np.testing.assert_array_equal(a.per_sample[key], b.per_sample[key])
    assert a.to_dict() == b.to_dict()
    assert a.rate == b.rate == a.mean[key]


def test_compression_norm_list_and_both(x0):
    pur = LinearPurifier(random_matrix(np.linspace(0.1, 1.5, D)), b_scale=0.3)
    both = M.compression_rate(pur, x0, eps=0.05, n_samples=3, norm="both")
    art = M.compression_rate(pur, x0, eps=0.05, n_samples=3, norm=[2, np.inf])
    assert both.to_dict() == art.to_dict() and art.norms == ["l2", "linf"]
    assert M.compression_rate(pur, x0, eps=0.05, n_samples=3, norm=(np.inf, "linf")).norms == ["linf"]


def test_rank_by_compression_norm_spellings(x0):
    configs = [("identity", IdentityPurifier()), ("half", LinearPurifier(0.5 * np.eye(D)))]
    art = M.rank_by_compression(configs, x0, eps=0.05, n_samples=3, norm=np.inf)
    ours = M.rank_by_compression(configs, x0, eps=0.05, n_samples=3, norm="linf")
    assert art.norm == ours.norm == "linf"
    assert art.to_dict() == ours.to_dict()


# ---------------------------------------------------------------------------------------------- ranking
def test_rank_by_compression(x0):
    configs = [("identity", IdentityPurifier()), ("half", LinearPurifier(0.5 * np.eye(D))),
               ("constant", ConstantPurifier())]
    ranking = M.rank_by_compression(configs, x0, eps=0.05, n_samples=3)
    assert ranking.names == ["constant", "half", "identity"]
    assert [e.rate for e in ranking.entries] == pytest.approx([0.0, 0.5, 1.0])
    by_factory = M.rank_by_compression([(0.9,), (0.2,), (0.6,)], x0, eps=0.05, n_samples=3,
                                       factory=lambda scale: LinearPurifier(scale * np.eye(D)))
    assert [e.rate for e in by_factory.entries] == pytest.approx([0.2, 0.6, 0.9])
    assert by_factory.names == ["0.2", "0.6", "0.9"]  # readable names, not "(0.2,)"
    json.dumps(by_factory.to_dict())
    named = M.rank_by_compression({"wide": (0.9,), "narrow": {"scale": 0.2}}, x0, eps=0.05, n_samples=3,
                                  factory=lambda scale: LinearPurifier(scale * np.eye(D)))
    assert named.names == ["narrow", "wide"] and [e.rate for e in named.entries] == pytest.approx([0.2, 0.9])


# ---------------------------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("call,match", [
    (lambda p, x: M.compression_rate(p, x, eps=0.0), "eps must be a positive"),
    (lambda p, x: M.compression_rate(p, x, eps=-0.1), "eps must be a positive"),
    (lambda p, x: M.compression_rate(p, x, n_samples=1), "n_samples must be an int >= 2"),
    (lambda p, x: M.compression_rate(p, x, norm="l1"), "Unknown norm"),
    (lambda p, x: M.compression_rate(p, x, norm=1), "Unknown norm"),
    (lambda p, x: M.compression_rate(p, x, norm=True), "Unknown norm"),
    (lambda p, x: M.compression_rate(p, x, norm=-np.inf), "Unknown norm"),
    (lambda p, x: M.compression_rate(p, x, norm=[]), "Unknown norm"),
    (lambda p, x: M.compression_rate(p, x, perturbed=x[:2]), "perturbed must have shape"),
    (lambda p, x: M.compression_rate(p, x, sample_ids=[0]), "sample_ids"),
    (lambda p, x: M.compression_rate(p, x, seeds=()), "at least one base seed"),
    (lambda p, x: M.compression_rate(object(), x), "purify"),
    (lambda p, x: M.rank_by_compression([], x), "configs is empty"),
    (lambda p, x: M.rank_by_compression([p], x, norm="both"), "ranks by one norm"),
])
def test_bad_arguments(x0, call, match):
    with pytest.raises(ValueError, match=match):
        call(LinearPurifier(np.eye(D)), x0)
