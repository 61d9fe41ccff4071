"""
Table 5 of the paper: how similar attacks (or loss gradients) are under two independent randomness configurations.

- :func:`perturbation_correlation`: per-sample Pearson correlation between two adversarial perturbations, e.g.
  PGD run under two fixed configurations xi_a and xi_b;
- :func:`gradient_correlation`: the same for loss gradients of an ART classifier with a
  :class:`~art_diffpure.DiffusionPurifier`: under xi_a vs xi_b, and EOT (over ``eot_seeds(seed_b, K)``) vs xi_a.

The gradients are those :class:`~art_diffpure.RandomnessAlignedAttack` hands its inner attack: the purifier runs
under a :class:`~art_diffpure.randomness.RandomnessControl` of base seeds ``eot_seeds(seed, K)``, each row under
its sample id, and the K copies' gradients are averaged in one batched pass.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from art_diffpure._utils import one_hot
from art_diffpure.purifier import find_purifier
from art_diffpure.randomness import RandomnessControl, RandomnessEscapeError, eot_seeds

if TYPE_CHECKING:  # pragma: no cover
    from art.estimators.classification import PyTorchClassifier


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (NaN where one row is constant)."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def _summary(r: np.ndarray) -> dict[str, Any]:
    return {"mean": float(np.nanmean(r)), "std": float(np.nanstd(r)), "per_sample": [float(v) for v in r]}


def perturbation_correlation(x: np.ndarray, x_adv_a: np.ndarray, x_adv_b: np.ndarray) -> dict[str, Any]:
    """
    Pearson correlation, per sample, between two adversarial perturbations ``x_adv_a - x`` and ``x_adv_b - x``
    (Table 5: e.g. PGD under two fixed configurations). Returns ``{"mean", "std", "per_sample"}`` (NaN for a
    zero perturbation, ignored in mean and std).
    """
    return _summary(_pearson_rows(np.asarray(x_adv_a) - x, np.asarray(x_adv_b) - x))


def _loss_gradients(classifier: "PyTorchClassifier", x: np.ndarray, y: np.ndarray, seed: int, eot_samples: int,
                    sample_ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Loss gradients of ``classifier`` at ``x``, averaged over the configurations ``eot_seeds(seed, K)``."""
    purifier = find_purifier(classifier, required=True)
    y_onehot = one_hot(y, classifier.nb_classes)
    out = []
    for a in range(0, len(x), batch_size):
        sl = slice(a, a + batch_size)
        # ART's loss_gradient purifies exactly these rows, in order: they are identified by position.
        control = RandomnessControl(eot_seeds(seed, eot_samples), eot_samples, positional=True)
        control.set_batch(x[sl], sample_ids[sl])
        with purifier.controlled(control):
            out.append(classifier.loss_gradient(x[sl], y_onehot[sl]))
        if not control.audit.ok:
            raise RandomnessEscapeError(f"Gradient rows ran under unintended randomness: {control.audit.to_dict()}")
    return np.concatenate(out)


def gradient_correlation(
    classifier: "PyTorchClassifier",
    x: np.ndarray,
    y: np.ndarray,
    seed_a: int = 0,
    seed_b: int = 1,
    eot_samples: int = 0,
    sample_ids: Any = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """
    Mean (over samples) Pearson correlation between loss gradients under two independent fixed
    configurations xi_a (base seed ``seed_a``) and xi_b (``seed_b``), and, if ``eot_samples > 0``, between the
    EOT gradient (average over ``eot_samples`` configurations ``eot_seeds(seed_b, K)``) and the fixed xi_a
    gradient (Table 5, with gradients in place of PGD perturbations).

    :param classifier: an ART ``PyTorchClassifier`` with a :class:`~art_diffpure.DiffusionPurifier` among its
        ``preprocessing_defences``.
    :param y: labels (indices or one-hot).
    :param sample_ids: per-sample ids (default ``arange(n)``).
    :param batch_size: samples per gradient call.
    :return: ``{"seed_a", "seed_b", "eot_samples", "fixed_vs_fixed": {"mean", "std", "per_sample"},
        "eot_vs_fixed": {...} or None}``.
    """
    if seed_a == seed_b:
        raise ValueError("seed_a and seed_b must differ (independent configurations)")
    x = np.asarray(x)
    ids = np.arange(len(x), dtype=np.int64) if sample_ids is None else np.asarray(sample_ids, np.int64).reshape(-1)
    if len(ids) != len(x):
        raise ValueError(f"Got {len(ids)} sample_ids for {len(x)} samples")

    def grad(seed: int, k: int) -> np.ndarray:
        return _loss_gradients(classifier, x, np.asarray(y), seed, k, ids, batch_size)

    g_a, g_b = grad(seed_a, 1), grad(seed_b, 1)
    out: dict[str, Any] = {"seed_a": int(seed_a), "seed_b": int(seed_b), "eot_samples": int(eot_samples),
                           "fixed_vs_fixed": _summary(_pearson_rows(g_a, g_b)), "eot_vs_fixed": None}
    if eot_samples > 0:
        out["eot_vs_fixed"] = _summary(_pearson_rows(grad(seed_b, eot_samples), g_a))
    return out


__all__ = ["gradient_correlation", "perturbation_correlation"]
