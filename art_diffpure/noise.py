"""The noise of one :class:`~art_diffpure.DiffusionPurifier`: who decides it, where it comes from, how it is copied.

A purifier call without explicit seeds gets its noise from, in this order: the attack's live
:class:`~art_diffpure.randomness.RandomnessControl` (installed by ``purifier.controlled(control)``: the control
identifies the rows, picks their seeds and audits the call), the ``purifier.randomness(seed, sample_ids)`` context,
the purifier's constructor ``seed``; with none of them, fresh noise from a generator the purifier owns. A call on a
purifier under no control while a control is installed on another one is an escape and raises.

All of that state lives in one :class:`PurifierNoise` object held by the purifier, so that it travels with the
purifier object through everything ART does to estimators. Its copy rules: a deep copy (ART copies estimators,
AutoAttack in parallel mode too) gets a generator in the same state, the same context and the SAME live control (a
copy made during an attack stays under it and its audit) and an empty cache; pickling is refused while a control is
live (the copy's calls in another process would escape the audit) and otherwise drops the control and the cache.

Aligned noise does not depend on the input, so it is drawn once per internal batch and kept in host memory by a
:class:`NoiseCache` (an attack revisits its batch, or its ``K`` EOT configurations of it, on every iteration).
"""
from __future__ import annotations

