"""B5 (GPU): throughput of full-gradient aligned PGD in the CIFAR-10 setting of the paper.

Models: the ``google/ddpm-cifar10-32`` UNet configuration (random weights, 35.7M parameters) as the purifier
at t* = 100 and RobustBench's WideResNet-28-10 (random weights; the architecture of the paper's ``Standard``
classifier). Random weights change no timing. Measured on the first CUDA device:

- images x PGD-iterations per second of one aligned loss gradient (= one PGD iteration) for several batch
  sizes, fp32 and bf16 autocast; bf16 gradients are compared with fp32 ones (cosine similarity, target >= 0.99);
- the projected wall time of the paper's 1000-image PGD-40 evaluation at the best batch size;
- FLOPs (``torch.utils.flop_counter.FlopCounterMode``, batch 1): the purifier chain's forward and backward without
  checkpoint recomputation (per image-step: divided by t*), the classifier's, and what one loss gradient executes
  (recomputation included); the achieved fraction of the GPU's measured peak (a large matmul, fp32 and bf16)
  counts the useful FLOPs (chain + classifier, no recomputation);
- host-device synchronisations of one loss gradient (torch's sync debug mode, its "synchronizing CUDA
  operation" warnings only).

Batch sizes whose estimated memory (one reverse step's autograd graph measured with ``art_diffpure.checkpointing``,
scaled to the whole chain and batch) does not fit the device's free memory are skipped, with the estimate in
their row. The global TF32 flags are set off for the run and restored afterwards.

On a machine without CUDA it exits with a message; ``--smoke`` runs tiny models on whatever device there is
(CPU included) to check the script.

    python benchmarks/b5_gpu.py                        # CUDA; about 5 minutes on an H100
    python benchmarks/b5_gpu.py --batch-sizes 16,64,128 --no-checkpoint
    python benchmarks/b5_gpu.py --smoke                # seconds, CPU allowed
"""
from __future__ import annotations

import contextlib
import sys
import time

import numpy as np

import _common as common  # noqa: E402

NAME = "b5_gpu"
#: The warning torch's sync debug mode ("warn") gives on each synchronising CUDA operation.
SYNC_WARNING = "called a synchronizing CUDA operation"


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


def estimate_bytes(purifier, classifier_model, shape, device, t_star: int, checkpointed: bool) -> dict:
    """Per-row bytes of one reverse step's graph and of the classifier's graph (measured at batch 2), and the
    function that turns them into an estimate of one loss gradient's peak for a batch (fp32: an upper bound for
    bf16 autocast)."""
    import torch

    from art_diffpure import checkpointing

    rows = 2
    x_t = torch.randn((rows, *shape), device=device, requires_grad=True)
    noise = torch.randn((rows, *shape), device=device)
    step, _ = checkpointing.graph_bytes(purifier.model, purifier._reverse_step, x_t, t_star - 1, noise)
    x = torch.rand((rows, *shape), device=device, requires_grad=True)
    clf, _ = checkpointing.graph_bytes(classifier_model, classifier_model, x)
    state = int(np.prod(shape)) * 4
    per_row = {"reverse_step_graph": step / rows, "classifier_graph": clf / rows, "state": state}

    def batch_bytes(b: int) -> int:
        chain = checkpointing.chain_bytes(int(per_row["reverse_step_graph"] * b), t_star, b, state * b, checkpointed)
        return int(chain + per_row["classifier_graph"] * b)

    return {"per_row_bytes": per_row, "batch_bytes": batch_bytes}


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", default=None, help="comma-separated (default 8,32,64,128)")
    p.add_argument("--t-star", type=int, default=None)
    p.add_argument("--no-checkpoint", action="store_true", help="purifier without gradient checkpointing")
    p.add_argument("--eval-images", type=int, default=1000, help="size of the projected evaluation")
    p.add_argument("--eval-steps", type=int, default=40)
    args = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available() and not args.smoke:
        sys.exit("b5_gpu.py needs a CUDA GPU (torch.cuda.is_available() is False); nothing was measured. "
                 "Run it on a CUDA machine, or use --smoke for a tiny CPU dry run.")
    threads = common.setup_threads(args.threads)
    saved_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    torch.backends.cudnn.allow_tf32 = False
    try:
        return run(args, threads)
    finally:  # the flags are global: leave them as the caller had them
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_tf32


