"""
Gradient-masking checks, one small named function each (in the style of fra31 AutoAttack's ``checks.py``).

Every ``check_*`` takes measured outcomes or numbers (no attack runs inside) and returns a :class:`MaskingCheck`:
its verdict (``"pass"``, ``"warn"`` or ``"n/a"``), the threshold it was held to, the numbers behind it and a
sentence. Two families:

- full strength, from the per-image outcomes of two attacks on the same images (``True`` = broken), thresholds
  fixed as module constants before any run: :func:`check_gradient_free`, :func:`check_iterations`,
  :func:`check_restarts`, :func:`check_bpda`, :func:`check_transfer`, :func:`check_stronger_attack`,
  :func:`check_large_eps` (:mod:`art_diffpure.reproduce.masking` runs the attacks);
- the quick checklist :func:`gradient_masking_diagnostics` (Athalye et al. 2018; Carlini et al. 2019), which runs
  small attacks on the FIXED-randomness purifier and composes :func:`check_gradient_free_rate`,
  :func:`check_large_eps_curve`, :func:`check_iterations_restarts`, :func:`check_gradient_health`,
  :func:`check_chain_gradients` and :func:`check_loss_gradients`; :func:`diagnostics_table` renders it.

| Paper link (obfuscated gradients): https://arxiv.org/abs/1802.00420 (Athalye et al. 2018)
| Paper link (evaluation checklist): https://arxiv.org/abs/1902.06705 (Carlini et al. 2019)
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from art_diffpure._utils import Result, index_labels
from art_diffpure.evaluations.gradients import chain_gradients, loss_gradient_flags
from art_diffpure.attacks.protocols import rel_step as protocol_rel_step
from art_diffpure.evaluations.pgd import as_classifier, run_pgd
from art_diffpure.evaluations.statistics import mcnemar_exact
from art_diffpure.purifier import find_purifier

__all__ = [
    "EXTRA_SUCCESS_TOLERANCE", "FAIL_ALPHA", "LARGE_EPS_FACTOR_OF_CHANCE", "VERDICTS", "DiagnosticCheck", "DiagnosticsResult",
    "MaskingCheck", "allowed_extra", "check_bpda", "check_chain_gradients", "check_gradient_free",
    "check_gradient_free_rate", "check_gradient_health", "check_iterations", "check_iterations_restarts",
    "check_large_eps", "check_large_eps_curve", "check_loss_gradients", "check_randomness_modes", "check_restarts",
    "check_stronger_attack",
    "check_transfer", "diagnostics_table", "gradient_masking_diagnostics", "overall",
]

#: A stronger or different attack may break at most this fraction of the images beyond the reference attack
#: (rounded down; at least 1 image, so that one image of noise does not warn on small n).
EXTRA_SUCCESS_TOLERANCE = 0.05
#: At the largest budget (the whole input range) robust accuracy must be at most chance.
LARGE_EPS_FACTOR_OF_CHANCE = 1.0
#: The one decision rule of the full-strength checks: a second attack that breaks more than the allowance of
#: images beyond the reference *warns*; it *fails* when, besides, the exact McNemar test on the same images shows
#: the difference at this level (the condition the check guards is then shown violated, not only suspected).
FAIL_ALPHA = 0.05
VERDICTS = ("pass", "warn", "fail", "n/a")


# ---------------------------------------------------------------------------------------------- results
@dataclass
class MaskingCheck(Result):
    """One check: name, verdict (one of :data:`VERDICTS`), threshold, numbers and a sentence."""

    name: str
    verdict: str
    threshold: str
    numbers: dict[str, Any] = field(default_factory=dict)
    explanation: str = ""


#: The checks of :func:`gradient_masking_diagnostics` are :class:`MaskingCheck` s too (one check type).
DiagnosticCheck = MaskingCheck


@dataclass
class DiagnosticsResult(Result):
    """The checklist: ``overall`` is ``"warn"`` if any check warns, else ``"pass"``."""

    checks: list[MaskingCheck]
    overall: str
    config: dict[str, Any] = field(default_factory=dict)

    def check(self, name: str) -> MaskingCheck:
        """The check called ``name``."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"No check {name!r}; have {[c.name for c in self.checks]}")


