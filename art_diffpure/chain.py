"""The purification chain of :class:`~art_diffpure.DiffusionPurifier`: the checks of its settings and of a call's
input, the input's mapping to the model's space [-1, 1] and back, the call's internal batches, and per batch the
forward noising to ``t_star`` and the reverse steps (checkpointed as configured).

:class:`PurificationChain` is a mixin of the purifier: its methods read the purifier's settings (``model``,
``scheduler``, ``t_star``, ``sampler``, ...) and ask it for the noise of each internal batch (``_noise``, decided by
its :class:`~art_diffpure.noise.PurifierNoise`).
"""
from __future__ import annotations

import logging
import math
import operator
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from art_diffpure import checkpointing, determinism, samplers
from art_diffpure._utils import check_int
from art_diffpure.randomness import StepNoise
from art_diffpure.samplers import SAMPLERS

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger("art_diffpure.purifier")  # the purifier's warnings keep their logger

GRADIENTS = ("full", "bpda")
FORWARD_NOISING = ("one_shot", "multistep")


class TrajectoryStates:
    """
    The states of one internal batch's chain that a call returns, in chain order: all of them, or only those at
    the trajectory indices ``keep``. A state not kept is not referenced here, so under checkpointing a
    differentiable call holds it only as the input a checkpoint saves, never in a second copy (the stacked
    result) nor in that copy's gradient during the backward pass.
    """

    def __init__(self, first: "torch.Tensor", keep: Sequence[int] | None = None) -> None:
        """:param first: the state at index 0 (the input in model space)."""
        self.keep = None if keep is None else frozenset(keep)
        self.states: list["torch.Tensor"] = []
        self.count = 0
        self.append(first)

    def append(self, state: "torch.Tensor") -> None:
        """Record the state at the next trajectory index (kept only if asked for)."""
        if self.keep is None or self.count in self.keep:
            self.states.append(state)
        self.count += 1

    def stacked(self) -> "torch.Tensor":
        """The kept states, shape ``(kept, n, C, H, W)``."""
        import torch

        return torch.stack(self.states)


