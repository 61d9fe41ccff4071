"""Fréchet distance between feature distributions (an FID with any feature extractor)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from art_diffpure._utils import check_int
from art_diffpure.metrics._common import _as_numpy

__all__ = ["feature_fid", "feature_fid_from_model"]


def feature_fid(features_a: Any, features_b: Any) -> float:
    """
    Fréchet distance between Gaussians fitted to two feature sets (the FID of Heusel et al. 2017 with
    any feature extractor, e.g. a classifier's penultimate layer, since Inception weights may be
    unavailable): ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})``, covariances with ddof=1.

    :param features_a: ``(n_a, d)`` features (higher-rank arrays are flattened per row).
    :param features_b: ``(n_b, d)``.
    """
    from scipy import linalg

    a, _ = _as_numpy(features_a, "features_a")
    b, _ = _as_numpy(features_b, "features_b")
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"Feature dimensions differ: {a.shape[1]} and {b.shape[1]}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("feature_fid needs at least 2 samples per set")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():  # near-singular product: regularise as pytorch-fid does
        offset = np.eye(len(s_a)) * 1e-6
        covmean = linalg.sqrtm((s_a + offset) @ (s_b + offset))
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    return float(max(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean), 0.0))


def _model_features(model_features_fn: Callable, x: Any, name: str, batch_size: int) -> np.ndarray:
    """``(n, d)`` float64 features of images ``x`` in calls of ``batch_size``, under ``torch.no_grad``."""
    import torch

    x_np, template = _as_numpy(x, name)
    device = template.device if template is not None else "cpu"
    outs = []
    with torch.no_grad():
        for start in range(0, len(x_np), batch_size):
            f = model_features_fn(torch.from_numpy(np.ascontiguousarray(x_np[start:start + batch_size])).to(device))
            f = f.detach().cpu().numpy() if hasattr(f, "detach") else np.asarray(f)
            outs.append(f.reshape(len(f), -1).astype(np.float64))
    return np.concatenate(outs)


def feature_fid_from_model(model_features_fn: Callable, x_a: Any, x_b: Any, batch_size: int = 256) -> float:
    """
    :func:`feature_fid` of ``model_features_fn`` applied to two image sets, under ``torch.no_grad``.

    :param model_features_fn: callable taking a float torch tensor batch (e.g. a module returning the
        classifier's penultimate features) and returning a tensor or array ``(batch, ...)``.
    :param x_a: images ``(n_a, ...)``, numpy or torch.
    :param x_b: images ``(n_b, ...)``.
    :param batch_size: images per call.
    """
    batch_size = check_int(batch_size, "batch_size", 1)
    return feature_fid(_model_features(model_features_fn, x_a, "x_a", batch_size),
                       _model_features(model_features_fn, x_b, "x_b", batch_size))
