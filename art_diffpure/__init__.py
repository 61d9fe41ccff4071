"""art-diffpure: diffusion purification as an ART defence, evaluated with aligned randomness."""
from art_diffpure.purifier import DiffusionPurifier

__version__ = "0.1.0"
__all__ = ["DiffusionPurifier"]