import contextlib
import copy
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from art_diffpure import checkpointing
from art_diffpure.randomness import (
    RandomnessControl, RandomnessEscapeError, StepNoise, active_controls, aligned_noise, fresh_chain_seed,
    urandom_seed,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Bytes of aligned noise kept cached at least (an attack revisits its batch, or K EOT configurations of it). The
#: cache lives in host memory (the device gets one step at a time); it may grow to a quarter of the available host
#: memory, up to :data:`NOISE_CACHE_MAX_BYTES`, so that a call of several internal batches stays cached.
NOISE_CACHE_BYTES = 1 << 30
NOISE_CACHE_MAX_BYTES = 8 << 30

def noise_cache_budget() -> int:
    """Bytes of host memory the aligned-noise cache may hold: a quarter of the available host memory, at least
    :data:`NOISE_CACHE_BYTES` and at most :data:`NOISE_CACHE_MAX_BYTES`."""
    available = checkpointing.host_available_bytes()
    return max(NOISE_CACHE_BYTES, min(NOISE_CACHE_MAX_BYTES, (available or 0) // 4))


class NoiseCache:
    """
    Host copies of aligned noise, keyed by ``(seeds, sample ids, steps, shape, reverse)``, within
    :func:`noise_cache_budget`. ``position`` is ``(call counter, first row of the internal batch)`` of the batch in
    flight; the purifier advances it.

    An attack's next call asks for the same internal batches in the same order, so an LRU cache smaller than one
    call would evict exactly the batch needed next and redraw everything on every iteration. Hence: evict what
    earlier calls used (oldest first), never what this call already used; admit the new entry if it fits, or if it
    belongs to the call's first internal batch (one batch, e.g. a single-batch attack, stays cached whatever its
    size). The batches that do not fit are redrawn on every call; the others are drawn once.
    """

    def __init__(self) -> None:
        self.entries: OrderedDict = OrderedDict()  # key -> (host noise, the position that last used it)
        self.position: tuple[int, int] = (0, 0)

    def get(self, key: tuple) -> "torch.Tensor | None":
        """The cached noise of ``key`` (marked as used by the batch in flight), or ``None``."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        self.entries[key] = (entry[0], self.position)
        self.entries.move_to_end(key)
        return entry[0]

    def put(self, key: tuple, host: "torch.Tensor") -> None:
        """Cache ``host`` under ``key`` if the rules above admit it."""
        budget = noise_cache_budget()
        size = host.numel() * host.element_size()
        total = sum(v.numel() * v.element_size() for v, _ in self.entries.values())
        call = self.position[0]
        for old in list(self.entries):
            if total + size <= budget:
                break
            tensor, (used_in, _) = self.entries[old]
            if used_in != call:
                del self.entries[old]
                total -= tensor.numel() * tensor.element_size()
        if total + size <= budget or self.position[1] == 0:
            self.entries[key] = (host, self.position)


class PurifierNoise:
    """
    The state that decides a purifier's noise: the generator of fresh noise, the ``randomness()`` context, the
    attack's live control, and the aligned-noise cache (see the module's docstring for the order and copy rules).

    :param generator_seed: seed of the fresh-noise generator; ``None``: from ``os.urandom``.
    """

    def __init__(self, generator_seed: int | None = None) -> None:
        import torch

        self.generator = torch.Generator(device="cpu")  # never draws from torch's global RNG
        self.reseed(generator_seed)
        self.context: tuple[Any, Any] | None = None  # (seeds, sample_ids) fixed by randomness()
        self.control: RandomnessControl | None = None  # installed by an attack for its whole length
        self.cache = NoiseCache()

    def reseed(self, generator_seed: int | None = None) -> None:
        """Reseed the fresh-noise generator (``None``: from ``os.urandom``)."""
        if generator_seed is None:
            generator_seed = urandom_seed()
        self.generator.manual_seed(int(generator_seed))

    # ------------------------------------------------------------------ who decides
    @contextlib.contextmanager
    def fixed(self, seed: int | Sequence[int] | None, sample_ids: Sequence[int] | np.ndarray | None) -> Iterator[None]:
        """The ``randomness()`` context: ``seed`` and ``sample_ids`` for every call of the block."""
        previous = self.context
        self.context = (seed, None if sample_ids is None else np.asarray(sample_ids, dtype=np.int64))
        try:
            yield
        finally:
            self.context = previous

    @contextlib.contextmanager
    def controlled(self, control: RandomnessControl) -> Iterator[RandomnessControl]:
        """Install an attack's control for the block (and activate it process-wide)."""
        previous = self.control
        self.control = control
        control.activate()
        try:
            yield control
        finally:
            control.deactivate()
            self.control = previous

    def live_control(self) -> RandomnessControl | None:
        """The installed control, unless its attack has ended (a copy made during an attack outlives it)."""
        control = self.control
        if control is not None and control.closed:
            self.control = control = None
        return control

    def call_rows(self, x: "torch.Tensor", gradient: bool, has_labels: bool):
        """``(seeds, sample_ids, fresh)`` of a call without explicit seeds: the live control's (which counts the call
        in its audit), else raise on an escape, else ``(None, None, False)`` (context or constructor seed, resolved
        by :meth:`rows`)."""
        control = self.live_control()
        if control is not None:
            seeds, ids, _ = control.rows(x.detach().cpu().numpy(), gradient, has_labels)
            return seeds, ids, seeds is None
        others = active_controls()
        if others and self.context is None:
            why = (f"a purifier call of {len(x)} rows ran on a DiffusionPurifier that the running attack does not "
                   "control (a classifier built or copied around the attack's purifier?)")
            for other in others:
                other.record_escape(len(x), why)
            raise RandomnessEscapeError(why.capitalize() + "; build every estimator of the attack on the same "
                                        "classifier, so that they share the purifier object")
        return None, None, False

    def rows(self, n: int, seed: Any, sample_ids: Any, default_seed: int | None) -> tuple[list[int], list[int]] | None:
        """Per-row ``(seeds, ids)`` for a call of ``n`` rows, or ``None`` for fresh noise: explicit arguments first,
        then the ``randomness()`` context, then ``default_seed`` (the constructor's)."""
        context_seed, context_ids = self.context if self.context is not None else (default_seed, None)
        seed = context_seed if seed is None else seed
        sample_ids = context_ids if sample_ids is None else sample_ids
        if seed is None:
            return None
        ids = np.arange(n) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64).reshape(-1)
        seeds = np.full(n, seed, dtype=np.int64) if np.ndim(seed) == 0 else np.asarray(seed, dtype=np.int64).reshape(-1)
        if len(ids) != n or len(seeds) != n:
            raise ValueError(f"Got {len(seeds)} seeds and {len(ids)} sample_ids for a batch of {n} samples")
        return seeds.tolist(), ids.tolist()

    # ------------------------------------------------------------------ where it comes from
    def noise(self, rows: tuple[list[int], list[int]] | None, n: int, steps: list[int], shape, reverse: bool,
              like: "torch.Tensor") -> StepNoise:
        """
        The noise ``(len(steps), n, *shape)`` of one internal batch, handed out one step at a time on ``like``'s
        device and dtype (see :class:`StepNoise`). Aligned noise (``rows`` given) is drawn once per batch and
        cached in host memory (pinned for a CUDA chain), so attack iterations reuse it and the device holds one step
        of it at a time. Fresh noise on the CPU is one draw from the generator; on a GPU it is drawn there, step by
        step, from a seed the generator gives each chain.
        """
        import torch

        if rows is None:
            if like.device.type == "cpu":
                host = torch.randn((len(steps), n, *shape), generator=self.generator)
                return StepNoise(like.device, like.dtype, host=host)
            seed = fresh_chain_seed(self.generator)
            return StepNoise(like.device, like.dtype, seed=seed, shape=(n, *shape))
        key = (tuple(rows[0]), tuple(rows[1]), tuple(steps), tuple(shape), reverse)
        host = self.cache.get(key)
        if host is None:
            host = aligned_noise(rows[0], rows[1], steps, shape, reverse)
            if like.device.type == "cuda":
                host = host.pin_memory()  # asynchronous per-step copies
            self.cache.put(key, host)
        return StepNoise(like.device, like.dtype, host=host)

    # ------------------------------------------------------------------ copies
    def __getstate__(self) -> dict[str, Any]:
        if self.live_control() is not None:
            raise RandomnessEscapeError(
                "A DiffusionPurifier under an attack's randomness control cannot be sent to another process: its calls "
                "there would escape the control and its audit (for ART's AutoAttack use parallel_pool_size=0)")
        return {"generator": self.generator.get_state(), "context": self.context}

    def __setstate__(self, state: dict[str, Any]) -> None:
        import torch

        self.generator = torch.Generator(device="cpu")
        self.generator.set_state(state["generator"])
        self.context, self.control, self.cache = state["context"], None, NoiseCache()

    def __deepcopy__(self, memo: dict) -> "PurifierNoise":
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__setstate__({"generator": self.generator.get_state(), "context": copy.deepcopy(self.context, memo)})
        new.control = self.control  # a copy made during an attack stays under the same control and audit
        return new

    @classmethod
    def from_legacy_state(cls, state: dict[str, Any]) -> "PurifierNoise":
        """The noise state of a purifier pickled before it had one: its ``_fresh_generator`` (a state tensor) and
        ``_context`` entries, removed from ``state``; its control and cache entries are dropped."""
        new = cls.__new__(cls)
        new.__setstate__({"generator": state.pop("_fresh_generator"), "context": state.pop("_context", None)})
        for name in ("_control", "_noise_cache", "_noise_call"):
            state.pop(name, None)
        return new


__all__ = ["NOISE_CACHE_BYTES", "NOISE_CACHE_MAX_BYTES", "NoiseCache", "PurifierNoise", "noise_cache_budget"]