def _verdict(warn: bool) -> str:
    return "warn" if warn else "pass"


def overall(checks: Sequence[MaskingCheck]) -> str:
    """``"fail"`` if any check fails, else ``"warn"`` if any warns, else ``"pass"``."""
    verdicts = {c.verdict for c in checks}
    return "fail" if "fail" in verdicts else "warn" if "warn" in verdicts else "pass"


# ---------------------------------------------------------------------------------------------- full strength
def allowed_extra(n: int, tolerance: float = EXTRA_SUCCESS_TOLERANCE) -> int:
    """Images a second attack may break beyond the reference before a check warns: ``max(1, floor(tol * n))``."""
    return max(1, math.floor(tolerance * n))


def _broken(success: Sequence[bool], name: str) -> np.ndarray:
    s = np.asarray(success, dtype=bool).reshape(-1)
    if s.size == 0:
        raise ValueError(f"{name}: no images")
    return s


def _beyond(name: str, reference: Sequence[bool], other: Sequence[bool], ref_name: str, other_name: str,
            why: str) -> MaskingCheck:
    """Warn when ``other`` breaks more than the allowance of images that ``reference`` leaves robust; fail when the
    exact McNemar test also shows ``other`` breaking more (p < :data:`FAIL_ALPHA`)."""
    ref, oth = _broken(reference, ref_name), _broken(other, other_name)
    if ref.shape != oth.shape:
        raise ValueError(f"{name}: {ref_name} and {other_name} have {ref.size} and {oth.size} images")
    only = int((oth & ~ref).sum())
    limit = allowed_extra(ref.size)
    test = mcnemar_exact(~ref, ~oth)  # correctness = not broken
    numbers = {"n": int(ref.size), f"{ref_name}_successes": int(ref.sum()), f"{other_name}_successes": int(oth.sum()),
               f"{other_name}_only": only, f"{ref_name}_only": int((ref & ~oth).sum()), "allowed": limit,
               "mcnemar_p": test.p_value}
    warn = only > limit
    fail = warn and only > numbers[f"{ref_name}_only"] and test.p_value < FAIL_ALPHA
    counts = f"{other_name} breaks {only} images that {ref_name} leaves robust, {ref_name} {numbers[f'{ref_name}_only']} " \
             f"that {other_name} leaves robust (McNemar p = {test.p_value:.2g})"
    return MaskingCheck(name, "fail" if fail else _verdict(warn),
                        f"{other_name}_only <= {limit} (fail: beyond it and McNemar p < {FAIL_ALPHA:g})", numbers,
                        f"{counts}: {why}." if warn else f"{counts}; allowed {limit}.")


def check_gradient_free(pgd: Sequence[bool], square: Sequence[bool]) -> MaskingCheck:
    """A gradient-free attack (Square) must not break images the gradient attack cannot."""
    return _beyond("gradient_free_attack", pgd, square, "pgd", "square",
                   "by this check's rule a sign of masked gradients (the gradient attack misses what a gradient-free "
                   "one finds); an unconverged gradient attack gives the same sign")


