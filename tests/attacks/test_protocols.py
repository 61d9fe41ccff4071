"""Tests of art_diffpure.attacks.protocols: the paper's protocols and the one rule for the relative PGD step."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import art_classifier, make_purifier, tiny_classifier

from art_diffpure.attacks.protocols import PROTOCOLS, AttackProtocol, get_protocol, protocol_attack, rel_step
from art_diffpure.attacks.randomness_aligned import RandomnessAlignedAttack


pytestmark = pytest.mark.usefixtures("one_thread")


def _classifier():
    return art_classifier(tiny_classifier(), make_purifier(t_star=5, seed=0))


def test_protocols():
    classifier = _classifier()
    p = PROTOCOLS["paper_cifar10"]
    assert (p.eps, p.max_iter, p.seeds, p.randomness) == (8 / 255, 40, (0, 1, 2), "aligned")
    assert p.eps_step == pytest.approx(8 / 255 / 30)
    assert PROTOCOLS["paper_cifar10_eot"].eot_samples == 15
    assert PROTOCOLS["paper_imagenet"].eps == 4 / 255 and PROTOCOLS["paper_imagenet"].gradient == "bpda"
    attack = RandomnessAlignedAttack.from_protocol(classifier, "paper_cifar10", max_iter=2, batch_size=2)
    assert attack.eps == 8 / 255 and attack.max_iter == 2 and attack.eot_samples == 1
    assert attack.inner.eps_step == pytest.approx(8 / 255 / 30)
    config = attack.config()
    json.dumps(config)
    assert config["protocol"]["name"] == "paper_cifar10"


def test_rel_step_is_foolbox_pgd40_with_the_same_total_travel():
    assert rel_step() == rel_step(40) == 0.01 / 0.3  # exactly foolbox's LinfPGD rel_stepsize at 40 steps
    for max_iter in (1, 5, 10, 40, 100, 200):
        assert rel_step(max_iter) * max_iter == pytest.approx(4 / 3)  # 40 steps of eps/30
    assert rel_step(10) == (0.01 / 0.3) * 40 / 10  # the formula reproduce used, bit for bit
    assert AttackProtocol("p", eps=0.1).rel_step == rel_step()
    assert all(p.rel_step == rel_step() for p in PROTOCOLS.values())
    for bad in (0, -3, 2.5, True, "40"):
        with pytest.raises(ValueError, match="max_iter"):
            rel_step(bad)


def test_get_protocol_and_factories():
    p = get_protocol("paper_cifar10", max_iter=10, rel_step=rel_step(10))
    assert p.max_iter == 10 and p.eps_step == pytest.approx(8 / 255 * 4 / 30)
    assert get_protocol(p) is p
    with pytest.raises(ValueError, match="protocol attack"):
        get_protocol("paper_cifar10", attack="cw")
    assert protocol_attack(PROTOCOLS["paper_cifar10"], batch_size=4) is None
    classifier = _classifier()
    inner = protocol_attack(PROTOCOLS["autoattack_rand"], batch_size=4)(classifier)
    assert [type(a).__name__ for a in inner.attacks] == ["AutoProjectedGradientDescent"] * 2
    assert PROTOCOLS["autoattack_rand"].to_dict()["norm"] == "inf" and np.isinf(PROTOCOLS["autoattack_rand"].norm)
