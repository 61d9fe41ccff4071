#!/usr/bin/env python
"""
Retrain the embedded digits models (classifier and DDPM) on CPU with fixed seeds.

Writes into ``art_diffpure/weights/``: ``digits_cnn.safetensors``, ``digits_unet.safetensors``,
``digits_samples.png`` (64 samples of the full 1000-step reverse process) and ``provenance.json``
(seeds, split, steps, timings, accuracy, loss, versions, the undefended PGD robust accuracies, the
recommended eps and the clean accuracy after purification).

Usage::

    python scripts/train_embedded.py                    # both models, then the evaluations
    python scripts/train_embedded.py --classifier-only  # < 1 min
    python scripts/train_embedded.py --ddpm-only --steps 20000 --checkpoint build/ddpm.pt  # resumable
    python scripts/train_embedded.py --eval-only        # only recompute samples and evaluations
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import platform
import sys
import time
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from art_diffpure.models import digits as embedded  # noqa: E402
from art_diffpure.models.data import SPLIT_DEFINITION, load_digits_split  # noqa: E402

PGD_EPS = (0.05, 0.1, 0.15, 0.2, 0.3)
PURIFY_T_STARS = (50, 100)


# ---------------------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on numpy ``x``, ``y``."""
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())


def load_json(path: str) -> dict[str, Any]:
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return {}


def save_state(model: torch.nn.Module, path: str) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, path)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------- classifier
def train_classifier(seed: int, epochs: int, out_dir: str) -> dict[str, Any]:
    """Adam + cross-entropy on the train split; returns its provenance entry."""
    seed_everything(seed)
    x_tr, y_tr = load_digits_split("train")
    x_te, y_te = load_digits_split("test")
    model = embedded.DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    start = time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if (epoch + 1) % 10 == 0:
            print(f"[classifier] epoch {epoch + 1}/{epochs} loss {total / len(xt):.4f} "
                  f"test acc {accuracy(model, x_te, y_te):.4f}", flush=True)
    seconds = time.time() - start
    model.eval()
    save_state(model, os.path.join(out_dir, embedded.CLASSIFIER_FILE))
    entry = {
        "seed": seed, "epochs": epochs, "batch_size": 64, "optimizer": "Adam(lr=1e-3, weight_decay=1e-4), cosine",
        "parameters": n_params(model), "training_seconds": round(seconds, 1),
        "train_accuracy": accuracy(model, x_tr, y_tr), "test_accuracy": accuracy(model, x_te, y_te),
    }
    print(f"[classifier] done in {seconds:.1f}s, test accuracy {entry['test_accuracy']:.4f}", flush=True)
    return entry


