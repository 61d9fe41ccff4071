"""One vocabulary: norms (art_diffpure._utils.norm_label / parse_norm), the int check, the exceptions module, the
seed constants and the sampler list."""
from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest

from art_diffpure import exceptions, randomness
from art_diffpure._utils import check_int, norm_label, parse_norm
from conftest import art_classifier, make_purifier, tiny_classifier

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "art_diffpure"


# ---------------------------------------------------------------------------------------------- norms
@pytest.mark.parametrize("norm,label,art", [
    (np.inf, "linf", np.inf), (float("inf"), "linf", np.inf), (np.float32(np.inf), "linf", np.inf),
    ("inf", "linf", np.inf), ("linf", "linf", np.inf), ("LINF", "linf", np.inf), ("Inf", "linf", np.inf),
    (2, "l2", 2), (2.0, "l2", 2), (np.int64(2), "l2", 2), ("l2", "l2", 2), ("L2", "l2", 2), ("2", "l2", 2),
    (1, "l1", 1), (1.0, "l1", 1), ("l1", "l1", 1), ("L1", "l1", 1), ("1", "l1", 1),
])
def test_norm_label_and_parse_norm(norm, label, art):
    assert norm_label(norm) == label
    parsed = parse_norm(norm)
    assert parsed == art and type(parsed) is type(art)
    assert norm_label(parsed) == label  # the inverse


@pytest.mark.parametrize("norm", [True, False, np.bool_(True), 0, 3, -np.inf, np.nan, None, "both", " l2", "l3", "",
                                  [2]])
def test_norms_reject_anything_else(norm):
    with pytest.raises(ValueError, match="Unknown norm"):
        norm_label(norm)
    with pytest.raises(ValueError, match="Unknown norm"):
        parse_norm(norm)


def test_fra31_norm_names_come_from_the_labels():
    from art_diffpure.attacks.autoattack import _fra31_norm

    assert [_fra31_norm(n) for n in (np.inf, "inf", 2, 1)] == ["Linf", "Linf", "L2", "L1"]
    with pytest.raises(ValueError, match="norm must be np.inf, 2 or 1"):
        _fra31_norm(True)


# ---------------------------------------------------------------------------------------------- ints
def test_check_int():
    assert check_int(3, "n") == 3 and type(check_int(np.int64(3), "n")) is int
    assert check_int(-4, "n") == -4 and check_int(0, "n", 0) == 0 and check_int(5, "n", 1, 5) == 5
    for value, minimum, message in [(True, None, "n must be an int, got True"),
                                    (np.bool_(False), 0, "n must be a non-negative int"),
                                    (1.0, 1, "n must be a positive int, got 1.0"), ("2", None, "n must be an int"),
                                    (-1, 0, "n must be a non-negative int, got -1"), (99, 100, "n must be an int >= 100")]:
        with pytest.raises(ValueError, match=message):
            check_int(value, "n", minimum)
    with pytest.raises(ValueError, match=r"n must be an int in \[1, 5\], got 6"):
        check_int(6, "n", 1, 5)


@pytest.mark.parametrize("name", ["batch_size", "ddim_steps", "checkpoint_budget_bytes", "t_star", "seed"])
def test_purifier_rejects_bool_counts(name):
    with pytest.raises(ValueError, match=name):
        make_purifier(**{name: True})


def test_attacks_reject_bool_counts():
    from art_diffpure import RandomnessAlignedAttack
    from art_diffpure.attacks.autoattack import Fra31AutoAttack

    classifier = art_classifier(tiny_classifier(), make_purifier(t_star=2, seed=0))
    for kwargs in (dict(batch_size=True), dict(max_iter=True), dict(eot_samples=True), dict(seed=True)):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            RandomnessAlignedAttack(classifier, **kwargs)
    with pytest.raises(ValueError, match="batch_size"):
        Fra31AutoAttack(classifier, batch_size=True)


def test_metrics_reject_bool_seeds():
    from art_diffpure.metrics import compression_rate

    purifier = make_purifier(t_star=2, seed=0)
    with pytest.raises(ValueError, match="every seed"):
        compression_rate(purifier, np.zeros((1, 1, 8, 8), np.float32), seeds=True)


# ---------------------------------------------------------------------------------------------- exceptions
def test_exceptions_module_holds_every_exception_class():
    expected = {"RandomnessEscapeError": RuntimeError, "AmbiguousRowsError": RuntimeError,
                "PresetUnavailable": RuntimeError, "DirectoryInUse": RuntimeError, "StoreWriteError": RuntimeError,
                "UnreadableUnit": ValueError, "RunMismatch": RuntimeError, "InputError": ValueError}
    assert sorted(exceptions.__all__) == sorted(expected)
    for name, base in expected.items():
        cls = getattr(exceptions, name)
        assert cls.__bases__ == (base,) and cls.__doc__
    assert randomness.RandomnessEscapeError is exceptions.RandomnessEscapeError
    assert randomness.AmbiguousRowsError is exceptions.AmbiguousRowsError


def test_exceptions_and_utils_import_nothing_from_the_package():
    for module in ("exceptions.py", "_utils.py"):
        tree = ast.parse((PACKAGE / module).read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if m.startswith("art_diffpure")], module


# ---------------------------------------------------------------------------------------------- seeds, samplers
def test_seed_constants_keep_their_values():
    from art_diffpure.models.data import SPLIT_SEED

    r = randomness
    assert (r.EOT_SEED_STRIDE, r.TRANSFER_SEED_OFFSET, r.ATTACK_DRAW_OFFSET, r.EVALUATION_DRAW_OFFSET) == (
        7919, 1_000_000_007, 2_000_000_011, 3_000_000_019)
    assert (r.START_STREAM_ART, r.START_STREAM_DIFFATTACK, r.START_STREAM_DIFFHAMMER, r.START_STREAM_SURROGATE) == (
        0, 1, 2, 5)
    assert r.numpy_start_seed(7, 3) == r.start_seed(7, 3, 0) == r.seed_hash(7, 3, 0)
    assert (r.FRESH_GENERATOR_TAG, r.MAX_SEED) == (0x5EED, 10**9)
    assert not hasattr(r, "REPEATED_DRAW_GENERATOR_SEED")  # one rule for test draws: evaluation_draw_seeds
    assert SPLIT_SEED == r.DIGITS_SPLIT_SEED == 0
    assert 0 <= r.urandom_seed() < 2**63


def test_one_sampler_list():
    from art_diffpure import chain, purifier, samplers

    assert samplers.SAMPLERS == ("ddpm", "reverse", "ddim")
    assert chain.SAMPLERS is purifier.SAMPLERS is samplers.SAMPLERS
