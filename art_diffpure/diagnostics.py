"""
Robustness curves and gradient-masking diagnostics for diffusion-purified ART classifiers.

A single robust-accuracy number at one budget hides the two ways an evaluation of a stochastic, deep
purifier goes wrong: the attack's randomness differs from the test's (Section 4 of the paper), and the
gradients through a long denoising chain are masked (vanishing or exploding through many steps, or
zeroed by ``clip_sample``'s clamp). This module exposes both:

- :func:`robustness_curve`: robust accuracy against eps for every randomness mode (``"aligned"``,
  ``"transfer"``, ``"stochastic"``, optionally ``"eot"``) on the same images and PGD settings, next to
  the undefended classifier's curve and the paper's compression-rate prediction (Section 5): the
  purified classifier at eps behaves like the plain classifier at ``alpha * eps``;
- :func:`gradient_masking_diagnostics`: the usual checklist (gradient-free vs gradient attack, large
  budgets, more iterations / restarts, gradient health along the chain, ART's ``loss_gradient_check``)
  run on the FIXED-randomness purifier, so the result is deterministic.

| Paper link: https://arxiv.org/abs/2505.22839 (Liu & Wei, "How Do Diffusion Models Improve Adversarial Robustness?")
| Paper link (obfuscated gradients): https://arxiv.org/abs/1802.00420 (Athalye et al. 2018)
| Paper link (evaluation checklist): https://arxiv.org/abs/1902.06705 (Carlini et al. 2019)
| Paper link (Square Attack): https://arxiv.org/abs/1912.00049
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from art_diffpure.attack import RandomnessAlignedAttack
from art_diffpure.metrics import _plain
from art_diffpure.purifier import DiffusionPurifier

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from art.estimators.classification import PyTorchClassifier
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

CURVE_MODES = ("aligned", "transfer", "stochastic", "eot")
VERDICTS = ("pass", "warn", "n/a")


# ---------------------------------------------------------------------------------------------------- results
class _Result:
    """Mixin: ``to_dict()`` of a dataclass as plain, JSON-serialisable python (NaN/inf to ``None``)."""

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if not f.name.startswith("_")}


@dataclass
class RobustnessCurve(_Result):
    """
    Robust accuracy as a function of the Linf budget.

    :param eps: the budgets, in the order given.
    :param modes: the randomness modes evaluated.
    :param robust_accuracy: per mode, robust accuracy at every eps (under that mode's test randomness).
    :param clean_accuracy: per mode, clean accuracy at every eps (varies with eps only in fresh-randomness modes).
    :param success: per mode, per eps, the per-sample attack success.
    :param undefended: robust accuracy of the classifier WITHOUT its preprocessing defences, same PGD.
    :param undefended_clean_accuracy: clean accuracy of the undefended classifier.
    :param compression_rate: per eps, the purifier's compression rate alpha (eq. 10, ``compression_norm``,
        at a fixed seed; 1.0 without a purifier, ``None`` if it could not be measured).
    :param theory_eps: ``eps * compression_rate`` per eps.
    :param theory: the undefended PGD evaluated at ``theory_eps`` (the paper's prediction; not interpolated).
    :param monotone: per mode, whether the curve is non-increasing in eps (within ``monotone_tolerance``).
    :param notes: explanations, e.g. why a curve is not monotone or why the theory curve is missing.
    :param config: the attack settings.
    """

    eps: list[float]
    modes: list[str]
    robust_accuracy: dict[str, list[float]]
    clean_accuracy: dict[str, list[float]]
    success: dict[str, list[list[bool]]]
    undefended: list[float]
    undefended_clean_accuracy: float
    compression_rate: list[float | None] | None
    theory_eps: list[float | None] | None
    theory: list[float | None] | None
    monotone: dict[str, bool]
    notes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class DiagnosticCheck(_Result):
    """One item of the checklist: ``verdict`` is ``"pass"``, ``"warn"`` or ``"n/a"``, with the numbers behind it."""

    name: str
    verdict: str
    numbers: dict[str, Any]
    explanation: str


@dataclass
class DiagnosticsResult(_Result):
    """The checklist: ``overall`` is ``"warn"`` if any check warns, else ``"pass"``."""

    checks: list[DiagnosticCheck]
    overall: str
    config: dict[str, Any] = field(default_factory=dict)

    def check(self, name: str) -> DiagnosticCheck:
        """The check called ``name``."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"No check {name!r}; have {[c.name for c in self.checks]}")


# ---------------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def seeded_numpy(seed: int) -> Iterator[None]:
    """Seed numpy's GLOBAL RNG (ART's random starts and SquareAttack draw from it) and restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(int(seed) % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)


def find_purifier(classifier: Any) -> DiffusionPurifier | None:
    """The (single) :class:`DiffusionPurifier` among the classifier's preprocessing defences, or ``None``."""
    found = [d for d in (getattr(classifier, "preprocessing_defences", None) or []) if isinstance(d, DiffusionPurifier)]
    if len(found) > 1:
        raise ValueError(f"The classifier has {len(found)} DiffusionPurifiers; exactly one is supported")
    return found[0] if found else None


def _clone(classifier: "PyTorchClassifier", defences: list | None) -> "PyTorchClassifier":
    params = classifier.get_params()
    params["preprocessing_defences"] = defences or None
    return type(classifier)(**params)


def as_classifier(classifier: Any, x: np.ndarray, purifier: Any = None, nb_classes: int | None = None,
                  clip_values: tuple[float, float] = (0.0, 1.0)) -> "PyTorchClassifier":
    """
    An ART ``PyTorchClassifier`` from an ART classifier or a torch model, with ``purifier`` appended to its
    preprocessing defences when given (and not already there).

    :param classifier: an ART ``PyTorchClassifier`` or a ``torch.nn.Module`` returning logits.
    :param x: sample inputs (their shape gives ``input_shape`` for a torch model).
    :param purifier: an optional ART ``PreprocessorPyTorch`` (e.g. a :class:`DiffusionPurifier`).
    :param nb_classes: classes of a torch model (default: from its output on ``x[:1]``).
    :param clip_values: input range of a torch model.
    """
    import torch
    from art.estimators.classification import PyTorchClassifier

    if isinstance(classifier, PyTorchClassifier):
        defences = list(classifier.preprocessing_defences or [])
        if purifier is None or any(d is purifier for d in defences):
            return classifier
        return _clone(classifier, defences + [purifier])
    if not isinstance(classifier, torch.nn.Module):
        raise ValueError(f"classifier must be an ART PyTorchClassifier or a torch.nn.Module, got {type(classifier).__name__}")
    if nb_classes is None:
        with torch.no_grad():
            device = next(iter(classifier.parameters()), torch.empty(0)).device
            nb_classes = int(classifier.eval()(torch.as_tensor(x[:1]).to(device)).shape[1])
    return PyTorchClassifier(model=classifier.eval(), loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                             nb_classes=nb_classes, clip_values=clip_values,
                             preprocessing_defences=[purifier] if purifier is not None else None, device_type="gpu")


def undefended(classifier: "PyTorchClassifier") -> "PyTorchClassifier":
    """A clone of ``classifier`` (same torch model) without its preprocessing defences."""
    return _clone(classifier, None) if classifier.preprocessing_defences else classifier


def _labels(y: Any) -> np.ndarray:
    y = np.asarray(y)
    return y.argmax(axis=1) if y.ndim == 2 else y.astype(np.int64)


def run_pgd(classifier: "PyTorchClassifier", x: np.ndarray, y: np.ndarray, eps: float, mode: str = "aligned", *,
            rel_step: float = 0.1, max_iter: int = 10, num_random_init: int = 1, seed: int = 0, batch_size: int = 32,
            eot_samples: int = 4, attack_factory: Any = None) -> dict[str, Any]:
    """
    Attack ``x`` with Linf PGD (or ``attack_factory(estimator)``) and test it, reproducibly.

    With a :class:`DiffusionPurifier` in the classifier this is :class:`RandomnessAlignedAttack` in ``mode``
    (``"eot"``: stochastic with ``eot_samples`` EOT copies; the fresh-randomness generator is reseeded from
    ``seed`` first); without one, the plain ART attack on the classifier (every mode is then the same attack).
    Numpy's global RNG is seeded from ``seed`` for the call and restored afterwards.

    :return: ``robust_accuracy``, ``clean_accuracy``, per-sample ``success`` / ``adv_correct`` / ``clean_correct``.
    """
    labels = _labels(y)
    eps = float(eps)  # ART's PGD wants eps and eps_step of the same python type
    purifier = find_purifier(classifier)
    with seeded_numpy(seed):
        if purifier is not None:
            randomness = "stochastic" if mode in ("stochastic", "eot") else mode
            if randomness == "stochastic":
                purifier.reseed_fresh(seed)
            attack = RandomnessAlignedAttack(
                classifier, attack=attack_factory, randomness=randomness, seed=seed,
                eot_samples=eot_samples if mode == "eot" else 1, eps=eps, eps_step=float(rel_step * eps),
                max_iter=int(max_iter), num_random_init=int(num_random_init), batch_size=int(batch_size))
            report = attack.evaluate(x, labels)
            return {k: report[k] for k in ("robust_accuracy", "clean_accuracy", "success", "adv_correct", "clean_correct")}
        if attack_factory is None:
            from art.attacks.evasion import ProjectedGradientDescent

            attack = ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=float(rel_step * eps),
                                              max_iter=max_iter, num_random_init=num_random_init,
                                              batch_size=batch_size, verbose=False)
        else:
            attack = attack_factory(classifier)
        onehot = np.eye(classifier.nb_classes, dtype=np.float32)[labels]
        x_adv = attack.generate(x, onehot)
        clean = classifier.predict(x, batch_size=batch_size).argmax(axis=1) == labels
        adv = classifier.predict(x_adv, batch_size=batch_size).argmax(axis=1) == labels
    return {"robust_accuracy": float(adv.mean()), "clean_accuracy": float(clean.mean()), "success": (~adv).tolist(),
            "adv_correct": adv.tolist(), "clean_correct": clean.tolist()}


