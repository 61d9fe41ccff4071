"""Tests of the guided-diffusion (ADM) -> diffusers converter, against an independent reference forward pass.

The reference below re-implements ADM's UNetModel (guided_diffusion/unet.py: timestep embedding, ResBlock
with scale-shift norm and avg-pool / nearest resampling, legacy and new-order QKV attention, skip wiring)
with torch.nn.functional directly on the ADM state dict, so the converted diffusers model is compared with
what the original code computes from the same weights, without the real checkpoint.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from art_diffpure.models.convert import (
    ADM_256_UNCOND,
    adm_scheduler_config,
    adm_state_dict_shapes,
    adm_unet_config,
    convert_adm_state_dict,
    convert_guided_diffusion,
)
from conftest import tiny_scheduler, tiny_unet

SMALL = dict(model_channels=32, num_res_blocks=1, channel_mult=(1, 2), attention_resolutions=(8,), image_size=16,
             num_head_channels=16, learn_sigma=True, in_channels=3)
SMALL2 = dict(model_channels=32, num_res_blocks=2, channel_mult=(1, 2, 2), attention_resolutions=(16, 4),
              image_size=16, num_head_channels=16, learn_sigma=True, in_channels=3)


# ------------------------------------------------------------------------------------------ reference ADM
def _timestep_embedding(t, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def _norm(sd, p, x):
    return F.group_norm(x.float(), 32, sd[p + ".weight"], sd[p + ".bias"], eps=1e-5).type(x.dtype)


def _resblock(sd, p, x, emb, up=False, down=False):
    h = F.silu(_norm(sd, p + ".in_layers.0", x))
    if up:
        h, x = F.interpolate(h, scale_factor=2, mode="nearest"), F.interpolate(x, scale_factor=2, mode="nearest")
    elif down:
        h, x = F.avg_pool2d(h, 2, 2), F.avg_pool2d(x, 2, 2)
    h = F.conv2d(h, sd[p + ".in_layers.2.weight"], sd[p + ".in_layers.2.bias"], padding=1)
    e = F.linear(F.silu(emb), sd[p + ".emb_layers.1.weight"], sd[p + ".emb_layers.1.bias"])[:, :, None, None]
    scale, shift = e.chunk(2, dim=1)
    h = _norm(sd, p + ".out_layers.0", h) * (1 + scale) + shift
    h = F.conv2d(F.silu(h), sd[p + ".out_layers.3.weight"], sd[p + ".out_layers.3.bias"], padding=1)
    if p + ".skip_connection.weight" in sd:
        x = F.conv2d(x, sd[p + ".skip_connection.weight"], sd[p + ".skip_connection.bias"])
    return x + h


def _attention(sd, p, x, head_channels, new_order=False):
    b, c, hh, ww = x.shape
    x = x.reshape(b, c, -1)
    qkv = F.conv1d(_norm(sd, p + ".norm", x), sd[p + ".qkv.weight"], sd[p + ".qkv.bias"])
    heads, ch, length = c // head_channels, head_channels, hh * ww
    if new_order:
        q, k, v = (z.reshape(b * heads, ch, length) for z in qkv.chunk(3, dim=1))
    else:
        q, k, v = qkv.reshape(b * heads, 3 * ch, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    w = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale).float(), dim=-1)
    a = torch.einsum("bts,bcs->bct", w, v).reshape(b, -1, length)
    h = F.conv1d(a, sd[p + ".proj_out.weight"], sd[p + ".proj_out.bias"])
    return (x + h).reshape(b, c, hh, ww)


def adm_reference_forward(sd, x, t, model_channels, num_res_blocks, channel_mult, attention_resolutions,
                          image_size, num_head_channels, new_order=False, **_):
    attn_ds = {image_size // r for r in attention_resolutions}
    emb = _timestep_embedding(t, model_channels)
    emb = F.linear(F.silu(F.linear(emb, sd["time_embed.0.weight"], sd["time_embed.0.bias"])),
                   sd["time_embed.2.weight"], sd["time_embed.2.bias"])
    h = F.conv2d(x, sd["input_blocks.0.0.weight"], sd["input_blocks.0.0.bias"], padding=1)
    hs, block, ds = [h], 1, 1
    for level in range(len(channel_mult)):
        for _ in range(num_res_blocks):
            h = _resblock(sd, f"input_blocks.{block}.0", h, emb)
            if ds in attn_ds:
                h = _attention(sd, f"input_blocks.{block}.1", h, num_head_channels, new_order)
            hs.append(h)
            block += 1
        if level != len(channel_mult) - 1:
            h = _resblock(sd, f"input_blocks.{block}.0", h, emb, down=True)
            hs.append(h)
            block += 1
            ds *= 2
    h = _resblock(sd, "middle_block.0", h, emb)
    h = _attention(sd, "middle_block.1", h, num_head_channels, new_order)
    h = _resblock(sd, "middle_block.2", h, emb)
    block = 0
    for level in reversed(range(len(channel_mult))):
        for i in range(num_res_blocks + 1):
            h = torch.cat([h, hs.pop()], dim=1)
            h = _resblock(sd, f"output_blocks.{block}.0", h, emb)
            sub = 1
            if ds in attn_ds:
                h = _attention(sd, f"output_blocks.{block}.1", h, num_head_channels, new_order)
                sub = 2
            if level and i == num_res_blocks:
                h = _resblock(sd, f"output_blocks.{block}.{sub}", h, emb, up=True)
                ds //= 2
            block += 1
    h = F.silu(_norm(sd, "out.0", h))
    return F.conv2d(h, sd["out.2.weight"], sd["out.2.bias"], padding=1)


def random_adm_state_dict(seed=0, **arch):
    """Random weights in the ADM layout; scales keep activations O(1) so the comparison is meaningful."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in adm_state_dict_shapes(**arch).items():
        if key.endswith("bias") or len(shape) == 1:
            base = 1.0 if (len(shape) == 1 and key.endswith("weight")) else 0.0  # norm weights near 1
            sd[key] = base + 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = math.prod(shape[1:])
            sd[key] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
    return sd


