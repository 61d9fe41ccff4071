"""
Evaluations of a (purified) ART classifier, built on the attacks: what the numbers mean and whether to trust them.

- :mod:`~art_diffpure.evaluations.aligned`: ``evaluate_aligned`` (attack with a
  :class:`~art_diffpure.RandomnessAlignedAttack`, test under its test randomness, refuse a number when a purified
  row escaped it) and ``evaluate_repeats`` over base seeds; both build the one result type,
  :class:`~art_diffpure.evaluations.result.EvaluationResult`;
- :mod:`~art_diffpure.evaluations.pgd`: one reproducible attack-and-test run (``run_pgd``), randomness-aligned
  when the classifier holds a :class:`~art_diffpure.DiffusionPurifier`;
- :mod:`~art_diffpure.evaluations.robustness_curve`: robust accuracy against eps per randomness mode, beside the
  undefended classifier and the compression-rate prediction;
- :mod:`~art_diffpure.evaluations.gradient_masking`: one small ``check_*`` per gradient-masking diagnostic, and
  the quick checklist ``gradient_masking_diagnostics`` composed of them (gradients measured by
  :mod:`~art_diffpure.evaluations.gradients`);
- :mod:`~art_diffpure.evaluations.statistics`: intervals over images, paired tests, seed-to-seed spreads;
- :mod:`~art_diffpure.evaluations.compatibility`: the matrix of ART attacks x randomness modes (imported on demand);
- :mod:`art_diffpure.evaluations.distributed`: ``torch.distributed`` sharding by sample id (imported on demand;
  its ``torchrun`` entry is :mod:`art_diffpure.commands.distributed`).

The verdicts on the paper's laws and the comparisons of a report read its ``results.json`` keys, so they live with
the report in :mod:`art_diffpure.reproduce`.

Nothing here prints or writes files: every function returns a result object or plain dict.
"""
from art_diffpure.evaluations.aligned import evaluate_aligned, evaluate_repeats
from art_diffpure.evaluations.gradient_masking import (
    DiagnosticCheck,
    DiagnosticsResult,
    MaskingCheck,
    diagnostics_table,
    gradient_masking_diagnostics,
)
from art_diffpure.evaluations.pgd import as_classifier, run_pgd, undefended
from art_diffpure.evaluations.result import EvaluationResult
from art_diffpure.evaluations.robustness_curve import RobustnessCurve, plot_robustness_curve, robustness_curve

__all__ = [
    "DiagnosticCheck",
    "DiagnosticsResult",
    "EvaluationResult",
    "MaskingCheck",
    "RobustnessCurve",
    "as_classifier",
    "diagnostics_table",
    "evaluate_aligned",
    "evaluate_repeats",
    "gradient_masking_diagnostics",
    "plot_robustness_curve",
    "robustness_curve",
    "run_pgd",
    "undefended",
]
