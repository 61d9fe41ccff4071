"""The reproduction's repeated test draws: named per-sample draws, and the committed reports' rule still read."""
import dataclasses
import json
import os
import re

import numpy as np
import pytest
import torch

from conftest import make_purifier, tiny_classifier

from art_diffpure.evaluations.draws import draw_predictions
from art_diffpure.randomness import EVALUATION_DRAW_OFFSET, evaluation_draw_seeds
from art_diffpure.reproduce import sections
from art_diffpure.reproduce.experiments import _repeated_draws
from art_diffpure.reproduce.markdown import markdown
from art_diffpure.reproduce.presets import DIGITS_SMOKE, REPEATED_DRAW_RULE, REPEATED_DRAWS, Setting

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs")
SEED = 3


class _Recording(torch.nn.Module):
    """The tiny classifier, keeping every purified batch it is shown (to compare a sample's draws exactly)."""

    def __init__(self):
        super().__init__()
        self.net, self.seen = tiny_classifier(), []

    def forward(self, x):
        self.seen.append(x.detach().cpu().numpy().copy())
        return self.net(x)


def _setting(x, y, model):
    return Setting(name="test", model=model, make_purifier=lambda k, t, seed, gradient: make_purifier(t, k, seed),
                   x=x, y=y, eps=0.1, t_star=4, sizes=dataclasses.replace(DIGITS_SMOKE, seeds=(SEED, SEED + 1)),
                   device="cpu", features=None)


def _draws(x, y):
    """The repeated draws of the stochastic attack's examples ``x``: (record, purified images per draw)."""
    model = _Recording()
    record = _repeated_draws(_setting(x, y, model), {f"table2 stochastic seed {SEED}": (None, x)})
    return record, np.stack(model.seen)


def test_a_samples_repeated_draws_do_not_depend_on_its_batch(x8):
    x = np.concatenate([x8, x8[::-1] * 0.5, x8 * 0.8]).astype(np.float32)  # six samples, ids 0..5
    y = np.array([1, 2, 3, 4, 5, 6])
    full, seen_full = _draws(x, y)
    head, seen_head = _draws(x[:3], y[:3])
    assert seen_full.shape[:2] == (REPEATED_DRAWS, 6) and seen_head.shape[:2] == (REPEATED_DRAWS, 3)
    # the same sample, draw by draw, whether it ran with five others or two (up to the batch's float rounding)
    np.testing.assert_allclose(seen_head, seen_full[:, :3], atol=1e-5)
    assert np.abs(seen_full[0] - seen_full[1]).max() > 1e-3  # and the draws are different draws
    np.testing.assert_array_equal(np.array(head["adv_correct"]), np.array(full["adv_correct"])[:, :3])


def test_repeated_draws_record_their_rule_and_the_evaluation_draw_seeds(x8):
    record, _ = _draws(x8, np.array([1, 2]))
    assert record["draw_rule"] == REPEATED_DRAW_RULE == "per-sample named draws"
    assert record["seed"] == SEED and record["n_draws"] == REPEATED_DRAWS
    assert record["draw_seeds"] == evaluation_draw_seeds(SEED, REPEATED_DRAWS)
    assert record["draw_seeds"][0] == SEED + EVALUATION_DRAW_OFFSET
    assert "generator_seeds" not in record
    assert np.array(record["adv_correct"]).shape == (REPEATED_DRAWS, 2)


def test_draw_predictions_follow_the_sample_not_its_position(x8):
    purifier = make_purifier(t_star=4, seed=None)
    x = np.concatenate([x8, x8 * 0.5]).astype(np.float32)
    seen = []

    def predict(v):
        out = purifier.purify(v)
        seen.append(out)
        return out.reshape(len(v), -1).argmax(axis=1)

    labels, seeds = draw_predictions(purifier, predict, x, SEED, 4, [0, 1, 2, 3])
    order = [2, 0, 3, 1]
    again, _ = draw_predictions(purifier, predict, x[order], SEED, 4, order)
    assert seeds == evaluation_draw_seeds(SEED, 4)
    np.testing.assert_array_equal(again, labels[:, order])
    np.testing.assert_allclose(np.stack(seen[4:]), np.stack(seen[:4])[:, order], atol=1e-5)


def test_new_reports_name_the_per_sample_rule():
    record = {"n_draws": 10, "draw_rule": REPEATED_DRAW_RULE, "seed": 0, "draw_seeds": evaluation_draw_seeds(0, 10)}
    text, brief = sections.draw_rule_text(record), sections.draw_rule_text(record, brief=True)
    assert "per-sample named draws" in text and f"s + {EVALUATION_DRAW_OFFSET} + j" in text and "batch" in text
    assert brief == f"10, per-sample named draws: base seeds s + {EVALUATION_DRAW_OFFSET} + j of the attack's seed s"


@pytest.mark.parametrize("name", ["digits-report", "digits-report-confirmatory"])
def test_committed_reports_keep_the_batch_generator_rule_and_their_words(name):
    """The reports measured with generator seeds 20000 + k render as they were written (no refits here)."""
    folder = os.path.join(DOCS, name)
    with open(os.path.join(folder, "results.json")) as handle:
        results = json.load(handle)
    with open(os.path.join(folder, "timings.json")) as handle:
        timings = json.load(handle)
    with open(os.path.join(folder, "report.md")) as handle:
        committed = handle.read()
    draws = results["repeated_draws"]
    assert "draw_rule" not in draws and draws["generator_seeds"] == [20000 + k for k in range(10)]
    assert sections.draw_rule_text(draws) == "10 independent fresh draws of the purifier's noise"
    assert "(10, generator seeds 20000+k)" in committed
    figures = re.findall(r"^!\[([^\]]+)\]\(\1\)$", committed, flags=re.M)
    assert markdown(results, timings, figures) == committed