def _converted_unet(sd, **arch):
    from diffusers import UNet2DModel

    unet = UNet2DModel(**adm_unet_config(**arch))
    unet.load_state_dict(convert_adm_state_dict(sd, **arch), strict=True)
    return unet.eval()


# ------------------------------------------------------------------------------------------ correctness
@pytest.mark.parametrize("arch,new_order", [(SMALL, False), (SMALL2, False), (SMALL, True)],
                         ids=["small", "small2-3levels", "small-new-attention-order"])
def test_converted_unet_matches_reference_adm(arch, new_order):
    arch = dict(arch, use_new_attention_order=new_order)
    sd = random_adm_state_dict(seed=1, **arch)
    unet = _converted_unet(sd, **arch)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, arch["in_channels"], arch["image_size"], arch["image_size"], generator=g)
    for t in ([0, 999], [17, 500]):
        t = torch.tensor(t)
        with torch.no_grad():
            ref = adm_reference_forward(sd, x, t, new_order=new_order, **arch)
            out = unet(x, t).sample
        assert out.shape == (2, 2 * arch["in_channels"], arch["image_size"], arch["image_size"]) == ref.shape
        assert ref.abs().max() > 0.1  # non-trivial output
        diff = (out - ref).abs().max().item()
        assert diff <= 1e-4, f"max abs diff {diff:.3g} at t={t.tolist()}"


