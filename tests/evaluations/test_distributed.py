"""Sharded evaluation (art_diffpure.evaluations.distributed): sharding, merging, 2 gloo processes == 1 process."""
from __future__ import annotations

import os
import pickle
import socket
import sys

import numpy as np
import pytest
import torch

from conftest import requires_gpus

from art_diffpure.evaluations.aligned import evaluate_aligned
from art_diffpure.evaluations.distributed import rank_and_world, shard_indices, sharded_evaluate

N, T_STAR, STEPS, BATCH = 6, 4, 3, 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup():
    from conftest import art_classifier, make_purifier, tiny_classifier

    from art_diffpure.attacks.randomness_aligned import RandomnessAlignedAttack

    torch.set_num_threads(1)
    x = np.random.RandomState(0).rand(N, 1, 8, 8).astype(np.float32)
    y = np.arange(N) % 10
    classifier = art_classifier(tiny_classifier(), make_purifier(t_star=T_STAR, seed=0, batch_size=8))
    attack = RandomnessAlignedAttack(classifier, seed=3, eps=0.1, eps_step=0.03, max_iter=STEPS, batch_size=BATCH)
    return attack, x, y


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        attack, x, y = _setup()
        report = sharded_evaluate(attack, x, y, sample_ids=np.arange(100, 100 + N), return_x_adv=True)
        with open(f"{out}.{rank}", "wb") as f:
            pickle.dump(report, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("n,world,block", [(10, 3, 1), (10, 3, 4), (7, 2, 2), (2, 4, 1), (0, 2, 3), (16, 4, 4)])
def test_shard_indices_partition(n, world, block):
    shards = [shard_indices(n, r, world, block) for r in range(world)]
    joined = np.concatenate(shards) if shards else np.array([])
    np.testing.assert_array_equal(joined, np.arange(n))  # contiguous, in rank order, disjoint, complete
    for s in shards:
        if len(s):
            assert s[0] % block == 0  # boundaries on multiples of the block
            np.testing.assert_array_equal(s, np.arange(s[0], s[-1] + 1))
    with pytest.raises(ValueError):
        shard_indices(n, world, world)


def test_single_process_is_plain_evaluate():
    assert rank_and_world() == (0, 1)
    attack, x, y = _setup()
    merged = sharded_evaluate(attack, x, y, return_x_adv=True)
    attack2, _, _ = _setup()
    plain = evaluate_aligned(attack2, x, y).to_dict()
    for key in ("clean_accuracy", "robust_accuracy", "adv_pred", "clean_pred", "success", "sample_ids"):
        assert merged[key] == plain[key]
    np.testing.assert_array_equal(merged["x_adv"], attack2.last_x_adv)
    assert merged["world_size"] == 1 and merged["shards"] == [[0, N]]


def test_two_gloo_processes_match_one(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "report")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    with open(f"{out}.0", "rb") as f:
        r0 = pickle.load(f)
    with open(f"{out}.1", "rb") as f:
        r1 = pickle.load(f)
    attack, x, y = _setup()
    single = evaluate_aligned(attack, x, y, sample_ids=np.arange(100, 100 + N)).to_dict()
    assert r0["world_size"] == 2 and r0["shards"] == [[0, 4], [4, 6]]
    for key in ("clean_pred", "adv_pred", "success", "sample_ids", "clean_accuracy", "robust_accuracy"):
        assert r0[key] == single[key], key
        assert r1[key] == single[key], key  # every rank returns the merged report
    np.testing.assert_allclose(r0["x_adv"], attack.last_x_adv, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(r0["x_adv"], r1["x_adv"])


@pytest.mark.parametrize("device, backend", [("cpu", "gloo"), ("gpu", "nccl")])
def test_backend_follows_the_device_not_the_machine(device, backend, monkeypatch):
    """--device cpu on a CUDA machine must use gloo (several CPU ranks); --device gpu binds each rank to its GPU."""
    import torch
    import torch.distributed as dist

    from art_diffpure.evaluations import distributed

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda r: calls.append(("set_device", r)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    assert distributed.init_from_env(None, device) is True
    assert calls == ([("set_device", 1)] if device == "gpu" else []) + [("init", backend)]


def test_more_ranks_than_gpus_is_a_clear_error(monkeypatch):
    import torch

    from art_diffpure.evaluations import distributed

    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(RuntimeError, match="one process per GPU"):
        distributed.bind_local_gpu()


def test_module_entry_point_help(monkeypatch, capsys):
    """``python -m art_diffpure.commands.distributed`` (the torchrun target of docs/scaling.md) parses its arguments."""
    import runpy

    monkeypatch.setattr(sys, "argv", ["art_diffpure.commands.distributed", "--help"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("art_diffpure.commands.distributed", run_name="__main__", alter_sys=True)
    out = capsys.readouterr().out
    assert stop.value.code == 0 and "--n-images" in out and "--device" in out


def _nccl_worker(rank: int, world: int, port: int, out: str) -> None:
    """One GPU rank: bound to its own GPU before anything builds a model, then the same sharded evaluation."""
    import torch.distributed as dist

    from art_diffpure.evaluations.distributed import bind_local_gpu

    os.environ["LOCAL_RANK"] = str(rank)
    bind_local_gpu()
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from conftest import art_classifier, make_purifier, tiny_classifier

        from art_diffpure.attacks.randomness_aligned import RandomnessAlignedAttack

        x = np.random.RandomState(0).rand(N, 1, 8, 8).astype(np.float32)
        y = np.arange(N) % 10
        classifier = art_classifier(tiny_classifier(), make_purifier(t_star=T_STAR, seed=0, batch_size=8,
                                                                    device_type="gpu"), device_type="gpu")
        assert classifier._device == torch.device(f"cuda:{rank}")  # each rank on its own GPU, not all on GPU 0
        attack = RandomnessAlignedAttack(classifier, seed=3, eps=0.1, eps_step=0.03, max_iter=STEPS,
                                         batch_size=BATCH)
        report = sharded_evaluate(attack, x, y, sample_ids=np.arange(100, 100 + N))
        with open(f"{out}.{rank}", "wb") as f:
            pickle.dump(report, f)
    finally:
        dist.destroy_process_group()


@requires_gpus(2)  # a 2-rank NCCL run, one rank per GPU
def test_two_nccl_ranks_match_one_gpu_process(tmp_path):
    """Two NCCL ranks on two GPUs give the merged report of one process on one GPU (predictions exactly)."""
    import torch.multiprocessing as mp

    from conftest import art_classifier, make_purifier, tiny_classifier

    from art_diffpure.attacks.randomness_aligned import RandomnessAlignedAttack

    out = str(tmp_path / "report")
    mp.spawn(_nccl_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    reports = []
    for rank in range(2):
        with open(f"{out}.{rank}", "rb") as f:
            reports.append(pickle.load(f))
    x = np.random.RandomState(0).rand(N, 1, 8, 8).astype(np.float32)
    y = np.arange(N) % 10
    classifier = art_classifier(tiny_classifier(), make_purifier(t_star=T_STAR, seed=0, batch_size=8,
                                                                device_type="gpu"), device_type="gpu")
    single = evaluate_aligned(RandomnessAlignedAttack(classifier, seed=3, eps=0.1, eps_step=0.03, max_iter=STEPS,
                                     batch_size=BATCH), x, y, sample_ids=np.arange(100, 100 + N)).to_dict()
    assert reports[0]["world_size"] == 2
    for key in ("clean_pred", "adv_pred", "sample_ids"):
        assert reports[0][key] == single[key] == reports[1][key], key
