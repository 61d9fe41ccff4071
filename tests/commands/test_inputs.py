"""art_diffpure.commands.inputs: specs to models and data, and the early, named errors for bad input."""
from __future__ import annotations

import os
import pickle
import re

import numpy as np
import pytest
import torch

from art_diffpure.commands import inputs
from art_diffpure.models.data import load_digits_split
from art_diffpure.commands.inputs import InputError


@pytest.fixture(scope="module")
def digits8():
    x, y = load_digits_split("test")
    return x[:8], y[:8]


# ---------------------------------------------------------------------------------------------- data
def test_digits_with_offset_keeps_global_sample_ids():
    data = inputs.load_data("digits", n_images=3, offset=5)
    x, y = load_digits_split("test")
    assert data.sample_ids.tolist() == [5, 6, 7]
    np.testing.assert_array_equal(data.x, x[5:8])
    np.testing.assert_array_equal(data.y, y[5:8])
    assert data.total == len(x)
    assert data.sha256() != inputs.load_data("digits", n_images=3, offset=6).sha256()


def test_npz_with_one_hot_labels_gives_indices(tmp_path, digits8):
    x, y = digits8
    np.savez(tmp_path / "d.npz", x=x.astype(np.float64), y=np.eye(10)[y])
    data = inputs.load_data(str(tmp_path / "d.npz"))
    assert data.x.dtype == np.float32 and data.x.shape == (8, 1, 8, 8)
    np.testing.assert_array_equal(data.y, y)


def test_cifar_python_batch_directory(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(5, 3072), dtype=np.uint8)
    with open(tmp_path / "test_batch", "wb") as handle:
        pickle.dump({b"data": raw, b"labels": [3, 1, 4, 1, 5]}, handle)
    data = inputs.load_data(str(tmp_path), n_images=4, offset=1)
    assert data.x.shape == (4, 3, 32, 32)
    np.testing.assert_allclose(data.x[0], raw[1].reshape(3, 32, 32) / 255.0, rtol=0, atol=1e-7)
    assert data.y.tolist() == [1, 4, 1, 5]


class _Hostile:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_cifar_batch_crafted_to_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "batches").mkdir()
    with open(tmp_path / "batches" / "test_batch", "wb") as handle:
        pickle.dump({b"data": _Hostile(), b"labels": [1]}, handle)
    with pytest.raises(Exception, match="not a type a CIFAR-10 batch holds"):
        inputs.load_data(str(tmp_path / "batches"))
    assert not (tmp_path / "PWNED").exists()


def test_image_folder_with_labels_file(tmp_path, digits8):
    from PIL import Image

    x, y = digits8
    lines = ["filename,label"]
    for i in range(4):
        Image.fromarray(np.round(x[i, 0] * 255).astype(np.uint8), mode="L").save(tmp_path / f"im{i}.png")
        lines.append(f"im{i}.png,{y[i]}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    data = inputs.load_data(str(tmp_path))
    assert data.x.shape == (4, 1, 8, 8)
    np.testing.assert_allclose(data.x, np.round(x[:4] * 255) / 255, atol=1e-6)
    assert data.y.tolist() == y[:4].tolist()


def _npz(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file or directory"),
    ("uint8", "integer dtype uint8 (values 0..255)"),
    ("range255", "looks like 0..255 data: divide by 255"),
    ("normalised", "looks normalised"),
    ("nan", "hold NaN or inf (image(s) [2])"),
    ("rank3", "add the channel axis"),
    ("no_y", "needs arrays named x (images) and y (labels); it holds x"),
    ("negative", "class indices start at 0"),
    ("float_labels", "non-integer values"),
    ("lengths", "8 images but 7 labels"),
    ("not_zip", "not an .npz archive"),
])
def test_bad_data_is_named(tmp_path, digits8, case, message):
    x, y = digits8
    bad_x = x.copy()
    bad_x[2, 0, 3, 3] = np.inf
    spec = {
        "missing": lambda: str(tmp_path / "nope.npz"),
        "uint8": lambda: _npz(tmp_path, "a.npz", x=(x * 255).astype(np.uint8), y=y),
        "range255": lambda: _npz(tmp_path, "a.npz", x=x * 255, y=y),
        "normalised": lambda: _npz(tmp_path, "a.npz", x=(x - 0.5) / 0.25, y=y),
        "nan": lambda: _npz(tmp_path, "a.npz", x=bad_x, y=y),
        "rank3": lambda: _npz(tmp_path, "a.npz", x=x[:, 0], y=y),
        "no_y": lambda: _npz(tmp_path, "a.npz", x=x),
        "negative": lambda: _npz(tmp_path, "a.npz", x=x, y=np.where(np.arange(8) == 1, -1, y)),
        "float_labels": lambda: _npz(tmp_path, "a.npz", x=x, y=y + 0.5),
        "lengths": lambda: _npz(tmp_path, "a.npz", x=x, y=y[:7]),
        "not_zip": lambda: (tmp_path / "z.npz").write_bytes(b"plain text") and str(tmp_path / "z.npz"),
    }[case]()
    with pytest.raises(InputError, match=re.escape(message)):
        inputs.load_data(spec)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_images=0), "--n-images 0: must be at least 1"),
    (dict(offset=-1), "--offset -1: must be >= 0"),
    (dict(offset=450), "--offset 450 is past the end of the data (450 images)"),
    (dict(offset=448, n_images=4), "use --n-images 2 or less"),
])
def test_bad_ranges_are_named(kwargs, message):
    with pytest.raises(InputError) as err:
        inputs.load_data("digits", **kwargs)
    assert message in str(err.value)