def test_qkv_permutation_is_not_trivial():
    """With several heads, the legacy layout differs from a plain chunk(3): the permutation matters."""
    arch = dict(SMALL)
    sd = random_adm_state_dict(seed=3, **arch)
    conv = convert_adm_state_dict(sd, **arch)
    qkv = sd["middle_block.1.qkv.weight"][:, :, 0]
    naive_q = qkv.chunk(3, dim=0)[0]
    assert not torch.equal(conv["mid_block.attentions.0.to_q.weight"], naive_q)
    # head h of the legacy layout holds rows [h*3*d, h*3*d + d) for q
    d, c = 16, qkv.shape[1]
    for h in range(c // d):
        assert torch.equal(conv["mid_block.attentions.0.to_q.weight"][h * d:(h + 1) * d], qkv[h * 3 * d:h * 3 * d + d])
        assert torch.equal(conv["mid_block.attentions.0.to_v.weight"][h * d:(h + 1) * d],
                           qkv[h * 3 * d + 2 * d:h * 3 * d + 3 * d])


def test_full_size_layout_matches_unet2dmodel():
    """The 256x256 uncond layout (on the meta device, no memory): keys and shapes line up with UNet2DModel."""
    from diffusers import UNet2DModel

    shapes = adm_state_dict_shapes()
    assert sum(math.prod(s) for s in shapes.values()) == 552_814_086  # parameter count of the released model
    assert shapes["input_blocks.0.0.weight"] == (256, 3, 3, 3)
    assert shapes["out.2.weight"] == (6, 256, 3, 3)
    assert "output_blocks.17.1.qkv.weight" not in shapes and "output_blocks.3.1.qkv.weight" in shapes
    sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    conv = convert_adm_state_dict(sd)
    with torch.device("meta"):
        unet = UNet2DModel(**adm_unet_config())
    ref = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    assert set(conv) == set(ref)
    assert {k: tuple(v.shape) for k, v in conv.items()} == ref


def test_config_matches_adm_semantics():
    cfg = adm_unet_config()
    assert cfg["flip_sin_to_cos"] is True and cfg["freq_shift"] == 0
    assert cfg["resnet_time_scale_shift"] == "scale_shift"
    assert cfg["out_channels"] == 6 and cfg["attention_head_dim"] == 64
    # attention at 32, 16, 8 of 256 = levels 3, 4, 5
    assert cfg["down_block_types"] == ("ResnetDownsampleBlock2D",) * 3 + ("AttnDownBlock2D",) * 3
    assert cfg["up_block_types"] == ("AttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",) * 3
    s = adm_scheduler_config()
    assert s["variance_type"] == "learned_range" and s["clip_sample"] and s["beta_end"] == 0.02
    assert adm_unet_config(**dict(SMALL, learn_sigma=False))["out_channels"] == 3
    with pytest.raises(ValueError, match="channel_mult"):
        adm_unet_config(channel_mult=(2, 2))
    with pytest.raises(ValueError, match="num_head_channels"):
        adm_unet_config(**dict(SMALL, num_head_channels=24))


# ------------------------------------------------------------------------------------------ refusals
def test_missing_key_is_named():
    sd = random_adm_state_dict(**SMALL)
    del sd["middle_block.1.qkv.bias"]
    with pytest.raises(ValueError, match=r"missing key.*middle_block\.1\.qkv\.bias"):
        convert_adm_state_dict(sd, **SMALL)


def test_wrong_shape_is_named():
    sd = random_adm_state_dict(**SMALL)
    sd["input_blocks.1.0.in_layers.2.weight"] = torch.zeros(32, 32, 1, 1)
    with pytest.raises(ValueError, match=r"mis-shaped.*input_blocks\.1\.0\.in_layers\.2\.weight \(32, 32, 1, 1\) "
                                         r"\(expected \(32, 32, 3, 3\)\)"):
        convert_adm_state_dict(sd, **SMALL)


def test_extra_key_is_named():
    sd = random_adm_state_dict(**SMALL)
    sd["label_emb.weight"] = torch.zeros(1000, 128)
    with pytest.raises(ValueError, match=r"unexpected key.*label_emb\.weight.*class-conditional"):
        convert_adm_state_dict(sd, **SMALL)


def test_wrong_architecture_is_refused():
    sd = random_adm_state_dict(**SMALL)
    with pytest.raises(ValueError, match="missing key"):
        convert_adm_state_dict(sd, **dict(SMALL, num_res_blocks=2))
    with pytest.raises(ValueError, match="mis-shaped"):
        convert_adm_state_dict(sd, **dict(SMALL, learn_sigma=False))
    with pytest.raises(ValueError, match="state dict"):
        convert_adm_state_dict([1, 2], **SMALL)


# ------------------------------------------------------------------------------------------ files
def test_checkpoint_file_roundtrip(tmp_path):
    from diffusers import DDPMScheduler, UNet2DModel

    sd = random_adm_state_dict(seed=4, **SMALL)
    ckpt = tmp_path / "adm.pt"
    torch.save(sd, ckpt)
    out_dir = tmp_path / "converted"
    assert convert_guided_diffusion(ckpt, out_dir, **SMALL) == str(out_dir)
    unet = UNet2DModel.from_pretrained(str(out_dir / "unet"), local_files_only=True).eval()
    sched = DDPMScheduler.from_pretrained(str(out_dir / "scheduler"), local_files_only=True)
    assert sched.config.variance_type == "learned_range" and sched.config.clip_sample
    assert sched.config.num_train_timesteps == 1000 and sched.config.beta_schedule == "linear"
    direct = _converted_unet(sd, **SMALL)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([3, 700])
    with torch.no_grad():
        a, b = unet(x, t).sample, direct(x, t).sample
        ref = adm_reference_forward(sd, x, t, **SMALL)
    assert torch.equal(a, b)
    assert (a - ref).abs().max() <= 1e-4
    # and the purifier reads the layout
    from art_diffpure import DiffusionPurifier

    pur = DiffusionPurifier.from_pretrained(str(out_dir), t_star=2, seed=0, device_type="cpu")
    assert pur.model.config.out_channels == 6
    # non-empty output dir is refused unless overwrite
    with pytest.raises(ValueError, match="not empty"):
        convert_guided_diffusion(ckpt, out_dir, **SMALL)
    convert_guided_diffusion(ckpt, out_dir, overwrite=True, **SMALL)


class _Payload:
    def __reduce__(self):  # would run code if unpickled without weights_only
        return (print, ("payload executed",))


class _Custom:
    pass


@pytest.mark.parametrize("obj", [_Custom(), _Payload()], ids=["custom-class", "reduce-payload"])
def test_weights_only_refuses_arbitrary_pickles(tmp_path, capsys, obj):
    ckpt = tmp_path / "evil.pt"
    sd = random_adm_state_dict(**SMALL)
    sd["extra"] = obj
    torch.save(sd, ckpt)
    with pytest.raises(ValueError, match="weights_only"):
        convert_guided_diffusion(ckpt, tmp_path / "out", **SMALL)
    assert "payload executed" not in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        convert_guided_diffusion(tmp_path / "nope.pt", tmp_path / "out", **SMALL)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="Could not read"):
        convert_guided_diffusion(junk, tmp_path / "out", **SMALL)
    nested = tmp_path / "nested.pt"
    torch.save({"model": random_adm_state_dict(**SMALL)}, nested)
    with pytest.raises(ValueError, match="nested"):
        convert_guided_diffusion(nested, tmp_path / "out", **SMALL)


