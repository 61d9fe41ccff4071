"""B1: the paper's evaluation pipeline, rebuilt as a baseline, against our aligned PGD.

Baseline ("paper"), as Liu & Wei (2025) describe it (Appendix B, Table S1): batch size 1, plain autograd
through the whole chain (no checkpointing), a ``torch.Generator`` RESEEDED right before every noise draw
with ``hash(s, i, 2t)`` (forward) / ``hash(s, i, 2t + 1)`` (reverse step t), diffusers'
``DDPMScheduler.add_noise`` / ``DDPMScheduler.step(..., generator=gen)``, and a foolbox-style ``LinfPGD``
loop (one uniform random start, 40 steps of ``rel_stepsize * eps = eps / 30``, sign of the gradient, clip to
[0, 1], projection onto the eps-ball) calling a per-image purify + classify.

Ours: :class:`art_diffpure.RandomnessAlignedAttack` (``randomness="aligned"``, one batch of N images, the
purifier's defaults: ``checkpoint="auto"`` (checkpoint only if the chain's graph would not fit in half of the free
memory), aligned noise cached per batch).

Both use the same xi (same seed hash) and the same random starts: ART draws one per group of samples our attack
ran together (numpy seeded with ``numpy_start_seed(s, first id of the group)``; the default PGD's group is its
batch), and the baseline draws the identical arrays from the groups our run recorded.
The script fails (after writing its JSON) unless the adversarial examples are identical, max |diff| = 0: a
speed-up of two different attacks means nothing.

``profile_ours`` records where our attack's time goes (the UNet chain inside a loss gradient and a prediction,
row identification and audit, the attack beyond its gradients); ``unet_work`` the ratio of the UNet's own work per image
at batch n against batch 1 (eager, and traced as a diagnostic), which bounds the speed-up.

    python benchmarks/b1_paper_pipeline.py            # N=16, t*=100, PGD-40 (a few minutes on 2 CPU cores)
    python benchmarks/b1_paper_pipeline.py --smoke    # seconds
    python benchmarks/b1_paper_pipeline.py --unet-only --compile --n-images 64 --steps 5   # UNet timings alone,
                                                      # torch.compile among them (about a minute of compile per shape)
"""
from __future__ import annotations

import time

import numpy as np

import _common as common  # noqa: E402  (sets sys.path)
from art_diffpure.evaluations.aligned import evaluate_aligned

NAME = "b1_paper_pipeline"


def paper_seed(s: int, i: int, t: int) -> int:
    """Eq. 13 of the paper: ((p_s s) XOR (p_i i) XOR (p_t t)) mod 2^32 (the same primes as art_diffpure.randomness)."""
    from art_diffpure.randomness import P_I, P_S, P_T

    return ((P_S * s) ^ (P_I * i) ^ (P_T * t)) % 2**32


class PaperPipeline:
    """Per-image purify + classify, reseeding the generator before every noise draw (no caching, no checkpoint)."""

    def __init__(self, unet, scheduler, classifier, t_star: int, seed: int) -> None:
        import torch

        self.unet, self.scheduler, self.classifier = unet, scheduler, classifier
        self.t_star, self.seed = t_star, seed
        self.gen = torch.Generator(device="cpu")
        self.noise_time = 0.0  # seconds spent reseeding + drawing noise (forward + reverse)

    def logits(self, x, sample_id: int):
        """``x``: (1, 1, 8, 8) in [0, 1]; autograd flows through every step when ``x`` requires grad."""
        import torch

        sched, gen, s = self.scheduler, self.gen, self.seed
        z = x * 2.0 - 1.0
        t_top = self.t_star - 1
        t0 = time.perf_counter()
        gen.manual_seed(paper_seed(s, sample_id, 2 * t_top))  # forward step: hash(s, i, 2t)
        eps = torch.randn(z.shape, generator=gen)
        self.noise_time += time.perf_counter() - t0
        x_t = sched.add_noise(z, eps, torch.tensor([t_top]))
        for t in range(t_top, -1, -1):
            eps_hat = self.unet(x_t, torch.tensor([t])).sample
            t0 = time.perf_counter()
            gen.manual_seed(paper_seed(s, sample_id, 2 * t + 1))  # reverse step: hash(s, i, 2t + 1)
            self.noise_time += time.perf_counter() - t0
            x_t = sched.step(eps_hat, t, x_t, generator=gen).prev_sample  # draws its noise from gen
        return self.classifier((x_t.clamp(-1.0, 1.0) + 1.0) / 2.0)


