"""
The paper's attack protocols (Table S1 of Liu & Wei 2025) and the one rule for the relative PGD step.

An :class:`AttackProtocol` is a ready configuration of :class:`~art_diffpure.RandomnessAlignedAttack`
(``RandomnessAlignedAttack.from_protocol(classifier, "paper_cifar10")``); :data:`PROTOCOLS` names those of
Tables 2, 3 and 4 and the two AutoAttack versions. :func:`rel_step` is the PGD step, relative to ``eps``,
that every part of the package uses by default.

| Paper link: https://arxiv.org/abs/2505.22839
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from art_diffpure._utils import check_int
from art_diffpure.attacks.autoattack import autoattack_rand, autoattack_standard

if TYPE_CHECKING:  # pragma: no cover
    from art.attacks.attack import EvasionAttack
    from art.estimators.classification import PyTorchClassifier

#: The inner attacks a protocol can name.
PROTOCOL_ATTACKS = ("pgd", "autoattack_rand", "autoattack_standard")


def rel_step(max_iter: int = 40) -> float:
    """
    The PGD step as a fraction of ``eps`` for an attack of ``max_iter`` iterations: ``(4 / 3) / max_iter``.

    The paper's attacks ran foolbox's ``LinfPGD`` with its defaults: 40 steps of ``rel_stepsize = 0.01 / 0.3``
    (= 1/30) of epsilon, after one random start (Table S1: "PGD steps 40", "Relative PGD step size 0.01 / 0.3").
    The 40 steps travel ``40 / 30 = 4/3 eps`` in all, enough to cross the ball from the random start. Other
    iteration counts keep that total travel, so a short attack still covers the ball and a long one takes finer
    steps: ``rel_step(40) = 1/30`` exactly, ``rel_step(10) = 2/15``, ``rel_step(100) = 1/75``.

    :param max_iter: PGD iterations (a positive int).
    :raises ValueError: for anything else.
    """
    return (0.01 / 0.3) * 40 / check_int(max_iter, "max_iter", 1)


def norm_name(norm: Any) -> str | float:
    """A norm as JSON can hold it: ``"inf"`` for ``np.inf``, a float otherwise (strings are kept)."""
    if isinstance(norm, str):
        return norm
    return "inf" if np.isinf(norm) else float(norm)


@dataclass(frozen=True)
class AttackProtocol:
    """
    A ready attack configuration (Table S1 of the paper).

    ``eps_step = rel_step * eps``. Table S1 lists "Relative PGD step size 0.01 / 0.3" (without the
    {CIFAR-10, ImageNet} braces of its other rows) next to "PGD steps 40"; the attacks were run with
    foolbox, whose ``LinfPGD`` defaults are exactly ``steps=40`` and ``rel_stepsize=0.01 / 0.3`` (= 1/30,
    relative to epsilon) with a random start. We therefore read it as one relative step of 1/30 for
    both data sets (:func:`rel_step` ``(40)``): eps_step = 8/255/30 on CIFAR-10 and 4/255/30 on ImageNet, one
    random start. Overriding ``max_iter`` keeps ``rel_step``; pass ``rel_step=rel_step(max_iter)`` to keep
    the total travel instead.

    ``attack`` names the inner attack: ``"pgd"`` (ART's ``ProjectedGradientDescent``), ``"autoattack_rand"``
    (ART's ``AutoAttack`` with APGD-CE and APGD-DLR, ``max_iter`` iterations each, EOT from the purifier) or
    ``"autoattack_standard"`` (fra31's implementation: APGD-CE, APGD-T, FAB-T with ``max_iter`` iterations,
    Square with ``50 * max_iter`` queries, i.e. fra31's 100 and 5000).
    """

    name: str
    eps: float
    attack: str = "pgd"
    max_iter: int = 40
    rel_step: float = rel_step()  # the module's rule at the paper's 40 steps: 1/30
    norm: float | int | str = np.inf
    eot_samples: int = 1
    randomness: str = "aligned"
    seeds: tuple[int, ...] = (0, 1, 2)
    batch_size: int = 1
    num_random_init: int = 1
    gradient: str = "full"
    t_star: int = 100
    description: str = ""

    @property
    def eps_step(self) -> float:
        """Absolute step size ``rel_step * eps``."""
        return self.rel_step * self.eps

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        out = asdict(self)
        out["norm"] = norm_name(self.norm)
        out["seeds"] = list(self.seeds)
        out["eps_step"] = self.eps_step
        return out


PROTOCOLS: dict[str, AttackProtocol] = {
    "paper_cifar10": AttackProtocol(
        "paper_cifar10", eps=8 / 255, gradient="full", t_star=100,
        description="Table 2, PGD with fixed (aligned) randomness: full-gradient PGD-40, Linf 8/255, t*=100."),
    "paper_cifar10_stochastic": AttackProtocol(
        "paper_cifar10_stochastic", eps=8 / 255, randomness="stochastic", gradient="full", t_star=100,
        description="Table 2, PGD without fixed randomness (the usual DiffPure evaluation)."),
    "paper_cifar10_eot": AttackProtocol(
        "paper_cifar10_eot", eps=8 / 255, eot_samples=15, randomness="stochastic", seeds=(0,), gradient="full",
        t_star=100, description="Table 2, PGD-EOT (15 samples, stochastic test; run once in the paper)."),
    "paper_cifar10_transfer": AttackProtocol(
        "paper_cifar10_transfer", eps=8 / 255, randomness="transfer", gradient="full", t_star=100,
        description="Table 4, attack under one fixed configuration, test under another."),
    "paper_imagenet": AttackProtocol(
        "paper_imagenet", eps=4 / 255, gradient="bpda", t_star=150,
        description="Table 3, BPDA with fixed (aligned) randomness: PGD-40, Linf 4/255, t*=150."),
    "paper_imagenet_stochastic": AttackProtocol(
        "paper_imagenet_stochastic", eps=4 / 255, randomness="stochastic", gradient="bpda", t_star=150,
        description="Table 3, BPDA without fixed randomness."),
    "paper_imagenet_eot": AttackProtocol(
        "paper_imagenet_eot", eps=4 / 255, eot_samples=15, randomness="stochastic", seeds=(0,), gradient="bpda",
        t_star=150, description="Table 3, BPDA-EOT (15 samples)."),
    "paper_imagenet_transfer": AttackProtocol(
        "paper_imagenet_transfer", eps=4 / 255, randomness="transfer", gradient="bpda", t_star=150,
        description="Table 4, ImageNet transfer across fixed configurations."),
    "autoattack_standard": AttackProtocol(
        "autoattack_standard", eps=8 / 255, attack="autoattack_standard", max_iter=100, seeds=(0,), t_star=100,
        description="AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square) by fra31's implementation (pyautoattack); "
                    "meant for deterministic defences: aligned, it attacks one fixed xi per sample."),
    "autoattack_rand": AttackProtocol(
        "autoattack_rand", eps=8 / 255, attack="autoattack_rand", max_iter=100, eot_samples=20,
        randomness="stochastic", seeds=(0,), t_star=100,
        description="AutoAttack rand (APGD-CE, APGD-DLR, EOT over 20 draws) by ART's AutoAttack and APGD with the "
                    "purifier's batched EOT, as DiffPure's own evaluation ran it."),
}


def get_protocol(protocol: str | AttackProtocol, **fields: Any) -> AttackProtocol:
    """
    The protocol named ``protocol`` in :data:`PROTOCOLS` (or ``protocol`` itself), with ``fields`` (protocol
    fields such as ``eps``, ``max_iter``, ``rel_step``) replaced.

    :raises ValueError: for an unknown name or an unknown inner attack.
    """
    if isinstance(protocol, str):
        if protocol not in PROTOCOLS:
            raise ValueError(f"Unknown protocol {protocol!r}; expected one of {sorted(PROTOCOLS)}")
        protocol = PROTOCOLS[protocol]
    if fields:
        protocol = replace(protocol, **fields)
    if protocol.attack not in PROTOCOL_ATTACKS:
        raise ValueError(f"Unknown protocol attack {protocol.attack!r}; expected one of {PROTOCOL_ATTACKS}")
    return protocol


def protocol_attack(protocol: AttackProtocol,
                    batch_size: int) -> Callable[["PyTorchClassifier"], "EvasionAttack"] | None:
    """
    The factory ``classifier -> inner attack`` of a protocol's AutoAttack version, or ``None`` for ``"pgd"``
    (:class:`~art_diffpure.RandomnessAlignedAttack` then builds its own PGD from the protocol's sizes).
    """
    if protocol.attack == "pgd":
        return None
    if protocol.attack == "autoattack_rand":
        return lambda clf: autoattack_rand(clf, eps=protocol.eps, norm=protocol.norm, max_iter=protocol.max_iter,
                                           batch_size=batch_size)
    return lambda clf: autoattack_standard(clf, eps=protocol.eps, norm=protocol.norm, seed=protocol.seeds[0],
                                           batch_size=batch_size, n_iter=protocol.max_iter,
                                           n_queries=50 * protocol.max_iter)


def protocol_kwargs(protocol: AttackProtocol) -> dict[str, Any]:
    """The :class:`~art_diffpure.RandomnessAlignedAttack` constructor arguments of a protocol (base seed: its first)."""
    return dict(randomness=protocol.randomness, eot_samples=protocol.eot_samples, seed=protocol.seeds[0],
                eps=protocol.eps, eps_step=protocol.eps_step, max_iter=protocol.max_iter, norm=protocol.norm,
                num_random_init=protocol.num_random_init, gradient=protocol.gradient, batch_size=protocol.batch_size)


__all__ = ["AttackProtocol", "PROTOCOLS", "PROTOCOL_ATTACKS", "get_protocol", "norm_name", "protocol_attack",
           "protocol_kwargs", "rel_step"]