def _small_argv():
    return ["--model-channels", "32", "--num-res-blocks", "1", "--channel-mult", "1,2", "--attention-resolutions", "8",
            "--image-size", "16", "--num-head-channels", "16"]


# ------------------------------------------------------------------------------------------ learned variance
@pytest.mark.parametrize("t", [0, 1, 2, 10, 500, 999])
def test_ddpm_step_learned_range_matches_diffusers(t):
    from diffusers import DDPMScheduler

    from art_diffpure.samplers import ddpm_step

    sched = DDPMScheduler(**adm_scheduler_config())
    n, c, hw = 3, 3, 4
    g = torch.Generator().manual_seed(t)
    sample = torch.randn(n, c, hw, hw, generator=g)
    model_output = torch.cat([torch.randn(n, c, hw, hw, generator=g),
                              torch.rand(n, c, hw, hw, generator=g) * 2 - 1], dim=1)  # eps, v in [-1, 1]
    seeds = [100 + k for k in range(n)]
    expected = sched.step(model_output, t, sample,
                          generator=[torch.Generator().manual_seed(s) for s in seeds]).prev_sample
    noise = torch.stack([torch.randn((1, c, hw, hw), generator=torch.Generator().manual_seed(s))[0] for s in seeds])
    got = ddpm_step(sched, model_output, t, sample, noise)
    assert got.shape == sample.shape
    assert (got - expected).abs().max().item() <= 1e-6


