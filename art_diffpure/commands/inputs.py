"""
A user's models and data from the short strings of a command line (``art-diffpure evaluate``), checked early.

Every loader turns a *spec* into an object or raises :class:`InputError`, whose message names what is wrong and
how to fix it, before any attack runs:

- diffusion model (:func:`load_diffusion`): ``digits`` (the embedded DDPM), a local diffusers directory or a hub
  id (both through :meth:`~art_diffpure.DiffusionPurifier.from_pretrained`);
- classifier (:func:`load_classifier`): ``digits`` (the embedded CNN), a RobustBench model name (with
  ``model_dir``), a ``module:function`` factory returning a ``torch.nn.Module`` (``module`` importable, or a path
  to a ``.py`` file), or a TorchScript file. Normalisation stays inside the model: inputs are in ``[0, 1]``;
- data (:func:`load_data`): ``digits`` (the embedded test split), an ``.npz`` with ``x`` (float, NCHW, ``[0, 1]``)
  and ``y`` (class indices or one-hot), a CIFAR-10 python batches directory (``test_batch``), or an image folder
  with a labels file (``labels.csv`` / ``labels.txt``: one ``filename,label`` per line);
- :func:`check_compatible`: the data against the UNet (``in_channels``, ``sample_size``) and the labels against the
  classifier's classes, found by one forward pass on one image.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from art_diffpure.exceptions import InputError
from art_diffpure._utils import index_labels

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from art_diffpure.purifier import DiffusionPurifier

__all__ = ["Data", "InputError", "check_compatible", "load_classifier", "load_data", "load_diffusion",
           "torch_device"]

#: Names of the labels file of an image folder (first found wins).
LABEL_FILES = ("labels.csv", "labels.txt")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".torchscript")



@dataclass
class Data:
    """Images ``x`` (float32 NCHW in [0, 1]), labels ``y`` (int64 indices) and their global ``sample_ids``."""

    x: np.ndarray
    y: np.ndarray
    sample_ids: np.ndarray
    source: str
    total: int  # images in the whole source, before --offset / --n-images

    def sha256(self) -> str:
        """Hash of the selected images and labels: a run's results belong to exactly these."""
        h = hashlib.sha256(np.ascontiguousarray(self.x, dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(self.y, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(self.sample_ids, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- devices
def torch_device(device: str) -> str:
    """A torch device string from ``cpu``, ``gpu``, ``cuda`` or ``cuda:N``; an :class:`InputError` without CUDA."""
    import torch

    if device == "cpu":
        return "cpu"
    if device == "gpu" or device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
        if device.startswith("cuda:"):
            index = device.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise InputError(f"--device {device}: there are {torch.cuda.device_count()} GPU(s) "
                                 f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
            torch.cuda.set_device(int(index))  # ART and the purifier place models on the CURRENT device
            return device
        return f"cuda:{torch.cuda.current_device()}"
    raise InputError(f"--device {device!r} is not a device; use cpu, cuda, cuda:N or gpu")


# ---------------------------------------------------------------------------------------------- diffusion
def _is_diffusers_dir(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, *p)) for p in (("config.json",), ("unet", "config.json")))


def load_diffusion(spec: str, t_star: int = 100, sampler: str = "ddpm", gradient: str = "full", device: str = "cpu",
                   batch_size: int = 32) -> "DiffusionPurifier":
    """
    The :class:`~art_diffpure.DiffusionPurifier` of a diffusion-model spec, with fresh randomness by default
    (an attack sets it per sample) and its own generator seeded with 0.

    :param spec: ``"digits"``, a local diffusers directory (``unet/`` + ``scheduler/``, or a top-level
        ``config.json`` + ``scheduler_config.json``) or a hub id (the local cache is used offline).
    :param device: a torch device string (:func:`torch_device`).
    :raises InputError: for a missing or unloadable model, or ``t_star`` outside ``1..num_train_timesteps``.
    """
    from art_diffpure.purifier import DiffusionPurifier

    kwargs = dict(t_star=t_star, sampler=sampler, gradient=gradient, seed=None, generator_seed=0,
                  batch_size=batch_size, device_type="cpu" if device == "cpu" else "gpu")
    if spec == "digits":
        from art_diffpure.models.digits import digits_scheduler, load_digits_unet

        return _build_purifier(lambda: DiffusionPurifier(load_digits_unet(device), digits_scheduler(), **kwargs),
                               spec, t_star)
    if os.path.isfile(spec):
        raise InputError(f"--diffusion {spec}: is a file; give a diffusers model directory (unet/config.json, "
                         "scheduler/scheduler_config.json, as written by DiffusionPurifier.save_pretrained) or a "
                         "hub id such as google/ddpm-cifar10-32")
    if os.path.isdir(spec) and not _is_diffusers_dir(spec):
        raise InputError(f"--diffusion {spec}: not a diffusers model directory (no config.json or unet/config.json "
                         "in it); write one with DiffusionPurifier.save_pretrained(DIR), or UNet2DModel and "
                         "DDPMScheduler .save_pretrained")
    if os.path.isdir(spec):
        _check_json_configs(spec)
    looks_local = spec.startswith((".", "/", "~")) or spec.endswith(os.sep) or spec.count("/") > 1
    if not os.path.isdir(spec) and looks_local:
        raise InputError(f"--diffusion {spec}: no such directory; give a diffusers model directory or a hub id")
    return _build_purifier(lambda: DiffusionPurifier.from_pretrained(spec, **kwargs), spec, t_star)


def _build_purifier(build, spec: str, t_star: int) -> "DiffusionPurifier":
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # its advice to install accelerate is noise on a command line
    try:
        return build()
    except ValueError as err:
        if "t_star" in str(err):  # the purifier's range check: state it in the command line's terms
            raise InputError(f"--t-star {t_star} is out of range for the diffusion model {spec!r} ({err}); choose "
                             "a value in that range (100 = DiffPure's t* = 0.1 on a 1000-step model)") from None
        raise InputError(f"--diffusion {spec}: the model does not load: {err}") from None
    except Exception as err:  # noqa: BLE001 - diffusers/hub errors of every kind: report, do not trace back
        text = " ".join(str(err).split()) or type(err).__name__
        if os.path.isdir(spec):
            fix = ("the directory must hold a diffusers UNet2DModel (unet/config.json and its weights) and a "
                   "DDPMScheduler (scheduler/scheduler_config.json), as DiffusionPurifier.save_pretrained(DIR) writes")
            raise InputError(f"--diffusion {spec}: read as a local directory, the model does not load "
                             f"({type(err).__name__}: {text[:400]}); {fix}") from None
        fix = "" if "save_pretrained" in text else (
            "; where there is network, save it once with DiffusionPurifier.from_pretrained(ID).save_pretrained(DIR) "
            "and pass --diffusion DIR")
        raise InputError(f"--diffusion {spec}: read as a hub id (it is not a local directory), the model does not "
                         f"load: {type(err).__name__}: {text}{fix}") from None
    finally:
        diffusers_logging.set_verbosity(verbosity)


def _check_json_configs(spec: str) -> None:
    """A diffusers directory's config files must parse: diffusers' own error for a broken one is misleading."""
    import json

    for parts in (("config.json",), ("unet", "config.json"), ("scheduler_config.json",),
                  ("scheduler", "scheduler_config.json")):
        path = os.path.join(spec, *parts)
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as handle:
                    json.load(handle)
            except (OSError, ValueError) as err:
                raise InputError(f"--diffusion {spec}: {os.path.join(*parts)} is not readable JSON ({err}); "
                                 "rewrite the directory with DiffusionPurifier.save_pretrained(DIR)") from None


# ---------------------------------------------------------------------------------------------- classifier
def load_classifier(spec: str, model_dir: str | None = None, dataset: str = "cifar10", threat_model: str = "Linf",
                    device: str = "cpu") -> "torch.nn.Module":
    """
    The classifier (a ``torch.nn.Module`` mapping ``[0, 1]`` images to logits, in eval mode, on ``device``).

    :param spec: ``"digits"``; ``"module:function"`` (``module`` importable or a ``.py`` path; ``function()``
        returns the module); a TorchScript file; otherwise a RobustBench model name, which needs ``model_dir``
        holding ``<model_dir>/<dataset>/<threat_model>/<name>.pt``.
    :raises InputError: for a missing file, a factory that fails or returns something else, a file that is not
        TorchScript, or a RobustBench name without its checkpoint.
    """
    import torch

    if spec == "digits":
        from art_diffpure.models.digits import load_digits_classifier

        return load_digits_classifier(device)
    if ":" in spec and not os.path.exists(spec):
        model = _from_factory(spec)
    elif os.path.exists(spec) or spec.endswith(TORCHSCRIPT_SUFFIXES) or os.sep in spec:
        model = _from_torchscript(spec, device)
    else:
        model = _from_robustbench(spec, model_dir, dataset, threat_model)
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"--classifier {spec}: returned {type(model).__name__!r}, not a torch.nn.Module; return the "
                         "model itself (normalisation inside it, inputs in [0, 1])")
    return model.to(device).eval()


def _from_factory(spec: str) -> Any:
    module_name, _, function = spec.rpartition(":")
    if not module_name or not function:
        raise InputError(f"--classifier {spec}: expected module:function (e.g. mypkg.models:build or "
                         "./my_model.py:build)")
    if module_name.endswith(".py"):
        if not os.path.isfile(module_name):
            raise InputError(f"--classifier {spec}: no such file {module_name}")
        name = "art_diffpure_user_" + hashlib.sha256(os.path.abspath(module_name).encode()).hexdigest()[:12]
        try:
            loader_spec = importlib.util.spec_from_file_location(name, module_name)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module  # dataclasses and pickling look modules up by name
            loader_spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - the user's code: report its error in one line
            sys.modules.pop(name, None)
            raise InputError(f"--classifier {spec}: importing {module_name} failed: {type(err).__name__}: "
                             f"{err}") from None
    else:
        try:
            module = importlib.import_module(module_name)
        except Exception as err:  # noqa: BLE001
            raise InputError(f"--classifier {spec}: cannot import module {module_name!r} ({type(err).__name__}: "
                             f"{err}); put it on PYTHONPATH or give the path of its .py file") from None
    factory = getattr(module, function, None)
    if not callable(factory):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise InputError(f"--classifier {spec}: {module_name} has no function {function!r} (callables in it: "
                         f"{', '.join(found) or 'none'})")
    try:
        return factory()
    except Exception as err:  # noqa: BLE001
        raise InputError(f"--classifier {spec}: {function}() failed: {type(err).__name__}: {err}") from None


def _from_torchscript(path: str, device: str) -> Any:
    import warnings

    import torch

    if not os.path.isfile(path):
        raise InputError(f"--classifier {path}: no such file")
    try:
        with warnings.catch_warnings():  # torch 2.10+ deprecates jit.load; it still is the TorchScript reader
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(path, map_location=device)
    except Exception as err:  # noqa: BLE001
        first = " ".join(str(err).split())[:160] or type(err).__name__
    fix = ("save the model with torch.jit.save(torch.jit.script(model), PATH), or pass a module:function factory "
           "that builds it and loads its weights")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - neither TorchScript nor a plain torch.save file
        content = None
    if isinstance(content, dict):
        raise InputError(f"--classifier {path}: a torch.save checkpoint of {len(content)} entries (a state dict?), not "
                         f"a TorchScript model; {fix}")
    raise InputError(f"--classifier {path}: not a TorchScript file ({first}); {fix}")


def _from_robustbench(name: str, model_dir: str | None, dataset: str, threat_model: str) -> Any:
    if model_dir is None:
        raise InputError(f"--classifier {name}: read as a RobustBench model name, which needs --model-dir DIR "
                         f"holding DIR/{dataset}/{threat_model}/{name}.pt (or pass a module:function factory or a "
                         "TorchScript file)")
    from art_diffpure.models.robustbench import load_robustbench_model

    try:
        return load_robustbench_model(name, dataset, threat_model, model_dir)
    except FileNotFoundError as err:
        raise InputError(f"--classifier {name}: {err}".replace(", or pass allow_download=True.",
                                                                "; or point --model-dir at the directory holding it.")
                         ) from None
    except Exception as err:  # noqa: BLE001
        raise InputError(f"--classifier {name}: RobustBench could not load it ({type(err).__name__}: {err})") from None


# ---------------------------------------------------------------------------------------------- data
def load_data(spec: str, n_images: int | None = None, offset: int = 0) -> Data:
    """
    Images and labels of a data spec, checked, with ``n_images`` images from ``offset`` (default: all of them).
    Sample ids are the images' positions in the source, so results of different offsets compose.

    :raises InputError: for a missing or unreadable source, images that are not float NCHW in [0, 1] (integer
        0..255 data, NaN or inf, channels last), labels that are not class indices, or a range past the data.
    """
    if isinstance(n_images, bool) or (n_images is not None and n_images < 1):
        raise InputError(f"--n-images {n_images}: must be at least 1 (omit it to take every image)")
    if isinstance(offset, bool) or offset < 0:
        raise InputError(f"--offset {offset}: must be >= 0")
    x, y = _read_source(spec)
    total = len(x)
    if len(y) != total:
        raise InputError(f"--data {spec}: {total} images but {len(y)} labels; give one label per image")
    if offset >= total:
        raise InputError(f"--offset {offset} is past the end of the data ({total} images); use 0..{total - 1}")
    stop = total if n_images is None else offset + n_images
    if stop > total:
        raise InputError(f"--n-images {n_images} --offset {offset} asks for images {offset}..{stop - 1}, but "
                         f"{spec} has {total}; use --n-images {total - offset} or less")
    x, y = x[offset:stop], y[offset:stop]
    x = _check_images(x, spec, offset)
    labels = _check_labels(y, spec)
    return Data(x, labels, np.arange(offset, stop, dtype=np.int64), spec, total)


def _read_source(spec: str) -> tuple[np.ndarray, np.ndarray]:
    if spec == "digits":
        from art_diffpure.models.data import load_digits_split

        return load_digits_split("test")
    if not os.path.exists(spec):
        raise InputError(f"--data {spec}: no such file or directory (give digits, an .npz with x and y, a CIFAR-10 "
                         "python batches directory or an image folder with labels.csv)")
    if os.path.isdir(spec):
        if os.path.isfile(os.path.join(spec, "test_batch")):
            return _read_cifar_batch(os.path.join(spec, "test_batch"))
        for name in LABEL_FILES:
            if os.path.isfile(os.path.join(spec, name)):
                return _read_image_folder(spec, os.path.join(spec, name))
        raise InputError(f"--data {spec}: a directory with neither CIFAR-10 python batches (test_batch) nor a labels "
                         f"file ({' or '.join(LABEL_FILES)}: one 'filename,label' per line) for its images")
    if os.path.basename(spec).startswith(("test_batch", "data_batch")):
        return _read_cifar_batch(spec)
    if spec.endswith(".npz"):
        return _read_npz(spec)
    raise InputError(f"--data {spec}: unknown format; give an .npz with x and y, a CIFAR-10 python batches "
                     "directory or an image folder with labels.csv")


def _read_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:  # never unpickle a data file
            keys = list(npz.keys())
            if "x" not in keys or "y" not in keys:
                raise InputError(f"--data {path}: needs arrays named x (images) and y (labels); it holds "
                                 f"{', '.join(keys) or 'nothing'} (np.savez(path, x=images, y=labels))")
            return npz["x"], npz["y"]
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file
        what = "not an .npz archive" if "pickle" in str(err) else f"unreadable ({type(err).__name__}: {err})"
        raise InputError(f"--data {path}: {what}; write it with np.savez(path, x=images, y=labels)") from None


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    from art_diffpure.models.data import load_cifar10_batch

    try:
        return load_cifar10_batch(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise InputError(f"--data {path}: not a CIFAR-10 python batch ({type(err).__name__}: {err}); use the "
                         "files of cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html)") from None


def _read_image_folder(folder: str, labels_file: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    names, labels = [], []
    with open(labels_file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = [p.strip() for p in (line.split(",") if "," in line else line.split())]
            if len(parts) != 2:
                raise InputError(f"--data {folder}: {labels_file} line {number} is {line!r}; expected "
                                 "'filename,label'")
            if number == 1 and not parts[1].lstrip("-").isdigit():
                continue  # a header line
            if not parts[1].lstrip("-").isdigit():
                raise InputError(f"--data {folder}: {labels_file} line {number}: label {parts[1]!r} is not a class "
                                 "index (an integer)")
            names.append(parts[0])
            labels.append(int(parts[1]))
    if not names:
        raise InputError(f"--data {folder}: {labels_file} lists no images")
    images = []
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise InputError(f"--data {folder}: {labels_file} names {name}, which is not in the folder")
        try:
            with Image.open(path) as img:
                img = img.convert("L") if img.mode in ("1", "L", "LA", "I;16", "I") else img.convert("RGB")
                arr = np.asarray(img, dtype=np.uint8)
        except Exception as err:  # noqa: BLE001
            raise InputError(f"--data {folder}: cannot read image {name} ({type(err).__name__}: {err})") from None
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # HWC -> CHW
        if images and arr.shape != images[0].shape:
            raise InputError(f"--data {folder}: {name} has shape {arr.shape} (CHW), {names[0]} has "
                             f"{images[0].shape}; every image must have the same size and channels")
        images.append(arr)
    return np.stack(images).astype(np.float32) / 255.0, np.asarray(labels, dtype=np.int64)


def _check_images(x: Any, spec: str, offset: int) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind in "iu":
        lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
        raise InputError(f"--data {spec}: x has integer dtype {x.dtype} (values {lo}..{hi}); images must be float in "
                         "[0, 1] (normalisation happens inside the classifier): save x.astype('float32') / 255")
    if x.dtype.kind != "f":
        raise InputError(f"--data {spec}: x has dtype {x.dtype}; images must be float32 (or float64) in [0, 1]")
    if x.ndim != 4:
        hint = " (add the channel axis: x[:, None])" if x.ndim == 3 else ""
        raise InputError(f"--data {spec}: x has shape {x.shape}; expected (n, channels, height, width){hint}")
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        first = [int(i) + offset for i in np.flatnonzero(bad)[:5]]
        raise InputError(f"--data {spec}: {int(bad.sum())} image(s) hold NaN or inf (image(s) {first}); fix or "
                         "drop them")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        hint = ("it looks like 0..255 data: divide by 255" if hi > 1.0 and hi <= 255.0 and lo >= 0.0 else
                "it looks normalised (mean/std): undo it and put the normalisation inside the classifier"
                if lo < 0.0 else "rescale the images to [0, 1]")
        raise InputError(f"--data {spec}: x ranges over [{lo:.4g}, {hi:.4g}], outside [0, 1]; {hint}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_labels(y: Any, spec: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y.ndim == 1 and not np.equal(np.round(y), y).all()):
            raise InputError(f"--data {spec}: y holds non-integer values; labels are class indices (or one-hot rows)")
    elif y.dtype.kind not in "iub":
        raise InputError(f"--data {spec}: y has dtype {y.dtype}; labels are integer class indices")
    if y.ndim == 2 and y.shape[1] > 1 and not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
        raise InputError(f"--data {spec}: y has shape {y.shape} but its rows are not one-hot; give class indices")
    try:
        labels = index_labels(y, None if y.ndim == 1 else y.shape[-1])  # ART's label formats
    except Exception as err:  # noqa: BLE001
        raise InputError(f"--data {spec}: labels of shape {y.shape} are neither class indices (n,) nor one-hot "
                         f"(n, classes) ({err})") from None
    if (labels < 0).any():
        raise InputError(f"--data {spec}: labels include {int(labels.min())}; class indices start at 0")
    return labels


# ---------------------------------------------------------------------------------------------- the pair
def check_compatible(data: Data, purifier: "DiffusionPurifier", model: "torch.nn.Module", device: str) -> int:
    """
    Check the data against the diffusion model and the classifier; return the number of classes (the length of
    the classifier's output on one image).

    :raises InputError: images of another shape than the UNet takes (``in_channels``, ``sample_size``), a classifier
        that fails on one image or returns no logits vector, or labels outside its classes.
    """
    import torch

    shape = tuple(data.x.shape[1:])
    config = getattr(purifier.model, "config", None)
    channels, size = getattr(config, "in_channels", None), getattr(config, "sample_size", None)
    if channels is not None and size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        want = (int(channels), *map(int, hw))
        if shape != want:
            hint = ""
            if shape == (*want[1:], want[0]):
                hint = "; the data look channels-last (NHWC): transpose x to (n, channels, height, width)"
            elif shape[0] == want[0]:
                hint = "; resize the images to the diffusion model's resolution, or use a model trained at theirs"
            raise InputError(f"--data {data.source}: images of shape {shape}, but the diffusion model takes "
                             f"{want} (in_channels={want[0]}, sample_size={hw[0]}){hint}")
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(data.x[:1]).to(device))
    except Exception as err:  # noqa: BLE001
        first = str(err).splitlines()[0] if str(err) else ""
        raise InputError(f"--classifier: the model fails on one image of shape {(1, *shape)} from --data "
                         f"{data.source}: {type(err).__name__}: {first}; it must take batches shaped like the data's "
                         "images, (n, channels, height, width) in [0, 1]") from None
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1 or out.shape[1] < 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"--classifier: on one image it returns {got}, not logits of shape (1, classes)")
    if not bool(torch.isfinite(out).all()):
        raise InputError("--classifier: its output on one image holds NaN or inf")
    classes = int(out.shape[1])
    if int(data.y.max()) >= classes:
        outside = int((data.y >= classes).sum())
        raise InputError(f"--data {data.source}: labels go up to {int(data.y.max())} ({outside} outside), but the "
                         f"classifier has {classes} classes (its output on one image); labels must be class indices "
                         f"0..{classes - 1} of this classifier")
    return classes
