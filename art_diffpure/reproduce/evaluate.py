"""
``art-diffpure evaluate``: a user's own diffusion model, classifier and data under a named ART attack, from the
command line, resumable.

Every input is loaded and checked before any attack runs (:mod:`art_diffpure.models.loading`); a bad one ends the
command with exit status 2 and a message naming the problem and the fix, and nothing is written. The work is cut
into *units*, one batch of samples under one randomness mode and one base seed, each run by
:meth:`RandomnessAlignedAttack.evaluate <art_diffpure.RandomnessAlignedAttack.evaluate>`; every finished unit is
written to ``<out>/parts/`` at once (:class:`~art_diffpure.reproduce.store.RunStore`: atomic, with the settings'
fingerprint). A rerun of the same command says what it found and runs only the rest; every source of randomness of
a unit is seeded from the unit itself (the stochastic mode's generator too), so the final ``results.json`` is
byte-identical to an uninterrupted run's. Wall times go to ``timings.json`` only.

Under ``torchrun`` (or ``--jobs N``, which launches N such processes on this machine) each process takes the
contiguous share of the samples :func:`~art_diffpure.evaluations.distributed.shard_indices` gives it, on batch
boundaries and with global sample ids (so its units are the single-process run's), writes them under
``<out>/shards/rank<r>-of-<N>/`` and resumes from there; rank 0 assembles the report.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import threading
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from art_diffpure.models.loading import InputError
from art_diffpure.reproduce.lifetime import PARENT_PID_ENV, exit_with_parent
from art_diffpure.reproduce.store import (DirectoryInUse, RunMismatch, RunStore, StoreWriteError, atomic_write,
                                          directory_in_use, exit_cleanly_on_sigterm)

if TYPE_CHECKING:  # pragma: no cover
    from art.attacks.attack import EvasionAttack
    from art.estimators.classification import PyTorchClassifier

__all__ = ["ATTACKS", "CliAttack", "add_arguments", "run"]

COMMAND = "art-diffpure evaluate"
#: Base seeds below this: the named test draws of :mod:`art_diffpure.evaluations.draws` then stay below 2**32.
MAX_SEED = 10**9
#: Tag of the seed hash that seeds the purifier's own generator per unit (the stochastic mode's fresh noise).
FRESH_GENERATOR_TAG = 0x5EED
OPTIONS = ("eps", "norm", "max_iter", "step", "restarts", "eot")
FLAGS = {"eps": "--eps", "norm": "--norm", "max_iter": "--max-iter", "step": "--step/--abs-step",
         "restarts": "--restarts", "eot": "--eot"}
NORMS = {"inf": np.inf, "linf": np.inf, "2": 2, "l2": 2, "1": 1, "l1": 1}
REPORT_FILES = ("results.json", "report.md", "timings.json", "robustness.png")


# ---------------------------------------------------------------------------------------------- the attacks
@dataclass(frozen=True)
class CliAttack:
    """An attack the command line offers: the options it takes, its defaults, and how to build it."""

    name: str
    runs: str  # what runs, for --help and the report
    options: tuple[str, ...]
    build: Callable[["PyTorchClassifier", dict[str, Any], int, int], "EvasionAttack"]
    defaults: dict[str, Any] = field(default_factory=dict)
    norms: tuple[str, ...] = ("inf", "2", "1")
    bounded: bool = True  # confined to the eps-ball (robust accuracy at eps); else a minimum-norm attack
    own_draws: bool = False  # draws the purifier's randomness itself (--eot goes to the attack, not the wrapper)


def _art(name: str) -> Any:
    import art.attacks.evasion as evasion

    return getattr(evasion, name)


def _apgd(loss: str) -> Callable:
    return lambda c, o, seed, bs: _art("AutoProjectedGradientDescent")(
        c, norm=o["norm"], eps=o["eps"], eps_step=o["eps_step"], max_iter=o["max_iter"], targeted=False,
        nb_random_init=o["restarts"], batch_size=bs, loss_type=loss, verbose=False)


def _autoattack_rand(c, o, seed, bs):
    from art_diffpure.attacks.autoattack import autoattack_rand

    return autoattack_rand(c, eps=o["eps"], norm=o["norm"], max_iter=o["max_iter"], batch_size=bs)


def _autoattack_standard(c, o, seed, bs):
    from art_diffpure.attacks.autoattack import autoattack_standard

    return autoattack_standard(c, eps=o["eps"], norm=o["norm"], seed=seed, batch_size=bs, n_iter=o["max_iter"],
                               n_queries=50 * o["max_iter"], n_restarts=o["restarts"])


#: Reverse steps of the surrogate-pgd-eot attack's stochastic DDIM surrogate (at most the defence's t*).
SURROGATE_STEPS = 10


def _purification_attack(name: str) -> Callable:
    def build(c, o, seed, bs):
        from art_diffpure.attacks import DiffAttack, DiffHammer, SurrogatePGDEOT

        if name == "diffhammer":
            return DiffHammer(c, eps=o["eps"], max_iter=o["max_iter"], n_draws=o["eot"], seed=seed, batch_size=bs)
        if name == "diffattack":
            return DiffAttack(c, eps=o["eps"], max_iter=o["max_iter"], eot_samples=o["eot"], seed=seed, batch_size=bs)
        from art_diffpure.purifier import find_purifier

        steps = min(SURROGATE_STEPS, find_purifier(c, required=True).t_star)  # never finer than the defence
        return SurrogatePGDEOT(c, eps=o["eps"], max_iter=o["max_iter"], eot_samples=o["eot"], surrogate_steps=steps,
                               seed=seed, batch_size=bs)
    return build


#: The attacks of the compatibility matrix (:mod:`art_diffpure.evaluations.compatibility`) that a command line can
#: configure with eps / norm / iterations / step / restarts / EOT.
ATTACKS: dict[str, CliAttack] = {a.name: a for a in [
    CliAttack("pgd", "ART ProjectedGradientDescent (random start, projected steps)",
              ("eps", "norm", "max_iter", "step", "restarts", "eot"),
              lambda c, o, seed, bs: _art("ProjectedGradientDescent")(
                  c, norm=o["norm"], eps=o["eps"], eps_step=o["eps_step"], max_iter=o["max_iter"],
                  num_random_init=o["restarts"], batch_size=bs, verbose=False),
              dict(max_iter=40, restarts=1)),
    CliAttack("fgsm", "ART FastGradientMethod (one step of size eps)", ("eps", "norm", "restarts", "eot"),
              lambda c, o, seed, bs: _art("FastGradientMethod")(
                  c, norm=o["norm"], eps=o["eps"], eps_step=o["eps"], num_random_init=o["restarts"], batch_size=bs),
              dict(restarts=0)),
    CliAttack("apgd-ce", "ART AutoProjectedGradientDescent, cross-entropy loss",
              ("eps", "norm", "max_iter", "step", "restarts", "eot"), _apgd("cross_entropy"),
              dict(max_iter=100, rel_step=1.0, restarts=1)),
    CliAttack("apgd-dlr", "ART AutoProjectedGradientDescent, difference-of-logits-ratio loss",
              ("eps", "norm", "max_iter", "step", "restarts", "eot"), _apgd("difference_logits_ratio"),
              dict(max_iter=100, rel_step=1.0, restarts=1)),
    CliAttack("autoattack-rand", "ART AutoAttack with APGD-CE and APGD-DLR, EOT through the purifier (DiffPure's)",
              ("eps", "norm", "max_iter", "eot"), _autoattack_rand, dict(max_iter=100, eot=20)),
    CliAttack("autoattack-standard", "fra31 AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square (50 x max-iter "
              "queries)", ("eps", "norm", "max_iter", "restarts"), _autoattack_standard,
              dict(max_iter=100, restarts=1)),
    CliAttack("square", "ART SquareAttack (score-based; max-iter = queries)", ("eps", "norm", "max_iter", "restarts"),
              lambda c, o, seed, bs: _art("SquareAttack")(
                  c, norm=o["norm"], eps=o["eps"], max_iter=o["max_iter"], nb_restarts=o["restarts"], batch_size=bs,
                  verbose=False),
              dict(max_iter=1000, restarts=1), norms=("inf", "2")),
    CliAttack("cw-l2", "ART CarliniL2Method (minimum-norm, no eps)", ("max_iter",),
              lambda c, o, seed, bs: _art("CarliniL2Method")(c, max_iter=o["max_iter"], batch_size=bs, verbose=False),
              dict(max_iter=10), bounded=False),
    CliAttack("deepfool", "ART DeepFool (minimum-norm, no eps)", ("max_iter",),
              lambda c, o, seed, bs: _art("DeepFool")(c, max_iter=o["max_iter"], batch_size=bs, verbose=False),
              dict(max_iter=100), bounded=False),
    CliAttack("diffhammer", "DiffHammer (selective EM over N = --eot draws, gradient grafting, APGD; CW, CE, DLR "
              "restarts)", ("eps", "norm", "max_iter", "eot"), _purification_attack("diffhammer"),
              dict(max_iter=100, eot=10), norms=("inf",), own_draws=True),
    CliAttack("diffattack", "DiffAttack (APGD with EOT, CE then DLR, plus the deviated-reconstruction loss)",
              ("eps", "norm", "max_iter", "eot"), _purification_attack("diffattack"), dict(max_iter=100, eot=20),
              norms=("inf",), own_draws=True),
    CliAttack("surrogate-pgd-eot", "PGD-EOT through a 10-step (at most t*) stochastic DDIM (eta = 1) surrogate of the "
              "purifier",
              ("eps", "norm", "max_iter", "eot"), _purification_attack("surrogate"), dict(max_iter=200, eot=20),
              norms=("inf",), own_draws=True),
]}


# ---------------------------------------------------------------------------------------------- arguments
def _number(text: str) -> float:
    """A float, or a fraction such as ``8/255``."""
    try:
        return float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 0.03 or 8/255)") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``art-diffpure evaluate``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Attack a diffusion-purified classifier of your own and report its robust accuracy with intervals.\n"
        "Example (embedded models, runs anywhere): art-diffpure evaluate --diffusion digits --classifier digits "
        "--data digits --n-images 32 --attack pgd --eps 0.1 --randomness aligned stochastic")
    parser.epilog = "attacks (--attack) and the options each takes:\n" + "\n".join(
        f"  {a.name:20s} {a.runs}\n  {'':20s} takes {', '.join(FLAGS[o] for o in a.options)}" for a in ATTACKS.values())
    m = parser.add_argument_group("models and data")
    m.add_argument("--diffusion", required=True,
                   help="diffusion model: digits (embedded), a local diffusers directory or a hub id")
    m.add_argument("--sampler", default="ddpm", choices=["ddpm", "reverse", "ddim"], help="default: %(default)s")
    m.add_argument("--t-star", type=int, default=100, help="diffusion steps t* (default: %(default)s, DiffPure's 0.1)")
    m.add_argument("--gradient", default="full", choices=["full", "bpda"],
                   help="gradient through the purifier: exact (full) or identity (bpda) (default: %(default)s)")
    m.add_argument("--classifier", required=True,
                   help="classifier on [0, 1] inputs (normalisation inside): digits (embedded), a RobustBench name "
                        "(with --model-dir), module:function (a factory returning a torch.nn.Module; module "
                        "importable or a .py path) or a TorchScript file")
    m.add_argument("--model-dir", default=None, help="RobustBench model directory (<dir>/<dataset>/<threat>/<name>.pt)")
    m.add_argument("--robustbench-dataset", default="cifar10", choices=["cifar10", "cifar100", "imagenet"],
                   help="RobustBench data set of --classifier (default: %(default)s)")
    m.add_argument("--threat-model", default="Linf", help="RobustBench threat model (default: %(default)s)")
    m.add_argument("--data", required=True,
                   help="digits (embedded test split), an .npz with x (float NCHW in [0, 1]) and y, a CIFAR-10 python "
                        "batches directory (test_batch), or an image folder with labels.csv (filename,label)")
    m.add_argument("--n-images", type=int, default=None, help="number of images (default: all from --offset)")
    m.add_argument("--offset", type=int, default=0, help="first image; sample ids are positions in the data")
    a = parser.add_argument_group("attack")
    a.add_argument("--attack", default="pgd", help=f"one of {', '.join(ATTACKS)} (default: %(default)s)")
    a.add_argument("--eps", type=_number, default=None, help="budget, e.g. 8/255 (default: 8/255)")
    a.add_argument("--norm", default=None, help="inf, 2 or 1 (default: inf)")
    a.add_argument("--max-iter", type=int, default=None, help="iterations (queries for square); default per attack")
    step = a.add_mutually_exclusive_group()
    step.add_argument("--step", type=_number, default=None,
                      help="step RELATIVE to eps: eps_step = step * eps (default: pgd (4/3)/max-iter, the package's "
                           "rule; apgd 1)")
    step.add_argument("--abs-step", type=_number, default=None, help="ABSOLUTE step eps_step instead of --step")
    a.add_argument("--restarts", type=int, default=None,
                   help="random starts / restarts (pgd, fgsm: ART num_random_init; apgd, square, autoattack: restarts)")
    a.add_argument("--eot", type=int, default=None, help="EOT samples per gradient (default 1; autoattack-rand 20)")
    a.add_argument("--randomness", nargs="+", default=["aligned"], metavar="MODE",
                   help="one or several of aligned, transfer, stochastic (default: aligned)")
    a.add_argument("--seeds", type=int, nargs="+", default=[0], help="base seeds (default: 0)")
    a.add_argument("--test-draws", type=int, default=0,
                   help="also test every adversarial example under this many independent draws of the purifier's "
                        "noise (mean and worst case over them; default: 0)")
    a.add_argument("--vote", type=int, default=0,
                   help="majority vote of the labels under this many test draws (at most --test-draws; default: 0)")
    r = parser.add_argument_group("run")
    r.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or gpu (default: %(default)s)")
    r.add_argument("--batch-size", type=int, default=32, help="samples per batch, the unit of resume (default: 32)")
    r.add_argument("--jobs", type=int, default=1,
                   help="processes on this machine, each a shard of the samples (as torchrun; default: 1)")
    r.add_argument("--threads", type=int, default=None, help="torch threads per process on the CPU (default: 1)")
    r.add_argument("--out", default="art-diffpure-evaluate", help="output directory (default: %(default)s)")
    r.add_argument("--force", action="store_true", help="discard what --out holds and start fresh")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(_evaluate_parser=parser)


@dataclass
class Plan:
    """The validated attack settings of a run."""

    attack: CliAttack
    options: dict[str, Any]  # resolved: eps, norm, eps_step, rel_step, max_iter, restarts, eot (those it takes)
    modes: list[str]
    seeds: list[int]

    def jsonable_options(self) -> dict[str, Any]:
        out = dict(self.options)
        if "norm" in out:
            out["norm"] = "inf" if np.isinf(out["norm"]) else int(out["norm"])
        return out


def plan_attack(args: argparse.Namespace) -> Plan:
    """The attack and its options from the arguments; an :class:`InputError` for anything it does not take."""
    from art_diffpure.attacks.protocols import rel_step
    from art_diffpure.attacks.randomness_aligned import RANDOMNESS_MODES

    name = args.attack.lower()
    if name not in ATTACKS:
        raise InputError(f"--attack {args.attack}: unknown attack; choose one of {', '.join(ATTACKS)}")
    attack = ATTACKS[name]
    given = {"eps": args.eps, "norm": args.norm, "max_iter": args.max_iter, "restarts": args.restarts,
             "eot": args.eot, "step": args.step if args.step is not None else args.abs_step}
    extra = [o for o in OPTIONS if given[o] is not None and o not in attack.options]
    if extra:
        raise InputError(f"--attack {name} does not take {', '.join(FLAGS[o] for o in extra)}; it takes "
                         f"{', '.join(FLAGS[o] for o in attack.options) or 'none of the attack options'}")
    o: dict[str, Any] = {}
    if "max_iter" in attack.options:
        o["max_iter"] = attack.defaults["max_iter"] if args.max_iter is None else args.max_iter
        if o["max_iter"] < 1:
            raise InputError(f"--max-iter {o['max_iter']}: must be at least 1")
    if "norm" in attack.options:
        norm = "inf" if args.norm is None else str(args.norm).lower()
        if norm not in NORMS or str(int(NORMS[norm]) if np.isfinite(NORMS[norm]) else "inf") not in attack.norms:
            raise InputError(f"--norm {args.norm}: {name} takes --norm {' or '.join(attack.norms)}")
        o["norm"] = NORMS[norm]
    if "eps" in attack.options:
        o["eps"] = 8 / 255 if args.eps is None else float(args.eps)
        if not o["eps"] > 0:
            raise InputError(f"--eps {args.eps}: must be positive")
        if np.isinf(o["norm"]) and o["eps"] >= 1:
            raise InputError(f"--eps {args.eps} with --norm inf covers the whole [0, 1] image range; images are in "
                             f"[0, 1], so give it on that scale (e.g. --eps {args.eps:g}/255)")
    if "step" in attack.options:
        if args.abs_step is not None:
            o["eps_step"], o["rel_step"] = float(args.abs_step), float(args.abs_step) / o["eps"]
        else:
            rel = args.step if args.step is not None else attack.defaults.get("rel_step", None)
            o["rel_step"] = float(rel_step(o["max_iter"]) if rel is None else rel)
            o["eps_step"] = o["rel_step"] * o["eps"]
        if not o["eps_step"] > 0:
            raise InputError("--step/--abs-step: must be positive")
    if "restarts" in attack.options:
        o["restarts"] = attack.defaults["restarts"] if args.restarts is None else args.restarts
        if o["restarts"] < (0 if name in ("pgd", "fgsm") else 1):
            raise InputError(f"--restarts {o['restarts']}: must be at least {0 if name in ('pgd', 'fgsm') else 1} "
                             f"for {name}")
    o["eot"] = attack.defaults.get("eot", 1) if args.eot is None else args.eot
    if o["eot"] < 1:
        raise InputError(f"--eot {o['eot']}: must be at least 1 (1 = no EOT)")
    modes = list(args.randomness)
    bad = [m for m in modes if m not in RANDOMNESS_MODES]
    if bad or len(set(modes)) != len(modes):
        raise InputError(f"--randomness {' '.join(modes)}: give each of {', '.join(RANDOMNESS_MODES)} at most once")
    seeds = list(args.seeds)
    if len(set(seeds)) != len(seeds) or any(s < 0 or s >= MAX_SEED for s in seeds):
        raise InputError(f"--seeds {' '.join(map(str, seeds))}: base seeds must be distinct integers in "
                         f"0..{MAX_SEED - 1}")
    if not 0 <= args.test_draws <= 1000:
        raise InputError(f"--test-draws {args.test_draws}: must be in 0..1000")
    if not 0 <= args.vote <= args.test_draws:
        raise InputError(f"--vote {args.vote}: must be in 0..--test-draws ({args.test_draws}): the vote is over the "
                         "test draws")
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.t_star < 1:
        raise InputError(f"--t-star {args.t_star}: must be at least 1 (and at most the model's number of timesteps)")
    if args.jobs < 1:
        raise InputError(f"--jobs {args.jobs}: must be at least 1")
    if name == "autoattack-standard":
        from art_diffpure.attacks.autoattack import import_fra31

        try:
            import_fra31()
        except ImportError as err:
            raise InputError(f"--attack autoattack-standard: {err}") from None
    return Plan(attack, o, modes, seeds)


# ---------------------------------------------------------------------------------------------- units of work
@dataclass(frozen=True)
class Unit:
    """One batch of samples (positions into the data) under one randomness mode and base seed."""

    mode: str
    seed: int
    positions: tuple[int, ...]
    first_id: int
    last_id: int

    @property
    def name(self) -> str:
        return f"{self.mode} seed {self.seed} samples {self.first_id}-{self.last_id}"


def make_units(plan: Plan, sample_ids: np.ndarray, positions: np.ndarray, batch_size: int) -> list[Unit]:
    """The units over ``positions`` (a contiguous shard starting on a batch boundary), mode-major."""
    out = []
    for mode in plan.modes:
        for seed in plan.seeds:
            for start in range(0, len(positions), batch_size):
                pos = positions[start:start + batch_size]
                out.append(Unit(mode, int(seed), tuple(int(p) for p in pos), int(sample_ids[pos[0]]),
                                int(sample_ids[pos[-1]])))
    return out


def run_unit(unit: Unit, plan: Plan, classifier: "PyTorchClassifier", x: np.ndarray, y: np.ndarray,
             sample_ids: np.ndarray, batch_size: int, test_draws: int) -> dict[str, Any]:
    """
    Attack one unit and test it; the per-sample outcomes, the attack's randomness audit and its configuration
    (no wall times: they go to ``timings.json``).
    """
    from art_diffpure.attacks.randomness_aligned import RandomnessAlignedAttack
    from art_diffpure.evaluations.aligned import evaluate_aligned
    from art_diffpure.evaluations.draws import evaluate_draws
    from art_diffpure.purifier import find_purifier
    from art_diffpure.randomness import seed_hash

    pos = np.asarray(unit.positions)
    xb, yb, ids = x[pos], y[pos], sample_ids[pos]
    purifier = find_purifier(classifier, required=True)
    # The stochastic mode's fresh noise comes from the purifier's own generator: seeded from the unit alone, so
    # a resumed run draws what an uninterrupted one draws.
    purifier.reseed_fresh(seed_hash(unit.seed, unit.first_id, FRESH_GENERATOR_TAG))
    o = plan.options
    attack = RandomnessAlignedAttack(
        classifier, attack=lambda c: plan.attack.build(c, o, unit.seed, batch_size), randomness=unit.mode,
        eot_samples=1 if plan.attack.own_draws else o["eot"], seed=unit.seed, batch_size=batch_size, verbose=False)
    report = evaluate_aligned(attack, xb, yb, sample_ids=ids).to_dict()
    x_adv = attack.last_x_adv
    delta = (x_adv.astype(np.float64) - xb).reshape(len(xb), -1)
    draws = None  # named per-sample test draws: the same draw whatever the batch or shard
    if test_draws:
        draws = evaluate_draws(classifier, x_adv, yb, seed=unit.seed, n_draws=test_draws, vote=test_draws,
                               sample_ids=ids, batch_size=batch_size)
    return {
        "sample_ids": ids.tolist(),
        "labels": yb.tolist(),
        "clean_pred": report["clean_pred"],
        "adv_pred": report["adv_pred"],
        "clean_correct": report["clean_correct"],
        "adv_correct": report["adv_correct"],
        "success": report["success"],
        "attack_seeds": report["attack_seeds"],
        "test_seeds": report["test_seeds"],
        "perturbation_linf": np.abs(delta).max(axis=1).tolist(),
        "perturbation_l2": np.linalg.norm(delta, axis=1).tolist(),
        "test_draws_pred": [] if draws is None else draws.predictions.tolist(),
        "test_draws_seeds": [] if draws is None else draws.seeds,
        "audit": {"samples": [unit.first_id, unit.last_id], "identification": report["identification"],
                  **report["audit"]},
        "config": report["config"],
    }


# ---------------------------------------------------------------------------------------------- assembly
def assemble(plan: Plan, units: Sequence[Unit], parts: dict[str, dict[str, Any]], n: int,
             test_draws: int, vote: int = 0) -> dict[str, Any]:
    """The ``runs`` (mode -> seed -> per-sample lists in data order, audits, config) and their summaries."""
    from art_diffpure.evaluations import statistics
    from art_diffpure.evaluations.draws import DrawEvaluation

    per_sample = ("sample_ids", "labels", "clean_pred", "adv_pred", "clean_correct", "adv_correct", "success",
                  "attack_seeds", "test_seeds", "perturbation_linf", "perturbation_l2")
    runs: dict[str, dict[str, Any]] = {}
    for mode in plan.modes:
        runs[mode] = {}
        for seed in plan.seeds:
            mine = [u for u in units if u.mode == mode and u.seed == seed]
            run: dict[str, Any] = {k: [] for k in per_sample}
            draws = [[] for _ in range(test_draws)]
            audits = []
            for u in mine:
                part = parts[u.name]
                for k in per_sample:
                    run[k].extend(part[k])
                for k in range(test_draws):
                    draws[k].extend(part["test_draws_pred"][k])
                audits.append(part["audit"])
            assert len(run["sample_ids"]) == n, (mode, seed, len(run["sample_ids"]), n)
            run["clean_accuracy"] = float(np.mean(run["clean_correct"]))
            run["robust_accuracy"] = float(np.mean(run["adv_correct"]))
            labels = np.asarray(run["labels"])
            run["test_draws"] = {"seeds": parts[mine[0].name]["test_draws_seeds"], "adv_pred": draws,
                                 "adv_correct": (np.asarray(draws, dtype=np.int64).reshape(test_draws, n)
                                                 == labels).tolist()}
            run["audit"] = audits
            run["audit_ok"] = all(a["attack"]["ok"] and a["test"]["ok"] for a in audits)
            run["config"] = parts[mine[0].name]["config"]
            runs[mode][str(seed)] = run
    summary: dict[str, Any] = {}
    for mode, by_seed in runs.items():
        seeds = [by_seed[str(s)] for s in plan.seeds]
        clean = np.asarray([r["clean_correct"] for r in seeds], dtype=bool)
        adv = np.asarray([r["adv_correct"] for r in seeds], dtype=bool)
        entry = {"clean": statistics.seed_summary(clean).to_dict(), "robust": statistics.seed_summary(adv).to_dict(),
                 "audit_ok": all(r["audit_ok"] for r in seeds),
                 "rows_purified": sum(a["attack"]["rows_purified"] + a["test"]["rows_purified"]
                                      for r in seeds for a in r["audit"]),
                 "median_perturbation_l2": float(np.median([r["perturbation_l2"] for r in seeds])),
                 "max_perturbation_linf": float(np.max([r["perturbation_linf"] for r in seeds]))}
        if test_draws:
            d = np.asarray([r["test_draws"]["adv_correct"] for r in seeds], dtype=bool)  # (seeds, draws, n)
            entry["test_draws"] = {
                "n_draws": test_draws, "n_images": n,
                "mean_over_draws": statistics.bootstrap_interval(d.mean(axis=(0, 1))).to_dict(),
                "worst_case": statistics.seed_summary(d.all(axis=1)).to_dict()}
            if vote:
                voted = [DrawEvaluation(np.asarray(r["test_draws"]["adv_pred"], dtype=np.int64), np.asarray(r["labels"]),
                                        r["test_draws"]["seeds"], test_draws, vote).per_image()["majority_vote"]
                         for r in seeds]
                entry["test_draws"]["majority_vote"] = dict(statistics.seed_summary(np.asarray(voted)).to_dict(),
                                                            vote=vote)
        summary[mode] = entry
    comparisons = {}
    for i, a in enumerate(plan.modes):
        for b in plan.modes[i + 1:]:
            ca = [runs[a][str(s)]["adv_correct"] for s in plan.seeds]
            cb = [runs[b][str(s)]["adv_correct"] for s in plan.seeds]
            comparisons[f"{a} - {b}"] = statistics.paired_difference(ca, cb).to_dict()
    return {"runs": runs, "summary": summary, "comparisons": comparisons}


def versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers."""
    import art
    import diffusers
    import torch

    import art_diffpure

    return {"art_diffpure": art_diffpure.__version__, "adversarial-robustness-toolbox": art.__version__,
            "torch": torch.__version__, "diffusers": diffusers.__version__, "numpy": np.__version__}


