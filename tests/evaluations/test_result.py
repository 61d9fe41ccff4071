"""EvaluationResult: the one result type of an attack-then-test evaluation (merge, head, JSON form)."""
import json
import os

import numpy as np
import pytest

from art_diffpure.evaluations.result import PER_SAMPLE_KEYS, EvaluationResult

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _result(labels, clean, adv, ids, **kw):
    return EvaluationResult(labels=labels, clean_pred=clean, adv_pred=adv, sample_ids=ids, **kw)


def test_accuracies_follow_from_the_per_sample_predictions():
    r = _result([1, 2, 3, 4], [1, 2, 3, 0], [1, 0, 0, 0], [10, 11, 12, 13])
    assert r.n == 4 and r.clean_accuracy == 0.75 and r.robust_accuracy == 0.25 and r.attack_success_rate == 0.75
    assert r.success.tolist() == [False, True, True, True]
    targeted = _result([5, 5], [0, 0], [5, 1], [0, 1], targeted=True)  # success = reaching the target
    assert targeted.success.tolist() == [True, False] and targeted.robust_accuracy == 0.5


def test_merge_orders_by_position_and_takes_the_slowest_part():
    a = _result([0, 1], [0, 1], [0, 0], [12, 13], wall_time_s=2.0, attack_time_s=1.5, max_perturbation_linf=0.1)
    b = _result([5, 0], [5, 0], [5, 1], [10, 11], wall_time_s=3.0, attack_time_s=1.0, max_perturbation_linf=0.2)
    merged = EvaluationResult.merge([(np.array([2, 3]), a), (np.array([0, 1]), b), (np.array([], int), None)], 4)
    assert merged.sample_ids.tolist() == [10, 11, 12, 13] and merged.adv_pred.tolist() == [5, 1, 0, 0]
    assert merged.robust_accuracy == 0.5 and merged.clean_accuracy == 1.0
    assert (merged.wall_time_s, merged.attack_time_s, merged.max_perturbation_linf) == (3.0, 1.5, 0.2)
    with pytest.raises(RuntimeError, match="no part"):
        EvaluationResult.merge([(np.array([0]), _result([0], [0], [0], [0]))], 2)


def test_head_recomputes_the_accuracies_of_the_first_images():
    r = _result([1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 1, 1], [0, 1, 2, 3], attack_seeds=[[0]] * 4, test_seeds=[0] * 4)
    head = r.head(2)
    assert head.n == 2 and head.robust_accuracy == 0.5 and head.attack_seeds == [[0]] * 2
    assert head.subset_of == "the first 2 of 4 images of the same attack" and r.head(4) is r


def test_json_form_round_trips_and_reads_targeted_from_the_config():
    r = _result([1, 2], [1, 2], [2, 2], [0, 1], targeted=True, config={"inner_params": {"targeted": True}},
                audit={"attack": {"ok": True}}, time_per_iteration_s=0.5)
    data = json.loads(json.dumps(r.to_dict()))
    back = EvaluationResult.from_dict(data)
    assert back.targeted and back.to_dict() == r.to_dict()
    assert set(PER_SAMPLE_KEYS) <= set(data)
    with pytest.raises(ValueError, match="one entry per sample"):
        _result([1, 2], [1], [1, 2], [0, 1])


def test_json_form_has_the_keys_of_the_committed_reports():
    """The reproduce reports store the JSON form; a rerun must write the same keys (times go to timings.json)."""
    with open(os.path.join(ROOT, "docs", "digits-report", "results.json")) as f:
        committed = json.load(f)["table2"]["aligned"][0]
    data = _result([1], [1], [1], [0]).to_dict()
    timing = {k for k in data if k.endswith("time_s") or k.startswith("time_per_")}
    assert set(data) - timing == set(committed)