def _is_non_increasing(values: Sequence[float], eps: Sequence[float], tol: float) -> bool:
    order = np.argsort(eps, kind="stable")
    v = np.asarray(values, dtype=float)[order]
    return bool(np.all(np.diff(v) <= tol + 1e-12))


# ---------------------------------------------------------------------------------------------------- curves
def robustness_curve(
    classifier: Any,
    x: np.ndarray,
    y: np.ndarray,
    eps_list: Sequence[float],
    purifier: Any = None,
    modes: Sequence[str] = ("aligned", "transfer", "stochastic"),
    rel_step: float = 0.1,
    max_iter: int = 10,
    num_random_init: int = 1,
    seed: int = 0,
    batch_size: int = 32,
    eot_samples: int = 4,
    compression: bool = True,
    compression_samples: int = 4,
    compression_norm: str = "l2",
    compression_seed: int | None = None,
    nb_classes: int | None = None,
    monotone_tolerance: float = 0.0,
) -> RobustnessCurve:
    """
    Robust accuracy against the Linf budget for each randomness mode, on the same images and PGD settings,
    with the undefended classifier's curve and the paper's compression-rate prediction beside it.

    The prediction (Section 5): a purifier with compression rate alpha maps an eps-perturbation to roughly an
    ``alpha * eps`` one, so the purified classifier at eps should be about as robust as the plain classifier
    at ``alpha * eps``. alpha is measured per eps with :func:`art_diffpure.metrics.compression_rate`
    (gradient-free, random perturbations in the eps-ball, one fixed seed), and the undefended PGD is RUN at
    ``alpha * eps`` (no interpolation). Robust accuracy counts clean errors as failures.

    :param classifier: an ART ``PyTorchClassifier`` (with or without a purifier) or a torch model.
    :param x: clean images ``(n, ...)`` in the classifier's clip range.
    :param y: labels (indices or one-hot).
    :param eps_list: Linf budgets, e.g. from the undefended classifier's breaking point down to small values.
    :param purifier: a purifier to add to the classifier's preprocessing defences (optional).
    :param modes: randomness modes among ``"aligned"``, ``"transfer"``, ``"stochastic"``, ``"eot"``.
    :param rel_step: PGD step ``eps_step = rel_step * eps``.
    :param max_iter: PGD iterations.
    :param num_random_init: PGD random starts.
    :param seed: base seed of the attack randomness (and of numpy's global RNG during each attack).
    :param batch_size: attack batch size.
    :param eot_samples: EOT copies of the ``"eot"`` mode.
    :param compression: measure the compression rate and the theory curve.
    :param compression_samples: random perturbations per image for the compression rate.
    :param compression_norm: norm of the compression rate (``"l2"`` or ``"linf"``).
    :param compression_seed: purifier seed of the compression rate (default: the purifier's own seed, else ``seed``).
    :param nb_classes: classes of a torch model (default: inferred).
    :param monotone_tolerance: allowed increase of accuracy between consecutive budgets.
    """
    x = np.asarray(x, dtype=np.float32)
    labels = _labels(y)
    classifier = as_classifier(classifier, x, purifier, nb_classes)
    eps_values = [float(e) for e in eps_list]
    modes = list(modes)
    if not eps_values or any(e <= 0 for e in eps_values):
        raise ValueError(f"eps_list must be non-empty and positive, got {eps_list!r}")
    bad = [m for m in modes if m not in CURVE_MODES]
    if bad or not modes:
        raise ValueError(f"Unknown modes {bad}; expected some of {CURVE_MODES}")
    purifier = find_purifier(classifier)
    plain = undefended(classifier)
    kwargs = dict(rel_step=rel_step, max_iter=max_iter, num_random_init=num_random_init, seed=seed,
                  batch_size=batch_size, eot_samples=eot_samples)
    notes: list[str] = []

    robust: dict[str, list[float]] = {m: [] for m in modes}
    clean: dict[str, list[float]] = {m: [] for m in modes}
    success: dict[str, list[list[bool]]] = {m: [] for m in modes}
    for mode in modes:
        for eps in eps_values:
            r = run_pgd(classifier, x, labels, eps, mode, **kwargs)
            robust[mode].append(r["robust_accuracy"])
            clean[mode].append(r["clean_accuracy"])
            success[mode].append(r["success"])
    plain_runs = [run_pgd(plain, x, labels, eps, "aligned", **kwargs) for eps in eps_values]
    undef = [r["robust_accuracy"] for r in plain_runs]
    undef_clean = plain_runs[0]["clean_accuracy"]
    if purifier is None:
        notes.append("The classifier has no DiffusionPurifier: every randomness mode runs the same seeded attack.")

    # The theory: the undefended classifier at eps * alpha.
    rates = theory_eps = theory = None
    if compression:
        if purifier is None and classifier.preprocessing_defences:
            notes.append("No DiffusionPurifier to measure a compression rate of: no theory curve.")
        else:
            rates = []
            for eps in eps_values:
                if purifier is None:
                    rates.append(1.0)  # the identity compresses nothing
                    continue
                from art_diffpure.metrics import compression_rate

                cseed = compression_seed if compression_seed is not None else (
                    purifier.seed if purifier.seed is not None else seed)
                res = compression_rate(purifier, x, eps=eps, n_samples=compression_samples, seeds=(int(cseed),),
                                       norm=compression_norm, batch_size=max(purifier.batch_size, 1), rng_seed=seed)
                rate = res.rate  # keyed 'l2' / 'linf' however compression_norm is spelled
                rates.append(float(rate) if math.isfinite(rate) else None)
            theory_eps, theory = [], []
            for eps, rate in zip(eps_values, rates):
                if rate is None:
                    theory_eps.append(None)
                    theory.append(None)
                    continue
                reduced = eps * rate
                theory_eps.append(reduced)
                # A zero budget leaves the clean accuracy.
                theory.append(run_pgd(plain, x, labels, reduced, "aligned", **kwargs)["robust_accuracy"]
                              if reduced > 0 else undef_clean)

    monotone = {m: _is_non_increasing(robust[m], eps_values, monotone_tolerance) for m in modes}
    for m in modes:
        if monotone[m]:
            continue
        if m in ("stochastic", "eot"):
            notes.append(f"Mode {m!r} is not monotone in eps: its purifier randomness is fresh on every call, so "
                         f"clean and robust accuracy fluctuate between budgets (sampling noise, not a bug).")
        else:
            notes.append(f"Mode {m!r} is not monotone in eps ({robust[m]} at {eps_values}): PGD with a fixed number "
                         f"of steps of size rel_step*eps and one random start is a local search whose path changes "
                         f"with eps, so a larger ball can end in a worse local optimum; more iterations or restarts "
                         f"(see gradient_masking_diagnostics) should remove it, otherwise suspect masked gradients.")
    if not _is_non_increasing(undef, eps_values, monotone_tolerance):
        notes.append(f"The undefended curve is not monotone in eps ({undef}): PGD is a local search; "
                     f"use more iterations or restarts.")
    config = dict(attack="PGD", norm="inf", rel_step=rel_step, max_iter=max_iter, num_random_init=num_random_init,
                  seed=seed, batch_size=batch_size, eot_samples=eot_samples if "eot" in modes else None, n=len(x),
                  compression_norm=compression_norm, compression_samples=compression_samples,
                  purifier=None if purifier is None else {k: getattr(purifier, k) for k in
                                                          ("t_star", "sampler", "gradient", "seed")})
    return RobustnessCurve(eps_values, modes, robust, clean, success, undef, undef_clean, rates, theory_eps, theory,
                           monotone, notes, config)


