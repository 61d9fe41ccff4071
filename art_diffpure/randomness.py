"""The randomness an attack fixes on a purifier, who it applies to, and the audit of every call.

Seed alignment (Appendix B of Liu & Wei 2025, eq. 12-13): the noise of sample ``i`` at step ``t`` under base
seed ``s`` comes from its own CPU generator seeded with ``hash(s, i, 2t)`` (forward) or ``hash(s, i, 2t + 1)``
(reverse), ``hash(s, i, t) = ((p_s s) XOR (p_i i) XOR (p_t t)) mod 2**32``; ``i`` is the sample's own id, never
its position in a batch, and no global RNG is touched. The same values on every device.

ART rebuilds and copies estimators freely (APGD builds a new ``PyTorchClassifier`` from the same preprocessor
objects, AutoAttack keeps sub-attacks on the estimator it was given and subsets ``x``). Only the preprocessor object
survives all of that, so the state that decides a purification's noise lives on the purifier as a
:class:`RandomnessControl`, installed by :class:`~art_diffpure.RandomnessAlignedAttack` for the length of an
attack. Every purifier call made while a control is installed anywhere in the process runs under it (and is
counted), or raises.

Row identity. Noise is seeded per *sample id*, so every row of every call must be mapped to its sample. ART
attacks hand over the batch, subsets of it, random restarts, or black-box queries. A row is identified with
certainty when either

- the control holds a single sample (every query made while attacking it belongs to it),
- the attack promises a perturbation bound ``b`` (Linf distance; an ``L2`` or ``L1`` ball of radius ``eps`` lies
  inside the Linf ball of the same radius) and exactly one clean sample lies within ``b`` of the row (batches are
  only controlled this way when their clean samples are more than ``2 b`` apart: the balls are disjoint), or
- the attack is known to call the estimator on its whole batch in order (``positional``; the default PGD of
  :class:`~art_diffpure.RandomnessAlignedAttack`): row ``r`` is sample ``r``, checked to lie within ``b`` of it.

Anything else raises :class:`AmbiguousRowsError` after counting the rows in the audit: a row is never
guessed. :class:`~art_diffpure.RandomnessAlignedAttack` therefore attacks one sample at a time when an
attack has no bound or a batch is too tight.

Seed glossary: every seed rule and seed constant of the package (``s``: a base seed; ``i``: a sample id).

- :func:`seed_hash` ``(s, i, t)``, :data:`P_S`, :data:`P_I`, :data:`P_T`: eq. 13, the hash under every derived seed.
- :func:`step_seed`: the noise of sample ``i`` at step ``t``: ``seed_hash(s, i, 2t)`` forward, ``2t + 1`` reverse.
- :func:`eot_seeds`, :data:`EOT_SEED_STRIDE`: EOT configuration ``k`` of ``s`` is ``s + 7919 k``.
- :func:`transfer_test_seed`, :data:`TRANSFER_SEED_OFFSET`: ``"transfer"`` mode tests under ``s + 1000000007``.
- :func:`attack_draw_seeds`, :data:`ATTACK_DRAW_OFFSET`: named draw ``j`` of an attack built for purification
  (DiffHammer, DiffAttack, surrogate PGD-EOT) is ``s + 2000000011 + j``.
- :func:`evaluation_draw_seeds`, :data:`EVALUATION_DRAW_OFFSET`: test draw ``j`` of an evaluation over draws
  (``evaluate --test-draws``, the reproduction's repeated test draws) is ``s + 3000000019 + j``, per sample;
  :data:`DRAW_FAMILY_SIZE` bounds ``j``, :data:`SEED_LIMIT` (``2**32``) every derived seed.
- :func:`start_seed`, ``START_STREAM_*``: numpy's global RNG for the random start of the batch beginning with
  sample ``i`` is seeded with ``seed_hash(s, i, stream)``: stream :data:`START_STREAM_ART` (0, ART's own random
  starts under :class:`~art_diffpure.RandomnessAlignedAttack`, :func:`numpy_start_seed`),
  :data:`START_STREAM_DIFFATTACK` (1), :data:`START_STREAM_DIFFHAMMER` ``+ r`` (2 + restart ``r``),
  :data:`START_STREAM_SURROGATE` (5).
- :func:`numpy_seeded`: numpy's global RNG seeded with ``seed mod 2**32`` for a block, its state restored after.
- Fresh noise (``seed=None``): the purifier's own CPU generator is seeded with its ``generator_seed``, else with
  :func:`urandom_seed` (63 random bits); a chain on a GPU draws step ``k`` on the device from ``c + k``
  (:class:`StepNoise`), ``c`` drawn from that generator below :data:`FRESH_CHAIN_SEED_LIMIT`
  (:func:`fresh_chain_seed`).
- :data:`FRESH_GENERATOR_TAG`: the reproduction's stochastic mode reseeds the purifier's generator per unit with
  ``seed_hash(s, first id of the unit, 0x5EED)``, so a resumed run draws what an uninterrupted one draws.
- :data:`MAX_SEED` (command-line base seeds: ``0 .. 10**9 - 1``); :data:`DIGITS_SPLIT_SEED` (the digits split's, 0).
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from art_diffpure.exceptions import AmbiguousRowsError, RandomnessEscapeError

if TYPE_CHECKING:  # pragma: no cover
    import torch


# ---------------------------------------------------------------------------------------------- seed alignment
P_S = 83492791
P_I = 73856093
P_T = 19349663
_MASK = 2**32 - 1


def seed_hash(s: int, i: int, t: int) -> int:
    """The multiplicative hash of eq. 13: ``((p_s*s) ^ (p_i*i) ^ (p_t*t)) mod 2**32``."""
    return ((P_S * int(s)) ^ (P_I * int(i)) ^ (P_T * int(t))) & _MASK


def step_seed(s: int, i: int, t: int, reverse: bool) -> int:
    """The seed of eq. 12 for forward (``reverse=False``) or reverse step ``t`` of sample ``i``."""
    return seed_hash(s, i, 2 * int(t) + (1 if reverse else 0))


def aligned_noise(
    seeds: Sequence[int],
    sample_ids: Sequence[int],
    steps: Sequence[int],
    shape: Sequence[int],
    reverse: bool,
    dtype: "torch.dtype | None" = None,
) -> "torch.Tensor":
    """Standard normal noise of shape ``(len(steps), len(sample_ids), *shape)`` on the CPU.

    Row ``b`` at step ``steps[k]`` is drawn from a generator seeded with
    ``step_seed(seeds[b], sample_ids[b], steps[k], reverse)``: it depends only on that triple.

    :param seeds: base seed per row (one base seed per sample, or a different one per EOT copy).
    :param sample_ids: the sample index per row.
    :param steps: diffusion timesteps (diffusers indexing, 0 .. num_train_timesteps - 1).
    :param shape: the shape of one sample, e.g. ``(3, 32, 32)``.
    :param reverse: ``False`` for forward-process noise, ``True`` for reverse-process noise.
    """
    import torch

    if len(seeds) != len(sample_ids):
        raise ValueError(f"seeds ({len(seeds)}) and sample_ids ({len(sample_ids)}) differ in length")
    out = torch.empty((len(steps), len(sample_ids), *shape), dtype=torch.float32)
    gen = torch.Generator(device="cpu")
    one = (1, *shape)  # drawn as a batch of one, the way diffusers' randn_tensor draws per generator
    for k, t in enumerate(steps):
        for b, (s, i) in enumerate(zip(seeds, sample_ids)):
            gen.manual_seed(step_seed(s, i, t, reverse))
            out[k, b] = torch.randn(one, generator=gen)[0]
    return out if dtype is None else out.to(dtype)


# ---------------------------------------------------------------------------------------------- seed rules
#: EOT configuration ``k`` of base seed ``s`` uses base seed ``s + k * EOT_SEED_STRIDE`` (``k = 0`` is ``s`` itself).
EOT_SEED_STRIDE = 7919
#: In ``"transfer"`` mode the test base seed is ``s + TRANSFER_SEED_OFFSET``. The offset is a prime larger than
#: any ``k * EOT_SEED_STRIDE`` used in practice and not a multiple of the (prime) stride, so the test seed never
#: equals an attack seed.
TRANSFER_SEED_OFFSET = 1_000_000_007
SEED_LIMIT = 2**32  # the seed hash works modulo 2**32: keep derived seeds distinct below it
#: Relative and absolute slack on a perturbation bound (float32 round-off of ``x + delta`` and clipping).
BOUND_RTOL, BOUND_ATOL = 1e-5, 1e-6


#: Named draws. The attacks built for purification (DiffHammer, DiffAttack, surrogate PGD-EOT) draw their own
#: randomness by name: draw ``j`` of base seed ``s`` is base seed ``s + ATTACK_DRAW_OFFSET + j``; the test draws of
#: an evaluation over N draws are ``s + EVALUATION_DRAW_OFFSET + j``. Both offsets are primes far above any EOT or
#: transfer seed, so no attack draw is ever a test draw, an EOT configuration or a transfer test seed.
ATTACK_DRAW_OFFSET = 2_000_000_011
EVALUATION_DRAW_OFFSET = 3_000_000_019
#: Room for each family of named draws: ``j`` stays below this, and ``s + offset + j`` below 2**32.
DRAW_FAMILY_SIZE = 1_000_000_000


#: Streams of the per-batch random starts (:func:`start_seed`): each attack draws its starts from its own stream.
START_STREAM_ART = 0
START_STREAM_DIFFATTACK = 1
START_STREAM_DIFFHAMMER = 2  # restart r uses START_STREAM_DIFFHAMMER + r
START_STREAM_SURROGATE = 5

#: A GPU chain of fresh noise is seeded below this (drawn from the purifier's generator); step k adds k to it.
FRESH_CHAIN_SEED_LIMIT = 2**62
#: torch generators take seeds below this.
TORCH_SEED_LIMIT = 2**63

#: Tag of the seed hash that seeds the purifier's own generator per unit of the reproduction (stochastic mode).
FRESH_GENERATOR_TAG = 0x5EED
#: Base seeds accepted on the command line: ``0 .. MAX_SEED - 1``.
MAX_SEED = 10**9
#: ``random_state`` of the fixed train/test split of the digits data set.
DIGITS_SPLIT_SEED = 0


def _draw_seeds(seed: int, offset: int, start: int, n: int) -> list[int]:
    if int(start) < 0 or int(n) < 0 or int(start) + int(n) > DRAW_FAMILY_SIZE:
        raise ValueError(f"draws {start}..{start + n - 1} lie outside 0..{DRAW_FAMILY_SIZE - 1}")
    if int(seed) + offset + int(start) + int(n) > SEED_LIMIT:
        raise ValueError(f"base seed {seed} is too large for {n} named draws (they must stay below 2**32)")
    return [int(seed) + offset + int(start) + j for j in range(int(n))]


def attack_draw_seeds(seed: int, start: int, n: int) -> list[int]:
    """Base seeds of the attack's named draws ``start .. start + n - 1`` for base seed ``seed``."""
    return _draw_seeds(seed, ATTACK_DRAW_OFFSET, start, n)


