"""
Randomness-aligned evaluation of diffusion purification (DiffPure) with ART evasion attacks.

The usual evaluation of a stochastic purifier attacks it under one draw of its internal randomness
xi_attack and tests it under another, xi_test: even with EOT the attack is then a transfer attack
(eq. 8-9 of the paper). :class:`RandomnessAlignedAttack` runs any ART evasion attack against a
classifier whose preprocessing chain contains a :class:`~art_diffpure.DiffusionPurifier` and
controls xi per sample (base seed ``s``, sample id ``i``):

- ``"aligned"``: every gradient and the final test of sample ``i`` use the same xi (xi_attack = xi_test);
- ``"transfer"``: attack under base seed ``s``, test under the independent base seed
  :func:`transfer_test_seed` ``(s) = s + 1000000007`` (Table 4);
- ``"stochastic"``: fresh randomness on every call, the usual DiffPure evaluation (Table 2, "Fix Random" ✗).

With ``eot_samples=K`` every loss gradient is the average of the gradients under K randomness
configurations (EOT, eq. 9), computed in one batched pass through the purifier.

| Paper link: https://arxiv.org/abs/2505.22839 (Liu & Wei, "How Do Diffusion Models Improve Adversarial Robustness?")
| Paper link (DiffPure): https://arxiv.org/abs/2205.07460
| Paper link (EOT): https://arxiv.org/abs/1802.00420
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from art.attacks.attack import EvasionAttack
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.classification.pytorch import PyTorchClassifier
from art.estimators.estimator import BaseEstimator
from tqdm.auto import tqdm

from art.utils import check_and_transform_label_format

from art_diffpure.purifier import DiffusionPurifier
from art_diffpure.randomness import (EOT_SEED_STRIDE, SEED_LIMIT, TRANSFER_SEED_OFFSET, RandomnessAudit,
                                     RandomnessControl, RandomnessEscapeError, eot_seeds, min_separation,
                                     numpy_start_seed, transfer_test_seed)

logger = logging.getLogger(__name__)

RANDOMNESS_MODES = ("aligned", "transfer", "stochastic")


# ---------------------------------------------------------------------------------------------------- protocols
@dataclass(frozen=True)
class AttackProtocol:
    """
    A ready attack configuration (Table S1 of the paper).

    ``eps_step = rel_step * eps``. Table S1 lists "Relative PGD step size 0.01 / 0.3" (without the
    {CIFAR-10, ImageNet} braces of its other rows) next to "PGD steps 40"; the attacks were run with
    foolbox, whose ``LinfPGD`` defaults are exactly ``steps=40`` and ``rel_stepsize=0.01 / 0.3`` (= 1/30,
    relative to epsilon) with a random start. We therefore read it as one relative step of 1/30 for
    both data sets: eps_step = 8/255/30 on CIFAR-10 and 4/255/30 on ImageNet, one random start.

    ``attack`` names the inner attack: ``"pgd"`` (ART's ``ProjectedGradientDescent``), ``"autoattack_rand"``
    (ART's ``AutoAttack`` with APGD-CE and APGD-DLR, ``max_iter`` iterations each, EOT from the purifier) or
    ``"autoattack_standard"`` (fra31's implementation: APGD-CE, APGD-T, FAB-T with ``max_iter`` iterations,
    Square with ``50 * max_iter`` queries, i.e. fra31's 100 and 5000).
    """

    name: str
    eps: float
    attack: str = "pgd"
    max_iter: int = 40
    rel_step: float = 0.01 / 0.3
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
        out["norm"] = _norm_name(self.norm)
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
PROTOCOL_ATTACKS = ("pgd", "autoattack_rand", "autoattack_standard")


def _norm_name(norm: Any) -> str | float:
    if isinstance(norm, str):
        return norm
    return "inf" if np.isinf(norm) else float(norm)


def _jsonable(value: Any) -> Any:
    """Best-effort conversion of attack parameters to JSON types."""
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return "inf" if np.isinf(value) else float(value)
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else f"array{tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return type(value).__name__


def _find_purifier(classifier: Any) -> DiffusionPurifier:
    defences = getattr(classifier, "preprocessing_defences", None) or []
    found = [d for d in defences if isinstance(d, DiffusionPurifier)]
    if not found:
        raise ValueError("The classifier has no DiffusionPurifier in its preprocessing_defences; build it with "
                         "PyTorchClassifier(..., preprocessing_defences=[DiffusionPurifier(...)])")
    if len(found) > 1:
        raise ValueError(f"The classifier has {len(found)} DiffusionPurifiers; exactly one is supported")
    return found[0]


def _protocol_attack(protocol: AttackProtocol, batch_size: int) -> Callable[[PyTorchClassifier], EvasionAttack]:
    """The factory of a protocol's AutoAttack version (see :class:`AttackProtocol`)."""
    from art_diffpure.autoattack import autoattack_rand, autoattack_standard

    if protocol.attack == "autoattack_rand":
        return lambda clf: autoattack_rand(clf, eps=protocol.eps, norm=protocol.norm, max_iter=protocol.max_iter,
                                           batch_size=batch_size)
    return lambda clf: autoattack_standard(clf, eps=protocol.eps, norm=protocol.norm, seed=protocol.seeds[0],
                                           batch_size=batch_size, n_iter=protocol.max_iter,
                                           n_queries=50 * protocol.max_iter)


def perturbation_bound(attack: EvasionAttack) -> float | None:
    """
    The Linf distance from its clean sample that no row an ART attack hands to the estimator exceeds, or ``None``
    when the attack promises none. Gradient and score attacks that project onto an eps-ball (FGSM, BIM, PGD, MIM,
    APGD, Square) are bounded by ``eps`` in any norm (an Lp ball lies inside the Linf ball of the same radius);
    AutoAttack is bounded when all its sub-attacks are. Minimum-norm and decision attacks (C&W, DeepFool, EAD,
    HopSkipJump, Boundary, FAB, ...) are not: their intermediate queries go anywhere.
    """
    from art.attacks.evasion import (AutoAttack, AutoProjectedGradientDescent, FastGradientMethod,
                                     ProjectedGradientDescent, SquareAttack)

    if isinstance(attack, AutoAttack):
        bounds = [perturbation_bound(a) for a in attack.attacks]
        return None if any(b is None for b in bounds) else max(bounds, default=0.0)
    bounded = (FastGradientMethod, ProjectedGradientDescent, AutoProjectedGradientDescent, SquareAttack)
    declared = getattr(attack, "perturbation_bound", None)  # our own attacks (e.g. the fra31 driver) declare it
    if callable(declared):
        return declared()
    if isinstance(attack, bounded) and getattr(attack, "eps", None) is not None:
        return float(np.max(attack.eps))
    return None


@contextlib.contextmanager
def _numpy_seeded(seed: int) -> Iterator[None]:
    """ART's random starts draw from numpy's global RNG: seed it for exact reruns, restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


# ---------------------------------------------------------------------------------------------------- the attack
class RandomnessAlignedAttack(EvasionAttack):
    """
    Run an ART evasion attack against a diffusion-purified classifier with the purifier's internal randomness
    aligned between attack and test (or deliberately not), per sample and reproducibly.

    | Paper link: https://arxiv.org/abs/2505.22839

    Sample ``i`` (``sample_ids[i]``, default its index in ``x``) with base seed ``s`` is attacked under the
    configurations ``eot_seeds(s, K) = [s, s + 7919, ...]`` (one per EOT sample) and tested under:

    - ``"aligned"``: base seed ``s`` (= attack configuration 0: for ``K = 1`` xi_attack = xi_test exactly);
    - ``"transfer"``: base seed ``transfer_test_seed(s) = s + 1000000007`` (never an attack seed);
    - ``"stochastic"``: fresh randomness, also for every attack call and every EOT copy (not reproducible).

    The inner attack's ``predict`` calls (labels, success checks, restarts, black-box queries) see the purifier
    under configuration 0 (aligned/transfer) or fresh randomness (stochastic); only loss gradients average over
    the K configurations.
    """

    attack_params = EvasionAttack.attack_params + [
        "attack",
        "randomness",
        "eot_samples",
        "eot_batched",
        "seed",
        "sample_ids",
        "eps",
        "eps_step",
        "max_iter",
        "norm",
        "num_random_init",
        "targeted",
        "gradient",
        "batch_size",
        "verbose",
    ]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)

    def __init__(
        self,
        classifier: PyTorchClassifier,
        attack: EvasionAttack | Callable[[PyTorchClassifier], EvasionAttack] | None = None,
        randomness: str = "aligned",
        eot_samples: int = 1,
        eot_batched: bool = True,
        seed: int = 0,
        sample_ids: Sequence[int] | np.ndarray | None = None,
        eps: float = 8 / 255,
        eps_step: float = 2 / 255,
        max_iter: int = 40,
        norm: int | float | str = np.inf,
        num_random_init: int = 1,
        targeted: bool = False,
        gradient: str | None = None,
        batch_size: int = 32,
        verbose: bool = False,
    ) -> None:
        """
        Create a randomness-aligned attack.

        :param classifier: an ART ``PyTorchClassifier`` with a :class:`~art_diffpure.DiffusionPurifier` in its
            ``preprocessing_defences``.
        :param attack: the inner ART evasion attack: ``None`` for ``ProjectedGradientDescent`` built from ``eps``,
            ``eps_step``, ``max_iter``, ``norm``, ``num_random_init`` and ``targeted``; an attack instance of any ART
            class built on ``classifier`` (used as it is); or a callable ``(classifier) -> EvasionAttack``. The
            randomness is set on the purifier object itself, so estimators the attack builds or copies (APGD,
            AutoAttack's sub-attacks, ``estimator_orig``, deep copies) run under it too.
        :param randomness: ``"aligned"``, ``"transfer"`` or ``"stochastic"`` (see the class docstring).
        :param eot_samples: number K >= 1 of randomness configurations averaged in every loss gradient.
        :param eot_batched: ``True`` to push the K copies through the purifier in one batch (memory K times the
            batch), ``False`` to loop over the configurations (only with attacks that call ``loss_gradient`` on
            the estimator they were given, e.g. PGD and FGM; APGD rebuilds its estimator).
        :param seed: base seed ``s``.
        :param sample_ids: per-sample ids of the data passed to :meth:`generate` (default ``arange(n)``).
        :param eps: attack budget of the default PGD.
        :param eps_step: step size of the default PGD.
        :param max_iter: iterations of the default PGD.
        :param norm: ``np.inf``, ``1`` or ``2`` for the default PGD.
        :param num_random_init: random initialisations of the default PGD (1 = one random start, as foolbox).
        :param targeted: targeted default PGD.
        :param gradient: ``None`` to use the purifier as configured, or ``"full"`` / ``"bpda"`` to require that
            gradient mode of the purifier (``ValueError`` otherwise).
        :param batch_size: number of samples attacked together (the inner attack gets the same batch size).
        :param verbose: show a progress bar over batches.
        """
        super().__init__(estimator=classifier)
        self.attack = attack
        self.randomness = randomness
        self.eot_samples = eot_samples
        self.eot_batched = eot_batched
        self.seed = seed
        self.sample_ids = sample_ids
        self.eps = eps
        self.eps_step = eps_step
        self.max_iter = max_iter
        self.norm = norm
        self.num_random_init = num_random_init
        self.targeted = targeted
        self.gradient = gradient
        self.batch_size = batch_size
        self.verbose = verbose
        self.protocol: AttackProtocol | None = None
        self._check_params()
        self.purifier = _find_purifier(classifier)
        if gradient is not None and self.purifier.gradient != gradient:
            raise ValueError(f"The attack requests gradient={gradient!r} but the purifier computes "
                             f"gradient={self.purifier.gradient!r}; build the DiffusionPurifier with "
                             f"gradient={gradient!r}")
        self.inner = self._build_inner()
        self.last_generation: dict[str, Any] | None = None
        self.last_audit: RandomnessAudit | None = None  # rows of the last generate / loss_gradient
        self.last_test_audit: RandomnessAudit | None = None  # rows of the last predict_test

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_protocol(cls, classifier: PyTorchClassifier, protocol: str | AttackProtocol,
                      **overrides: Any) -> "RandomnessAlignedAttack":
        """
        Build the attack of a named protocol of :data:`PROTOCOLS` (or an :class:`AttackProtocol`), e.g.
        ``RandomnessAlignedAttack.from_protocol(classifier, "paper_cifar10", batch_size=8)``. ``overrides`` are
        constructor arguments (protocol fields ``eps``, ``max_iter``, ``rel_step``, ... are accepted too).
        The base seed is the protocol's first; :func:`evaluate_repeats` runs all of them.
        """
        if isinstance(protocol, str):
            if protocol not in PROTOCOLS:
                raise ValueError(f"Unknown protocol {protocol!r}; expected one of {sorted(PROTOCOLS)}")
            protocol = PROTOCOLS[protocol]
        fields = {k: overrides.pop(k) for k in list(overrides) if k in AttackProtocol.__dataclass_fields__}
        if fields:
            protocol = replace(protocol, **fields)
        purifier = _find_purifier(classifier)
        if purifier.t_star != protocol.t_star:
            logger.warning("Protocol %s uses t_star=%d; the purifier has t_star=%d", protocol.name,
                           protocol.t_star, purifier.t_star)
        kwargs = dict(randomness=protocol.randomness, eot_samples=protocol.eot_samples, seed=protocol.seeds[0],
                      eps=protocol.eps, eps_step=protocol.eps_step, max_iter=protocol.max_iter, norm=protocol.norm,
                      num_random_init=protocol.num_random_init, gradient=protocol.gradient,
                      batch_size=protocol.batch_size)
        if protocol.attack not in PROTOCOL_ATTACKS:
            raise ValueError(f"Unknown protocol attack {protocol.attack!r}; expected one of {PROTOCOL_ATTACKS}")
        if protocol.attack != "pgd":
            kwargs["attack"] = _protocol_attack(protocol, int(overrides.get("batch_size", protocol.batch_size)))
        kwargs.update(overrides)
        out = cls(classifier, **kwargs)
        out.protocol = protocol
        return out

    def set_params(self, **kwargs) -> None:
        """Set attack parameters (ART convention); the inner attack is rebuilt when its parameters change."""
        super().set_params(**kwargs)
        if set(kwargs) & {"attack", "eps", "eps_step", "max_iter", "norm", "num_random_init", "targeted",
                          "batch_size"}:
            self.inner = self._build_inner()

    def _build_inner(self) -> EvasionAttack:
        """The inner attack, on the user's classifier: the randomness is the purifier object's, so whatever
        estimators the attack builds or copies from it stay under control; nothing needs rebuilding."""
        if self.attack is None:
            from art.attacks.evasion import ProjectedGradientDescent

            return ProjectedGradientDescent(
                self.estimator, norm=self.norm, eps=self.eps, eps_step=self.eps_step, max_iter=self.max_iter,
                targeted=self.targeted, num_random_init=self.num_random_init, batch_size=self.batch_size,
                verbose=False,
            )
        inner = self.attack if isinstance(self.attack, EvasionAttack) else self.attack(self.estimator)
        if not isinstance(inner, EvasionAttack):
            raise ValueError(f"The attack factory returned {type(inner).__name__}, not an ART EvasionAttack")
        estimators = [inner.estimator] + [a.estimator for a in getattr(inner, "attacks", None) or []
                                          if isinstance(a, EvasionAttack)]
        for estimator in estimators:
            found = [d for d in getattr(estimator, "preprocessing_defences", None) or []
                     if isinstance(d, DiffusionPurifier)]
            if found and found[0] is not self.purifier:
                raise ValueError(f"{type(inner).__name__} is built on a classifier with another DiffusionPurifier "
                                 "object; build it on the classifier given to RandomnessAlignedAttack")
        return inner

    # ------------------------------------------------------------------ seeds
    def _ids(self, n: int, sample_ids: Any = None) -> np.ndarray:
        ids = self.sample_ids if sample_ids is None else sample_ids
        ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) != n:
            raise ValueError(f"Got {len(ids)} sample_ids for {n} samples")
        return ids

    def attack_seeds(self) -> list[int] | None:
        """Base seeds of the K attack configurations (``None`` in ``"stochastic"`` mode)."""
        return None if self.randomness == "stochastic" else eot_seeds(self.seed, self.eot_samples)

    def test_seed(self) -> int | None:
        """Base seed of the test randomness (``None`` in ``"stochastic"`` mode)."""
        if self.randomness == "aligned":
            return int(self.seed)
        if self.randomness == "transfer":
            return transfer_test_seed(self.seed)
        return None

    # ------------------------------------------------------------------ attack
    def _control(self, positional: bool = False) -> RandomnessControl:
        bound = None if positional else perturbation_bound(self.inner)
        return RandomnessControl(self.attack_seeds(), self.eot_samples, bound=bound, positional=positional)

    def _groups(self, x: np.ndarray, control: RandomnessControl) -> tuple[list[slice], str]:
        """Batches of ``batch_size`` samples, or single samples where rows could not be told apart in a batch."""
        batches = [slice(a, min(a + self.batch_size, len(x))) for a in range(0, len(x), self.batch_size)]
        if control.configs is None:  # fresh noise needs no sample identity
            return batches, "batch"
        if control.bound is None:
            return [slice(i, i + 1) for i in range(len(x))], "per-sample: the attack has no perturbation bound"
        if self.estimator.preprocessing_operations[0] is not self.purifier:
            return [slice(i, i + 1) for i in range(len(x))], "per-sample: a preprocessor runs before the purifier"
        out, split = [], 0
        for sl in batches:
            flat = x[sl].reshape(sl.stop - sl.start, -1).astype(np.float64)
            if min_separation(flat) > 2 * control._slack_bound():
                out.append(sl)
            else:
                out.extend(slice(i, i + 1) for i in range(sl.start, sl.stop))
                split += 1
        return out, "batch" if not split else f"batch; {split} batch(es) per-sample (samples closer than 2 eps)"

    @contextlib.contextmanager
    def _eot_loop(self, control: RandomnessControl) -> Iterator[None]:
        """``eot_batched=False``: the classifier's ``loss_gradient`` loops over the K configurations and averages."""
        if self.eot_samples == 1 or self.eot_batched:
            yield
            return
        view = self.estimator
        original = type(view).loss_gradient

        def looped(x, y, training_mode: bool = False, **kwargs):
            total = None
            for k in range(self.eot_samples):
                control.single_config = k if control.configs is not None else 0
                grad = original(view, x, y, training_mode=training_mode, **kwargs)
                total = grad if total is None else total + grad
            control.single_config = None
            return total / self.eot_samples

        view.loss_gradient = looped
        try:
            yield
        finally:
            del view.loss_gradient
            control.single_config = None

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        """
        Generate adversarial examples.

        :param x: clean samples, shape ``(n, ...)`` in the classifier's clip range.
        :param y: labels (indices or one-hot; target labels if ``targeted``); ``None`` for the classifier's
            predictions under the test randomness.
        :param sample_ids: optional per-sample ids overriding the constructor's.
        :return: adversarial samples, same shape and dtype as ``x``. ``last_generation`` and ``last_audit`` say
            under which randomness every purified row ran.
        """
        x = np.asarray(x)
        ids = self._ids(len(x), kwargs.get("sample_ids"))
        if self.eot_samples > 1 and not self.eot_batched and self.inner.estimator is not self.estimator:
            raise ValueError(f"eot_batched=False needs an inner attack that uses the estimator it is given; "
                             f"{type(self.inner).__name__} rebuilds it: use eot_batched=True")
        if y is None:
            if self.targeted:
                raise ValueError("A targeted attack needs target labels y")
            y = self.predict_test(x, sample_ids=ids).argmax(axis=1)
        y_onehot = check_and_transform_label_format(np.asarray(y), nb_classes=self.estimator.nb_classes, return_one_hot=True)
        control = self._control()
        groups, identification = self._groups(x, control)
        x_adv = np.empty_like(x)
        t0 = time.perf_counter()
        with self.purifier.controlled(control), self._eot_loop(control):
            for sl in tqdm(groups, desc="RandomnessAlignedAttack", disable=not self.verbose):
                control.set_batch(x[sl], ids[sl])
                with _numpy_seeded(numpy_start_seed(self.seed, int(ids[sl][0]))):
                    x_adv[sl] = self.inner.generate(x[sl], y_onehot[sl].astype(np.float32))
        self.last_audit = control.audit
        self.last_generation = {
            "sample_ids": ids.tolist(),
            "attack_seeds": control.configs,
            "test_seed": self.test_seed(),
            "identification": identification,
            "audit": control.audit.to_dict(),
            "wall_time_s": time.perf_counter() - t0,
        }
        return x_adv

    def predict_test(self, x: np.ndarray, sample_ids: Any = None) -> np.ndarray:
        """Classifier outputs under the TEST randomness of this attack (per-sample base seed and ids)."""
        x = np.asarray(x)
        ids = self._ids(len(x), sample_ids)
        test_seed = self.test_seed()
        # ART's predict purifies all rows in one call, in order: rows are identified by position.
        control = RandomnessControl(None if test_seed is None else [test_seed], positional=True)
        control.set_batch(x, ids)
        with self.purifier.controlled(control):
            out = self.estimator.predict(x, batch_size=self.batch_size)
        self.last_test_audit = control.audit
        return out

    def loss_gradient(self, x: np.ndarray, y: np.ndarray, sample_ids: Any = None) -> np.ndarray:
        """
        The loss gradient the inner attack sees at ``x`` (EOT average over the K attack configurations, batched
        or looped according to ``eot_batched``), for analysis and tests. ``y`` as in :meth:`generate`.
        """
        x = np.asarray(x)
        ids = self._ids(len(x), sample_ids)
        control = self._control(positional=True)
        control.set_batch(x, ids)
        y_onehot = check_and_transform_label_format(np.asarray(y), nb_classes=self.estimator.nb_classes,
                                                    return_one_hot=True)
        with self.purifier.controlled(control), self._eot_loop(control):
            grad = self.estimator.loss_gradient(x, y_onehot.astype(np.float32))
        self.last_audit = control.audit
        return grad

    # ------------------------------------------------------------------ evaluation
    def config(self) -> dict[str, Any]:
        """JSON-serialisable configuration of this attack."""
        inner_params = {k: _jsonable(getattr(self.inner, k)) for k in self.inner.attack_params
                        if hasattr(self.inner, k) and k != "estimator"}
        return {
            "attack": type(self).__name__,
            "inner_attack": type(self.inner).__name__,
            "inner_params": inner_params,
            "randomness": self.randomness,
            "eot_samples": int(self.eot_samples),
            "eot_batched": bool(self.eot_batched),
            "seed": int(self.seed),
            "attack_seeds": self.attack_seeds(),
            "test_seed": self.test_seed(),
            "batch_size": int(self.batch_size),
            "purifier": {k: _jsonable(getattr(self.purifier, k)) for k in ("t_star", "sampler", "gradient",
                                                                           "forward_noising")},
            "protocol": None if self.protocol is None else self.protocol.to_dict(),
        }

    def evaluate(self, x: np.ndarray, y: np.ndarray, sample_ids: Any = None) -> dict[str, Any]:
        """
        Attack ``x`` and test the result under the test randomness.

        :param x: clean samples.
        :param y: true labels (indices or one-hot); for a targeted attack, ``y`` are the targets and success
            means reaching them (accuracies are then against the targets too).
        :param sample_ids: per-sample ids (default: the constructor's, else ``arange(n)``).
        :return: a JSON-serialisable report: ``clean_accuracy``, ``robust_accuracy`` (both under the test
            randomness), ``n``, per-sample ``clean_correct``, ``adv_correct``, ``success``, ``clean_pred``,
            ``adv_pred``, ``sample_ids``, ``attack_seeds`` and ``test_seeds`` (per sample; lists of the K
            configurations, ``None`` when fresh), ``config``, ``audit`` (rows purified / under the intended
            randomness / ambiguous / uncontrolled, for the attack and for the test), ``identification``,
            ``wall_time_s`` and ``time_per_step_s``.
        :raises RandomnessEscapeError: when any row ran under randomness other than the intended one.
        """
        x = np.asarray(x)
        labels = np.asarray(y)
        labels = labels.argmax(axis=1) if labels.ndim == 2 else labels.astype(np.int64)
        ids = self._ids(len(x), sample_ids)
        t0 = time.perf_counter()
        x_adv = self.generate(x, labels, sample_ids=ids)
        t_attack = time.perf_counter() - t0
        audit = RandomnessAudit()
        audit.add(self.last_audit)
        clean_pred = self.predict_test(x, ids).argmax(axis=1)
        test_audit = RandomnessAudit()
        test_audit.add(self.last_test_audit)
        adv_pred = self.predict_test(x_adv, ids).argmax(axis=1)
        test_audit.add(self.last_test_audit)
        if not (audit.ok and test_audit.ok):
            raise RandomnessEscapeError(
                f"Refusing to report a robust accuracy: rows ran under unintended randomness (attack audit "
                f"{audit.to_dict()}, test audit {test_audit.to_dict()})")
        clean_correct = clean_pred == labels
        adv_correct = adv_pred == labels
        success = adv_correct if self.targeted else ~adv_correct
        steps = getattr(self.inner, "max_iter", None)
        n_batches = math.ceil(len(x) / self.batch_size)
        test_seed = self.test_seed()
        configs = self.attack_seeds()
        self.last_x_adv = x_adv  # the adversarial examples of the last evaluate() (kept out of the report)
        return {
            "n": int(len(x)),
            "clean_accuracy": float(clean_correct.mean()),
            "robust_accuracy": float(adv_correct.mean()) if not self.targeted else float((~adv_correct).mean()),
            "attack_success_rate": float(success.mean()),
            "clean_correct": clean_correct.tolist(),
            "adv_correct": adv_correct.tolist(),
            "success": success.tolist(),
            "clean_pred": clean_pred.tolist(),
            "adv_pred": adv_pred.tolist(),
            "labels": labels.tolist(),
            "sample_ids": ids.tolist(),
            "attack_seeds": [configs for _ in ids],
            "test_seeds": [test_seed for _ in ids],
            "max_perturbation_linf": float(np.abs(x_adv - x).reshape(len(x), -1).max()) if len(x) else 0.0,
            "config": self.config(),
            "identification": self.last_generation["identification"],
            "audit": {"attack": audit.to_dict(), "test": test_audit.to_dict()},
            "wall_time_s": time.perf_counter() - t0,
            "attack_time_s": t_attack,
            "time_per_step_s": (t_attack / (n_batches * steps)) if isinstance(steps, int) and steps > 0 else None,
        }

    def _check_params(self) -> None:
        if self.randomness not in RANDOMNESS_MODES:
            raise ValueError(f"Unknown randomness mode {self.randomness!r}; expected one of {RANDOMNESS_MODES}")
        if isinstance(self.eot_samples, bool) or not isinstance(self.eot_samples, (int, np.integer)) \
                or self.eot_samples < 1:
            raise ValueError(f"eot_samples must be an int >= 1, got {self.eot_samples!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        if max(eot_seeds(self.seed, self.eot_samples)[-1], transfer_test_seed(self.seed)) >= SEED_LIMIT:
            raise ValueError(f"seed {self.seed} and eot_samples {self.eot_samples} give base seeds >= 2**32")
        if self.eot_samples * EOT_SEED_STRIDE >= TRANSFER_SEED_OFFSET:
            raise ValueError("eot_samples too large: EOT seeds would reach the transfer test seed")
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if self.gradient not in (None, "full", "bpda"):
            raise ValueError(f"gradient must be None, 'full' or 'bpda', got {self.gradient!r}")
        if self.attack is not None and not isinstance(self.attack, EvasionAttack) and not callable(self.attack):
            raise ValueError("attack must be None, an ART EvasionAttack or a callable (estimator) -> EvasionAttack")
        if self.eps <= 0 or self.eps_step <= 0 or not isinstance(self.max_iter, (int, np.integer)) or self.max_iter < 1:
            raise ValueError("eps and eps_step must be positive and max_iter a positive int")
        if not isinstance(self.verbose, bool):
            raise ValueError("verbose must be a bool")
        if not isinstance(self.estimator, PyTorchClassifier):
            raise ValueError(f"RandomnessAlignedAttack needs an ART PyTorchClassifier, got "
                             f"{type(self.estimator).__name__}")


# ---------------------------------------------------------------------------------------------------- repeats
def evaluate_repeats(
    attack: RandomnessAlignedAttack | Callable[[int], RandomnessAlignedAttack],
    x: np.ndarray,
    y: np.ndarray,
    seeds: Sequence[int] = (0, 1, 2),
    sample_ids: Any = None,
) -> dict[str, Any]:
    """
    Repeat :meth:`RandomnessAlignedAttack.evaluate` over base seeds (the paper uses 0, 1, 2).

    :param attack: an attack (its ``seed`` is set to each base seed in turn) or a factory ``seed -> attack``.
    :param seeds: base seeds.
    :return: ``{"seeds", "runs", "clean_accuracy": {"mean", "std", "values"}, "robust_accuracy": {...},
        "wall_time_s"}``; ``std`` is the sample standard deviation (ddof=1; 0 for one seed).
    """
    t0 = time.perf_counter()
    runs = []
    for s in seeds:
        if isinstance(attack, RandomnessAlignedAttack):
            attack.seed = int(s)
            attack._check_params()
            run_attack = attack
        else:
            run_attack = attack(int(s))
        runs.append(run_attack.evaluate(x, y, sample_ids=sample_ids))

    def summary(key: str) -> dict[str, Any]:
        values = np.array([r[key] for r in runs], dtype=np.float64)
        return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "values": values.tolist()}

    return {"seeds": [int(s) for s in seeds], "runs": runs, "clean_accuracy": summary("clean_accuracy"),
            "robust_accuracy": summary("robust_accuracy"), "wall_time_s": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------------- Table 5
def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def _summary(r: np.ndarray) -> dict[str, Any]:
    return {"mean": float(np.nanmean(r)), "std": float(np.nanstd(r)), "per_sample": [float(v) for v in r]}


def perturbation_correlation(x: np.ndarray, x_adv_a: np.ndarray, x_adv_b: np.ndarray) -> dict[str, Any]:
    """
    Pearson correlation, per sample, between two adversarial perturbations ``x_adv_a - x`` and ``x_adv_b - x``
    (Table 5: e.g. PGD under two fixed configurations). Returns ``{"mean", "std", "per_sample"}`` (NaN for a
    zero perturbation, ignored in mean and std).
    """
    return _summary(_pearson_rows(np.asarray(x_adv_a) - x, np.asarray(x_adv_b) - x))


def gradient_correlation(
    classifier: PyTorchClassifier,
    x: np.ndarray,
    y: np.ndarray,
    seed_a: int = 0,
    seed_b: int = 1,
    eot_samples: int = 0,
    sample_ids: Any = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """
    Mean (over samples) Pearson correlation between loss gradients under two independent fixed
    configurations xi_a (base seed ``seed_a``) and xi_b (``seed_b``), and, if ``eot_samples > 0``, between the
    EOT gradient (average over ``eot_samples`` configurations ``eot_seeds(seed_b, K)``) and the fixed xi_a
    gradient (Table 5, with gradients in place of PGD perturbations).

    :return: ``{"fixed_vs_fixed": {"mean", "std", "per_sample"}, "eot_vs_fixed": {...} or None, ...}``.
    """
    if seed_a == seed_b:
        raise ValueError("seed_a and seed_b must differ (independent configurations)")

    def grad(seed: int, k: int) -> np.ndarray:
        attack = RandomnessAlignedAttack(classifier, seed=seed, eot_samples=k, sample_ids=sample_ids,
                                         batch_size=batch_size)
        return np.concatenate([
            attack.loss_gradient(x[i:i + batch_size], y[i:i + batch_size],
                                 sample_ids=attack._ids(len(x))[i:i + batch_size])
            for i in range(0, len(x), batch_size)])

    g_a, g_b = grad(seed_a, 1), grad(seed_b, 1)
    out: dict[str, Any] = {"seed_a": int(seed_a), "seed_b": int(seed_b), "eot_samples": int(eot_samples),
                           "fixed_vs_fixed": _summary(_pearson_rows(g_a, g_b)), "eot_vs_fixed": None}
    if eot_samples > 0:
        out["eot_vs_fixed"] = _summary(_pearson_rows(grad(seed_b, eot_samples), g_a))
    return out


__all__ = [
    "AttackProtocol",
    "PROTOCOL_ATTACKS",
    "EOT_SEED_STRIDE",
    "PROTOCOLS",
    "RANDOMNESS_MODES",
    "RandomnessAlignedAttack",
    "TRANSFER_SEED_OFFSET",
    "eot_seeds",
    "evaluate_repeats",
    "gradient_correlation",
    "perturbation_bound",
    "perturbation_correlation",
    "transfer_test_seed",
]
