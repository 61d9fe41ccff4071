"""The purifier's noise state (art_diffpure.noise.PurifierNoise): who decides a call's noise, and its copy rules."""
from __future__ import annotations

import ast
import copy
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_purifier

import art_diffpure.noise as noise_module
import art_diffpure.purifier as purifier_module
from art_diffpure.noise import NoiseCache, PurifierNoise
from art_diffpure.randomness import RandomnessControl, RandomnessEscapeError

pytestmark = pytest.mark.usefixtures("one_thread")

IDS = np.arange(10, 16)


def _control(images, configs=(0,)):
    control = RandomnessControl(None if configs is None else list(configs), bound=0.1)
    control.set_batch(images, IDS)
    return control


def test_purify_with_sample_ids_and_no_seed_runs_under_the_live_control(images):
    """The attack's control decides (and audits) every call without a seed, sample_ids given or not."""
    purifier = make_purifier(t_star=3, seed=5)  # its own seed must not be used under the control
    expected = purifier.purify(images, seed=0, sample_ids=IDS)
    control = _control(images)
    with purifier.controlled(control):
        out = purifier.purify(images, sample_ids=IDS)
    assert control.audit.calls == 1 and control.audit.rows_intended == control.audit.rows_purified == 6
    assert control.audit.ok and control.audit.rows_per_sample == {i: 1 for i in IDS.tolist()}
    np.testing.assert_array_equal(out, expected)


def test_purify_with_sample_ids_under_a_stochastic_control_draws_fresh_noise(images):
    purifier = make_purifier(t_star=3, seed=5, generator_seed=1)
    control = _control(images, configs=None)
    with purifier.controlled(control):
        a = purifier.purify(images, sample_ids=IDS)
        b = purifier.purify(images, sample_ids=IDS)
    assert control.audit.calls == 2 and control.audit.ok
    assert not np.array_equal(a, b)  # fresh on every call, never the purifier's seed 5


def test_purify_with_sample_ids_without_a_control_is_unchanged(images):
    purifier = make_purifier(t_star=3, seed=5)
    np.testing.assert_array_equal(purifier.purify(images, sample_ids=IDS), purifier.purify(images, seed=5,
                                                                                               sample_ids=IDS))
    with purifier.randomness(7):
        np.testing.assert_array_equal(purifier.purify(images, sample_ids=IDS),
                                      purifier.purify(images, seed=7, sample_ids=IDS))


def test_purify_with_sample_ids_on_an_uncontrolled_purifier_is_an_escape(images):
    attacked, other = make_purifier(t_star=3, seed=5), make_purifier(t_star=3, seed=5)
    control = _control(images)
    with attacked.controlled(control):
        with pytest.raises(RandomnessEscapeError, match="does not control"):
            other.purify(images, sample_ids=IDS)
        other.purify(images, seed=1, sample_ids=IDS)  # explicit seeds: chosen by the caller, not an escape
    assert control.audit.rows_uncontrolled == 6


def test_copies_share_the_live_control_and_keep_the_generator_state(images):
    purifier = make_purifier(t_star=3, seed=None, generator_seed=3)
    purifier.purify(images)  # the cache and the generator have moved on
    control = _control(images)
    with purifier.controlled(control), purifier.randomness(None, IDS):
        twin = copy.deepcopy(purifier)
        assert twin._randomness is not purifier._randomness and twin._randomness.control is control
        assert twin._context[1].tolist() == IDS.tolist() and not twin._noise_cache
        twin.purify(images)
    assert control.audit.calls == 1 and twin._live_control() is None  # the attack ended: the copy is free
    assert torch.equal(twin._randomness.generator.get_state(), purifier._randomness.generator.get_state())


def test_pickling_keeps_the_generator_and_drops_the_control():
    noise = PurifierNoise(generator_seed=4)
    noise.context = (3, np.arange(2))
    noise.control = RandomnessControl([0])
    noise.control.closed = True  # an attack that has ended
    back = pickle.loads(pickle.dumps(noise))
    assert back.control is None and back.context[0] == 3 and not back.cache.entries
    assert torch.equal(torch.randn(4, generator=back.generator), torch.randn(4, generator=noise.generator))


def test_a_pickle_from_before_the_noise_object_loads(images):
    purifier = make_purifier(t_star=3, seed=None, generator_seed=8)
    reference = copy.deepcopy(purifier).purify(images)
    state = dict(purifier.__dict__)
    noise = state.pop("_randomness")
    state.update(_fresh_generator=noise.generator.get_state(), _context=None, _control=None, _noise_cache={},
                 _noise_call=(0, 0))
    old = purifier_module.DiffusionPurifier.__new__(purifier_module.DiffusionPurifier)
    old.__setstate__(state)
    assert not {"_fresh_generator", "_context", "_control", "_noise_cache", "_noise_call"} & set(old.__dict__)
    np.testing.assert_array_equal(old.purify(images), reference)


def test_noise_names_assigned_on_the_purifier_module_reach_the_noise_module(monkeypatch):
    monkeypatch.setattr(purifier_module, "NOISE_CACHE_BYTES", 123)
    assert noise_module.NOISE_CACHE_BYTES == 123 == purifier_module.NOISE_CACHE_BYTES
    monkeypatch.undo()
    assert noise_module.NOISE_CACHE_BYTES == 1 << 30 == purifier_module.NOISE_CACHE_BYTES


def test_cache_never_evicts_what_the_call_in_flight_used(monkeypatch):
    monkeypatch.setattr(noise_module, "noise_cache_budget", lambda: 2 * 4 * 4)  # two 4-float entries
    cache = NoiseCache()
    cache.position = (1, 0)
    cache.put("a", torch.zeros(4))
    cache.position = (2, 0)
    cache.put("b", torch.zeros(4))
    cache.position = (2, 4)
    cache.put("c", torch.zeros(4))  # evicts "a" (an earlier call), keeps "b" (this call)
    assert list(cache.entries) == ["b", "c"]
    cache.position = (2, 8)
    cache.put("d", torch.zeros(4))  # nothing of an earlier call left to evict, not the call's first batch
    assert list(cache.entries) == ["b", "c"] and cache.get("b") is not None


@pytest.mark.parametrize("module", ["noise.py", "chain.py", "randomness.py"])
def test_imports_run_downward(module):
    tree = ast.parse((Path(noise_module.__file__).parent / module).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names = {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names = {alias.name for alias in node.names}
        else:
            continue
        assert "art_diffpure.purifier" not in names
