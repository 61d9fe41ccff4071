"""
Randomness-aligned evaluation sharded across processes with ``torch.distributed``.

Every rank attacks a contiguous shard of the samples with their GLOBAL sample ids, so the randomness of
sample ``i`` (purifier noise ``hash(s, i, step)`` and the PGD random start) is the same whichever rank runs
it; the per-sample results are gathered with ``all_gather_object`` and every rank returns the merged report.
Without an initialised process group (or with one process) it is a plain
:func:`~art_diffpure.evaluations.aligned.evaluate_aligned`.

Launch (one process per GPU, or several CPU processes with the gloo backend)::

    torchrun --nproc_per_node=2 -m art_diffpure.commands.distributed --n-images 64 --out results.json

Sharding: :func:`shard_indices` splits ``0..n-1`` into ``world_size`` CONTIGUOUS ranges whose boundaries fall
on multiples of ``block`` (the attack's batch size). The attack then sees exactly the batches a
single-process run sees, so results are identical to it, including the PGD random starts (ART draws them per
batch from numpy seeded with ``seed_hash(s, first id of the batch, 0)``).
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["bind_local_gpu", "init_from_env", "rank_and_world", "shard_indices",
           "sharded_evaluate"]

def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    dist = _dist()
    return (dist.get_rank(), dist.get_world_size()) if dist is not None else (0, 1)


def shard_indices(n: int, rank: int, world_size: int, block: int = 1) -> np.ndarray:
    """
    The indices of ``0..n-1`` that rank ``rank`` of ``world_size`` evaluates: a contiguous range.

    The ``ceil(n / block)`` blocks of ``block`` consecutive indices are split as evenly as possible (earlier
    ranks get one more block when they do not divide), so shard boundaries are multiples of ``block``. A rank
    may get an empty shard when there are fewer blocks than ranks.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    if n < 0 or block < 1:
        raise ValueError("n must be >= 0 and block >= 1")
    n_blocks = math.ceil(n / block)
    base, extra = divmod(n_blocks, world_size)
    first = rank * base + min(rank, extra)
    count = base + (1 if rank < extra else 0)
    return np.arange(first * block, min((first + count) * block, n), dtype=np.int64)


def sharded_evaluate(
    attack_or_factory: Any | Callable[[], Any],
    x: np.ndarray,
    y: np.ndarray,
    sample_ids: Sequence[int] | np.ndarray | None = None,
    block: int | None = None,
    return_x_adv: bool = False,
) -> dict[str, Any]:
    """
    :func:`~art_diffpure.evaluations.aligned.evaluate_aligned` over all of ``x``, this rank doing its :func:`shard_indices` share.

    :param attack_or_factory: a ``RandomnessAlignedAttack`` or a callable ``() -> RandomnessAlignedAttack``
        (called on every rank, e.g. to put the models on this rank's GPU).
    :param x: ALL samples (every rank passes the same arrays).
    :param y: all labels.
    :param sample_ids: global sample ids (default ``arange(n)``): sample ``i``'s randomness depends only on
        ``(seed, sample_ids[i], step)``.
    :param block: shard granularity (default: the attack's ``batch_size``, so batches match a single-process run).
    :param return_x_adv: also return the merged adversarial examples under ``"x_adv"`` (a numpy array).
    :return: the merged report on every rank: accuracies over all samples, per-sample lists in global order,
        ``"world_size"``, ``"shards"`` (``[first, stop)`` per rank); ``wall_time_s`` is the slowest rank's.
    """
    from art_diffpure.attacks.randomness_aligned import RandomnessAlignedAttack
    from art_diffpure.evaluations.aligned import evaluate_aligned
    from art_diffpure.evaluations.result import EvaluationResult

    if not isinstance(attack_or_factory, RandomnessAlignedAttack) and "LOCAL_RANK" in os.environ:
        import torch
        import torch.distributed as dist

        gpu_ranks = not dist.is_initialized() or dist.get_backend() == "nccl"  # CPU ranks (gloo) bind no GPU
        if gpu_ranks and torch.cuda.is_available() and torch.cuda.device_count() > int(os.environ["LOCAL_RANK"]):
            bind_local_gpu()  # so the factory's models land on this rank's GPU, not all on GPU 0
    attack = attack_or_factory if isinstance(attack_or_factory, RandomnessAlignedAttack) else attack_or_factory()
    x = np.asarray(x)
    y = np.asarray(y)
    n = len(x)
    ids = np.arange(n, dtype=np.int64) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64).reshape(-1)
    if len(ids) != n or len(y) != n:
        raise ValueError(f"x, y and sample_ids differ in length ({n}, {len(y)}, {len(ids)})")
    rank, world = rank_and_world()
    block = int(block or attack.batch_size)
    t0 = time.perf_counter()
    positions = shard_indices(n, rank, world, block)
    report, x_adv = None, None
    if len(positions):
        report = evaluate_aligned(attack, x[positions], y[positions], sample_ids=ids[positions])
        x_adv = attack.last_x_adv if return_x_adv else None
    local = (positions, report, x_adv)
    if world > 1:
        gathered: list = [None] * world
        _dist().all_gather_object(gathered, local)
    else:
        gathered = [local]
    merged = EvaluationResult.merge([(p, r) for p, r, _ in gathered], n).to_dict()
    merged["world_size"] = world
    merged["shards"] = [[int(p[0]), int(p[-1]) + 1] if len(p) else [] for p, _, _ in gathered]
    merged["total_wall_time_s"] = time.perf_counter() - t0
    if return_x_adv:
        out = np.empty_like(x)
        for p, _, xa in gathered:
            if len(p):
                out[p] = xa
        merged["x_adv"] = out
    return merged


# ---------------------------------------------------------------------------------------------------- CLI
def bind_local_gpu() -> "str | None":
    """
    Make this rank's GPU (``LOCAL_RANK``) the current CUDA device and return ``"cuda:<r>"``; ``None`` without CUDA.
    ART and :class:`DiffusionPurifier` place models on ``cuda:<current device>``: without this every rank of a
    library run lands on GPU 0. Call it before building the models (``sharded_evaluate`` calls it before the
    factory when ``LOCAL_RANK`` is set).
    """
    import torch

    if not torch.cuda.is_available():
        return None
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    if rank >= torch.cuda.device_count():
        raise RuntimeError(f"LOCAL_RANK={rank} but only {torch.cuda.device_count()} GPU(s): launch at most one "
                           "process per GPU, or run on the CPU (--device cpu, gloo backend)")
    torch.cuda.set_device(rank)
    return f"cuda:{rank}"


def init_from_env(backend: str | None, device: str = "cpu") -> bool:
    """
    Initialise the default process group from torchrun's environment; ``False`` when not launched by it. The
    backend follows the DEVICE, not the machine: ``--device cpu`` uses gloo even where CUDA exists (several CPU
    processes per machine are then fine); ``--device gpu`` uses nccl and binds each rank to its GPU.
    """
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = backend or ("nccl" if device == "gpu" else "gloo")
    if device == "gpu":
        bind_local_gpu()
    dist.init_process_group(backend=backend)
    return True
