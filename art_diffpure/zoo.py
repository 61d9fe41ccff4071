"""Model loaders, kept as a thin re-export: RobustBench classifiers (:mod:`art_diffpure.models.robustbench`) and the
one ART classifier builder (:func:`art_diffpure.models.classifier.art_classifier`).

Nothing here is imported by ``import art_diffpure``, so the package imports without network or RobustBench.
"""
from art_diffpure.models.classifier import art_classifier
from art_diffpure.models.robustbench import (DATASET_SHAPES, import_robustbench, load_robustbench_model,
                                             robustbench_art_classifier)

__all__ = ["DATASET_SHAPES", "art_classifier", "import_robustbench", "load_robustbench_model",
           "robustbench_art_classifier"]