def paper_linf_pgd(pipe: PaperPipeline, x: np.ndarray, y: np.ndarray, start: np.ndarray, eps: float,
                   steps: int, rel_stepsize: float = 0.01 / 0.3):
    """foolbox-style LinfPGD, one image at a time: random start (given), sign steps, clip, projection."""
    import torch

    loss_fn = torch.nn.CrossEntropyLoss()
    eps_step = torch.tensor(np.float32(rel_stepsize * eps))
    eps_t = torch.tensor(np.float32(eps))
    x_adv_all = np.empty_like(x)
    per_image = []
    for i in range(len(x)):
        t0 = time.perf_counter()
        x0 = torch.from_numpy(x[i:i + 1])
        label = torch.tensor([int(y[i])])
        x_adv = (x0 + torch.from_numpy(start[i:i + 1])).clamp(0.0, 1.0)
        for _ in range(steps):
            x_adv = x_adv.detach().requires_grad_(True)
            loss = loss_fn(pipe.logits(x_adv, i), label)
            (grad,) = torch.autograd.grad(loss, x_adv)
            with torch.no_grad():
                x_adv = (x_adv + eps_step * grad.sign()).clamp(0.0, 1.0)
                x_adv = x0 + torch.maximum(torch.minimum(x_adv - x0, eps_t), -eps_t)
        x_adv_all[i] = x_adv.detach().numpy()[0]
        per_image.append(time.perf_counter() - t0)
    return x_adv_all, per_image


