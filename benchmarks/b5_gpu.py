"""B5 (GPU): throughput of full-gradient aligned PGD in the CIFAR-10 setting of the paper.

Models: the ``google/ddpm-cifar10-32`` UNet configuration (random weights, 35.7M parameters) as the purifier
at t* = 100 and RobustBench's WideResNet-28-10 (random weights; the architecture of the paper's ``Standard``
classifier). Random weights change no timing. Measured on the first CUDA device:

- images x PGD-iterations per second of one aligned loss gradient (= one PGD iteration) for several batch
  sizes, fp32 and bf16 autocast; bf16 gradients are compared with fp32 ones (cosine similarity, target >= 0.99);
- the projected wall time of the paper's 1000-image PGD-40 evaluation at the best batch size;
- FLOPs per image-step (``torch.utils.flop_counter.FlopCounterMode`` over one loss gradient, divided by
  batch x t*) and the achieved fraction of the GPU's measured peak (a large matmul, fp32 and bf16).

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
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    torch.backends.cudnn.allow_tf32 = False

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

    rows, grads = [], {}
    for b in batch_sizes:
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
                   "images_x_iterations_per_s": b / t, "image_steps_per_s": b * t_star / t}
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

    # FLOPs of one loss gradient (batch 1) per image-step, fp32.
    from torch.utils.flop_counter import FlopCounterMode

    attack1 = RandomnessAlignedAttack(classifier, seed=0, eps=8 / 255, eps_step=8 / 255 / 30, batch_size=1)
    with FlopCounterMode(display=False) as counter:
        attack1.loss_gradient(x_all[:1], y_all[:1])
    flops_grad_1 = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter_fwd, torch.no_grad():
        unet(torch.from_numpy(x_all[:1]).to(device), torch.tensor([10], device=device))
    flops_unet_fwd = counter_fwd.get_total_flops()
    # Host-device synchronisations during one loss gradient (CUDA only): torch's sync debug mode warns on each.
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
        syncs = {"per_loss_gradient": len(caught), "per_reverse_step": len(caught) / t_star,
                 "first_messages": sorted({str(w.message)[:160] for w in caught})[:5]}
    size = 512 if args.smoke else 8192
    peak = {"fp32": matmul_peak(device, torch.float32, size), "bf16": matmul_peak(device, torch.bfloat16, size)}
    for row in rows:
        achieved = flops_grad_1 * row["batch"] / row["grad_median_s"]
        row["achieved_flops_per_s"] = achieved
        row["fraction_of_measured_peak"] = achieved / peak[row["dtype"]]

    best = {dt: max((r for r in rows if r["dtype"] == dt), key=lambda r: r["images_x_iterations_per_s"])
            for dt in ("fp32", "bf16")}
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
        "flops": {"per_loss_gradient_batch1": flops_grad_1, "per_image_step": flops_grad_1 / t_star,
                  "unet_forward_per_image": flops_unet_fwd},
        "host_device_syncs": syncs,
        "measured_peak_flops_per_s": peak, "matmul_size": size,
        "projection": {"images": args.eval_images, "pgd_steps": args.eval_steps, **projection},
        "targets": {"bf16_cosine_at_least": 0.99,
                    "bf16_cosine_met": all(r["bf16_vs_fp32_cosine_min"] >= 0.99 for r in rows)},
    }
    for dt, pr in projection.items():
        print(f"{dt}: best batch {pr['batch']}, 1000-image PGD-40 projected {pr['projected_h']:.2f} h")
    common.write_json(result, args.out, NAME)
    return result


if __name__ == "__main__":
    main()
