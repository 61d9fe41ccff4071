"""
The expensive experiments of ``art-diffpure reproduce`` as independent jobs, and the attack helpers they share.

The expensive experiments are independent jobs (an attack, a compression estimate, the neighbourhood analysis,
...). Each builds its own purifier and seeds every global RNG from nothing but its own arguments, so its result
does not depend on which process runs it or in what order: `--jobs N` runs them in N processes (a UNet at these
batch sizes uses one core about as well as two, so N single-threaded processes are ~N times faster on a CPU).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any, Callable, Iterator

import numpy as np

from art_diffpure.samplers import SAMPLERS
from art_diffpure.reproduce.presets import Setting, _nb_classes, build_setting, rel_step

__all__ = ["Job", "cpu_threads", "n_processes"]

logger = logging.getLogger(__name__)

Job = tuple  # (timer name, kind, kwargs)


# ---------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """ART's random PGD start draws from numpy's global RNG: seed it for the block, then restore it."""
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)


class _Timer:
    """Wall-clock seconds per named step (``with timer(name): ...``), in ``times``."""

    def __init__(self):
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        logger.info("%s ...", name)
        try:
            yield
        finally:
            self.times[name] = time.perf_counter() - t0


def _classifier(setting: Setting, purifier):
    """The setting's classifier behind ``purifier`` as an ART classifier."""
    from art_diffpure.models.classifier import art_classifier

    return art_classifier(setting.model, setting.x.shape[1:], _nb_classes(setting), purifier=purifier,
                          device_type="cpu" if setting.device == "cpu" else "gpu")


def _attack(setting: Setting, purifier, randomness: str, seed: int, eot: int = 1, eps: float | None = None,
            max_iter: int | None = None):
    """The setting's PGD (one random start, :func:`rel_step` steps) against classifier(purifier(x))."""
    from art_diffpure.attacks.randomness_aligned import RandomnessAlignedAttack

    eps = setting.eps if eps is None else eps
    max_iter = max_iter or setting.sizes.max_iter
    return RandomnessAlignedAttack(
        _classifier(setting, purifier), randomness=randomness, eot_samples=eot, seed=seed, eps=eps,
        eps_step=rel_step(max_iter) * eps, max_iter=max_iter, num_random_init=1,
        batch_size=setting.sizes.batch_size, verbose=False)


def _run_attack(setting: Setting, purifier, randomness: str, seed: int, x, y, eot: int = 1, eps=None, max_iter=None):
    """Attack + test; returns (report, x_adv). Numpy's global RNG (PGD's random start) is seeded from ``seed``."""
    attack = _attack(setting, purifier, randomness, seed, eot, eps, max_iter)
    if randomness == "stochastic":
        purifier.reseed_fresh(seed)
    from art_diffpure.evaluations.aligned import evaluate_aligned

    with _numpy_seed(seed):
        result = evaluate_aligned(attack, x, y)
    return result.to_dict(), attack.last_x_adv


def _predict(setting: Setting, purifier, x, seed, ids=None) -> np.ndarray:
    """Labels predicted by classifier(purifier(x)) under base seed ``seed`` (``None``: fresh)."""
    import torch

    purified = purifier.purify(x, seed=seed, sample_ids=ids) if seed is not None else purifier.purify(x)
    with torch.no_grad():
        logits = setting.model(torch.tensor(purified, device=setting.device))
    return logits.argmax(1).cpu().numpy()


# ---------------------------------------------------------------------------------------------- the job list
def _sweep_configs(setting: Setting) -> list[tuple[str, int]]:
    """
    The configurations of Table 7 and Fig. 3b, each attacked with every seed on the first ``sweep_images`` images:
    DDPM and reverse over the t* sweep (and the default t*), DDIM at the default t*.
    """
    ts = sorted(set(setting.sizes.t_sweep) | {setting.t_star})
    return [(k, t) for k in ("ddpm", "reverse") for t in ts] + [("ddim", setting.t_star)]


