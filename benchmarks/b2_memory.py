"""B2: peak memory of ONE full-gradient loss gradient through the purifier, with and without checkpointing.

For every (model, t*, checkpoint) a fresh subprocess loads the models, records its peak RSS as the
baseline (after imports, model load and input creation), computes ``d CE(classifier(purifier(x)), y) / dx``
once and records the peak RSS again; the difference is reported (CPU). On CUDA the figure is
``torch.cuda.max_memory_allocated`` minus the allocation before the gradient.

Models: the embedded digits UNet (1x8x8) at batch 64, and the ddpm-cifar10-32 UNet configuration (random
weights, 35.7M parameters, 3x32x32) at batch 1 and small t* (it costs ~0.2 s per image-step fwd+bwd on CPU).

    python benchmarks/b2_memory.py                # digits t* in {10, 50, 100, 200}, cifar t* in {10, 50}
    python benchmarks/b2_memory.py --no-cifar     # digits only
    python benchmarks/b2_memory.py --smoke
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import _common as common  # noqa: E402

NAME = "b2_memory"


def child(spec: dict) -> dict:
    """Runs in a fresh process: one loss gradient, peak memory above the post-setup baseline."""
    import resource

    import torch

    common.setup_threads(spec["threads"])
    from art_diffpure.models.digits import digits_scheduler
    from art_diffpure.purifier import DiffusionPurifier

    device = "cuda" if spec["device"] == "cuda" else "cpu"
    if spec["model"] == "digits":
        unet, source = common.digits_unet()
        clf, _ = common.digits_classifier_model()
        shape = (1, 8, 8)
    else:
        unet, source = common.cifar_unet(), "random-init ddpm-cifar10-32 config"
        torch.manual_seed(1)
        clf = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                  torch.nn.Linear(16 * 32 * 32, 10)).eval()
        shape = (3, 32, 32)
    clf = clf.to(device).requires_grad_(False)
    purifier = DiffusionPurifier(unet.to(device), digits_scheduler(), t_star=spec["t_star"], seed=0,
                                 checkpoint=spec["checkpoint"], batch_size=spec["batch"],
                                 device_type="gpu" if device == "cuda" else "cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.rand((spec["batch"], *shape), generator=g).to(device)
    y = torch.randint(0, 10, (spec["batch"],), generator=g).to(device)
    # Build (and cache) the aligned noise before the baseline: it is per batch, not per gradient.
    # Warm-up: one gradient at t*=1 on one row, so lazily loaded code and the autograd engine's own buffers
    # are in the baseline (it costs one row-step of activations, negligible against the measured chain).
    t_star = purifier.t_star
    purifier.t_star = 1
    xw = x[:1].clone().requires_grad_(True)
    torch.autograd.grad(torch.nn.functional.cross_entropy(clf(purifier.forward(xw)[0]), y[:1]), xw)
    purifier.t_star = t_star
    purifier._noise_cache.clear()
    del xw
    purifier._noise(purifier._row_randomness(spec["batch"], None, None), spec["batch"],
                    purifier._reverse_timesteps(), shape, reverse=True, like=x)
    purifier._noise(purifier._row_randomness(spec["batch"], None, None), spec["batch"],
                    [spec["t_star"] - 1], shape, reverse=False, like=x)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    t0 = time.perf_counter()
    xg = x.clone().requires_grad_(True)
    purified, _ = purifier.forward(xg)
    loss = torch.nn.functional.cross_entropy(clf(purified), y)
    (grad,) = torch.autograd.grad(loss, xg)
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    out = {"model": spec["model"], "unet_weights": source, "t_star": spec["t_star"], "checkpoint": spec["checkpoint"],
           "batch": spec["batch"], "time_s": elapsed, "grad_abs_sum": float(grad.abs().sum()),
           "unet_params": sum(p.numel() for p in unet.parameters())}
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.update(baseline_rss_mib=base_rss / 1024, peak_rss_mib=peak_rss / 1024,
               peak_minus_baseline_mib=(peak_rss - base_rss) / 1024)
    if device == "cpu" and spec.get("live"):
        # Allocator-independent figure: the same gradient again (RSS is already recorded), with torch's profiler
        # logging every CPU allocation and free; the peak of their running sum is the live-tensor peak.
        def gradient():
            xg2 = x.clone().requires_grad_(True)
            loss2 = torch.nn.functional.cross_entropy(clf(purifier.forward(xg2)[0]), y)
            torch.autograd.grad(loss2, xg2)

        out["live_tensor_peak_mib"] = live_peak_mib(gradient)
    if device == "cuda":
        out["cuda_peak_minus_baseline_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return out


def live_peak_mib(fn) -> float:
    """Peak of live CPU tensor bytes allocated by ``fn`` (torch profiler memory events, in time order)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # Each event's SELF memory (its own allocations minus frees, children excluded; "[memory]" events are frees
    # outside any op), summed in start-time order: the live bytes at op granularity.
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20


