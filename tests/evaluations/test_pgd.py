"""art_diffpure.evaluations.pgd: one reproducible attack-and-test run, on small digits models (CPU)."""
from __future__ import annotations

import numpy as np
import pytest

from _evaluation_models import _one_thread, digits, plain_model  # noqa: F401  (_one_thread: autouse fixture)
from _trained import digits_setup

from art_diffpure.attacks.protocols import rel_step
from art_diffpure.evaluations.pgd import as_classifier, run_pgd, undefended
from art_diffpure.randomness import numpy_seeded


def test_stochastic_mode_is_reproducible_and_numpy_state_restored():
    classifier, purifier, x, y, _ = digits_setup(t_star=3, n=6)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = run_pgd(classifier, x, y, 0.1, "stochastic", max_iter=2, seed=5)
    b = run_pgd(classifier, x, y, 0.1, "stochastic", max_iter=2, seed=5)
    assert a == b
    assert np.array_equal(np.random.get_state()[1], before)
    with numpy_seeded(1):
        first = np.random.rand()
    with numpy_seeded(1):
        assert np.random.rand() == first


def test_one_hot_labels_give_the_same_run_as_indices():
    x, y = digits(6)
    classifier = as_classifier(plain_model(), x)
    a = run_pgd(classifier, x, y, 0.1, max_iter=2)
    b = run_pgd(classifier, x, np.eye(10, dtype=np.float32)[y], 0.1, max_iter=2)
    assert a == b


def test_as_classifier_appends_the_purifier_once_and_undefended_drops_it():
    classifier, purifier, x, _, _ = digits_setup(t_star=3, n=2)
    assert as_classifier(classifier, x, purifier) is classifier  # already there
    plain = undefended(classifier)
    assert not plain.preprocessing_defences and plain.model is classifier.model
    again = as_classifier(plain, x, purifier)
    assert list(again.preprocessing_defences) == [purifier]
    with pytest.raises(ValueError, match="PyTorchClassifier or a torch.nn.Module"):
        as_classifier(object(), x)


def test_default_step_is_the_protocol_rule():
    x, y = digits(6)
    classifier = as_classifier(plain_model(), x)
    default = run_pgd(classifier, x, y, 0.1, max_iter=3)
    assert default == run_pgd(classifier, x, y, 0.1, max_iter=3, rel_step=rel_step(3))


def test_a_purified_classifier_is_attacked_by_the_aligned_wrapper_in_the_mode_asked_for(monkeypatch):
    """With a purifier, each mode is RandomnessAlignedAttack in that mode (never a plain ART attack on the chain)."""
    from art_diffpure.attacks.randomness_aligned import RandomnessAlignedAttack
    from art_diffpure.evaluations import pgd
    from art_diffpure.evaluations.aligned import evaluate_aligned

    def plain(*args, **kwargs):
        raise AssertionError("a purified classifier went down the plain attack's path")

    monkeypatch.setattr(pgd, "_plain_attack", plain)
    classifier, purifier, x, y, _ = digits_setup(t_star=3, n=6)
    for mode in ("aligned", "transfer"):
        got = run_pgd(classifier, x, y, 0.3, mode, max_iter=2, seed=4)
        with numpy_seeded(4):
            attack = RandomnessAlignedAttack(classifier, randomness=mode, seed=4, eps=0.3, eps_step=rel_step(2) * 0.3,
                                             max_iter=2, num_random_init=1, batch_size=32)
            want = evaluate_aligned(attack, x, y).to_dict()
        assert got == {k: want[k] for k in got}, mode
        assert attack.last_audit.ok and attack.last_audit.to_dict()["rows_intended"] > 0