# ---------------------------------------------------------------------------------------- DDPM
def train_ddpm(seed: int, steps: int, batch_size: int, lr: float, ema_decay: float, out_dir: str,
               checkpoint: str | None) -> dict[str, Any]:
    """
    Standard DDPM epsilon-prediction MSE training (uniform timesteps) on the train split, with Adam,
    linear warmup then cosine decay, and an EMA of the weights (the EMA weights are shipped).
    No augmentation: flips would turn digits into non-digits.
    """
    from diffusers import UNet2DModel

    seed_everything(seed)
    x_tr, _ = load_digits_split("train")
    data = torch.from_numpy(x_tr) * 2.0 - 1.0  # model space [-1, 1]
    scheduler = embedded.digits_scheduler()
    acp = scheduler.alphas_cumprod.float()
    unet = UNet2DModel(**embedded.digits_unet_config())
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.Adam(unet.parameters(), lr=lr)
    warmup = min(500, steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        return lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))))

    gen = torch.Generator().manual_seed(seed)
    step, losses, seconds_before = 0, [], 0.0
    if checkpoint and os.path.isfile(checkpoint):
        state = torch.load(checkpoint, weights_only=False)
        if state["steps"] == steps and state["seed"] == seed:
            unet.load_state_dict(state["unet"])
            ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["opt"])
            gen.set_state(state["gen"])
            step, losses, seconds_before = state["step"], state["losses"], state["seconds"]
            print(f"[ddpm] resumed from {checkpoint} at step {step}", flush=True)

    start = time.time()
    unet.train()
    while step < steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        idx = torch.randint(0, len(data), (batch_size,), generator=gen)
        x0 = data[idx]
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = acp[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = torch.nn.functional.mse_loss(unet(x_t, t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay = min(ema_decay, (1 + step) / (10 + step))  # short EMA memory early on
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - decay)
        losses.append(loss.item())
        step += 1
        if step % 500 == 0 or step == steps:
            elapsed = seconds_before + time.time() - start
            print(f"[ddpm] step {step}/{steps} loss(avg 500) {np.mean(losses[-500:]):.4f} "
                  f"lr {lr_at(step - 1):.2e} {elapsed:.0f}s", flush=True)
            if checkpoint:
                os.makedirs(os.path.dirname(os.path.abspath(checkpoint)), exist_ok=True)
                torch.save({"steps": steps, "seed": seed, "step": step, "unet": unet.state_dict(),
                            "ema": ema.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                            "losses": losses, "seconds": elapsed}, checkpoint)
    seconds = seconds_before + time.time() - start
    save_state(ema, os.path.join(out_dir, embedded.UNET_FILE))

    # The final loss of the shipped (EMA) weights on the train split, over fixed (t, noise) draws.
    eval_gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        ema_losses = []
        for _ in range(4):
            t = torch.randint(0, scheduler.config.num_train_timesteps, (len(data),), generator=eval_gen)
            noise = torch.randn(data.shape, generator=eval_gen)
            a = acp[t].view(-1, 1, 1, 1)
            ema_losses.append(float(torch.nn.functional.mse_loss(ema(a.sqrt() * data + (1 - a).sqrt() * noise, t).sample, noise)))
    entry = {
        "seed": seed, "steps": steps, "batch_size": batch_size,
        "optimizer": f"Adam(lr={lr}), {warmup} warmup steps then cosine decay to 2% of lr",
        "ema_decay": ema_decay, "augmentation": "none", "loss": "MSE(eps_pred, eps), t ~ U{0..999}",
        "parameters": n_params(ema), "training_seconds": round(seconds, 1),
        "final_loss_train_avg_last_500_steps": float(np.mean(losses[-500:])),
        "final_loss_ema_train_split": float(np.mean(ema_losses)),
        "unet_config": embedded.digits_unet_config(),
        "scheduler_config": {k: v for k, v in dict(embedded.digits_scheduler().config).items() if not k.startswith("_")},
    }
    print(f"[ddpm] done in {seconds:.0f}s, EMA loss {entry['final_loss_ema_train_split']:.4f}", flush=True)
    return entry


# ---------------------------------------------------------------------------------------- evaluations
def sample_grid(seed: int, out_dir: str, n: int = 64) -> dict[str, Any]:
    """Draw ``n`` samples with the full 1000-step DDPM reverse process and save an 8x8 grid PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unet = embedded.load_digits_unet()
    scheduler = embedded.digits_scheduler()
    scheduler.set_timesteps(scheduler.config.num_train_timesteps)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((n, 1, 8, 8), generator=gen)
    start = time.time()
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x, generator=gen).prev_sample
    seconds = time.time() - start
    images = ((x.clamp(-1, 1) + 1) / 2).numpy()
    classifier = embedded.load_digits_classifier()
    with torch.no_grad():
        probs = torch.softmax(classifier(torch.from_numpy(images)), 1)
    conf, pred = probs.max(1)
    side = int(math.ceil(math.sqrt(n)))
    fig, axes = plt.subplots(side, side, figsize=(side, side * 1.1))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i, 0], cmap="gray_r", vmin=0, vmax=1)
            ax.set_title(f"{int(pred[i])} ({float(conf[i]):.2f})", fontsize=7)
    fig.suptitle(f"DDPM samples, 1000 reverse steps, seed {seed} (title: classifier label, confidence)", fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "digits_samples.png"), dpi=80)
    plt.close(fig)
    return {"file": "digits_samples.png", "n": n, "seed": seed, "reverse_steps": 1000,
            "seconds": round(seconds, 1), "mean_classifier_confidence": float(conf.mean()),
            "predicted_label_counts": np.bincount(pred.numpy(), minlength=10).tolist()}


def undefended_pgd(eps_values: tuple[float, ...]) -> dict[str, Any]:
    """ART Linf PGD (40 iterations, eps_step = eps / 10, no random init) on the undefended classifier."""
    from art.attacks.evasion import ProjectedGradientDescent

    x, y = load_digits_split("test")
    classifier = embedded.digits_art_classifier()
    results = {}
    for eps in eps_values:
        attack = ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=eps / 10, max_iter=40,
                                          num_random_init=0, batch_size=len(x), verbose=False)
        x_adv = attack.generate(x, y=y)
        results[str(eps)] = float((classifier.predict(x_adv).argmax(1) == y).mean())
        print(f"[pgd] eps {eps}: robust accuracy {results[str(eps)]:.4f}", flush=True)
    return {
        "attack": "art ProjectedGradientDescent(norm=inf, eps_step=eps/10, max_iter=40, num_random_init=0), "
                  "untargeted, true labels, test split",
        "clean_accuracy": float((classifier.predict(x).argmax(1) == y).mean()),
        "robust_accuracy": results,
    }


def purified_clean_accuracy(t_stars: tuple[int, ...]) -> dict[str, Any]:
    """Clean test accuracy of classifier(purify(x)) for the ddpm sampler with seed 0."""
    x, y = load_digits_split("test")
    classifier = embedded.load_digits_classifier()
    out = {}
    for t_star in t_stars:
        purifier = embedded.load_digits_purifier(t_star=t_star, sampler="ddpm", seed=0)
        start = time.time()
        x_pur = purifier.purify(x)
        out[str(t_star)] = accuracy(classifier, x_pur, y)
        print(f"[purify] t*={t_star}: clean accuracy {out[str(t_star)]:.4f} ({time.time() - start:.0f}s)", flush=True)
    return {"sampler": "ddpm", "seed": 0, "split": "test", "accuracy": out}


def unet_timing(batch: int = 64, repeats: int = 20) -> dict[str, Any]:
    """Median wall time of one UNet forward and forward+backward at ``batch`` on this CPU."""
    unet = embedded.load_digits_unet().train()
    x = torch.randn(batch, 1, 8, 8, requires_grad=True)
    t = torch.randint(0, 1000, (batch,))
    fb, fw = [], []
    for i in range(repeats + 3):
        start = time.perf_counter()
        unet(x, t).sample.sum().backward()
        if i >= 3:
            fb.append(time.perf_counter() - start)
        with torch.no_grad():
            start = time.perf_counter()
            unet(x, t)
            if i >= 3:
                fw.append(time.perf_counter() - start)
    return {"batch": batch, "threads": torch.get_num_threads(), "forward_ms": round(1e3 * float(np.median(fw)), 1),
            "forward_backward_ms": round(1e3 * float(np.median(fb)), 1)}


# ---------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--classifier-only", action="store_true", help="train only the classifier")
    which.add_argument("--ddpm-only", action="store_true", help="train only the DDPM")
    which.add_argument("--eval-only", action="store_true", help="train nothing; redo samples and evaluations")
    parser.add_argument("--steps", type=int, default=8000, help="DDPM optimisation steps")
    parser.add_argument("--batch-size", type=int, default=64, help="DDPM batch size")
    parser.add_argument("--lr", type=float, default=2e-3, help="DDPM peak learning rate")
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--epochs", type=int, default=40, help="classifier epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed of both trainings (DDPM uses it as is)")
    parser.add_argument("--checkpoint", default=None, help="DDPM checkpoint file: saved every 500 steps, resumed if present")
    parser.add_argument("--skip-eval", action="store_true", help="skip samples, PGD and purification evaluations")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: small kernels gain little from more, and suffer badly on a busy CPU)")
    parser.add_argument("--out-dir", default=embedded.WEIGHTS_DIR)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    os.makedirs(args.out_dir, exist_ok=True)
    if os.path.abspath(args.out_dir) != os.path.abspath(embedded.WEIGHTS_DIR):
        embedded.WEIGHTS_DIR = args.out_dir  # the evaluations load what was just written
    prov_path = os.path.join(args.out_dir, embedded.PROVENANCE_FILE)
    prov = load_json(prov_path)  # keep the entry of a model that is not retrained

    if not (args.ddpm_only or args.eval_only):
        prov["classifier"] = train_classifier(args.seed, args.epochs, args.out_dir)
    if not (args.classifier_only or args.eval_only):
        prov["ddpm"] = train_ddpm(args.seed, args.steps, args.batch_size, args.lr, args.ema_decay, args.out_dir,
                                  args.checkpoint)

    import art
    import diffusers
    import safetensors
    import sklearn

    prov.update({
        "script": "scripts/train_embedded.py",
        "command": " ".join([os.path.basename(sys.argv[0])] + (argv if argv is not None else sys.argv[1:])),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "split": SPLIT_DEFINITION,
        "input": "NCHW float32 (n, 1, 8, 8) in [0, 1]; the DDPM works in [-1, 1] = 2x - 1",
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
                     "art": art.__version__, "sklearn": sklearn.__version__, "numpy": np.__version__,
                     "safetensors": safetensors.__version__},
        "hardware": f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads",
    })
    if not args.skip_eval and "ddpm" in prov and "classifier" in prov:
        prov["samples"] = sample_grid(args.seed, args.out_dir)
        prov["unet_timing"] = unet_timing()
        prov["undefended_pgd"] = undefended_pgd(PGD_EPS)
        robust = prov["undefended_pgd"]["robust_accuracy"]
        broken = [float(e) for e in PGD_EPS if robust[str(e)] <= 0.10]
        # The smallest tried eps at which PGD brings the undefended classifier to <= 10% accuracy.
        prov["recommended_eps"] = min(broken) if broken else None
        prov["recommended_eps_rule"] = "smallest eps in the sweep with undefended PGD robust accuracy <= 10%"
        prov["purified_clean_accuracy"] = purified_clean_accuracy(PURIFY_T_STARS)
    with open(prov_path, "w", encoding="utf-8") as f:
        json.dump(prov, f, indent=2)
        f.write("\n")
    print(f"wrote {prov_path}", flush=True)


if __name__ == "__main__":
    main()