def evaluation_draw_seeds(seed: int, n: int) -> list[int]:
    """Base seeds of the ``n`` test draws of an evaluation over draws for base seed ``seed``."""
    return _draw_seeds(seed, EVALUATION_DRAW_OFFSET, 0, n)


def eot_seeds(seed: int, eot_samples: int) -> list[int]:
    """The base seeds of the ``eot_samples`` attack configurations of base seed ``seed``: ``seed + k * 7919``."""
    return [int(seed) + k * EOT_SEED_STRIDE for k in range(eot_samples)]


def transfer_test_seed(seed: int) -> int:
    """The test base seed of ``"transfer"`` mode for attack base seed ``seed``: ``seed + 1000000007``."""
    return int(seed) + TRANSFER_SEED_OFFSET


def start_seed(seed: int, first_id: int, stream: int) -> int:
    """Seed of numpy's global RNG for the random start, in ``stream``, of the batch beginning with ``first_id``."""
    return seed_hash(seed, int(first_id), int(stream))


def numpy_start_seed(seed: int, first_id: int) -> int:
    """Seed of numpy's global RNG for ART's random starts on the batch that begins with sample ``first_id``."""
    return start_seed(seed, first_id, START_STREAM_ART)


def urandom_seed() -> int:
    """A seed for a generator nobody seeded: 63 random bits of ``os.urandom`` (below :data:`TORCH_SEED_LIMIT`)."""
    return int.from_bytes(os.urandom(8), "little") & (TORCH_SEED_LIMIT - 1)