def check_iterations(iterations: Sequence[int], successes: Sequence[Sequence[bool]],
                     reference: int) -> list[MaskingCheck]:
    """
    PGD with more iterations. ``pgd_converged``: the longest run breaks at most the allowance beyond the
    ``reference`` iteration count (PGD-40 has converged); ``iterations_plateau``: the last two counts differ by at
    most the allowance (the curve is flat, so the longest run is a fair stand-in for "enough").
    """
    if len(iterations) != len(successes) or len(iterations) < 2 or list(iterations) != sorted(iterations):
        raise ValueError("iterations must be increasing, at least two, one success vector each")
    if reference not in iterations:
        raise ValueError(f"reference {reference} is not among the iterations {list(iterations)}")
    counts = dict(zip(map(str, iterations), (int(_broken(s, f"pgd-{k}").sum()) for k, s in zip(iterations, successes))))
    longest, ref = successes[-1], successes[list(iterations).index(reference)]
    converged = _beyond("pgd_converged", ref, longest, f"pgd{reference}", f"pgd{iterations[-1]}",
                        f"PGD-{reference} has not converged")
    plateau = _beyond("iterations_plateau", successes[-2], longest, f"pgd{iterations[-2]}", f"pgd{iterations[-1]}",
                      "the success curve is still rising at the largest iteration count")
    for check in (converged, plateau):
        check.numbers["successes_by_iterations"] = dict(counts)
    return [converged, plateau]


def check_restarts(one: Sequence[bool], many: Sequence[bool], restarts: int) -> MaskingCheck:
    """Random restarts must not break many more images than one start."""
    check = _beyond("restarts", one, many, "one_start", f"{restarts}_starts",
                    "single-start PGD is unreliable on this loss surface")
    check.numbers["restarts"] = int(restarts)
    return check


def check_bpda(full: Sequence[bool], bpda: Sequence[bool]) -> MaskingCheck:
    """The exact gradient must be at least as good as the straight-through (BPDA) approximation."""
    return _beyond("bpda_vs_full", full, bpda, "full_gradient", "bpda",
                   "the exact gradient through the chain is worse than ignoring the chain (masked or shattered)")


def check_transfer(white_box: Sequence[bool], transfer: Sequence[bool]) -> MaskingCheck:
    """Examples transferred from the undefended classifier must not beat the white-box attack."""
    return _beyond("transfer_from_undefended", white_box, transfer, "white_box", "transfer",
                   "a black-box transfer attack beats the white-box one")


def check_stronger_attack(pgd: Sequence[bool], other: Sequence[bool], name: str) -> MaskingCheck:
    """A stronger standard attack (e.g. AutoAttack's APGD-CE + APGD-DLR) must not break many more images."""
    return _beyond(f"stronger_attack_{name}", pgd, other, "pgd", name,
                   f"PGD does not find what {name} finds on the same images (PGD has not converged)")


def check_randomness_modes(aligned: Sequence[bool], stochastic: Sequence[bool], name: str) -> MaskingCheck:
    """
    Like with like: the same attack family under the two randomness modes, on the same images (``aligned``: the
    attack with the purifier's randomness shared by attack and test; ``stochastic``: fresh randomness, EOT, one
    test draw). The stochastic attack must not break images the aligned one leaves robust beyond the allowance;
    the other direction (stochastic evaluation leaving images robust) is the overstatement the paper describes,
    reported in the numbers, not a masking sign.
    """
    return _beyond(f"stochastic_{name}_beyond_aligned", aligned, stochastic, "aligned", "stochastic",
                   "the aligned attack misses what the same attack finds with fresh randomness")


def check_large_eps(eps: float, robust_accuracy: float, nb_classes: int) -> MaskingCheck:
    """Robust accuracy at a budget covering the whole input range must fall to chance."""
    limit = LARGE_EPS_FACTOR_OF_CHANCE / nb_classes
    warn = robust_accuracy > limit
    return MaskingCheck("large_eps", _verdict(warn), f"robust_accuracy <= {limit:.3g}",
                        {"eps": float(eps), "robust_accuracy": float(robust_accuracy), "chance": 1.0 / nb_classes},
                        (f"Robust accuracy {robust_accuracy:.3f} at eps={eps:g} stays above chance: the attack cannot "
                         "use an unbounded budget (masked gradients)." if warn else
                         f"Robust accuracy {robust_accuracy:.3f} at eps={eps:g} is at most chance."))


