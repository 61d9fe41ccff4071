"""The attacks built for purification (DiffAttack, DiffHammer, surrogate PGD-EOT), the purifier's named draws they
rest on, and the judgement of a stochastic defence over test draws; tiny models, float64 where gradients are
compared."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from art_diffpure import RandomnessAlignedAttack
from art_diffpure.attacks.apgd import apgd_linf, checkpoints
from art_diffpure.attacks.diffattack import DiffAttack
from art_diffpure.attacks.diffhammer import DiffHammer, select_draw
from art_diffpure.attacks.purified import PurifiedClassifier
from art_diffpure.attacks.surrogate import SurrogatePGDEOT
from art_diffpure.evaluations.draws import evaluate_draws
from art_diffpure.randomness import (ATTACK_DRAW_OFFSET, EVALUATION_DRAW_OFFSET, attack_draw_seeds,
                                     evaluation_draw_seeds, transfer_test_seed)
from conftest import art_classifier, make_purifier, tiny_classifier, tiny_scheduler, tiny_unet
from art_diffpure.evaluations.aligned import evaluate_aligned

pytestmark = pytest.mark.usefixtures("one_thread")


def double_classifier(checkpoint, t_star=6, sampler="ddpm", **kwargs):
    from art_diffpure import DiffusionPurifier

    purifier = DiffusionPurifier(tiny_unet().double(), tiny_scheduler(), t_star=t_star, sampler=sampler, seed=None,
                                 checkpoint=checkpoint, device_type="cpu", **kwargs)
    return art_classifier(tiny_classifier().double(), purifier)


@pytest.fixture
def x3() -> np.ndarray:
    return np.random.RandomState(3).uniform(0.2, 0.8, (3, 1, 8, 8))


Y3 = np.array([1, 4, 7])


def test_named_draws_replay_exactly_and_do_not_depend_on_the_batch(x3):
    head = PurifiedClassifier(double_classifier(False))
    x = head.tensor(x3)
    a = head.purify(x, [5, 6, 7], [0, 1, 2])
    assert torch.equal(a, head.purify(x, [5, 6, 7], [0, 1, 2]))
    alone = head.purify(x[1:2], [6], [1])
    torch.testing.assert_close(alone[0], a[1], rtol=0, atol=1e-10)
    assert not torch.allclose(a[1], head.purify(x[1:2], [8], [1])[0])  # another draw, other noise


def test_draw_vjp_is_autograd_through_that_draw(x3):
    """The grafted gradient (one backward through a named draw with any incoming gradient) equals autograd."""
    classifier = double_classifier(True)
    purifier = classifier.preprocessing_defences[0]
    x = torch.as_tensor(x3)
    incoming = torch.as_tensor(np.random.RandomState(0).randn(*x3.shape))
    grafted = purifier.draw_vjp(x, incoming, [11, 12, 13], [0, 1, 2])
    leaf = x.clone().requires_grad_(True)
    purifier.checkpoint = False
    with torch.enable_grad():
        (purifier.purify_draw(leaf, [11, 12, 13], [0, 1, 2]) * incoming).sum().backward()
    torch.testing.assert_close(grafted, leaf.grad, rtol=1e-9, atol=1e-12)


def test_diffattack_gradient_checkpointed_equals_plain_autograd_and_finite_differences(x3):
    plain = DiffAttack(double_classifier(False, t_star=8), eps=0.1, max_iter=1, eot_samples=2, every=2)
    checked = DiffAttack(double_classifier(True, t_star=8), eps=0.1, max_iter=1, eot_samples=2, every=2)
    assert len(plain._states()) == 4  # reverse states at t = 6, 4, 2, 0
    loss_a, grad_a = plain.loss_and_gradient(x3, Y3, [3, 4], [0, 1, 2])
    loss_b, grad_b = checked.loss_and_gradient(x3, Y3, [3, 4], [0, 1, 2])
    np.testing.assert_array_equal(loss_a, loss_b)
    assert np.abs(grad_a - grad_b).max() <= 1e-6 * np.abs(grad_a).max()
    # Finite differences of the classification part (the deviation term's reference is detached by design, so
    # the full loss's derivative in x is not what the attack follows).
    plain.lam = 0.0
    _, grad = plain.loss_and_gradient(x3, Y3, [3, 4], [0, 1, 2])
    direction = np.random.RandomState(1).randn(*x3.shape)
    h = 1e-6
    up, _ = plain.loss_and_gradient(x3 + h * direction, Y3, [3, 4], [0, 1, 2])
    down, _ = plain.loss_and_gradient(x3 - h * direction, Y3, [3, 4], [0, 1, 2])
    np.testing.assert_allclose((up - down) / (2 * h), (grad * direction).reshape(3, -1).sum(axis=1), rtol=1e-5)


def test_diffattack_deviation_term_changes_the_gradient(x3):
    attack = DiffAttack(double_classifier(False, t_star=8), eps=0.1, max_iter=1, eot_samples=1, every=2)
    with_term = attack.loss_and_gradient(x3, Y3, [3], [0, 1, 2])
    attack.lam = 0.0
    without = attack.loss_and_gradient(x3, Y3, [3], [0, 1, 2])
    assert np.all(with_term[0] > without[0]) and not np.allclose(with_term[1], without[1])


@pytest.mark.parametrize("forward_noising", ["one_shot", "multistep"])
def test_purify_draw_returns_only_the_requested_trajectory_states(x3, forward_noising):
    """``trajectory_steps`` picks states of the whole trajectory, bit for bit, gradients included, across internal
    batches (batch_size 2 for 3 rows) and under checkpointing."""
    purifier = double_classifier(True, batch_size=2, forward_noising=forward_noising).preprocessing_defences[0]
    steps = [0, 2, 5, len(purifier.trajectory_timesteps()) - 1]
    weights = torch.as_tensor(np.random.RandomState(2).randn(len(steps), 3, 1, 8, 8))
    grads, picked = [], []
    for kwargs in ({}, {"trajectory_steps": steps}):
        leaf = torch.as_tensor(x3).requires_grad_(True)
        with torch.enable_grad():
            out, traj = purifier.purify_draw(leaf, [3, 4, 5], [0, 1, 2], return_trajectory=True, **kwargs)
            traj = traj if kwargs else traj[steps]
            (grad,) = torch.autograd.grad((traj * weights).sum() + out.sum(), leaf)
        grads.append(grad)
        picked.append(traj.detach())
    assert picked[1].shape == (len(steps), 3, 1, 8, 8)
    assert torch.equal(picked[0], picked[1])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"trajectory_steps": [1]}, "needs return_trajectory=True"),
    ({"return_trajectory": True, "trajectory_steps": []}, "at least one"),
    ({"return_trajectory": True, "trajectory_steps": [3, 2]}, "increasing"),
    ({"return_trajectory": True, "trajectory_steps": [0, 8]}, r"\[0, 8\)"),
    ({"return_trajectory": True, "trajectory_steps": [0.5]}, "integer"),
])
def test_purify_draw_rejects_bad_trajectory_steps(x3, kwargs, message):
    purifier = double_classifier(True).preprocessing_defences[0]  # 8 states: input, x_5, x_4 .. x_0, output
    with pytest.raises(ValueError, match=message):
        purifier.purify_draw(torch.as_tensor(x3), [3, 4, 5], [0, 1, 2], **kwargs)


def _live_peak_bytes(fn) -> int:
    """Peak of the live CPU tensor bytes allocated by ``fn``, measured as benchmark B2 measures it."""
    import os
    import sys

    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")
    sys.path.insert(0, bench)  # the script imports its _common helper
    try:
        from b2_memory import live_peak_mib
    finally:
        sys.path.remove(bench)
    return int(round(live_peak_mib(fn) * 2**20))


def test_diffattack_holds_only_the_states_in_its_loss(x3, monkeypatch):
    """The purifier hands DiffAttack only its deviation states, and the gradient's memory grows by about one state
    per reverse step (the input each checkpoint saves), not by copies of the whole trajectory and their
    gradients."""
    peaks, kept = {}, []
    for t_star in (4, 40):
        attack = DiffAttack(double_classifier(True, t_star=t_star), eps=0.1, max_iter=1, eot_samples=1, every=10)
        original = attack.head.purify

        def spy(*args, **kwargs):
            result = original(*args, **kwargs)
            kept.append(len(result[1]))
            return result

        monkeypatch.setattr(attack.head, "purify", spy)
        attack.loss_and_gradient(x3, Y3, [3], [0, 1, 2])  # warm-up: lazily built buffers
        peaks[t_star] = _live_peak_bytes(lambda: attack.loss_and_gradient(x3, Y3, [3], [0, 1, 2]))
    assert kept == [1, 1, 4, 4]  # t = 2; t = 38, 28, 18, 8 (of 42 states)
    state_bytes = x3.nbytes
    assert peaks[40] - peaks[4] <= 2 * 36 * state_bytes, (peaks, state_bytes)


def test_diffhammer_selection_and_weights_equal_a_hand_computation():
    # Two samples, three draws, two pixels.
    grads = np.array([[[1.0, -2.0], [0.5, 0.5]],
                      [[-1.0, -1.0], [1.0, -3.0]],
                      [[2.0, 1.0], [-0.5, 0.25]]])
    losses = np.array([[0.3, 1.0], [-0.2, 0.1], [0.5, -0.4]])
    eps, lam = 0.1, 5.0
    chosen, weights = select_draw(grads, losses, eps, lam)
    for b in range(2):
        expected = []
        for j in range(3):
            total = 0.0
            for k in range(3):
                v = losses[k, b] + eps * float(np.sign(grads[j, b]) @ grads[k, b])
                total += v if v > 0 else np.exp(v) - 1
            expected.append(total)
        assert chosen[b] == int(np.argmax(expected))
        for k in range(3):
            agreement = float(np.sign(grads[chosen[b], b]) @ grads[k, b])
            assert weights[k, b] == pytest.approx(1 / (1 + np.exp(-lam * (losses[k, b] + agreement))), rel=1e-12)


def test_diffhammer_graft_follows_the_purifiers_checkpointing_and_draw_vjp_takes_a_setting_for_one_call(x3):
    """The grafted backward keeps the purifier's forced checkpointing; draw_vjp's own setting for one backward gives
    the bit-identical gradient without it, and the purifier keeps its setting (also after an error)."""
    classifier = art_classifier(tiny_classifier(), make_purifier(t_star=6, seed=None, checkpoint=True))
    attack = DiffHammer(classifier, eps=0.1, n_draws=3)
    purifier, x, ids = attack.head.purifier, x3.astype(np.float32), np.arange(3)
    losses, grads, _, seeds = attack.draw_statistics(x, Y3, attack.head.draws(0, 0, 3), ids, "ce")
    grafted = attack.grafted_gradient(x, losses, grads, seeds, ids)
    assert purifier.last_checkpointed is True and purifier.checkpoint is True
    chosen, weights = select_draw(grads, losses, attack.eps, attack.lam)
    incoming = ((weights[..., None] * grads).sum(axis=0) / weights.sum(axis=0)[:, None]).reshape(x.shape)
    chosen_seeds = [int(seeds[j]) for j in chosen]
    plain = attack.head.draw_vjp(x, incoming, chosen_seeds, ids, checkpoint=False)
    assert purifier.last_checkpointed is False and purifier.checkpoint is True
    np.testing.assert_array_equal(grafted, plain)
    with pytest.raises(ValueError, match="checkpoint"):
        attack.head.draw_vjp(x, incoming, chosen_seeds, ids, checkpoint="sometimes")
    with pytest.raises(ValueError, match="seeds"):  # fails inside the chain: the setting is restored
        attack.head.draw_vjp(x, incoming, chosen_seeds[:2], ids, checkpoint=False)
    assert purifier.checkpoint is True


def test_apgd_checkpoints_and_it_climbs_a_concave_loss():
    assert checkpoints(100)[:4] == [0, 22, 41, 57]
    target = np.array([[0.3, -0.2], [0.05, 0.4]])
    x = np.zeros((2, 2))

    def gradient(z, _it):
        return -((z - target) ** 2).sum(axis=1), -2 * (z - target)

    best, loss = apgd_linf(x, x, 0.25, 50, gradient, clip_values=(-1.0, 1.0))
    np.testing.assert_allclose(best, np.clip(target, -0.25, 0.25), atol=1e-3)


def test_named_draw_families_are_disjoint():
    attack, test = set(attack_draw_seeds(7, 0, 1000)), set(evaluation_draw_seeds(7, 1000))
    assert not attack & test and transfer_test_seed(7) not in attack | test
    assert min(attack) == 7 + ATTACK_DRAW_OFFSET and min(test) == 7 + EVALUATION_DRAW_OFFSET
    with pytest.raises(ValueError):
        evaluation_draw_seeds(2**31, 10)


def test_draw_statistics_recount_the_per_draw_records(x8):
    classifier = art_classifier(tiny_classifier(), make_purifier(t_star=4, seed=None))
    y = np.array([3, 3])
    result = evaluate_draws(classifier, x8, y, seed=2, n_draws=5, vote=3)
    d = result.to_dict()
    preds = np.array(d["predictions"])
    correct = preds == y
    assert d["one_draw"]["accuracy"] == correct[0].mean()
    assert d["mean"]["accuracy"] == pytest.approx(correct[:5].mean())
    assert d["worst_case"]["accuracy"] == correct[:5].all(axis=0).mean()
    votes = [np.bincount(preds[:3, i], minlength=10).argmax() for i in range(2)]
    assert d["majority_vote"]["accuracy"] == np.mean(np.array(votes) == y)
    assert (d["worst_case"]["n"], d["worst_case"]["n_draws"], d["majority_vote"]["vote"]) == (2, 5, 3)
    again = evaluate_draws(classifier, x8[::-1], y, seed=2, n_draws=5, vote=3, sample_ids=[1, 0])
    np.testing.assert_array_equal(again.predictions[:, ::-1], result.predictions)  # per sample, not per batch


def test_ddim_eta_one_is_stochastic_and_seeded(x8):
    purifier = make_purifier(t_star=6, sampler="ddim", ddim_steps=3, ddim_eta=1.0, seed=None)
    a, b = purifier.purify(x8, seed=1), purifier.purify(x8, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, purifier.purify(x8, seed=2))
    with pytest.raises(ValueError, match="ddim_eta"):
        make_purifier(sampler="ddim", ddim_eta=2.0)


ATTACKS = {
    "diffhammer": lambda c: DiffHammer(c, eps=0.1, max_iter=2, n_draws=3, losses=("ce",)),
    "diffattack": lambda c: DiffAttack(c, eps=0.1, max_iter=2, eot_samples=2, every=2, losses=("ce",)),
    "surrogate": lambda c: SurrogatePGDEOT(c, eps=0.1, max_iter=2, eot_samples=2, surrogate_steps=2),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_directly_is_bounded_and_reproducible(name, x8):
    classifier = art_classifier(tiny_classifier(), make_purifier(t_star=4, seed=None))
    y = np.array([2, 5])
    a = ATTACKS[name](classifier).generate(x8, y)
    b = ATTACKS[name](classifier).generate(x8, y)
    np.testing.assert_array_equal(a, b)  # named draws and seeded starts: rerunnable
    assert np.abs(a - x8).max() <= 0.1 + 1e-6 and a.min() >= 0 and a.max() <= 1
    assert np.abs(a - x8).max() > 0.05


@pytest.mark.parametrize("randomness", ["aligned", "transfer", "stochastic"])
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_inside_randomness_aligned_attack_has_zero_audit_escapes(name, randomness, x8):
    classifier = art_classifier(tiny_classifier(), make_purifier(t_star=4, seed=None))
    wrapper = RandomnessAlignedAttack(classifier, attack=ATTACKS[name], randomness=randomness, batch_size=2)
    report = evaluate_aligned(wrapper, x8, np.array([2, 5]), sample_ids=[10, 11]).to_dict()
    for audit in (report["audit"]["attack"], report["audit"]["test"]):
        assert audit["rows_uncontrolled"] == 0 and audit["rows_ambiguous"] == 0
        assert audit["rows_intended"] == audit["rows_purified"] > 0
    assert set(wrapper.last_audit.rows_per_sample) == {10, 11}
