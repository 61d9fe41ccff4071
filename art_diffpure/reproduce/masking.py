"""
``art-diffpure masking``: the gradient-masking checks at full strength, on the embedded digits setting.

For each sampler the aligned (fixed-randomness) purifier is attacked by PGD with 10, 40, 100 and 200
iterations, PGD-40 with restarts, Square with ``--square-queries`` queries, BPDA PGD-40, PGD-40 transferred
from the undefended classifier, AutoAttack's APGD-CE + APGD-DLR (100 iterations each, aligned, so no EOT), and
PGD-40 at a budget of the whole input range; opt-in (``purification_attacks``), after these, by the attacks built
for purification (DiffHammer, DiffAttack, surrogate PGD-EOT, aligned, as ``art-diffpure evaluate --attack NAME``
runs them). :mod:`art_diffpure.evaluations.gradient_masking` turns the per-image outcomes into checks. Every
finished attack is written to ``<out>/parts/`` atomically with a fingerprint of its settings, so an interrupted
run resumes where it stopped; ``results.json`` and ``report.md`` come last.
Several processes may run the same command on one ``out`` (one per core): each claims a part while it runs it
(:func:`~art_diffpure.reproduce.store.claimed`) and the others skip it; the last to finish writes the complete
report (or rerun with ``--report-only``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from typing import Any, Callable, Sequence

import numpy as np

from art_diffpure._utils import ordered_sum
from art_diffpure.evaluations import gradient_masking as gm
from art_diffpure.evaluations.aligned import evaluate_aligned
from art_diffpure.evaluations.pgd import run_pgd, undefended
from art_diffpure.randomness import numpy_seeded as seeded_numpy
from art_diffpure.reproduce.store import atomic_write, claimed, fingerprint

PGD_ITERATIONS = (10, 40, 100, 200)
REFERENCE_ITERATIONS = 40  # the paper's PGD-40: the transfer, BPDA, large-eps and restart attacks run as long
APGD_ITERATIONS = 100  # AutoAttack's APGD-CE and APGD-DLR, each (also inside AutoAttack-rand)
REL_STEP = 1 / 30  # the paper's PGD step (Table S1), eps / 30 whatever the iteration count
# AutoAttack rand as DiffPure's own evaluation ran it: APGD-CE + APGD-DLR, 100 iterations each, EOT over 20 draws,
# against the stochastic defence (one fresh test draw). The costliest attack (~100x PGD-40), so it runs last.
AUTOATTACK_RAND_EOT = 20
# ... so it runs in chunks of this many images, each a resumable part (~30 min of one core at t* = 100), its
# fresh-noise generator seeded from the chunk's first image index.
AUTOATTACK_RAND_CHUNK = 16
# The attacks built for purification (``art-diffpure evaluate --attack NAME``), opt-in (``purification_attacks``):
# appended after the plan's attacks, each with the registry's defaults (the papers' budgets) unless
# ``purification_max_iter`` cuts their iterations. GPU work at the report's size: on 8 digits images at t* = 100 one
# (loaded) CPU core took about 27 s per DiffHammer iteration (its 3 losses), 10 s per DiffAttack iteration (its 2)
# and 0.5 s per surrogate one, i.e. about 12 h, 4 h and 0.5 h per sampler at 128 images and the registry's budgets.
PURIFICATION_ATTACKS = ("diffhammer", "diffattack", "surrogate-pgd-eot")


def _atomic_json(path: str, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def attack_plan(eps: float, square_queries: int, restarts: int, purification_attacks: bool = False,
                purification_max_iter: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """
    The attacks of one sampler, cheapest first: (name, settings). ``purification_attacks`` appends
    :data:`PURIFICATION_ATTACKS` (their settings: :func:`purification_plan`); the default plan is the same either way.
    """
    ref, apgd = REFERENCE_ITERATIONS, APGD_ITERATIONS
    plan = [("transfer", dict(max_iter=ref)), ("bpda", dict(max_iter=ref))]
    plan += [(f"pgd{k}", dict(max_iter=k)) for k in PGD_ITERATIONS]
    plan += [("large_eps", dict(max_iter=ref, eps=1.0)), (f"restarts{restarts}", dict(max_iter=ref, restarts=restarts)),
             ("apgd_ce_dlr", dict(max_iter=apgd)), (f"square{square_queries}", dict(queries=square_queries)),
             (f"autoattack_rand_eot{AUTOATTACK_RAND_EOT}", dict(max_iter=apgd, eot=AUTOATTACK_RAND_EOT,
                                                                chunk=AUTOATTACK_RAND_CHUNK))]
    plan += purification_plan(purification_max_iter) if purification_attacks else []
    return [(name, dict(kw, eps=kw.get("eps", eps))) for name, kw in plan]


def purification_plan(max_iter: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """
    The attacks built for purification as parts of the plan: the registry's ``max_iter`` and ``eot`` defaults (the
    papers'), ``max_iter`` instead where given; the surrogate's step count too, so that each part's fingerprint
    holds what decides its examples (the run's eps is added by :func:`attack_plan`).
    """
    from art_diffpure.attacks.registry import ATTACKS, SURROGATE_STEPS

    plan = []
    for name in PURIFICATION_ATTACKS:
        defaults = ATTACKS[name].defaults
        kw = dict(max_iter=int(defaults["max_iter"] if max_iter is None else max_iter), eot=int(defaults["eot"]),
                  seed=0, randomness="aligned")
        plan.append((name, dict(kw, surrogate_steps=SURROGATE_STEPS) if name == "surrogate-pgd-eot" else kw))
    return plan


def run_attack(name: str, kw: dict[str, Any], make: Callable[[str], Any], x: np.ndarray, y: np.ndarray,
               batch_size: int, first_image: int = 0) -> dict[str, Any]:
    """
    One attack of the plan; ``make(gradient)`` builds the defended classifier. Per-image success out.
    ``first_image``: the index of ``x[0]`` among the run's images (a chunk's fresh noise is seeded from it).
    """
    from art.attacks.evasion import SquareAttack

    from art_diffpure.attacks.randomness_aligned import RandomnessAlignedAttack

    eps = float(kw["eps"])
    common = dict(rel_step=REL_STEP, seed=0, batch_size=batch_size)
    if name == "bpda":
        return run_pgd(make("bpda"), x, y, eps, "aligned", max_iter=kw["max_iter"], **common)
    classifier = make("full")
    if name == "transfer":
        from art.attacks.evasion import ProjectedGradientDescent

        plain = undefended(classifier)
        with seeded_numpy(0):
            x_adv = ProjectedGradientDescent(plain, norm=np.inf, eps=eps, eps_step=REL_STEP * eps,
                                             max_iter=int(kw["max_iter"]), num_random_init=1, batch_size=batch_size,
                                             verbose=False).generate(x, np.eye(plain.nb_classes, dtype=np.float32)[y])
        adv = RandomnessAlignedAttack(classifier, seed=0, batch_size=batch_size).predict_test(x_adv).argmax(1) == y
        plain_adv = plain.predict(x_adv).argmax(1) == y
        return {"success": (~adv).tolist(), "adv_correct": adv.tolist(), "robust_accuracy": float(adv.mean()),
                "undefended_robust_accuracy": float(plain_adv.mean())}
    if name.startswith("square"):
        return run_pgd(classifier, x, y, eps, "aligned", attack_factory=lambda est: SquareAttack(
            est, norm=np.inf, eps=eps, max_iter=int(kw["queries"]), nb_restarts=1, batch_size=batch_size,
            verbose=False), **common)
    if name.startswith("autoattack_rand"):
        from art_diffpure.purifier import find_purifier

        attack = RandomnessAlignedAttack.from_protocol(classifier, "autoattack_rand", eps=eps, max_iter=kw["max_iter"],
                                                       eot_samples=kw["eot"], randomness="stochastic",
                                                       batch_size=batch_size)
        find_purifier(classifier, required=True).reseed_fresh(first_image)
        with seeded_numpy(first_image):
            report = evaluate_aligned(attack, x, y).to_dict()
        return {k: report[k] for k in ("robust_accuracy", "success", "adv_correct")}
    if name in PURIFICATION_ATTACKS:
        return _purification_attack(name, kw, classifier, x, y, batch_size)
    if name == "apgd_ce_dlr":
        attack = RandomnessAlignedAttack.from_protocol(classifier, "autoattack_rand", eps=eps, max_iter=kw["max_iter"],
                                                       eot_samples=1, randomness="aligned", batch_size=batch_size)
        report = evaluate_aligned(attack, x, y).to_dict()
        return {k: report[k] for k in ("robust_accuracy", "success", "adv_correct")}
    return run_pgd(classifier, x, y, eps, "aligned", max_iter=kw["max_iter"],
                   num_random_init=int(kw.get("restarts", 1)), **common)


def _purification_attack(name: str, kw: dict[str, Any], classifier: Any, x: np.ndarray, y: np.ndarray,
                         batch_size: int) -> dict[str, Any]:
    """
    One attack of the registry run as ``art-diffpure evaluate --attack NAME --randomness aligned --seeds 0`` runs
    it (inside the aligned wrapper, which hands it the test's configuration as its draws; sample ids = image
    indices), its final examples judged under the aligned test randomness like every aligned row.
    """
    from art_diffpure.attacks.randomness_aligned import RandomnessAlignedAttack
    from art_diffpure.attacks.registry import ATTACKS
    from art_diffpure.purifier import find_purifier
    from art_diffpure.randomness import FRESH_GENERATOR_TAG, seed_hash

    named, seed = ATTACKS[name], int(kw["seed"])
    options = dict(eps=float(kw["eps"]), norm=np.inf, max_iter=int(kw["max_iter"]), eot=int(kw["eot"]))
    # evaluate seeds the purifier's fresh generator per unit; aligned mode never draws from it (the audit says so)
    find_purifier(classifier, required=True).reseed_fresh(seed_hash(seed, 0, FRESH_GENERATOR_TAG))
    attack = RandomnessAlignedAttack(
        classifier, attack=lambda c: named.build(c, options, seed, batch_size), randomness=kw["randomness"],
        eot_samples=1 if named.own_draws else options["eot"], seed=seed, batch_size=batch_size, verbose=False)
    report = evaluate_aligned(attack, x, y).to_dict()
    return {k: report[k] for k in ("robust_accuracy", "success", "adv_correct")}


def _part(path: str, key: list, compute: Callable[[], dict[str, Any]], label: str, progress: bool) -> dict[str, Any]:
    """One finished attack (or chunk of one) from ``path`` if its fingerprint matches ``key``; else run and save it."""
    fp = fingerprint(key)
    sampler, name, kw = key[:3]
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved["fingerprint"] != fp:
            raise RuntimeError(f"{path} was made with other settings; use another --out or delete it")
        if progress:
            print(f"[masking] {label}: found in {path}", flush=True)
        return saved["result"]
    t = time.perf_counter()
    result = {k: v for k, v in compute().items() if k != "x_adv"}
    result["wall_time_s"] = time.perf_counter() - t
    _atomic_json(path, {"fingerprint": fp, "sampler": sampler, "attack": name, "settings": kw,
                        "result": result})
    if progress:
        print(f"[masking] {label}: robust {result.get('robust_accuracy', float('nan')):.3f} "
              f"({result['wall_time_s']:.0f} s)", flush=True)
    return result


def _joined(pieces: list[dict[str, Any]]) -> dict[str, Any]:
    """The chunks of one attack as one result: per-image lists in image order, accuracy over all images."""
    adv = [a for p in pieces for a in p["adv_correct"]]
    return {"success": [s for p in pieces for s in p["success"]], "adv_correct": adv,
            "robust_accuracy": float(np.mean(adv)), "wall_time_s": ordered_sum(p["wall_time_s"] for p in pieces),
            "chunks": len(pieces)}


def checks_for(parts: dict[str, dict[str, Any]], nb_classes: int, square_queries: int,
               restarts: int) -> list[gm.MaskingCheck]:
    """The checks of one sampler whose attacks have all finished (every check needs PGD-40 and its own attacks)."""
    s = {k: v["success"] for k, v in parts.items()}
    ref, aa = f"pgd{REFERENCE_ITERATIONS}", f"autoattack_rand_eot{AUTOATTACK_RAND_EOT}"
    square, many = f"square{square_queries}", f"restarts{restarts}"
    iters = [f"pgd{k}" for k in PGD_ITERATIONS]
    plan: list[tuple[list[str], Callable[[], list[gm.MaskingCheck]]]] = [
        ([square], lambda: [gm.check_gradient_free(s[ref], s[square])]),
        (iters, lambda: gm.check_iterations(PGD_ITERATIONS, [s[k] for k in iters], REFERENCE_ITERATIONS)),
        ([many], lambda: [gm.check_restarts(s[ref], s[many], restarts)]),
        (["bpda"], lambda: [gm.check_bpda(s[ref], s["bpda"])]),
        (["transfer"], lambda: [gm.check_transfer(s[ref], s["transfer"])]),
        (["apgd_ce_dlr"], lambda: [gm.check_stronger_attack(s[ref], s["apgd_ce_dlr"], "apgd_ce_dlr")]),
        ([aa, "apgd_ce_dlr"], lambda: [gm.check_randomness_modes(s["apgd_ce_dlr"], s[aa], "autoattack")]),
        (["large_eps"], lambda: [gm.check_large_eps(1.0, parts["large_eps"]["robust_accuracy"], nb_classes)]),
    ]
    # the attacks built for purification: checked only where the run planned (and finished) them
    plan += [([k], lambda k=k: [gm.check_stronger_attack(s[ref], s[k], k)]) for k in PURIFICATION_ATTACKS]
    return [c for needs, build in plan if all(k in s for k in [ref, *needs]) for c in build()]


def aligned_at_eps(eps: float, square_queries: int, restarts: int, purification_attacks: bool = False,
                   purification_max_iter: int | None = None) -> list[str]:
    """
    The plan's attacks on the aligned purifier at the run's eps (all but large eps and AutoAttack-rand): the attacks
    built for purification among them only where the run plans them, so a run without them keeps its worst case.
    """
    return [name for name, kw in attack_plan(eps, square_queries, restarts, purification_attacks,
                                             purification_max_iter)
            if kw["eps"] == eps and not name.startswith("autoattack_rand")]


def worst_case(parts: dict[str, dict[str, Any]], aligned: Sequence[str]) -> dict[str, Any] | None:
    """Robust only if every one of the ``aligned`` attacks left the image robust (None until all have finished)."""
    if not all(k in parts for k in aligned):
        return None
    adv = np.all([parts[k]["adv_correct"] for k in aligned], axis=0)
    return dict(_accuracy({"adv_correct": adv.tolist()}), adv_correct=adv.tolist(), attacks=list(aligned))


def comparisons_for(parts: dict[str, dict[str, Any]], aligned: Sequence[str]) -> list[dict[str, Any]]:
    """
    Paired comparisons on the same images (difference with its paired bootstrap interval, exact McNemar): the
    stochastic AutoAttack-rand against the same attack with aligned randomness (APGD-CE + APGD-DLR), against
    aligned PGD-40 (the paper's protocol), and against the worst case over the ``aligned`` attacks (an image counts
    as robust only if it survives each of them; only once all have finished).
    """
    from art_diffpure.evaluations.statistics import paired_difference

    aa = f"autoattack_rand_eot{AUTOATTACK_RAND_EOT}"
    stochastic = parts.get(aa)
    against = {"apgd_ce_dlr (aligned)": parts.get("apgd_ce_dlr"),
               f"pgd{REFERENCE_ITERATIONS} (aligned)": parts.get(f"pgd{REFERENCE_ITERATIONS}"),
               "worst case over the aligned attacks": worst_case(parts, aligned)}
    out = []
    for b_name, b in against.items():
        if stochastic is None or b is None:
            continue
        d = paired_difference(stochastic["adv_correct"], b["adv_correct"])
        out.append({"a": f"{aa} (stochastic)", "b": b_name, "accuracy_a": d.accuracy_a, "accuracy_b": d.accuracy_b,
                    "difference": d.difference.estimate, "interval": [d.difference.low, d.difference.high],
                    "only_a_robust": d.test.b, "only_b_robust": d.test.c, "mcnemar_p": d.test.p_value,
                    "n": d.n_images})
    return out


def _accuracy(result: dict[str, Any]) -> dict[str, Any]:
    """Robust accuracy of one attack (or its finished chunks) with its Wilson 95% interval over images."""
    from art_diffpure.evaluations.statistics import wilson_interval

    adv = result.get("adv_correct")
    if adv is None:  # an attack without per-image outcomes (none in the plan today)
        return {"robust_accuracy": result.get("robust_accuracy"), "n": None, "interval": None}
    ci = wilson_interval(int(np.sum(adv)), len(adv))
    return {"robust_accuracy": float(np.mean(adv)), "n": len(adv), "interval": [ci.low, ci.high]}


def _attack_parts(out: str, sampler: str, name: str, kw: dict[str, Any], run_key: list, x: np.ndarray,
                  y: np.ndarray, make: Callable[[str], Any], batch_size: int, attack: bool,
                  progress: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """
    One attack of the plan for one sampler: its finished pieces (the whole attack, or the chunks of images of a long
    one, each its own resumable part) and the labels of those still to run (not run here, or claimed by another
    process). ``run_key``: the run's settings and data hash, in every part's fingerprint.
    """
    chunk = int(kw.get("chunk") or len(x))
    pieces, missing = [], []
    for i0 in range(0, len(x), chunk):
        i1 = min(i0 + chunk, len(x))
        label, file = (name, name) if chunk >= len(x) else (f"{name} images {i0}-{i1 - 1}",
                                                           f"{name}__{i0:04d}-{i1 - 1:04d}")
        path = os.path.join(out, "parts", f"{sampler}__{file}.json")
        if not attack and not os.path.exists(path):
            missing.append(label)
            continue
        key = [sampler, name, kw, *run_key] + ([i0, i1] if chunk < len(x) else [])
        # processes sharing ``out`` split the missing parts between them: one claims a part while it runs
        with claimed(path) if not os.path.exists(path) else contextlib.nullcontext() as holder:
            if holder is not None:
                if progress:
                    print(f"[masking] {sampler} {label}: running in process {holder.get('pid')} on "
                          f"{holder.get('host')}, skipped", flush=True)
                missing.append(label)
                continue
            pieces.append(_part(path, key, lambda: run_attack(name, kw, make, x[i0:i1], y[i0:i1], batch_size,
                                                              first_image=i0), f"{sampler} {label}", progress))
    return pieces, missing


def run(out: str, samplers: tuple[str, ...] = ("ddpm",), n_images: int = 32, eps: float = 0.2, t_star: int = 100,
        square_queries: int = 1000, restarts: int = 5, batch_size: int = 32,
        make_classifier: Callable[[str, str], Any] | None = None, data: tuple[np.ndarray, np.ndarray] | None = None,
        progress: bool = True, attack: bool = True, purification_attacks: bool = False,
        purification_max_iter: int | None = None) -> dict[str, Any]:
    """
    Run (or resume) the full-strength checks and write ``results.json`` and ``report.md`` to ``out``.

    :param purification_attacks: also run :data:`PURIFICATION_ATTACKS` (after the plan's attacks), each with
        a stronger-attack check against PGD-40 and a place in the aligned worst case; ``purification_max_iter``
        cuts their iterations (default: the registry's). Off, the plan, its parts and the report are those of a run
        that never heard of them.
    :param make_classifier: ``(sampler, gradient) -> classifier`` (default: the embedded digits models, purifier
        seed 0); ``data``: ``(x, y)`` (default: the first ``n_images`` of the digits test split).
    :param attack: ``False`` runs nothing: the report is written from the finished parts alone, a check only where
        all its attacks have finished, and every attack (or chunk) still to run is listed as pending (the state of
        a long run, for a reader; the same command with ``attack=True`` later completes it).
    """
    from art_diffpure.models import digits as embedded
    from art_diffpure.models.data import load_digits_split

    if make_classifier is None:
        def make_classifier(sampler: str, gradient: str):
            purifier = embedded.load_digits_purifier(t_star=t_star, sampler=sampler, seed=0, gradient=gradient)
            return embedded.digits_art_classifier(purifier)
    x, y = data if data is not None else load_digits_split("test")
    x, y = np.asarray(x[:n_images], dtype=np.float32), np.asarray(y[:n_images], dtype=np.int64)
    os.makedirs(os.path.join(out, "parts"), exist_ok=True)
    settings = dict(n_images=len(x), eps=eps, t_star=t_star, square_queries=square_queries, restarts=restarts,
                    batch_size=batch_size, rel_step=REL_STEP, pgd_iterations=list(PGD_ITERATIONS))
    data_hash = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()[:16]
    t0 = time.perf_counter()
    plan = attack_plan(eps, square_queries, restarts, purification_attacks, purification_max_iter)
    # the opt-in attacks are shown in the results' settings only: ``settings`` is in every part's fingerprint
    extra = {k: kw for k, kw in plan if k in PURIFICATION_ATTACKS}
    results: dict[str, Any] = {"settings": dict(settings, **({"purification_attacks": extra} if extra else {})),
                               "samplers": {}}
    for sampler in samplers:
        parts: dict[str, dict[str, Any]] = {}  # finished attacks: the checks' inputs
        shown: dict[str, dict[str, Any]] = {}  # finished attacks and finished chunks of unfinished ones
        pending: list[str] = []
        for name, kw in plan:
            pieces, missing = _attack_parts(out, sampler, name, kw, [settings, data_hash], x, y,
                                            lambda g, s=sampler: make_classifier(s, g), batch_size, attack, progress)
            pending += missing
            if pieces:
                shown[name] = pieces[0] if len(pieces) == 1 and not missing else _joined(pieces)
                if not missing:
                    parts[name] = shown[name]
        checks = checks_for(parts, 10, square_queries, restarts)
        aligned = aligned_at_eps(eps, square_queries, restarts, purification_attacks, purification_max_iter)
        results["samplers"][sampler] = {
            "checks": [c.to_dict() for c in checks], "overall": gm.overall(checks) if not pending else "incomplete",
            "overall_of_finished_checks": gm.overall(checks), "pending": pending,
            "comparisons": comparisons_for(parts, aligned), "worst_case_aligned": worst_case(parts, aligned),
            "robust_accuracy": {k: v.get("robust_accuracy") for k, v in shown.items()},
            "accuracy": {k: _accuracy(v) for k, v in shown.items()},
            "wall_time_s": {k: v["wall_time_s"] for k, v in shown.items()}}
    results["wall_time_s_this_run"] = time.perf_counter() - t0
    results["wall_time_s_all_parts"] = ordered_sum(ordered_sum(v["wall_time_s"].values())
                                                   for v in results["samplers"].values())
    _atomic_json(os.path.join(out, "results.json"), results)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(markdown(results))
    return results


def markdown(r: dict[str, Any]) -> str:
    """The report: settings, then per sampler each check with its threshold, numbers and verdict."""
    s = r["settings"]
    lines = ["# Gradient-masking checks at full strength", "",
             f"Embedded digits models, aligned (fixed) randomness, Linf eps = {s['eps']}, t* = {s['t_star']}, "
             f"{s['n_images']} test images, PGD step eps/30 (the paper's), Square {s['square_queries']} queries, "
             f"{s['restarts']} restarts, AutoAttack's APGD-CE + APGD-DLR with {APGD_ITERATIONS} iterations each "
             "(ART's), and "
             f"AutoAttack-rand (the same with EOT over {AUTOATTACK_RAND_EOT} draws) against the stochastic defence. "
             f"Thresholds fixed in `art_diffpure/evaluations/gradient_masking.py` before the run: a second attack may break at "
             f"most max(1, 5% of n) images the reference PGD-40 leaves robust. Compute time of all attacks: "
             f"{r['wall_time_s_all_parts'] / 60:.1f} min (summed over the parts, whichever run or process made them)."]
    lines += _purification_header(s.get("purification_attacks")) + [""]
    for sampler, res in r["samplers"].items():
        so_far = res["overall_of_finished_checks"] if res["checks"] else "none finished"
        title = res["overall"] if not res["pending"] else (
            f"incomplete ({len(res['pending'])} attacks or chunks not yet run; checks so far: {so_far})")
        lines += [f"## {sampler}: {title}", ""]
        if res["checks"]:
            lines += ["| check | verdict | threshold | numbers |", "|---|---|---|---|"]
        for c in res["checks"]:
            nums = ", ".join(f"{k}={_fmt(v)}" for k, v in c["numbers"].items())
            lines.append(f"| {c['name']} | {c['verdict']} | {c['threshold']} | {nums} |")
        if res["accuracy"]:
            lines += ["", "| attack | images | robust accuracy [Wilson 95%] | compute (s) |", "|---|---|---|---|"]
        for k, a in res["accuracy"].items():
            ci = f" [{100 * a['interval'][0]:.1f}, {100 * a['interval'][1]:.1f}]" if a["interval"] else ""
            lines.append(f"| {k} | {a['n']} | {100 * a['robust_accuracy']:.1f}%{ci} | {res['wall_time_s'][k]:.0f} |")
        w = res["worst_case_aligned"]
        if w:
            lines.append(f"| worst case over the {len(w['attacks'])} aligned attacks at eps | {w['n']} | "
                         f"{100 * w['robust_accuracy']:.1f}% [{100 * w['interval'][0]:.1f}, "
                         f"{100 * w['interval'][1]:.1f}] | – |")
        if res["comparisons"]:
            lines += ["", "Paired on the same images (difference A - B in points, paired bootstrap 95% interval; "
                      "exact McNemar):", "", "| A | B | A | B | A - B | robust only under A / B | p |",
                      "|---|---|---|---|---|---|---|"]
        for c in res["comparisons"]:
            lines.append(f"| {c['a']} | {c['b']} | {100 * c['accuracy_a']:.1f}% | {100 * c['accuracy_b']:.1f}% | "
                         f"{100 * c['difference']:+.1f} [{100 * c['interval'][0]:+.1f}, {100 * c['interval'][1]:+.1f}] "
                         f"| {c['only_a_robust']} / {c['only_b_robust']} | {c['mcnemar_p']:.2g} |")
        if res["pending"]:
            lines += ["", "Not yet run (the same command resumes): " + ", ".join(res["pending"]) + "."]
        lines += [""] + [f"- {c['name']}: {c['explanation']}" for c in res["checks"]] + [""]
    return "\n".join(lines)


def _purification_header(attacks: dict[str, dict[str, Any]] | None) -> list[str]:
    """The report's sentence on the attacks built for purification, where the run planned them."""
    if not attacks:
        return []
    runs = ", ".join(f"{k} ({kw['max_iter']} iterations, {kw['eot']} draws)" for k, kw in attacks.items())
    return ["", f"Attacks built for purification (`art-diffpure evaluate --attack NAME`, aligned randomness, seed "
            f"{next(iter(attacks.values()))['seed']}): {runs}; each is a stronger-attack check against PGD-40 and "
            "one of the aligned attacks of the worst case."]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)


__all__ = ["PGD_ITERATIONS", "PURIFICATION_ATTACKS", "aligned_at_eps", "attack_plan", "checks_for", "comparisons_for",
           "markdown", "purification_plan", "run", "run_attack"]
