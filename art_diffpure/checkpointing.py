"""When the purifier recomputes instead of storing: the memory a reverse step's graph keeps, and the budget.

``checkpoint="auto"`` runs the first reverse step plainly, counts what its autograd graph saves, and checkpoints
the rest of the chain only when the whole un-checkpointed call would exceed the budget (half of the free device
memory unless given). Recomputation is exact because each step's noise is a pure function of its step (copied
from the host cache, or drawn from a per-step seed), never the state of a persistent generator.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["chain_bytes", "free_bytes", "graph_bytes", "host_available_bytes", "memory_budget"]

#: Budget when the device cannot be asked (no /proc/meminfo): 2 GiB.
FALLBACK_BUDGET_BYTES = 2 << 30


def graph_bytes(model: Any, fn: Callable, *args) -> tuple[int, Any]:
    """
    Run ``fn(*args)`` and count the bytes of the distinct tensor storages its autograd graph saves. The frozen
    weights of ``model`` and the tensors in ``args[1:]`` (e.g. noise passed in) exist anyway: not counted.
    Returns ``(bytes, fn(*args))``.
    """
    import torch

    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    params += [a for a in args[1:] if isinstance(a, torch.Tensor)]
    seen = {p.untyped_storage().data_ptr() for p in params}
    total = 0

    def pack(t):
        nonlocal total
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args)
    return total, out


def host_available_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes; ``None`` where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def free_bytes(device: "torch.device") -> int | None:
    """
    Memory this process can still use on ``device``: on CUDA the driver's free memory plus the blocks PyTorch's
    caching allocator holds but does not use; on the CPU ``MemAvailable``; ``None`` when unknown.
    """
    import torch

    if device.type == "cuda":
        # mem_get_info counts blocks PyTorch's caching allocator holds but does not use as taken: after one
        # un-checkpointed gradient freed its graph into the cache, the next call would see that much less and
        # flip to checkpointing mid-attack. Those cached blocks are free to this process: count them.
        cached_unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + max(0, cached_unused)
    return host_available_bytes()


def memory_budget(device: "torch.device", explicit: int | None = None) -> int:
    """Bytes an un-checkpointed chain may keep: ``explicit`` if given, else half of the memory free on ``device``."""
    if explicit is not None:
        return int(explicit)
    free = free_bytes(device)
    return FALLBACK_BUDGET_BYTES if free is None else free // 2


def chain_bytes(step_bytes: int, steps: int, rows: int, state_bytes: int, checkpointed: bool) -> int:
    """
    Memory the autograd graph of a whole chain keeps until the backward pass, from the bytes one reverse step's
    graph saves for ``rows`` rows (:func:`graph_bytes`): every step's graph without checkpointing; with it, the
    ``steps`` saved states (``state_bytes`` each, all rows) plus one step's graph while it is recomputed.
    """
    if checkpointed:
        return steps * state_bytes + step_bytes
    return steps * step_bytes
