"""
Embedded default models for scikit-learn's 8x8 digits: a small CNN classifier and a small DDPM.

Both are trained by ``scripts/train_embedded.py`` on the fixed train split of
:func:`art_diffpure.models.data.load_digits_split` and shipped as safetensors files in
``art_diffpure/weights/`` (with ``provenance.json``; package data of ``setup.cfg``, located relative to the
``art_diffpure`` package root), so that examples and tests run offline on a CPU.
Inputs are NCHW float32 of shape ``(n, 1, 8, 8)`` in [0, 1].
"""
from __future__ import annotations

import importlib.resources
import json
import os
from typing import TYPE_CHECKING, Any

import torch

from art_diffpure.models.classifier import art_classifier

if TYPE_CHECKING:  # pragma: no cover
    from art.estimators.classification import PyTorchClassifier
    from diffusers import DDPMScheduler, UNet2DModel

    from art_diffpure.purifier import DiffusionPurifier

#: ``art_diffpure/weights/``: the package data directory of the shipped weights (relative to the package root).
WEIGHTS_DIR = str(importlib.resources.files("art_diffpure").joinpath("weights"))
CLASSIFIER_FILE = "digits_cnn.safetensors"
UNET_FILE = "digits_unet.safetensors"
PROVENANCE_FILE = "provenance.json"
DEFAULT_T_STAR = 100  # DiffPure's t* = 0.1 on a 1000-step model


class DigitsCNN(torch.nn.Module):
    """
    A small CNN classifier for 1x8x8 digits in [0, 1], returning logits over 10 classes.

    Two 3x3 conv layers at 8x8, a 2x2 max-pool, one conv layer at 4x4, then a 128-unit hidden
    layer (the penultimate features, see :meth:`features`) and a linear head.
    """

    def __init__(self, classes: int = 10, width: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, width, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(width, 2 * width, 3, padding=1), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(2 * width, 2 * width, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(2 * width * 16, hidden), torch.nn.ReLU(),
        )
        self.dropout = torch.nn.Dropout(0.3)  # only active in train mode
        self.head = torch.nn.Linear(hidden, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features ``(n, hidden)`` (post-ReLU), e.g. for a feature-space FID."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def digits_unet_config() -> dict[str, Any]:
    """
    Keyword arguments of the digits ``UNet2DModel``: two resolutions (8x8, 4x4), 16/32 channels,
    one ResNet block per level, no attention. Kept small because attacks backpropagate through
    ``t_star`` chained UNet calls for every PGD step.
    """
    return dict(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )


def digits_scheduler() -> "DDPMScheduler":
    """The DDPM noise schedule of ``google/ddpm-cifar10-32``: 1000 linear betas 1e-4..0.02, fixed_large."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        clip_sample=True, variance_type="fixed_large", prediction_type="epsilon",
    )


def _weights_path(name: str) -> str:
    path = os.path.join(WEIGHTS_DIR, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing; run `python scripts/train_embedded.py` to create it")
    return path


def _to_device(device: str) -> torch.device:
    # Accept ART's "gpu" as well as torch device strings.
    if device == "gpu":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def load_digits_classifier(device: str = "cpu") -> DigitsCNN:
    """The shipped digits classifier, in eval mode, on ``device``."""
    from safetensors.torch import load_file

    model = DigitsCNN()
    model.load_state_dict(load_file(_weights_path(CLASSIFIER_FILE)))
    return model.to(_to_device(device)).eval()


def load_digits_unet(device: str = "cpu") -> "UNet2DModel":
    """The shipped digits DDPM (an epsilon-predicting ``UNet2DModel``), in eval mode, on ``device``."""
    from diffusers import UNet2DModel
    from safetensors.torch import load_file

    unet = UNet2DModel(**digits_unet_config())
    unet.load_state_dict(load_file(_weights_path(UNET_FILE)))
    return unet.to(_to_device(device)).eval()


def load_digits_purifier(**kwargs: Any) -> "DiffusionPurifier":
    """
    A :class:`~art_diffpure.DiffusionPurifier` with the shipped digits DDPM.

    Defaults: ``t_star=100``, ``sampler="ddpm"``, ``seed=None`` (fresh randomness), ``batch_size=256``,
    ``device_type="cpu"``; keyword arguments override them and go to the constructor.
    """
    from art_diffpure.purifier import DiffusionPurifier

    kwargs.setdefault("t_star", DEFAULT_T_STAR)
    kwargs.setdefault("batch_size", 256)  # 8x8 images: large batches are cheap and faster on CPU
    kwargs.setdefault("device_type", "cpu")
    device = "cuda" if kwargs["device_type"] == "gpu" and torch.cuda.is_available() else "cpu"
    return DiffusionPurifier(load_digits_unet(device), digits_scheduler(), **kwargs)


def digits_art_classifier(purifier: "DiffusionPurifier | None" = None, device_type: str = "cpu") -> "PyTorchClassifier":
    """
    The shipped digits classifier as an ART ``PyTorchClassifier`` (clip values (0, 1),
    cross-entropy loss, input shape (1, 8, 8), 10 classes), with ``purifier`` as its
    preprocessing defence when given: :func:`~art_diffpure.models.classifier.art_classifier` of
    :func:`load_digits_classifier`.
    """
    device = "cuda" if device_type == "gpu" and torch.cuda.is_available() else "cpu"
    return art_classifier(load_digits_classifier(device), (1, 8, 8), 10, purifier=purifier, device_type=device_type)


def load_provenance() -> dict[str, Any]:
    """The training record of the shipped weights (``weights/provenance.json``)."""
    with open(_weights_path(PROVENANCE_FILE), encoding="utf-8") as f:
        return json.load(f)


__all__ = ["CLASSIFIER_FILE", "DEFAULT_T_STAR", "PROVENANCE_FILE", "UNET_FILE", "WEIGHTS_DIR", "DigitsCNN",
           "digits_art_classifier", "digits_scheduler", "digits_unet_config", "load_digits_classifier",
           "load_digits_purifier", "load_digits_unet", "load_provenance"]
