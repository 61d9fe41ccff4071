"""
``art-diffpure convert-adm CHECKPOINT OUTPUT_DIR``: an openai/guided-diffusion (ADM) checkpoint as a diffusers
directory (:func:`~art_diffpure.models.convert.convert_guided_diffusion` does the work).
"""
from __future__ import annotations

import argparse
import os
import sys

from art_diffpure.models.adm import ADM_256_UNCOND
from art_diffpure.models.convert import convert_guided_diffusion

__all__ = ["add_arguments", "register", "run"]


def register(sub) -> None:
    """The ``convert-adm`` sub-command."""
    parser = sub.add_parser("convert-adm", help="convert a guided-diffusion (ADM) checkpoint to a diffusers directory",
                            description="Convert an openai/guided-diffusion (ADM) checkpoint into diffusers "
                                        "UNet2DModel + DDPMScheduler directories (OUTPUT_DIR/unet, "
                                        "OUTPUT_DIR/scheduler).")
    add_arguments(parser)
    parser.set_defaults(run=run)


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``convert-adm`` arguments on ``parser``."""
    d = ADM_256_UNCOND
    parser.add_argument("checkpoint", help="guided-diffusion checkpoint, e.g. 256x256_diffusion_uncond.pt "
                                           "(read with weights_only=True; .safetensors also accepted)")
    parser.add_argument("output_dir", help="directory to write unet/ and scheduler/ into")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    arch = parser.add_argument_group("architecture (defaults: the 256x256 unconditional ImageNet model)")
    arch.add_argument("--model-channels", type=int, default=d["model_channels"])
    arch.add_argument("--num-res-blocks", type=int, default=d["num_res_blocks"])
    arch.add_argument("--channel-mult", type=_int_tuple, default=d["channel_mult"], help="e.g. 1,1,2,2,4,4")
    arch.add_argument("--attention-resolutions", type=_int_tuple, default=d["attention_resolutions"], help="e.g. 32,16,8")
    arch.add_argument("--image-size", type=int, default=d["image_size"])
    arch.add_argument("--num-head-channels", type=int, default=d["num_head_channels"])
    arch.add_argument("--in-channels", type=int, default=d["in_channels"])
    arch.add_argument("--learn-sigma", action=argparse.BooleanOptionalAction, default=d["learn_sigma"],
                      help="the model predicts a variance too (2 x in_channels outputs)")
    arch.add_argument("--use-new-attention-order", action="store_true",
                      help="the model was built with use_new_attention_order=True (QKVAttention)")
    arch.add_argument("--num-train-timesteps", type=int, default=1000)
    return parser


def _arch_from_args(args: argparse.Namespace) -> dict:
    return dict(
        model_channels=args.model_channels, num_res_blocks=args.num_res_blocks, channel_mult=tuple(args.channel_mult),
        attention_resolutions=tuple(args.attention_resolutions), image_size=args.image_size,
        num_head_channels=args.num_head_channels, learn_sigma=args.learn_sigma, in_channels=args.in_channels,
        use_new_attention_order=args.use_new_attention_order,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``convert-adm`` from parsed arguments; returns the exit status (0 on success, 1 on failure)."""
    try:
        out = convert_guided_diffusion(args.checkpoint, args.output_dir, num_train_timesteps=args.num_train_timesteps,
                                       overwrite=args.overwrite, **_arch_from_args(args))
    except (FileNotFoundError, ValueError) as err:
        print(f"art-diffpure convert-adm: error: {err}", file=sys.stderr)
        return 1
    print(f"Wrote {os.path.join(out, 'unet')} and {os.path.join(out, 'scheduler')}; "
          f"load with DiffusionPurifier.from_pretrained({out!r})")
    return 0
