"""
Models and data: the classifiers and diffusion models an evaluation runs on, and the builder that joins them.

- :mod:`~art_diffpure.models.classifier`: :func:`art_classifier`, the one builder of an ART ``PyTorchClassifier``
  with a purifier (and other defences) in front of a torch model;
- :mod:`~art_diffpure.models.digits`: the embedded digits CNN and DDPM (weights shipped in ``art_diffpure/weights/``);
- :mod:`~art_diffpure.models.data`: scikit-learn's 8x8 digits with one fixed train/test split;
- :mod:`~art_diffpure.models.robustbench`: RobustBench classifiers (RobustBench imported only when loading);
- :mod:`~art_diffpure.models.convert` and :mod:`~art_diffpure.models.adm`: guided-diffusion (ADM) checkpoints to
  diffusers directories (not imported here, so that ``python -m art_diffpure.models.convert`` runs cleanly).

Nothing here imports from :mod:`art_diffpure.attacks` or above; the purifier is imported only where one is built.
"""
from art_diffpure.models.classifier import art_classifier
from art_diffpure.models.data import load_digits_split
from art_diffpure.models.digits import digits_art_classifier, load_digits_classifier, load_digits_purifier
from art_diffpure.models.robustbench import load_robustbench_model, robustbench_art_classifier

__all__ = ["art_classifier", "digits_art_classifier", "load_digits_classifier",
           "load_digits_purifier", "load_digits_split", "load_robustbench_model", "robustbench_art_classifier"]
