"""
AutoAttack, the field's standard evaluation, against a diffusion-purified ART classifier.

Two versions (Croce & Hein 2020, https://arxiv.org/abs/2003.01690), each run by an existing implementation:

- *standard* (APGD-CE, APGD-T, FAB-T, Square): ART has no FAB attack and its own AutoAttack default list
  differs (APGD-CE, APGD-DLR, DeepFool, Square), so :class:`Fra31AutoAttack` drives fra31's implementation
  (the ``pyautoattack`` package, which RobustBench installs) on a torch module that runs the ART classifier's
  whole preprocessing chain, purifier included, then its model.
- *rand* (APGD-CE and APGD-DLR with EOT over 20 draws, as DiffPure's evaluation ran it): :func:`autoattack_rand`
  builds ART's ``AutoAttack`` with those two ART ``AutoProjectedGradientDescent`` attacks; the EOT is the
  purifier's batched EOT, set by :class:`~art_diffpure.RandomnessAlignedAttack` (``eot_samples=20``).

Both run inside :class:`~art_diffpure.RandomnessAlignedAttack`, so the purifier's randomness is the attack's in
every mode (aligned, transfer, stochastic).
"""
from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from art.attacks.attack import EvasionAttack
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator

from art_diffpure._utils import check_int, index_labels, norm_label

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from art.estimators.classification import PyTorchClassifier



def _fra31_norm(norm: Any) -> str:
    """fra31's name of a norm: its label (:func:`~art_diffpure._utils.norm_label`) capitalised, ``"Linf"``,
    ``"L2"`` or ``"L1"``."""
    try:
        return norm_label(norm).capitalize()
    except ValueError:
        raise ValueError(f"norm must be np.inf, 2 or 1, got {norm!r}") from None


def import_fra31() -> Any:
    """fra31's ``autoattack`` package (installed as ``pyautoattack`` by RobustBench's dependency)."""
    for name in ("autoattack", "pyautoattack"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("fra31's AutoAttack is not installed: pip install 'art-diffpure[autoattack]' (or pyautoattack)")


def _art_module(estimator: "PyTorchClassifier") -> "torch.nn.Module":
    """A torch module computing the ART classifier's logits through its preprocessing chain, differentiably."""
    import torch

    class DefendedModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = estimator.model  # registered, so fra31's checks see the real layers

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            x_pre, _ = estimator._apply_preprocessing(x, y=None, fit=False, no_grad=False)
            return estimator._model(x_pre)[-1]

    return DefendedModule().eval()


class Fra31AutoAttack(EvasionAttack):
    """
    fra31's AutoAttack on an ART ``PyTorchClassifier`` (numpy in and out, ART style).

    | Paper link: https://arxiv.org/abs/2003.01690

    ``version="standard"`` runs APGD-CE, APGD-T, FAB-T and Square; ``"rand"`` fra31's own rand version (APGD-CE
    and APGD-DLR with its sequential ``eot_iter=20``); ``"custom"`` the ``attacks`` given. ``n_iter``,
    ``n_restarts``, ``n_queries`` and ``n_target_classes`` override fra31's sizes (for quick runs).
    ``state_path`` makes ``generate`` resumable: after each sub-attack the adversarial examples and robust flags
    so far are written there atomically (``.npz``, with a fingerprint of the inputs and settings), and a rerun with
    the same path skips the sub-attacks already finished. (fra31's own ``run_standard_evaluation(state_path=...)``
    cannot resume in pyautoattack 0.2.0: its state file stores the set of attacks as a string, so a restored run
    stops with "different set of attacks", and a restored run that finds an adversarial example fails on an
    unbound ``y_adv``. The driver therefore runs fra31's sub-attacks one at a time and keeps the state itself.)
    """

    attack_params = EvasionAttack.attack_params + [
        "version", "attacks", "norm", "eps", "seed", "batch_size", "state_path", "n_iter", "n_restarts",
        "n_queries", "n_target_classes", "verbose",
    ]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)

    def __init__(self, estimator: "PyTorchClassifier", version: str = "standard", attacks: list[str] | None = None,
                 norm: int | float | str = np.inf, eps: float = 8 / 255, seed: int = 0, batch_size: int = 32,
                 state_path: str | Path | None = None, n_iter: int | None = None, n_restarts: int | None = None,
                 n_queries: int | None = None, n_target_classes: int | None = None, verbose: bool = False) -> None:
        super().__init__(estimator=estimator)
        self.version = version
        self.attacks = attacks
        self.norm = norm
        self.eps = eps
        self.seed = seed
        self.batch_size = batch_size
        self.state_path = state_path
        self.n_iter = n_iter
        self.n_restarts = n_restarts
        self.n_queries = n_queries
        self.n_target_classes = n_target_classes
        self.verbose = verbose
        self._check_params()

    def perturbation_bound(self) -> float | None:
        """FAB's iterates are not confined to the eps-ball: no bound for the versions that run it."""
        runs = self.attacks if self.version == "custom" else (["fab-t"] if self.version == "standard" else [])
        return None if any(a.startswith("fab") for a in runs or []) else float(self.eps)

    def _build(self) -> Any:
        fra31 = import_fra31()
        aa = fra31.AutoAttack(_art_module(self.estimator), norm=_fra31_norm(self.norm), eps=float(self.eps),
                              version=self.version, attacks=self.attacks if self.version == "custom" else None,
                              seed=int(self.seed), device=self.estimator.device)
        aa.verbose = self.verbose
        for sub in (aa.apgd, aa.apgd_targeted, aa.fab):
            if self.n_iter is not None:
                sub.n_iter = int(self.n_iter)
                if hasattr(sub, "n_iter_2"):  # APGD's checkpoint schedule depends on n_iter
                    sub.n_iter_2, sub.n_iter_min = max(int(0.22 * self.n_iter), 1), max(int(0.06 * self.n_iter), 1)
                    sub.size_decr = max(int(0.03 * self.n_iter), 1)
            if self.n_restarts is not None:
                sub.n_restarts = int(self.n_restarts)
        if self.n_target_classes is not None:
            aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = int(self.n_target_classes)
        if self.n_queries is not None:
            aa.square.n_queries = int(self.n_queries)
        return aa

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        """Adversarial examples of ``x`` (labels ``y``, default the classifier's predictions), same dtype."""
        import torch

        x = np.asarray(x)
        if y is None:
            y = self.estimator.predict(x, batch_size=self.batch_size)
        labels = index_labels(y, self.estimator.nb_classes)
        x_t = torch.from_numpy(x.astype(np.float32)).to(self.estimator.device)
        y_t = torch.from_numpy(labels).to(self.estimator.device)
        aa = self._build()
        if self.state_path is None:
            x_adv, _ = aa.run_standard_evaluation(x_t, y_t, batch_size=self.batch_size)
            return x_adv.detach().cpu().numpy().astype(x.dtype)
        return self._resumable(aa, x, labels).astype(x.dtype)

    def _resumable(self, aa: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """fra31's sub-attacks one at a time on the still-robust samples, with the state saved after each."""
        import torch

        names = list(aa.attacks_to_run)
        fingerprint = hashlib.sha256(x.tobytes() + y.tobytes() + repr(
            (names, self.norm, float(self.eps), self.seed, self.n_iter, self.n_restarts, self.n_queries,
             self.n_target_classes)).encode()).hexdigest()
        path = Path(self.state_path)
        x_adv, robust, done = x.astype(np.float32).copy(), None, []
        if path.exists():
            with np.load(path) as state:
                if str(state["fingerprint"]) != fingerprint:
                    raise ValueError(f"The AutoAttack state {path} belongs to other inputs or settings; delete it "
                                     "or pass another state_path")
                x_adv, done = state["x_adv"], state["done"].tolist()
                robust = state["robust"] if state["robust"].size else None
        for name in names:
            if name in done:
                continue
            todo = np.arange(len(x)) if robust is None else np.flatnonzero(robust)
            if len(todo):
                aa.attacks_to_run = [name]
                adv, pred = aa.run_standard_evaluation(
                    torch.from_numpy(x[todo].astype(np.float32)).to(self.estimator.device),
                    torch.from_numpy(y[todo]).to(self.estimator.device), batch_size=self.batch_size)
                adv, pred = adv.detach().cpu().numpy(), pred.detach().cpu().numpy()
                robust = np.ones(len(x), dtype=bool) if robust is None else robust
                fooled = pred != y[todo]
                x_adv[todo[fooled]] = adv[fooled]
                robust[todo[fooled]] = False
            done.append(name)
            tmp = path.with_name(path.name + ".tmp.npz")
            with open(tmp, "wb") as f:
                np.savez(f, fingerprint=fingerprint, x_adv=x_adv, done=np.array(done),
                         robust=np.zeros(0, dtype=bool) if robust is None else robust)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        return x_adv

    def _check_params(self) -> None:
        if self.version not in ("standard", "rand", "custom", "plus"):
            raise ValueError(f"Unknown AutoAttack version {self.version!r}")
        if (self.version == "custom") != bool(self.attacks):
            raise ValueError("attacks= is given exactly when version='custom'")
        _fra31_norm(self.norm)
        if not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps!r}")
        check_int(self.batch_size, "batch_size", 1)


