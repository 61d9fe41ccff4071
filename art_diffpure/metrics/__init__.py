"""Metrics of Liu & Wei (2025), "How Do Diffusion Models Improve Adversarial Robustness?" (arXiv 2505.22839).

Every metric takes a *purifier*: anything with a method ``purify(x, seed=..., sample_ids=...)``
mapping a batch to a batch of the same shape (e.g. :class:`art_diffpure.DiffusionPurifier`, or an
analytic function for testing). Its internal randomness xi is fixed by a base seed ``s`` (an int)
and each row's sample id: for image ``i`` every perturbed copy is purified with sample id ``i``'s
id and the same seed, i.e. under the same xi. The ``n_seeds`` configurations of the neighbourhood
metrics are those of an EOT attack of base seed ``seed``: base seeds
``art_diffpure.randomness.eot_seeds(seed, n_seeds)`` (``seed + 7919 k``).

Norms are spelled as in ART: ``2`` and ``np.inf`` (the strings of :func:`art_diffpure._utils.parse_norm` are
accepted too); results are always keyed by :func:`art_diffpure._utils.norm_label` (:data:`NORMS`: l2, linf).

Images ``x0`` may be numpy arrays or torch tensors (the purifier then receives the same type);
all statistics are computed in float64 numpy and returned in small dataclasses whose ``to_dict()``
gives plain, JSON-serialisable python lists and floats (NaN becomes ``None``). Gradient-free metrics
run under ``torch.no_grad`` and stack the neighbourhood samples of several images into purify calls
of ``batch_size`` rows. Dataset-level ``std`` values are population standard deviations (ddof=0)
over the per-image values.

Neighbourhoods are uniform samples of the l_inf ball of radius ``eps`` around ``x0`` (the paper's
"uniform noise" perturbations), clipped to the purifier's ``clip_values`` (default ``(0, 1)``),
drawn from ``numpy.random.default_rng(rng_seed)`` (never the global RNG).

Modules, one per metric family: :mod:`~art_diffpure.metrics.compression` (compression rate, rankings),
:mod:`~art_diffpure.metrics.neighbourhood` (variance decomposition / SNR, centroids, direction
correlations), :mod:`~art_diffpure.metrics.trajectory` (trajectory distances, SSIM),
:mod:`~art_diffpure.metrics.fid` (feature FID), :mod:`~art_diffpure.metrics.jacobian` (Jacobian
spectrum) and :mod:`~art_diffpure.metrics.law` (the compression law fit).
"""
from __future__ import annotations

import logging

from art_diffpure.metrics._common import NORMS
from art_diffpure.metrics.compression import (
    CompressionResult, RankingEntry, RankingResult, compression_rate, rank_by_compression,
)
from art_diffpure.metrics.correlation import gradient_correlation, perturbation_correlation
from art_diffpure.metrics.fid import feature_fid, feature_fid_from_model
from art_diffpure.metrics.jacobian import JACOBIAN_BACKENDS, JACOBIAN_METHODS, JacobianResult, jacobian_spectrum
from art_diffpure.metrics.law import LAW_MODELS, CompressionLawFit, fit_compression_law
from art_diffpure.metrics.neighbourhood import (
    CentroidResult, CorrelationResult, NeighbourhoodDesign, NeighbourhoodResult, VarianceResult, centroid_distances,
    direction_correlations, neighbourhood_analysis, variance_decomposition,
)
from art_diffpure.metrics.trajectory import TrajectoryResult, ssim, trajectory_distances

#: Parent of the submodules' loggers (``art_diffpure.metrics.compression``, ...).
logger = logging.getLogger(__name__)

__all__ = [
    "JACOBIAN_BACKENDS", "JACOBIAN_METHODS", "LAW_MODELS", "NORMS",
    "CentroidResult", "CompressionLawFit", "CompressionResult", "CorrelationResult", "JacobianResult",
    "NeighbourhoodDesign",
    "NeighbourhoodDesign", "NeighbourhoodResult", "RankingEntry", "RankingResult", "TrajectoryResult", "VarianceResult",
    "centroid_distances", "compression_rate", "direction_correlations", "feature_fid", "feature_fid_from_model",
    "fit_compression_law", "gradient_correlation", "jacobian_spectrum", "neighbourhood_analysis",
    "perturbation_correlation", "rank_by_compression", "ssim",
    "trajectory_distances", "variance_decomposition",
]
