"""art-diffpure: diffusion purification as an ART defence, evaluated with aligned randomness.

``DiffusionPurifier`` (an ART ``PreprocessorPyTorch``) and ``RandomnessAlignedAttack`` (an ART
``EvasionAttack``) are the entry points; ``art_diffpure.metrics`` holds the paper's measurements.
The subpackages, by concept: :mod:`art_diffpure.attacks` (the aligned attack, the paper's protocols,
AutoAttack) and :mod:`art_diffpure.models` (the embedded digits models, RobustBench, ADM conversion, the
ART classifier builder). Nothing here needs network access at import time.
"""
from art_diffpure import metrics
from art_diffpure.attacks.randomness_aligned import RandomnessAlignedAttack
from art_diffpure.purifier import DiffusionPurifier
from art_diffpure.randomness import AmbiguousRowsError, RandomnessAudit, RandomnessControl, RandomnessEscapeError

__version__ = "0.1.0"
__all__ = ["AmbiguousRowsError", "DiffusionPurifier", "RandomnessAlignedAttack", "RandomnessAudit",
           "RandomnessControl", "RandomnessEscapeError", "metrics"]
