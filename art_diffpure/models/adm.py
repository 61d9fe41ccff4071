"""
The architecture of an openai/guided-diffusion (ADM) UNet and how its state-dict keys map onto diffusers'.

| Paper link (ADM): https://arxiv.org/abs/2105.05233
| Original code: https://github.com/openai/guided-diffusion (``guided_diffusion/unet.py``)

:func:`adm_unet_config` and :func:`adm_scheduler_config` give the diffusers ``UNet2DModel`` and ``DDPMScheduler``
arguments of an ADM model; ``_layout`` lists every ADM key with its diffusers key, shape and conversion kind,
which :func:`art_diffpure.models.convert.convert_adm_state_dict` applies.

Mapping (ADM -> diffusers). ADM's ``input_blocks`` are, in order: the input convolution, then per level
``num_res_blocks`` blocks (ResBlock, plus AttentionBlock where the level's downsampling rate is an
attention rate) and, except on the last level, one down-sampling ResBlock. These become ``conv_in`` and
``down_blocks.{level}.resnets/attentions/downsamplers``. ``middle_block.{0,1,2}`` become
``mid_block.resnets.0``, ``mid_block.attentions.0``, ``mid_block.resnets.1``. ``output_blocks`` hold
``num_res_blocks + 1`` blocks per level, deepest level first, the last of each (except level 0) ending in an
up-sampling ResBlock: ``up_blocks.{j}.resnets/attentions/upsamplers``. Inside a ResBlock: ``in_layers.0``
-> ``norm1``, ``in_layers.2`` -> ``conv1``, ``emb_layers.1`` -> ``time_emb_proj``, ``out_layers.0`` ->
``norm2``, ``out_layers.3`` -> ``conv2``, ``skip_connection`` -> ``conv_shortcut``. Inside an
AttentionBlock: ``norm`` -> ``group_norm``, ``proj_out`` (a 1x1 conv1d) -> ``to_out.0`` (a Linear) and
``qkv`` (a conv1d with ``3 * C`` outputs) -> ``to_q``, ``to_k``, ``to_v``: the legacy attention order
lays the ``3 * C`` outputs out as ``(heads, 3, head_dim)``, diffusers as ``(3, heads, head_dim)``, so the
rows are regrouped per head. ADM's ``1 / sqrt(sqrt(head_dim))`` scaling of q and k equals diffusers'
``1 / sqrt(head_dim)``. ``time_embed.{0,2}`` -> ``time_embedding.linear_{1,2}``, ``out.{0,2}`` ->
``conv_norm_out``, ``conv_out``. ADM's timestep embedding is ``cat(cos, sin)`` with frequencies
``exp(-log(10000) * i / half)``: diffusers' ``flip_sin_to_cos=True, freq_shift=0``.
"""
from __future__ import annotations

from typing import Any, Iterator

from art_diffpure._utils import check_int

#: Architecture of ``256x256_diffusion_uncond.pt`` (guided-diffusion's ``model_and_diffusion_defaults`` as
#: used by DiffPure for ImageNet).
ADM_256_UNCOND = dict(
    model_channels=256,
    num_res_blocks=2,
    channel_mult=(1, 1, 2, 2, 4, 4),
    attention_resolutions=(32, 16, 8),
    image_size=256,
    num_head_channels=64,
    learn_sigma=True,
    in_channels=3,
    use_new_attention_order=False,
)

_GROUPS = 32  # ADM's normalization(): GroupNorm32(32, channels), eps 1e-5
_EPS = 1e-5