def _reused_attack(setting: Setting, sampler: str, t: int, seed: int) -> str | None:
    """
    The job whose adversarial examples a sweep attack can reuse, or None. The aligned attack is per sample (each
    row's noise comes from its sample id, PGD's Linf steps are per row), so the first ``sweep_images`` rows of a
    larger run are the same attack on those images; they are bit-identical to a separate run on those images when
    the batching is the same (tested), and otherwise differ only in ART's random start, which is drawn per batch.
    Table 2 covers DDPM at the default t* for every seed, Table 6 the other samplers for the first seed.
    """
    s = setting.sizes
    if t != setting.t_star or s.sweep_images > s.n_images:
        return None
    if sampler == "ddpm":
        return f"table2 aligned seed {seed}"
    return f"table6 {sampler} attack" if seed == s.seeds[0] else None


def _jobs(setting: Setting) -> list[Job]:
    """Every independent experiment of the digits/cifar10 presets, roughly longest first (for load balance)."""
    s, t_star = setting.sizes, setting.t_star
    jobs: list[Job] = [
        ("table2 pgd-eot", "attack", dict(sampler="ddpm", t_star=t_star, randomness="stochastic", seed=s.seeds[0],
                                          n=s.eot_images, eot=s.eot_samples)),
        ("gradient-masking diagnostics", "diagnostics", {}),
        ("robustness curves", "curve", {}),
    ]
    for seed in s.seeds:
        jobs += [(f"table2 aligned seed {seed}", "attack", dict(sampler="ddpm", t_star=t_star, randomness="aligned",
                                                              seed=seed, n=s.n_images)),
                 (f"table2 stochastic seed {seed}", "attack", dict(sampler="ddpm", t_star=t_star,
                                                                  randomness="stochastic", seed=seed, n=s.n_images))]
    jobs += [(f"table6 {k} attack", "attack", dict(sampler=k, t_star=t_star, randomness="aligned", seed=s.seeds[0],
                                                  n=s.n_images)) for k in ("reverse", "ddim")]
    jobs += [("tableS5 S6", "neighbourhood", {})]
    for sampler, t in _sweep_configs(setting):
        for seed in s.sweep_seed_list():
            if _reused_attack(setting, sampler, t, seed) is None:
                jobs.append((f"sweep {sampler} t*={t} seed {seed} attack", "attack", dict(
                    sampler=sampler, t_star=t, randomness="aligned", seed=seed, n=s.sweep_images)))
    jobs += [("table5 gradients", "gradient_correlation", {}), ("fig3a", "jacobian", {})]
    jobs += [(f"table6 {k} compression", "compression", dict(sampler=k, t_star=t_star, n=s.n_images))
             for k in SAMPLERS]
    jobs += [(f"sweep {k} t*={t} compression", "compression", dict(sampler=k, t_star=t, n=s.sweep_images))
             for k, t in _sweep_configs(setting)]
    return jobs


