"""
Randomness-aligned evaluation of diffusion purification (DiffPure) with ART evasion attacks.

The usual evaluation of a stochastic purifier attacks it under one draw of its internal randomness
xi_attack and tests it under another, xi_test: even with EOT the attack is then a transfer attack
(eq. 8-9 of the paper). :class:`RandomnessAlignedAttack` runs any ART evasion attack against a
classifier whose preprocessing chain contains a :class:`~art_diffpure.DiffusionPurifier` and
controls xi per sample (base seed ``s``, sample id ``i``):

- ``"aligned"``: every gradient and the final test of sample ``i`` use the same xi (xi_attack = xi_test);
- ``"transfer"``: attack under base seed ``s``, test under the independent base seed
  :func:`~art_diffpure.randomness.transfer_test_seed` ``(s) = s + 1000000007`` (Table 4);
- ``"stochastic"``: fresh randomness on every call, the usual DiffPure evaluation (Table 2, "Fix Random" ✗).

With ``eot_samples=K`` every loss gradient is the average of the gradients under K randomness
configurations (EOT, eq. 9), computed in one batched pass through the purifier. The randomness is set on the
purifier object itself (a :class:`~art_diffpure.randomness.RandomnessControl`), so whatever estimators the
inner attack builds or copies run under it too.

| Paper link: https://arxiv.org/abs/2505.22839 (Liu & Wei, "How Do Diffusion Models Improve Adversarial Robustness?")
| Paper link (DiffPure): https://arxiv.org/abs/2205.07460
| Paper link (EOT): https://arxiv.org/abs/1802.00420
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Callable, Sequence

import numpy as np
from art.attacks.attack import EvasionAttack
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.classification.pytorch import PyTorchClassifier
from art.estimators.estimator import BaseEstimator
from tqdm.auto import tqdm

from art_diffpure._utils import as_sample_ids, check_int, one_hot
from art_diffpure.attacks.batching import looped_eot, sample_groups
from art_diffpure.attacks.inner import (attack_params_jsonable, check_inner, perturbation_bound,
                                       unlogged_success_rate)
from art_diffpure.attacks.protocols import AttackProtocol, get_protocol, protocol_attack, protocol_kwargs
from art_diffpure.purifier import find_purifier
from art_diffpure.randomness import (EOT_SEED_STRIDE, SEED_LIMIT, TRANSFER_SEED_OFFSET, RandomnessAudit,
                                     RandomnessControl, eot_seeds, numpy_seeded,
                                     numpy_start_seed, transfer_test_seed)

logger = logging.getLogger(__name__)

RANDOMNESS_MODES = ("aligned", "transfer", "stochastic")
#: Parameters of the inner attack: changing one with ``set_params`` rebuilds it.
_INNER_PARAMS = {"attack", "eps", "eps_step", "max_iter", "norm", "num_random_init", "targeted", "batch_size"}


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
        self.purifier = find_purifier(classifier, required=True)
        if gradient is not None and self.purifier.gradient != gradient:
            raise ValueError(f"The attack requests gradient={gradient!r} but the purifier computes "
                             f"gradient={self.purifier.gradient!r}; build the DiffusionPurifier with "
                             f"gradient={gradient!r}")
        self.inner = self._build_inner()
        self.last_generation: dict[str, Any] | None = None
        self.last_audit: RandomnessAudit | None = None  # rows of the last generate / loss_gradient
        self.last_test_audit: RandomnessAudit | None = None  # rows of the last predict_test
        self.last_x_adv: np.ndarray | None = None  # set by evaluations.aligned.evaluate_aligned

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_protocol(cls, classifier: PyTorchClassifier, protocol: str | AttackProtocol,
                      **overrides: Any) -> "RandomnessAlignedAttack":
        """
        Build the attack of a named protocol of :data:`~art_diffpure.attacks.protocols.PROTOCOLS` (or an
        :class:`~art_diffpure.attacks.protocols.AttackProtocol`), e.g.
        ``RandomnessAlignedAttack.from_protocol(classifier, "paper_cifar10", batch_size=8)``. ``overrides`` are
        constructor arguments (protocol fields ``eps``, ``max_iter``, ``rel_step``, ... are accepted too).
        The base seed is the protocol's first; :func:`~art_diffpure.evaluations.aligned.evaluate_repeats` runs all.
        """
        fields = {k: overrides.pop(k) for k in list(overrides) if k in AttackProtocol.__dataclass_fields__}
        protocol = get_protocol(protocol, **fields)
        purifier = find_purifier(classifier, required=True)
        if purifier.t_star != protocol.t_star:
            logger.warning("Protocol %s uses t_star=%d; the purifier has t_star=%d", protocol.name,
                           protocol.t_star, purifier.t_star)
        kwargs = protocol_kwargs(protocol)
        inner = protocol_attack(protocol, int(overrides.get("batch_size", protocol.batch_size)))
        if inner is not None:
            kwargs["attack"] = inner
        kwargs.update(overrides)
        out = cls(classifier, **kwargs)
        out.protocol = protocol
        return out

    def set_params(self, **kwargs) -> None:
        """Set attack parameters (ART convention); the inner attack is rebuilt when its parameters change."""
        super().set_params(**kwargs)
        if set(kwargs) & _INNER_PARAMS:
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
        return check_inner(inner, self.purifier)

    # ------------------------------------------------------------------ seeds
    def ids_for(self, n: int, sample_ids: Any = None) -> np.ndarray:
        """The ids of ``n`` samples: ``sample_ids``, else the constructor's, else ``arange(n)``."""
        return as_sample_ids(self.sample_ids if sample_ids is None else sample_ids, n)

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
        """The control of one generate (``positional``: of a call on exactly the batch, in order). The default PGD,
        built here, calls the estimator on its whole batch in order, so when the purifier sees the rows as the attack made
        them they are identified by position (each checked to lie in its own sample's ball): batches holding
        near-duplicates are not split."""
        if positional:
            return RandomnessControl(self.attack_seeds(), self.eot_samples, positional=True)
        ordered = self.attack is None and self.estimator.preprocessing_operations[0] is self.purifier
        return RandomnessControl(self.attack_seeds(), self.eot_samples, bound=perturbation_bound(self.inner),
                                 positional=ordered)

    def _groups(self, x: np.ndarray, control: RandomnessControl) -> tuple[list[np.ndarray], str]:
        return sample_groups(x, self.batch_size, control, self.estimator, self.purifier)

    def _eot_loop(self, control: RandomnessControl) -> contextlib.AbstractContextManager:
        return looped_eot(self.estimator, control, self.eot_samples, self.eot_batched)

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
        ids = self.ids_for(len(x), kwargs.get("sample_ids"))
        if self.eot_samples > 1 and not self.eot_batched and self.inner.estimator is not self.estimator:
            raise ValueError(f"eot_batched=False needs an inner attack that uses the estimator it is given; "
                             f"{type(self.inner).__name__} rebuilds it: use eot_batched=True")
        if y is None:
            if self.targeted:
                raise ValueError("A targeted attack needs target labels y")
            y = self.predict_test(x, sample_ids=ids).argmax(axis=1)
        y_onehot = one_hot(y, self.estimator.nb_classes)
        control = self._control()
        groups, identification = self._groups(x, control)
        x_adv = np.empty_like(x)
        t0 = time.perf_counter()
        with self.purifier.controlled(control), self._eot_loop(control), unlogged_success_rate(self.inner):
            for idx in tqdm(groups, desc="RandomnessAlignedAttack", disable=not self.verbose):
                control.set_batch(x[idx], ids[idx])
                with numpy_seeded(numpy_start_seed(self.seed, int(ids[idx][0]))):
                    x_adv[idx] = self.inner.generate(x[idx], y_onehot[idx])
        self.last_audit = control.audit
        self.last_generation = {
            "sample_ids": ids.tolist(),
            "attack_seeds": control.configs,
            "test_seed": self.test_seed(),
            "identification": identification,
            "groups": [idx.tolist() for idx in groups],  # attacked together; ART's random start is drawn per group
            "audit": control.audit.to_dict(),
            "wall_time_s": time.perf_counter() - t0,
        }
        return x_adv

    def predict_test(self, x: np.ndarray, sample_ids: Any = None) -> np.ndarray:
        """Classifier outputs under the TEST randomness of this attack (per-sample base seed and ids)."""
        x = np.asarray(x)
        ids = self.ids_for(len(x), sample_ids)
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
        ids = self.ids_for(len(x), sample_ids)
        control = self._control(positional=True)
        control.set_batch(x, ids)
        with self.purifier.controlled(control), self._eot_loop(control):
            grad = self.estimator.loss_gradient(x, one_hot(y, self.estimator.nb_classes))
        self.last_audit = control.audit
        return grad

    # ------------------------------------------------------------------ configuration
    def config(self) -> dict[str, Any]:
        """JSON-serialisable configuration of this attack."""
        return {
            "attack": type(self).__name__,
            "inner_attack": type(self.inner).__name__,
            "inner_params": attack_params_jsonable(self.inner),
            "randomness": self.randomness,
            "eot_samples": int(self.eot_samples),
            "eot_batched": bool(self.eot_batched),
            "seed": int(self.seed),
            "attack_seeds": self.attack_seeds(),
            "test_seed": self.test_seed(),
            "batch_size": int(self.batch_size),
            "purifier": attack_params_jsonable(self.purifier, ("t_star", "sampler", "gradient", "forward_noising")),
            "protocol": None if self.protocol is None else self.protocol.to_dict(),
        }

    def _check_params(self) -> None:
        if self.randomness not in RANDOMNESS_MODES:
            raise ValueError(f"Unknown randomness mode {self.randomness!r}; expected one of {RANDOMNESS_MODES}")
        check_int(self.eot_samples, "eot_samples", 1)
        check_int(self.seed, "seed", 0)
        if max(eot_seeds(self.seed, self.eot_samples)[-1], transfer_test_seed(self.seed)) >= SEED_LIMIT:
            raise ValueError(f"seed {self.seed} and eot_samples {self.eot_samples} give base seeds >= 2**32")
        if self.eot_samples * EOT_SEED_STRIDE >= TRANSFER_SEED_OFFSET:
            raise ValueError("eot_samples too large: EOT seeds would reach the transfer test seed")
        check_int(self.batch_size, "batch_size", 1)
        if self.gradient not in (None, "full", "bpda"):
            raise ValueError(f"gradient must be None, 'full' or 'bpda', got {self.gradient!r}")
        if self.attack is not None and not isinstance(self.attack, EvasionAttack) and not callable(self.attack):
            raise ValueError("attack must be None, an ART EvasionAttack or a callable (estimator) -> EvasionAttack")
        if self.eps <= 0 or self.eps_step <= 0:
            raise ValueError("eps and eps_step must be positive")
        check_int(self.max_iter, "max_iter", 1)
        if not isinstance(self.verbose, bool):
            raise ValueError("verbose must be a bool")
        if not isinstance(self.estimator, PyTorchClassifier):
            raise ValueError(f"RandomnessAlignedAttack needs an ART PyTorchClassifier, got "
                             f"{type(self.estimator).__name__}")


__all__ = ["RANDOMNESS_MODES", "RandomnessAlignedAttack"]
