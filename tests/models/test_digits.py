"""The embedded digits models (art_diffpure.models.digits): shipped weights, the ART classifier, the digits purifier.

The fixed data split is tested in test_data.py."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from art_diffpure.models import digits
from art_diffpure.models.data import load_digits_split


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One torch thread: these 8x8 models gain nothing from more, and a busy CPU makes 2 threads far slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def provenance() -> dict:
    return digits.load_provenance()


@pytest.fixture(scope="module")
def test_split() -> tuple[np.ndarray, np.ndarray]:
    return load_digits_split("test")


# ------------------------------------------------------------------ weights
def test_weights_are_package_data():
    """The loader finds the weights relative to the package root, where setup.cfg ships them as package data."""
    import configparser
    import fnmatch
    import os

    import art_diffpure

    package_root = os.path.dirname(os.path.abspath(art_diffpure.__file__))
    assert os.path.samefile(digits.WEIGHTS_DIR, os.path.join(package_root, "weights"))
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(os.path.dirname(__file__), "..", "..", "setup.cfg"))
    patterns = [p.strip() for p in cfg["options.package_data"]["art_diffpure"].split(",")]
    for name in (digits.CLASSIFIER_FILE, digits.UNET_FILE, digits.PROVENANCE_FILE):
        assert os.path.isfile(os.path.join(digits.WEIGHTS_DIR, name))
        assert any(fnmatch.fnmatch(f"weights/{name}", p) for p in patterns), (name, patterns)


def test_weights_load(provenance):
    classifier = digits.load_digits_classifier()
    unet = digits.load_digits_unet()
    assert not classifier.training and not unet.training
    assert sum(p.numel() for p in classifier.parameters()) == provenance["classifier"]["parameters"]
    assert sum(p.numel() for p in unet.parameters()) == provenance["ddpm"]["parameters"]
    # The config the loader builds is the one the weights were trained with.
    assert json.loads(json.dumps(digits.digits_unet_config())) == provenance["ddpm"]["unet_config"]
    x = torch.rand(3, 1, 8, 8)
    assert classifier(x).shape == (3, 10)
    assert classifier.features(x).shape == (3, 128)
    assert unet(x * 2 - 1, torch.tensor([0, 10, 999])).sample.shape == (3, 1, 8, 8)


def test_classifier_reaches_stated_accuracy(provenance, test_split):
    x, y = test_split
    classifier = digits.load_digits_classifier()
    with torch.no_grad():
        acc = float((classifier(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
    assert acc == pytest.approx(provenance["classifier"]["test_accuracy"], abs=1e-6)
    assert acc >= 0.97


def test_art_classifier(test_split):
    x, y = test_split
    classifier = digits.digits_art_classifier()
    assert classifier.nb_classes == 10 and classifier.input_shape == (1, 8, 8)
    assert classifier.clip_values is not None and tuple(classifier.clip_values) == (0.0, 1.0)
    assert classifier.predict(x[:8]).shape == (8, 10)


def test_provenance_records(provenance):
    for key in ("script", "split", "versions", "date", "undefended_pgd", "recommended_eps", "purified_clean_accuracy"):
        assert key in provenance
    assert provenance["ddpm"]["steps"] > 0 and np.isfinite(provenance["ddpm"]["final_loss_ema_train_split"])


# ------------------------------------------------------------------ purifier
def test_digits_purifier_is_seeded(test_split):
    x = test_split[0][:4]
    purifier = digits.load_digits_purifier(t_star=20, seed=0)
    assert purifier.t_star == 20 and purifier.sampler == "ddpm"
    a, b = purifier.purify(x), purifier.purify(x)
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert not np.array_equal(a, purifier.purify(x, seed=1))
    assert digits.load_digits_purifier().t_star == digits.DEFAULT_T_STAR


def test_purified_predictions_through_art(test_split):
    x, y = test_split
    purifier = digits.load_digits_purifier(t_star=10, seed=0)
    classifier = digits.digits_art_classifier(purifier=purifier)
    p1, p2 = classifier.predict(x[:16]), classifier.predict(x[:16])
    np.testing.assert_array_equal(p1, p2)
    # Light purification keeps most clean predictions right.
    assert (p1.argmax(1) == y[:16]).mean() >= 0.75
