"""The compression law of Fig. 3b: a sigmoid fit of robust accuracy against compression rate."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from art_diffpure.metrics._common import _Result

__all__ = ["LAW_MODELS", "CompressionLawFit", "fit_compression_law"]

LAW_MODELS = ("logistic4", "logistic3")


@dataclass
class CompressionLawFit(_Result):
    """
    Sigmoid fit of robust accuracy against compression rate (Fig. 3b):
    ``acc(c) = b + a / (1 + exp(k (c - c0)))`` (``logistic4``) or with ``b = 0`` (``logistic3``).
    ``k > 0`` means accuracy falls as the compression rate grows; ``predict(0)`` extrapolates to
    (approximately) clean accuracy.
    """

    model: str
    params: dict[str, float]
    r2: float
    n_points: int

    def predict(self, compression_rate: float | Sequence[float] | np.ndarray) -> float | np.ndarray:
        """Predicted robust accuracy at ``compression_rate`` (scalar in, float out)."""
        c = np.asarray(compression_rate, dtype=np.float64)
        out = _logistic(c, self.params["a"], self.params["k"], self.params["c0"], self.params.get("b", 0.0))
        return float(out) if out.ndim == 0 else out


def _logistic(c: np.ndarray, a: float, k: float, c0: float, b: float = 0.0) -> np.ndarray:
    from scipy.special import expit

    return b + a * expit(-k * (np.asarray(c, dtype=np.float64) - c0))


def fit_compression_law(
    compression_rates: Sequence[float] | np.ndarray,
    robust_accuracies: Sequence[float] | np.ndarray,
    model: str = "logistic4",
    p0: Sequence[float] | None = None,
) -> CompressionLawFit:
    """
    Fit the sigmoid law of Fig. 3b, robust accuracy against compression rate, by least squares
    (``scipy.optimize.curve_fit``):

        logistic4: acc(c) = b + a / (1 + exp(k (c - c0)))     (4 parameters: a, k, c0, b)
        logistic3: acc(c) = a / (1 + exp(k (c - c0)))         (b = 0: accuracy vanishes without compression)

    :param compression_rates: compression rate of each configuration.
    :param robust_accuracies: its aligned (fixed-randomness) robust accuracy, any consistent unit.
    :param model: ``"logistic4"`` or ``"logistic3"``.
    :param p0: optional initial ``(a, k, c0[, b])``.
    :return: parameters, R^2 and ``predict(c)``.
    """
    from scipy.optimize import curve_fit

    if model not in LAW_MODELS:
        raise ValueError(f"Unknown model {model!r}; expected one of {LAW_MODELS}")
    c = np.asarray(compression_rates, dtype=np.float64).reshape(-1)
    y = np.asarray(robust_accuracies, dtype=np.float64).reshape(-1)
    if c.shape != y.shape:
        raise ValueError(f"Got {c.size} compression rates and {y.size} accuracies")
    n_params = 4 if model == "logistic4" else 3
    if c.size < n_params:
        raise ValueError(f"{model} needs at least {n_params} points, got {c.size}")
    if not (np.isfinite(c).all() and np.isfinite(y).all()):
        raise ValueError("compression_rates and robust_accuracies must be finite")
    if p0 is None:
        span = max(float(np.ptp(c)), 1e-12)
        p0 = [max(float(np.ptp(y)), 1e-3), 8.0 / span, float(np.median(c))]
        p0 += [float(y.min())] if n_params == 4 else []
    if len(p0) != n_params:
        raise ValueError(f"p0 must have {n_params} values for {model}")
    fn = _logistic if n_params == 4 else (lambda cc, a, k, c0: _logistic(cc, a, k, c0, 0.0))
    params, _ = curve_fit(fn, c, y, p0=list(p0), maxfev=20000)
    pred = fn(c, *params)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    names = ["a", "k", "c0", "b"][:n_params]
    return CompressionLawFit(model, {nm: float(v) for nm, v in zip(names, params)}, r2, int(c.size))