# ---------------------------------------------------------------------------------------------- quick checklist
def check_gradient_free_rate(pgd: Sequence[bool], square: Sequence[bool], tolerance: float, eps: float,
                             queries: int) -> MaskingCheck:
    """SquareAttack must not beat PGD: warn if its success rate exceeds PGD's by more than ``tolerance``, or if the
    images it alone breaks exceed ``tolerance`` of the images."""
    s_pgd, s_sq = _broken(pgd, "pgd"), _broken(square, "square")
    square_only = int((s_sq & ~s_pgd).sum())
    warn = bool(s_sq.mean() > s_pgd.mean() + tolerance or square_only > tolerance * s_pgd.size)
    numbers = dict(eps=eps, pgd_success_rate=float(s_pgd.mean()), square_success_rate=float(s_sq.mean()),
                   pgd_successes=int(s_pgd.sum()), square_successes=int(s_sq.sum()), square_only=square_only,
                   pgd_only=int((s_pgd & ~s_sq).sum()), square_queries=queries, tolerance=tolerance)
    return MaskingCheck("gradient_free_attack", _verdict(warn),
                        f"square rate <= pgd rate + {tolerance:g} and square_only <= {tolerance:g} n", numbers,
                        "A gradient-free attack beat the gradient attack: its gradients are likely masked." if warn else
                        "The gradient attack finds at least what the gradient-free attack finds.")


def check_large_eps_curve(budgets: Sequence[float], robust_accuracy: Sequence[float], threshold: float,
                          chance: float) -> MaskingCheck:
    """Robust accuracy must fall towards 0 as eps grows: warn above ``threshold`` at the largest budget."""
    accs = [float(a) for a in robust_accuracy]
    warn = accs[-1] > threshold
    return MaskingCheck("large_eps", _verdict(warn), f"robust_accuracy at eps={budgets[-1]:g} <= {threshold:.3g}",
                        dict(eps=list(budgets), robust_accuracy=accs, threshold=threshold, chance=chance),
                        f"Robust accuracy stays at {accs[-1]:.3f} > {threshold:.3f} at eps={budgets[-1]:g}: the attack "
                        f"cannot even use an unbounded budget, a sign of masked gradients." if warn else
                        "Robust accuracy falls to chance or below at large budgets.")


def _largest_drop(counts: Sequence[int]) -> int:
    """The largest fall of a count below the best count before it (0 when it never falls)."""
    return int(max([0] + [max(counts[:i]) - counts[i] for i in range(1, len(counts))]))


def check_iterations_restarts(iterations: Sequence[int], by_iterations: Sequence[int], restarts: Sequence[int],
                              by_restarts: Sequence[int], n: int, tolerance: int, eps: float) -> MaskingCheck:
    """More iterations or restarts must not reduce PGD's successes by more than ``tolerance`` images, and the
    successes must have stopped rising: the last iteration count (and the most restarts) may add at most
    ``tolerance`` images over the one before (else the attack has not converged and its figures are upper bounds)."""
    drop_iter, drop_restart = _largest_drop(by_iterations), _largest_drop(by_restarts)
    rise_iter = int(by_iterations[-1] - by_iterations[-2]) if len(by_iterations) > 1 else 0
    rise_restart = int(by_restarts[-1] - by_restarts[-2]) if len(by_restarts) > 1 else 0
    falls, rises = max(drop_iter, drop_restart) > tolerance, max(rise_iter, rise_restart) > tolerance
    numbers = dict(eps=eps, iterations=list(map(int, iterations)), successes_by_iterations=list(by_iterations),
                   restarts=list(map(int, restarts)), successes_by_restarts=list(by_restarts), n=n,
                   largest_drop_iterations=drop_iter, largest_drop_restarts=drop_restart,
                   last_rise_iterations=rise_iter, last_rise_restarts=rise_restart, tolerance=tolerance)
    why = []
    if falls:
        why.append("attack success falls with more iterations or restarts: the loss surface the attack sees is "
                   "unreliable")
    if rises:
        why.append(f"attack success still rises at the largest budget ({rise_iter} more images at {iterations[-1]} "
                   f"iterations, {rise_restart} more at {restarts[-1]} restarts): the attack has not converged, so "
                   "its robust accuracy is an upper bound")
    return MaskingCheck("iterations_restarts", _verdict(falls or rises),
                        f"largest drop and last rise of successes <= {tolerance}", numbers,
                        ("; ".join(why).capitalize() + ".") if why else
                        "Attack success neither falls nor still rises with more iterations or restarts.")


