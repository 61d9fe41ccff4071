"""Diffusion purification (DiffPure) as an ART PyTorch preprocessor, with seed alignment.

| Paper link (DiffPure): https://arxiv.org/abs/2205.07460
| Paper link (randomness alignment, compression): https://arxiv.org/abs/2505.22839

The purifier noises its input to timestep ``t_star`` and denoises it with a pretrained diffusion
model (a diffusers ``UNet2DModel`` or any callable ``(x_t, t) -> eps``). Its internal randomness xi
is either fresh on every call (``seed=None``) or fixed per sample through the seed hash of
:mod:`art_diffpure.randomness`, so that an attack and its test can share xi.

| Please keep in mind the limitations of defences. For details on how to evaluate classifier
  security in general, see https://arxiv.org/abs/1902.06705 ; for stochastic purifiers, evaluate
  with :class:`art_diffpure.RandomnessAlignedAttack`.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import sys
import types
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch

from art_diffpure import determinism, hub, noise
from art_diffpure.chain import FORWARD_NOISING, GRADIENTS, PurificationChain  # noqa: F401 (re-exported)
from art_diffpure.samplers import SAMPLERS  # noqa: F401 (re-exported)
from art_diffpure.noise import (  # noqa: F401 (NOISE_NAMES re-exported)
    NOISE_CACHE_BYTES, NOISE_CACHE_MAX_BYTES, PurifierNoise, noise_cache_budget,
)
from art_diffpure.randomness import RandomnessControl, StepNoise, aligned_noise  # noqa: F401 (re-exported)

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

#: What :meth:`DiffusionPurifier.save_pretrained` writes beside ``unet/`` and ``scheduler/``: the settings that
#: define the defence (not its randomness, device or batch size, which belong to a run).
PURIFIER_CONFIG = "purifier_config.json"
SAVED_SETTINGS = ("t_star", "sampler", "ddim_steps", "ddim_eta", "forward_noising", "gradient", "checkpoint",
                  "clip_values", "channels_first")
#: Names of :mod:`art_diffpure.noise` re-exported here (NOISE_CACHE_BYTES and the rest, kept importable from this
#: module): assigning one of them here (tests patch them) assigns it there, where it is read.
NOISE_NAMES = ("NOISE_CACHE_BYTES", "NOISE_CACHE_MAX_BYTES", "noise_cache_budget", "aligned_noise")


class _PurifierModule(types.ModuleType):
    """This module's type: forwards assignments of :data:`NOISE_NAMES`."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in NOISE_NAMES:
            setattr(noise, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _PurifierModule


class DiffusionPurifier(PurificationChain, PreprocessorPyTorch):
    """
    Diffusion purification: forward noising to ``t_star``, then reverse denoising.

    Samplers:

    - ``"ddpm"``: forward noising to ``t_star``, then ``t_star`` stochastic DDPM reverse steps (DiffPure).
    - ``"reverse"``: no forward noising; the reverse chain starts at ``t_star`` from the input itself.
    - ``"ddim"``: forward noising, then DDIM reverse steps (deterministic with ``ddim_eta=0``, the default).

    Forward noising is one-shot by default (the closed form ``sqrt(abar) x + sqrt(1 - abar) eps``,
    as DiffPure and diffusers' ``add_noise``; its noise uses the seed of forward step ``t_star - 1``);
    ``forward_noising="multistep"`` applies the ``t_star`` Markov steps, each with its own seed.

    Timesteps use diffusers' indexing: ``t_star=100`` noises to timestep index 99 and runs the
    reverse steps 99, ..., 0 (DiffPure's t* = 0.1 on a 1000-step model).

    Devices and precision: the purifier runs on its own device (ART's ``device_type``: ``cuda:<current device>``
    or the CPU); inputs from another device are copied there and back, with a warning on the first call. The chain
    state, the noise and the noising coefficients are float32 (float64 for a float64 model) whatever the UNet's
    precision: with float16/bfloat16 weights or under autocast only the UNet's input and output are cast.
    """

    params = [
        "t_star",
        "sampler",
        "seed",
        "gradient",
        "checkpoint",
        "checkpoint_budget_bytes",
        "batch_size",
        "clip_values",
        "channels_first",
        "forward_noising",
        "ddim_steps",
        "ddim_eta",
        "strict",
        "deterministic",
        "verbose",
    ]

    def __init__(
        self,
        model: "torch.nn.Module" | Callable,
        scheduler: Any,
        t_star: int = 100,
        sampler: str = "ddpm",
        seed: int | None = None,
        gradient: str = "full",
        checkpoint: bool | str = "auto",
        batch_size: int = 32,
        clip_values: tuple[float, float] = (0.0, 1.0),
        channels_first: bool = True,
        forward_noising: str = "one_shot",
        ddim_steps: int | None = None,
        ddim_eta: float = 0.0,
        generator_seed: int | None = None,
        checkpoint_budget_bytes: int | None = None,
        device_type: str = "gpu",
        strict: bool = False,
        deterministic: bool = False,
        apply_fit: bool = False,
        apply_predict: bool = True,
        verbose: bool = False,
    ) -> None:
        """Create a diffusion purifier.

        :param model: a diffusers ``UNet2DModel`` or any callable ``(x_t, t) -> eps`` (``t`` a long
            tensor of shape ``(batch,)``). Models predicting a learned variance return ``2 * C`` channels.
        :param scheduler: a diffusers ``DDPMScheduler`` (its betas, ``clip_sample`` and ``variance_type``
            define the process).
        :param t_star: number of diffusion steps, 1 .. ``num_train_timesteps`` (100 = DiffPure's t* = 0.1).
        :param sampler: ``"ddpm"``, ``"reverse"`` or ``"ddim"``.
        :param seed: ``None`` for fresh randomness on every call (from a generator this purifier owns),
            or an int base seed ``s`` for fixed randomness xi (sample ``i``, step ``t`` seeded by
            ``hash(s, i, 2t)`` forward and ``hash(s, i, 2t+1)`` reverse).
        :param gradient: ``"full"`` (exact autograd through every step) or ``"bpda"`` (identity backward).
        :param checkpoint: gradient checkpointing around each reverse step, so memory does not grow with ``t_star``
            (it recomputes every step in the backward pass: +50-100% time on CPU, BENCHMARKS.md B1/B4). ``"auto"`` (default) measures the
            autograd memory of the first reverse step and checkpoints the rest of the chain only if the whole
            un-checkpointed call (every step of every internal batch) would exceed ``checkpoint_budget_bytes``;
            ``True``/``False`` force it.
        :param checkpoint_budget_bytes: memory budget of ``checkpoint="auto"``; default: half of the memory free
            on the device when the chain runs (``torch.cuda.mem_get_info``, or ``MemAvailable`` on CPU).
        :param batch_size: internal batch size; ART's ``predict`` hands the whole dataset at once.
        :param clip_values: range of the input, mapped to the model's [-1, 1] and back.
        :param channels_first: ``True`` for NCHW input, ``False`` for NHWC.
        :param forward_noising: ``"one_shot"`` (default) or ``"multistep"``.
        :param ddim_steps: number of DDIM reverse steps (default ``t_star``, i.e. stride 1).
        :param ddim_eta: DDIM's eta: 0 (default) for the deterministic sampler, 1 for DDPM-like stochastic steps on
            the strided schedule (its noise is drawn per step like DDPM's, so it is seeded and aligned too).
        :param generator_seed: seed of the purifier's own generator for ``seed=None`` (fresh noise on every
            call, but a reproducible sequence of calls); default: from ``os.urandom``.
        :param device_type: ``"gpu"`` or ``"cpu"`` (ART convention).
        :param strict: ``True`` raises on inputs outside ``clip_values``; ``False`` (default) clamps them into the
            range first, as ART's own preprocessors do (several ART attacks query points slightly outside the box).
        :param deterministic: ``True`` runs every call (its forward pass, and the backward pass through it) with
            TF32 off in cuBLAS and cuDNN, ``cudnn.deterministic``, no cuDNN benchmarking and
            ``torch.use_deterministic_algorithms(True, warn_only=True)`` (an op without a deterministic kernel
            warns instead of raising), sets ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` if unset (it is read when cuBLAS
            starts: set it before the first CUDA call for it to take effect), and restores the global flags
            afterwards (the backward pass restores them when it has gone through the purifier). Repeated GPU
            runs are then bit-identical, at some speed; CPU runs are deterministic either way. The classifier
            around the purifier is not covered (set the flags for it yourself), and the flags are process-wide:
            do not run other CUDA work concurrently in other threads.
        :param apply_fit: apply during training (default ``False``).
        :param apply_predict: apply during prediction (default ``True``).
        :param verbose: show progress bars.
        """
        super().__init__(device_type=device_type, is_fitted=True, apply_fit=apply_fit, apply_predict=apply_predict)
        self.model, self.scheduler, self.t_star, self.sampler, self.seed = model, scheduler, t_star, sampler, seed
        self.gradient, self.checkpoint, self.checkpoint_budget_bytes = gradient, checkpoint, checkpoint_budget_bytes
        self.batch_size, self.clip_values, self.channels_first = batch_size, clip_values, channels_first
        self.forward_noising, self.ddim_steps, self.ddim_eta = forward_noising, ddim_steps, ddim_eta
        self.strict, self.deterministic, self.verbose = strict, deterministic, verbose
        self.last_checkpointed: bool | None = None  # what the latest differentiable chain did (for "auto")
        self._check_params()
        self._init_state(generator_seed)

    def _init_state(self, generator_seed: int | None) -> None:
        """The model on the device, the state that decides the noise (:class:`~art_diffpure.noise.PurifierNoise`,
        with the generator of fresh noise), the caches, and ``CUBLAS_WORKSPACE_CONFIG`` for ``deterministic``."""
        import torch

        if self.deterministic:
            _set_cublas_workspace()
        if isinstance(self.model, torch.nn.Module):
            where = next((p.device for p in self.model.parameters()), None)
            if where is not None and where.type == "cuda" and where != self.device:
                # ART's idiom: the estimator places its model on its own device. Say so when that undoes the
                # caller's choice of GPU (ART picks cuda:<current device>).
                logger.warning("DiffusionPurifier moves its model from %s to %s (its device: the current CUDA "
                               "device for device_type='gpu', else the CPU); to keep it on %s, call "
                               "torch.cuda.set_device(%s) before building the purifier", where, self.device, where,
                               where.index)
            # Attacks need input gradients only: frozen weights save the parameter-gradient work.
            self.model.to(self.device).eval().requires_grad_(False)
        self._randomness = PurifierNoise(generator_seed)  # the generator of seed=None, context, control, cache
        self._call_checkpoint = False  # checkpoint="auto": the decision of the call in flight
        self._warned_device = False
        # The chain reads its coefficients from a CPU copy and never calls the user's scheduler: diffusers'
        # add_noise moves alphas_cumprod to the device (a scheduler shared by a CPU and a GPU purifier would then
        # move back and forth), and a float() of a device coefficient is a host-device synchronisation.
        self._cpu_scheduler = copy.deepcopy(self.scheduler)
        for name in ("alphas_cumprod", "betas", "alphas"):
            if isinstance(getattr(self._cpu_scheduler, name, None), torch.Tensor):
                setattr(self._cpu_scheduler, name, getattr(self._cpu_scheduler, name).cpu())

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, name_or_path: str, subfolder: str | None = None, **kwargs) -> "DiffusionPurifier":
        """
        Load UNet and scheduler through diffusers from a hub id (e.g. ``google/ddpm-cifar10-32``) or a
        local directory in the same layout (``unet/`` or a top-level ``config.json`` plus
        ``scheduler/`` or ``scheduler_config.json``). Keyword arguments go to the constructor.
        """
        from diffusers import DDPMScheduler, UNet2DModel

        local = os.path.isdir(name_or_path)
        if not local and hub.offline() and not hub.in_cache(name_or_path, subfolder):
            raise OSError(hub.unavailable_message(name_or_path, "HF_HUB_OFFLINE is set"))

        def load(loader, sub):
            # google/ddpm-* keep both at the top level; pipelines keep them in subfolders.
            try:
                return loader.from_pretrained(name_or_path, subfolder=sub)
            except (OSError, ValueError):
                try:
                    return loader.from_pretrained(name_or_path, subfolder=subfolder)
                except (OSError, ValueError) as err:
                    # diffusers' own message ("does not appear to have a file named config.json") hides that
                    # nothing was found at all.
                    if not local and not hub.in_cache(name_or_path, subfolder):
                        raise OSError(hub.unavailable_message(name_or_path, f"loading it failed: {err}")) from err
                    raise

        unet = load(UNet2DModel, "unet")
        scheduler = load(DDPMScheduler, "scheduler")
        saved = os.path.join(name_or_path, PURIFIER_CONFIG)
        if local and os.path.isfile(saved):  # the defence's own settings (save_pretrained); arguments win
            with open(saved, encoding="utf-8") as handle:
                config = json.load(handle)
            if "clip_values" in config:
                config["clip_values"] = tuple(config["clip_values"])
            kwargs = {**config, **kwargs}
        return cls(unet, scheduler, **kwargs)

    def save_pretrained(self, directory: str) -> None:
        """Write ``unet/``, ``scheduler/`` and the purifier's own settings (``purifier_config.json``: t*, sampler,
        DDIM steps and eta, forward noising, gradient, checkpointing, clip values, layout), so that
        :meth:`from_pretrained` loads the same defence back offline."""
        if not hasattr(self.model, "save_pretrained"):
            raise ValueError("save_pretrained needs a diffusers model; this purifier wraps a plain callable")
        self.model.save_pretrained(os.path.join(directory, "unet"))
        self.scheduler.save_pretrained(os.path.join(directory, "scheduler"))
        config = {name: getattr(self, name) for name in SAVED_SETTINGS}
        config["clip_values"] = [float(v) for v in self.clip_values]
        with open(os.path.join(directory, PURIFIER_CONFIG), "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=1, sort_keys=True)

    # ------------------------------------------------------------------ randomness
    def reseed_fresh(self, generator_seed: int | None = None) -> None:
        """Reseed the generator behind ``seed=None`` (``None``: from ``os.urandom``)."""
        self._randomness.reseed(generator_seed)

    @contextlib.contextmanager
    def randomness(
        self, seed: int | Sequence[int] | None, sample_ids: Sequence[int] | np.ndarray | None = None
    ) -> Iterator["DiffusionPurifier"]:
        """
        Fix the randomness xi for a block of calls.

        :param seed: a base seed for every row, a sequence of per-row base seeds (e.g. EOT copies),
            or ``None`` for fresh randomness inside the block.
        :param sample_ids: the sample index of each row of every call inside the block; ``None`` means
            the row's position in the call.
        """
        with self._randomness.fixed(seed, sample_ids):
            yield self

    def controlled(self, control: RandomnessControl) -> contextlib.AbstractContextManager[RandomnessControl]:
        """
        Install an attack's randomness control for a block of calls: every call without explicit seeds then runs
        under it and is counted in ``control.audit``; deep copies made inside the block share it. While it is
        installed, a call on any purifier not under a control raises :class:`RandomnessEscapeError`.
        """
        return self._randomness.controlled(control)

    def _live_control(self) -> RandomnessControl | None:
        return self._randomness.live_control()

    @property
    def _context(self) -> tuple[Any, Any] | None:
        """The ``(seed, sample_ids)`` of the innermost ``randomness()`` block, or ``None``."""
        return self._randomness.context

    @property
    def _noise_cache(self):
        """The aligned-noise cache's entries (see :class:`~art_diffpure.noise.NoiseCache`)."""
        return self._randomness.cache.entries

    def _call_randomness(self, x: "torch.Tensor", gradient: bool, has_labels: bool):
        """``(seeds, sample_ids, fresh)`` of a call without explicit seeds: the control's, else raise on an
        escape, else ``(None, None, False)`` (the ``randomness()`` context or the constructor's seed, resolved later)."""
        return self._randomness.call_rows(x, gradient, has_labels)

    def _row_randomness(self, n: int, seed: Any, sample_ids: Any) -> tuple[list[int], list[int]] | None:
        """Per-row (seeds, ids) for a call of ``n`` rows, or ``None`` for fresh randomness."""
        return self._randomness.rows(n, seed, sample_ids, self.seed)

    def _noise(self, rows: tuple[list[int], list[int]] | None, n: int, steps: list[int], shape, reverse: bool,
               like: "torch.Tensor") -> StepNoise:
        """The noise of one internal batch (see :meth:`PurifierNoise.noise <art_diffpure.noise.PurifierNoise.noise>`)."""
        return self._randomness.noise(rows, n, steps, shape, reverse, like)

    # ------------------------------------------------------------------ public API
    def purify(
        self,
        x: np.ndarray | "torch.Tensor",
        seed: int | Sequence[int] | None = None,
        sample_ids: Sequence[int] | np.ndarray | None = None,
        return_trajectory: bool = False,
    ) -> np.ndarray | "torch.Tensor" | tuple[Any, Any]:
        """
        Purify ``x`` (numpy or torch in, same type, shape and dtype out).

        :param seed: base seed (or per-row seeds); ``None``: under an attack's control (:meth:`controlled`) the
            control's seeds, and the call joins its audit; else the ``randomness`` context, else the purifier's own
            ``seed`` (``None`` there means fresh randomness).
        :param sample_ids: sample index per row (default: the ``randomness`` context, else positions 0..n-1). Not
            used under an attack's control: its rows are the samples the control identifies.
        :param return_trajectory: also return the states along the chain, shape ``(T, n, ...)`` in
            input space: the input, the forward-noised state(s), then the state after each reverse step.
        """
        import torch

        is_numpy = isinstance(x, np.ndarray)
        x_t = torch.from_numpy(np.array(x, copy=True)) if is_numpy else x
        if is_numpy:
            x_t = x_t.to(self.device)
        fresh = False
        if seed is None:  # with or without sample_ids: a live control decides (and audits), an escape raises
            control_seeds, control_ids, fresh = self._call_randomness(x_t, gradient=False, has_labels=False)
            if control_ids is not None:
                seed, sample_ids = control_seeds, control_ids
        with torch.no_grad():
            out, trajectory = self._purify_tensor(x_t, seed, sample_ids, return_trajectory, fresh=fresh)
        if is_numpy:
            out = out.cpu().numpy()
            trajectory = None if trajectory is None else trajectory.cpu().numpy()
        return (out, trajectory) if return_trajectory else out

    def purify_draw(self, x: "torch.Tensor", seeds: Sequence[int], sample_ids: Sequence[int],
                    return_trajectory: bool = False, trajectory_steps: Sequence[int] | None = None,
                    ) -> "torch.Tensor | tuple[torch.Tensor, torch.Tensor]":
        """
        Purify the torch batch ``x`` under named draws: row ``r`` under base seed ``seeds[r]`` and sample id
        ``sample_ids[r]``. The pair fixes all the noise of the row, so a later call replays the draw exactly.
        Differentiable when torch's grad mode is on (``gradient="full"``; checkpointed as configured), so an attack
        can backpropagate any incoming gradient through one draw (see :meth:`draw_vjp`) or through terms on the
        chain's states. Rows run while an attack's control is installed join its audit as rows under the seeds
        the attack chose.

        :param return_trajectory: also return the chain's states ``(T, n, C, H, W)`` in model space [-1, 1] and
            unclamped (a clamp would zero their gradients): the input, the forward-noised state(s), then the state
            after each reverse step; :meth:`trajectory_timesteps` gives the timestep of each.
        :param trajectory_steps: with ``return_trajectory``, return only the states at these increasing indices
            of :meth:`trajectory_timesteps`, shape ``(len(trajectory_steps), n, C, H, W)``; the other states are
            not kept, so under checkpointing they cost only the input each checkpoint saves.
        :return: the purified batch in input space (and the trajectory).
        """
        seeds, sample_ids = [int(s) for s in seeds], [int(i) for i in sample_ids]
        if len(seeds) != len(x) or len(sample_ids) != len(x):
            raise ValueError(f"Got {len(seeds)} seeds and {len(sample_ids)} sample_ids for a batch of {len(x)} rows")
        control = self._live_control()
        if control is not None:
            control.record_chosen(sample_ids)
        out, trajectory = self._purify_tensor(x, seeds, sample_ids, return_trajectory, raw_trajectory=True,
                                              trajectory_steps=trajectory_steps)
        return (out, trajectory) if return_trajectory else out

    def draw_vjp(self, x: "torch.Tensor", incoming: "torch.Tensor", seeds: Sequence[int],
                 sample_ids: Sequence[int]) -> "torch.Tensor":
        """
        The vector-Jacobian product of one named draw: ``incoming`` (shaped like the purified output, e.g. a
        classifier gradient at the purified image) pulled back to ``x`` through the draw ``(seeds, sample_ids)``,
        replaying exactly its noise (one full backward through the chain).
        """
        import torch

        with torch.enable_grad():
            leaf = x.detach().clone().requires_grad_(True)
            out = self.purify_draw(leaf, seeds, sample_ids)
            (grad,) = torch.autograd.grad(out, leaf, grad_outputs=incoming.to(out.dtype))
        return grad

    def trajectory_timesteps(self) -> list[int]:
        """The timestep of each state of a trajectory (``purify_draw(..., return_trajectory=True)``): -1 for the
        input and for the final output, ``t`` for a state x_t."""
        steps = self._reverse_timesteps()
        if self.sampler == "reverse":
            forward: list[int] = []
        elif self.forward_noising == "one_shot":
            forward = [self.t_star - 1]
        else:
            forward = list(range(self.t_star))
        return [-1, *forward, *steps[1:], -1]

    def forward(self, x: "torch.Tensor", y: Any | None = None) -> tuple["torch.Tensor", Any | None]:
        """
        Purify a batch inside ART's PyTorch preprocessing chain (differentiable when ``gradient="full"``).

        Under an attack's :class:`~art_diffpure.randomness.RandomnessControl` the rows get the control's seeds and
        sample ids, and a loss-gradient call (``y`` given) is expanded to the control's ``K`` EOT copies together
        with ``y``, so ART's mean loss averages the ``K`` gradients. A float64 batch (HopSkipJump, Boundary) is
        purified in the model's precision and handed on in it (float32 for the usual models), a dtype the
        classifier takes.
        """
        import torch

        out_dtype = self._chain_dtype(x) if x.dtype == torch.float64 else x.dtype
        seeds, ids, fresh = self._call_randomness(x, gradient=torch.is_grad_enabled() and x.requires_grad,
                                                  has_labels=y is not None)
        if ids is not None and len(ids) > len(x):  # EOT expansion, copy-major
            k = len(ids) // len(x)
            x = torch.cat([x] * k, dim=0)
            y = torch.cat([y] * k, dim=0)
        if self.gradient == "bpda":
            # ART never calls estimate_forward on the PyTorch path (ART issue 1526): straight-through here.
            with torch.no_grad():
                purified, _ = self._purify_tensor(x.detach(), seeds, ids, False, fresh=fresh, out_dtype=out_dtype)
            return x.to(out_dtype) + (purified - x.to(out_dtype)).detach(), y
        purified, _ = self._purify_tensor(x, seeds, ids, False, fresh=fresh, out_dtype=out_dtype)
        return purified, y

    def estimate_forward(self, x: "torch.Tensor", y: Any | None = None) -> "torch.Tensor":
        """Identity (BPDA) estimate; see :meth:`forward` for the mode ART actually uses."""
        return x

    # ------------------------------------------------------------------ copies
    def __setstate__(self, state: dict[str, Any]) -> None:
        # Attributes added since older pickles were written; pickles from before PurifierNoise hold its parts.
        self.__dict__.update({"deterministic": False, "_warned_device": False, "ddim_eta": 0.0,
                              "_call_checkpoint": False})
        if "_randomness" not in state:
            state = dict(state)
            state["_randomness"] = PurifierNoise.from_legacy_state(state)
        self.__dict__.update(state)


def _set_cublas_workspace() -> None:
    """``deterministic=True``: set ``CUBLAS_WORKSPACE_CONFIG`` if unset, warning when cuBLAS may have read it."""
    if "CUBLAS_WORKSPACE_CONFIG" in os.environ:
        return
    import torch

    os.environ["CUBLAS_WORKSPACE_CONFIG"] = determinism.CUBLAS_DETERMINISTIC_WORKSPACE
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # cuBLAS may have read it already
        logger.warning("deterministic=True: CUDA had started before CUBLAS_WORKSPACE_CONFIG was set, so cuBLAS "
                       "may not be deterministic in this process; set CUBLAS_WORKSPACE_CONFIG=%s in the "
                       "environment before any CUDA call", determinism.CUBLAS_DETERMINISTIC_WORKSPACE)


def find_purifier(classifier: Any, required: bool = False) -> DiffusionPurifier | None:
    """
    The single :class:`DiffusionPurifier` among an ART estimator's ``preprocessing_defences``: ``None`` when there is
    none (or a clear ``ValueError`` with ``required=True``); more than one is a ``ValueError``.
    """
    found = [d for d in (getattr(classifier, "preprocessing_defences", None) or []) if isinstance(d, DiffusionPurifier)]
    if len(found) > 1:
        raise ValueError(f"The classifier has {len(found)} DiffusionPurifiers; exactly one is supported")
    if not found and required:
        raise ValueError("The classifier has no DiffusionPurifier in its preprocessing_defences; build it with "
                         "PyTorchClassifier(..., preprocessing_defences=[DiffusionPurifier(...)])")
    return found[0] if found else None


__all__ = ["DiffusionPurifier", "find_purifier"]
