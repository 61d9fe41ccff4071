"""``art-diffpure reproduce``: the paper's experiments per preset, collected into a report directory.

The experiments are generic over a :class:`Setting` (classifier, purifier factory, images, attack
budget); presets only differ in how they load those and in their sizes:

- ``digits`` (default): the embedded models on scikit-learn's digits; runs anywhere, offline.
- ``cifar10``: the paper's setup (google/ddpm-cifar10-32, RobustBench ``Standard`` WRN-28-10, the
  first 1000 CIFAR-10 test images); needs the weights, the data and a GPU.
- ``imagenet``: guided-diffusion 256x256 (converted with ``art-diffpure convert-adm``), RobustBench
  ``Standard_R50``, the first 200 validation images, BPDA; needs the weights, the data and a GPU.

Every number goes to ``results.json`` (timings apart, in ``timings.json``, so that two runs with the
same arguments give identical ``results.json``), tables to ``report.md`` and figures to PNG files.

Modules, from the bottom of the import graph up (each imports only those before it):
:mod:`~art_diffpure.reproduce.presets` (sizes, settings, the presets), :mod:`~art_diffpure.reproduce.jobs` (the
independent experiments and the process pool that runs them), :mod:`~art_diffpure.reproduce.experiments` (one
function per table), :mod:`~art_diffpure.reproduce.paper` (the paper's numbers),
:mod:`~art_diffpure.reproduce.sections` and :mod:`~art_diffpure.reproduce.markdown` (``report.md``),
:mod:`~art_diffpure.reproduce.figures` (the PNG files) and :mod:`~art_diffpure.reproduce.run` (the only module that
writes files or prints).
"""
from __future__ import annotations

from art_diffpure.reproduce.experiments import run_experiments, run_imagenet_experiments
from art_diffpure.reproduce.presets import (
    DIGITS_DEFAULT, DIGITS_QUICK, DIGITS_SMOKE, PresetUnavailable, Setting, Sizes, build_setting, digits_setting,
    rel_step,
)
from art_diffpure.reproduce.run import rejudge, run_preset, write_report

__all__ = ["DIGITS_DEFAULT", "DIGITS_QUICK", "DIGITS_SMOKE", "PresetUnavailable", "Setting", "Sizes", "build_setting",
           "digits_setting", "rejudge", "rel_step", "run_experiments", "run_imagenet_experiments", "run_preset",
           "write_report"]
