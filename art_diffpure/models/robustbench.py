"""RobustBench classifiers (e.g. the paper's ``Standard`` WideResNet-28-10) as ART classifiers behind a purifier.

RobustBench is an optional dependency (``pip install 'art-diffpure[robustbench]'``, :data:`INSTALL_HINT`): it is
only imported when a model is loaded, so ``import art_diffpure`` works without it and without network. RobustBench
1.1.1 needs two fixes to import at all (see :func:`import_robustbench`).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import TYPE_CHECKING, Any

from art_diffpure.models.classifier import art_classifier

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from art.estimators.classification import PyTorchClassifier

    from art_diffpure.purifier import DiffusionPurifier

#: How to install what this module needs (named by the ImportError when it is missing).
INSTALL_HINT = "pip install 'art-diffpure[robustbench]'"

#: ``dataset -> (input shape, classes)`` of RobustBench's data sets.
DATASET_SHAPES = {"cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100), "imagenet": ((3, 224, 224), 1000)}


def _missing(error: ImportError) -> ImportError:
    return ImportError(f"The RobustBench loader needs robustbench (with pyautoattack and setuptools < 81), which is "
                       f"an optional dependency: {INSTALL_HINT} (or '.[robustbench]' from a clone). "
                       f"Import failed: {error}")


def import_robustbench() -> Any:
    """
    Import ``robustbench.utils`` with the fixes robustbench 1.1.1 needs.

    Its ``eval`` module imports ``autoattack``, which its dependency installs as ``pyautoattack``:
    alias the module. It also imports ``pkg_resources`` (setuptools < 81, pinned in the ``robustbench`` extra).

    :raises ImportError: naming :data:`INSTALL_HINT` when robustbench or what it imports is missing.
    """
    try:
        return _import_robustbench()
    except ImportError as error:
        raise _missing(error) from error


def _import_robustbench() -> Any:
    if "autoattack" not in sys.modules:
        try:
            importlib.import_module("autoattack")
        except ImportError:
            pyautoattack = importlib.import_module("pyautoattack")
            sys.modules["autoattack"] = pyautoattack
            for sub in ("autoattack", "state", "autopgd_base", "fab_pt", "square", "checks", "other_utils"):
                try:
                    sys.modules[f"autoattack.{sub}"] = importlib.import_module(f"pyautoattack.{sub}")
                except ImportError:  # pragma: no cover - depends on pyautoattack's layout
                    pass
    return importlib.import_module("robustbench.utils")


def load_robustbench_model(
    model_name: str = "Standard",
    dataset: str = "cifar10",
    threat_model: str = "Linf",
    model_dir: str = "./models",
    allow_download: bool = False,
) -> "torch.nn.Module":
    """
    Load a RobustBench model through ``robustbench.utils.load_model``.

    With ``allow_download=False`` (default) the checkpoint must already lie in RobustBench's layout,
    ``<model_dir>/<dataset>/<threat_model>/<model_name>.pt``; otherwise a ``FileNotFoundError`` says
    where to put it, instead of robustbench trying the network. Without robustbench installed an ``ImportError``
    names :data:`INSTALL_HINT`.
    """
    if importlib.util.find_spec("robustbench") is None:  # before the checkpoint: say what to install first
        raise _missing(ImportError("No module named 'robustbench'"))
    path = os.path.join(model_dir, dataset, threat_model, f"{model_name}.pt")
    if not allow_download and not os.path.isfile(path):
        raise FileNotFoundError(
            f"RobustBench checkpoint not found at {path}. Download it once where there is network "
            f"(robustbench.utils.load_model({model_name!r}, model_dir=..., dataset={dataset!r}, "
            f"threat_model={threat_model!r})) and copy it there, or pass allow_download=True."
        )
    utils = import_robustbench()
    return utils.load_model(model_name, model_dir=model_dir, dataset=dataset, threat_model=threat_model).eval()


def robustbench_art_classifier(
    model_name: str = "Standard",
    dataset: str = "cifar10",
    threat_model: str = "Linf",
    model_dir: str = "./models",
    purifier: "DiffusionPurifier | None" = None,
    device_type: str = "gpu",
    allow_download: bool = False,
) -> "PyTorchClassifier":
    """
    A RobustBench model as an ART ``PyTorchClassifier`` with the purifier attached, e.g. the paper's
    ``Standard`` WideResNet-28-10 behind DiffPure::

        purifier = DiffusionPurifier.from_pretrained("google/ddpm-cifar10-32", t_star=100, seed=0)
        classifier = robustbench_art_classifier("Standard", model_dir="./models", purifier=purifier)
    """
    if dataset not in DATASET_SHAPES:
        raise ValueError(f"Unknown dataset {dataset!r}; expected one of {sorted(DATASET_SHAPES)}")
    model = load_robustbench_model(model_name, dataset, threat_model, model_dir, allow_download)
    shape, classes = DATASET_SHAPES[dataset]
    return art_classifier(model, shape, classes, purifier=purifier, device_type=device_type)


__all__ = ["DATASET_SHAPES", "INSTALL_HINT", "import_robustbench", "load_robustbench_model",
           "robustbench_art_classifier"]
