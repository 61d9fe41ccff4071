"""Randomness owned by the purifier: no ART attack escapes it, and every run carries an audit of its rows."""
from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
from art.attacks.attack import EvasionAttack
from art.attacks.evasion import (AutoAttack, AutoProjectedGradientDescent, DeepFool, ProjectedGradientDescent,
                                 SquareAttack)

from conftest import art_classifier, make_purifier, tiny_classifier

from art_diffpure import RandomnessAlignedAttack
from art_diffpure.attacks.autoattack import Fra31AutoAttack
from art_diffpure.randomness import (AmbiguousRowsError, RandomnessControl, RandomnessEscapeError, eot_seeds,
                                     transfer_test_seed)
from art_diffpure.evaluations.aligned import evaluate_aligned

MODES = ("aligned", "transfer", "stochastic")


pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(seed=5, t_star=3):
    purifier = make_purifier(t_star=t_star, seed=seed)  # its own seed must never be used by an attack
    classifier = art_classifier(tiny_classifier(), purifier)
    return classifier, purifier


def _spy(purifier, monkeypatch) -> list[tuple[bool, object]]:
    """Record (fresh, seeds) of every purification."""
    calls = []
    original = purifier._purify_tensor

    def spy(x, seed, sample_ids, return_trajectory, fresh=False, out_dtype=None):
        calls.append((fresh, None if seed is None else np.unique(np.asarray(seed)).tolist()))
        return original(x, seed, sample_ids, return_trajectory, fresh=fresh, out_dtype=out_dtype)

    monkeypatch.setattr(purifier, "_purify_tensor", spy)
    return calls


def _autoattack(classifier):
    apgd = AutoProjectedGradientDescent(classifier, eps=0.1, eps_step=0.1, max_iter=2, nb_random_init=1,
                                        verbose=False)
    square = SquareAttack(classifier, eps=0.1, max_iter=3, nb_restarts=1, verbose=False)
    return AutoAttack(classifier, eps=0.1, eps_step=0.1, attacks=[apgd, square])


@pytest.mark.parametrize("mode", MODES)
def test_autoattack_instance_runs_every_call_under_the_attack_randomness(images, mode, monkeypatch):
    """The silent escape of the old view design: AutoAttack's sub-attacks stayed on the original classifier."""
    classifier, purifier = _setup()
    x = images[:4]
    y = RandomnessAlignedAttack(classifier, seed=0).predict_test(x).argmax(1)
    inner = _autoattack(classifier)  # APGD's constructor predicts once, outside any attack, under the seed 5
    calls = _spy(purifier, monkeypatch)
    attack = RandomnessAlignedAttack(classifier, attack=inner, randomness=mode, seed=0, batch_size=4)
    report = evaluate_aligned(attack, x, y).to_dict()
    json.dumps(report)
    audit = report["audit"]["attack"]
    assert audit["ok"] and audit["rows_purified"] == audit["rows_intended"] > 0
    assert audit["calls"] + report["audit"]["test"]["calls"] == len(calls)  # no call outside the audit
    if mode == "stochastic":
        assert all(fresh for fresh, _ in calls)  # never the purifier's own seed 5
    else:
        test_seed = 0 if mode == "aligned" else transfer_test_seed(0)
        assert {s for _, seeds in calls for s in seeds} == {0, test_seed}
        assert not any(fresh for fresh, _ in calls)


def test_autoattack_instance_and_factory_give_the_same_examples(images):
    classifier, _ = _setup()
    x, y = images[:4], np.arange(4)
    a = RandomnessAlignedAttack(classifier, attack=_autoattack(classifier), seed=0, batch_size=4).generate(x, y)
    b = RandomnessAlignedAttack(classifier, attack=_autoattack, seed=0, batch_size=4).generate(x, y)
    np.testing.assert_array_equal(a, b)


def test_copies_made_during_an_attack_stay_under_its_control(images):
    classifier, purifier = _setup()
    control = RandomnessControl([0], bound=0.1)
    control.set_batch(images, np.arange(6))
    with purifier.controlled(control):
        clone = copy.deepcopy(classifier)
        inside = clone.predict(images)
    assert control.audit.rows_purified == control.audit.rows_intended == 6
    with purifier.randomness(0, np.arange(6)):
        expected = classifier.predict(images)
    np.testing.assert_allclose(inside, expected, atol=1e-6)
    # after the attack the copy is on its own again, under its own seed (5)
    np.testing.assert_allclose(clone.predict(images), classifier.predict(images), atol=1e-6)
    assert clone.preprocessing_defences[0]._randomness.control is None