def run(args, threads: int) -> dict:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from diffusers import UNet2DModel

    from art_diffpure.attacks import RandomnessAlignedAttack
    from art_diffpure.models.digits import digits_scheduler
    from art_diffpure.purifier import DiffusionPurifier
    from art_diffpure.zoo import art_classifier, import_robustbench

    import_robustbench()
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    batch_sizes = [int(v) for v in (args.batch_sizes or ("1,2" if args.smoke else "8,32,64,128")).split(",")]
    t_star = args.t_star or (2 if args.smoke else 100)
    repeats = args.repeats or (1 if args.smoke else 3)
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
    purifier = DiffusionPurifier(unet, digits_scheduler(), t_star=t_star, seed=0, checkpoint=not args.no_checkpoint,
                                 batch_size=max(batch_sizes), device_type=device_type)
    classifier = art_classifier(wrn.to(device), (3, 32, 32), 10, purifier=purifier, device_type=device_type)
    rng = np.random.default_rng(0)
    x_all = rng.random((max(batch_sizes), 3, 32, 32), dtype=np.float32)
    y_all = rng.integers(0, 10, max(batch_sizes))

    from art_diffpure import checkpointing

    estimate = estimate_bytes(purifier, wrn, (3, 32, 32), device, t_star, checkpointed=not args.no_checkpoint)
    free = checkpointing.free_bytes(device)
    limit = None if free is None else int(free * MEMORY_HEADROOM)
    rows, grads, skipped = [], {}, []
    for b in batch_sizes:
        need = estimate["batch_bytes"](b)
        if limit is not None and need > limit:
            why = (f"estimated {need / 2**30:.1f} GiB for one loss gradient "
                   f"({'checkpointed' if not args.no_checkpoint else 'no checkpointing'}) > {limit / 2**30:.1f} GiB "
                   f"({MEMORY_HEADROOM:.0%} of the {free / 2**30:.1f} GiB free)")
            print(f"batch {b:4d}: skipped, {why}")
            skipped.append({"batch": b, "skipped": why, "estimated_bytes": need})
            continue
        attack = RandomnessAlignedAttack(classifier, randomness="aligned", seed=0, eps=8 / 255, eps_step=8 / 255 / 30,
                                         max_iter=40, batch_size=b)
        x, y = x_all[:b], y_all[:b]
        for dtype in ("fp32", "bf16"):
            def grad():
                with autocast(device, dtype):
                    g = attack.loss_gradient(x, y)
                sync(device)
                return g

            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times, g = common.timed(grad, repeats, warmup=1)
            grads[(b, dtype)] = g
            t = common.median(times)
            row = {"batch": b, "dtype": dtype, "grad_s": times, "grad_median_s": t,
                   "images_x_iterations_per_s": b / t, "image_steps_per_s": b * t_star / t,
                   "estimated_bytes": need}
            if device.type == "cuda":
                row["cuda_max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
            print(f"batch {b:4d} {dtype}: {t:.3f} s per gradient, {b / t:.2f} images x iterations / s")
            rows.append(row)
        g32, g16 = grads[(b, "fp32")].reshape(b, -1), grads[(b, "bf16")].reshape(b, -1)
        cos = (g32 * g16).sum(1) / np.maximum(np.linalg.norm(g32, axis=1) * np.linalg.norm(g16, axis=1), 1e-30)
        for row in rows[-2:]:
            row["bf16_vs_fp32_cosine_min"] = float(cos.min())
            row["bf16_vs_fp32_cosine_mean"] = float(cos.mean())
            row["bf16_vs_fp32_sign_agreement"] = float((np.sign(g32) == np.sign(g16)).mean())

    # FLOPs at batch 1, fp32: what one loss gradient executes (checkpoint recomputation included), the purifier
    # chain's forward + backward without recomputation, and the classifier's forward + backward.
    attack1 = RandomnessAlignedAttack(classifier, seed=0, eps=8 / 255, eps_step=8 / 255 / 30, batch_size=1)
    flops_executed = count_flops(lambda: attack1.loss_gradient(x_all[:1], y_all[:1]))
    x1 = torch.from_numpy(x_all[:1]).to(device)

    def chain_fwd_bwd():
        xg = x1.clone().requires_grad_(True)
        purifier.forward(xg)[0].sum().backward()

    checkpoint_setting, purifier.checkpoint = purifier.checkpoint, False
    try:
        flops_chain = count_flops(chain_fwd_bwd)
    finally:
        purifier.checkpoint = checkpoint_setting

    def classifier_fwd_bwd():
        xg = x1.clone().requires_grad_(True)
        wrn(xg).sum().backward()

    flops_classifier = count_flops(classifier_fwd_bwd)
    with torch.no_grad():
        flops_unet_fwd = count_flops(lambda: unet(x1, torch.tensor([10], device=device)))
    flops_useful = flops_chain + flops_classifier
    # Host-device synchronisations during one loss gradient (CUDA only): torch's sync debug mode warns on each
    # synchronising operation; other warnings raised meanwhile are not synchronisations.
    syncs = None
    if device.type == "cuda":
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                attack1.loss_gradient(x_all[:1], y_all[:1])
            finally:
                torch.cuda.set_sync_debug_mode("default")
        sync_warnings = [w for w in caught if SYNC_WARNING in str(w.message)]
        syncs = {"per_loss_gradient": len(sync_warnings), "per_reverse_step": len(sync_warnings) / t_star,
                 "other_warnings": len(caught) - len(sync_warnings),
                 "first_messages": sorted({str(w.message)[:160] for w in sync_warnings})[:5]}
    size = 512 if args.smoke else 8192
    peak = {"fp32": matmul_peak(device, torch.float32, size), "bf16": matmul_peak(device, torch.bfloat16, size)}
    for row in rows:
        achieved = flops_useful * row["batch"] / row["grad_median_s"]
        row["achieved_flops_per_s"] = achieved
        row["fraction_of_measured_peak"] = achieved / peak[row["dtype"]]
        row["executed_fraction_of_measured_peak"] = flops_executed * row["batch"] / row["grad_median_s"] / peak[
            row["dtype"]]

    best = {dt: max((r for r in rows if r["dtype"] == dt), key=lambda r: r["images_x_iterations_per_s"])
            for dt in ("fp32", "bf16") if any(r["dtype"] == dt for r in rows)}
    projection = {dt: {"batch": r["batch"], "images_x_iterations_per_s": r["images_x_iterations_per_s"],
                       "projected_s": args.eval_images * args.eval_steps / r["images_x_iterations_per_s"],
                       "projected_h": args.eval_images * args.eval_steps / r["images_x_iterations_per_s"] / 3600}
                  for dt, r in best.items()}
    result = {
        "benchmark": NAME, "smoke": bool(args.smoke), "device": str(device),
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else common.cpu_model(),
        "settings": {"t_star": t_star, "checkpoint": not args.no_checkpoint, "batch_sizes": batch_sizes,
                     "repeats": repeats, "threads": threads, "unet_params": n_unet, "classifier_params": n_wrn,
                     "weights": "random (timing only)", "tf32": False},
        "rows": rows,
        "skipped": skipped,
        "memory": {"free_bytes": free, "limit_bytes": limit, "headroom": MEMORY_HEADROOM,
                   "per_row_bytes": estimate["per_row_bytes"]},
        "flops": {"chain_per_image_step": flops_chain / t_star, "chain_per_image": flops_chain,
                  "classifier_per_image": flops_classifier, "useful_per_loss_gradient_batch1": flops_useful,
                  "executed_per_loss_gradient_batch1": flops_executed,
                  "checkpoint_recompute_batch1": flops_executed - flops_useful,
                  "unet_forward_per_image": flops_unet_fwd},
        "host_device_syncs": syncs,
        "measured_peak_flops_per_s": peak, "matmul_size": size,
        "projection": {"images": args.eval_images, "pgd_steps": args.eval_steps, **projection},
        "targets": {"bf16_cosine_at_least": 0.99,
                    "bf16_cosine_met": all(r["bf16_vs_fp32_cosine_min"] >= 0.99 for r in rows) if rows else None},
    }
    for dt, pr in projection.items():
        print(f"{dt}: best batch {pr['batch']}, 1000-image PGD-40 projected {pr['projected_h']:.2f} h")
    common.write_json(result, args.out, NAME)
    return result


if __name__ == "__main__":
    main()