def markdown(results: dict[str, Any]) -> str:
    """``report.md``: one row per randomness mode, accuracies with their 95% intervals over images."""
    from art_diffpure.reproduce import render as rp

    s = results["settings"]
    o = s["attack_options"]
    attack = ATTACKS[s["attack"]]
    lines = [f"# {COMMAND}: {s['attack']} against {s['classifier']} behind {s['diffusion']}", "",
             f"- data: {s['data']}, {s['n_images']} images from offset {s['offset']} (sample ids "
             f"{s['offset']}..{s['offset'] + s['n_images'] - 1}; sha256 {s['data_sha256']})",
             f"- purifier: sampler {s['sampler']}, t* = {s['t_star']}, gradient {s['gradient']}",
             f"- attack: {attack.runs}; " + ", ".join(f"{k} = {v:.6g}" if isinstance(v, float) else f"{k} = {v}"
                                                      for k, v in sorted(o.items())),
             f"- randomness modes: {', '.join(s['randomness'])}; base seeds {', '.join(map(str, s['seeds']))}; batch "
             f"size {s['batch_size']}; device {s['device']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()), ""]
    if not attack.bounded:
        lines += [f"{s['attack']} is a minimum-norm attack: its examples are not confined to an eps-ball, so the "
                  "robust accuracy below is the accuracy on its examples whatever their size; read it with their "
                  "median L2 perturbation.", ""]
    header = ["randomness", "clean accuracy [95% CI]", "robust accuracy [95% CI]", "max Linf", "median L2",
              "audit"]
    draws = any("test_draws" in v for v in results["summary"].values())
    voted = any("majority_vote" in v.get("test_draws", {}) for v in results["summary"].values())
    if draws:
        header[4:4] = ["mean over test draws [95% CI]", "worst case over draws [95% CI]"]
    if voted:
        header[6:6] = ["majority vote [95% CI]"]
    rows = []
    for mode, v in results["summary"].items():
        row = [mode, rp.fmt_accuracy(v["clean"]), rp.fmt_accuracy(v["robust"]), rp.fmt(v["max_perturbation_linf"], 4),
               rp.fmt(v["median_perturbation_l2"], 4),
               f"ok ({v['rows_purified']} rows)" if v["audit_ok"] else "NOT OK (see results.json)"]
        if draws:
            t = v["test_draws"]
            row[4:4] = [f"{100 * t['mean_over_draws']['estimate']:.1f}% "
                        f"{rp.fmt_interval(t['mean_over_draws'], percent=True)}", rp.fmt_accuracy(t["worst_case"])]
            if voted:
                row[6:6] = [rp.fmt_accuracy(t["majority_vote"])]
        rows.append(row)
    lines += [rp.table(header, rows), "",
              "Intervals are over images: Wilson for one seed, else the percentile bootstrap over images of each "
              "image's mean over seeds; the seed sd (several seeds) is the seed-to-seed spread. The audit counts "
              "every row the purifier saw under the intended randomness (per batch in results.json)."]
    if draws:
        lines += ["", f"Test draws: every adversarial example is also classified under N = {s['test_draws']} named "
                  "draws of the purifier's noise per sample (base seed s + 3000000019 + k, never an attack draw; "
                  f"n = {s['n_images']} images); worst case = correct under every draw"
                  + (f"; majority vote = the most frequent label of the first K = {s['vote']} draws." if voted else ".")]
    if results["comparisons"]:
        lines += ["", "## Paired differences of robust accuracy (same images)", "",
                  rp.table(["modes", "difference [95% CI]", "exact McNemar p (first seed)", "p per seed"],
                           [[k, f"{100 * v['difference']['estimate']:+.1f} points "
                                f"{rp.fmt_interval(v['difference'], percent=True, signed=True)}",
                             rp.fmt(v["test"]["p_value"], 3),
                             ", ".join(rp.fmt(t["p_value"], 3) for t in v.get("tests_per_seed") or []) or "–"]
                            for k, v in results["comparisons"].items()]),
                  "", "The difference is of the seed-mean accuracies (paired bootstrap over images); McNemar tests one "
                      "seed pair at a time, since seeds re-use the same images."]
    lines += ["", "![robust accuracy per randomness mode](robustness.png)", ""]
    return "\n".join(lines)


def figure(results: dict[str, Any], out: str) -> str:
    """``robustness.png``: robust (and clean) accuracy per randomness mode with the 95% intervals."""
    from art_diffpure.reproduce import render as rp

    summary = results["summary"]
    modes = list(summary)
    fig, ax = rp.new_figure()
    pos = np.arange(len(modes))
    for key, offset, label in (("clean", -0.2, "clean"), ("robust", 0.2, "robust")):
        est = np.array([summary[m][key]["mean"] for m in modes])
        low = np.array([summary[m][key]["interval"]["low"] for m in modes])
        high = np.array([summary[m][key]["interval"]["high"] for m in modes])
        ax.bar(pos + offset, est, width=0.38, yerr=[est - low, high - est], capsize=4, label=label)
    ax.set_xticks(pos, modes)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (95% CI over images)")
    s = results["settings"]
    ax.set_title(f"{s['attack']}, t* = {s['t_star']}, {s['n_images']} images")
    ax.legend()
    return rp.save_figure(fig, out, "robustness.png")


# ---------------------------------------------------------------------------------------------- the command
def _json_bytes(obj: Any) -> bytes:
    """Sorted, indented JSON (non-finite floats as null): identical results give identical bytes."""
    from art_diffpure._utils import to_jsonable

    return (json.dumps(to_jsonable(obj), indent=1, sort_keys=True) + "\n").encode()


def _say(rank: int, text: str) -> None:
    if rank == 0:
        print(text, flush=True)


def _store_exists(out: str) -> bool:
    return any(os.path.exists(os.path.join(out, n)) for n in ("run.json", "results.json", "parts", "shards"))


def _open_stores(args, settings: dict[str, Any], rank: int, world: int) -> tuple[RunStore, RunStore]:
    """The run's store at ``out`` (made by rank 0; the others wait for it) and this process's shard store."""
    from art_diffpure.evaluations.distributed import _dist

    error = None
    top = None
    if rank == 0:
        try:
            if args.force:
                shutil.rmtree(os.path.join(args.out, "shards"), ignore_errors=True)
                if os.path.exists(os.path.join(args.out, "robustness.png")):
                    os.remove(os.path.join(args.out, "robustness.png"))
            top = RunStore(args.out, settings, force=args.force, command=COMMAND)
        except RunMismatch as err:
            error = str(err)
    if world > 1:
        flags: list = [None] * world
        _dist().all_gather_object(flags, error)
        error = flags[0]
        if error is None and rank != 0:
            top = RunStore(args.out, settings, command=COMMAND)  # the manifest exists now: a check, no write
    if error is not None:
        raise RunMismatch(error)
    if world == 1:
        return top, top
    shard = RunStore(os.path.join(args.out, "shards", f"rank{rank}-of-{world}"), dict(settings, shard=[rank, world]),
                     command=COMMAND)
    return top, shard


def _launch_jobs(args) -> int:
    """``--jobs N``: run N processes of this command on this machine, as torchrun would (gloo on the CPU)."""
    argv: list[str] = []  # this command line again, from the parsed arguments
    for action in args._evaluate_parser._actions:
        if not action.option_strings or action.dest in ("help", "jobs"):
            continue
        value, flag = getattr(args, action.dest, None), action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            argv += [flag] if value else []
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        elif value is not None:
            argv += [flag, str(value)]
    with socket.socket() as sock:  # a free port for the process group's rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in range(args.jobs):
        env = dict(os.environ, WORLD_SIZE=str(args.jobs), RANK=str(rank), LOCAL_RANK=str(rank),
                   LOCAL_WORLD_SIZE=str(args.jobs), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   **{PARENT_PID_ENV: str(os.getpid())})
        procs.append(subprocess.Popen([sys.executable, "-m", "art_diffpure.cli", "evaluate", *argv], env=env))
    codes = [p.wait() for p in procs]
    return next((c for c in codes if c), 0)


def run(args: argparse.Namespace) -> int:
    """Run ``art-diffpure evaluate``; the exit status (2 for bad input or an output directory of another run)."""
    launched = False
    if threading.current_thread() is threading.main_thread():
        exit_cleanly_on_sigterm()  # SIGTERM ends through finally blocks (claims released), as Ctrl-C does
    try:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a rank: the launcher (or torchrun) holds the directory
            if os.environ.get(PARENT_PID_ENV):
                exit_with_parent()
            code, launched = _evaluate(args)
            return code
        with directory_in_use(args.out, COMMAND):
            if args.jobs > 1:
                plan_attack(args)  # bad options fail once, here, not in every process
                return _launch_jobs(args)
            code, launched = _evaluate(args)
            return code
    except (InputError, RunMismatch, DirectoryInUse) as err:
        print(f"{COMMAND}: error: {err}", file=sys.stderr)
        return 2
    except StoreWriteError as err:
        print(f"{COMMAND}: error: {err}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit) as stop:  # Ctrl-C, or SIGTERM through exit_cleanly_on_sigterm
        print(f"{COMMAND}: stopped; rerun the same command to resume from what {args.out} holds", file=sys.stderr)
        return 130 if isinstance(stop, KeyboardInterrupt) else int(stop.code or 143)
    finally:
        if launched:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _evaluate(args) -> tuple[int, bool]:
    import torch

    from art_diffpure.evaluations.distributed import _dist, _init_from_env, rank_and_world, shard_indices
    from art_diffpure.models import loading
    from art_diffpure.models.classifier import art_classifier

    t_start = time.perf_counter()
    plan = plan_attack(args)
    device = loading.torch_device(args.device)
    if device == "cpu":
        torch.set_num_threads(args.threads or 1)  # see the README: one thread is fastest on a shared CPU
    elif args.threads:
        torch.set_num_threads(args.threads)
    try:
        launched = _init_from_env(None, "cpu" if device == "cpu" else "gpu")
    except RuntimeError as err:  # e.g. more processes than GPUs
        raise InputError(f"--jobs / torchrun: {err}") from None
    rank, world = rank_and_world()
    if launched and device != "cpu":
        device = f"cuda:{torch.cuda.current_device()}"  # this rank's GPU, bound by _init_from_env

    data = loading.load_data(args.data, args.n_images, args.offset)
    settings = {
        "diffusion": args.diffusion, "sampler": args.sampler, "t_star": args.t_star, "gradient": args.gradient,
        "classifier": args.classifier, "model_dir": args.model_dir, "robustbench_dataset": args.robustbench_dataset,
        "threat_model": args.threat_model, "data": args.data, "n_images": int(len(data.x)), "offset": args.offset,
        "data_sha256": data.sha256(), "attack": plan.attack.name, "attack_options": plan.jsonable_options(),
        "randomness": plan.modes, "seeds": plan.seeds, "test_draws": args.test_draws, "vote": args.vote, "batch_size": args.batch_size,
        "device": "cpu" if device == "cpu" else "cuda",
    }
    if not args.force and _store_exists(args.out):  # a run of other settings: say so before loading any model
        RunStore(args.out, settings, command=COMMAND)
    purifier = loading.load_diffusion(args.diffusion, t_star=args.t_star, sampler=args.sampler,
                                      gradient=args.gradient, device=device, batch_size=args.batch_size)
    model = loading.load_classifier(args.classifier, args.model_dir, args.robustbench_dataset, args.threat_model,
                                    device)
    classes = loading.check_compatible(data, purifier, model, device)
    classifier = art_classifier(model, data.x.shape[1:], classes, purifier=purifier,
                                device_type="cpu" if device == "cpu" else "gpu")
    t_loaded = time.perf_counter()

    top, shard = _open_stores(args, settings, rank, world)
    if top.report_finished():
        _say(rank, f"{args.out} holds the finished report of this run (results.json); nothing to do. Rerun with "
                   "--force to recompute it, or choose another --out.")
        return 0, launched
    n = len(data.x)
    positions = shard_indices(n, rank, world, args.batch_size)
    units = make_units(plan, data.sample_ids, positions, args.batch_size)
    parts: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for u in units:
        found = top.load(u.name) or (shard.load(u.name) if shard is not top else None)
        if found is not None:
            parts[u.name], seconds[u.name] = found
    found_names = [u.name for u in units if u.name in parts]
    where = f"{args.out}" + (f" (shard {rank} of {world})" if world > 1 else "")
    if found_names:
        shown = ", ".join(found_names[:4]) + (f", ... ({len(found_names) - 4} more)" if len(found_names) > 4 else "")
        print(f"{where}: found {len(found_names)} of {len(units)} finished units ({shown}); running the other "
              f"{len(units) - len(found_names)}", flush=True)
    else:
        _say(rank, f"{COMMAND}: {n} images, {len(plan.modes)} mode(s) x {len(plan.seeds)} seed(s) x "
                   f"{-(-n // args.batch_size)} batch(es) of {args.batch_size}; units are written to {args.out}")

    from tqdm.auto import tqdm

    store_s = 0.0  # time spent writing the units: the cost of resumability
    todo = [u for u in units if u.name not in parts]
    with tqdm(total=len(units), initial=len(units) - len(todo), desc=f"{COMMAND} {plan.attack.name}", unit="batch",
              disable=args.no_progress or rank != 0, file=sys.stderr) as bar:
        for u in todo:
            t0 = time.perf_counter()
            parts[u.name] = run_unit(u, plan, classifier, data.x, data.y, data.sample_ids, args.batch_size,
                                     args.test_draws)
            seconds[u.name] = time.perf_counter() - t0
            t1 = time.perf_counter()
            shard.save(u.name, parts[u.name], seconds[u.name])
            store_s += time.perf_counter() - t1
            bar.set_postfix_str(u.name, refresh=False)
            bar.update(1)

    if world > 1:  # rank 0 reads the other shards once every rank has finished
        _dist().barrier()
        if rank == 0:
            for r in range(1, world):
                other = RunStore(os.path.join(args.out, "shards", f"rank{r}-of-{world}"),
                                 dict(settings, shard=[r, world]), command=COMMAND)
                for u in make_units(plan, data.sample_ids, shard_indices(n, r, world, args.batch_size),
                                    args.batch_size):
                    loaded = other.load(u.name) or top.load(u.name)
                    if loaded is None:
                        raise RuntimeError(f"rank {r} finished without writing {u.name}")
                    parts[u.name], seconds[u.name] = loaded
    if rank != 0:
        _dist().barrier()
        return 0, launched

    t1 = time.perf_counter()
    all_units = make_units(plan, data.sample_ids, np.arange(n), args.batch_size)
    results = {"command": COMMAND, "settings": settings, "versions": versions(),
               **assemble(plan, all_units, parts, n, args.test_draws, args.vote)}
    figure(results, args.out)
    atomic_write(os.path.join(args.out, "report.md"), markdown(results).encode())
    blob = _json_bytes(results)
    compute_s = sum(seconds[u.name] for u in todo)
    timings = {"units_s": {u.name: seconds[u.name] for u in all_units}, "found": found_names,
               "computed": [u.name for u in todo], "load_s": t_loaded - t_start, "world_size": world,
               "compute_s": compute_s, "store_write_s": store_s, "report_s": time.perf_counter() - t1,
               "store_write_percent": 100 * store_s / compute_s if compute_s > 0 else None,
               "total_s": time.perf_counter() - t_start}
    atomic_write(os.path.join(args.out, "timings.json"), _json_bytes(timings))
    atomic_write(os.path.join(args.out, "results.json"), blob)  # last: its presence marks a finished report
    if world > 1:
        _dist().barrier()
    lines = [f"{m}: clean {100 * v['clean']['mean']:.1f}%, robust {100 * v['robust']['mean']:.1f}% "
             f"[{100 * v['robust']['interval']['low']:.1f}, {100 * v['robust']['interval']['high']:.1f}]"
             for m, v in results["summary"].items()]
    print(f"wrote {os.path.join(args.out, 'report.md')}, results.json, robustness.png: " + "; ".join(lines),
          flush=True)
    return 0, launched
