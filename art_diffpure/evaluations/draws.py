"""
How a stochastic defence is judged on adversarial examples: over named test draws of its randomness.

For final adversarial examples ``x_adv`` the purified classifier predicts under ``max(N, K)`` test draws
(:func:`~art_diffpure.randomness.evaluation_draw_seeds`: never an attack draw, an EOT configuration or a
transfer seed) and reports, each with its 95% interval over images and its n:

- ``one_draw``: accuracy under test draw 0 (the usual single test);
- ``mean``: the mean over the N draws of the accuracy (percentile bootstrap over images of each image's mean);
- ``worst_case``: a sample counts as robust only if EVERY one of the N draws classifies it correctly
  (DiffHammer's / ADDT's worst case over resubmissions);
- ``majority_vote``: the majority of the predicted labels of K draws (DiffBreak's MV; ties go to the lowest
  label, the rule ``np.argmax`` of the vote counts applies).

An attack's in-attack record (e.g. DiffHammer's success at any draw at any iteration) is its own figure and is
not computed here. :func:`draw_predictions` is the draws' one rule, shared with the reproduction's repeated test
draws.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from art_diffpure._utils import check_int, index_labels
from art_diffpure.evaluations.statistics import bootstrap_interval, wilson_interval
from art_diffpure.purifier import find_purifier
from art_diffpure.randomness import evaluation_draw_seeds


@dataclass(frozen=True)
class DrawEvaluation:
    """Per-draw predictions of a stochastic defence and the four accuracies built from them."""

    predictions: np.ndarray  # (max(N, K), n) labels under each test draw
    labels: np.ndarray  # (n,)
    seeds: list[int]  # the test draws' base seeds
    n_draws: int  # N
    vote: int  # K

    @property
    def correct(self) -> np.ndarray:
        """``(max(N, K), n)`` correctness under each test draw."""
        return self.predictions == self.labels[None, :]

    def vote_predictions(self) -> np.ndarray:
        k, n = self.vote, self.predictions.shape[1]
        counts = np.zeros((n, int(max(self.predictions.max(), self.labels.max())) + 1), dtype=np.int64)
        for row in self.predictions[:k]:
            counts[np.arange(n), row] += 1
        return counts.argmax(axis=1)

    def per_image(self) -> dict[str, np.ndarray]:
        """Per-image correctness (bool) or mean correctness (float) of each figure."""
        draws = self.correct[: self.n_draws]
        return {"one_draw": self.correct[0], "mean": draws.mean(axis=0), "worst_case": draws.all(axis=0),
                "majority_vote": self.vote_predictions() == self.labels}

    def to_dict(self) -> dict[str, Any]:
        """Every figure with its 95% interval over images, n, N and K; and the per-image records."""
        n, out = len(self.labels), {}
        for name, values in self.per_image().items():
            if name == "mean":
                interval = bootstrap_interval(values)
                out[name] = {"accuracy": float(values.mean()), "interval": interval.to_dict(), "n": n,
                             "n_draws": self.n_draws}
            else:
                k = int(values.sum())
                out[name] = {"accuracy": k / n, "interval": wilson_interval(k, n).to_dict(), "n": n}
        out["worst_case"]["n_draws"] = self.n_draws
        out["majority_vote"]["vote"] = self.vote
        out["test_seeds"] = list(self.seeds)
        out["predictions"] = self.predictions.tolist()
        return out


def draw_predictions(purifier: Any, predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, seed: int, n: int,
                     sample_ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, list[int]]:
    """
    Labels of ``x`` under the ``n`` named test draws of base seed ``seed``: the one rule of every test over draws.

    Row ``r`` of draw ``j`` is purified under base seed ``evaluation_draw_seeds(seed, n)[j]`` and sample id
    ``sample_ids[r]``, so a sample's predictions depend on its own id and image only, never on the batch, its
    position in it or the other rows.

    :param purifier: the :class:`~art_diffpure.DiffusionPurifier` whose randomness the draws fix.
    :param predict: images in, predicted labels out; every purification it runs draws under the current draw.
    :return: the ``(n, len(x))`` labels and the draws' base seeds.
    """
    seeds = evaluation_draw_seeds(seed, n)
    ids = np.asarray(sample_ids, dtype=np.int64)
    predictions = []
    for s in seeds:
        with purifier.randomness(s, ids):
            predictions.append(np.asarray(predict(x)))
    return np.stack(predictions), seeds


def evaluate_draws(classifier: Any, x: np.ndarray, y: Any, seed: int = 0, n_draws: int = 10, vote: int = 10,
                   sample_ids: Sequence[int] | None = None, batch_size: int = 128) -> DrawEvaluation:
    """
    Predict ``x`` under ``max(n_draws, vote)`` named test draws of the purifier and judge it (see the module).

    :param classifier: an ART classifier with a :class:`~art_diffpure.DiffusionPurifier`.
    :param y: true labels (indices or one-hot).
    :param seed: base seed of the test draws.
    :param sample_ids: the sample id of each row (default its position): the draws are per sample, so a
        sample's figures do not depend on the batch it is evaluated in.
    """
    for name, value in (("n_draws", n_draws), ("vote", vote)):
        check_int(value, name, 1)
    purifier = find_purifier(classifier, required=True)
    x = np.ascontiguousarray(x)
    labels = index_labels(y, classifier.nb_classes)
    ids = np.arange(len(x)) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64)
    predictions, seeds = draw_predictions(
        purifier, lambda v: np.argmax(classifier.predict(v, batch_size=batch_size), axis=1), x, seed,
        max(n_draws, vote), ids)
    return DrawEvaluation(predictions, labels, seeds, int(n_draws), int(vote))


__all__ = ["DrawEvaluation", "draw_predictions", "evaluate_draws"]