def run_child(spec: dict, in_process: bool = False) -> dict:
    if in_process:  # smoke tests only: no fresh process, so the peak is not per configuration
        return child(spec)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    env = dict(os.environ)
    if spec.get("mmap_threshold"):
        # glibc: a fixed mmap threshold returns large freed blocks to the OS at once, so peak RSS follows live
        # tensors instead of heap fragmentation (the default threshold grows dynamically up to 32 MiB).
        env["MALLOC_MMAP_THRESHOLD_"] = str(spec["mmap_threshold"])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--child", default=None, help=argparse_suppress())
    p.add_argument("--t-stars", default=None, help="comma-separated t* for the digits UNet")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--no-cifar", action="store_true")
    p.add_argument("--cifar-t-stars", default=None)
    p.add_argument("--cifar-batch", type=int, default=1)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--mmap-threshold", type=int, default=None,
                   help="set MALLOC_MMAP_THRESHOLD_ (bytes) in the children, e.g. 131072")
    p.add_argument("--live", action="store_true",
                   help="CPU: also the live-tensor peak of a second gradient, from torch.profiler memory events")
    p.add_argument("--in-process", action="store_true",
                   help="no subprocess per configuration (fast CI smoke only; peaks are then NOT per configuration)")
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return {}
    threads = common.setup_threads(args.threads)
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    t_stars = [int(v) for v in (args.t_stars or ("2,8" if args.smoke else "10,50,100,200")).split(",")]
    batch = args.batch or (4 if args.smoke else 64)
    configs = [("digits", t, ck, batch) for t in t_stars for ck in (True, False)]
    if not args.no_cifar and not args.smoke:
        for t in [int(v) for v in (args.cifar_t_stars or "10,50").split(",")]:
            configs += [("cifar", t, ck, args.cifar_batch) for ck in (True, False)]
    rows = []
    for model, t, ck, b in configs:
        row = run_child({"model": model, "t_star": t, "checkpoint": ck, "batch": b, "threads": threads,
                         "device": device, "mmap_threshold": args.mmap_threshold, "live": args.live},
                        in_process=args.in_process)
        live = f", live tensors {row['live_tensor_peak_mib']:.1f} MiB" if "live_tensor_peak_mib" in row else ""
        print(f"{model:6s} t*={t:4d} checkpoint={ck!s:5s} batch={b:3d}: +{row['peak_minus_baseline_mib']:.1f} MiB "
              f"({row['time_s']:.1f} s){live}")
        rows.append(row)

    key = "cuda_peak_minus_baseline_mib" if device == "cuda" else "peak_minus_baseline_mib"
    summary = {}
    for metric in (key, "live_tensor_peak_mib"):
        for model in sorted({r["model"] for r in rows}):
            for ck in (True, False):
                sel = sorted((r for r in rows if r["model"] == model and r["checkpoint"] == ck and metric in r),
                             key=lambda r: r["t_star"])
                if len(sel) >= 2:
                    lo, hi = sel[0], sel[-1]
                    name = f"{model}_checkpoint_{ck}" + ("_live" if metric == "live_tensor_peak_mib" else "")
                    summary[name] = {"metric": metric, "t_star_lo": lo["t_star"], "t_star_hi": hi["t_star"],
                                     "mib_lo": lo[metric], "mib_hi": hi[metric],
                                     "ratio_hi_over_lo": hi[metric] / max(lo[metric], 1e-9)}
    result = {"benchmark": NAME, "smoke": bool(args.smoke), "device": device, "metric": key,
              "in_process": bool(args.in_process), "live": bool(args.live),
              "malloc_mmap_threshold": args.mmap_threshold,
              "settings": {"digits_batch": batch, "digits_t_stars": t_stars, "threads": threads}, "rows": rows,
              "summary": summary, "targets": {"checkpoint_ratio_at_most": 1.5}}
    for name, row in summary.items():
        if "_checkpoint_True" in name:
            result["targets"][f"met_{name}"] = row["ratio_hi_over_lo"] <= 1.5
    common.write_json(result, args.out, NAME)
    return result


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
