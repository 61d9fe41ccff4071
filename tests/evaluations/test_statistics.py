"""art_diffpure.evaluations.statistics against values computed by hand or from textbook examples."""
import json
import math

import numpy as np
import pytest

from art_diffpure.evaluations import statistics as st


# ---------------------------------------------------------------------------------------------- Wilson
@pytest.mark.parametrize("k, n, low, high", [
    (8, 10, 0.4901624715, 0.9433178486),   # Newcombe (1998) Table I style; z = 1.959964
    (0, 10, 0.0, 0.2775327999),            # k = 0: upper = z^2 / (n + z^2)
    (10, 10, 0.7224672001, 1.0),           # k = n: lower = n / (n + z^2)
    (81, 263, 0.2553, 0.3662),             # Newcombe (1998), Table II example 81/263: 0.2553-0.3662
])
def test_wilson_known_values(k, n, low, high):
    iv = st.wilson_interval(k, n)
    assert iv.estimate == pytest.approx(k / n)
    assert iv.low == pytest.approx(low, abs=1e-4)
    assert iv.high == pytest.approx(high, abs=1e-4)
    assert iv.level == 0.95 and iv.method == "Wilson score"


def test_wilson_closed_forms_at_the_edges():
    z2 = 1.959963984540054 ** 2
    assert st.wilson_interval(0, 10).high == pytest.approx(z2 / (10 + z2), rel=1e-12)
    assert st.wilson_interval(10, 10).low == pytest.approx(10 / (10 + z2), rel=1e-12)


@pytest.mark.parametrize("k, n", [(-1, 10), (11, 10), (0, 0), (1.5, 10), (True, 10)])
def test_wilson_bad_input(k, n):
    with pytest.raises(ValueError):
        st.wilson_interval(k, n)


def test_wilson_bad_level():
    with pytest.raises(ValueError):
        st.wilson_interval(1, 2, level=1.0)


# ---------------------------------------------------------------------------------------------- McNemar
def test_mcnemar_b1_c9():
    # 1 pair where A alone is right, 9 where B alone is right, 5 where both are right, 3 where both are wrong.
    a = [1] + [0] * 9 + [1] * 5 + [0] * 3
    b = [0] + [1] * 9 + [1] * 5 + [0] * 3
    res = st.mcnemar_exact(a, b)
    assert (res.b, res.c, res.n) == (1, 9, 18)
    assert res.p_value == pytest.approx(2 * (1 + 10) / 2 ** 10)  # 2 P(X <= 1), X ~ Bin(10, 1/2)
    assert res.p_value == pytest.approx(0.021484375, abs=1e-15)
    assert st.mcnemar_exact(b, a).p_value == pytest.approx(0.021484375)


def test_mcnemar_equal_discordant_counts_and_no_discordance():
    assert st.mcnemar_exact([1, 0, 1, 0], [0, 1, 0, 1]).p_value == 1.0  # b = c = 2
    res = st.mcnemar_exact([True, False, True], [True, False, True])  # b = c = 0
    assert (res.b, res.c, res.p_value) == (0, 0, 1.0)


def test_mcnemar_textbook_example():
    # b = 0, c = 6: p = 2 / 2^6 = 0.03125
    assert st.mcnemar_exact([0] * 6 + [1], [1] * 6 + [1]).p_value == pytest.approx(0.03125)


@pytest.mark.parametrize("a, b", [([1, 0], [1, 0, 1]), ([1, 2], [1, 0]), ([], []), ([[1, 0], [1, 0]], [1, 0]),
                                  ([1, float("nan")], [1, 0])])
def test_mcnemar_bad_input(a, b):
    with pytest.raises(ValueError):
        st.mcnemar_exact(a, b)


# ---------------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_is_reproducible_and_leaves_the_global_rng_alone():
    values = np.r_[np.ones(20), np.zeros(12)]
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = st.bootstrap_interval(values, seed=7)
    b = st.bootstrap_interval(values, seed=7)
    assert np.array_equal(np.random.get_state()[1], before)
    assert a == b
    assert st.bootstrap_interval(values, seed=8) != a
    assert a.estimate == pytest.approx(20 / 32)
    assert a.low < 20 / 32 < a.high
    # close to the normal approximation p +- 1.96 sqrt(p (1 - p) / n) for n = 32
    half = 1.96 * math.sqrt(0.625 * 0.375 / 32)
    assert a.low == pytest.approx(0.625 - half, abs=0.04)
    assert a.high == pytest.approx(0.625 + half, abs=0.04)


def test_bootstrap_of_a_constant_is_a_point():
    iv = st.bootstrap_interval(np.full(10, 0.3))
    assert (iv.low, iv.high) == pytest.approx((0.3, 0.3))


def test_bootstrap_over_seeds_uses_the_per_image_mean():
    rng = np.random.default_rng(0)
    x = rng.random((3, 40))
    assert st.bootstrap_interval(x, seed=1) == st.bootstrap_interval(x.mean(axis=0), seed=1)


@pytest.mark.parametrize("kwargs", [dict(values=[]), dict(values=[1.0, np.inf]), dict(values=[1.0], n_boot=10),
                                    dict(values=[1.0], seed=None), dict(values=[1.0], level=0)])
def test_bootstrap_bad_input(kwargs):
    with pytest.raises(ValueError):
        st.bootstrap_interval(**kwargs)


