"""DiffusionPurifier: seed alignment, determinism, gradients, ART integration, input checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import (
    art_classifier, make_purifier, requires_gpus, tiny_classifier, tiny_scheduler, tiny_unet,
)

from art_diffpure import DiffusionPurifier
from art_diffpure.randomness import aligned_noise, seed_hash, step_seed
from art_diffpure.samplers import ddpm_step
from art_diffpure.evaluations.aligned import evaluate_aligned

SAMPLERS = ["ddpm", "reverse", "ddim"]
# The UNet is not bitwise batch-invariant (different conv/GEMM blockings per batch size).
BATCH_TOL = 1e-5


# ---------------------------------------------------------------------------- seed hash
def test_hash_matches_formula_table():
    p_s, p_i, p_t = 83492791, 73856093, 19349663
    for s, i, t in [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 999, 199), (123456, 7, 3), (2**31, 2**20, 1999)]:
        expected = ((p_s * s) ^ (p_i * i) ^ (p_t * t)) % 2**32
        assert seed_hash(s, i, t) == expected
    # A few values written out by hand: hash(1, 2, 3) = (83492791) ^ (147712186) ^ (58048989) mod 2**32
    assert seed_hash(1, 2, 3) == (83492791 ^ 147712186 ^ 58048989) % 2**32
    assert step_seed(1, 2, 3, reverse=False) == seed_hash(1, 2, 6)
    assert step_seed(1, 2, 3, reverse=True) == seed_hash(1, 2, 7)


def test_aligned_noise_is_per_sample_generator():
    noise = aligned_noise([5, 5], [3, 9], [0, 4], (1, 2, 2), reverse=True)
    g = torch.Generator().manual_seed(step_seed(5, 9, 4, reverse=True))
    assert torch.equal(noise[1, 1], torch.randn((1, 1, 2, 2), generator=g)[0])
    assert noise.shape == (2, 2, 1, 2, 2)


# ---------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_same_seed_bit_identical_and_batch_invariant(sampler, images):
    purifier = make_purifier(sampler=sampler, seed=7)
    a = purifier.purify(images)
    assert np.array_equal(a, purifier.purify(images))  # same batch: bit-identical
    order = np.array([4, 1, 5, 0, 3, 2])
    shuffled = purifier.purify(images[order], sample_ids=order)
    np.testing.assert_allclose(shuffled, a[order], atol=BATCH_TOL, rtol=0)
    single = purifier.purify(images[2:3], sample_ids=[2])
    np.testing.assert_allclose(single, a[2:3], atol=BATCH_TOL, rtol=0)
    # internal batching does not change anything either
    small_batches = make_purifier(sampler=sampler, seed=7, batch_size=4).purify(images)
    np.testing.assert_allclose(small_batches, a, atol=BATCH_TOL, rtol=0)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_different_seeds_differ(sampler, images):
    purifier = make_purifier(sampler=sampler, seed=0)
    a, b = purifier.purify(images, seed=0), purifier.purify(images, seed=1)
    assert np.abs(a - b).max() > 1e-3
    # sample id selects xi too: the same image as sample 0 and as sample 1 differs
    same = np.repeat(images[:1], 2, axis=0)
    out = purifier.purify(same)
    assert np.abs(out[0] - out[1]).max() > 1e-3


def test_fresh_randomness_and_global_rng_untouched(images):
    purifier = make_purifier(seed=None)
    torch.manual_seed(1234)
    np.random.seed(99)
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()
    a, b = purifier.purify(images), purifier.purify(images)
    assert np.abs(a - b).max() > 1e-3
    x = torch.tensor(images, requires_grad=True)
    purifier.forward(x)[0].sum().backward()
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert all(np.array_equal(u, v) if isinstance(u, np.ndarray) else u == v
               for u, v in zip(np.random.get_state(), np_state))


def test_randomness_context_fixes_seed_and_ids(images):
    purifier = make_purifier(seed=None)
    ids = [10, 11, 12, 13, 14, 15]
    with purifier.randomness(3, ids):
        a = purifier.forward(torch.tensor(images))[0].numpy()
        b = purifier.purify(images)
    assert np.array_equal(a, b)
    np.testing.assert_array_equal(a, purifier.purify(images, seed=3, sample_ids=ids))
    # per-row seeds (e.g. EOT copies)
    with purifier.randomness([3, 3, 4, 4, 5, 5], ids):
        c = purifier.purify(images)
    np.testing.assert_array_equal(c[:2], a[:2])
    assert np.abs(c[2:] - a[2:]).max() > 1e-3


def test_multistep_forward_uses_per_step_seeds():
    purifier = make_purifier(t_star=3, seed=2, forward_noising="multistep")
    x = np.full((1, 1, 8, 8), 0.5, dtype=np.float32)
    _, traj = purifier.purify(x, return_trajectory=True)
    # traj: input, 3 forward states, 3 reverse states
    assert traj.shape[0] == 1 + 3 + 3
    z = torch.zeros(1, 1, 8, 8)  # x=0.5 maps to 0 in model space
    betas = tiny_scheduler().betas
    for t in range(3):
        g = torch.Generator().manual_seed(step_seed(2, 0, t, reverse=False))
        z = (1 - betas[t]).sqrt() * z + betas[t].sqrt() * torch.randn((1, 1, 8, 8), generator=g)
    expected = ((z.clamp(-1, 1) + 1) / 2).numpy()
    np.testing.assert_allclose(traj[3], expected, atol=1e-6)


def test_ddpm_step_matches_diffusers_step():
    sched = tiny_scheduler()
    sample = torch.randn(3, 1, 8, 8)
    out = torch.randn(3, 1, 8, 8)
    for t in [0, 1, 50, 999]:
        gens = [torch.Generator().manual_seed(100 + k) for k in range(3)]
        ref = sched.step(out, t, sample, generator=gens).prev_sample
        noise = torch.stack([torch.randn((1, 1, 8, 8), generator=torch.Generator().manual_seed(100 + k))[0]
                             for k in range(3)])
        torch.testing.assert_close(ddpm_step(sched, out, t, sample, noise), ref, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------- gradients
def _loss_fn(purifier, classifier, y):
    def loss(x):
        return torch.nn.functional.cross_entropy(classifier(purifier.forward(x)[0]), y, reduction="sum")
    return loss


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_full_gradient_matches_finite_differences(sampler):
    purifier = DiffusionPurifier(tiny_unet().double(), tiny_scheduler(), t_star=4, sampler=sampler, seed=1,
                                 device_type="cpu")
    classifier = tiny_classifier().double()
    rng = np.random.RandomState(1)
    x0 = torch.tensor(rng.uniform(0.2, 0.8, (2, 1, 8, 8)))
    y = torch.tensor([3, 7])
    loss = _loss_fn(purifier, classifier, y)
    x = x0.clone().requires_grad_(True)
    loss(x).backward()
    grad = x.grad
    h = 1e-6
    for _ in range(3):
        v = torch.tensor(rng.randn(2, 1, 8, 8))
        with torch.no_grad():
            fd = (loss(x0 + h * v) - loss(x0 - h * v)) / (2 * h)
        analytic = (grad * v).sum()
        assert abs(float(analytic - fd)) / max(abs(float(fd)), 1e-12) < 1e-4, (float(analytic), float(fd))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_checkpointing_gives_same_gradient(sampler, images):
    classifier = tiny_classifier()
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    grads = []
    for ckpt in (True, False):
        purifier = make_purifier(t_star=6, sampler=sampler, seed=4, checkpoint=ckpt)
        x = torch.tensor(images, requires_grad=True)
        _loss_fn(purifier, classifier, y)(x).backward()
        grads.append(x.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_auto_checkpoint_follows_the_memory_budget(sampler, images):
    """"auto" checkpoints only when the measured un-checkpointed chain exceeds the budget; gradients unchanged."""
    classifier = tiny_classifier()
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    grads, used = [], []
    for budget in (0, 1 << 40, None):
        purifier = make_purifier(t_star=6, sampler=sampler, seed=4, checkpoint="auto", checkpoint_budget_bytes=budget)
        x = torch.tensor(images, requires_grad=True)
        _loss_fn(purifier, classifier, y)(x).backward()
        grads.append(x.grad)
        used.append(purifier.last_checkpointed)
    assert used[:2] == [True, False]  # budget 0 forces it, 1 TiB never needs it
    assert used[2] is False  # a tiny chain fits in half of this machine's free memory
    for g in grads[1:]:
        torch.testing.assert_close(grads[0], g, atol=1e-6, rtol=1e-5)
    # no graph, no decision: predictions leave last_checkpointed alone
    purifier.purify(images)
    assert purifier.last_checkpointed is False


def test_auto_checkpoint_budget_counts_the_allocators_cache_as_free(monkeypatch):
    """On CUDA, memory PyTorch's caching allocator holds but does not use is free to this process: counting it as
    used made ``checkpoint="auto"`` flip to checkpointing after the first un-checkpointed gradient."""
    import torch

    gib = 1 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 5 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1 * gib)
    purifier = make_purifier(t_star=2, checkpoint="auto")
    assert purifier._checkpoint_budget(torch.device("cuda", 0)) == (1 + 4) * gib // 2
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 1 * gib)  # nothing cached: as before
    assert purifier._checkpoint_budget(torch.device("cuda", 0)) == gib // 2


@pytest.mark.parametrize("budget, expected", [(10_000, True), (20_000, False)])
def test_auto_checkpoint_counts_every_internal_batch(budget, expected, images, monkeypatch):
    """Internal batches of one call all keep their graphs until backward: the decision is for the whole call."""
    purifier = make_purifier(t_star=6, seed=4, batch_size=2, checkpoint="auto", checkpoint_budget_bytes=budget)

    def fixed_bytes(fn, *args):  # 1000 bytes per step of a 2-row internal batch
        return 1000, fn(*args)

    monkeypatch.setattr(purifier, "_graph_bytes", fixed_bytes)
    x = torch.tensor(images, requires_grad=True)  # 6 rows = 3 internal batches of 6 steps: 18,000 bytes
    purifier.forward(x)[0].sum().backward()
    assert purifier.last_checkpointed is expected  # a per-batch rule would see 6,000 bytes and never checkpoint


def test_graph_bytes_counts_saved_activations_not_weights(images):
    purifier = make_purifier(t_star=3, seed=1)
    z = torch.tensor(images, requires_grad=True) * 2 - 1
    noise = torch.zeros_like(z)
    nbytes, out = purifier._graph_bytes(purifier._reverse_step, z, 2, noise)
    assert out.requires_grad
    weights = sum(p.numel() * 4 for p in purifier.model.parameters())
    # at least the step's input is saved; the activations are a few copies of a 6x1x8x8 batch per layer
    assert z.numel() * 4 <= nbytes < weights + 1_000_000
    # measured with every storage: bigger, since frozen weights are saved by the convolutions
    seen, everything = set(), 0

    def pack(t):
        nonlocal everything
        if t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            everything += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        purifier._reverse_step(z, 2, noise)
    assert everything > nbytes


def test_bpda_gradient_is_classifier_gradient_at_purified_point(images):
    purifier = make_purifier(t_star=6, seed=4, gradient="bpda")
    classifier = tiny_classifier()
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    x = torch.tensor(images, requires_grad=True)
    _loss_fn(purifier, classifier, y)(x).backward()
    purified = torch.tensor(purifier.purify(images), requires_grad=True)
    torch.nn.functional.cross_entropy(classifier(purified), y, reduction="sum").backward()
    torch.testing.assert_close(x.grad, purified.grad)


# ---------------------------------------------------------------------------- ART
def test_art_pgd_end_to_end(images):
    from art.attacks.evasion import ProjectedGradientDescent

    purifier = make_purifier(t_star=5, seed=0)
    classifier = art_classifier(tiny_classifier(), purifier)
    preds = classifier.predict(images)
    assert preds.shape == (6, 10)
    eps = 0.1
    attack = ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=0.02, max_iter=5, verbose=False)
    y = preds.argmax(1)
    x_adv = attack.generate(images, y=y)
    assert x_adv.shape == images.shape and x_adv.dtype == images.dtype
    assert np.abs(x_adv - images).max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert np.abs(x_adv - images).max() > 0
    # under fixed randomness the loss must not decrease: PGD really followed the purified gradient
    loss = torch.nn.CrossEntropyLoss(reduction="none")
    def total(x):
        return float(loss(torch.tensor(classifier.predict(x)), torch.tensor(y)).sum())
    assert total(x_adv) > total(images)


def test_predict_batches_internally(images):
    purifier = make_purifier(t_star=3, seed=0, batch_size=2)
    classifier = art_classifier(tiny_classifier(), purifier)
    full = classifier.predict(images, batch_size=128)
    np.testing.assert_allclose(full, art_classifier(tiny_classifier(), make_purifier(t_star=3, seed=0))
                               .predict(images), atol=1e-5)


# ---------------------------------------------------------------------------- I/O contract
def test_input_not_modified_and_types_preserved(images):
    purifier = make_purifier(t_star=3, seed=0)
    before = images.copy()
    out = purifier.purify(images)
    assert np.array_equal(images, before)
    assert isinstance(out, np.ndarray) and out.shape == images.shape and out.dtype == images.dtype
    x64 = torch.tensor(images, dtype=torch.float64)
    x64_before = x64.clone()
    out_t = purifier.purify(x64)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float64 and out_t.shape == x64.shape
    assert torch.equal(x64, x64_before)
    assert 0 <= out.min() and out.max() <= 1


def test_channels_last_and_clip_values(images):
    nchw = make_purifier(t_star=3, seed=0).purify(images)
    nhwc = make_purifier(t_star=3, seed=0, channels_first=False).purify(images.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(nhwc.transpose(0, 3, 1, 2), nchw)
    scaled = make_purifier(t_star=3, seed=0, clip_values=(0.0, 255.0)).purify(images * 255.0)
    np.testing.assert_allclose(scaled / 255.0, nchw, atol=1e-5)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((1, 8, 8), np.float32), "rank"),
    (np.zeros((1, 3, 8, 8), np.float32), "channels"),
    (np.zeros((1, 1, 16, 16), np.float32), "8x8"),
    (np.zeros((1, 1, 8, 8), np.int64), "floating"),
    (np.full((1, 1, 8, 8), np.nan, np.float32), "NaN"),
    (np.full((1, 1, 8, 8), np.inf, np.float32), "NaN or inf"),
    (np.full((1, 1, 8, 8), 1.5, np.float32), "clip_values"),
    (np.full((1, 1, 8, 8), -0.5, np.float32), "clip_values"),
])
def test_bad_inputs_raise(bad, message):
    with pytest.raises(ValueError, match=message):
        make_purifier(t_star=2, strict=True).purify(bad)


def test_out_of_range_inputs_are_clamped_unless_strict(images):
    """ART's own preprocessors clamp; several ART attacks query points slightly outside the box."""
    purifier = make_purifier(t_star=3, seed=0)
    outside = images.copy()
    outside[:, :, 0, 0] = 1.3
    outside[:, :, 1, 1] = -0.2
    inside = np.clip(outside, 0.0, 1.0)
    np.testing.assert_array_equal(purifier.purify(outside), purifier.purify(inside))
    with_nan = images.copy()
    with_nan[2, 0, 3, 3] = np.nan  # as ART's Wasserstein attack produces: the row stays NaN, the others are exact
    out = purifier.purify(with_nan)
    assert np.isnan(out[2]).all() and np.isfinite(np.delete(out, 2, axis=0)).all()
    np.testing.assert_allclose(np.delete(out, 2, axis=0), np.delete(purifier.purify(images), 2, axis=0), atol=1e-6)
    with pytest.raises(ValueError, match="clip_values"):
        make_purifier(t_star=3, seed=0, strict=True).purify(outside)
    with pytest.raises(ValueError, match="strict"):
        make_purifier(strict="yes")