def fresh_chain_seed(generator: "torch.Generator") -> int:
    """The seed of one GPU chain of fresh noise, drawn from the purifier's CPU ``generator``."""
    import torch

    return int(torch.randint(0, FRESH_CHAIN_SEED_LIMIT, (1,), generator=generator))


@contextlib.contextmanager
def numpy_seeded(seed: int) -> Iterator[None]:
    """
    Seed numpy's GLOBAL RNG for the block and restore its state afterwards. ART's random starts (PGD, APGD) and
    SquareAttack draw from it, so an attack is only rerunnable when its block is seeded; restoring keeps the
    caller's stream untouched.
    """
    state = np.random.get_state()
    np.random.seed(int(seed) % SEED_LIMIT)
    try:
        yield
    finally:
        np.random.set_state(state)


@dataclass
class RandomnessAudit:
    """What happened to every row a purifier saw while a control was installed."""

    calls: int = 0
    gradient_calls: int = 0
    rows_purified: int = 0
    rows_intended: int = 0
    rows_ambiguous: int = 0
    rows_uncontrolled: int = 0
    rows_per_sample: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every row purified ran under the intended randomness."""
        return self.rows_ambiguous == 0 and self.rows_uncontrolled == 0 and self.rows_intended == self.rows_purified

    def add(self, other: "RandomnessAudit") -> None:
        """Accumulate ``other`` into this audit."""
        for name in ("calls", "gradient_calls", "rows_purified", "rows_intended", "rows_ambiguous",
                     "rows_uncontrolled"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for i, n in other.rows_per_sample.items():
            self.rows_per_sample[i] = self.rows_per_sample.get(i, 0) + n
        self.errors.extend(other.errors)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (sample ids as strings, as JSON keys must be)."""
        out = asdict(self)
        out["rows_per_sample"] = {str(k): int(v) for k, v in sorted(self.rows_per_sample.items())}
        out["ok"] = self.ok
        return out


