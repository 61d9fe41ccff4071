"""
``art-diffpure evaluate``: a user's own diffusion model, classifier and data under a named attack
(:data:`~art_diffpure.attacks.registry.ATTACKS`), from the command line, resumable.

Every input is loaded and checked before any attack runs (:mod:`art_diffpure.commands.inputs`); a bad one ends the
command with exit status 2 and a message naming the problem and the fix, and nothing is written. The work is cut
into *units*, one batch of samples under one randomness mode and one base seed, each run by
:func:`~art_diffpure.reproduce.evaluation.run_unit`; every finished unit is
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
import sys
import threading
import time
from fractions import Fraction
from typing import Any

import numpy as np

from art_diffpure._utils import parse_norm
from art_diffpure.attacks.registry import ATTACKS, OPTIONS
from art_diffpure.commands._common import stopped
from art_diffpure.commands.inputs import InputError
from art_diffpure.reproduce.evaluation import (COMMAND, Plan, assemble, figure, make_units, markdown, run_unit,
                                               versions)
from art_diffpure.randomness import MAX_SEED
from art_diffpure.samplers import SAMPLERS
from art_diffpure.reproduce.lifetime import PARENT_PID_ENV, exit_with_parent
from art_diffpure.reproduce.store import (DirectoryInUse, RunMismatch, RunStore, StoreWriteError, atomic_write,
                                          directory_in_use, exit_cleanly_on_sigterm)

__all__ = ["add_arguments", "plan_attack", "register", "run"]

FLAGS = {"eps": "--eps", "norm": "--norm", "max_iter": "--max-iter", "step": "--rel-step/--eps-step",
         "restarts": "--restarts", "eot": "--eot"}


# ---------------------------------------------------------------------------------------------- arguments
def _number(text: str) -> float:
    """A float, or a fraction such as ``8/255``."""
    try:
        return float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 0.03 or 8/255)") from None


def register(sub) -> None:
    """The ``evaluate`` sub-command."""
    parser = sub.add_parser("evaluate", help="attack your own diffusion model + classifier on your data (resumable)")
    add_arguments(parser)
    parser.set_defaults(run=run)


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
    m.add_argument("--sampler", default="ddpm", choices=list(SAMPLERS), help="default: %(default)s")
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
    step.add_argument("--rel-step", type=_number, default=None,
                      help="step relative to eps: eps_step = rel-step * eps (default: pgd (4/3)/max-iter, the "
                           "package's rule; apgd 1)")
    step.add_argument("--eps-step", type=_number, default=None, help="absolute step eps_step instead of --rel-step")
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


def _norm_flag(norm: float) -> str:
    """A norm as ``--norm`` spells it: inf, 2 or 1."""
    return "inf" if np.isinf(norm) else str(int(norm))


def plan_attack(args: argparse.Namespace) -> Plan:
    """The attack and its options from the arguments; an :class:`InputError` for anything it does not take."""
    from art_diffpure.attacks.protocols import rel_step
    from art_diffpure.attacks.randomness_aligned import RANDOMNESS_MODES

    name = args.attack.lower()
    if name not in ATTACKS:
        raise InputError(f"--attack {args.attack}: unknown attack; choose one of {', '.join(ATTACKS)}")
    attack = ATTACKS[name]
    given = {"eps": args.eps, "norm": args.norm, "max_iter": args.max_iter, "restarts": args.restarts,
             "eot": args.eot, "step": args.rel_step if args.rel_step is not None else args.eps_step}
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
        try:
            norm = parse_norm("inf" if args.norm is None else args.norm)
        except ValueError:
            norm = None
        if norm not in attack.norms:
            raise InputError(f"--norm {args.norm}: {name} takes --norm {' or '.join(map(_norm_flag, attack.norms))}")
        o["norm"] = norm
    if "eps" in attack.options:
        o["eps"] = 8 / 255 if args.eps is None else float(args.eps)
        if not o["eps"] > 0:
            raise InputError(f"--eps {args.eps}: must be positive")
        if np.isinf(o["norm"]) and o["eps"] >= 1:
            raise InputError(f"--eps {args.eps} with --norm inf covers the whole [0, 1] image range; images are in "
                             f"[0, 1], so give it on that scale (e.g. --eps {args.eps:g}/255)")
    if "step" in attack.options:
        if args.eps_step is not None:
            o["eps_step"], o["rel_step"] = float(args.eps_step), float(args.eps_step) / o["eps"]
        else:
            rel = args.rel_step if args.rel_step is not None else attack.defaults.get("rel_step", None)
            o["rel_step"] = float(rel_step(o["max_iter"]) if rel is None else rel)
            o["eps_step"] = o["rel_step"] * o["eps"]
        if not o["eps_step"] > 0:
            raise InputError("--rel-step/--eps-step: must be positive")
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
        procs.append(subprocess.Popen([sys.executable, "-m", "art_diffpure.commands", "evaluate", *argv], env=env))
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
        return stopped(COMMAND, stop, args.out)
    finally:
        if launched:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _start_process(args) -> tuple[str, bool, int, int]:
    """This process's torch threads, process group and device: ``(device, launched, rank, world)``."""
    import torch

    from art_diffpure.commands import inputs
    from art_diffpure.evaluations.distributed import init_from_env, rank_and_world

    device = inputs.torch_device(args.device)
    if device == "cpu":
        torch.set_num_threads(args.threads or 1)  # one thread is fastest on a shared CPU (docs/install.md)
    elif args.threads:
        torch.set_num_threads(args.threads)
    try:
        launched = init_from_env(None, "cpu" if device == "cpu" else "gpu")
    except RuntimeError as err:  # e.g. more processes than GPUs
        raise InputError(f"--jobs / torchrun: {err}") from None
    rank, world = rank_and_world()
    if launched and device != "cpu":
        device = f"cuda:{torch.cuda.current_device()}"  # this rank's GPU, bound by init_from_env
    return device, launched, rank, world


