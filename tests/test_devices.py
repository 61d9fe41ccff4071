"""Devices, precision, determinism and the noise's memory: what a GPU run depends on, tested on the CPU.

GPU-only checks carry the ``cuda`` marker and compare against the CPU run of the same purifier.
"""
from __future__ import annotations

import copy
import logging
import os
import types

import numpy as np
import pytest
import torch
from conftest import (
    art_classifier, make_purifier, requires_gpus, tiny_classifier, tiny_scheduler, tiny_unet,
)

import art_diffpure.purifier as purifier_module
from art_diffpure import DiffusionPurifier, determinism, hub, samplers
from art_diffpure.randomness import StepNoise, aligned_noise

pytestmark = pytest.mark.usefixtures("one_thread")
SAMPLERS = ["ddpm", "reverse", "ddim"]


# ---------------------------------------------------------------------------- item 10: the user's scheduler
def _tensor_attributes(obj) -> dict:
    return {k: (v, v.clone()) for k, v in vars(obj).items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("sampler, forward_noising", [("ddpm", "one_shot"), ("ddpm", "multistep"), ("reverse", "one_shot"),
                                                      ("ddim", "one_shot")])
def test_the_users_scheduler_is_never_called_or_changed(sampler, forward_noising, images, monkeypatch):
    from diffusers import DDIMScheduler, DDPMScheduler

    scheduler = tiny_scheduler()
    before = _tensor_attributes(scheduler)
    called_on = []
    for cls in (DDPMScheduler, DDIMScheduler):
        for name in ("add_noise", "step"):
            original = getattr(cls, name)
            monkeypatch.setattr(cls, name, lambda self, *a, _o=original, **k: (called_on.append(self), _o(self, *a, **k))[1])
    purifier = DiffusionPurifier(tiny_unet(), scheduler, t_star=4, sampler=sampler, seed=1,
                                 forward_noising=forward_noising, device_type="cpu")
    purifier.purify(images)
    x = torch.tensor(images, requires_grad=True)
    purifier.forward(x)[0].sum().backward()
    assert not any(s is scheduler for s in called_on)
    after = _tensor_attributes(scheduler)
    assert after.keys() == before.keys()
    for name, (tensor, values) in before.items():
        assert after[name][0] is tensor and tensor.device.type == "cpu" and torch.equal(tensor, values), name


def test_multistep_noising_reads_the_purifiers_copy_of_the_schedule(images):
    a = make_purifier(t_star=3, seed=2, forward_noising="multistep")
    b = make_purifier(t_star=3, seed=2, forward_noising="multistep")
    b.scheduler.betas = torch.zeros_like(b.scheduler.betas)  # the user changes their object afterwards
    np.testing.assert_array_equal(a.purify(images), b.purify(images))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_shot_noising_is_bitwise_diffusers_add_noise(dtype):
    purifier = make_purifier(t_star=50)
    g = torch.Generator().manual_seed(0)
    z = torch.rand((4, 1, 8, 8), generator=g, dtype=dtype) * 2 - 1
    eps = torch.randn((4, 1, 8, 8), generator=g, dtype=dtype)
    reference = copy.deepcopy(purifier.scheduler).add_noise(z, eps, torch.full((4,), 49, dtype=torch.long))
    assert torch.equal(purifier._add_noise(z, eps, 49), reference)


# ---------------------------------------------------------------------------- item 8: half precision
def _record_dtypes(monkeypatch, purifier):
    seen = {"unet_in": set(), "unet_out": set(), "sample": set(), "model_output": set(), "noise": set()}
    original = samplers.ddpm_step

    def spy(scheduler, model_output, t, sample, noise):
        seen["sample"].add(sample.dtype)
        seen["model_output"].add(model_output.dtype)
        if noise is not None:
            seen["noise"].add(noise.dtype)
        return original(scheduler, model_output, t, sample, noise)

    monkeypatch.setattr(samplers, "ddpm_step", spy)
    purifier.model.register_forward_pre_hook(lambda m, args: seen["unet_in"].add(args[0].dtype))
    purifier.model.register_forward_hook(lambda m, args, out: seen["unet_out"].add(out.sample.dtype))
    return seen


def test_bf16_weights_keep_the_chain_in_float32(images, monkeypatch):
    fp32 = make_purifier(t_star=20, seed=3)
    bf16 = DiffusionPurifier(tiny_unet().to(torch.bfloat16), tiny_scheduler(), t_star=20, seed=3, device_type="cpu")
    seen = _record_dtypes(monkeypatch, bf16)
    x = torch.tensor(images, requires_grad=True)
    out = bf16.forward(x)[0]
    out.sum().backward()
    assert seen["unet_in"] == {torch.bfloat16} and seen["unet_out"] == {torch.bfloat16}
    assert seen["sample"] == seen["model_output"] == seen["noise"] == {torch.float32}
    assert out.dtype == torch.float32 and x.grad.dtype == torch.float32 and bool(torch.isfinite(x.grad).all())
    # The same weights in fp32 give nearly the same purification: only the UNet's own rounding differs.
    assert np.abs(out.detach().numpy() - fp32.purify(images)).max() < 0.05
    # A float64 batch (HopSkipJump) is handed on in float32, a dtype the classifier takes, not in bfloat16.
    assert bf16.forward(torch.tensor(images, dtype=torch.float64))[0].dtype == torch.float32


def test_cpu_bf16_autocast_casts_only_the_unet(images, monkeypatch):
    purifier = make_purifier(t_star=20, seed=3)
    seen = _record_dtypes(monkeypatch, purifier)
    x = torch.tensor(images, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = purifier.forward(x)[0]
        loss = out.square().sum()
    loss.backward()
    assert seen["unet_out"] == {torch.bfloat16}  # autocast ran the UNet in bf16 ...
    assert seen["sample"] == seen["model_output"] == seen["noise"] == {torch.float32}  # ... and nothing else
    assert out.dtype == torch.float32 and x.grad.dtype == torch.float32 and bool(torch.isfinite(x.grad).all())
    # The autocast gradient points the same way as the fp32 one.
    x32 = torch.tensor(images, requires_grad=True)
    purifier.forward(x32)[0].square().sum().backward()
    g, g32 = x.grad.flatten(), x32.grad.flatten()
    assert float(g @ g32 / (g.norm() * g32.norm())) > 0.95


# ---------------------------------------------------------------------------- policy: deterministic=True
@pytest.fixture
def loose_flags(monkeypatch):
    """Non-deterministic global flags for the test (TF32 on, no deterministic algorithms), restored afterwards."""
    saved = determinism.current_flags()
    determinism.set_flags((True, True, False, True, False, False))
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    yield (True, True, False, True, False, False)
    determinism.set_flags(saved)


@pytest.mark.parametrize("checkpoint", [False, True])
def test_deterministic_mode_covers_forward_and_backward_and_restores_the_flags(checkpoint, images, loose_flags):
    purifier = make_purifier(t_star=4, seed=1, checkpoint=checkpoint, deterministic=True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    during = {"forward": [], "backward": []}

    def hook(module, args, out):
        phase = "forward" if torch.is_grad_enabled() and not during["in_backward"] else "backward"
        during[phase].append(determinism.current_flags())
        if out.sample.requires_grad:
            out.sample.register_hook(lambda g: during["backward"].append(determinism.current_flags()))

    during["in_backward"] = False
    purifier.model.register_forward_hook(hook)
    x = torch.tensor(images, requires_grad=True)
    out = purifier.forward(x)[0]
    assert determinism.current_flags() == loose_flags  # restored when the call returns
    during["in_backward"] = True
    out.sum().backward()
    assert determinism.current_flags() == loose_flags  # and again when the backward pass has left the purifier
    strict = (False, False, True, False, True, True)
    assert during["forward"] and all(f == strict for f in during["forward"])
    # every step's gradient (and, with checkpointing, its recomputation) ran in deterministic mode
    assert len(during["backward"]) >= 4 and all(f == strict for f in during["backward"])
    # on the CPU only the attention kernel changes (the UNet's mid block attends: the math kernel instead of the
    # CPU flash kernel), a float32 round-off apart from the default mode
    plain = make_purifier(t_star=4, seed=1, checkpoint=checkpoint)
    xp = torch.tensor(images, requires_grad=True)
    np.testing.assert_allclose(plain.forward(xp)[0].detach().numpy(), out.detach().numpy(), rtol=0, atol=1e-6)
    plain.forward(xp)[0].sum().backward()
    np.testing.assert_allclose(xp.grad.numpy(), x.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_deterministic_mode_through_arts_loss_gradient(images, loose_flags):
    purifier = make_purifier(t_star=3, seed=1, deterministic=True)
    classifier = art_classifier(tiny_classifier(), purifier)
    grad = classifier.loss_gradient(images, np.eye(10)[np.arange(6)])
    assert determinism.current_flags() == loose_flags and np.isfinite(grad).all()


def test_default_mode_leaves_the_flags_alone(images, loose_flags):
    seen = []
    purifier = make_purifier(t_star=3, seed=1)
    purifier.model.register_forward_hook(lambda m, a, o: seen.append(determinism.current_flags()))
    purifier.purify(images)
    assert seen and all(f == loose_flags for f in seen)
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


# ---------------------------------------------------------------------------- item 7: device mismatches
def test_inputs_from_another_device_warn_once_and_still_purify(images, caplog):
    purifier = make_purifier(t_star=3, seed=1)
    expected = purifier.purify(images)
    # A device that compares unequal to the inputs' (torch.device("cpu", 0) != torch.device("cpu")) and still
    # places tensors on the CPU: the purifier sees inputs from "another device".
    purifier._device = torch.device("cpu", 0)
    classifier = art_classifier(tiny_classifier(), purifier)
    with caplog.at_level(logging.WARNING, logger="art_diffpure.purifier"):
        classifier.predict(images)
        classifier.predict(images)
        out = purifier.forward(torch.tensor(images))[0]
    messages = [r.getMessage() for r in caplog.records if "receives inputs on" in r.getMessage()]
    assert len(messages) == 1 and "runs on cpu:0" in messages[0] and "device_type='cpu'" in messages[0]
    np.testing.assert_array_equal(out.numpy(), expected)


def test_inputs_on_the_purifiers_device_do_not_warn(images, caplog):
    purifier = make_purifier(t_star=3, seed=1)
    with caplog.at_level(logging.WARNING, logger="art_diffpure.purifier"):
        art_classifier(tiny_classifier(), purifier).predict(images)
        purifier.purify(torch.tensor(images))
    assert not [r for r in caplog.records if "receives inputs on" in r.getMessage()]


@pytest.fixture
def two_fake_gpus(monkeypatch):
    """torch.cuda as if two GPUs existed; set_device calls are recorded."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(torch.device(device)))
    return calls


def test_reproduce_device_validation_and_current_device(two_fake_gpus):
    from art_diffpure.reproduce import presets

    assert presets._torch_device_ok("cpu") and presets._torch_device_ok("cuda") and presets._torch_device_ok("cuda:1")
    assert not presets._torch_device_ok("cuda:2") and not presets._torch_device_ok("cuda:x")
    presets.use_device("cpu")
    presets.use_device("cuda")
    assert two_fake_gpus == []  # the current device stays
    presets.use_device("cuda:1")
    assert two_fake_gpus == [torch.device("cuda", 1)]


def test_reproduce_sets_the_current_device_before_building_models(two_fake_gpus, monkeypatch):
    from art_diffpure.reproduce import presets

    built = []
    monkeypatch.setattr(presets, "digits_setting", lambda *a, **k: built.append(list(two_fake_gpus)) or "setting")
    args = types.SimpleNamespace(preset="digits", device="cuda:1", quick=True, n_images=None, seeds=None,
                                 no_progress=True)
    assert presets.build_setting(args) == "setting"
    assert built == [[torch.device("cuda", 1)]]  # ART then places classifier and purifier on cuda:1


# ---------------------------------------------------------------------------- item 6: the noise's memory
def _counting_aligned_noise(monkeypatch) -> list:
    draws = []

    def counting(seeds, ids, steps, shape, reverse, dtype=None):
        draws.append((tuple(ids), len(steps)))
        return aligned_noise(seeds, ids, steps, shape, reverse, dtype)

    monkeypatch.setattr(purifier_module, "aligned_noise", counting)
    return draws


def test_noise_cache_keeps_what_fits_across_internal_batches(monkeypatch):
    x = np.random.RandomState(0).rand(16, 1, 8, 8).astype(np.float32)
    reference = make_purifier(t_star=10, seed=4, batch_size=4).purify(x)
    purifier = make_purifier(t_star=10, seed=4, batch_size=4)
    per_batch = 4 * 64 * 4 * (10 + 1)  # reverse noise (10 steps) + one-shot forward noise of 4 rows, float32
    monkeypatch.setattr(purifier_module, "NOISE_CACHE_BYTES", 2 * per_batch)  # two of the call's four batches
    monkeypatch.setattr(purifier_module, "NOISE_CACHE_MAX_BYTES", 2 * per_batch)
    draws = _counting_aligned_noise(monkeypatch)
    counts = []
    for _ in range(4):  # e.g. PGD iterations on the same 16 samples
        np.testing.assert_array_equal(purifier.purify(x), reference)
        counts.append(len(draws))
        draws.clear()
    assert counts[0] == 8  # forward + reverse noise of 4 internal batches
    # An LRU cache would evict the batch needed next and redraw all 8 every call; the first two batches stay.
    assert counts[1:] == [4, 4, 4]
    assert sum(v.numel() * v.element_size() for v, _ in purifier._noise_cache.values()) <= 2 * per_batch


def test_noise_cache_keeps_a_single_batch_of_any_size(monkeypatch):
    purifier = make_purifier(t_star=10, seed=4)
    monkeypatch.setattr(purifier_module, "NOISE_CACHE_BYTES", 1)
    monkeypatch.setattr(purifier_module, "NOISE_CACHE_MAX_BYTES", 1)
    draws = _counting_aligned_noise(monkeypatch)
    x = np.random.RandomState(0).rand(6, 1, 8, 8).astype(np.float32)
    first = purifier.purify(x)
    n_first = len(draws)
    np.testing.assert_array_equal(purifier.purify(x), first)
    assert n_first == 2 and len(draws) == n_first  # the second call drew nothing


def test_noise_cache_evicts_earlier_calls_first(monkeypatch):
    purifier = make_purifier(t_star=10, seed=4)
    per_call = 6 * 64 * 4 * 11
    monkeypatch.setattr(purifier_module, "NOISE_CACHE_BYTES", per_call)
    monkeypatch.setattr(purifier_module, "NOISE_CACHE_MAX_BYTES", per_call)
    x = np.random.RandomState(0).rand(6, 1, 8, 8).astype(np.float32)
    purifier.purify(x, seed=1)
    purifier.purify(x, seed=2)
    assert {key[0] for key in purifier._noise_cache} == {(2,) * 6}


def test_step_noise_is_a_function_of_its_step_for_checkpointed_recomputation():
    # The GPU fresh-noise path (drawn per step on the device from seed + k), exercised on the CPU.
    source = StepNoise(torch.device("cpu"), torch.float32, seed=123, shape=(2, 1, 8, 8))
    assert torch.equal(source(3), source(3)) and not torch.equal(source(3), source(4))
    purifier = make_purifier(t_star=5, seed=None)
    grads = []
    for checkpointed in (False, True):
        x = torch.rand((2, 1, 8, 8), generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        x_t = x
        for k, t in enumerate(range(4, -1, -1)):
            if checkpointed:
                from torch.utils.checkpoint import checkpoint

                x_t = checkpoint(purifier._drawn_step, x_t, t, source, k, use_reentrant=False,
                                 preserve_rng_state=False)
            else:
                x_t = purifier._drawn_step(x_t, t, source, k)
        x_t.square().sum().backward()
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])


def test_fresh_noise_is_reproducible_from_the_purifiers_generator(images):
    a = make_purifier(t_star=5, seed=None, generator_seed=11)
    b = make_purifier(t_star=5, seed=None, generator_seed=11)
    first = a.purify(images)
    np.testing.assert_array_equal(first, b.purify(images))
    assert np.abs(a.purify(images) - first).max() > 1e-3  # fresh on every call
    a.reseed_fresh(11)
    np.testing.assert_array_equal(a.purify(images), first)


# ---------------------------------------------------------------------------- offline from_pretrained
@pytest.mark.parametrize("name", ["no-such-org-art-diffpure/no-such-ddpm", "local"])
def test_from_pretrained_offline_says_what_is_missing(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = str(tmp_path / "no-such-directory") if name == "local" else name
    with pytest.raises(OSError) as info:
        DiffusionPurifier.from_pretrained(name, device_type="cpu")
    message = str(info.value)
    assert "neither a local directory nor in the local Hugging Face cache" in message
    assert "save_pretrained" in message and "HF_HUB_OFFLINE" in message and repr(name) in message
    assert "does not appear to have a file named" not in message


def test_from_pretrained_missing_local_path_without_offline_mode(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "offline", lambda: False)
    with pytest.raises(OSError, match="neither a local directory nor in the local Hugging Face cache"):
        DiffusionPurifier.from_pretrained(str(tmp_path / "missing" / "dir"), device_type="cpu")


# ---------------------------------------------------------------------------- GPU


@requires_gpus(1)
def test_cuda_noise_stays_in_host_memory(monkeypatch):
    n, t_star = 512, 400
    purifier = DiffusionPurifier(tiny_unet(), tiny_scheduler(), t_star=t_star, seed=2, batch_size=n,
                                 device_type="gpu")
    x = torch.rand((n, 1, 8, 8), device="cuda")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    at_step = []
    purifier.model.register_forward_pre_hook(lambda m, a: at_step.append(torch.cuda.memory_allocated() - base))
    out = purifier.purify(x)
    noise_bytes = t_star * n * 64 * 4
    assert out.device.type == "cuda" and len(at_step) == t_star
    assert max(at_step) < noise_bytes / 4  # one step of noise on the device, not the whole chain's
    assert all(v.device.type == "cpu" and v.is_pinned() for v, _ in purifier._noise_cache.values())


@requires_gpus(1)
def test_cuda_fresh_noise_checkpointed_gradient_is_exact(images):
    grads = []
    for checkpoint in (False, True):
        purifier = DiffusionPurifier(tiny_unet(), tiny_scheduler(), t_star=50, seed=None, generator_seed=3,
                                     checkpoint=checkpoint, device_type="gpu", deterministic=True)
        x = torch.tensor(images, device="cuda", requires_grad=True)
        purifier.forward(x)[0].square().sum().backward()
        grads.append(x.grad.cpu())
    assert torch.equal(grads[0], grads[1])


@requires_gpus(1)
def test_cuda_purify_leaves_the_users_scheduler_on_the_cpu(images):
    scheduler = tiny_scheduler()
    purifier = DiffusionPurifier(tiny_unet(), scheduler, t_star=50, seed=1, device_type="gpu")
    purifier.purify(torch.tensor(images, device="cuda"))
    assert all(v.device.type == "cpu" for v in vars(scheduler).values() if isinstance(v, torch.Tensor))


@requires_gpus(1)
def test_cpu_purifier_inside_a_gpu_classifier_warns_and_matches(images, caplog, exact_cuda):
    # exact_cuda: the GPU classifier in fp32 (no TF32, cuDNN's default), so 1e-4 measures kernels, not TF32
    purifier = make_purifier(t_star=50, seed=1)
    expected = art_classifier(tiny_classifier(), make_purifier(t_star=50, seed=1)).predict(images)
    with caplog.at_level(logging.WARNING, logger="art_diffpure.purifier"):
        got = art_classifier(tiny_classifier(), purifier, device_type="gpu").predict(images)
    assert any("receives inputs on cuda" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@requires_gpus(1)
def test_cuda_deterministic_reruns_are_bit_identical(images):
    """A UNet with attention (whose flash / memory-efficient backward is not deterministic), the classifier's
    backward included: the classifier runs under the same deterministic flags, as the README asks of callers."""
    grads = []
    for _ in range(2):
        purifier = DiffusionPurifier(tiny_unet(attention=True), tiny_scheduler(), t_star=50, seed=1,
                                     device_type="gpu", deterministic=True)
        classifier = art_classifier(tiny_classifier(), purifier, device_type="gpu")
        with determinism.deterministic_flags():
            grads.append(classifier.loss_gradient(images, np.eye(10)[np.arange(6)]))
    np.testing.assert_array_equal(grads[0], grads[1])


@requires_gpus(2)
def test_model_moved_off_the_callers_gpu_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="art_diffpure.purifier"):
        with torch.cuda.device(0):
            purifier = DiffusionPurifier(tiny_unet().to("cuda:1"), tiny_scheduler(), t_star=5, device_type="gpu")
    assert purifier.device == torch.device("cuda", 0)
    assert any("moves its model from cuda:1 to cuda:0" in r.getMessage() for r in caplog.records)
    with torch.cuda.device(1):
        on_one = DiffusionPurifier(tiny_unet().to("cuda:1"), tiny_scheduler(), t_star=5, device_type="gpu")
    assert next(on_one.model.parameters()).device == torch.device("cuda", 1)


def test_as_classifier_keeps_a_cpu_model_on_the_cpu(monkeypatch):
    """The robustness curve and the masking checks wrap the caller's torch model: it must not be moved to a GPU."""
    from art_diffpure.evaluations import pgd

    seen = {}
    real = pgd.art_classifier
    monkeypatch.setattr(pgd, "art_classifier", lambda *a, **k: seen.update(k) or real(*a, **k))
    x = np.zeros((2, 1, 8, 8), dtype=np.float32)
    classifier = pgd.as_classifier(tiny_classifier(), x)
    assert seen["device_type"] == "cpu" and classifier.nb_classes == 10
    assert next(classifier.model.parameters()).device.type == "cpu"


def test_gpu_comparisons_with_a_tolerance_run_without_tf32(exact_cuda):
    """Every GPU test that compares against the CPU with a tolerance takes the conftest fixture ``exact_cuda``: with
    cuDNN's default (TF32 on) the error of a GPU classifier alone is ~1e-4, the tolerance these tests use."""
    import ast

    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    here = os.path.dirname(os.path.abspath(__file__))
    checked = []
    for name in ("test_devices.py", "test_purifier.py"):
        with open(os.path.join(here, name), encoding="utf-8") as f:
            source = f.read()
        for node in ast.parse(source).body:
            if not isinstance(node, ast.FunctionDef):
                continue
            decorators = [ast.get_source_segment(source, d) for d in node.decorator_list]
            body = ast.get_source_segment(source, node)
            if any(d.startswith("requires_gpus") for d in decorators) and "assert_allclose" in body:
                checked.append(node.name)
                assert "exact_cuda" in [a.arg for a in node.args.args], f"{name}::{node.name} compares with TF32 on"
    assert "test_cpu_purifier_inside_a_gpu_classifier_warns_and_matches" in checked and len(checked) >= 3
