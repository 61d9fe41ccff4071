"""The samplers' steps: DDPM (forward + reverse, as DiffPure), reverse-only, DDIM (eta = 0).

Timesteps use diffusers' indexing: ``t_star=100`` runs the reverse steps 99, ..., 0. The DDPM step takes its
noise explicitly (so it can be seeded per sample, cached and checkpointed); DDIM is diffusers' own scheduler.
Nothing here knows ART or the purifier's randomness.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["SAMPLERS", "ddim_scheduler", "ddim_stride", "ddpm_step", "reverse_timesteps"]

#: The samplers: DDPM (forward noising, then the reverse chain), reverse-only, DDIM.
SAMPLERS = ("ddpm", "reverse", "ddim")


def ddim_stride(t_star: int, ddim_steps: int | None) -> int:
    """Timesteps skipped per DDIM step: ``ceil(t_star / ddim_steps)`` (``ddim_steps=None``: stride 1)."""
    n = ddim_steps or t_star
    return max(1, math.ceil(t_star / n))


def reverse_timesteps(t_star: int, sampler: str, ddim_steps: int | None = None) -> list[int]:
    """The reverse chain's timesteps, from ``t_star - 1`` down to 0 (strided for DDIM)."""
    stride = ddim_stride(t_star, ddim_steps) if sampler == "ddim" else 1
    return list(range(t_star - 1, -1, -stride))


def ddim_scheduler(scheduler: Any, stride: int) -> Any:
    """A diffusers ``DDIMScheduler`` with the DDPM scheduler's process, stepping ``t -> t - stride``."""
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler.from_config(scheduler.config)
    # set_timesteps(n) makes step() go from t to t - num_train_timesteps // n.
    ddim.set_timesteps(ddim.config.num_train_timesteps // stride)
    return ddim


def ddpm_step(scheduler: Any, model_output: "torch.Tensor", t: int, sample: "torch.Tensor",
              noise: "torch.Tensor" | None) -> "torch.Tensor":
    """
    The DDPM posterior step ``x_t -> x_{t-1}`` of diffusers' ``DDPMScheduler.step`` with the noise
    given explicitly instead of drawn from a generator (so it can be seeded, cached and
    checkpointed). Variances, including learned ones (``2 * C`` output channels with
    ``variance_type="learned_range"``), come from the scheduler's own ``_get_variance``.
    """
    import torch

    config = scheduler.config
    predicted_variance = None
    if model_output.shape[1] == 2 * sample.shape[1] and config.variance_type in ("learned", "learned_range"):
        model_output, predicted_variance = torch.split(model_output, sample.shape[1], dim=1)
    elif model_output.shape[1] != sample.shape[1]:
        raise ValueError(f"Model output has {model_output.shape[1]} channels for a {sample.shape[1]}-channel sample "
                         f"(variance_type={config.variance_type!r})")
    # Coefficients in the scheduler's own precision (float32), exactly as diffusers computes them.
    acp = scheduler.alphas_cumprod
    alpha_prod_t = acp[t]
    alpha_prod_prev = acp[t - 1] if t > 0 else torch.tensor(1.0)
    beta_prod_t, beta_prod_prev = 1 - alpha_prod_t, 1 - alpha_prod_prev
    current_alpha = alpha_prod_t / alpha_prod_prev
    current_beta = 1 - current_alpha
    sqrt_beta_t, sqrt_alpha_t = float(beta_prod_t**0.5), float(alpha_prod_t**0.5)
    c_x0 = float(alpha_prod_prev**0.5 * current_beta / beta_prod_t)
    c_xt = float(current_alpha**0.5 * beta_prod_prev / beta_prod_t)

    pred_x0 = (sample - sqrt_beta_t * model_output) / sqrt_alpha_t
    if getattr(config, "thresholding", False):
        pred_x0 = scheduler._threshold_sample(pred_x0)
    elif config.clip_sample:
        pred_x0 = pred_x0.clamp(-config.clip_sample_range, config.clip_sample_range)
    prev = c_x0 * pred_x0 + c_xt * sample
    if t == 0:
        return prev
    variance = scheduler._get_variance(t, predicted_variance=predicted_variance)
    if config.variance_type in ("fixed_small_log",):
        std = variance
    elif config.variance_type == "learned_range":
        std = torch.exp(0.5 * variance)
    else:
        std = variance**0.5
    if isinstance(std, torch.Tensor) and std.ndim == 0:
        std = float(std)
    return prev + std * noise
