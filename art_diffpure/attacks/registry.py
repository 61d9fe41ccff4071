"""
The package's one registry of attacks by name: what ``art-diffpure evaluate --attack NAME`` runs.

Each :class:`NamedAttack` says which of the :data:`OPTIONS` it takes (eps, norm, iterations, step, restarts, EOT),
its defaults, and how to build the ART ``EvasionAttack`` on a classifier. The builders take the resolved options:
``eps``, ``norm`` (ART's ``np.inf | 1 | 2``), ``eps_step``, ``max_iter``, ``restarts``, ``eot``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from art.attacks.attack import EvasionAttack
    from art.estimators.classification import PyTorchClassifier

__all__ = ["ATTACKS", "OPTIONS", "NamedAttack"]

#: The options an attack may take ("step" is the PGD step, relative to eps or absolute).
OPTIONS = ("eps", "norm", "max_iter", "step", "restarts", "eot")


@dataclass(frozen=True)
class NamedAttack:
    """
    An attack offered by name: the options it takes (of :data:`OPTIONS`), its defaults, the norms it runs in (ART's
    ``np.inf``, ``2``, ``1``) and ``build(classifier, options, seed, batch_size)``.
    """

    name: str
    runs: str  # what runs, for --help and the report
    options: tuple[str, ...]
    build: Callable[["PyTorchClassifier", dict[str, Any], int, int], "EvasionAttack"]
    defaults: dict[str, Any] = field(default_factory=dict)
    norms: tuple[float, ...] = (np.inf, 2, 1)
    bounded: bool = True  # confined to the eps-ball (robust accuracy at eps); else a minimum-norm attack
    own_draws: bool = False  # draws the purifier's randomness itself (--eot goes to the attack, not the wrapper)


def _art(name: str) -> Any:
    import art.attacks.evasion as evasion

    return getattr(evasion, name)


def _apgd(loss: str) -> Callable:
    return lambda c, o, seed, bs: _art("AutoProjectedGradientDescent")(
        c, norm=o["norm"], eps=o["eps"], eps_step=o["eps_step"], max_iter=o["max_iter"], targeted=False,
        nb_random_init=o["restarts"], batch_size=bs, loss_type=loss, verbose=False)


def _autoattack_rand(c, o, seed, bs):
    from art_diffpure.attacks.autoattack import autoattack_rand

    return autoattack_rand(c, eps=o["eps"], norm=o["norm"], max_iter=o["max_iter"], batch_size=bs)


def _autoattack_standard(c, o, seed, bs):
    from art_diffpure.attacks.autoattack import autoattack_standard

    return autoattack_standard(c, eps=o["eps"], norm=o["norm"], seed=seed, batch_size=bs, n_iter=o["max_iter"],
                               n_queries=50 * o["max_iter"], n_restarts=o["restarts"])


#: Reverse steps of the surrogate-pgd-eot attack's stochastic DDIM surrogate (at most the defence's t*).
SURROGATE_STEPS = 10


def _purification_attack(name: str) -> Callable:
    def build(c, o, seed, bs):
        from art_diffpure.attacks import DiffAttack, DiffHammer, SurrogatePGDEOT

        if name == "diffhammer":
            return DiffHammer(c, eps=o["eps"], max_iter=o["max_iter"], n_draws=o["eot"], seed=seed, batch_size=bs)
        if name == "diffattack":
            return DiffAttack(c, eps=o["eps"], max_iter=o["max_iter"], eot_samples=o["eot"], seed=seed, batch_size=bs)
        from art_diffpure.purifier import find_purifier

        steps = min(SURROGATE_STEPS, find_purifier(c, required=True).t_star)  # never finer than the defence
        return SurrogatePGDEOT(c, eps=o["eps"], max_iter=o["max_iter"], eot_samples=o["eot"], surrogate_steps=steps,
                               seed=seed, batch_size=bs)
    return build


#: Every attack offered by name (``art-diffpure evaluate --attack NAME``), configurable with the :data:`OPTIONS`.
ATTACKS: dict[str, NamedAttack] = {a.name: a for a in [
    NamedAttack("pgd", "ART ProjectedGradientDescent (random start, projected steps)",
              ("eps", "norm", "max_iter", "step", "restarts", "eot"),
              lambda c, o, seed, bs: _art("ProjectedGradientDescent")(
                  c, norm=o["norm"], eps=o["eps"], eps_step=o["eps_step"], max_iter=o["max_iter"],
                  num_random_init=o["restarts"], batch_size=bs, verbose=False),
              dict(max_iter=40, restarts=1)),
    NamedAttack("fgsm", "ART FastGradientMethod (one step of size eps)", ("eps", "norm", "restarts", "eot"),
              lambda c, o, seed, bs: _art("FastGradientMethod")(
                  c, norm=o["norm"], eps=o["eps"], eps_step=o["eps"], num_random_init=o["restarts"], batch_size=bs),
              dict(restarts=0)),
    NamedAttack("apgd-ce", "ART AutoProjectedGradientDescent, cross-entropy loss",
              ("eps", "norm", "max_iter", "step", "restarts", "eot"), _apgd("cross_entropy"),
              dict(max_iter=100, rel_step=1.0, restarts=1)),
    NamedAttack("apgd-dlr", "ART AutoProjectedGradientDescent, difference-of-logits-ratio loss",
              ("eps", "norm", "max_iter", "step", "restarts", "eot"), _apgd("difference_logits_ratio"),
              dict(max_iter=100, rel_step=1.0, restarts=1)),
    NamedAttack("autoattack-rand", "ART AutoAttack with APGD-CE and APGD-DLR, EOT through the purifier (DiffPure's)",
              ("eps", "norm", "max_iter", "eot"), _autoattack_rand, dict(max_iter=100, eot=20)),
    NamedAttack("autoattack-standard", "fra31 AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square (50 x max-iter "
              "queries)", ("eps", "norm", "max_iter", "restarts"), _autoattack_standard,
              dict(max_iter=100, restarts=1)),
    NamedAttack("square", "ART SquareAttack (score-based; max-iter = queries)", ("eps", "norm", "max_iter", "restarts"),
              lambda c, o, seed, bs: _art("SquareAttack")(
                  c, norm=o["norm"], eps=o["eps"], max_iter=o["max_iter"], nb_restarts=o["restarts"], batch_size=bs,
                  verbose=False),
              dict(max_iter=1000, restarts=1), norms=(np.inf, 2)),
    NamedAttack("cw-l2", "ART CarliniL2Method (minimum-norm, no eps)", ("max_iter",),
              lambda c, o, seed, bs: _art("CarliniL2Method")(c, max_iter=o["max_iter"], batch_size=bs, verbose=False),
              dict(max_iter=10), bounded=False),
    NamedAttack("deepfool", "ART DeepFool (minimum-norm, no eps)", ("max_iter",),
              lambda c, o, seed, bs: _art("DeepFool")(c, max_iter=o["max_iter"], batch_size=bs, verbose=False),
              dict(max_iter=100), bounded=False),
    NamedAttack("diffhammer", "DiffHammer (selective EM over N = --eot draws, gradient grafting, APGD; CW, CE, DLR "
              "restarts)", ("eps", "norm", "max_iter", "eot"), _purification_attack("diffhammer"),
              dict(max_iter=100, eot=10), norms=(np.inf,), own_draws=True),
    NamedAttack("diffattack", "DiffAttack (APGD with EOT, CE then DLR, plus the deviated-reconstruction loss)",
              ("eps", "norm", "max_iter", "eot"), _purification_attack("diffattack"), dict(max_iter=100, eot=20),
              norms=(np.inf,), own_draws=True),
    NamedAttack("surrogate-pgd-eot", "PGD-EOT through a 10-step (at most t*) stochastic DDIM (eta = 1) surrogate of the "
              "purifier",
              ("eps", "norm", "max_iter", "eot"), _purification_attack("surrogate"), dict(max_iter=200, eot=20),
              norms=(np.inf,), own_draws=True),
]}