def test_clamping_does_not_mask_gradients_at_the_bounds(images):
    """Pixels exactly at 0 or 1 (most of a digits image) must keep their gradient: clamp's is zero there."""
    x = images.copy()
    x[:, :, :4] = 0.0
    x[:, :, 4:6] = 1.0
    grads = []
    for strict in (False, True):
        classifier = art_classifier(tiny_classifier(), make_purifier(t_star=3, seed=0, strict=strict))
        grads.append(classifier.loss_gradient(x, np.eye(10, dtype=np.float32)[np.arange(6)]))
    assert np.abs(grads[0][:, :, :6]).min() > 0
    np.testing.assert_array_equal(grads[0], grads[1])


def test_float64_batches_are_handed_on_in_the_model_dtype(images):
    """HopSkipJump and Boundary pass float64 arrays: the classifier behind the purifier must still run."""
    purifier = make_purifier(t_star=3, seed=0)
    classifier = art_classifier(tiny_classifier(), purifier)
    p32 = classifier.predict(images)
    p64 = classifier.predict(images.astype(np.float64))
    np.testing.assert_allclose(p64, p32, atol=1e-5)
    out, _ = purifier.forward(torch.from_numpy(images.astype(np.float64)))
    assert out.dtype == torch.float32
    assert purifier.purify(images.astype(np.float64)).dtype == np.float64  # purify keeps the caller's dtype