def test_a_purifier_outside_the_control_raises_and_is_counted(images):
    classifier, purifier = _setup()
    before = copy.deepcopy(classifier)  # made before the attack: a different purifier object
    control = RandomnessControl([0], bound=0.1)
    control.set_batch(images, np.arange(6))
    with purifier.controlled(control):
        with pytest.raises(RandomnessEscapeError, match="does not control"):
            before.predict(images)
        with pytest.raises(RandomnessEscapeError, match="another process"):
            pickle.dumps(purifier)
    assert control.audit.rows_uncontrolled == 6 and not control.audit.ok
    before.predict(images)  # no attack running: the copy's own seed is the user's choice
    with pytest.raises(ValueError, match="another DiffusionPurifier"):
        RandomnessAlignedAttack(classifier, attack=DeepFool(before, max_iter=2))


def test_evaluate_refuses_when_an_attack_swallowed_an_escape(images):
    classifier, _ = _setup()
    stray = copy.deepcopy(classifier)

    class Careless(EvasionAttack):
        attack_params = EvasionAttack.attack_params
        _estimator_requirements = ()

        def generate(self, x, y=None, **kwargs):
            try:
                stray.predict(x)
            except RandomnessEscapeError:
                pass
            return x

    with pytest.raises(RandomnessEscapeError, match="Refusing"):
        evaluate_aligned(RandomnessAlignedAttack(classifier, attack=Careless(estimator=classifier), batch_size=6), images, np.arange(6)).to_dict()


def test_rows_are_never_guessed(images):
    control = RandomnessControl([0], bound=0.05)
    with pytest.raises(AmbiguousRowsError, match="cannot be told apart"):
        control.set_batch(np.concatenate([images[:2], images[:1] + 0.02]), [0, 1, 2])
    control.set_batch(images, np.arange(6))
    with pytest.raises(AmbiguousRowsError, match="farther than"):
        control.rows(images[:2] + 0.2, gradient=False, has_labels=False)
    assert control.audit.rows_ambiguous == 2
    unbounded = RandomnessControl([0], bound=None)
    with pytest.raises(AmbiguousRowsError, match="one sample at a time"):
        unbounded.set_batch(images, np.arange(6))
    unbounded.set_batch(images[:1], [7])  # one sample: every row is that sample's
    seeds, ids, k = unbounded.rows(np.random.rand(3, 1, 8, 8), gradient=False, has_labels=False)
    assert ids.tolist() == [7, 7, 7] and seeds.tolist() == [0, 0, 0] and k == 1


def _given_pgd(classifier):
    """An ART PGD handed in by the user: its rows are identified by their distance to the clean samples."""
    return ProjectedGradientDescent(classifier, eps=0.05, eps_step=0.02, max_iter=2, num_random_init=1,
                                    batch_size=4, verbose=False)


def test_duplicated_images_split_the_batch_into_groups_of_distant_samples(images):
    """A near-duplicate pair costs one extra group (each group's balls disjoint), not a per-sample run."""
    classifier, _ = _setup()
    x = np.concatenate([images[:3], images[:1]])  # sample 3 duplicates sample 0: different ids, different xi
    attack = RandomnessAlignedAttack(classifier, attack=_given_pgd(classifier), batch_size=4)
    report = evaluate_aligned(attack, x, np.arange(4)).to_dict()
    assert "split into 2 groups" in report["identification"] and report["audit"]["attack"]["ok"]
    assert report["audit"]["attack"]["rows_ambiguous"] == 0
    # groups {0, 1, 2} and {3}: each is exactly the attack on that group alone (same ids, same random start)
    def alone(idx):
        return RandomnessAlignedAttack(classifier, attack=_given_pgd(classifier),
                                       batch_size=4).generate(x[idx], np.arange(4)[idx], sample_ids=idx)
    np.testing.assert_array_equal(attack.last_x_adv[:3], alone(np.arange(3)))
    np.testing.assert_array_equal(attack.last_x_adv[3:], alone(np.array([3])))