# ---------------------------------------------------------------------------------------------- one job per kind
def _job_attack(setting: Setting, purifier, kw: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    """An attack on the first ``n`` images: (evaluate() report, adversarial examples)."""
    n = kw["n"]
    return _run_attack(setting, purifier, kw["randomness"], kw["seed"], setting.x[:n], setting.y[:n],
                       eot=kw.get("eot", 1))


def _job_compression(setting: Setting, purifier, kw: dict[str, Any]) -> dict[str, float]:
    """The uniform-noise compression rate (l2) on the first ``n`` images (Table 6, Table 7, Fig. 3b)."""
    from art_diffpure import metrics

    s = setting.sizes
    rate = metrics.compression_rate(purifier, setting.x[: kw["n"]], eps=setting.eps, n_samples=s.compression_samples,
                                    seeds=(s.seeds[0],), batch_size=s.batch_size)
    return {"mean": rate.mean["l2"], "std": rate.std["l2"]}


def _job_neighbourhood(setting: Setting, purifier, kw: dict[str, Any]) -> dict[str, Any]:
    """The neighbourhood analysis: Tables S5 (variances, SNR) and S6 (centroids), Fig. 2d-f."""
    from art_diffpure import metrics

    s = setting.sizes
    hood = metrics.neighbourhood_analysis(purifier, setting.x[: s.neighbourhood_images], eps=setting.eps,
                                          n_inputs=s.neighbourhood_inputs, n_seeds=s.neighbourhood_seeds,
                                          seed=s.seeds[0], batch_size=max(s.batch_size, 64))
    var = hood.variance
    return {"tableS5": {"mean": var.mean, "std": var.std, "n": len(var.snr),
                        "per_image": {k: np.asarray(getattr(var, k)).tolist()
                                      for k in ("total", "input", "internal", "snr")}},
            "tableS6": {"mean": hood.centroids.mean, "std": hood.centroids.std,
                        "per_image": {k: np.asarray(v).tolist() for k, v in hood.centroids.per_image.items()}},
            "fig2de": {"mean": hood.correlations.mean, "std": hood.correlations.std,
                       "per_image": {k: np.asarray(v).tolist() for k, v in hood.correlations.per_image.items()}},
            "fig2f": {k: np.asarray(v) for k, v in hood.centroids.distributions.items()}}


def _job_gradient_correlation(setting: Setting, purifier, kw: dict[str, Any]) -> Any:
    """Table 5's loss-gradient correlations (fixed vs fixed, EOT vs fixed) on every image."""
    from art_diffpure.metrics.correlation import gradient_correlation

    s = setting.sizes
    return gradient_correlation(_classifier(setting, purifier), setting.x, setting.y, seed_a=s.seeds[0],
                                seed_b=s.seeds[0] + 1, eot_samples=s.eot_samples, batch_size=s.batch_size)


def _job_curve(setting: Setting, purifier, kw: dict[str, Any]) -> dict[str, Any]:
    """Robust accuracy against eps per randomness mode."""
    from art_diffpure.evaluations.robustness_curve import robustness_curve

    s = setting.sizes
    curve = robustness_curve(
        setting.model, setting.x[: s.curve_images], setting.y[: s.curve_images],
        [f * setting.eps for f in s.curve_eps_factors], purifier=purifier,
        modes=("aligned", "transfer", "stochastic"), rel_step=rel_step(s.curve_max_iter), max_iter=s.curve_max_iter,
        seed=s.seeds[0], batch_size=s.batch_size, compression_samples=s.compression_samples,
        nb_classes=_nb_classes(setting))
    return curve.to_dict()


def _job_diagnostics(setting: Setting, purifier, kw: dict[str, Any]) -> dict[str, Any]:
    """The lighter gradient-masking diagnostics (the full-strength ones are ``art-diffpure masking``)."""
    from art_diffpure.evaluations.gradient_masking import gradient_masking_diagnostics

    s = setting.sizes
    diag = gradient_masking_diagnostics(
        setting.model, setting.x[: s.diagnostics_images], setting.y[: s.diagnostics_images], setting.eps,
        purifier=purifier, seed=s.seeds[0], rel_step=rel_step(s.curve_max_iter), max_iter=s.curve_max_iter,
        batch_size=s.batch_size, square_queries=s.square_queries,
        iterations=tuple(sorted({max(1, s.curve_max_iter // 2), s.curve_max_iter, 2 * s.curve_max_iter})),
        nb_classes=_nb_classes(setting))
    return diag.to_dict()


def _job_jacobian(setting: Setting, purifier, kw: dict[str, Any]) -> dict[str, Any]:
    """Fig. 3a: the exact Jacobian spectrum of the purifier under fixed randomness."""
    from art_diffpure import metrics

    s = setting.sizes
    jac = metrics.jacobian_spectrum(purifier, setting.x[: s.jacobian_images], seed=s.seeds[0], method="exact")
    return {"singular_values": np.asarray(jac.singular_values), "mean": jac.mean, "std": jac.std,
            "n_dims": jac.n_dims}


_KINDS: dict[str, Callable[[Setting, Any, dict[str, Any]], Any]] = {
    "attack": _job_attack, "compression": _job_compression, "neighbourhood": _job_neighbourhood,
    "gradient_correlation": _job_gradient_correlation, "curve": _job_curve, "diagnostics": _job_diagnostics,
    "jacobian": _job_jacobian}


def _run_job(setting: Setting, kind: str, kw: dict[str, Any]) -> Any:
    """Run one job on a fresh purifier; the global RNGs are reset first so results do not depend on scheduling."""
    import torch

    from art_diffpure import attacks, evaluations, metrics  # noqa: F401 - the jobs' modules, imported before seeding

    if kind not in _KINDS:
        raise ValueError(f"Unknown job kind {kind!r}")
    np.random.seed(0)
    torch.manual_seed(0)
    purifier = setting.make_purifier(kw.get("sampler", "ddpm"), kw.get("t_star", setting.t_star), 0,
                                     setting.gradient)
    return _KINDS[kind](setting, purifier, kw)


# ---------------------------------------------------------------------------------------------- the process pool
_WORKER: dict[str, Any] = {}


def _worker_init(args: Any, threads: int, parent_pid: int) -> None:
    """A pool process: ``threads`` torch threads and its own copy of the setting, rebuilt from ``args``; it ends
    when the parent dies (:func:`~art_diffpure.reproduce.lifetime.exit_with_parent`)."""
    import torch

    from art_diffpure.reproduce.lifetime import exit_with_parent

    exit_with_parent(parent_pid)

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    _WORKER["setting"] = build_setting(args)


def _worker_run(job: Job) -> tuple[str, Any, float]:
    """One job in a pool process: (name, result, seconds)."""
    name, kind, kw = job
    t0 = time.perf_counter()
    return name, _run_job(_WORKER["setting"], kind, kw), time.perf_counter() - t0


def cpu_threads(args: Any) -> int:
    """Torch threads per process on the CPU: ``--threads``, else 1. The digits models are tiny: with torch's
    default (all cores) a run on a 2-core machine where another job holds one core was 20-300x slower."""
    return int(getattr(args, "threads", None) or 1)


def _run_jobs(setting: Setting, jobs: list[Job], n_procs: int, args: Any, timer: _Timer,
              store: Any = None) -> dict[str, Any]:
    """
    Results of ``jobs`` by name: in this process (``n_procs <= 1``) or in ``n_procs`` spawned processes. With a
    :class:`~art_diffpure.reproduce.store.RunStore`, jobs it holds are loaded, not rerun, and each finished job is
    saved as soon as it is done (so an interruption loses at most the jobs in flight).
    """
    from tqdm.auto import tqdm

    out: dict[str, Any] = {}
    if store is not None:
        for name, _, _ in jobs:
            found = store.load(name)
            if found is not None:
                out[name], timer.times[name] = found
        if out:
            logger.warning("resuming: %d of %d experiments found in %s, %d to run", len(out), len(jobs),
                           store.parts_dir, len(jobs) - len(out))
    todo = [job for job in jobs if job[0] not in out]

    def finished(name: str, result: Any, seconds: float) -> None:
        out[name], timer.times[name] = result, seconds
        if store is not None:
            store.save(name, result, seconds)
        bar.update()

    bar = tqdm(total=len(jobs), initial=len(out), desc="Experiments", disable=not setting.verbose)
    if n_procs <= 1 or args is None:
        for name, kind, kw in todo:
            t0 = time.perf_counter()
            result = _run_job(setting, kind, kw)
            finished(name, result, time.perf_counter() - t0)
    else:
        import concurrent.futures
        import multiprocessing

        import torch

        threads = cpu_threads(args) if setting.device == "cpu" else max(1, torch.get_num_threads() // n_procs)
        logger.info("%d experiments in %d processes of %d thread(s)", len(todo), n_procs, threads)
        pool = concurrent.futures.ProcessPoolExecutor(n_procs, mp_context=multiprocessing.get_context("spawn"),
                                                      initializer=_worker_init, initargs=(args, threads, os.getpid()))
        try:
            for future in concurrent.futures.as_completed([pool.submit(_worker_run, job) for job in todo]):
                name, result, seconds = future.result()
                finished(name, result, seconds)
                logger.info("%s done (%.0f s)", name, seconds)
        except BaseException:  # Ctrl-C, SIGTERM, a failed write: stop the workers now, not after their jobs
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
            pool.shutdown(wait=True, cancel_futures=True)  # joins the terminated workers: nothing leaks
            raise
        pool.shutdown(wait=True)
    bar.close()
    return out


def n_processes(args, setting: Setting) -> int:
    """``--jobs``: as given; by default one process per CPU core (at most 4) on CPU, a single process on a GPU."""
    jobs = getattr(args, "jobs", None)
    if jobs:
        return int(jobs)
    if setting.device != "cpu" or setting.name == "imagenet":
        return 1
    return max(1, min(4, os.cpu_count() or 1))