@pytest.mark.parametrize("seed", [0, None])
def test_defended_classifier_survives_deepcopy_and_pickle(images, seed):
    import copy
    import pickle

    purifier = make_purifier(t_star=3, seed=seed, generator_seed=5)
    classifier = art_classifier(tiny_classifier(), purifier)
    for clone in (copy.deepcopy(classifier), pickle.loads(pickle.dumps(classifier))):
        twin = clone.preprocessing_defences[0]
        assert twin is not purifier and twin._randomness.generator is not purifier._randomness.generator
        # the same weights, and for seed=None the same position in the fresh-noise sequence
        np.testing.assert_allclose(clone.predict(images), copy.deepcopy(classifier).predict(images), atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(t_star=0), "t_star"),
    (dict(t_star=1001), "t_star"),
    (dict(t_star=2.5), "t_star"),
    (dict(sampler="euler"), "sampler"),
    (dict(gradient="spsa"), "gradient"),
    (dict(forward_noising="sde"), "forward_noising"),
    (dict(batch_size=0), "batch_size"),
    (dict(clip_values=(1.0, 0.0)), "clip_values"),
    (dict(seed=-1), "seed"),
    (dict(checkpoint="sometimes"), "checkpoint"),
    (dict(checkpoint_budget_bytes=-5), "checkpoint_budget_bytes"),
])
def test_bad_parameters_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_purifier(**kwargs)