def plot_robustness_curve(result: RobustnessCurve | dict, title: str | None = None) -> "Figure":
    """
    Draw a :class:`RobustnessCurve` (or its ``to_dict()``) as ONE matplotlib figure: robust accuracy against eps
    per randomness mode, the undefended curve, and the compression-rate prediction. Nothing is written to disk.

    :param result: the curve.
    :param title: optional title.
    :return: the ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    d = result.to_dict() if hasattr(result, "to_dict") else result
    eps = np.asarray(d["eps"], dtype=float)
    order = np.argsort(eps)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    styles = {"aligned": "o-", "transfer": "s--", "stochastic": "^:", "eot": "d-."}
    for mode in d["modes"]:
        ax.plot(eps[order], np.asarray(d["robust_accuracy"][mode], dtype=float)[order], styles.get(mode, "o-"),
                label=f"purified, {mode}")
    ax.plot(eps[order], np.asarray(d["undefended"], dtype=float)[order], "k-", lw=2, label="undefended")
    if d.get("theory"):
        th = np.array([np.nan if v is None else v for v in d["theory"]], dtype=float)[order]
        ax.plot(eps[order], th, "k--", alpha=0.6, label=r"theory: undefended at $\alpha\,\epsilon$")
    ax.set_xlabel(r"$\epsilon$ ($L_\infty$)")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------- diagnostics
def _chain_gradients(classifier: "PyTorchClassifier", purifier: DiffusionPurifier | None, x: np.ndarray,
                     labels: np.ndarray, seed: int) -> tuple[np.ndarray, list[float] | None]:
    """
    Input gradient of the loss under fixed randomness and, with a purifier whose model is a torch module, the
    norm of dL/dx_t at every reverse step (mean over samples): a forward pre-hook on ``purifier.model`` records
    every x_t it is called with and ``retain_grad()``s it; ART's ``loss_gradient`` then backpropagates.
    """
    import torch

    onehot = np.eye(classifier.nb_classes, dtype=np.float32)[labels]
    if purifier is None:
        return np.asarray(classifier.loss_gradient(x, onehot)), None
    states: list[torch.Tensor] = []

    def hook(_module, args):
        x_t = args[0] if args else None
        if isinstance(x_t, torch.Tensor) and x_t.requires_grad:
            x_t.retain_grad()
            states.append(x_t)

    handle = purifier.model.register_forward_pre_hook(hook) if isinstance(purifier.model, torch.nn.Module) else None
    checkpoint = purifier.checkpoint
    purifier.checkpoint = False  # checkpointing would re-run the hook while recomputing; gradients are identical
    try:
        with purifier.randomness(seed, np.arange(len(x))):
            grad = np.asarray(classifier.loss_gradient(x, onehot))
    finally:
        purifier.checkpoint = checkpoint
        if handle is not None:
            handle.remove()
    if handle is None:
        return grad, None
    per_step = []
    for s in states:  # in chain order: the first model input is x_{t*-1}, the last x_0's predecessor
        g = s.grad
        per_step.append(0.0 if g is None else float(g.detach().reshape(len(g), -1).norm(dim=1).mean()))
    return grad, per_step


def gradient_masking_diagnostics(
    classifier: Any,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    purifier: Any = None,
    seed: int = 0,
    rel_step: float = 0.1,
    max_iter: int = 10,
    batch_size: int = 32,
    square_queries: int = 100,
    square_tolerance: float = 0.05,
    large_eps: Sequence[float] = (0.25, 0.5, 1.0),
    large_eps_threshold: float | None = None,
    iterations: Sequence[int] = (5, 10, 20, 40),
    restarts: Sequence[int] = (1, 3),
    count_tolerance: int = 1,
    vanishing_norm: float = 1e-8,
    zero_fraction_threshold: float = 0.5,
    exploding_ratio: float = 1e4,
    n_gradient_samples: int = 8,
    nb_classes: int | None = None,
) -> DiagnosticsResult:
    """
    The gradient-masking checklist (Athalye et al. 2018; Carlini et al. 2019), on the FIXED-randomness purifier
    (aligned mode, base seed ``seed``, sample id = position), so the result is deterministic. Each check gives
    ``"pass"`` or ``"warn"`` (``"n/a"`` when it does not apply) with its numbers:

    - ``gradient_free_attack``: SquareAttack (Linf, ``eps``, ``square_queries`` iterations) must not beat PGD:
      warn if its success rate exceeds PGD's by more than ``square_tolerance``, or if the samples it breaks
      and PGD does not exceed ``square_tolerance`` of the samples;
    - ``large_eps``: robust accuracy at ``large_eps`` (fractions of the input range) must fall to about 0: warn
      above ``large_eps_threshold`` (default chance, ``1 / nb_classes``) at the largest budget;
    - ``iterations_restarts``: PGD success must not fall with more ``iterations`` or ``restarts``: warn if the
      number of successes falls by more than ``count_tolerance``;
    - ``gradient_health``: input-gradient norm and fraction of exactly-zero entries: warn on vanishing (mean norm
      < ``vanishing_norm``), zero fraction > ``zero_fraction_threshold`` or non-finite gradients;
    - ``chain_gradients``: the norm of dL/dx_t at every reverse step, from x_t recorded by a forward pre-hook on
      ``purifier.model``: warn if some step's gradient is zero or the largest / smallest per-step norm exceeds
      ``exploding_ratio`` (``"n/a"`` without a purifier);
    - ``loss_gradient_check``: ART's ``art.metrics.loss_gradient_check`` per sample: warn on any NaN/inf gradient
      or if more than ``zero_fraction_threshold`` of the samples have an all-zero gradient.

    :param classifier: an ART ``PyTorchClassifier`` (with or without a purifier) or a torch model.
    :param x: clean images ``(n, ...)``.
    :param y: labels (indices or one-hot).
    :param eps: the Linf budget under test.
    :param purifier: a purifier to add to the classifier's preprocessing defences (optional).
    :param seed: base seed of the fixed randomness and of numpy's global RNG during each attack.
    :param rel_step: PGD step ``rel_step * eps``.
    :param max_iter: PGD iterations of the reference attack (and of the large-eps and restart checks).
    :param batch_size: attack batch size.
    :param square_queries: SquareAttack iterations (one model query each).
    :param square_tolerance: tolerance of the gradient-free check (fraction of samples).
    :param large_eps: large budgets, as fractions of the input range.
    :param large_eps_threshold: highest acceptable accuracy at the largest budget (default ``1 / nb_classes``).
    :param iterations: PGD iteration counts of the iterations check.
    :param restarts: PGD random-start counts of the restarts check.
    :param count_tolerance: allowed drop of the number of successful samples.
    :param vanishing_norm: mean input-gradient norm below which gradients count as vanished.
    :param zero_fraction_threshold: fraction of exactly-zero gradient entries (or all-zero samples) that warns.
    :param exploding_ratio: ratio of largest to smallest per-step gradient norm that warns.
    :param n_gradient_samples: samples used for the gradient checks (backprop through the whole chain).
    :param nb_classes: classes of a torch model (default: inferred).
    """
    from art.attacks.evasion import SquareAttack
    from art.metrics.gradient_check import loss_gradient_check

    x = np.asarray(x, dtype=np.float32)
    labels = _labels(y)
    classifier = as_classifier(classifier, x, purifier, nb_classes)
    purifier = find_purifier(classifier)
    n = len(x)
    lo, hi = classifier.clip_values if classifier.clip_values is not None else (0.0, 1.0)
    kwargs = dict(rel_step=rel_step, seed=seed, batch_size=batch_size)
    chance = 1.0 / classifier.nb_classes
    threshold = chance if large_eps_threshold is None else large_eps_threshold
    checks: list[DiagnosticCheck] = []

    # 1. Gradient-free attack vs gradient attack at the same budget.
    pgd = run_pgd(classifier, x, labels, eps, "aligned", max_iter=max_iter, **kwargs)
    square = run_pgd(classifier, x, labels, eps, "aligned", max_iter=max_iter, attack_factory=lambda est: SquareAttack(
        est, norm=np.inf, eps=eps, max_iter=square_queries, nb_restarts=1, batch_size=batch_size, verbose=False),
        **kwargs)
    s_pgd, s_sq = np.asarray(pgd["success"]), np.asarray(square["success"])
    square_only = int((s_sq & ~s_pgd).sum())
    warn = s_sq.mean() > s_pgd.mean() + square_tolerance or square_only > square_tolerance * n
    checks.append(DiagnosticCheck(
        "gradient_free_attack", "warn" if warn else "pass",
        dict(eps=eps, pgd_success_rate=float(s_pgd.mean()), square_success_rate=float(s_sq.mean()),
             pgd_successes=int(s_pgd.sum()), square_successes=int(s_sq.sum()), square_only=square_only,
             pgd_only=int((s_pgd & ~s_sq).sum()), square_queries=square_queries, tolerance=square_tolerance),
        "A gradient-free attack beat the gradient attack: its gradients are likely masked." if warn else
        "The gradient attack finds at least what the gradient-free attack finds."))

    # 2. Robust accuracy must fall towards 0 as eps grows.
    budgets = [float(f) * float(hi - lo) for f in large_eps]
    accs = [run_pgd(classifier, x, labels, e, "aligned", max_iter=max_iter, **kwargs)["robust_accuracy"]
            for e in budgets]
    warn = accs[-1] > threshold
    checks.append(DiagnosticCheck(
        "large_eps", "warn" if warn else "pass",
        dict(eps=budgets, robust_accuracy=accs, threshold=threshold, chance=chance),
        f"Robust accuracy stays at {accs[-1]:.3f} > {threshold:.3f} at eps={budgets[-1]:g}: the attack cannot even "
        f"use an unbounded budget, a sign of masked gradients." if warn else
        "Robust accuracy falls to chance or below at large budgets."))

    # 3. More iterations / restarts must not reduce success.
    by_iter = [int(np.sum(run_pgd(classifier, x, labels, eps, "aligned", max_iter=int(k), **kwargs)["success"]))
               for k in iterations]
    by_restart = [int(np.sum(run_pgd(classifier, x, labels, eps, "aligned", max_iter=max_iter, num_random_init=int(r),
                                     **kwargs)["success"])) for r in restarts]
    drop_iter = max([0] + [max(by_iter[:i]) - by_iter[i] for i in range(1, len(by_iter))])
    drop_restart = max([0] + [max(by_restart[:i]) - by_restart[i] for i in range(1, len(by_restart))])
    warn = max(drop_iter, drop_restart) > count_tolerance
    checks.append(DiagnosticCheck(
        "iterations_restarts", "warn" if warn else "pass",
        dict(eps=eps, iterations=list(map(int, iterations)), successes_by_iterations=by_iter,
             restarts=list(map(int, restarts)), successes_by_restarts=by_restart, n=n,
             largest_drop_iterations=int(drop_iter), largest_drop_restarts=int(drop_restart),
             tolerance=count_tolerance),
        "Attack success falls with more iterations or restarts: the loss surface the attack sees is unreliable."
        if warn else "Attack success does not fall with more iterations or restarts."))

    # 4. Gradient health along the chain (fixed randomness, a few samples).
    m = min(n, n_gradient_samples)
    grad, per_step = _chain_gradients(classifier, purifier, x[:m], labels[:m], seed)
    norms = np.linalg.norm(grad.reshape(m, -1), axis=1)
    zero_fraction = float(np.mean(grad == 0))
    finite = bool(np.isfinite(grad).all())
    reasons = []
    if not finite:
        reasons.append("non-finite input gradients")
    if float(norms.mean()) < vanishing_norm:
        reasons.append(f"vanishing input gradient (mean norm {norms.mean():.3g} < {vanishing_norm:g})")
    if zero_fraction > zero_fraction_threshold:
        reasons.append(f"{zero_fraction:.1%} of the input-gradient entries are exactly zero")
    checks.append(DiagnosticCheck(
        "gradient_health", "warn" if reasons else "pass",
        dict(n_samples=m, input_grad_norm_mean=float(norms.mean()), input_grad_norm_min=float(norms.min()),
             input_grad_norm_max=float(norms.max()), zero_fraction=zero_fraction, finite=finite,
             vanishing_norm=vanishing_norm, zero_fraction_threshold=zero_fraction_threshold),
        "Masked input gradients: " + "; ".join(reasons) + "." if reasons else
        "Input gradients are finite and non-zero."))

    # 5. Gradient norm through the reverse steps.
    if per_step is None:
        why = "no DiffusionPurifier" if purifier is None else "the purifier's model is not a torch module (no hooks)"
        checks.append(DiagnosticCheck("chain_gradients", "n/a", dict(per_step_grad_norm=None),
                                      f"No reverse chain to inspect: {why}."))
    else:
        step_norms = np.asarray(per_step, dtype=float)
        ratio = float(step_norms.max() / step_norms.min()) if step_norms.min() > 0 else math.inf
        n_zero = int(np.sum(step_norms == 0))
        warn = not np.all(np.isfinite(step_norms)) or ratio > exploding_ratio
        if n_zero == len(step_norms):
            why = "dL/dx_t is zero at every reverse step: the gradient is cut after the chain"
        elif n_zero:
            why = f"dL/dx_t is zero at {n_zero} of {len(step_norms)} reverse steps (e.g. clip_sample's clamp)"
        else:
            why = f"the per-step gradient norm varies by a factor {ratio:.3g} > {exploding_ratio:g} (exploding or vanishing)"
        checks.append(DiagnosticCheck(
            "chain_gradients", "warn" if warn else "pass",
            dict(n_steps=len(per_step), per_step_grad_norm=per_step, first_step_norm=per_step[0],
                 last_step_norm=per_step[-1], max_min_ratio=ratio, zero_steps=n_zero, exploding_ratio=exploding_ratio),
            ("Masked chain gradients: " + why + "." if warn else
             f"The norm of dL/dx_t stays within a factor {ratio:.3g} over {len(per_step)} reverse steps.")
            + " Steps listed from the first reverse step (timestep t*-1) to the last (timestep 0)."))

    # 6. ART's loss_gradient_check, per sample under that sample's fixed randomness.
    onehot = np.eye(classifier.nb_classes, dtype=np.float32)[labels[:m]]
    flags = []
    for i in range(m):
        ctx = purifier.randomness(seed, [i]) if purifier is not None else contextlib.nullcontext()
        with ctx:
            flags.append(loss_gradient_check(classifier, x[i:i + 1], onehot[i:i + 1], verbose=False)[0])
    flags = np.asarray(flags, dtype=bool).reshape(m, 3)
    zero, nan, inf = (int(v) for v in flags.sum(axis=0))
    warn = nan > 0 or inf > 0 or zero > zero_fraction_threshold * m
    checks.append(DiagnosticCheck(
        "loss_gradient_check", "warn" if warn else "pass",
        dict(n_samples=m, zero_gradient_samples=zero, nan_gradient_samples=nan, inf_gradient_samples=inf),
        f"ART's loss_gradient_check flags {zero} all-zero, {nan} NaN and {inf} inf gradients out of {m} samples."))

    overall = "warn" if any(c.verdict == "warn" for c in checks) else "pass"
    config = dict(eps=eps, seed=seed, rel_step=rel_step, max_iter=max_iter, batch_size=batch_size, n=n,
                  randomness="aligned" if purifier is not None else None,
                  purifier=None if purifier is None else {k: getattr(purifier, k) for k in
                                                          ("t_star", "sampler", "gradient")})
    return DiagnosticsResult(checks, overall, config)


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
