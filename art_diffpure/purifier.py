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
import math
import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
from tqdm.auto import tqdm

from art_diffpure import checkpointing, determinism, hub, samplers
from art_diffpure.randomness import (
    RandomnessControl, RandomnessEscapeError, StepNoise, active_controls, aligned_noise,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

SAMPLERS = ("ddpm", "reverse", "ddim")
GRADIENTS = ("full", "bpda")
FORWARD_NOISING = ("one_shot", "multistep")
#: Bytes of aligned noise kept cached at least (an attack revisits its batch, or K EOT configurations of it). The
#: cache lives in host memory (the device gets one step at a time); it may grow to a quarter of the available host
#: memory, up to :data:`NOISE_CACHE_MAX_BYTES`, so that a call of several internal batches stays cached.
#: What :meth:`DiffusionPurifier.save_pretrained` writes beside ``unet/`` and ``scheduler/``: the settings that
#: define the defence (not its randomness, device or batch size, which belong to a run).
PURIFIER_CONFIG = "purifier_config.json"
SAVED_SETTINGS = ("t_star", "sampler", "ddim_steps", "ddim_eta", "forward_noising", "gradient", "checkpoint",
                  "clip_values", "channels_first")
NOISE_CACHE_BYTES = 1 << 30
NOISE_CACHE_MAX_BYTES = 8 << 30


class DiffusionPurifier(PreprocessorPyTorch):
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
        """
        Create a diffusion purifier.

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
        self.model = model
        self.scheduler = scheduler
        self.t_star = t_star
        self.sampler = sampler
        self.seed = seed
        self.gradient = gradient
        self.checkpoint = checkpoint
        self.checkpoint_budget_bytes = checkpoint_budget_bytes
        self.last_checkpointed: bool | None = None  # what the latest differentiable chain did (for "auto")
        self.batch_size = batch_size
        self.clip_values = clip_values
        self.channels_first = channels_first
        self.forward_noising = forward_noising
        self.ddim_steps = ddim_steps
        self.ddim_eta = ddim_eta
        self.strict = strict
        self.deterministic = deterministic
        self.verbose = verbose
        self._check_params()
        if deterministic and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
            import torch

            os.environ["CUBLAS_WORKSPACE_CONFIG"] = determinism.CUBLAS_DETERMINISTIC_WORKSPACE
            if torch.cuda.is_available() and torch.cuda.is_initialized():  # cuBLAS may have read it already
                logger.warning("deterministic=True: CUDA had started before CUBLAS_WORKSPACE_CONFIG was set, so cuBLAS "
                               "may not be deterministic in this process; set CUBLAS_WORKSPACE_CONFIG=%s in the "
                               "environment before any CUDA call", determinism.CUBLAS_DETERMINISTIC_WORKSPACE)

        self._init_state(generator_seed)

    def _init_state(self, generator_seed: int | None) -> None:
        """The model on the device, the purifier's own generator, the randomness slots and the caches."""
        import torch

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
        # A generator of our own for seed=None: never draws from torch's global RNG.
        self._fresh_generator = torch.Generator(device="cpu")
        self.reseed_fresh(generator_seed)
        self._context: tuple[Any, Any] | None = None  # (seeds, sample_ids) fixed by randomness()
        self._control: RandomnessControl | None = None  # installed by an attack for its whole length
        self._noise_cache: OrderedDict = OrderedDict()  # key -> (host noise, the call that last used it)
        self._noise_call: tuple[int, int] = (0, 0)  # (call counter, first row of the internal batch) in flight
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
        if generator_seed is None:
            generator_seed = int.from_bytes(os.urandom(8), "little") & (2**63 - 1)
        self._fresh_generator.manual_seed(int(generator_seed))

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
        previous = self._context
        self._context = (seed, None if sample_ids is None else np.asarray(sample_ids, dtype=np.int64))
        try:
            yield self
        finally:
            self._context = previous

    def _row_randomness(self, n: int, seed: Any, sample_ids: Any) -> tuple[list[int], list[int]] | None:
        """Per-row (seeds, ids) for a call of ``n`` rows, or ``None`` for fresh randomness."""
        # Explicit arguments first, then the randomness() context, then the constructor's seed.
        context_seed, context_ids = self._context if self._context is not None else (self.seed, None)
        seed = context_seed if seed is None else seed
        sample_ids = context_ids if sample_ids is None else sample_ids
        if seed is None:
            return None
        ids = np.arange(n) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64).reshape(-1)
        seeds = np.full(n, seed, dtype=np.int64) if np.ndim(seed) == 0 else np.asarray(seed, dtype=np.int64).reshape(-1)
        if len(ids) != n or len(seeds) != n:
            raise ValueError(f"Got {len(seeds)} seeds and {len(ids)} sample_ids for a batch of {n} samples")
        return seeds.tolist(), ids.tolist()

    def _noise(self, rows: tuple[list[int], list[int]] | None, n: int, steps: list[int], shape, reverse: bool,
               like: "torch.Tensor") -> "StepNoise":
        """
        The noise ``(len(steps), n, *shape)`` of one internal batch, handed out one step at a time on ``like``'s
        device and dtype (see :class:`StepNoise`). Aligned noise does not depend on x: it is drawn once per
        batch and cached in host memory (pinned for a CUDA chain), so attack iterations reuse it and the device
        holds one step of it at a time. Fresh noise on the CPU is one draw from the purifier's generator; on a
        GPU it is drawn there, step by step, from a seed the purifier's generator gives each chain.
        """
        import torch

        if rows is None:
            if like.device.type == "cpu":
                host = torch.randn((len(steps), n, *shape), generator=self._fresh_generator)
                return StepNoise(like.device, like.dtype, host=host)
            seed = int(torch.randint(0, 2**62, (1,), generator=self._fresh_generator))
            return StepNoise(like.device, like.dtype, seed=seed, shape=(n, *shape))
        key = (tuple(rows[0]), tuple(rows[1]), tuple(steps), tuple(shape), reverse)
        entry = self._noise_cache.get(key)
        if entry is not None:
            self._noise_cache[key] = (entry[0], self._noise_call)
            self._noise_cache.move_to_end(key)
            return StepNoise(like.device, like.dtype, host=entry[0])
        host = aligned_noise(rows[0], rows[1], steps, shape, reverse)
        if like.device.type == "cuda":
            host = host.pin_memory()  # asynchronous per-step copies
        self._cache_noise(key, host)
        return StepNoise(like.device, like.dtype, host=host)

    def _cache_noise(self, key: tuple, host: "torch.Tensor") -> None:
        """
        Cache ``host`` within :func:`noise_cache_budget`. An attack's next call asks for the same internal batches
        in the same order, so an LRU cache smaller than one call would evict exactly the batch needed next and
        redraw everything on every iteration. Hence: evict what earlier calls used (oldest first), never what
        this call already used; admit the new entry if it fits, or if it belongs to the call's first internal
        batch (one batch, e.g. a single-batch attack, stays cached whatever its size). The batches that do not
        fit are redrawn on every call; the others are drawn once.
        """
        budget = noise_cache_budget()
        size = host.numel() * host.element_size()
        total = sum(v.numel() * v.element_size() for v, _ in self._noise_cache.values())
        call = self._noise_call[0]
        for old in list(self._noise_cache):
            if total + size <= budget:
                break
            tensor, (used_in, _) = self._noise_cache[old]
            if used_in != call:
                del self._noise_cache[old]
                total -= tensor.numel() * tensor.element_size()
        if total + size <= budget or self._noise_call[1] == 0:
            self._noise_cache[key] = (host, self._noise_call)

    # ------------------------------------------------------------------ public API
    def purify(
        self,
        x: np.ndarray | "torch.Tensor",
        seed: int | Sequence[int] | None = None,
        sample_ids: Sequence[int] | np.ndarray | None = None,
        return_trajectory: bool = False,
    ):
        """
        Purify ``x`` (numpy or torch in, same type, shape and dtype out).

        :param seed: base seed (or per-row seeds); ``None`` uses the ``randomness`` context, else the
            purifier's own ``seed`` (``None`` there means fresh randomness).
        :param sample_ids: sample index per row (default: the ``randomness`` context, else positions 0..n-1).
        :param return_trajectory: also return the states along the chain, shape ``(T, n, ...)`` in
            input space: the input, the forward-noised state(s), then the state after each reverse step.
        """
        import torch

        is_numpy = isinstance(x, np.ndarray)
        x_t = torch.from_numpy(np.array(x, copy=True)) if is_numpy else x
        if is_numpy:
            x_t = x_t.to(self.device)
        fresh = False
        if seed is None and sample_ids is None:
            seed, sample_ids, fresh = self._call_randomness(x_t, gradient=False, has_labels=False)
        with torch.no_grad():
            out, trajectory = self._purify_tensor(x_t, seed, sample_ids, return_trajectory, fresh=fresh)
        if is_numpy:
            out = out.cpu().numpy()
            trajectory = None if trajectory is None else trajectory.cpu().numpy()
        return (out, trajectory) if return_trajectory else out

    def purify_draw(self, x: "torch.Tensor", seeds: Sequence[int], sample_ids: Sequence[int],
                    return_trajectory: bool = False):
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
        :return: the purified batch in input space (and the trajectory).
        """
        seeds, sample_ids = [int(s) for s in seeds], [int(i) for i in sample_ids]
        if len(seeds) != len(x) or len(sample_ids) != len(x):
            raise ValueError(f"Got {len(seeds)} seeds and {len(sample_ids)} sample_ids for a batch of {len(x)} rows")
        control = self._live_control()
        if control is not None:
            control.record_chosen(sample_ids)
        out, trajectory = self._purify_tensor(x, seeds, sample_ids, return_trajectory, raw_trajectory=True)
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

    # ------------------------------------------------------------------ attack control
    @contextlib.contextmanager
    def controlled(self, control: RandomnessControl) -> Iterator[RandomnessControl]:
        """
        Install an attack's randomness control for a block of calls: every call without explicit seeds then runs
        under it and is counted in ``control.audit``; deep copies made inside the block share it. While it is
        installed, a call on any purifier not under a control raises :class:`RandomnessEscapeError`.
        """
        previous = self._control
        self._control = control
        control.activate()
        try:
            yield control
        finally:
            control.deactivate()
            self._control = previous

    def _live_control(self) -> RandomnessControl | None:
        control = self._control
        if control is not None and control.closed:  # a copy made during an attack that has ended
            self._control = control = None
        return control

    def _call_randomness(self, x: "torch.Tensor", gradient: bool, has_labels: bool):
        """``(seeds, sample_ids, fresh)`` of a call without explicit seeds: the control's, else raise on an
        escape, else the ``randomness()`` context or the constructor's seed (resolved later)."""
        control = self._live_control()
        if control is not None:
            seeds, ids, _ = control.rows(x.detach().cpu().numpy(), gradient, has_labels)
            return seeds, ids, seeds is None
        others = active_controls()
        if others and self._context is None:
            why = (f"a purifier call of {len(x)} rows ran on a DiffusionPurifier that the running attack does not "
                   "control (a classifier built or copied around the attack's purifier?)")
            for other in others:
                other.record_escape(len(x), why)
            raise RandomnessEscapeError(why.capitalize() + "; build every estimator of the attack on the same "
                                        "classifier, so that they share the purifier object")
        return None, None, False

    # ------------------------------------------------------------------ copies
    def __getstate__(self) -> dict[str, Any]:
        if self._live_control() is not None:
            raise RandomnessEscapeError(
                "A DiffusionPurifier under an attack's randomness control cannot be sent to another process: its calls "
                "there would escape the control and its audit (for ART's AutoAttack use parallel_pool_size=0)")
        state = self.__dict__.copy()
        state["_fresh_generator"] = self._fresh_generator.get_state()
        state["_noise_cache"] = OrderedDict()
        state["_control"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        import torch

        generator = torch.Generator(device="cpu")
        generator.set_state(state["_fresh_generator"])
        # Attributes added since older pickles were written.
        self.__dict__.update({"deterministic": False, "_noise_call": (0, 0), "_warned_device": False, "ddim_eta": 0.0,
                              "_call_checkpoint": False})
        self.__dict__.update(state, _fresh_generator=generator)

    def __deepcopy__(self, memo: dict) -> "DiffusionPurifier":
        import torch

        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key == "_fresh_generator":
                value = torch.Generator(device="cpu")
                value.set_state(self._fresh_generator.get_state())
            elif key == "_noise_cache":
                value = OrderedDict()
            elif key != "_control":  # a copy made during an attack stays under the same control and audit
                value = copy.deepcopy(value, memo)
            new.__dict__[key] = value
        return new

    def estimate_forward(self, x: "torch.Tensor", y: Any | None = None) -> "torch.Tensor":
        """Identity (BPDA) estimate; see :meth:`forward` for the mode ART actually uses."""
        return x

    # ------------------------------------------------------------------ the chain
    def _purify_tensor(self, x: "torch.Tensor", seed, sample_ids, return_trajectory: bool, fresh: bool = False,
                       out_dtype: "torch.dtype | None" = None, raw_trajectory: bool = False):
        """Purify ``x``; ``fresh`` forces fresh noise (a control's stochastic mode), whatever the seeds say."""
        import torch

        self._validate_input(x)
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
        call = self._noise_call[0] + 1
        outs, trajs = [], []
        with determinism.deterministic_flags(self.deterministic):
            starts = range(0, n, self.batch_size)
            for start in tqdm(starts, desc="Purifying", disable=not self.verbose or len(starts) < 2):
                stop = min(start + self.batch_size, n)
                sub = None if rows is None else (rows[0][start:stop], rows[1][start:stop])
                self._noise_call = (call, start)
                out, traj = self._chain(z[start:stop], sub, return_trajectory, call_rows=n)
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

    def _chain(self, z: "torch.Tensor", rows, return_trajectory: bool, call_rows: int | None = None):
        """Purify one internal batch ``z`` in model space [-1, 1] (one of the internal batches of a call of
        ``call_rows`` rows, whose graphs all live until the backward pass)."""
        import torch

        shape = tuple(z.shape[1:])
        t_top = self.t_star - 1
        trajectory = [z] if return_trajectory else None

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
        first_batch = self._noise_call[1] == 0
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
        return x_t, (torch.stack(trajectory) if return_trajectory else None)

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

    # ------------------------------------------------------------------ checks
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
        if isinstance(self.t_star, bool) or not isinstance(self.t_star, (int, np.integer)) or not 1 <= self.t_star <= num_train:
            raise ValueError(f"t_star must be an int in [1, {num_train}], got {self.t_star!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"Unknown sampler {self.sampler!r}; expected one of {SAMPLERS}")
        if self.gradient not in GRADIENTS:
            raise ValueError(f"Unknown gradient mode {self.gradient!r}; expected one of {GRADIENTS}")
        if self.forward_noising not in FORWARD_NOISING:
            raise ValueError(f"Unknown forward_noising {self.forward_noising!r}; expected one of {FORWARD_NOISING}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0):
            raise ValueError(f"seed must be None or a non-negative int, got {self.seed!r}")
        if self.checkpoint not in (True, False, "auto"):
            raise ValueError(f"checkpoint must be True, False or 'auto', got {self.checkpoint!r}")
        if self.checkpoint_budget_bytes is not None and (
                not isinstance(self.checkpoint_budget_bytes, (int, np.integer)) or self.checkpoint_budget_bytes < 0):
            raise ValueError(f"checkpoint_budget_bytes must be None or a non-negative int, got {self.checkpoint_budget_bytes!r}")
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if len(self.clip_values) != 2 or not self.clip_values[0] < self.clip_values[1]:
            raise ValueError(f"clip_values must be (min, max) with min < max, got {self.clip_values!r}")
        if not np.isscalar(self.ddim_eta) or not 0.0 <= float(self.ddim_eta) <= 1.0:
            raise ValueError(f"ddim_eta must be a number in [0, 1], got {self.ddim_eta!r}")
        if self.ddim_steps is not None and (not isinstance(self.ddim_steps, (int, np.integer)) or not 1 <= self.ddim_steps <= self.t_star):
            raise ValueError(f"ddim_steps must be None or an int in [1, t_star={self.t_star}], got {self.ddim_steps!r}")
        prediction = getattr(self.scheduler.config, "prediction_type", "epsilon")
        if prediction != "epsilon":
            raise ValueError(f"Only epsilon-prediction models are supported, the scheduler says {prediction!r}")
        if not isinstance(self.strict, bool):
            raise ValueError(f"strict must be a bool, got {self.strict!r}")
        if not isinstance(self.deterministic, bool):
            raise ValueError(f"deterministic must be a bool, got {self.deterministic!r}")
        if not callable(self.model):
            raise ValueError("model must be a torch module or a callable (x_t, t) -> eps")


def noise_cache_budget() -> int:
    """Bytes of host memory the aligned-noise cache may hold: a quarter of the available host memory, at least
    :data:`NOISE_CACHE_BYTES` and at most :data:`NOISE_CACHE_MAX_BYTES`."""
    available = checkpointing.host_available_bytes()
    return max(NOISE_CACHE_BYTES, min(NOISE_CACHE_MAX_BYTES, (available or 0) // 4))


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
