"""Shared helpers of the benchmark scripts: environment record, models, data, JSON output.

Not a test module: every script under ``benchmarks/`` is run as ``python benchmarks/bN_*.py [--smoke]``
and writes one JSON file: ``benchmarks/results/<name>.json`` (the committed results), or with ``--smoke``
``benchmarks/results/smoke/<name>.json`` (git-ignored, never read by ``summarize.py``), unless ``--out`` is given.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # run from a checkout without installation
    sys.path.insert(0, ROOT)
RESULTS_DIR = os.path.join(HERE, "results")
#: Where ``--smoke`` runs write without ``--out`` (git-ignored): a smoke run never overwrites a committed result.
SMOKE_DIR = os.path.join(RESULTS_DIR, "smoke")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds (CI)")
    p.add_argument("--out", default=None, help="output JSON path (default benchmarks/results/<name>.json; with "
                                                "--smoke benchmarks/results/smoke/<name>.json)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all the machine's cores)")
    p.add_argument("--repeats", type=int, default=None, help="timing repeats (median reported)")
    return p


def setup_threads(threads: int | None) -> int:
    import torch

    if threads is None:
        threads = os.cpu_count() or 1
    torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or platform.machine()


def _load_and_date() -> tuple[list[float] | None, str]:
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return load, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# The run's start, taken when a script imports this module: a result file is written at the end, and the load
# during the run is what qualifies its timings.
_START_LOAD, _START_DATE = _load_and_date()
_START_CLOCK = time.perf_counter()


def environment() -> dict[str, Any]:
    """Machine and library versions, and the load average and date at the script's start and at this call (the
    end, when a result is written), recorded in every result file."""
    import numpy
    import torch

    out: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda_available": torch.cuda.is_available(),
        "loadavg_at_start": _START_LOAD,
        "date_utc": _START_DATE,
        "loadavg_at_end": _load_and_date()[0],
        "date_utc_end": _load_and_date()[1],
        "script_wall_s": time.perf_counter() - _START_CLOCK,
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT) if os.path.isabs(sys.argv[0]) else sys.argv[0]]
                            + sys.argv[1:]),
    }
    for mod in ("diffusers", "art"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover
            out[mod] = None
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def output_path(out: str | None, name: str, smoke: bool) -> str:
    """``out`` if given, else ``results/<name>.json``, or ``results/smoke/<name>.json`` for a smoke run."""
    if out:
        return out
    return os.path.join(SMOKE_DIR if smoke else RESULTS_DIR, f"{name}.json")


def write_json(data: dict[str, Any], out: str | None, name: str, quiet: bool = False) -> str:
    """Write ``data`` (plus the environment) as JSON to :func:`output_path` (smoke runs: ``data["smoke"]``).

    Atomic (a temporary file renamed over the path): a script that rewrites its results as it goes and is killed
    meanwhile leaves the previous complete file, never a truncated one."""
    path = output_path(out, name, bool(data.get("smoke")))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    data = dict(data)
    data.setdefault("environment", environment())
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=_default)
        f.write("\n")
    os.replace(tmp, path)
    if not quiet:
        print(f"wrote {path}")
    return path


def _default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> tuple[list[float], Any]:
    """Wall times of ``repeats`` calls (after ``warmup`` untimed calls) and the last result."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def median(values: list[float]) -> float:
    return float(statistics.median(values))


# ---------------------------------------------------------------------------------------------- models
def embedded_weights_available() -> bool:
    from art_diffpure.models import digits as embedded

    return all(os.path.isfile(os.path.join(embedded.WEIGHTS_DIR, f))
               for f in (embedded.CLASSIFIER_FILE, embedded.UNET_FILE))


def digits_unet(random_init_ok: bool = True):
    """``(unet, source)``: the embedded digits UNet, or the same architecture with seeded random weights."""
    import torch
    from diffusers import UNet2DModel

    from art_diffpure.models import digits as embedded

    if os.path.isfile(os.path.join(embedded.WEIGHTS_DIR, embedded.UNET_FILE)):
        return embedded.load_digits_unet(), "embedded"
    if not random_init_ok:
        raise FileNotFoundError("the embedded digits UNet is missing")
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    unet = UNet2DModel(**embedded.digits_unet_config()).eval()
    torch.random.set_rng_state(state)
    return unet, "random-init (embedded UNet weights missing)"


def digits_classifier_model():
    """``(model, source)``: the embedded digits CNN (or seeded random weights if missing)."""
    import torch

    from art_diffpure.models import digits as embedded

    if os.path.isfile(os.path.join(embedded.WEIGHTS_DIR, embedded.CLASSIFIER_FILE)):
        return embedded.load_digits_classifier(), "embedded"
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = embedded.DigitsCNN().eval()
    torch.random.set_rng_state(state)
    return model, "random-init (embedded classifier weights missing)"


def recommended_eps(default: float = 0.1) -> tuple[float, str]:
    from art_diffpure.models import digits as embedded

    try:
        prov = embedded.load_provenance()
    except FileNotFoundError:
        return default, "default (no provenance.json)"
    for key in ("recommended_eps",):
        if key in prov:
            value = prov[key]
            if isinstance(value, dict):  # e.g. {"value": ..., "why": ...}
                value = value.get("value", value.get("eps", default))
            return float(value), "provenance.json recommended_eps"
    return default, "default (provenance.json has no recommended_eps yet)"


def add_checkpoint_arg(p) -> None:
    """``--checkpoint auto|true|false`` (default: the purifier's own default, ``auto``)."""
    p.add_argument("--checkpoint", default="auto", choices=("auto", "true", "false"),
                   help="the purifier's checkpoint setting (default: auto, the product default)")


def checkpoint_value(args) -> bool | str:
    return {"auto": "auto", "true": True, "false": False}[args.checkpoint]


def digits_setup(t_star: int, checkpoint: bool | str = True, seed: int | None = 0, batch_size: int = 256):
    """``(art_classifier, purifier, sources)`` on the embedded digits models (random weights if missing)."""
    from art.estimators.classification import PyTorchClassifier
    import torch

    from art_diffpure.purifier import DiffusionPurifier
    from art_diffpure.models.digits import digits_scheduler

    unet, unet_src = digits_unet()
    model, clf_src = digits_classifier_model()
    purifier = DiffusionPurifier(unet, digits_scheduler(), t_star=t_star, seed=seed, checkpoint=checkpoint,
                                 batch_size=batch_size, device_type="cpu")
    classifier = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                                   nb_classes=10, clip_values=(0.0, 1.0), preprocessing_defences=[purifier],
                                   device_type="cpu")
    return classifier, purifier, {"unet": unet_src, "classifier": clf_src}


def digits_data(n: int):
    from art_diffpure.models.data import load_digits_split

    x, y = load_digits_split("test")
    return x[:n], y[:n]


def cifar_unet_config() -> dict[str, Any]:
    """The ``google/ddpm-cifar10-32`` UNet configuration (35.7M parameters; used with random weights).

    As its published config.json: ``attention_head_dim`` null, i.e. one attention head over all channels (256) in
    the 16x16 attention blocks and the middle block. diffusers' class default (8) would give 32 heads of width 8:
    the same parameters, other attention kernels and memory."""
    return dict(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_eps=1e-6, norm_num_groups=32, flip_sin_to_cos=False, freq_shift=1, downsample_padding=0,
        attention_head_dim=None, add_attention=True,
    )


def cifar_unet(seed: int = 0):
    import torch
    from diffusers import UNet2DModel

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    unet = UNet2DModel(**cifar_unet_config()).eval()
    torch.random.set_rng_state(state)
    return unet
