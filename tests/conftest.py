"""Shared fixtures: tiny randomly initialised diffusion models and classifiers for 1x8x8 inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

#: CUDA GPUs on this machine. The only tests that may skip are those that need real CUDA hardware (every skip of
#: the suite goes through :func:`requires_gpus`; tests/test_skips.py enforces it).
N_GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0


def requires_gpus(n: int = 1):
    """Mark a test ``cuda`` and skip it, saying why, on a machine with fewer than ``n`` CUDA GPUs."""
    reason = (f"hardware: needs {n} CUDA GPU{'s' if n > 1 else ''}, this machine has {N_GPUS}; it runs real CUDA "
              f"kernels (run `pytest -m cuda` on a machine with {n} GPU{'s' if n > 1 else ''})")

    def mark(test):
        return pytest.mark.cuda(pytest.mark.skipif(N_GPUS < n, reason=reason)(test))
    return mark


def tiny_unet(seed: int = 0, channels: int = 1, size: int = 8, out_channels: int | None = None,
              attention: bool = False):
    """A ~40k-parameter diffusers UNet2DModel, deterministic in ``seed``; ``attention`` adds an attention block at
    the lower resolution (as the CIFAR and ADM UNets have), whose GPU backward kernels are not deterministic."""
    from diffusers import UNet2DModel

    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=size, in_channels=channels, out_channels=out_channels or channels,
        block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D" if attention else "DownBlock2D"),
        up_block_types=("AttnUpBlock2D" if attention else "UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    torch.random.set_rng_state(gen_state)
    return unet.eval()


def tiny_scheduler(**kwargs):
    from diffusers import DDPMScheduler

    config = dict(num_train_timesteps=1000, beta_schedule="linear", variance_type="fixed_large", clip_sample=True)
    config.update(kwargs)
    return DDPMScheduler(**config)


class TinyCNN(torch.nn.Module):
    """A small classifier for 1x8x8 images in [0, 1]."""

    def __init__(self, channels: int = 1, classes: int = 10):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(channels, 8, 3, padding=1), torch.nn.Tanh(),
            torch.nn.Flatten(), torch.nn.Linear(8 * 64, classes),
        )

    def forward(self, x):
        return self.net(x)


def tiny_classifier(seed: int = 0, channels: int = 1) -> torch.nn.Module:
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = TinyCNN(channels).eval()
    torch.random.set_rng_state(gen_state)
    return model


def make_purifier(t_star: int = 10, sampler: str = "ddpm", seed: int | None = 0, **kwargs):
    from art_diffpure import DiffusionPurifier

    kwargs.setdefault("device_type", "cpu")
    return DiffusionPurifier(tiny_unet(), tiny_scheduler(), t_star=t_star, sampler=sampler, seed=seed, **kwargs)


def art_classifier(model: torch.nn.Module, purifier=None, nb_classes: int = 10, input_shape=(1, 8, 8),
                   device_type: str = "cpu"):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=input_shape, nb_classes=nb_classes,
        clip_values=(0.0, 1.0), preprocessing_defences=[purifier] if purifier is not None else None,
        device_type=device_type,
    )


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: two threads on a shared 2-core machine spin against other processes (100x slower for
    8x8 convolutions)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def exact_cuda():
    """No TF32 in cuBLAS / cuDNN for the test (cuDNN's default is TF32 on): CPU-vs-GPU comparisons then measure
    kernels, not precision (TF32 keeps 10 mantissa bits, errors of ~1e-4 relative and more). The legacy
    TF32 flags are set through the API the process uses (``art_diffpure.determinism``); restored afterwards."""
    from art_diffpure import determinism

    saved = determinism.tf32_state()
    api = saved[0]
    determinism.set_tf32((api, (False, False) if api == "legacy" else ("ieee", "ieee", "ieee")))
    yield
    determinism.set_tf32(saved)


@pytest.fixture
def images() -> np.ndarray:
    return np.random.RandomState(0).rand(6, 1, 8, 8).astype(np.float32)


@pytest.fixture
def x0() -> np.ndarray:
    """Three 1x4x4 float64 images in [0.2, 0.8] (the metric tests' analytic purifiers work on 16 pixels)."""
    return np.random.RandomState(0).uniform(0.2, 0.8, (3, 1, 4, 4))


@pytest.fixture
def x8() -> np.ndarray:
    """Two 1x8x8 float32 images in [0.2, 0.8] for the tiny diffusion purifier."""
    return np.random.RandomState(1).uniform(0.2, 0.8, (2, 1, 8, 8)).astype(np.float32)


# The longest test files first: with two workers (`bash dev test`, pytest-xdist's loadfile) the one that holds the
# smoke-run fixtures starts at once and the other worker takes the many short files beside it.
_FIRST = ("tests/reproduce/test_reproduce.py", "tests/test_examples.py")


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        path = item.nodeid.split("::", 1)[0]
        return _FIRST.index(path) if path in _FIRST else len(_FIRST)

    items.sort(key=rank)  # stable: the order inside each file and among the others is kept
