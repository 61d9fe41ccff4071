"""Deterministic mode's kernel choices (attention, TF32 through either PyTorch API, cuBLAS' workspace) and the
device choices a GPU run depends on, checked on the CPU where the flags themselves can be observed."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from art_diffpure import determinism
from conftest import make_purifier


def test_attention_runs_on_the_math_kernel_forward_and_backward_then_the_flags_return(images):
    cuda = torch.backends.cuda
    before = (cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled(), cuda.math_sdp_enabled())
    purifier = make_purifier(t_star=3, seed=1, deterministic=True)
    seen = []
    purifier.model.register_forward_hook(
        lambda m, a, o: seen.append((cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled(),
                                     cuda.math_sdp_enabled())))
    x = torch.tensor(images, requires_grad=True)
    out = purifier.forward(x)[0]
    assert (cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled(), cuda.math_sdp_enabled()) == before
    out.sum().backward()
    assert seen and all(flags == (False, False, True) for flags in seen)
    assert (cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled(), cuda.math_sdp_enabled()) == before


# In a separate process: the fp32_precision API, once used, makes the legacy TF32 flags raise for the whole process.
NEW_API = """
import torch, numpy as np, sys
sys.path.insert(0, sys.argv[1])
from conftest import make_purifier
torch.backends.cuda.matmul.fp32_precision = "tf32"
try:
    torch.backends.cuda.matmul.allow_tf32
    print("legacy readable")
except RuntimeError:
    print("legacy raises")
purifier = make_purifier(t_star=3, seed=1, deterministic=True)
seen = []
purifier.model.register_forward_hook(lambda m, a, o: seen.append(torch.backends.cuda.matmul.fp32_precision))
x = torch.rand(2, 1, 8, 8, requires_grad=True)
purifier.forward(x)[0].sum().backward()
print(sorted(set(seen)), torch.backends.cuda.matmul.fp32_precision)
"""


def test_deterministic_mode_uses_the_fp32_precision_api_where_the_process_does():
    tests = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, "-c", NEW_API, tests], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "['ieee'] tf32", lines  # no TF32 inside the chain; the caller's setting afterwards


def test_cublas_workspace_is_set_and_a_late_setting_is_reported(monkeypatch, caplog):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with caplog.at_level(logging.WARNING):
        make_purifier(t_star=2, deterministic=True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == determinism.CUBLAS_DETERMINISTIC_WORKSPACE
    assert "before any CUDA call" in caplog.text
    caplog.clear()
    make_purifier(t_star=2, deterministic=True)  # already set (e.g. in the environment): nothing to say
    assert "before any CUDA call" not in caplog.text


def test_checkpoint_auto_is_decided_once_per_call(images, monkeypatch):
    purifier = make_purifier(t_star=3, seed=1, checkpoint="auto", batch_size=2)  # 6 images: 3 internal batches
    budgets = iter([10**12, 0, 0, 0, 10**12, 0])  # a budget that would flip between internal batches
    measured = []
    monkeypatch.setattr(purifier, "_checkpoint_budget", lambda device: next(budgets))
    original = purifier._graph_bytes
    monkeypatch.setattr(purifier, "_graph_bytes", lambda *a: measured.append(1) or original(*a))
    x = torch.tensor(images, requires_grad=True)
    purifier.forward(x)[0].sum().backward()
    assert len(measured) == 1 and purifier.last_checkpointed is False  # the first batch's decision, for all three
    grad_auto = x.grad.clone()
    plain = make_purifier(t_star=3, seed=1, checkpoint=False, batch_size=2)
    xp = torch.tensor(images, requires_grad=True)
    plain.forward(xp)[0].sum().backward()
    np.testing.assert_array_equal(grad_auto.numpy(), xp.grad.numpy())


def test_device_cuda_n_becomes_the_current_device(monkeypatch):
    from art_diffpure.commands import inputs as loading

    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: current.append(index))
    assert loading.torch_device("cuda:1") == "cuda:1" and current == [1]


def test_cpu_ranks_bind_no_gpu(monkeypatch, images):
    import torch.distributed as dist

    from art_diffpure.evaluations import distributed

    bound = []
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(distributed, "bind_local_gpu", lambda: bound.append(1))
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda *a: "gloo")
    monkeypatch.setattr(distributed, "rank_and_world", lambda: (0, 1))

    class Stop(Exception):
        pass

    def factory():
        raise Stop  # the binding decision is made before the factory runs

    with pytest.raises(Stop):
        distributed.sharded_evaluate(factory, images, np.zeros(len(images), dtype=int))
    assert bound == []
    monkeypatch.setattr(dist, "get_backend", lambda *a: "nccl")
    with pytest.raises(Stop):
        distributed.sharded_evaluate(factory, images, np.zeros(len(images), dtype=int))
    assert bound == [1]
