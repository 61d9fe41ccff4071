"""
Attacks on a diffusion-purified ART classifier, with the purifier's randomness under control.

- :mod:`~art_diffpure.attacks.randomness_aligned`: :class:`RandomnessAlignedAttack`, the ART ``EvasionAttack``
  that runs any ART attack with the randomness aligned between attack and test (or transfer, or stochastic);
- :mod:`~art_diffpure.attacks.protocols`: the paper's protocols (Table S1) and the one rule for the relative
  PGD step, :func:`rel_step`;
- :mod:`~art_diffpure.attacks.autoattack`: AutoAttack's standard (fra31's code) and rand (ART's) versions;
- :mod:`~art_diffpure.attacks.diffhammer`, :mod:`~art_diffpure.attacks.diffattack`,
  :mod:`~art_diffpure.attacks.surrogate`: the attacks built for diffusion purification (DiffHammer, DiffAttack,
  surrogate-schedule PGD-EOT), on the purifier's named draws (:mod:`~art_diffpure.attacks.purified`) and the APGD
  rule driven by their own gradients (:mod:`~art_diffpure.attacks.apgd`);
- :mod:`~art_diffpure.attacks.inner`: what the wrapper needs to know of an inner attack (its perturbation bound).
"""
from art_diffpure.attacks.autoattack import Fra31AutoAttack, autoattack_rand, autoattack_standard
from art_diffpure.attacks.diffattack import DiffAttack
from art_diffpure.attacks.diffhammer import DiffHammer
from art_diffpure.attacks.inner import perturbation_bound
from art_diffpure.attacks.protocols import PROTOCOL_ATTACKS, PROTOCOLS, AttackProtocol, rel_step
from art_diffpure.attacks.randomness_aligned import RANDOMNESS_MODES, RandomnessAlignedAttack
from art_diffpure.attacks.surrogate import SurrogatePGDEOT

__all__ = ["PROTOCOLS", "PROTOCOL_ATTACKS", "RANDOMNESS_MODES", "AttackProtocol", "DiffAttack", "DiffHammer",
           "Fra31AutoAttack", "RandomnessAlignedAttack",
           "SurrogatePGDEOT", "autoattack_rand", "autoattack_standard",
           "perturbation_bound", "rel_step"]