def check_gradient_health(grad: np.ndarray, vanishing_norm: float, zero_fraction_threshold: float) -> MaskingCheck:
    """Input gradients ``(m, ...)`` must be finite, not vanishing (mean norm) and not mostly exactly zero."""
    norms = np.linalg.norm(np.asarray(grad).reshape(len(grad), -1), axis=1)
    zero_fraction, finite = float(np.mean(grad == 0)), bool(np.isfinite(grad).all())
    reasons = [] if finite else ["non-finite input gradients"]
    if float(norms.mean()) < vanishing_norm:
        reasons.append(f"vanishing input gradient (mean norm {norms.mean():.3g} < {vanishing_norm:g})")
    if zero_fraction > zero_fraction_threshold:
        reasons.append(f"{zero_fraction:.1%} of the input-gradient entries are exactly zero")
    numbers = dict(n_samples=len(grad), input_grad_norm_mean=float(norms.mean()),
                   input_grad_norm_min=float(norms.min()), input_grad_norm_max=float(norms.max()),
                   zero_fraction=zero_fraction, finite=finite, vanishing_norm=vanishing_norm,
                   zero_fraction_threshold=zero_fraction_threshold)
    return MaskingCheck("gradient_health", _verdict(bool(reasons)),
                        f"finite, mean norm >= {vanishing_norm:g}, zero fraction <= {zero_fraction_threshold:g}",
                        numbers, "Masked input gradients: " + "; ".join(reasons) + "." if reasons else
                        "Input gradients are finite and non-zero.")


def check_chain_gradients(per_step: Sequence[float] | None, exploding_ratio: float,
                          missing: str = "no reverse chain") -> MaskingCheck:
    """The norm of dL/dx_t per reverse step must be finite, non-zero and within ``exploding_ratio`` of itself
    (``"n/a"`` when ``per_step`` is ``None``, for the reason ``missing``)."""
    threshold = f"every step finite and non-zero, max / min <= {exploding_ratio:g}"
    if per_step is None:
        return MaskingCheck("chain_gradients", "n/a", threshold, dict(per_step_grad_norm=None),
                            f"No reverse chain to inspect: {missing}.")
    norms = np.asarray(per_step, dtype=float)
    ratio = float(norms.max() / norms.min()) if norms.min() > 0 else math.inf
    n_zero = int(np.sum(norms == 0))
    warn = not np.all(np.isfinite(norms)) or ratio > exploding_ratio
    if n_zero == len(norms):
        why = "dL/dx_t is zero at every reverse step: the gradient is cut after the chain"
    elif n_zero:
        why = f"dL/dx_t is zero at {n_zero} of {len(norms)} reverse steps (e.g. clip_sample's clamp)"
    else:
        why = (f"the per-step gradient norm varies by a factor {ratio:.3g} > {exploding_ratio:g} "
               "(exploding or vanishing)")
    numbers = dict(n_steps=len(norms), per_step_grad_norm=list(per_step), first_step_norm=per_step[0],
                   last_step_norm=per_step[-1], max_min_ratio=ratio, zero_steps=n_zero, exploding_ratio=exploding_ratio)
    return MaskingCheck("chain_gradients", _verdict(warn), threshold, numbers,
                        ("Masked chain gradients: " + why + "." if warn else
                         f"The norm of dL/dx_t stays within a factor {ratio:.3g} over {len(norms)} reverse steps.")
                        + " Steps listed from the first reverse step (timestep t*-1) to the last (timestep 0).")


