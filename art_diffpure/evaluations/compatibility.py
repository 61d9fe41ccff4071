"""
Which ART evasion attacks run against a diffusion-purified classifier, and how: the compatibility matrix.

Each attack is run, on a small setting, in five ways: *direct* (the purifier in ``preprocessing_defences``,
no wrapper) with full and with BPDA gradients, and *wrapped* in :class:`~art_diffpure.RandomnessAlignedAttack`
in the three randomness modes. A cell records whether it ran, whether the examples stay within ``eps`` and the
clip range where the attack promises it, the audit of the purifier's rows (wrapped), whether a sample's example
in a batch equals the one it gets alone (wrapped aligned, attacks without random starts), and whether ART itself
runs the attack on the undefended classifier. ``tests/evaluations/test_compatibility.py`` asserts the cells;
``scripts/compatibility_matrix.py`` renders them to ``docs/art-compatibility.md``.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from art_diffpure._utils import one_hot
from art_diffpure.evaluations.aligned import evaluate_aligned
from art_diffpure.attacks.autoattack import Fra31AutoAttack, autoattack_rand
from art_diffpure.attacks.diffattack import DiffAttack
from art_diffpure.attacks.diffhammer import DiffHammer
from art_diffpure.attacks.randomness_aligned import RandomnessAlignedAttack
from art_diffpure.attacks.surrogate import SurrogatePGDEOT

if TYPE_CHECKING:  # pragma: no cover
    from art.attacks.attack import EvasionAttack
    from art.estimators.classification import PyTorchClassifier

MODES = ("direct-full", "direct-bpda", "aligned", "transfer", "stochastic")
EPS = 0.1


@dataclass(frozen=True)
class AttackSpec:
    """How to build one attack on a small setting, and what it promises."""

    name: str
    build: Callable[["PyTorchClassifier"], "EvasionAttack"]
    norm: float | None = None  # the norm of its eps-ball, or None when it promises no bound
    random: bool = False  # random starts, queries or orderings: no batch-invariance check
    eot_samples: int = 1  # wrapped EOT (the AutoAttack rand version averages over draws)
    probabilities: bool = False  # the attack needs a classifier that outputs probabilities (SimBA)


def _e(name: str) -> Any:
    import art.attacks.evasion as evasion

    return getattr(evasion, name)


ATTACKS: dict[str, AttackSpec] = {s.name: s for s in [
    AttackSpec("FGSM", lambda c: _e("FastGradientMethod")(c, eps=EPS), norm=np.inf),
    AttackSpec("BIM", lambda c: _e("BasicIterativeMethod")(c, eps=EPS, eps_step=0.03, max_iter=3, verbose=False),
               norm=np.inf),
    AttackSpec("PGD (PyTorch)", lambda c: _e("ProjectedGradientDescentPyTorch")(
        c, eps=EPS, eps_step=0.03, max_iter=3, verbose=False), norm=np.inf, random=True),
    AttackSpec("PGD (numpy)", lambda c: _e("ProjectedGradientDescentNumpy")(
        c, eps=EPS, eps_step=0.03, max_iter=3, verbose=False), norm=np.inf, random=True),
    AttackSpec("PGD L2", lambda c: _e("ProjectedGradientDescent")(
        c, norm=2, eps=0.5, eps_step=0.2, max_iter=3, verbose=False), norm=2, random=True),
    AttackSpec("MIM", lambda c: _e("MomentumIterativeMethod")(c, eps=EPS, eps_step=0.03, max_iter=3, verbose=False),
               norm=np.inf),
    AttackSpec("APGD-CE", lambda c: _e("AutoProjectedGradientDescent")(
        c, eps=EPS, eps_step=EPS, max_iter=3, nb_random_init=1, loss_type="cross_entropy", verbose=False),
        norm=np.inf, random=True),
    AttackSpec("APGD-DLR", lambda c: _e("AutoProjectedGradientDescent")(
        c, eps=EPS, eps_step=EPS, max_iter=3, nb_random_init=1, loss_type="difference_logits_ratio",
        verbose=False), norm=np.inf, random=True),
    AttackSpec("AutoAttack standard (fra31)", lambda c: Fra31AutoAttack(
        c, eps=EPS, n_iter=2, n_queries=5, n_target_classes=2), norm=np.inf, random=True),
    AttackSpec("AutoAttack rand (ART)", lambda c: autoattack_rand(c, eps=EPS, max_iter=2), norm=np.inf,
               random=True, eot_samples=2),
    AttackSpec("C&W L2", lambda c: _e("CarliniL2Method")(c, max_iter=2, binary_search_steps=2, verbose=False)),
    AttackSpec("C&W Linf", lambda c: _e("CarliniLInfMethod")(c, max_iter=2, verbose=False)),
    AttackSpec("DeepFool", lambda c: _e("DeepFool")(c, max_iter=3, verbose=False)),
    AttackSpec("ElasticNet", lambda c: _e("ElasticNet")(c, max_iter=2, binary_search_steps=1, verbose=False)),
    AttackSpec("NewtonFool", lambda c: _e("NewtonFool")(c, max_iter=3, verbose=False)),
    AttackSpec("JSMA", lambda c: _e("SaliencyMapMethod")(c, theta=0.1, gamma=0.2, verbose=False)),
    AttackSpec("Wasserstein", lambda c: _e("Wasserstein")(
        c, kernel_size=3, eps=0.3, max_iter=2, eps_iter=2, conjugate_sinkhorn_max_iter=20,
        projected_sinkhorn_max_iter=20, verbose=False)),
    AttackSpec("Square", lambda c: _e("SquareAttack")(c, eps=EPS, max_iter=5, nb_restarts=1, verbose=False),
               norm=np.inf, random=True),
    AttackSpec("HopSkipJump", lambda c: _e("HopSkipJump")(c, max_iter=1, max_eval=10, init_eval=5, init_size=10,
                                                          verbose=False), random=True),
    AttackSpec("Boundary", lambda c: _e("BoundaryAttack")(c, targeted=False, max_iter=2, num_trial=5, sample_size=5,
                                                          init_size=10, verbose=False), random=True),
    AttackSpec("ZOO", lambda c: _e("ZooAttack")(c, max_iter=2, nb_parallel=4, use_resize=False, use_importance=False,
                                                verbose=False), random=True),
    AttackSpec("UniversalPerturbation", lambda c: _e("UniversalPerturbation")(
        c, attacker="fgsm", attacker_params={"eps": EPS}, eps=EPS, max_iter=2, verbose=False), random=True),
    # GeoDA needs enough queries for its query schedule (fewer than ~200 fail in ART itself); it caches its DCT
    # basis as a .npy file in the working directory.
    AttackSpec("GeoDA", lambda c: _e("GeoDA")(c, max_iter=300, sub_dim=4, verbose=False), random=True),
    AttackSpec("SimBA", lambda c: _e("SimBA")(c, attack="px", max_iter=5, epsilon=EPS, verbose=False), random=True,
               probabilities=True),
    # The attacks built for diffusion purification (their random starts are seeded per batch: random=True).
    AttackSpec("DiffHammer", lambda c: DiffHammer(c, eps=EPS, max_iter=2, n_draws=2, losses=("ce",)), norm=np.inf,
               random=True),
    AttackSpec("DiffAttack", lambda c: DiffAttack(c, eps=EPS, max_iter=2, eot_samples=2, every=1, losses=("ce",)),
               norm=np.inf, random=True),
    AttackSpec("Surrogate PGD-EOT", lambda c: SurrogatePGDEOT(c, eps=EPS, max_iter=2, eot_samples=2,
                                                              surrogate_steps=1), norm=np.inf, random=True),
]}

#: Cells that cannot run by design, and the words of the error they stop with: the purification attacks
#: backpropagate through the purifier (no BPDA purifier) and need one (no undefended classifier).
NOT_APPLICABLE = {
    **{(name, "direct-bpda"): "gradient='full'" for name in ("DiffHammer", "DiffAttack")},
    **{(name, "undefended"): "no DiffusionPurifier" for name in ("DiffHammer", "DiffAttack", "Surrogate PGD-EOT")},
}

#: Attacks ART itself cannot run in this environment, undefended too (the defended cells then fail the same way).
KNOWN_ART_FAILURES = {
    "GeoDA": "ART 1.20.1 calls np.mat, which NumPy 2 removed",
}

#: The cells CI runs on every change (the whole matrix is ``pytest -m slow``): every attack wrapped in the aligned
#: mode, and the direct cells of the attacks that failed before the purifier clamped and cast its inputs.
FAST_CELLS = [(name, "aligned") for name in ATTACKS] + [
    (name, "direct-full") for name in ("ElasticNet", "ZOO", "UniversalPerturbation", "NewtonFool", "GeoDA",
                                       "HopSkipJump", "Boundary")
] + [("AutoAttack rand (ART)", mode) for mode in ("transfer", "stochastic")] + [
    ("AutoAttack standard (fra31)", "stochastic"), ("DeepFool", "direct-bpda")] + [
    (name, mode) for name in ("DiffHammer", "DiffAttack", "Surrogate PGD-EOT") for mode in ("direct-full", "stochastic")
] + [cell for cell in NOT_APPLICABLE if cell[1] in MODES]


@dataclass
class Cell:
    """One attack in one mode."""

    attack: str
    mode: str
    runs: bool
    error: str | None = None
    within_eps: bool | None = None
    within_clip: bool | None = None
    finite: bool | None = None
    audit_ok: bool | None = None
    rows_purified: int | None = None
    rows_intended: int | None = None
    identification: str | None = None
    batch_invariant: bool | None = None
    batch_max_diff: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _within(spec: AttackSpec, x: np.ndarray, x_adv: np.ndarray, eps: float) -> bool | None:
    if spec.norm is None:
        return None
    d = (x_adv - x).reshape(len(x), -1).astype(np.float64)
    size = np.abs(d).max(axis=1) if np.isinf(spec.norm) else np.linalg.norm(d, ord=spec.norm, axis=1)
    return bool((size <= eps * (1 + 1e-5) + 1e-6).all())


def _eps(spec: AttackSpec, attack: "EvasionAttack") -> float:
    return float(np.max(getattr(attack, "eps", EPS)))


def run_cell(spec: AttackSpec, mode: str, make_classifier: Callable[..., "PyTorchClassifier"],
             x: np.ndarray, y: np.ndarray) -> Cell:
    """
    Run ``spec`` in ``mode`` on ``x`` (labels ``y``). ``make_classifier(gradient, probabilities)`` returns a fresh
    defended classifier whose purifier has a fixed seed and the given gradient mode (``"full"`` or ``"bpda"``),
    with a softmax output when ``probabilities``.
    """
    t0 = time.perf_counter()
    cell = Cell(spec.name, mode, runs=False)
    try:
        classifier = make_classifier("bpda" if mode == "direct-bpda" else "full", spec.probabilities)
        attack = spec.build(classifier)
        if mode.startswith("direct"):
            x_adv = attack.generate(x, one_hot(y, classifier.nb_classes))  # ART's format; SimBA takes no other
        else:
            wrapped = RandomnessAlignedAttack(classifier, attack=attack, randomness=mode, seed=0, batch_size=len(x),
                                              eot_samples=spec.eot_samples)
            report = evaluate_aligned(wrapped, x, y).to_dict()
            x_adv = wrapped.last_x_adv
            audit = report["audit"]["attack"]
            cell.audit_ok = bool(audit["ok"] and report["audit"]["test"]["ok"])
            cell.rows_purified, cell.rows_intended = audit["rows_purified"], audit["rows_intended"]
            cell.identification = report["identification"]
            if mode == "aligned" and not spec.random:
                cell.batch_max_diff = _batch_vs_alone(spec, classifier, x, y, x_adv)
                cell.batch_invariant = cell.batch_max_diff <= 1e-5
        cell.runs = True
        cell.within_eps = _within(spec, x, x_adv, _eps(spec, attack))
        finite = np.isfinite(x_adv)
        cell.finite = bool(finite.all())
        cell.within_clip = bool(x_adv[finite].min(initial=0.0) >= -1e-6 and x_adv[finite].max(initial=1.0) <= 1 + 1e-6)
    except Exception as err:  # a cell records why an attack fails; the matrix goes on
        cell.error = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        cell.error += f" ({_where(err)})"
    cell.seconds = time.perf_counter() - t0
    return cell


def _batch_vs_alone(spec: AttackSpec, classifier: "PyTorchClassifier", x: np.ndarray, y: np.ndarray,
                    x_adv: np.ndarray) -> float:
    """Largest difference between the batch's examples ``x_adv`` and those each sample gets attacked alone."""
    alone = np.concatenate([
        RandomnessAlignedAttack(classifier, attack=spec.build(classifier), seed=0, batch_size=1,
                                eot_samples=spec.eot_samples).generate(x[i:i + 1], y[i:i + 1], sample_ids=[i])
        for i in range(len(x))])
    diff = np.abs(alone - x_adv)
    diff[np.isnan(alone) & np.isnan(x_adv)] = 0.0  # the same NaN rows (Wasserstein) are equal
    return float(diff.max())