def test_wrong_number_of_sample_ids_raises(images):
    with pytest.raises(ValueError, match="sample_ids"):
        make_purifier(t_star=2).purify(images, sample_ids=[0, 1])


# ---------------------------------------------------------------------------- persistence
def test_save_and_from_pretrained_round_trip(tmp_path, images, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    purifier = make_purifier(t_star=5, seed=3)
    purifier.save_pretrained(str(tmp_path / "purifier"))
    loaded = DiffusionPurifier.from_pretrained(str(tmp_path / "purifier"), t_star=5, seed=3, device_type="cpu")
    np.testing.assert_array_equal(loaded.purify(images), purifier.purify(images))
    assert loaded.scheduler.config.variance_type == "fixed_large"


def test_a_saved_defence_loads_back_as_the_same_defence(tmp_path, images, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    purifier = make_purifier(t_star=6, sampler="ddim", ddim_steps=3, ddim_eta=1.0, gradient="bpda", seed=None,
                             clip_values=(0.0, 2.0))
    purifier.save_pretrained(str(tmp_path / "defence"))
    loaded = DiffusionPurifier.from_pretrained(str(tmp_path / "defence"), device_type="cpu")
    for name in ("t_star", "sampler", "ddim_steps", "ddim_eta", "gradient", "forward_noising", "checkpoint"):
        assert getattr(loaded, name) == getattr(purifier, name), name
    assert tuple(loaded.clip_values) == (0.0, 2.0)
    np.testing.assert_array_equal(loaded.purify(images, seed=4), purifier.purify(images, seed=4))
    assert DiffusionPurifier.from_pretrained(str(tmp_path / "defence"), t_star=3, device_type="cpu").t_star == 3


# ---------------------------------------------------------------------------- GPU


def _cpu_and_gpu(sampler: str, **kwargs):
    # t* = 50: the UNet's contribution reaches the purified image with a weight that exposes kernel errors (at
    # t* = 10 it is ~0.025, so atol 1e-5 on the image would only catch errors above ~0.04%).
    cpu = make_purifier(t_star=50, sampler=sampler, seed=5, **kwargs)
    gpu = DiffusionPurifier(tiny_unet(), tiny_scheduler(), t_star=50, sampler=sampler, seed=5, device_type="gpu",
                            **kwargs)
    return cpu, gpu


@requires_gpus(1)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_cuda_matches_cpu(sampler, images, exact_cuda):
    # Same seed: the noise is drawn on the CPU, so only kernels differ. The UNet's own output is compared too, at
    # the chain's first reverse step, so a model error cannot hide behind the chain's averaging.
    cpu, gpu = _cpu_and_gpu(sampler)
    x = torch.tensor(images)
    t = torch.full((len(x),), 49, dtype=torch.long)
    with torch.no_grad():
        np.testing.assert_allclose(gpu.model(x.cuda() * 2 - 1, t.cuda()).sample.cpu().numpy(),
                                   cpu.model(x * 2 - 1, t).sample.numpy(), rtol=1e-4, atol=1e-5)
    out = gpu.purify(x.cuda())
    assert out.device.type == "cuda"
    np.testing.assert_allclose(out.cpu().numpy(), cpu.purify(images), atol=1e-5)
    classifier = art_classifier(tiny_classifier(), gpu, device_type="gpu")
    assert classifier.device.type == "cuda"
    np.testing.assert_allclose(classifier.predict(images), art_classifier(tiny_classifier(), cpu).predict(images),
                               rtol=1e-4, atol=1e-5)


@requires_gpus(1)
@pytest.mark.parametrize("checkpoint", [False, True, "auto"])
def test_cuda_gradients_match_cpu(checkpoint, images, exact_cuda):
    cpu, gpu = _cpu_and_gpu("ddpm", checkpoint=checkpoint)
    grads = []
    for purifier, device in ((cpu, "cpu"), (gpu, "cuda")):
        x = torch.tensor(images, device=device, requires_grad=True)
        (purifier.forward(x)[0] ** 2).sum().backward()
        grads.append(x.grad.cpu().numpy())
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-3, atol=1e-5)
    if checkpoint == "auto":  # a second gradient must decide the same way (the allocator's cache is free memory)
        first = gpu.last_checkpointed
        x = torch.tensor(images, device="cuda", requires_grad=True)
        gpu.forward(x)[0].sum().backward()
        assert gpu.last_checkpointed == first


@requires_gpus(1)
def test_cuda_aligned_attack_runs_under_its_randomness(images):
    from art_diffpure import RandomnessAlignedAttack

    _, gpu = _cpu_and_gpu("ddpm")
    classifier = art_classifier(tiny_classifier(), gpu, device_type="gpu")
    attack = RandomnessAlignedAttack(classifier, seed=0, eps=0.1, eps_step=0.03, max_iter=3, batch_size=6)
    report = evaluate_aligned(attack, images, np.arange(6) % 10).to_dict()
    assert report["audit"]["attack"]["ok"] and report["audit"]["test"]["ok"]
    assert np.abs(attack.last_x_adv - images).max() <= 0.1 + 1e-6
