"""Post-hoc analyses beside the laws (art_diffpure.reproduce.post_hoc): shape of the compression law, other claims."""
import numpy as np

from art_diffpure.reproduce import post_hoc
from art_diffpure.reproduce.laws import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE


def _points(c, a, labels=None):
    return [[float(ci), float(ai), labels[i] if labels else f"cfg{i}"] for i, (ci, ai) in enumerate(zip(c, a))]


def test_a_straight_line_is_preferred_for_linear_points_and_not_for_a_sharp_step():
    c = np.linspace(0.4, 0.8, 9)
    noise = np.random.default_rng(0).normal(0, 0.01, 9)
    linear = post_hoc.compression_law_shape(_points(c, 1.2 - 1.3 * c + noise))
    assert linear["preferred"] == "linear" and linear["linear_r2"] > 0.95
    step = post_hoc.compression_law_shape(_points(c, 0.1 + 0.5 / (1 + np.exp(60 * (c - 0.6))) + noise))
    assert step["preferred"] in ("sigmoid", "monotone")
    assert step["loo_mse"]["linear"] > step["loo_mse"][step["preferred"]]


def test_the_t_sweep_confound_is_counted():
    labels = ["ddpm t*=10", "ddpm t*=20", "ddpm t*=50", "ddpm t*=100", "reverse t*=10", "reverse t*=100",
              "ddim t*=100"]
    c = np.linspace(0.4, 0.8, 7)
    shape = post_hoc.compression_law_shape(_points(c, 1 - c, labels))
    assert shape["points_in_a_t_sweep"] == 6 and "6 of 7 configurations" in shape["statement"]
    assert post_hoc.compression_law_shape(_points(c[:3], c[:3])) is None  # too few points to leave one out


def test_jacobian_and_extrapolation_claims_follow_the_one_rule():
    rng = np.random.default_rng(1)
    small = {"fig3a": {"singular_values": rng.uniform(0, 0.2, (8, 64)).tolist()}}
    assert post_hoc.other_claims(small)[0]["verdict"] == HOLDS
    half = {"fig3a": {"singular_values": rng.uniform(0, 0.5, (8, 64)).tolist()}}
    assert post_hoc.other_claims(half)[0]["verdict"] == DOES_NOT_HOLD
    over = post_hoc.other_claims({"fig3b": {"fit_predict_at_0": 1.125, "inflection_in_data_range": False}})
    assert over[0]["verdict"] == DOES_NOT_HOLD and "112.5%" in over[0]["value"]
    outside = post_hoc.other_claims({"fig3b": {"fit_predict_at_0": 0.7, "inflection_in_data_range": False}})
    assert outside[0]["verdict"] == INCONCLUSIVE