def _settings(args, plan: Plan, data, device: str) -> dict[str, Any]:
    """What decides the results: a rerun with other settings is refused (or started fresh with --force)."""
    return {
        "diffusion": args.diffusion, "sampler": args.sampler, "t_star": args.t_star, "gradient": args.gradient,
        "classifier": args.classifier, "model_dir": args.model_dir, "robustbench_dataset": args.robustbench_dataset,
        "threat_model": args.threat_model, "data": args.data, "n_images": int(len(data.x)), "offset": args.offset,
        "data_sha256": data.sha256(), "attack": plan.attack.name, "attack_options": plan.jsonable_options(),
        "randomness": plan.modes, "seeds": plan.seeds, "test_draws": args.test_draws, "vote": args.vote,
        "batch_size": args.batch_size, "device": "cpu" if device == "cpu" else "cuda",
    }


def _classifier(args, data, device: str):
    """The user's purifier and classifier as one ART classifier, checked against the data."""
    from art_diffpure.commands import inputs
    from art_diffpure.models.classifier import art_classifier

    purifier = inputs.load_diffusion(args.diffusion, t_star=args.t_star, sampler=args.sampler,
                                     gradient=args.gradient, device=device, batch_size=args.batch_size)
    model = inputs.load_classifier(args.classifier, args.model_dir, args.robustbench_dataset, args.threat_model,
                                   device)
    classes = inputs.check_compatible(data, purifier, model, device)
    return art_classifier(model, data.x.shape[1:], classes, purifier=purifier,
                          device_type="cpu" if device == "cpu" else "gpu")


def _found(args, units, top: RunStore, shard: RunStore, rank: int, world: int):
    """The finished units on disk: ``(parts, seconds, names found)``; says what it found."""
    parts: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for u in units:
        found = top.load(u.name) or (shard.load(u.name) if shard is not top else None)
        if found is not None:
            parts[u.name], seconds[u.name] = found
    names = [u.name for u in units if u.name in parts]
    where = f"{args.out}" + (f" (shard {rank} of {world})" if world > 1 else "")
    if names:
        shown = ", ".join(names[:4]) + (f", ... ({len(names) - 4} more)" if len(names) > 4 else "")
        print(f"{where}: found {len(names)} of {len(units)} finished units ({shown}); running the other "
              f"{len(units) - len(names)}", flush=True)
    return parts, seconds, names


