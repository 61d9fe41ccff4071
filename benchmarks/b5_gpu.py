"""B5 (GPU): throughput of full-gradient aligned PGD in the CIFAR-10 setting of the paper.

Models: the ``google/ddpm-cifar10-32`` UNet configuration (its published config.json: one attention head over
all 256 channels at 16x16 and in the middle block; random weights, 35.7M parameters) as the purifier at t* = 100,
and a WideResNet-28-10 (``benchmarks/wideresnet.py``: the architecture of RobustBench's ``Standard`` classifier,
random weights, no RobustBench import). Random weights change no timing. Measured on the first CUDA device:

- images x PGD-iterations per second of one aligned loss gradient (= one PGD iteration) for several batch
  sizes, fp32 (TF32 off) and bf16 autocast, each with ``cudnn.benchmark`` off and on (``--cudnn-benchmark``),
  with the purifier's checkpointing forced (``checkpoint=True``; ``--no-checkpoint``: forced off) and with the
  product default ``checkpoint="auto"`` (which does not checkpoint a batch whose chain fits in half the free
  memory; the row says what it chose);
- the bf16-vs-fp32 gradient cosine of each setting: TIMING ONLY. The weights are random, so it says nothing
  about the gradients of the trained models (check those with real weights);
- the projected wall time of the paper's 1000-image PGD-40 evaluation at the best measured row;
- FLOPs (``torch.utils.flop_counter.FlopCounterMode``, batch 1): the purifier chain's forward and backward without
  checkpoint recomputation (per image-step: divided by t*), the classifier's, and what one loss gradient executes
  (recomputation included); the achieved fraction of the GPU's measured peak (a large matmul, fp32 and bf16)
  counts the useful FLOPs (chain + classifier, no recomputation);
- host-device synchronisations per call (one loss gradient; one purification), counted by torch's sync debug
  mode ("synchronizing CUDA operation" warnings only).

Batch sizes whose estimated memory (one reverse step's and the classifier's autograd graph, measured with
``art_diffpure.checkpointing`` at two batch sizes in each precision, extrapolated to the chain and the batch)
does not fit the device's free memory are skipped, with the estimate in their row. ``--time-budget`` stops
starting new rows once a row would end past it (they are listed as skipped). The global TF32 flags and
``cudnn.benchmark`` are set for the run and restored afterwards.

The JSON is rewritten after every measured row (atomically), so a run killed midway keeps what it measured;
``"complete": true`` marks a run that reached its end. Default output: ``<tmp>/art-diffpure-benchmarks/b5_gpu.json``
(outside the source tree; give ``--out``).

On a machine without CUDA it exits with a message; ``--smoke`` runs tiny models on whatever device there is
(CPU included) to check the script.

    python benchmarks/b5_gpu.py --out b5.json              # CUDA; ~10 min on an H100 with every setting
    python benchmarks/b5_gpu.py --batch-sizes 16,64 --repeats 2 --time-budget 240 --out b5.json
    python benchmarks/b5_gpu.py --smoke --out b5.json      # seconds, CPU allowed
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time

import numpy as np

import _common as common  # noqa: E402

NAME = "b5_gpu"
#: The warning torch's sync debug mode ("warn") gives on each synchronising CUDA operation.
SYNC_WARNING = "called a synchronizing CUDA operation"
#: What the bf16-vs-fp32 comparison on random weights can and cannot say.
COSINE_NOTE = ("timing only: random weights; the cosine says nothing about the trained models' bf16 gradients")


def default_out() -> str:
    """Where B5 writes without ``--out``: outside the source tree (a results file inside it would not come back
    from a machine that returns only a chosen folder, and would be mistaken for a committed result)."""
    return os.path.join(tempfile.gettempdir(), "art-diffpure-benchmarks", f"{NAME}.json")


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def autocast(device, dtype: str):
    import torch

    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def matmul_peak(device, dtype, size: int, repeats: int = 10) -> float:
    """Measured peak FLOP/s of a ``size x size`` matmul in ``dtype`` (fp32 without TF32)."""
    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - t0)


#: Fraction of the free device memory a batch's estimated peak may take (workspaces, fragmentation, the allocator).
MEMORY_HEADROOM = 0.85
#: Batch sizes at which the graphs are measured (bytes = fixed + per_row * rows, fitted through both).
ESTIMATE_ROWS = (2, 4)


def estimate_bytes(purifier, classifier_model, shape, device, t_star: int) -> dict:
    """Bytes of one reverse step's autograd graph and of the classifier's, in fp32 and under bf16 autocast,
    as ``fixed + per_row * rows`` (measured at :data:`ESTIMATE_ROWS`; under autocast the fixed part holds the
    bf16 copies of the weights, made again at every step: the fp32 estimate is no bound for bf16), and
    ``batch_bytes(b, dtype, checkpointed)``: the estimated peak of one loss gradient."""
    import torch

    from art_diffpure import checkpointing

    def measure(rows: int, dtype: str) -> tuple[int, int]:
        x_t = torch.randn((rows, *shape), device=device, requires_grad=True)
        noise = torch.randn((rows, *shape), device=device)
        x = torch.rand((rows, *shape), device=device, requires_grad=True)
        with autocast(device, dtype):
            step, _ = checkpointing.graph_bytes(purifier.model, purifier._reverse_step, x_t, t_star - 1, noise)
            clf, _ = checkpointing.graph_bytes(classifier_model, classifier_model, x)
        return step, clf

    state = int(np.prod(shape)) * 4
    fits = {}
    for dtype in ("fp32", "bf16"):
        (s1, c1), (s2, c2) = (measure(r, dtype) for r in ESTIMATE_ROWS)
        r1, r2 = ESTIMATE_ROWS
        per_step, per_clf = (s2 - s1) / (r2 - r1), (c2 - c1) / (r2 - r1)
        fits[dtype] = {"reverse_step_graph": {"fixed": max(0.0, s1 - per_step * r1), "per_row": per_step},
                       "classifier_graph": {"fixed": max(0.0, c1 - per_clf * r1), "per_row": per_clf},
                       "state_per_row": state}

    def batch_bytes(b: int, dtype: str, checkpointed: bool) -> int:
        f = fits[dtype]
        step = int(f["reverse_step_graph"]["fixed"] + f["reverse_step_graph"]["per_row"] * b)
        chain = checkpointing.chain_bytes(step, t_star, b, state * b, checkpointed)
        return int(chain + f["classifier_graph"]["fixed"] + f["classifier_graph"]["per_row"] * b)

    return {"graph_bytes": fits, "batch_bytes": batch_bytes}


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def count_syncs(fn) -> dict:
    """Host-device synchronisations during ``fn()`` (CUDA): torch's sync debug mode warns on each synchronising
    operation; other warnings raised meanwhile are not synchronisations."""
    import warnings

    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    found = [w for w in caught if SYNC_WARNING in str(w.message)]
    return {"count": len(found), "other_warnings": len(caught) - len(found),
            "first_messages": sorted({str(w.message)[:160] for w in found})[:5]}


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", default=None, help="comma-separated (default 8,32,64,128)")
    p.add_argument("--t-star", type=int, default=None)
    p.add_argument("--no-checkpoint", action="store_true",
                   help="the forced rows without gradient checkpointing (default: checkpoint=True)")
    p.add_argument("--no-auto-rows", action="store_true", help="leave out the checkpoint='auto' rows")
    p.add_argument("--cudnn-benchmark", default="both", choices=("off", "on", "both"),
                   help="torch.backends.cudnn.benchmark for the measured rows (default both: each row twice)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds: rows that would end past it are not started (listed as skipped)")
    p.add_argument("--eval-images", type=int, default=1000, help="size of the projected evaluation")
    p.add_argument("--eval-steps", type=int, default=40)
    args = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available() and not args.smoke:
        sys.exit("b5_gpu.py needs a CUDA GPU (torch.cuda.is_available() is False); nothing was measured. "
                 "Run it on a CUDA machine, or use --smoke for a tiny CPU dry run.")
    if args.out is None and not args.smoke:
        args.out = default_out()
    threads = common.setup_threads(args.threads)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    torch.backends.cudnn.allow_tf32 = False
    try:
        return run(args, threads)
    finally:  # the flags are global: leave them as the caller had them
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = saved


def run(args, threads: int) -> dict:
    import torch

    t_start = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from diffusers import UNet2DModel

    from art_diffpure import checkpointing
    from art_diffpure.attacks import RandomnessAlignedAttack
    from art_diffpure.models.digits import digits_scheduler
    from art_diffpure.purifier import DiffusionPurifier
    from art_diffpure.models.classifier import art_classifier
    from wideresnet import WideResNet

    batch_sizes = [int(v) for v in (args.batch_sizes or ("1,2" if args.smoke else "8,32,64,128")).split(",")]
    t_star = args.t_star or (2 if args.smoke else 100)
    repeats = args.repeats or (1 if args.smoke else 3)
    forced = not args.no_checkpoint
    benchmark_settings = {"off": [False], "on": [True], "both": [False, True]}[args.cudnn_benchmark]
    torch.manual_seed(0)
    if args.smoke:
        cfg = dict(common.cifar_unet_config(), block_out_channels=(16, 16, 16, 16), layers_per_block=1,
                   norm_num_groups=8, sample_size=32)
        unet = UNet2DModel(**cfg).eval()
        wrn = WideResNet(depth=10, widen_factor=1).eval()
    else:
        unet = common.cifar_unet()
        wrn = WideResNet(depth=28, widen_factor=10).eval()
    n_unet = sum(q.numel() for q in unet.parameters())
    n_wrn = sum(q.numel() for q in wrn.parameters())
    device_type = "gpu" if device.type == "cuda" else "cpu"
    purifier = DiffusionPurifier(unet, digits_scheduler(), t_star=t_star, seed=0, checkpoint=forced,
                                 batch_size=max(batch_sizes), device_type=device_type)
    classifier = art_classifier(wrn.to(device), (3, 32, 32), 10, purifier=purifier, device_type=device_type)
    rng = np.random.default_rng(0)
    x_all = rng.random((max(batch_sizes), 3, 32, 32), dtype=np.float32)
    y_all = rng.integers(0, 10, max(batch_sizes))

    rows, skipped = [], []
    result = {
        "benchmark": NAME, "smoke": bool(args.smoke), "complete": False, "device": str(device),
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else common.cpu_model(),
        "settings": {"t_star": t_star, "checkpoint_forced": forced, "auto_rows": not args.no_auto_rows,
                     "cudnn_benchmark": benchmark_settings, "batch_sizes": batch_sizes, "repeats": repeats,
                     "threads": threads, "time_budget_s": args.time_budget, "unet_params": n_unet,
                     "unet_attention_head_dim": unet.config.attention_head_dim, "classifier_params": n_wrn,
                     "weights": "random (timing only)", "tf32": False},
        "rows": rows, "skipped": skipped, "environment": common.environment(),
    }

    def save(stage: str) -> None:
        result["stage"] = stage
        result["elapsed_s"] = time.perf_counter() - t_start
        common.write_json(result, args.out, NAME, quiet=True)

    save("models built")

    # FLOPs at batch 1, fp32: what one loss gradient executes (checkpoint recomputation included), the purifier
    # chain's forward + backward without recomputation, and the classifier's forward + backward.
    attack1 = RandomnessAlignedAttack(classifier, seed=0, eps=8 / 255, eps_step=8 / 255 / 30, batch_size=1)
    flops_executed = count_flops(lambda: attack1.loss_gradient(x_all[:1], y_all[:1]))
    x1 = torch.from_numpy(x_all[:1]).to(device)

    def chain_fwd_bwd():
        xg = x1.clone().requires_grad_(True)
        purifier.forward(xg)[0].sum().backward()

    purifier.checkpoint = False
    try:
        flops_chain = count_flops(chain_fwd_bwd)
    finally:
        purifier.checkpoint = forced

    def classifier_fwd_bwd():
        xg = x1.clone().requires_grad_(True)
        wrn(xg).sum().backward()

    flops_classifier = count_flops(classifier_fwd_bwd)
    with torch.no_grad():
        flops_unet_fwd = count_flops(lambda: unet(x1, torch.tensor([10], device=device)))
    flops_useful = flops_chain + flops_classifier
    result["flops"] = {"chain_per_image_step": flops_chain / t_star, "chain_per_image": flops_chain,
                       "classifier_per_image": flops_classifier, "useful_per_loss_gradient_batch1": flops_useful,
                       "executed_per_loss_gradient_batch1": flops_executed,
                       "checkpoint_recompute_batch1": flops_executed - flops_useful,
                       "unet_forward_per_image": flops_unet_fwd}
    # Host-device synchronisations per call (CUDA only), batch 1, checkpointing as forced.
    if device.type == "cuda":
        per_gradient = count_syncs(lambda: attack1.loss_gradient(x_all[:1], y_all[:1]))
        per_purify = count_syncs(lambda: purifier.purify(x_all[:1]))
        result["host_device_syncs"] = {
            "per_loss_gradient_call": per_gradient["count"], "per_purify_call": per_purify["count"],
            "other_warnings": per_gradient["other_warnings"] + per_purify["other_warnings"],
            "first_messages": per_gradient["first_messages"], "batch": 1, "t_star": t_star}
    else:
        result["host_device_syncs"] = None
    size = 512 if args.smoke else 8192
    peak = {"fp32": matmul_peak(device, torch.float32, size), "bf16": matmul_peak(device, torch.bfloat16, size)}
    result["measured_peak_flops_per_s"], result["matmul_size"] = peak, size
    save("flops, syncs and peak measured")

    estimate = estimate_bytes(purifier, wrn, (3, 32, 32), device, t_star)
    result["memory"] = {"headroom": MEMORY_HEADROOM, "graph_bytes": estimate["graph_bytes"],
                        "estimate_rows": ESTIMATE_ROWS}
    save("memory estimated")

    seconds_per_image = {}  # latest measured gradient seconds per image, per dtype (to keep to the time budget)
    for b in batch_sizes:
        attack = RandomnessAlignedAttack(classifier, randomness="aligned", seed=0, eps=8 / 255, eps_step=8 / 255 / 30,
                                         max_iter=40, batch_size=b)
        x, y = x_all[:b], y_all[:b]
        variants = [(bench, forced) for bench in benchmark_settings]
        if not args.no_auto_rows:
            variants.append((benchmark_settings[-1], "auto"))
        for bench, checkpoint in variants:
            grads, measured = {}, []
            for dtype in ("fp32", "bf16"):
                setting = {"batch": b, "dtype": dtype, "cudnn_benchmark": bench, "checkpoint": checkpoint}
                free = checkpointing.free_bytes(device)
                limit = None if free is None else int(free * MEMORY_HEADROOM)
                need_plain = estimate["batch_bytes"](b, dtype, False)
                need_ckpt = estimate["batch_bytes"](b, dtype, True)
                if checkpoint == "auto":  # auto checkpoints when the plain chain exceeds half the free memory
                    need = need_plain if free is None or need_plain <= free // 2 else need_ckpt
                else:
                    need = need_ckpt if checkpoint else need_plain
                why = None
                if limit is not None and need > limit:
                    why = (f"estimated {need / 2**30:.1f} GiB for one loss gradient > {limit / 2**30:.1f} GiB "
                           f"({MEMORY_HEADROOM:.0%} of the {free / 2**30:.1f} GiB free)")
                elif args.time_budget is not None:
                    elapsed = time.perf_counter() - t_start
                    expected = seconds_per_image.get(dtype, 0.0) * b * (repeats + 1)
                    if elapsed + expected > args.time_budget:
                        why = (f"time budget: {elapsed:.0f} s elapsed + ~{expected:.0f} s expected > "
                               f"{args.time_budget:.0f} s")
                if why is not None:
                    print(f"batch {b:4d} {dtype} {_label(bench, checkpoint)}: skipped, {why}")
                    skipped.append({**setting, "skipped": why, "estimated_bytes": need})
                    save(f"batch {b} skipped")
                    continue
                torch.backends.cudnn.benchmark = bench
                purifier.checkpoint = checkpoint

                def grad():
                    with autocast(device, dtype):
                        g = attack.loss_gradient(x, y)
                    sync(device)
                    return g

                try:
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    times, g = common.timed(grad, repeats, warmup=1)
                finally:
                    purifier.checkpoint = forced
                grads[dtype] = g
                t = common.median(times)
                seconds_per_image[dtype] = t / b
                row = {**setting, "checkpointed": purifier.last_checkpointed, "grad_s": times, "grad_median_s": t,
                       "images_x_iterations_per_s": b / t, "image_steps_per_s": b * t_star / t,
                       "estimated_bytes": need}
                if device.type == "cuda":
                    row["cuda_max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
                achieved = flops_useful * b / t
                row["achieved_flops_per_s"] = achieved
                row["fraction_of_measured_peak"] = achieved / peak[dtype]
                row["executed_fraction_of_measured_peak"] = flops_executed * b / t / peak[dtype]
                print(f"batch {b:4d} {dtype} {_label(bench, checkpoint)} (checkpointed: {row['checkpointed']}): "
                      f"{t:.3f} s per gradient, {b / t:.2f} images x iterations / s")
                rows.append(row)
                measured.append(row)
                save(f"batch {b} {dtype} {_label(bench, checkpoint)} measured")
            if len(grads) == 2:
                g32, g16 = grads["fp32"].reshape(b, -1), grads["bf16"].reshape(b, -1)
                cos = (g32 * g16).sum(1) / np.maximum(np.linalg.norm(g32, axis=1) * np.linalg.norm(g16, axis=1), 1e-30)
                for row in measured:
                    row["bf16_vs_fp32_cosine_min"] = float(cos.min())
                    row["bf16_vs_fp32_cosine_mean"] = float(cos.mean())
                    row["bf16_vs_fp32_sign_agreement"] = float((np.sign(g32) == np.sign(g16)).mean())
                    row["bf16_vs_fp32_cosine_note"] = COSINE_NOTE
                print(f"batch {b:4d} {_label(bench, checkpoint)}: bf16 vs fp32 gradient cosine min {cos.min():.4f} "
                      f"({COSINE_NOTE})")
                save(f"batch {b} {_label(bench, checkpoint)} compared")

    best = {dt: max((r for r in rows if r["dtype"] == dt), key=lambda r: r["images_x_iterations_per_s"])
            for dt in ("fp32", "bf16") if any(r["dtype"] == dt for r in rows)}
    projection = {dt: {"batch": r["batch"], "cudnn_benchmark": r["cudnn_benchmark"], "checkpoint": r["checkpoint"],
                       "checkpointed": r["checkpointed"], "images_x_iterations_per_s": r["images_x_iterations_per_s"],
                       "projected_s": args.eval_images * args.eval_steps / r["images_x_iterations_per_s"],
                       "projected_h": args.eval_images * args.eval_steps / r["images_x_iterations_per_s"] / 3600}
                  for dt, r in best.items()}
    result["projection"] = {"images": args.eval_images, "pgd_steps": args.eval_steps, **projection}
    compared = [r for r in rows if "bf16_vs_fp32_cosine_min" in r]
    result["bf16_cosine_timing_only"] = {
        "note": COSINE_NOTE, "target_with_trained_weights": 0.99,
        "min_over_rows": min((r["bf16_vs_fp32_cosine_min"] for r in compared), default=None)}
    result["complete"] = True
    for dt, pr in projection.items():
        print(f"{dt}: best batch {pr['batch']} ({_label(pr['cudnn_benchmark'], pr['checkpoint'])}), "
              f"{args.eval_images}-image PGD-{args.eval_steps} projected {pr['projected_h']:.2f} h")
    result["stage"], result["elapsed_s"] = "done", time.perf_counter() - t_start
    common.write_json(result, args.out, NAME)
    return result


def _label(bench: bool, checkpoint) -> str:
    return f"cudnn.benchmark={'on' if bench else 'off'} checkpoint={checkpoint}"


if __name__ == "__main__":
    main()