def check_loss_gradients(flags: np.ndarray, zero_fraction_threshold: float) -> MaskingCheck:
    """ART's ``loss_gradient_check`` flags ``(m, 3)`` (all-zero, NaN, inf per sample): warn on any NaN or inf, or
    if more than ``zero_fraction_threshold`` of the samples have an all-zero gradient."""
    flags = np.asarray(flags, dtype=bool).reshape(-1, 3)
    m = len(flags)
    zero, nan, inf = (int(v) for v in flags.sum(axis=0))
    warn = nan > 0 or inf > 0 or zero > zero_fraction_threshold * m
    return MaskingCheck("loss_gradient_check", _verdict(warn),
                        f"no NaN / inf, all-zero samples <= {zero_fraction_threshold:g} m",
                        dict(n_samples=m, zero_gradient_samples=zero, nan_gradient_samples=nan,
                             inf_gradient_samples=inf),
                        f"ART's loss_gradient_check flags {zero} all-zero, {nan} NaN and {inf} inf gradients out of "
                        f"{m} samples.")


def _square(eps: float, queries: int, batch_size: int):
    from art.attacks.evasion import SquareAttack

    return lambda est: SquareAttack(est, norm=np.inf, eps=eps, max_iter=queries, nb_restarts=1, batch_size=batch_size,
                                    verbose=False)


def _no_chain_reason(purifier: Any) -> str:
    return "no DiffusionPurifier" if purifier is None else "the purifier's model is not a torch module (no hooks)"