def test_ddpm_step_learned_range_uses_the_variance_channels():
    from art_diffpure.samplers import ddpm_step

    sched = tiny_scheduler(variance_type="learned_range")
    sample = torch.randn(1, 3, 4, 4)
    eps = torch.randn(1, 3, 4, 4)
    noise = torch.randn(1, 3, 4, 4)
    lo = ddpm_step(sched, torch.cat([eps, -torch.ones_like(eps)], 1), 50, sample, noise)
    hi = ddpm_step(sched, torch.cat([eps, torch.ones_like(eps)], 1), 50, sample, noise)
    mean = ddpm_step(sched, torch.cat([eps, torch.ones_like(eps)], 1), 50, sample, torch.zeros_like(noise))
    # v = -1: posterior variance (beta tilde), v = +1: beta
    acp = sched.alphas_cumprod
    beta = float(sched.betas[50])
    beta_tilde = float((1 - acp[49]) / (1 - acp[50])) * beta
    assert torch.allclose(lo - mean, math.sqrt(beta_tilde) * noise, atol=1e-5)
    assert torch.allclose(hi - mean, math.sqrt(beta) * noise, atol=1e-5)


def test_ddim_purifier_accepts_learned_variance_model():
    import numpy as np

    from art_diffpure import DiffusionPurifier

    unet = tiny_unet(seed=0, channels=3, out_channels=6)
    pur = DiffusionPurifier(unet, tiny_scheduler(variance_type="learned_range"), t_star=5, sampler="ddim", seed=0,
                            device_type="cpu")
    x = np.random.RandomState(0).rand(2, 3, 8, 8).astype(np.float32)
    out, _ = pur(x)
    assert out.shape == x.shape and np.isfinite(out).all()
    # DDIM uses eps only: same result as a model returning just the first 3 channels
    eps_only = DiffusionPurifier(lambda x_t, t: unet(x_t, t).sample[:, :3], tiny_scheduler(variance_type="learned_range"),
                                 t_star=5, sampler="ddim", seed=0, device_type="cpu")
    out2, _ = eps_only(x)
    np.testing.assert_allclose(out, out2, atol=1e-6)
    # and the DDPM sampler accepts it too (learned_range variances)
    ddpm = DiffusionPurifier(unet, tiny_scheduler(variance_type="learned_range"), t_star=5, sampler="ddpm", seed=0,
                             device_type="cpu")
    out3, _ = ddpm(x)
    assert out3.shape == x.shape and np.isfinite(out3).all()


def test_architecture_defaults_and_unknown_names():
    """One set of defaults (ADM_256_UNCOND): no arguments is the 256x256 model; a misspelt name raises."""
    assert adm_unet_config() == adm_unet_config(**ADM_256_UNCOND)
    with pytest.raises(TypeError, match="unknown ADM architecture argument"):
        adm_unet_config(model_channel=128)