def paper_predict(pipe: PaperPipeline, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.array([int(pipe.logits(torch.from_numpy(x[i:i + 1]), i).argmax()) for i in range(len(x))])


def profile_ours(attack, purifier, x: np.ndarray, y: np.ndarray, steps: int, attack_time: float,
                 reps: int) -> dict:
    """
    Where our attack's time goes, each part timed warm at the batch the attack ran (medians of ``reps``):
    one loss gradient against the bare UNet chain it contains (the same UNet, t* forward calls at the same batch
    with a graph, and their backward: no scheduler, noise, classifier, audit or ART), one test prediction against
    the bare forward chain, the per-call row identification and audit, and what the attack spent beyond its
    ``steps`` loss gradients (ART's PGD loop, projections, its start, its end-of-generate bookkeeping).
    """
    import torch

    from art_diffpure.randomness import RandomnessControl

    n, t_star, unet = len(x), purifier.t_star, purifier.model
    shape = (n, *x.shape[1:])

    def chain(grad: bool) -> None:
        z = torch.randn(shape, requires_grad=grad)
        h = z
        with torch.set_grad_enabled(grad):
            for t in range(t_star - 1, -1, -1):
                h = h + 0.01 * unet(h, torch.full((n,), t)).sample
            if grad:
                torch.autograd.grad(h.sum(), z)

    def identify() -> None:
        control = RandomnessControl([0], bound=float(attack.eps), positional=True)
        control.set_batch(x, np.arange(n))
        control.rows(np.clip(x + 0.5 * attack.eps, 0, 1), gradient=True, has_labels=True)

    parts = {"loss_gradient_s": lambda: attack.loss_gradient(x, y), "bare_unet_chain_with_backward_s": lambda: chain(True),
             "test_prediction_s": lambda: attack.predict_test(x), "bare_unet_chain_forward_s": lambda: chain(False),
             "row_identification_and_audit_s": identify}
    times: dict = {k: [] for k in parts}
    for fn in parts.values():
        fn()  # warm-up
    for _ in range(reps):  # interleaved: every part sees the same machine state
        for k, fn in parts.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    out = {k: common.median(v) for k, v in times.items()}
    out["batch"], out["reps"] = n, reps
    out["unet_share_of_loss_gradient"] = out["bare_unet_chain_with_backward_s"] / out["loss_gradient_s"]
    out["unet_share_of_test_prediction"] = out["bare_unet_chain_forward_s"] / out["test_prediction_s"]
    out["attack_beyond_its_gradients_s"] = attack_time - steps * out["loss_gradient_s"]
    return out


def unet_work(unet, sample_shape: tuple, n: int, steps: int, reps: int, calls: int = 10,
              compiled: bool = False) -> dict:
    """
    What the UNet's own batch scaling allows: one UNet call with backward (``g``) and without a graph (``f``) at
    batch 1 (the paper's batch) and at batch ``n`` (ours), timed as ``calls`` chained calls (medians of ``reps``,
    interleaved), and the ratio of the run's UNet work per image, ``(steps g_1 + 2 f_1) / ((steps g_n + 2 f_n) / n)``
    (``steps`` gradients and two test predictions, clean and adversarial, per image on both sides). Our side is
    this UNet work and nothing else (``profile_ours``); the paper's side adds its own per-image work on top (the
    speed-up = this ratio x the paper's time over its UNet work / ours over its UNet work, both recorded by
    ``main``). Timed eager (what both pipelines run) and, as a diagnostic only, through ``torch.jit.trace`` of the same UNet at each batch (Python's per-module overhead removed; outputs and
    gradients checked bit-identical to eager); the product does not trace (the tracer is deprecated in torch 2.x).
    ``compiled`` adds ``torch.compile`` of the same UNet at each batch (its cold compile time per batch shape and its
    largest difference from eager recorded: inductor's kernels are not eager's), and the work ratio with only our
    test predictions compiled (the one place it was found to be faster).
    """
    import warnings
    from contextlib import nullcontext

    import torch

    class Plain(torch.nn.Module):  # the UNet's output tensor, for the tracer
        def __init__(self, model) -> None:
            super().__init__()
            self.model = model

        def forward(self, h, t):
            return self.model(h, t, return_dict=False)[0]

    out: dict = {"calls_per_timing": calls, "reps": reps, "traced_bit_identical": True}
    gen = torch.Generator().manual_seed(0)
    for b in (1, n):
        x0 = torch.rand((b, *sample_shape), generator=gen)
        t = torch.full((b,), 50)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's deprecation notice
            traced = torch.jit.trace(Plain(unet), (x0, t), check_trace=False)
        models = {"eager": Plain(unet), "traced": traced}
        if compiled:
            torch._dynamo.reset()  # a cold compile for every batch shape, as a user's first call pays it
            models["compiled"] = torch.compile(Plain(unet), dynamic=False)

        def run(model, grad: bool):
            x = x0.clone().requires_grad_(grad)
            with torch.set_grad_enabled(grad):
                h = x
                for _ in range(calls):
                    h = h - 0.01 * model(h, t)
                return torch.autograd.grad(h.sum(), x)[0] if grad else h

        times: dict = {}
        results: dict = {}
        for name, model in models.items():
            t0 = time.perf_counter()
            # the compilation runs here, cold: no cache of an earlier process (what a user's first call pays)
            with torch.compiler.config.patch(force_disable_caches=True) if name == "compiled" else nullcontext(), \
                    warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")  # what the patch means
                for grad in (True, False):
                    results[name, grad] = run(model, grad)  # warm-up (the tracer's profiling runs, the compilation)
                    run(model, grad)
            out[f"{name}_batch{b}_warmup_s"] = time.perf_counter() - t0
        for _ in range(reps):
            for name, model in models.items():
                for grad in (True, False):
                    t0 = time.perf_counter()
                    results[name, grad] = run(model, grad)
                    times.setdefault((name, grad), []).append((time.perf_counter() - t0) / calls)
        for (name, grad), v in times.items():
            out[f"{name}_batch{b}_{'with_backward' if grad else 'forward'}_s_per_call"] = common.median(v)
        out["traced_bit_identical"] &= all(torch.equal(results["eager", g], results["traced", g]) for g in (True, False))
        if compiled:
            out[f"compiled_batch{b}_max_abs_diff_vs_eager"] = max(
                float((results["eager", g] - results["compiled", g]).abs().max()) for g in (True, False))

    def work(name: str, b: int, predictions: str | None = None) -> float:  # UNet s per image and chain step: its
        # gradients and 2 predictions (``predictions``: the backend of the two predictions, if not ``name``)
        return (steps * out[f"{name}_batch{b}_with_backward_s_per_call"]
                + 2 * out[f"{predictions or name}_batch{b}_forward_s_per_call"]) / b

    out["eager_batch1_work_s_per_image_step"], out[f"eager_batch{n}_work_s_per_image_step"] = work("eager", 1), work(
        "eager", n)

    out["unet_work_ratio_eager"] = work("eager", 1) / work("eager", n)  # what both pipelines run
    out["unet_work_ratio_traced_ours_only"] = work("eager", 1) / work("traced", n)
    out["unet_work_ratio_traced_both"] = work("traced", 1) / work("traced", n)
    if compiled:
        out["unet_work_ratio_compiled_ours_only"] = work("eager", 1) / work("compiled", n)
        out["unet_work_ratio_compiled_predictions_ours_only"] = work("eager", 1) / work("eager", n, "compiled")
    return out


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=None)
    p.add_argument("--t-star", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="add torch.compile of the UNet to the UNet-work timings")
    p.add_argument("--unet-only", action="store_true", help="only the UNet-work timings (no attack, no paper run)")
    args = p.parse_args(argv)
    threads = common.setup_threads(args.threads)
    n = args.n_images or (2 if args.smoke else 16)
    t_star = args.t_star or (3 if args.smoke else 100)
    steps = args.steps or (2 if args.smoke else 40)
    if args.unet_only:
        return unet_only(args, n, steps, threads)

    import torch

    from art_diffpure.attacks import RandomnessAlignedAttack
    from art_diffpure.randomness import aligned_noise, numpy_seeded, numpy_start_seed

    eps, eps_source = common.recommended_eps()
    x, y = common.digits_data(n)
    classifier, purifier, sources = common.digits_setup(t_star, checkpoint="auto", seed=args.seed, batch_size=256)
    clf_model = classifier.model
    scheduler = purifier.scheduler

    # ---- ours: aligned PGD-40 on one batch of n images, after one untimed gradient at its shapes (first calls
    # create the kernels' primitives and allocations; the paper's side gets its own warm-up below) with the
    # noise it built discarded, so the timed run builds its noise as a cold run does
    attack = RandomnessAlignedAttack(classifier, randomness="aligned", seed=args.seed, eps=eps, eps_step=eps / 30,
                                     max_iter=steps, num_random_init=1, batch_size=n)
    attack.loss_gradient(x, y)
    purifier._noise_cache.clear()
    ours = evaluate_aligned(attack, x, y).to_dict()
    x_adv_ours = attack.last_x_adv
    ours_checkpointed = purifier.last_checkpointed

    # ---- the paper's pipeline, with exactly the random starts ART drew: one draw per group our attack ran
    # (numpy seeded with numpy_start_seed(s, first id of the group); a batch holding clean samples closer than
    # 2 eps is split into groups, see art_diffpure.attacks.batching)
    groups = attack.last_generation["groups"]
    start = np.empty_like(x)
    for group in groups:
        with numpy_seeded(numpy_start_seed(args.seed, group[0])):
            start[group] = np.random.uniform(-eps, eps, (len(group), int(np.prod(x.shape[1:])))).reshape(
                (len(group), *x.shape[1:])).astype(np.float32)
    pipe = PaperPipeline(purifier.model, scheduler, clf_model, t_star, args.seed)
    paper_linf_pgd(pipe, x[:1], y[:1], start[:1], eps, 1)  # warm-up at its shapes, untimed
    pipe.noise_time = 0.0
    t0 = time.perf_counter()
    x_adv_paper, per_image = paper_linf_pgd(pipe, x, y, start, eps, steps)
    t_attack_paper = time.perf_counter() - t0
    noise_time_attack = pipe.noise_time
    adv_pred_paper = paper_predict(pipe, x_adv_paper)
    clean_pred_paper = paper_predict(pipe, x)
    t_paper = time.perf_counter() - t0

    robust_paper = float((adv_pred_paper == y).mean())
    agree = (adv_pred_paper == np.array(ours["adv_pred"]))

    # ---- noise generation share (item 7): one aligned-noise build per batch vs one loss gradient
    ids = list(range(n))
    t0 = time.perf_counter()
    aligned_noise([args.seed] * n, ids, list(range(t_star - 1, -1, -1)), (1, 8, 8), reverse=True)
    aligned_noise([args.seed] * n, ids, [t_star - 1], (1, 8, 8), reverse=False)
    t_noise = time.perf_counter() - t0
    purifier._noise_cache.clear()
    t0 = time.perf_counter()
    attack.loss_gradient(x, y)  # cold cache: builds the noise
    t_grad_cold = time.perf_counter() - t0
    times, _ = common.timed(lambda: attack.loss_gradient(x, y), repeats=args.repeats or (1 if args.smoke else 3))
    t_grad = common.median(times)

    # ---- per image-iteration gradient throughput, side by side: paper (batch 1) vs ours at several batches,
    # with and without checkpointing (one loss gradient = one PGD iteration)
    def paper_grad():
        xi = torch.from_numpy(x[:1]).requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(pipe.logits(xi, 0), torch.tensor([int(y[0])]))
        return torch.autograd.grad(loss, xi)[0]

    reps = args.repeats or (1 if args.smoke else 3)
    throughput = {"paper_batch1_s_per_image_iteration": common.median(common.timed(paper_grad, reps)[0])}
    for b in ([2] if args.smoke else [n, 64]):
        xb, yb = common.digits_data(b)
        for ck in (True, False):
            purifier.checkpoint = ck
            tb, _ = common.timed(lambda: attack.loss_gradient(xb, yb), reps, warmup=1)
            throughput[f"ours_batch{b}_checkpoint_{ck}_s_per_image_iteration"] = common.median(tb) / b
    purifier.checkpoint = "auto"
    for k in list(throughput):
        if k.startswith("ours"):
            throughput[k.replace("_s_per_image_iteration", "_speedup_vs_paper")] = (
                throughput["paper_batch1_s_per_image_iteration"] / throughput[k])

    profile = profile_ours(attack, purifier, x, y, steps, ours["attack_time_s"], reps)
    unet = unet_work(purifier.model, tuple(x.shape[1:]), n, steps, reps, compiled=args.compile)
    unet["paper_time_over_its_unet_work"] = t_paper / (n * t_star * unet["eager_batch1_work_s_per_image_step"])
    unet["ours_time_over_its_unet_work"] = ours["wall_time_s"] / (
        n * t_star * unet[f"eager_batch{n}_work_s_per_image_step"])
    ours_time = ours["wall_time_s"]
    result = {
        "benchmark": NAME,
        "smoke": bool(args.smoke),
        "settings": {"n_images": n, "t_star": t_star, "pgd_steps": steps, "eps": eps, "eps_source": eps_source,
                     "eps_step": eps / 30, "seed": args.seed, "threads": threads, "models": sources},
        "ours": {"wall_time_s": ours_time, "attack_time_s": ours["attack_time_s"],
                 "robust_accuracy": ours["robust_accuracy"], "clean_accuracy": ours["clean_accuracy"],
                 "adv_pred": ours["adv_pred"], "batch_size": n, "checkpoint": "auto",
                 "checkpointed": ours_checkpointed},
        "paper": {"wall_time_s": t_paper, "attack_time_s": t_attack_paper,
                  "per_image_attack_s_median": common.median(per_image),
                  "robust_accuracy": robust_paper, "clean_accuracy": float((clean_pred_paper == y).mean()),
                  "adv_pred": adv_pred_paper.tolist(), "batch_size": 1, "checkpoint": False,
                  "noise_reseed_draw_s_during_attack": noise_time_attack,
                  "noise_share_of_attack": noise_time_attack / t_attack_paper},
        "speedup": t_paper / ours_time,
        "speedup_attack_only": t_attack_paper / ours["attack_time_s"],
        "robust_accuracy_diff_points": 100.0 * abs(robust_paper - ours["robust_accuracy"]),
        "adv_pred_agreement": float(agree.mean()),
        "x_adv_max_abs_diff": float(np.abs(x_adv_paper - x_adv_ours).max()),
        "x_adv_frac_pixels_differing_gt_1e-4": float((np.abs(x_adv_paper - x_adv_ours) > 1e-4).mean()),
        "noise": {"aligned_noise_build_s": t_noise, "loss_gradient_cold_s": t_grad_cold,
                  "loss_gradient_warm_median_s": t_grad, "loss_gradient_repeats_s": times,
                  "noise_share_of_one_gradient": t_noise / t_grad,
                  "noise_share_of_pgd_attack": t_noise / ours["attack_time_s"]},
        "gradient_throughput": throughput,
        "profile_ours": profile,
        "unet_work": unet,
        "targets": {"speedup_at_least": 5.0, "robust_accuracy_within_points": 2.0},
    }
    result["targets"]["speedup_met"] = result["speedup"] >= 5.0
    result["targets"]["accuracy_met"] = result["robust_accuracy_diff_points"] <= 2.0
    result["settings"]["random_start_groups"] = len(groups)
    print(f"ours {ours_time:.1f}s robust {ours['robust_accuracy']:.3f} | paper {t_paper:.1f}s robust "
          f"{robust_paper:.3f} | speedup {result['speedup']:.2f}x | max |x_adv diff| {result['x_adv_max_abs_diff']:g} "
          f"({len(groups)} random-start group(s))")
    path = common.write_json(result, args.out, NAME)
    if result["x_adv_max_abs_diff"] != 0.0:  # the speed-up is only meaningful for the same attack
        raise SystemExit(f"B1: the two pipelines' adversarial examples differ (max |diff| "
                         f"{result['x_adv_max_abs_diff']:g}): not the same attack; result kept in {path}")
    return result


def unet_only(args, n: int, steps: int, threads: int) -> dict:
    """``--unet-only``: the UNet-work timings alone (``unet_work``), in ``<name>_unet_work.json`` by default."""
    from art_diffpure.models.digits import load_digits_unet

    reps = args.repeats or (1 if args.smoke else 3)
    result = {"benchmark": NAME + "_unet_work", "smoke": bool(args.smoke),
              "settings": {"n_images": n, "pgd_steps": steps, "threads": threads, "repeats": reps,
                           "compiled": bool(args.compile)},
              "unet_work": unet_work(load_digits_unet(), (1, 8, 8), n, steps, reps, compiled=args.compile)}
    common.write_json(result, args.out, NAME + "_unet_work")
    return result


if __name__ == "__main__":
    main()