def test_the_default_pgd_attacks_a_batch_with_duplicates_in_one_piece_by_position(images):
    """The default PGD calls the purifier on its whole batch in order: a duplicate does not split the batch, every
    row runs under its own sample's xi (the duplicate's differs from its twin's), and nothing is guessed."""
    classifier, purifier = _setup()
    x = np.concatenate([images[:3], images[:1]])
    attack = RandomnessAlignedAttack(classifier, eps=0.05, eps_step=0.02, max_iter=2, num_random_init=1,
                                     batch_size=4)
    report = evaluate_aligned(attack, x, np.arange(4)).to_dict()
    assert report["identification"] == "batch" and attack.last_generation["groups"] == [[0, 1, 2, 3]]
    audit = report["audit"]["attack"]
    counts = attack.last_audit.rows_per_sample
    assert audit["ok"] and audit["rows_ambiguous"] == 0 and sorted(counts) == [0, 1, 2, 3]
    assert len(set(counts.values())) == 1  # every row of every call was one of the four samples
    assert not np.array_equal(attack.last_x_adv[0], attack.last_x_adv[3])
    # every gradient of the run is the one the attack would take for that sample id, wherever it sits
    np.testing.assert_allclose(attack.loss_gradient(x[[3]], [3], sample_ids=[3]),
                               4 * attack.loss_gradient(x, np.arange(4), sample_ids=np.arange(4))[[3]],  # mean loss
                               rtol=1e-4, atol=1e-6)


def test_a_positional_control_with_a_bound_checks_each_row_against_its_own_sample(images):
    control = RandomnessControl([0], bound=0.05, positional=True)
    control.set_batch(np.concatenate([images[:2], images[:1]]), [0, 1, 2])  # duplicates are fine in order
    seeds, ids, _ = control.rows(np.concatenate([images[:2], images[:1]]) + 0.04, gradient=False, has_labels=False)
    assert ids.tolist() == [0, 1, 2] and seeds.tolist() == [0, 0, 0]
    swapped = np.concatenate([images[1:2], images[:1], images[:1]])  # rows 0 and 1 out of order
    with pytest.raises(AmbiguousRowsError, match="from their own sample"):
        control.rows(swapped, gradient=False, has_labels=False)
    assert control.audit.rows_ambiguous == 2


def test_distant_groups_partition_rows_into_pairwise_distant_sets():
    from art_diffpure.attacks.batching import distant_groups

    flat = np.array([[0.0], [0.1], [1.0], [0.05], [2.0]])
    groups = distant_groups(flat, 0.3)
    assert [g.tolist() for g in groups] == [[0, 2, 4], [1], [3]]
    for g in groups:
        d = np.abs(flat[g][:, None] - flat[g][None]).max(-1) + np.eye(len(g)) * 9
        assert (d > 0.3).all()
    assert [g.tolist() for g in distant_groups(flat, 0.01)] == [[0, 1, 2, 3, 4]]


def test_unbounded_attacks_run_one_sample_at_a_time(images):
    classifier, _ = _setup()
    deepfool = RandomnessAlignedAttack(classifier, attack=DeepFool(classifier, max_iter=3, verbose=False),
                                       batch_size=6)
    x_adv = deepfool.generate(images, np.arange(6))
    assert deepfool.last_generation["identification"].startswith("per-sample")
    assert deepfool.last_audit.ok and set(deepfool.last_audit.rows_per_sample) == set(range(6))
    alone = RandomnessAlignedAttack(classifier, attack=DeepFool(classifier, max_iter=3, verbose=False),
                                    batch_size=6).generate(images[2:3], [2], sample_ids=[2])
    np.testing.assert_array_equal(x_adv[2:3], alone)
    with pytest.raises(RandomnessEscapeError, match="class gradient"):
        RandomnessAlignedAttack(classifier, attack=DeepFool(classifier, max_iter=2, verbose=False),
                                eot_samples=2).generate(images[:1], [0])


def test_eot_expansion_happens_in_the_purifier_for_rebuilt_estimators(images):
    """APGD builds its own PyTorchClassifier: the purifier object still expands its gradient calls K times."""
    classifier, _ = _setup()
    y = RandomnessAlignedAttack(classifier, seed=0).predict_test(images).argmax(1)  # APGD skips wrong samples
    apgd = RandomnessAlignedAttack(
        classifier, attack=lambda c: AutoProjectedGradientDescent(c, eps=0.1, eps_step=0.1, max_iter=2,
                                                                  nb_random_init=1, verbose=False),
        eot_samples=3, batch_size=6)
    apgd.generate(images, y)
    audit = apgd.last_audit
    assert audit.ok and audit.gradient_calls > 0
    assert audit.rows_purified > 3 * 6  # the gradient calls counted 3 rows per sample
    assert apgd.last_generation["attack_seeds"] == eot_seeds(0, 3)