def _compute(args, plan: Plan, todo, total: int, classifier, data, shard: RunStore, parts, seconds,
             rank: int) -> float:
    """Run the units not on disk, saving each at once; returns the seconds spent writing them."""
    from tqdm.auto import tqdm

    store_s = 0.0  # time spent writing the units: the cost of resumability
    with tqdm(total=total, initial=total - len(todo), desc=f"{COMMAND} {plan.attack.name}", unit="batch",
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
    return store_s


def _gather_shards(args, plan: Plan, data, settings, top: RunStore, parts, seconds, world: int) -> None:
    """Rank 0: the other ranks' units, read from their shard stores once every rank has finished."""
    from art_diffpure.evaluations.distributed import shard_indices

    n = len(data.x)
    for r in range(1, world):
        other = RunStore(os.path.join(args.out, "shards", f"rank{r}-of-{world}"), dict(settings, shard=[r, world]),
                         command=COMMAND)
        for u in make_units(plan, data.sample_ids, shard_indices(n, r, world, args.batch_size), args.batch_size):
            loaded = other.load(u.name) or top.load(u.name)
            if loaded is None:
                raise RuntimeError(f"rank {r} finished without writing {u.name}")
            parts[u.name], seconds[u.name] = loaded


def _write_report(args, plan: Plan, settings, data, parts, seconds, found: list[str], todo, store_s: float,
                  times: dict[str, float], world: int) -> None:
    """report.md, robustness.png, timings.json and, last, results.json (its presence marks a finished report)."""
    t1 = time.perf_counter()
    n = len(data.x)
    all_units = make_units(plan, data.sample_ids, np.arange(n), args.batch_size)
    results = {"command": COMMAND, "settings": settings, "versions": versions(),
               **assemble(plan, all_units, parts, n, args.test_draws, args.vote)}
    figure(results, args.out)
    atomic_write(os.path.join(args.out, "report.md"), markdown(results).encode())
    blob = _json_bytes(results)
    compute_s = sum(seconds[u.name] for u in todo)
    timings = {"units_s": {u.name: seconds[u.name] for u in all_units}, "found": found,
               "computed": [u.name for u in todo], "load_s": times["loaded"] - times["start"], "world_size": world,
               "compute_s": compute_s, "store_write_s": store_s, "report_s": time.perf_counter() - t1,
               "store_write_percent": 100 * store_s / compute_s if compute_s > 0 else None,
               "total_s": time.perf_counter() - times["start"]}
    atomic_write(os.path.join(args.out, "timings.json"), _json_bytes(timings))
    atomic_write(os.path.join(args.out, "results.json"), blob)
    lines = [f"{m}: clean {100 * v['clean']['mean']:.1f}%, robust {100 * v['robust']['mean']:.1f}% "
             f"[{100 * v['robust']['interval']['low']:.1f}, {100 * v['robust']['interval']['high']:.1f}]"
             for m, v in results["summary"].items()]
    print(f"wrote {os.path.join(args.out, 'report.md')}, results.json, robustness.png: " + "; ".join(lines),
          flush=True)


def _evaluate(args) -> tuple[int, bool]:
    """The command's work in this process: ``(exit status, whether it started a process group)``."""
    from art_diffpure.commands import inputs
    from art_diffpure.evaluations.distributed import _dist, shard_indices

    times = {"start": time.perf_counter()}
    plan = plan_attack(args)
    device, launched, rank, world = _start_process(args)
    data = inputs.load_data(args.data, args.n_images, args.offset)
    settings = _settings(args, plan, data, device)
    if not args.force and _store_exists(args.out):  # a run of other settings: say so before loading any model
        RunStore(args.out, settings, command=COMMAND)
    classifier = _classifier(args, data, device)
    times["loaded"] = time.perf_counter()

    top, shard = _open_stores(args, settings, rank, world)
    if top.report_finished():
        _say(rank, f"{args.out} holds the finished report of this run (results.json); nothing to do. Rerun with "
                   "--force to recompute it, or choose another --out.")
        return 0, launched
    n = len(data.x)
    units = make_units(plan, data.sample_ids, shard_indices(n, rank, world, args.batch_size), args.batch_size)
    parts, seconds, found = _found(args, units, top, shard, rank, world)
    if not found:
        _say(rank, f"{COMMAND}: {n} images, {len(plan.modes)} mode(s) x {len(plan.seeds)} seed(s) x "
                   f"{-(-n // args.batch_size)} batch(es) of {args.batch_size}; units are written to {args.out}")
    todo = [u for u in units if u.name not in parts]
    store_s = _compute(args, plan, todo, len(units), classifier, data, shard, parts, seconds, rank)
    if world > 1:
        _dist().barrier()
        if rank == 0:
            _gather_shards(args, plan, data, settings, top, parts, seconds, world)
    if rank != 0:
        _dist().barrier()
        return 0, launched
    _write_report(args, plan, settings, data, parts, seconds, found, todo, store_s, times, world)
    if world > 1:
        _dist().barrier()
    return 0, launched