# ---------------------------------------------------------------------------------------------- architecture
def _arch(**arch: Any) -> dict:
    """Validate architecture arguments (defaults: :data:`ADM_256_UNCOND`) and derive per-level facts."""
    unknown = sorted(set(arch) - set(ADM_256_UNCOND))
    if unknown:
        raise TypeError(f"unknown ADM architecture argument(s) {unknown}; known: {sorted(ADM_256_UNCOND)}")
    arch = {**ADM_256_UNCOND, **arch}
    model_channels, num_res_blocks, channel_mult = arch["model_channels"], arch["num_res_blocks"], arch["channel_mult"]
    attention_resolutions, image_size = arch["attention_resolutions"], arch["image_size"]
    num_head_channels, learn_sigma, in_channels = arch["num_head_channels"], arch["learn_sigma"], arch["in_channels"]
    use_new_attention_order = arch["use_new_attention_order"]

    model_channels = check_int(model_channels, "model_channels", 1)
    num_res_blocks = check_int(num_res_blocks, "num_res_blocks", 1)
    image_size = check_int(image_size, "image_size", 1)
    in_channels = check_int(in_channels, "in_channels", 1)
    num_head_channels = check_int(num_head_channels, "num_head_channels", 1)
    channel_mult = tuple(check_int(m, "channel_mult entries", 1) for m in channel_mult)
    attention_resolutions = tuple(check_int(r, "attention_resolutions entries", 1) for r in attention_resolutions)
    if not channel_mult:
        raise ValueError("channel_mult must not be empty")
    if channel_mult[0] != 1:
        # diffusers sizes the sinusoidal embedding by block_out_channels[0]; ADM by model_channels.
        raise ValueError(f"channel_mult[0] must be 1 to be representable as a diffusers UNet2DModel, got {channel_mult}")
    levels = len(channel_mult)
    if image_size % (2 ** (levels - 1)):
        raise ValueError(f"image_size {image_size} is not divisible by 2**{levels - 1} (channel_mult {channel_mult})")
    channels = [model_channels * m for m in channel_mult]
    for c in channels:
        if c % _GROUPS:
            raise ValueError(f"channel count {c} is not divisible by the {_GROUPS} GroupNorm groups")
    # ADM (script_util.create_model) turns resolutions into downsampling rates: ds = image_size // res.
    attention_ds = {image_size // r for r in attention_resolutions}
    attn_levels = [2**level in attention_ds for level in range(levels)]
    for level, c in enumerate(channels):
        if (attn_levels[level] or level == levels - 1) and c % num_head_channels:
            raise ValueError(f"channel count {c} at level {level} is not divisible by num_head_channels {num_head_channels}")
    return dict(
        model_channels=model_channels, num_res_blocks=num_res_blocks, channel_mult=channel_mult,
        attention_resolutions=attention_resolutions, image_size=image_size, num_head_channels=num_head_channels,
        learn_sigma=bool(learn_sigma), in_channels=in_channels, use_new_attention_order=bool(use_new_attention_order),
        channels=channels, attn_levels=attn_levels, levels=levels,
        out_channels=in_channels * (2 if learn_sigma else 1), emb_channels=4 * model_channels,
    )


def adm_unet_config(**arch: Any) -> dict:
    """
    ``UNet2DModel`` keyword arguments for an ADM UNet with residual up/down sampling and scale-shift norm.

    ``arch``: guided-diffusion's architecture arguments, each defaulting to :data:`ADM_256_UNCOND`
    (``model_channels``, ``num_res_blocks``, ``channel_mult``, ``attention_resolutions``, ``image_size``,
    ``num_head_channels``, ``learn_sigma``, ``in_channels``, ``use_new_attention_order``); unknown names raise.

    :param attention_resolutions: feature-map resolutions with attention, as guided-diffusion's
        ``--attention_resolutions`` (turned into downsampling rates ``image_size // res``).
    :param learn_sigma: the model also predicts the variance (``2 * in_channels`` output channels).
    :param use_new_attention_order: accepted for completeness; it changes the weight layout, not the config.
    """
    a = _arch(**arch)
    down = tuple("AttnDownBlock2D" if a["attn_levels"][lv] else "ResnetDownsampleBlock2D" for lv in range(a["levels"]))
    up = tuple("AttnUpBlock2D" if a["attn_levels"][lv] else "ResnetUpsampleBlock2D" for lv in reversed(range(a["levels"])))
    return dict(
        sample_size=a["image_size"],
        in_channels=a["in_channels"],
        out_channels=a["out_channels"],
        center_input_sample=False,
        time_embedding_type="positional",
        time_embedding_dim=a["emb_channels"],
        flip_sin_to_cos=True,
        freq_shift=0,
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2D",
        block_out_channels=tuple(a["channels"]),
        layers_per_block=a["num_res_blocks"],
        mid_block_scale_factor=1,
        downsample_type="resnet",
        upsample_type="resnet",
        dropout=0.0,
        act_fn="silu",
        attention_head_dim=a["num_head_channels"],
        norm_num_groups=_GROUPS,
        attn_norm_num_groups=_GROUPS,
        norm_eps=_EPS,
        resnet_time_scale_shift="scale_shift",
        add_attention=True,
    )


def adm_scheduler_config(learn_sigma: bool = True, num_train_timesteps: int = 1000) -> dict:
    """
    ``DDPMScheduler`` keyword arguments matching guided-diffusion's linear schedule (``noise_schedule="linear"``,
    betas ``1e-4 .. 0.02`` scaled by ``1000 / num_train_timesteps``), epsilon prediction, ``x_0`` clipped to
    [-1, 1] (``clip_denoised=True``) and ``learned_range`` variances when ``learn_sigma`` (``fixed_large``
    otherwise, ADM's default without ``sigma_small``).
    """
    scale = 1000.0 / num_train_timesteps
    return dict(
        num_train_timesteps=int(num_train_timesteps),
        beta_start=scale * 1e-4,
        beta_end=scale * 0.02,
        beta_schedule="linear",
        variance_type="learned_range" if learn_sigma else "fixed_large",
        clip_sample=True,
        clip_sample_range=1.0,
        prediction_type="epsilon",
    )


# ---------------------------------------------------------------------------------------------- key layout
def _resblock(adm: str, hf: str, cin: int, cout: int, emb: int) -> Iterator[tuple[str, str, tuple, str]]:
    """(adm key, diffusers key, adm shape, kind) of one ResBlock."""
    yield f"{adm}.in_layers.0.weight", f"{hf}.norm1.weight", (cin,), "copy"
    yield f"{adm}.in_layers.0.bias", f"{hf}.norm1.bias", (cin,), "copy"
    yield f"{adm}.in_layers.2.weight", f"{hf}.conv1.weight", (cout, cin, 3, 3), "copy"
    yield f"{adm}.in_layers.2.bias", f"{hf}.conv1.bias", (cout,), "copy"
    yield f"{adm}.emb_layers.1.weight", f"{hf}.time_emb_proj.weight", (2 * cout, emb), "copy"
    yield f"{adm}.emb_layers.1.bias", f"{hf}.time_emb_proj.bias", (2 * cout,), "copy"
    yield f"{adm}.out_layers.0.weight", f"{hf}.norm2.weight", (cout,), "copy"
    yield f"{adm}.out_layers.0.bias", f"{hf}.norm2.bias", (cout,), "copy"
    yield f"{adm}.out_layers.3.weight", f"{hf}.conv2.weight", (cout, cout, 3, 3), "copy"
    yield f"{adm}.out_layers.3.bias", f"{hf}.conv2.bias", (cout,), "copy"
    if cin != cout:
        yield f"{adm}.skip_connection.weight", f"{hf}.conv_shortcut.weight", (cout, cin, 1, 1), "copy"
        yield f"{adm}.skip_connection.bias", f"{hf}.conv_shortcut.bias", (cout,), "copy"


def _attention(adm: str, hf: str, c: int) -> Iterator[tuple[str, str, tuple, str]]:
    """(adm key, diffusers key, adm shape, kind) of one AttentionBlock; ``qkv`` fans out to three keys."""
    yield f"{adm}.norm.weight", f"{hf}.group_norm.weight", (c,), "copy"
    yield f"{adm}.norm.bias", f"{hf}.group_norm.bias", (c,), "copy"
    yield f"{adm}.qkv.weight", f"{hf}.to_{{}}.weight", (3 * c, c, 1), "qkv"
    yield f"{adm}.qkv.bias", f"{hf}.to_{{}}.bias", (3 * c,), "qkv"
    yield f"{adm}.proj_out.weight", f"{hf}.to_out.0.weight", (c, c, 1), "squeeze"
    yield f"{adm}.proj_out.bias", f"{hf}.to_out.0.bias", (c,), "copy"


def _layout(a: dict) -> list[tuple[str, str, tuple, str]]:
    """Every ADM key of the architecture ``a`` with its diffusers key, expected shape and conversion kind."""
    mc, emb, nrb, chans = a["model_channels"], a["emb_channels"], a["num_res_blocks"], a["channels"]
    entries: list[tuple[str, str, tuple, str]] = [
        ("time_embed.0.weight", "time_embedding.linear_1.weight", (emb, mc), "copy"),
        ("time_embed.0.bias", "time_embedding.linear_1.bias", (emb,), "copy"),
        ("time_embed.2.weight", "time_embedding.linear_2.weight", (emb, emb), "copy"),
        ("time_embed.2.bias", "time_embedding.linear_2.bias", (emb,), "copy"),
        ("input_blocks.0.0.weight", "conv_in.weight", (chans[0], a["in_channels"], 3, 3), "copy"),
        ("input_blocks.0.0.bias", "conv_in.bias", (chans[0],), "copy"),
    ]
    block = 1
    ch = chans[0]
    skip_chans = [ch]
    for level, c in enumerate(chans):
        for i in range(nrb):
            entries += _resblock(f"input_blocks.{block}.0", f"down_blocks.{level}.resnets.{i}", ch, c, emb)
            ch = c
            if a["attn_levels"][level]:
                entries += _attention(f"input_blocks.{block}.1", f"down_blocks.{level}.attentions.{i}", ch)
            skip_chans.append(ch)
            block += 1
        if level != a["levels"] - 1:
            entries += _resblock(f"input_blocks.{block}.0", f"down_blocks.{level}.downsamplers.0", ch, ch, emb)
            skip_chans.append(ch)
            block += 1
    entries += _resblock("middle_block.0", "mid_block.resnets.0", ch, ch, emb)
    entries += _attention("middle_block.1", "mid_block.attentions.0", ch)
    entries += _resblock("middle_block.2", "mid_block.resnets.1", ch, ch, emb)
    block = 0
    for j, level in enumerate(reversed(range(a["levels"]))):
        c = chans[level]
        for i in range(nrb + 1):
            entries += _resblock(f"output_blocks.{block}.0", f"up_blocks.{j}.resnets.{i}", ch + skip_chans.pop(), c, emb)
            ch = c
            sub = 1
            if a["attn_levels"][level]:
                entries += _attention(f"output_blocks.{block}.{sub}", f"up_blocks.{j}.attentions.{i}", ch)
                sub += 1
            if level and i == nrb:
                entries += _resblock(f"output_blocks.{block}.{sub}", f"up_blocks.{j}.upsamplers.0", ch, ch, emb)
            block += 1
    entries += [
        ("out.0.weight", "conv_norm_out.weight", (ch,), "copy"),
        ("out.0.bias", "conv_norm_out.bias", (ch,), "copy"),
        ("out.2.weight", "conv_out.weight", (a["out_channels"], chans[0], 3, 3), "copy"),
        ("out.2.bias", "conv_out.bias", (a["out_channels"],), "copy"),
    ]
    return entries


def adm_state_dict_shapes(**arch) -> dict[str, tuple[int, ...]]:
    """The ADM state-dict keys and shapes expected for the architecture (keyword arguments of :func:`adm_unet_config`)."""
    return {adm_key: shape for adm_key, _, shape, _ in _layout(_arch(**arch))}


__all__ = ["ADM_256_UNCOND", "adm_scheduler_config", "adm_state_dict_shapes", "adm_unet_config"]