# ---------------------------------------------------------------------------------------------- paired difference
def test_paired_difference_one_seed():
    a = [1] + [0] * 9 + [1] * 5 + [0] * 3
    b = [0] + [1] * 9 + [1] * 5 + [0] * 3
    res = st.paired_difference(a, b, seed=0)
    assert res.accuracy_a == pytest.approx(6 / 18) and res.accuracy_b == pytest.approx(14 / 18)
    assert res.difference.estimate == pytest.approx(-8 / 18)
    assert res.difference.high < 0  # clearly negative
    assert res.test.p_value == pytest.approx(0.021484375)
    assert res.n_images == 18
    json.dumps(res.to_dict())


def test_paired_difference_identical_vectors():
    a = np.array([1, 0, 1, 1, 0, 1], dtype=bool)
    res = st.paired_difference(a, a)
    assert res.difference.estimate == 0 and res.difference.low == 0 and res.difference.high == 0
    assert res.test.p_value == 1.0


def test_paired_difference_several_seeds_tests_the_first_seed():
    rng = np.random.default_rng(3)
    a, b = rng.random((3, 30)) < 0.7, rng.random((2, 30)) < 0.4
    res = st.paired_difference(a, b)
    assert res.difference.estimate == pytest.approx(a.mean() - b.mean())
    assert res.test == st.mcnemar_exact(a[0], b[0])
    assert res.tests_per_seed is None  # 3 seeds against 2: no seed pairs
    res = st.paired_difference(a, a[::-1])
    assert res.tests_per_seed == [st.mcnemar_exact(a[k], a[2 - k]) for k in range(3)]
    json.dumps(res.to_dict())


def test_paired_difference_bad_input():
    with pytest.raises(ValueError):
        st.paired_difference([1, 0, 1], [1, 0])


# ---------------------------------------------------------------------------------------------- seeds
def test_seed_summary_one_seed_is_wilson():
    res = st.seed_summary([1] * 8 + [0] * 2)
    assert res.n_seeds == 1 and res.seed_sd is None
    assert res.interval == st.wilson_interval(8, 10)


def test_seed_summary_three_seeds():
    c = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]])
    res = st.seed_summary(c, seed=0)
    assert res.values == [0.5, 0.25, 0.75]
    assert res.mean == pytest.approx(0.5)
    assert res.seed_sd == pytest.approx(0.25)  # sd of (0.5, 0.25, 0.75) with ddof=1
    assert res.interval == st.bootstrap_interval(c.mean(axis=0), seed=0)
    d = res.to_dict()
    assert json.loads(json.dumps(d)) == d


# ---------------------------------------------------------------------------------------------- t interval, Holm
def test_mean_interval():
    # n = 4 values 1, 2, 3, 4: mean 2.5, sample sd 1.2910, t_{3, 0.975} = 3.1824 -> 2.5 +- 2.0543
    iv = st.mean_interval(2.5, float(np.std([1, 2, 3, 4])), 4)
    assert iv.low == pytest.approx(2.5 - 2.0543, abs=1e-3) and iv.high == pytest.approx(2.5 + 2.0543, abs=1e-3)
    with pytest.raises(ValueError):
        st.mean_interval(1.0, 0.1, 1)


def test_holm():
    assert st.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert st.holm([0.5]) == [0.5]
    with pytest.raises(ValueError):
        st.holm([1.5])


# ---------------------------------------------------------------------------------------------- seed spreads, JSON
def test_seed_mean_sd_is_the_sample_sd():
    assert st.seed_mean_sd([0.5, 0.25, 0.75]) == pytest.approx((0.5, 0.25))  # ddof=1
    assert st.seed_mean_sd([0.4]) == (0.4, None)
    with pytest.raises(ValueError):
        st.seed_mean_sd([])


def test_results_turn_non_finite_numbers_into_none():
    d = st.Interval(float("nan"), -math.inf, math.inf, 0.95, "x").to_dict()
    assert d == {"estimate": None, "low": None, "high": None, "level": 0.95, "method": "x", "monte_carlo": None}


def test_monte_carlo_band_of_each_end_covers_the_many_resample_limit():
    """Each end's band is a 95% interval for where the end lies with infinitely many resamples."""
    values = np.random.default_rng(3).random(16)
    limit = st.bootstrap_interval(values, n_boot=400_000, seed=99)
    covered = {"low": 0, "high": 0}
    widths = []
    for seed in range(10):
        iv = st.bootstrap_interval(values, n_boot=10_000, seed=seed)
        low_band, high_band = iv.end_bands()
        assert low_band[0] <= iv.low <= low_band[1] and high_band[0] <= iv.high <= high_band[1]
        covered["low"] += low_band[0] <= limit.low <= low_band[1]
        covered["high"] += high_band[0] <= limit.high <= high_band[1]
        widths.append(low_band[1] - low_band[0])
    assert covered["low"] >= 8 and covered["high"] >= 8, covered
    narrow = st.bootstrap_interval(values, n_boot=160_000, seed=0).end_bands()[0]
    assert narrow[1] - narrow[0] < np.mean(widths) / 2  # 16x the resamples: a quarter of the width
    closed = st.wilson_interval(5, 16)
    assert closed.monte_carlo is None and closed.end_bands() == ([closed.low] * 2, [closed.high] * 2)