def _where(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    last = frames[-1] if frames else None
    return "?" if last is None else f"{last.filename.split('site-packages/')[-1]}:{last.lineno}"


def run_undefended(spec: AttackSpec, make_plain: Callable[[bool], "PyTorchClassifier"], x: np.ndarray,
                   y: np.ndarray) -> Cell:
    """The same attack on the undefended classifier (``make_plain(probabilities)``): does ART itself run it here?"""
    t0 = time.perf_counter()
    cell = Cell(spec.name, "undefended", runs=False)
    try:
        classifier = make_plain(spec.probabilities)
        attack = spec.build(classifier)
        x_adv = attack.generate(x, one_hot(y, classifier.nb_classes))  # ART's format; SimBA takes no other
        cell.runs = True
        cell.within_eps = _within(spec, x, x_adv, _eps(spec, attack))
        cell.finite = bool(np.isfinite(x_adv).all())
    except Exception as err:  # noqa: BLE001 - recorded, not hidden
        cell.error = f"{type(err).__name__}: {err}".splitlines()[0][:300] + f" ({_where(err)})"
    cell.seconds = time.perf_counter() - t0
    return cell


__all__ = ["ATTACKS", "AttackSpec", "Cell", "FAST_CELLS", "KNOWN_ART_FAILURES", "MODES", "NOT_APPLICABLE", "run_cell",
           "run_undefended"]
