"""art-diffpure: diffusion purification as an ART defence, evaluated with aligned randomness.

``DiffusionPurifier`` (an ART ``PreprocessorPyTorch``) and ``RandomnessAlignedAttack`` (an ART
``EvasionAttack``) are the entry points; ``art_diffpure.metrics`` holds the paper's measurements.
Nothing here needs network access at import time.
"""
from art_diffpure.attack import RandomnessAlignedAttack
from art_diffpure.purifier import DiffusionPurifier
from art_diffpure.randomness import AmbiguousRowsError, RandomnessAudit, RandomnessControl, RandomnessEscapeError

__version__ = "0.1.0"
__all__ = ["AmbiguousRowsError", "DiffusionPurifier", "RandomnessAlignedAttack", "RandomnessAudit",
           "RandomnessControl", "RandomnessEscapeError"]