@pytest.mark.parametrize("mode", MODES)
def test_autoattack_protocols_run_in_every_mode(images, mode):
    classifier, _ = _setup()
    x = images[:3]
    y = RandomnessAlignedAttack(classifier, seed=0).predict_test(x).argmax(1)
    rand = RandomnessAlignedAttack.from_protocol(classifier, "autoattack_rand", eps=0.1, max_iter=2,
                                                 eot_samples=2, randomness=mode, batch_size=3)
    report = evaluate_aligned(rand, x, y).to_dict()
    assert report["config"]["inner_attack"] == "AutoAttack" and report["audit"]["attack"]["ok"]
    assert np.abs(rand.last_x_adv - x).max() <= 0.1 + 1e-6
    standard = RandomnessAlignedAttack.from_protocol(classifier, "autoattack_standard", eps=0.1, max_iter=2,
                                                     randomness=mode, batch_size=3)
    report = evaluate_aligned(standard, x, y).to_dict()
    assert report["config"]["inner_attack"] == "Fra31AutoAttack" and report["audit"]["attack"]["ok"]
    assert np.abs(standard.last_x_adv - x).max() <= 0.1 + 1e-6


def test_fra31_state_path_resumes_after_an_interruption(images, tmp_path, monkeypatch):
    classifier, purifier = _setup()
    x = images[:1]
    y = RandomnessAlignedAttack(classifier, seed=0).predict_test(x).argmax(1)

    def run(path):
        return RandomnessAlignedAttack(classifier, batch_size=1, attack=lambda c: Fra31AutoAttack(
            c, version="custom", attacks=["apgd-ce", "square"], eps=1e-3, n_iter=2, n_queries=3,
            state_path=path)).generate(x, y)

    uninterrupted = run(tmp_path / "full.npz")
    build = Fra31AutoAttack._build

    def build_then_stop_at_square(self):
        aa = build(self)
        original = aa.run_standard_evaluation

        def run_standard_evaluation(*args, **kwargs):
            if aa.attacks_to_run == ["square"]:
                raise KeyboardInterrupt
            return original(*args, **kwargs)

        aa.run_standard_evaluation = run_standard_evaluation
        return aa

    with monkeypatch.context() as m:
        m.setattr(Fra31AutoAttack, "_build", build_then_stop_at_square)
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path / "cut.npz")
    with np.load(tmp_path / "cut.npz") as state:
        assert state["done"].tolist() == ["apgd-ce"]
    np.testing.assert_array_equal(run(tmp_path / "cut.npz"), uninterrupted)
    calls = _spy(purifier, monkeypatch)
    np.testing.assert_array_equal(run(tmp_path / "cut.npz"), uninterrupted)  # finished: nothing runs again
    assert len(calls) == 0
    with pytest.raises(ValueError, match="other inputs"):
        RandomnessAlignedAttack(classifier, batch_size=1, attack=lambda c: Fra31AutoAttack(
            c, version="custom", attacks=["apgd-ce", "square"], eps=0.1, state_path=tmp_path / "cut.npz")
        ).generate(x, y)


def test_targeted_attack_instances_run_under_control(images):
    from art.attacks.evasion import ProjectedGradientDescent

    classifier, _ = _setup()
    targets = (RandomnessAlignedAttack(classifier, seed=0).predict_test(images).argmax(1) + 1) % 10
    inner = ProjectedGradientDescent(classifier, eps=0.3, eps_step=0.1, max_iter=5, targeted=True, verbose=False)
    attack = RandomnessAlignedAttack(classifier, attack=inner, targeted=True, batch_size=6)
    report = evaluate_aligned(attack, images, targets).to_dict()
    assert report["audit"]["attack"]["ok"] and report["identification"] == "batch"
    # success means reaching the target, re-checked under the test randomness
    hit = attack.predict_test(attack.last_x_adv).argmax(1) == targets
    assert report["success"] == hit.tolist()