def gradient_masking_diagnostics(
    classifier: Any, x: np.ndarray, y: np.ndarray, eps: float, purifier: Any = None, seed: int = 0,
    rel_step: float | None = None, max_iter: int = 10, batch_size: int = 32, square_queries: int = 100,
    square_tolerance: float = 0.05, large_eps: Sequence[float] = (0.25, 0.5, 1.0),
    large_eps_threshold: float | None = None,
    iterations: Sequence[int] = (5, 10, 20, 40), restarts: Sequence[int] = (1, 3), count_tolerance: int = 1,
    vanishing_norm: float = 1e-8, zero_fraction_threshold: float = 0.5, exploding_ratio: float = 1e4,
    n_gradient_samples: int = 8, nb_classes: int | None = None,
) -> DiagnosticsResult:
    """
    The gradient-masking checklist on the FIXED-randomness purifier (aligned mode, base seed ``seed``, sample id =
    position), so the result is deterministic: ``gradient_free_attack`` (:func:`check_gradient_free_rate`: Square
    with ``square_queries`` iterations against PGD, ``square_tolerance``), ``large_eps``
    (:func:`check_large_eps_curve`: PGD at ``large_eps``, fractions of the input range, against
    ``large_eps_threshold``, default ``1 / nb_classes``), ``iterations_restarts``
    (:func:`check_iterations_restarts`: PGD over ``iterations`` and ``restarts``, ``count_tolerance``),
    ``gradient_health`` (:func:`check_gradient_health`: ``vanishing_norm``, ``zero_fraction_threshold``),
    ``chain_gradients`` (:func:`check_chain_gradients`: dL/dx_t per reverse step from a forward pre-hook on
    ``purifier.model``, ``exploding_ratio``) and ``loss_gradient_check`` (:func:`check_loss_gradients`: ART's
    ``art.metrics.loss_gradient_check`` per sample); the gradient checks use the first ``n_gradient_samples``.

    :param classifier: an ART ``PyTorchClassifier`` (with or without a purifier) or a torch model; ``x``: clean
        images ``(n, ...)``; ``y``: labels (indices or one-hot); ``eps``: the Linf budget under test.
    :param purifier: a purifier to add to the classifier's preprocessing defences (optional).
    :param seed: base seed of the fixed randomness and of numpy's global RNG during each attack.
    :param rel_step: PGD step ``rel_step * eps`` (default: the one rule,
        :func:`~art_diffpure.attacks.protocols.rel_step` ``(max_iter)``); ``max_iter``: PGD
        iterations of the reference attack (and of the large-eps and restart checks); ``batch_size``: attack batch.
    :param nb_classes: classes of a torch model (default: inferred).
    """
    x, labels = np.asarray(x, dtype=np.float32), index_labels(y)
    classifier = as_classifier(classifier, x, purifier, nb_classes)
    purifier, n, m = find_purifier(classifier), len(x), min(len(x), n_gradient_samples)
    lo, hi = classifier.clip_values if classifier.clip_values is not None else (0.0, 1.0)
    rel_step = protocol_rel_step(max_iter) if rel_step is None else float(rel_step)
    run = functools.partial(run_pgd, classifier, x, labels, mode="aligned", rel_step=rel_step, seed=seed,
                            batch_size=batch_size)
    done: dict[tuple, dict[str, Any]] = {}

    def pgd(e: float, max_iter: int, num_random_init: int = 1, **kw) -> dict[str, Any]:
        """One aligned run; a run is deterministic, so the checks that ask for the same one share it."""
        if kw:
            return run(e, max_iter=max_iter, num_random_init=num_random_init, **kw)
        key = (float(e), int(max_iter), int(num_random_init))
        if key not in done:
            done[key] = run(e, max_iter=max_iter, num_random_init=num_random_init)
        return done[key]

    budgets = [float(f) * float(hi - lo) for f in large_eps]
    chance = 1.0 / classifier.nb_classes
    # Measure (attacks first, then gradients) ...
    reference = pgd(eps, max_iter=max_iter)["success"]
    square = pgd(eps, max_iter=max_iter, attack_factory=_square(eps, square_queries, batch_size))["success"]
    at_large_eps = [pgd(e, max_iter=max_iter)["robust_accuracy"] for e in budgets]
    by_iterations = [int(np.sum(pgd(eps, max_iter=int(k))["success"])) for k in iterations]
    by_restarts = [int(np.sum(pgd(eps, max_iter=max_iter, num_random_init=int(r))["success"])) for r in restarts]
    grad, per_step = chain_gradients(classifier, purifier, x[:m], labels[:m], seed)
    flags = loss_gradient_flags(classifier, purifier, x[:m], labels[:m], seed)
    # ... then judge.
    checks = [
        check_gradient_free_rate(reference, square, square_tolerance, eps, square_queries),
        check_large_eps_curve(budgets, at_large_eps, chance if large_eps_threshold is None else large_eps_threshold,
                              chance),
        check_iterations_restarts(iterations, by_iterations, restarts, by_restarts, n, count_tolerance, eps),
        check_gradient_health(grad, vanishing_norm, zero_fraction_threshold),
        check_chain_gradients(per_step, exploding_ratio, _no_chain_reason(purifier)),
        check_loss_gradients(flags, zero_fraction_threshold),
    ]
    config = dict(eps=eps, seed=seed, rel_step=rel_step, max_iter=max_iter, batch_size=batch_size, n=n,
                  randomness="aligned" if purifier is not None else None,
                  purifier=None if purifier is None else {k: getattr(purifier, k)
                                                          for k in ("t_star", "sampler", "gradient")})
    return DiagnosticsResult(checks, overall(checks), config)


def diagnostics_table(result: DiagnosticsResult | dict) -> str:
    """A markdown table of the checks: name, verdict, key numbers, explanation."""
    d = result.to_dict() if hasattr(result, "to_dict") else result

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, list):
            return "[" + ", ".join(fmt(e) for e in v[:8]) + (", ..." if len(v) > 8 else "") + "]"
        return str(v)

    lines = ["| check | verdict | numbers | explanation |", "|---|---|---|---|"]
    for c in d["checks"]:
        numbers = "; ".join(f"{k}={fmt(v)}" for k, v in c["numbers"].items())
        lines.append(f"| {c['name']} | **{c['verdict']}** | {numbers} | {c['explanation'].replace('|', '/')} |")
    lines.append(f"| **overall** | **{d['overall']}** | | |")
    return "\n".join(lines)