# Controls installed on some purifier of this process right now: a call on any other purifier while one is
# installed is an escape (e.g. a classifier deep-copied before the attack started).
_ACTIVE: list["RandomnessControl"] = []
_ACTIVE_LOCK = threading.Lock()


def active_controls() -> list["RandomnessControl"]:
    """The controls installed on purifiers right now."""
    with _ACTIVE_LOCK:
        return list(_ACTIVE)


class RandomnessControl:
    """
    The randomness of the samples under attack: attack configurations (base seeds, one per EOT copy; ``None``
    for fresh noise), the clean batch and its sample ids, and how rows are identified.

    :param configs: base seeds of the ``K`` configurations, or ``None`` for fresh randomness on every call.
    :param eot_samples: ``K``: loss-gradient calls are expanded ``K`` times (copy-major), one copy per configuration;
        predictions and other calls use configuration 0.
    :param bound: the attack's promised Linf perturbation bound around the clean sample, or ``None`` (unbounded:
        only single-sample batches can be identified).
    :param positional: rows are the batch itself in order (ART's ``predict`` on exactly these samples, or an attack
        known to call the estimator on its whole batch in order), no search; with a ``bound`` every row is checked
        to lie within it of its own sample.
    """

    def __init__(self, configs: Sequence[int] | None, eot_samples: int = 1, bound: float | None = None,
                 positional: bool = False) -> None:
        self.configs = None if configs is None else [int(c) for c in configs]
        if self.configs is not None and len(self.configs) < eot_samples:
            raise ValueError(f"{eot_samples} EOT samples need as many configurations, got {len(self.configs)}")
        self.eot_samples = int(eot_samples)
        self.bound = None if bound is None else float(bound)
        self.positional = positional
        self.single_config: int | None = None  # looped EOT: the configuration of the gradient call in flight
        self.audit = RandomnessAudit()
        self.closed = False
        self._x_clean: np.ndarray | None = None
        self._ids: np.ndarray | None = None

    # ------------------------------------------------------------------ batch
    def set_batch(self, x_clean: np.ndarray, sample_ids: Sequence[int]) -> None:
        """The clean samples now under attack and their ids. Raises if their bound-balls are not disjoint."""
        flat = np.asarray(x_clean, dtype=np.float64).reshape(len(x_clean), -1)
        ids = np.asarray(sample_ids, dtype=np.int64).reshape(-1)
        if len(ids) != len(flat):
            raise ValueError(f"Got {len(ids)} sample ids for {len(flat)} samples")
        if self.configs is not None and not self.positional and len(flat) > 1:
            if self.bound is None:
                raise AmbiguousRowsError("An attack without a perturbation bound can only be controlled one sample "
                                         "at a time")
            gap = min_separation(flat)
            if gap <= 2 * self._slack_bound():
                raise AmbiguousRowsError(f"Clean samples of the batch are {gap:.4g} apart in Linf, not more than twice "
                                         f"the attack's bound {self.bound:.4g}: their rows cannot be told apart")
        self._x_clean, self._ids = flat, ids

    def _slack_bound(self) -> float:
        return self.bound * (1 + BOUND_RTOL) + BOUND_ATOL

    # ------------------------------------------------------------------ rows of a call
    def rows(self, x: np.ndarray, gradient: bool, has_labels: bool) -> tuple[np.ndarray | None, np.ndarray, int]:
        """
        ``(per-row base seeds or None for fresh, per-row sample ids, K)`` for a call on rows ``x``; on a
        loss-gradient call (``gradient`` and ``has_labels``) with ``K > 1`` the call is to be expanded ``K`` times
        and the seeds and ids returned are those of the expanded rows. Counts the rows in the audit.
        """
        n = len(x)
        audit = self.audit
        audit.calls += 1
        audit.gradient_calls += int(gradient)
        k = self.eot_samples if gradient and self.single_config is None else 1
        if k > 1 and not has_labels:
            audit.rows_purified += n
            audit.rows_uncontrolled += n
            msg = (f"eot_samples={k} averages loss gradients, but this gradient call has no labels (a class gradient, "
                   "e.g. DeepFool or JSMA): use eot_samples=1 with such attacks")
            audit.errors.append(msg)
            raise RandomnessEscapeError(msg)
        ids = self._identify(x)
        audit.rows_purified += n * k
        audit.rows_intended += n * k
        for i in ids.tolist():
            audit.rows_per_sample[i] = audit.rows_per_sample.get(i, 0) + k
        if self.configs is None:
            return None, np.tile(ids, k), k
        if self.single_config is not None and gradient:
            seeds = np.full(n, self.configs[self.single_config], dtype=np.int64)
        else:
            seeds = np.repeat(np.asarray(self.configs[:k], dtype=np.int64), n)
        return seeds, np.tile(ids, k), k

    def _identify(self, x: np.ndarray) -> np.ndarray:
        if self._ids is None:
            self._fail(len(x), "the control has no batch set (call set_batch before the attack runs)")
        n_clean = len(self._ids)
        if self.positional:
            if len(x) != n_clean:
                self._fail(len(x), f"a positional control of {n_clean} samples got a call of {len(x)} rows")
            if self.bound is not None:  # an attack's rows in order: each must lie in its own sample's ball
                own = np.abs(np.asarray(x, dtype=np.float64).reshape(len(x), -1) - self._x_clean).max(axis=1)
                if own.max() > self._slack_bound():
                    bad = int((own > self._slack_bound()).sum())
                    self._fail(len(x), f"{bad} of {len(x)} rows lie farther than the attack's bound "
                                       f"{self.bound:.4g} (Linf) from their own sample", ambiguous=bad)
            return self._ids.copy()
        if n_clean == 1:
            return np.repeat(self._ids, len(x))
        if self.configs is None:  # fresh noise: identity only feeds the per-sample audit; nearest is enough
            return self._ids[self._nearest(x)[0]]
        nearest, dist = self._nearest(x)
        inside = dist <= self._slack_bound()
        if not inside.all():
            bad = int((~inside).sum())
            self._fail(len(x), f"{bad} of {len(x)} rows lie farther than the attack's bound {self.bound:.4g} (Linf) "
                               f"from every clean sample (nearest {float(dist.max()):.4g})", ambiguous=bad)
        return self._ids[nearest]

    def _nearest(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index of the nearest clean sample (Linf) of each row and its distance, in chunks to bound memory."""
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if len(flat) == len(self._x_clean):  # the usual case: the whole batch in order
            own = np.abs(flat - self._x_clean).max(axis=1)
            if self.bound is not None and own.max() <= self._slack_bound():
                return np.arange(len(flat)), own  # within the bound of its own sample, and balls are disjoint
        idx = np.empty(len(flat), dtype=np.int64)
        dist = np.empty(len(flat))
        chunk = max(1, (1 << 24) // max(1, flat.shape[1] * len(self._x_clean)))
        for a in range(0, len(flat), chunk):
            d = np.abs(flat[a:a + chunk, None, :] - self._x_clean[None]).max(axis=2)
            idx[a:a + chunk] = d.argmin(axis=1)
            dist[a:a + chunk] = d.min(axis=1)
        return idx, dist

    def _fail(self, n: int, why: str, ambiguous: int | None = None) -> None:
        self.audit.rows_purified += n
        self.audit.rows_ambiguous += n if ambiguous is None else ambiguous
        self.audit.rows_uncontrolled += 0 if ambiguous is None else n - ambiguous
        self.audit.errors.append(why)
        raise AmbiguousRowsError(f"Cannot tell which sample each row belongs to: {why}. RandomnessAlignedAttack attacks "
                                 "one sample at a time when the attack has no perturbation bound; pass "
                                 "batch_size=1 to force it")

    def record_chosen(self, sample_ids: Sequence[int]) -> None:
        """Count rows an attack ran under named draws it chose itself (explicit seeds per row): intended by
        construction, so they join the audit as intended rows of their samples."""
        ids = np.asarray(sample_ids, dtype=np.int64).reshape(-1)
        self.audit.calls += 1
        self.audit.rows_purified += len(ids)
        self.audit.rows_intended += len(ids)
        for i in ids.tolist():
            self.audit.rows_per_sample[i] = self.audit.rows_per_sample.get(i, 0) + 1

    def record_escape(self, n: int, why: str) -> None:
        """Count ``n`` rows that ran (or would have run) outside this control."""
        self.audit.rows_purified += n
        self.audit.rows_uncontrolled += n
        self.audit.errors.append(why)

    # ------------------------------------------------------------------ lifetime
    def activate(self) -> None:
        with _ACTIVE_LOCK:
            _ACTIVE.append(self)

    def deactivate(self) -> None:
        self.closed = True
        with _ACTIVE_LOCK:
            if self in _ACTIVE:
                _ACTIVE.remove(self)


def min_separation(flat: np.ndarray) -> float:
    """Smallest Linf distance between two rows of ``flat`` (row by row to bound memory)."""
    return min((float(np.abs(flat[a + 1:] - flat[a]).max(axis=1).min()) for a in range(len(flat) - 1)),
               default=np.inf)


class StepNoise:
    """
    The noise of one internal batch's chain: ``source(k)`` is step ``k``'s noise on the chain's device and dtype.

    Held in host memory (aligned noise, CPU fresh noise) and copied per step, or drawn per step on the device from
    the seed ``seed + k`` (GPU fresh noise). Either way step ``k``'s noise is a pure function of ``k``: a
    checkpointed step draws it inside, its recomputation gets the same values, and the device holds no copy of
    the noise between the forward pass and the backward pass.
    """

    def __init__(self, device: "torch.device", dtype: "torch.dtype", host: "torch.Tensor | None" = None,
                 seed: int | None = None, shape: tuple[int, ...] | None = None) -> None:
        self.device, self.dtype, self.host, self.seed, self.shape = device, dtype, host, seed, shape
        self._generator = None

    def __call__(self, k: int) -> "torch.Tensor":
        import torch

        if self.host is not None:
            return self.host[k].to(self.device, self.dtype, non_blocking=True)
        if self._generator is None:
            self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed((self.seed + k) % TORCH_SEED_LIMIT)  # reseeded per step: a recomputation redraws exactly
        return torch.randn(self.shape, generator=self._generator, device=self.device).to(self.dtype)


__all__ = [
    "ATTACK_DRAW_OFFSET", "AmbiguousRowsError", "DIGITS_SPLIT_SEED", "DRAW_FAMILY_SIZE", "EOT_SEED_STRIDE",
    "EVALUATION_DRAW_OFFSET", "FRESH_CHAIN_SEED_LIMIT", "FRESH_GENERATOR_TAG", "MAX_SEED", "P_I", "P_S", "P_T",
    "RandomnessAudit", "RandomnessControl", "RandomnessEscapeError", "SEED_LIMIT", "START_STREAM_ART",
    "START_STREAM_DIFFATTACK", "START_STREAM_DIFFHAMMER", "START_STREAM_SURROGATE", "StepNoise",
    "TORCH_SEED_LIMIT", "TRANSFER_SEED_OFFSET", "active_controls", "aligned_noise", "attack_draw_seeds",
    "eot_seeds", "evaluation_draw_seeds", "fresh_chain_seed", "min_separation", "numpy_seeded",
    "numpy_start_seed", "seed_hash", "start_seed", "step_seed", "transfer_test_seed", "urandom_seed",
]