class PurificationChain:
    """The chain of a :class:`~art_diffpure.DiffusionPurifier` (a mixin: see the module's docstring)."""

    def _purify_tensor(self, x: "torch.Tensor", seed, sample_ids, return_trajectory: bool, fresh: bool = False,
                       out_dtype: "torch.dtype | None" = None, raw_trajectory: bool = False,
                       trajectory_steps: Sequence[int] | None = None):
        """Purify ``x``; ``fresh`` forces fresh noise (a control's stochastic mode), whatever the seeds say;
        ``trajectory_steps``: the trajectory indices to return (default: all states)."""
        import torch

        self._validate_input(x)
        keep = self._trajectory_indices(return_trajectory, trajectory_steps)
        self._check_device(x)
        n = x.shape[0]
        rows = None if fresh else self._row_randomness(n, seed, sample_ids)
        lo, hi = self.clip_values
        z = x if self.channels_first else x.permute(0, 3, 1, 2)
        z = z.to(device=self.device, dtype=self._chain_dtype(x))
        if not self.strict:
            # As ART's preprocessors: attacks may query slightly outside the box. Not z.clamp(lo, hi): its gradient
            # is zero AT the bounds, and images have many pixels exactly at 0 or 1 (a masked gradient).
            outside = (z < lo) | (z > hi)
            if bool(outside.any()):
                z = torch.where(outside, z.clamp(lo, hi), z)
        z = (z - lo) * (2.0 / (hi - lo)) - 1.0

        # Deterministic mode also covers the backward pass, which ART runs after this call has returned: identity
        # nodes around the chain set the flags when the backward pass enters it and restore them when it leaves.
        boundary = self.deterministic and torch.is_grad_enabled() and z.requires_grad
        saved_flags: list = []
        if boundary:
            z = determinism.FlagsBoundary.apply(z, saved_flags, False)
        cache = self._randomness.cache
        call = cache.position[0] + 1
        outs, trajs = [], []
        with determinism.deterministic_flags(self.deterministic):
            starts = range(0, n, self.batch_size)
            for start in tqdm(starts, desc="Purifying", disable=not self.verbose or len(starts) < 2):
                stop = min(start + self.batch_size, n)
                sub = None if rows is None else (rows[0][start:stop], rows[1][start:stop])
                cache.position = (call, start)
                out, traj = self._chain(z[start:stop], sub, return_trajectory, call_rows=n, first_batch=start == 0,
                                        keep=keep)
                outs.append(out)
                trajs.append(traj)
        out = torch.cat(outs) if len(outs) > 1 else outs[0]
        if boundary:
            out = determinism.FlagsBoundary.apply(out, saved_flags, True)

        def to_input_space(v):
            v = (v.clamp(-1.0, 1.0) + 1.0) * ((hi - lo) / 2.0) + lo
            v = v if self.channels_first else v.movedim(-3, -1)
            return v.to(device=x.device, dtype=out_dtype or x.dtype)

        trajectory = None
        if return_trajectory:
            trajectory = torch.cat(trajs, dim=1) if len(trajs) > 1 else trajs[0]
            trajectory = trajectory if raw_trajectory else to_input_space(trajectory)
        return to_input_space(out), trajectory

    def _chain(self, z: "torch.Tensor", rows, return_trajectory: bool, call_rows: int | None = None,
               first_batch: bool = True, keep: Sequence[int] | None = None):
        """Purify one internal batch ``z`` in model space [-1, 1] (one of the internal batches of a call of
        ``call_rows`` rows, whose graphs all live until the backward pass; ``checkpoint="auto"`` decides on the
        call's first batch); with ``return_trajectory``, the states at the trajectory indices ``keep`` (all if
        ``None``)."""
        import torch

        shape = tuple(z.shape[1:])
        t_top = self.t_star - 1
        trajectory = TrajectoryStates(z, keep) if return_trajectory else None

        # 1. Forward noising (aligned noise is drawn once per batch and cached in host memory).
        if self.sampler == "reverse":
            x_t = z
        elif self.forward_noising == "one_shot":
            eps = self._noise(rows, z.shape[0], [t_top], shape, reverse=False, like=z)(0)
            x_t = self._add_noise(z, eps, t_top)
        else:
            source = self._noise(rows, z.shape[0], list(range(self.t_star)), shape, reverse=False, like=z)
            betas = self._cpu_scheduler.betas
            x_t = z
            for t in range(self.t_star):
                beta = float(betas[t])
                x_t = math.sqrt(1.0 - beta) * x_t + math.sqrt(beta) * source(t)
                if return_trajectory:
                    trajectory.append(x_t)
        if return_trajectory and self.forward_noising == "one_shot" and self.sampler != "reverse":
            trajectory.append(x_t)

        # 2. Reverse chain. Each step draws its own noise inside it (see StepNoise).
        steps = self._reverse_timesteps()
        noiseless = self.sampler == "ddim" and self.ddim_eta == 0
        noise = None if noiseless else self._noise(rows, z.shape[0], steps, shape, reverse=True, like=z)
        differentiable = torch.is_grad_enabled() and x_t.requires_grad
        use_checkpoint = differentiable and self.checkpoint is True
        if differentiable and self.checkpoint == "auto" and not first_batch:
            use_checkpoint = self._call_checkpoint  # decided once per call, on its first internal batch
        for k in tqdm(range(len(steps)), desc="Reverse steps", disable=not self.verbose, leave=False):
            if differentiable and k == 0 and self.checkpoint == "auto" and first_batch:
                # Run the first step plainly, measure what its graph keeps, and decide for the whole call.
                step_bytes, x_t = self._graph_bytes(self._drawn_step, x_t, steps[k], noise, k)
                whole_call = step_bytes * len(steps) * (call_rows or z.shape[0]) / z.shape[0]
                use_checkpoint = self._call_checkpoint = whole_call > self._checkpoint_budget(x_t.device)
            elif use_checkpoint:
                from torch.utils.checkpoint import checkpoint

                # No generator state inside the checkpointed region: the step's noise is a function of k, so the
                # recomputation is exact.
                x_t = checkpoint(self._drawn_step, x_t, steps[k], noise, k, use_reentrant=False,
                                 preserve_rng_state=False)
            else:
                x_t = self._drawn_step(x_t, steps[k], noise, k)
            if return_trajectory:
                trajectory.append(x_t)
        if differentiable:
            self.last_checkpointed = use_checkpoint
        return x_t, (trajectory.stacked() if return_trajectory else None)

    def _trajectory_indices(self, return_trajectory: bool, trajectory_steps: Sequence[int] | None) -> list[int] | None:
        """``trajectory_steps`` checked: increasing indices into :meth:`trajectory_timesteps`, at least one."""
        if trajectory_steps is None:
            return None
        if not return_trajectory:
            raise ValueError("trajectory_steps selects states of the trajectory: it needs return_trajectory=True")
        length = len(self.trajectory_timesteps())
        try:
            steps = [operator.index(k) for k in trajectory_steps]
        except TypeError:
            steps = []
        if not steps or steps[0] < 0 or steps[-1] >= length or any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"trajectory_steps must be increasing integer indices in [0, {length}) of the "
                             f"trajectory (see trajectory_timesteps()), at least one; got {trajectory_steps!r}")
        return steps

    def _add_noise(self, z: "torch.Tensor", eps: "torch.Tensor", t: int) -> "torch.Tensor":
        """
        One-shot forward noising to timestep ``t``: diffusers' ``add_noise`` (the same float32 products, so the
        same bits) computed from the CPU copy of the schedule, in the chain's precision. The user's scheduler is
        not called: its ``add_noise`` would move its ``alphas_cumprod`` to z's device.
        """
        abar = self._cpu_scheduler.alphas_cumprod[t].to(z.dtype)
        return float(abar**0.5) * z + float((1 - abar) ** 0.5) * eps

    def _drawn_step(self, x_t: "torch.Tensor", t: int, noise: "StepNoise | None", k: int) -> "torch.Tensor":
        """Reverse step ``k`` (timestep ``t``) with its noise drawn inside the step, so that a checkpointed step keeps
        no device copy of it."""
        return self._reverse_step(x_t, t, None if noise is None else noise(k))

    def _graph_bytes(self, fn: Callable, *args) -> tuple[int, Any]:
        """Bytes the autograd graph of ``fn(*args)`` saves beyond the frozen weights and ``args[1:]`` (the noise)."""
        return checkpointing.graph_bytes(self.model, fn, *args)

    def _checkpoint_budget(self, device: "torch.device") -> int:
        """Bytes the un-checkpointed chain may keep (see :func:`checkpointing.memory_budget`)."""
        return checkpointing.memory_budget(device, self.checkpoint_budget_bytes)

    def _reverse_timesteps(self) -> list[int]:
        return samplers.reverse_timesteps(self.t_star, self.sampler, self.ddim_steps)

    def _eps(self, x_t: "torch.Tensor", t: int) -> "torch.Tensor":
        """The model's output at ``x_t``, in the chain's dtype: only the UNet's input and output take its precision."""
        import torch

        t_vec = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
        weights = self._weights_dtype()
        out = self.model(x_t if weights is None else x_t.to(weights), t_vec)
        out = out.sample if hasattr(out, "sample") else out
        return out.to(x_t.dtype)

    def _reverse_step(self, x_t: "torch.Tensor", t: int, noise: "torch.Tensor" | None) -> "torch.Tensor":
        """One reverse step ``t -> t-1`` (DDPM) or ``t -> t-stride`` (DDIM), noise given explicitly."""
        model_output = self._eps(x_t, t)
        if self.sampler == "ddim":
            ddim = self._ddim_scheduler()
            eps = model_output[:, : x_t.shape[1]]  # learned-variance models: DDIM uses eps only
            return ddim.step(eps, t, x_t, eta=float(self.ddim_eta), variance_noise=noise).prev_sample
        return samplers.ddpm_step(self._cpu_scheduler, model_output, t, x_t, noise)

    def _ddim_scheduler(self):
        key = (id(self.scheduler), samplers.ddim_stride(self.t_star, self.ddim_steps))
        cached = getattr(self, "_ddim_cache", None)
        if cached is None or cached[0] != key:
            self._ddim_cache = (key, samplers.ddim_scheduler(self.scheduler, key[1]))
        return self._ddim_cache[1]

    def _weights_dtype(self) -> "torch.dtype | None":
        """The floating-point dtype of the model's weights (``None`` for a plain callable or a weightless module)."""
        import torch

        if isinstance(self.model, torch.nn.Module):
            for p in self.model.parameters():
                if p.is_floating_point():
                    return p.dtype
        return None

    def _chain_dtype(self, x: "torch.Tensor") -> "torch.dtype":
        """
        Precision of the chain state, noise and coefficients: the weights' (else the input's) dtype, but float32 in
        place of float16/bfloat16. A hundred steps of half-precision rounding (and half-precision gradients, with
        no GradScaler in ART) would be a different purifier; the UNet itself still runs in its own precision.
        """
        import torch

        dtype = self._weights_dtype() or x.dtype
        return dtype if dtype in (torch.float32, torch.float64) else torch.float32

    def _check_device(self, x: "torch.Tensor") -> None:
        """Warn once when inputs come from another device than the purifier's (e.g. a CPU purifier inside a GPU
        classifier): it works, but every call copies the batch over and runs the whole chain there."""
        if x.device == self.device or self._warned_device:
            return
        self._warned_device = True
        hint = ("device_type='gpu' (after torch.cuda.set_device({}) if that is not the current device)".format(
            x.device.index) if x.device.type == "cuda" else "device_type='cpu'")
        logger.warning("DiffusionPurifier runs on %s but receives inputs on %s (a classifier on another device?): "
                       "every call copies the batch to %s, purifies it there and copies it back. Build the purifier "
                       "with %s to run it where its inputs are.", self.device, x.device, self.device, hint)

    def _validate_input(self, x: "torch.Tensor") -> None:
        import torch

        if not isinstance(x, torch.Tensor):
            raise ValueError(f"Expected a numpy array or torch tensor, got {type(x).__name__}")
        if x.ndim != 4:
            layout = "NCHW" if self.channels_first else "NHWC"
            raise ValueError(f"Expected a 4-D {layout} batch, got shape {tuple(x.shape)} (rank {x.ndim})")
        if not x.is_floating_point():
            raise ValueError(f"Expected a floating-point input, got dtype {x.dtype}")
        if x.shape[0] == 0:
            raise ValueError("Got an empty batch")
        channels = x.shape[1] if self.channels_first else x.shape[3]
        spatial = tuple(x.shape[2:]) if self.channels_first else tuple(x.shape[1:3])
        config = getattr(self.model, "config", None)
        expected_c = getattr(config, "in_channels", None)
        if expected_c is not None and channels != expected_c:
            raise ValueError(f"The model takes {expected_c} channels, the input has {channels} (shape {tuple(x.shape)}, "
                             f"channels_first={self.channels_first})")
        size = getattr(config, "sample_size", None)
        if size is not None:
            size = (size, size) if isinstance(size, int) else tuple(size)
            if spatial != size:
                raise ValueError(f"The model takes {size[0]}x{size[1]} images, the input is {spatial[0]}x{spatial[1]}")
        if not bool(torch.isfinite(x.detach()).all()):
            if self.strict:
                raise ValueError("The input contains NaN or inf values")
            # The undefended classifier would take them too (ART's Wasserstein attack produces NaN rows): pass them
            # through. GroupNorm and convolutions act per sample, so other rows are unaffected.
            if not getattr(self, "_warned_nonfinite", False):
                logger.warning("The input contains NaN or inf values; they propagate to the output (strict=True raises)")
                self._warned_nonfinite = True
        if not self.strict:
            return
        lo, hi = self.clip_values
        tol = 1e-5 * (hi - lo)
        x_min, x_max = float(x.detach().min()), float(x.detach().max())
        if x_min < lo - tol or x_max > hi + tol:
            raise ValueError(f"Input values [{x_min:.4g}, {x_max:.4g}] lie outside clip_values {self.clip_values}")

    def _check_params(self) -> None:
        num_train = getattr(getattr(self.scheduler, "config", None), "num_train_timesteps", None)
        if num_train is None or not hasattr(self.scheduler, "alphas_cumprod"):
            raise ValueError("scheduler must be a diffusers DDPMScheduler-like object with a config and alphas_cumprod")
        check_int(self.t_star, "t_star", 1, num_train)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"Unknown sampler {self.sampler!r}; expected one of {SAMPLERS}")
        if self.gradient not in GRADIENTS:
            raise ValueError(f"Unknown gradient mode {self.gradient!r}; expected one of {GRADIENTS}")
        if self.forward_noising not in FORWARD_NOISING:
            raise ValueError(f"Unknown forward_noising {self.forward_noising!r}; expected one of {FORWARD_NOISING}")
        if self.seed is not None:  # None: fresh noise
            check_int(self.seed, "seed", 0)
        if self.checkpoint not in (True, False, "auto"):
            raise ValueError(f"checkpoint must be True, False or 'auto', got {self.checkpoint!r}")
        if self.checkpoint_budget_bytes is not None:  # None: the default budget
            check_int(self.checkpoint_budget_bytes, "checkpoint_budget_bytes", 0)
        check_int(self.batch_size, "batch_size", 1)
        if len(self.clip_values) != 2 or not self.clip_values[0] < self.clip_values[1]:
            raise ValueError(f"clip_values must be (min, max) with min < max, got {self.clip_values!r}")
        if not np.isscalar(self.ddim_eta) or not 0.0 <= float(self.ddim_eta) <= 1.0:
            raise ValueError(f"ddim_eta must be a number in [0, 1], got {self.ddim_eta!r}")
        if self.ddim_steps is not None:  # None: t_star steps
            check_int(self.ddim_steps, "ddim_steps", 1, self.t_star)
        prediction = getattr(self.scheduler.config, "prediction_type", "epsilon")
        if prediction != "epsilon":
            raise ValueError(f"Only epsilon-prediction models are supported, the scheduler says {prediction!r}")
        if not isinstance(self.strict, bool):
            raise ValueError(f"strict must be a bool, got {self.strict!r}")
        if not isinstance(self.deterministic, bool):
            raise ValueError(f"deterministic must be a bool, got {self.deterministic!r}")
        if not callable(self.model):
            raise ValueError("model must be a torch module or a callable (x_t, t) -> eps")


__all__ = ["FORWARD_NOISING", "GRADIENTS", "PurificationChain"]