def autoattack_rand(classifier: "PyTorchClassifier", eps: float, norm: int | float | str = np.inf,
                    max_iter: int = 100, batch_size: int = 32) -> EvasionAttack:
    """
    AutoAttack's *rand* version with ART's own pieces: ``AutoAttack(attacks=[APGD-CE, APGD-DLR])``, 100 iterations,
    one restart each (fra31's rand settings). Its EOT over 20 draws comes from the purifier's batched EOT: run it
    as ``RandomnessAlignedAttack(classifier, attack=..., eot_samples=20)`` (``PROTOCOLS["autoattack_rand"]``).
    ``eps_step = eps`` makes APGD's first step ``2 eps``, as fra31's.
    """
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent

    def apgd(loss_type: str) -> AutoProjectedGradientDescent:
        return AutoProjectedGradientDescent(classifier, norm=norm, eps=eps, eps_step=eps, max_iter=max_iter,
                                            targeted=False, nb_random_init=1, batch_size=batch_size,
                                            loss_type=loss_type, verbose=False)

    return AutoAttack(classifier, norm=norm, eps=eps, eps_step=eps, batch_size=batch_size,
                      attacks=[apgd("cross_entropy"), apgd("difference_logits_ratio")])


def autoattack_standard(classifier: "PyTorchClassifier", eps: float, norm: int | float | str = np.inf,
                        seed: int = 0, batch_size: int = 32, **sizes: Any) -> Fra31AutoAttack:
    """AutoAttack's *standard* version (APGD-CE, APGD-T, FAB-T, Square) by fra31's implementation."""
    return Fra31AutoAttack(classifier, version="standard", norm=norm, eps=eps, seed=seed, batch_size=batch_size,
                           **sizes)


__all__ = ["Fra31AutoAttack", "autoattack_rand", "autoattack_standard", "import_fra31"]
