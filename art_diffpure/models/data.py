"""The digits data set (scikit-learn's bundled 8x8 digits) with one fixed train/test split."""
from __future__ import annotations

import numpy as np

from art_diffpure.randomness import DIGITS_SPLIT_SEED as SPLIT_SEED

SPLITS = ("train", "test")
TEST_SIZE = 0.25
SPLIT_DEFINITION = (
    "sklearn.datasets.load_digits (1797 images, 8x8, values 0..16) divided by 16 to [0, 1], NCHW float32; "
    f"sklearn.model_selection.train_test_split(indices, test_size={TEST_SIZE}, stratify=y, "
    f"random_state={SPLIT_SEED}) -> 1347 train / 450 test"
)


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Indices (into ``load_digits()``) of the fixed train and test splits, each sorted."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    y = load_digits().target
    train, test = train_test_split(np.arange(len(y)), test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED)
    return np.sort(train), np.sort(test)


def load_digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """
    Load one split of scikit-learn's digits.

    The split is fixed: ``train_test_split`` of the 1797 indices with ``test_size=0.25``,
    stratified by label, ``random_state=0`` (1347 train, 450 test images); see ``SPLIT_DEFINITION``.

    :param split: ``"train"`` or ``"test"``.
    :return: ``(x, y)``: ``x`` float32 of shape ``(n, 1, 8, 8)`` in [0, 1], ``y`` int64 of shape ``(n,)``.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}")
    from sklearn.datasets import load_digits

    digits = load_digits()
    train, test = digits_split_indices()
    idx = train if split == "train" else test
    x = (digits.images[idx].astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = digits.target[idx].astype(np.int64)
    return x, y


#: What a CIFAR-10 python batch holds: builtin containers and numpy arrays (their reconstruction functions).
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
    ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode"),
    ("builtins", "bytearray"),
}


def load_cifar10_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """
    A CIFAR-10 python batch (e.g. ``cifar-10-batches-py/test_batch``): images ``(n, 3, 32, 32)`` float32 in [0, 1]
    and labels. The batches are pickles by their format; they are read with an unpickler that admits only the
    builtin and numpy types those files hold, so a file crafted to run code is refused (``ValueError``).
    """
    import pickle

    class Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if (module, name) in _CIFAR_GLOBALS:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"{module}.{name} is not a type a CIFAR-10 batch holds")

    with open(path, "rb") as handle:
        try:
            batch = Restricted(handle, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as err:
            raise ValueError(f"{path}: not a CIFAR-10 python batch this loader reads safely ({err})") from err
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path}: not a CIFAR-10 python batch (a dict with b'data' and b'labels')")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: data of shape {data.shape}, not (n, 3072) as in CIFAR-10 python batches")
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    return data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0, labels  # the format's own 0..255 scale


__all__ = ["SPLITS", "SPLIT_DEFINITION", "SPLIT_SEED", "TEST_SIZE", "digits_split_indices", "load_cifar10_batch",
           "load_digits_split"]