# ---------------------------------------------------------------------------------------------- models
def test_local_unet_directory_loads_the_same_model(tmp_path):
    from art_diffpure.models.digits import digits_scheduler, load_digits_unet

    load_digits_unet().save_pretrained(tmp_path / "unet")
    digits_scheduler().save_pretrained(tmp_path / "scheduler")
    purifier = inputs.load_diffusion(str(tmp_path), t_star=3, sampler="ddim")
    reference = inputs.load_diffusion("digits", t_star=3, sampler="ddim")
    x = load_digits_split("test")[0][:2]
    np.testing.assert_array_equal(purifier.purify(x, seed=0), reference.purify(x, seed=0))
    assert (purifier.t_star, purifier.sampler, purifier.seed) == (3, "ddim", None)


@pytest.mark.parametrize("make, message", [
    (lambda p: str(p / "nope") + "/", "no such directory"),
    (lambda p: (p / "empty").mkdir() or str(p / "empty"), "not a diffusers model directory"),
    (lambda p: (p / "f.txt").write_text("x") and str(p / "f.txt"), "is a file"),
])
def test_bad_diffusion_specs_are_named(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        inputs.load_diffusion(make(tmp_path))


def test_t_star_out_of_range_names_the_range():
    with pytest.raises(InputError, match=r"--t-star 1001 is out of range .*\[1, 1000\]"):
        inputs.load_diffusion("digits", t_star=1001)


def test_factory_from_a_py_file_and_from_an_importable_module(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "from art_diffpure.models.digits import load_digits_classifier\n"
        "def build():\n    return load_digits_classifier()\n")
    from_path = inputs.load_classifier(f"{tmp_path / 'my_models.py'}:build")
    monkeypatch.syspath_prepend(str(tmp_path))
    from_module = inputs.load_classifier("my_models:build")
    x = torch.from_numpy(load_digits_split("test")[0][:3])
    with torch.no_grad():
        torch.testing.assert_close(from_path(x), from_module(x), rtol=0, atol=0)
    assert not from_path.training


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch deprecates jit.script/save; users still have such files
def test_torchscript_file_round_trip(tmp_path):
    from art_diffpure.models.digits import load_digits_classifier

    model = load_digits_classifier()
    torch.jit.save(torch.jit.script(model), str(tmp_path / "cnn.pt"))
    loaded = inputs.load_classifier(str(tmp_path / "cnn.pt"))
    x = torch.from_numpy(load_digits_split("test")[0][:3])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize("make, message", [
    (lambda p: str(p / "missing.pt"), "no such file"),
    (lambda p: torch.save({"w": torch.zeros(1)}, p / "sd.pt") or str(p / "sd.pt"), "a state dict?"),
    (lambda p: f"{p / 'f.py'}:nothere", "has no function 'nothere' (callables in it: boom, three)"),
    (lambda p: f"{p / 'f.py'}:boom", "boom() failed: RuntimeError: no weights"),
    (lambda p: f"{p / 'f.py'}:three", "returned 'int', not a torch.nn.Module"),
    (lambda p: "no_such_module_xyz:build", "cannot import module 'no_such_module_xyz'"),
    (lambda p: "Standard", "needs --model-dir"),
])
def test_bad_classifier_specs_are_named(tmp_path, make, message):
    (tmp_path / "f.py").write_text("def boom():\n    raise RuntimeError('no weights')\ndef three():\n    return 3\n")
    with pytest.raises(InputError) as err:
        inputs.load_classifier(make(tmp_path))
    assert message in str(err.value)


def test_robustbench_name_without_its_checkpoint_says_where(tmp_path):
    with pytest.raises(InputError, match=r"checkpoint not found at .*cifar10/Linf/Standard\.pt"):
        inputs.load_classifier("Standard", model_dir=str(tmp_path))


def test_compatibility_checks_shape_and_classes(digits8):
    from art_diffpure.models.digits import load_digits_classifier

    x, y = digits8
    purifier = inputs.load_diffusion("digits", t_star=2)
    model = load_digits_classifier()
    data = inputs.Data(x, y, np.arange(8), "test", 8)
    assert inputs.check_compatible(data, purifier, model, "cpu") == 10
    with pytest.raises(InputError, match=r"labels go up to 10 .*has 10 classes"):
        inputs.check_compatible(inputs.Data(x, y * 0 + 10, np.arange(8), "t", 8), purifier, model, "cpu")
    with pytest.raises(InputError, match="channels-last"):
        inputs.check_compatible(inputs.Data(x.transpose(0, 2, 3, 1).copy(), y, np.arange(8), "t", 8), purifier,
                                 model, "cpu")
    with pytest.raises(InputError, match=r"fails on one image"):
        inputs.check_compatible(inputs.Data(np.zeros((2, 1, 8, 8), np.float32), y[:2], np.arange(2), "t", 2),
                                 purifier, torch.nn.Linear(3, 2), "cpu")
