"""Convert an openai/guided-diffusion (ADM) checkpoint into a diffusers ``UNet2DModel`` + ``DDPMScheduler``.

| Paper link (ADM): https://arxiv.org/abs/2105.05233
| Original code: https://github.com/openai/guided-diffusion (``guided_diffusion/unet.py``)

The defaults describe the unconditional 256x256 ImageNet model ``256x256_diffusion_uncond.pt`` used by
DiffPure (``model_channels=256``, ``num_res_blocks=2``, ``channel_mult=(1, 1, 2, 2, 4, 4)``, attention at
the resolutions 32, 16 and 8, ``num_head_channels=64``, ``resblock_updown=True``,
``use_scale_shift_norm=True``, ``learn_sigma=True``). Other ADM models with residual up/down sampling and
scale-shift norm convert with the matching architecture arguments; the same code converts the small test
models of ``tests/models/test_convert.py``.

The output directory has the ``save_pretrained`` layout read by
:meth:`art_diffpure.DiffusionPurifier.from_pretrained`::

    OUTPUT_DIR/unet/config.json, OUTPUT_DIR/unet/diffusion_pytorch_model.safetensors
    OUTPUT_DIR/scheduler/scheduler_config.json

The architecture and the key mapping (ADM -> diffusers) are described in :mod:`art_diffpure.models.adm`.

Loading uses ``torch.load(..., weights_only=True)``: a checkpoint that needs arbitrary pickled code is
refused, never executed.

Command line: ``art-diffpure convert-adm CHECKPOINT OUTPUT_DIR`` (:mod:`art_diffpure.commands.convert_adm`).
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from art_diffpure.models.adm import (ADM_256_UNCOND, _arch, _layout, adm_scheduler_config, adm_state_dict_shapes,
                                     adm_unet_config)

__all__ = [
    "ADM_256_UNCOND",
    "adm_unet_config",
    "adm_scheduler_config",
    "adm_state_dict_shapes",
    "convert_adm_state_dict",
    "load_adm_checkpoint",
    "convert_guided_diffusion",
]


# ---------------------------------------------------------------------------------------------- conversion
def _split_qkv(tensor, channels: int, head_dim: int, new_order: bool):
    """Split ADM's fused qkv (``(3C, C, 1)`` weight or ``(3C,)`` bias) into diffusers' q, k, v (``(C, C)`` / ``(C,)``)."""
    heads = channels // head_dim
    rest = tuple(tensor.shape[1:2])  # (C,) for the weight (kernel dim dropped), () for the bias
    flat = tensor.reshape(3 * channels, *rest)
    if new_order:  # QKVAttention: chunk(3) first, then heads
        grouped = flat.reshape(3, heads, head_dim, *rest)
    else:  # QKVAttentionLegacy: heads first, each (q, k, v) of head_dim rows
        grouped = flat.reshape(heads, 3, head_dim, *rest).transpose(0, 1)
    return [grouped[i].reshape(channels, *rest).contiguous() for i in range(3)]


def _short_list(keys: Sequence[str], limit: int = 12) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _check_state_dict(state_dict: Mapping[str, Any], expected: dict[str, tuple], arch: dict, tensor_type: type) -> None:
    """Raise a ``ValueError`` naming the missing, unexpected, non-tensor, mis-shaped and non-float entries."""
    present = [k for k in expected if k in state_dict]
    tensors = [k for k in present if isinstance(state_dict[k], tensor_type)]
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    not_tensor = [k for k in present if not isinstance(state_dict[k], tensor_type)]
    misshaped = [f"{k} {tuple(state_dict[k].shape)} (expected {expected[k]})" for k in tensors
                 if tuple(state_dict[k].shape) != expected[k]]
    not_float = [f"{k} ({state_dict[k].dtype})" for k in tensors if not state_dict[k].is_floating_point()]
    problems = [f"{len(keys)} {what}: {_short_list(keys)}" for what, keys in (
        ("missing key(s)", missing), ("unexpected key(s)", unexpected), ("non-tensor value(s)", not_tensor),
        ("mis-shaped key(s)", misshaped), ("non-floating-point tensor(s)", not_float)) if keys]
    if not problems:
        return
    summary = ", ".join(f"{k}={v}" for k, v in arch.items()) or "defaults: 256x256 unconditional ImageNet ADM"
    hint = ""
    if unexpected and any(k.startswith("module.") for k in unexpected):
        hint = " (keys start with 'module.': strip the DataParallel prefix first)"
    elif "label_emb.weight" in unexpected:
        hint = " (label_emb: a class-conditional model, which this converter does not support)"
    raise ValueError(f"The state dict does not match the ADM architecture ({summary}): " + "; ".join(problems) + hint)


def convert_adm_state_dict(state_dict: Mapping[str, Any], **arch) -> dict:
    """
    Map an ADM (guided-diffusion ``UNetModel``) state dict onto diffusers ``UNet2DModel`` keys.

    :param state_dict: the ADM state dict (tensors; keys as in ``guided_diffusion/unet.py``).
    :param arch: architecture keyword arguments of :func:`adm_unet_config` (defaults: the 256x256
        unconditional ImageNet model).
    :return: a new state dict for ``UNet2DModel(**adm_unet_config(**arch))``; tensors keep their dtype and
        may share storage with the input (views), the q/k/v splits are new tensors.
    :raises ValueError: if the state dict does not hold exactly the expected keys with the expected shapes;
        the message names the missing, unexpected and mis-shaped keys.
    """
    import torch

    a = _arch(**arch)
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"Expected a state dict (a mapping of names to tensors), got {type(state_dict).__name__}")
    layout = _layout(a)
    _check_state_dict(state_dict, {adm_key: shape for adm_key, _, shape, _ in layout}, arch, torch.Tensor)

    out: dict = {}
    head_dim = a["num_head_channels"]
    for adm_key, hf_key, shape, kind in layout:
        tensor = state_dict[adm_key].detach()
        if kind == "copy":
            out[hf_key] = tensor
        elif kind == "squeeze":  # 1x1 conv1d -> Linear
            out[hf_key] = tensor[..., 0]
        elif kind == "qkv":
            channels = shape[1] if len(shape) == 3 else shape[0] // 3
            for name, part in zip("qkv", _split_qkv(tensor, channels, head_dim, a["use_new_attention_order"])):
                out[hf_key.format(name)] = part
        else:  # pragma: no cover
            raise AssertionError(kind)
    return out


# ---------------------------------------------------------------------------------------------- files
def load_adm_checkpoint(checkpoint_path: str | os.PathLike) -> dict:
    """
    Read an ADM checkpoint (``torch.save`` of a state dict, or a ``.safetensors`` file) without executing
    pickled code: ``torch.load(..., map_location="cpu", weights_only=True)``.

    :raises FileNotFoundError: no such file.
    :raises ValueError: the file is not a readable checkpoint, needs arbitrary pickled objects, or does not
        hold a dict of tensors.
    """
    import pickle

    import torch

    path = os.fspath(checkpoint_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {path!r}")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file

            return dict(load_file(path, device="cpu"))
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"Could not read {path!r} as a safetensors file: {err}") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"Refusing to load {path!r}: it needs arbitrary pickled objects, which weights_only=True does not "
            f"execute (a guided-diffusion checkpoint is a plain state dict of tensors). torch said: {first}"
        ) from err
    except Exception as err:  # corrupt / truncated / not a torch file
        raise ValueError(f"Could not read {path!r} as a PyTorch checkpoint: {type(err).__name__}: {err}") from err
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path!r} holds a {type(obj).__name__}, not a state dict (a dict of tensors)")
    if not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        nested = [k for k, v in obj.items() if isinstance(v, Mapping)]
        hint = f" (nested dicts under {nested}: pass the model's state dict itself)" if nested else ""
        raise ValueError(f"{path!r} does not hold a state dict of tensors{hint}")
    return dict(obj)


def convert_guided_diffusion(checkpoint_path: str | os.PathLike, output_dir: str | os.PathLike,
                             num_train_timesteps: int = 1000, overwrite: bool = False, **arch) -> str:
    """
    Convert a guided-diffusion checkpoint file into ``output_dir/unet`` (``UNet2DModel``) and
    ``output_dir/scheduler`` (``DDPMScheduler``), loadable with
    ``DiffusionPurifier.from_pretrained(output_dir)``.

    :param checkpoint_path: e.g. ``256x256_diffusion_uncond.pt``.
    :param output_dir: the directory to write.
    :param num_train_timesteps: diffusion steps of the model (1000 for the released ADM checkpoints).
    :param overwrite: allow writing into an existing non-empty ``output_dir``.
    :param arch: architecture keyword arguments of :func:`adm_unet_config`.
    :return: ``output_dir``.
    """
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    output_dir = os.fspath(output_dir)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"Output path {output_dir!r} exists and is not a directory")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise ValueError(f"Output directory {output_dir!r} is not empty (pass overwrite=True / --overwrite)")
    config = adm_unet_config(**arch)  # validates arch before the (large) file is read
    state_dict = load_adm_checkpoint(checkpoint_path)
    converted = convert_adm_state_dict(state_dict, **arch)
    del state_dict
    # Built on the meta device and filled by assignment: no random init of ~550M parameters and no extra copy.
    with torch.device("meta"):
        unet = UNet2DModel(**config)
    converted = {k: v.to(torch.float32).contiguous() for k, v in converted.items()}
    unet.load_state_dict(converted, strict=True, assign=True)
    del converted
    scheduler = DDPMScheduler(**adm_scheduler_config(learn_sigma=arch.get("learn_sigma", True),
                                                     num_train_timesteps=num_train_timesteps))
    os.makedirs(output_dir, exist_ok=True)
    unet.save_pretrained(os.path.join(output_dir, "unet"))
    scheduler.save_pretrained(os.path.join(output_dir, "scheduler"))
    return output_dir
