"""``art-diffpure reproduce``: the paper's experiments per preset, collected into a report directory.

The experiments are generic over a :class:`Setting` (classifier, purifier factory, images, attack
budget); presets only differ in how they load those and in their sizes:

- ``digits`` (default): the embedded models on scikit-learn's digits; runs anywhere, offline.
- ``cifar10``: the paper's setup (google/ddpm-cifar10-32, RobustBench ``Standard`` WRN-28-10, the
  first 1000 CIFAR-10 test images); needs the weights, the data and a GPU.
- ``imagenet``: guided-diffusion 256x256 (converted with ``art-diffpure convert-adm``), RobustBench
  ``Standard_R50``, the first 200 validation images, BPDA; needs the weights, the data and a GPU.

Every number goes to ``results.json`` (timings apart, in ``timings.json``, so that two runs with the
same arguments give identical ``results.json``), tables to ``report.md`` and figures to PNG files.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from art_diffpure import report as rp
from art_diffpure import statistics

logger = logging.getLogger(__name__)

# The paper's CIFAR-10 numbers (Liu & Wei 2025), shown beside ours for reference.
PAPER = {
    "table1": {"ddpm": {"l2": (1.077, 3.641), "linf": (0.031, 0.316), "ssim": (0.965, 0.796), "fid": (0.226, 0.120)},
               "reverse": {"l2": (1.149, 3.078), "linf": (0.031, 0.270), "ssim": (0.965, 0.837), "fid": (0.209, 0.183)},
               "ddim": {"l2": (1.080, 2.810), "linf": (0.031, 0.242), "ssim": (0.964, 0.869), "fid": (0.234, 0.104)}},
    "table2": {"stochastic": {"clean": "86.0±0.8%", "pgd": "71.9±0.2%", "pgd_eot": "59.3%"},
               "aligned": {"clean": "85.8±0.4%", "pgd": "23.7±0.7%", "pgd_eot": "–"}},
    "table4": "77.4±0.36%",
    "table5": {"fixed_vs_fixed": "0.0818±0.0709", "eot_vs_fixed": "0.1682±0.0976"},
    "table6": {"ddpm": ("0.798±0.124", "0.989±0.201", "0.231±0.046", "23.7%"),
               "reverse": ("0.738±0.106", "0.864±0.151", "0.195±0.046", "34.9%"),
               "ddim": ("0.717±0.119", "0.815±0.140", "0.281±0.048", "10.9%")},
    "table7": {"t": (10, 20, 50, 100, 150, 200, 300),
               "ddpm": {"compress": (0.552, 0.420, 0.299, 0.231, 0.201, 0.187, 0.185),
                        "pgd_fix": (0.001, 0.010, 0.086, 0.237, 0.353, 0.395, 0.402)},
               "reverse": {"compress": (0.461, 0.355, 0.248, 0.195, 0.177, 0.174, 0.200),
                           "pgd_fix": (0.006, 0.035, 0.185, 0.349, 0.430, 0.465, 0.426)}},
    "tableS5": {"total": "3.597±0.877", "input": "0.020±0.005", "internal": "3.578±0.873", "snr": "5.926±1.065"},
    "tableS6": {"initial": "1.004±0.001", "vary_input_fixed_xi": "0.241±0.032",
                "vary_xi_fixed_input": "3.282±0.453", "vary_both": "3.288±0.453"},
    "fig3a": {"frac_below": 0.90, "frac_above": 0.013},
}


class PresetUnavailable(RuntimeError):
    """A preset's weights, data or device are missing; the message says what and how to provide it."""


@dataclass(frozen=True)
class Sizes:
    """
    How much of each experiment a run does. Sizes, seeds and images are fixed before a run and not changed after
    seeing its results; they were set by the CPU budget (see the report's Disclosure section for the history, which
    includes one setting that was dropped after it was measured).
    """

    n_images: int
    seeds: tuple[int, ...]
    max_iter: int
    eot_samples: int
    eot_images: int
    t_sweep: tuple[int, ...]
    sweep_images: int
    compression_samples: int
    neighbourhood_images: int
    neighbourhood_inputs: int
    neighbourhood_seeds: int
    jacobian_images: int
    curve_eps_factors: tuple[float, ...]
    curve_images: int
    curve_max_iter: int
    diagnostics_images: int
    square_queries: int
    batch_size: int
    sweep_seeds: int = 0  # how many of ``seeds`` attack each Table 7 / Fig. 3b configuration (0: all)

    def sweep_seed_list(self) -> tuple[int, ...]:
        return self.seeds[: self.sweep_seeds or None]

    def clamped(self) -> "Sizes":
        """These sizes with every per-table image count at most ``n_images`` (for ``--n-images``)."""
        keys = ("eot_images", "sweep_images", "neighbourhood_images", "jacobian_images", "curve_images",
                "diagnostics_images")
        return dataclasses.replace(self, **{k: min(getattr(self, k), self.n_images) for k in keys})


@dataclass
class Setting:
    """Everything an experiment needs: models, data and the attack budget."""

    name: str
    model: Any  # torch classifier on inputs in [0, 1]
    make_purifier: Callable[..., Any]  # (sampler, t_star, seed, gradient) -> DiffusionPurifier
    x: np.ndarray
    y: np.ndarray
    eps: float
    t_star: int
    sizes: Sizes
    device: str
    features: Callable[[Any], Any]  # penultimate features for the feature-FID
    gradient: str = "full"
    verbose: bool = True
    notes: list[str] = field(default_factory=list)


# Robustness over repeated test draws (DiffHammer's N-evaluation, ADDT's fixed-draw evaluation), fixed before any
# run: the stochastic defence's PGD examples (Table 2, seed 0) are tested under REPEATED_DRAWS independent fresh
# draws; draw k reseeds the purifier's own fresh-noise generator with REPEATED_DRAW_GENERATOR_SEED + k.
REPEATED_DRAWS = 10
REPEATED_DRAW_GENERATOR_SEED = 20_000

# ---------------------------------------------------------------------------------------------- presets
# Sized to the budget of 2 CPU cores: one image through one PGD step at t*=100 (forward and backward through 100
# UNet steps) costs about 20 ms in internal batches of 128 and 29 ms in batches of 32 (one thread, measured
# 2026-12-01), so a PGD-40 attack costs about 0.8 s per image. Fewer images than the paper, same protocol.
DIGITS_DEFAULT = Sizes(n_images=128, seeds=(0, 1, 2), max_iter=40, eot_samples=15, eot_images=16,
                       t_sweep=(10, 20, 50, 100), sweep_images=32, compression_samples=8,
                       neighbourhood_images=16, neighbourhood_inputs=16, neighbourhood_seeds=16, jacobian_images=8,
                       curve_eps_factors=(0.5, 1.0, 1.5), curve_images=16, curve_max_iter=10,
                       diagnostics_images=8, square_queries=50, batch_size=128)
# A small run at the default's t*=100 and eps: Tables 2 and 4 on 32 images with two seeds and PGD-10 (the same
# total step travel as PGD-40), so their intervals mean something; every other table runs at smoke-test size.
DIGITS_QUICK = Sizes(n_images=32, seeds=(0, 1), max_iter=10, eot_samples=3, eot_images=8, t_sweep=(10, 20, 50),
                     sweep_images=8, compression_samples=4, neighbourhood_images=3, neighbourhood_inputs=5,
                     neighbourhood_seeds=5, jacobian_images=2, curve_eps_factors=(0.5, 1.0), curve_images=6,
                     curve_max_iter=5, diagnostics_images=4, square_queries=10, batch_size=64)


def rel_step(max_iter: int) -> float:
    """
    PGD step as a fraction of eps. The paper's protocol (foolbox LinfPGD: 40 steps of eps/30) moves 4/3 eps in
    all; shorter attacks keep that total so they still cover the ball: 40 iterations give exactly eps/30.
    """
    return (0.01 / 0.3) * 40 / max_iter


def digits_setting(quick: bool, device: str, n_images: int | None, seeds: list[int] | None,
                   verbose: bool) -> Setting:
    """The embedded setting: DigitsCNN + the digits DDPM, the first images of the fixed test split."""
    from art_diffpure.data import load_digits_split
    from art_diffpure.embedded import load_digits_classifier, load_digits_purifier, load_provenance

    sizes = DIGITS_QUICK if quick else DIGITS_DEFAULT
    sizes = dataclasses.replace(sizes, **({"n_images": n_images} if n_images else {}),
                                **({"seeds": tuple(seeds)} if seeds else {})).clamped()
    x, y = load_digits_split("test")
    provenance = load_provenance()
    eps = float(provenance.get("recommended_eps", 0.2))
    model = load_digits_classifier(device=device)

    def make_purifier(sampler: str = "ddpm", t_star: int = 100, seed: int | None = 0, gradient: str = "full"):
        # "auto": this tiny UNet's graph usually fits (no recomputation, ~40% faster); the Jacobian and EOT batches
        # may not, and then the purifier checkpoints them.
        return load_digits_purifier(sampler=sampler, t_star=t_star, seed=seed, gradient=gradient,
                                    device_type="cpu" if device == "cpu" else "gpu", checkpoint="auto",
                                    batch_size=sizes.batch_size, generator_seed=0)

    t_star = 100  # the paper's t* = 0.1 of 1000 steps (also in --quick: at t*=20 aligned and stochastic do not differ)
    return Setting("digits", model, make_purifier, x[: sizes.n_images], y[: sizes.n_images], eps, t_star, sizes,
                   device, model.features, verbose=verbose,
                   notes=[f"eps = {eps} (Linf, on [0, 1] images): the smallest budget of the sweep at which PGD-40 "
                          "leaves the undefended classifier at most 10% accuracy (fixed when the models were trained; "
                          "see weights/provenance.json).",
                          f"The first {sizes.n_images} images of the fixed digits test split; sizes are set by the "
                          "CPU budget, so intervals over images are wide (a 95% interval is about "
                          f"±{100 * 1.96 * math.sqrt(0.25 / sizes.n_images):.0f} points at n={sizes.n_images} "
                          "near 50%); every accuracy below carries its interval."]
                   + ([f"--quick: a SMALL run: Tables 2 and 4 at t*=100 with PGD-{sizes.max_iter} (weaker than the "
                       f"default PGD-{DIGITS_DEFAULT.max_iter}) on {sizes.n_images} images and {len(sizes.seeds)} "
                       "seeds; every other table runs at smoke-test size (a few images, few iterations) and its "
                       "numbers and verdicts mean little."] if quick else []))


def _torch_device_ok(device: str) -> bool:
    import torch

    return device == "cpu" or (device.startswith("cuda") and torch.cuda.is_available())


def cifar10_setting(args) -> Setting:
    """The paper's CIFAR-10 setup; raises :class:`PresetUnavailable` at once when something is missing."""
    missing = []
    model_dir = args.model_dir or "./models"
    ckpt = os.path.join(model_dir, "cifar10", "Linf", "Standard.pt")
    if not os.path.isfile(ckpt):
        missing.append(f"the RobustBench 'Standard' checkpoint at {ckpt} (download it once with "
                       f"robustbench.utils.load_model('Standard', model_dir='{model_dir}') where there is network; "
                       "pass --model-dir)")
    diffusion = args.diffusion or "google/ddpm-cifar10-32"
    if not os.path.isdir(diffusion) and not _hub_cached(diffusion):
        missing.append(f"the diffusion model {diffusion!r} (a local diffusers directory, e.g. from "
                       "DiffusionPurifier.from_pretrained('google/ddpm-cifar10-32').save_pretrained(DIR); pass "
                       "--diffusion DIR)")
    data = args.data
    if not data or not os.path.isfile(os.path.join(data, "test_batch")):
        missing.append("the CIFAR-10 test set: --data DIR with DIR/test_batch from cifar-10-batches-py "
                       "(the python version of https://www.cs.toronto.edu/~kriz/cifar.html)")
    if not _torch_device_ok(args.device) or args.device == "cpu":
        missing.append("a CUDA GPU (--device cuda): full-gradient PGD-40 at t*=100 takes about a quarter of an "
                       "hour per image on a 2-core CPU")
    if missing:
        raise PresetUnavailable("missing " + "; ".join(missing))
    import pickle  # the CIFAR-10 python batches are pickles of plain arrays; only ever load the official file

    from art_diffpure.purifier import DiffusionPurifier
    from art_diffpure.zoo import load_robustbench_model

    with open(os.path.join(data, "test_batch"), "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    n = args.n_images or 1000
    x = (np.asarray(batch[b"data"][:n], dtype=np.float32).reshape(-1, 3, 32, 32) / 255.0)
    y = np.asarray(batch[b"labels"][:n], dtype=np.int64)
    model = load_robustbench_model("Standard", "cifar10", "Linf", model_dir).to(args.device)
    sizes = Sizes(n_images=n, seeds=tuple(args.seeds or (0, 1, 2)), max_iter=40, eot_samples=15, eot_images=n,
                  t_sweep=(10, 20, 50, 100, 150, 200, 300), sweep_images=n, compression_samples=16,
                  neighbourhood_images=50, neighbourhood_inputs=50, neighbourhood_seeds=50, jacobian_images=50,
                  curve_eps_factors=(0.25, 0.5, 1.0, 2.0), curve_images=min(n, 200), curve_max_iter=40,
                  diagnostics_images=min(n, 64), square_queries=1000, batch_size=args.batch_size or 32,
                  sweep_seeds=1)  # the paper's t* sweep: one seed per configuration

    def make_purifier(sampler="ddpm", t_star=100, seed=0, gradient="full"):
        return DiffusionPurifier.from_pretrained(diffusion, t_star=t_star, sampler=sampler, seed=seed,
                                                 gradient=gradient, device_type="gpu",
                                                 batch_size=sizes.batch_size, generator_seed=0)

    return Setting("cifar10", model, make_purifier, x, y, 8 / 255, 100, sizes, args.device,
                   _penultimate_features(model), verbose=not args.no_progress)


def imagenet_setting(args) -> Setting:
    """The paper's ImageNet setup (Table 3, S2), BPDA by default."""
    missing = []
    diffusion = args.diffusion
    if not diffusion or not os.path.isdir(diffusion):
        missing.append("the guided-diffusion 256x256 unconditional model as a diffusers directory: download "
                       "256x256_diffusion_uncond.pt from openai/guided-diffusion, then "
                       "`art-diffpure convert-adm 256x256_diffusion_uncond.pt DIR` and pass --diffusion DIR")
    model_dir = args.model_dir
    if not model_dir or not os.path.isfile(os.path.join(model_dir, "imagenet", "Linf", "Standard_R50.pt")):
        missing.append("the RobustBench ImageNet 'Standard_R50' weights: a torchvision ResNet-50 state dict saved "
                       "as <--model-dir>/imagenet/Linf/Standard_R50.pt")
    data = args.data
    if not data or not os.path.isfile(os.path.join(data, "labels.txt")):
        missing.append("the validation images: --data DIR with the images and DIR/labels.txt holding "
                       "'<file name> <class index>' per line (the first 200 are used)")
    if not _torch_device_ok(args.device) or args.device == "cpu":
        missing.append("a CUDA GPU (--device cuda)")
    if missing:
        raise PresetUnavailable("missing " + "; ".join(missing))
    import torch
    import torchvision

    from art_diffpure.purifier import DiffusionPurifier

    n = args.n_images or 200
    names, labels = [], []
    with open(os.path.join(data, "labels.txt")) as handle:
        for line in handle:
            if line.strip():
                name, label = line.split()
                names.append(name)
                labels.append(int(label))
    from PIL import Image

    tf = torchvision.transforms.Compose([torchvision.transforms.Resize(256), torchvision.transforms.CenterCrop(256),
                                         torchvision.transforms.ToTensor()])
    x = np.stack([tf(Image.open(os.path.join(data, name)).convert("RGB")).numpy() for name in names[:n]])
    y = np.asarray(labels[:n], dtype=np.int64)
    # RobustBench's Standard_R50 = torchvision ResNet-50 behind ImageNet normalisation, resized to 224.
    resnet = torchvision.models.resnet50()
    resnet.load_state_dict(torch.load(os.path.join(model_dir, "imagenet", "Linf", "Standard_R50.pt"),
                                      map_location="cpu", weights_only=True))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    class Normalised(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = resnet
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)

        def forward(self, v):
            v = torch.nn.functional.interpolate(v, size=224, mode="bilinear", align_corners=False)
            return self.net((v - self.mean) / self.std)

    model = Normalised().eval().to(args.device)
    gradient = "full" if args.full_gradient else "bpda"
    sizes = Sizes(n_images=n, seeds=tuple(args.seeds or (0, 1, 2)), max_iter=40, eot_samples=15, eot_images=n,
                  t_sweep=(), sweep_images=0, compression_samples=8, neighbourhood_images=0, neighbourhood_inputs=0,
                  neighbourhood_seeds=0, jacobian_images=0, curve_eps_factors=(), curve_images=0, curve_max_iter=0,
                  diagnostics_images=0, square_queries=0, batch_size=args.batch_size or (4 if gradient == "full" else 16))

    def make_purifier(sampler="ddpm", t_star=150, seed=0, gradient=gradient):
        return DiffusionPurifier.from_pretrained(diffusion, t_star=t_star, sampler=sampler, seed=seed,
                                                 gradient=gradient, device_type="gpu", checkpoint=True,
                                                 batch_size=sizes.batch_size, generator_seed=0)

    return Setting("imagenet", model, make_purifier, x, y, 4 / 255, 150, sizes, args.device,
                   _penultimate_features(model), gradient=gradient, verbose=not args.no_progress)


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str) or isinstance(
            try_to_load_from_cache(repo_id, "unet/config.json"), str)
    except Exception:  # noqa: BLE001 - any hub error means "not available offline"
        return False


def _penultimate_features(model) -> Callable:
    """Features = the input of the model's last Linear layer (the paper's pre-classifier features)."""
    import torch

    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]

    def features(x):
        store = {}
        handle = last.register_forward_hook(lambda mod, inp, out: store.setdefault("f", inp[0]))
        try:
            model(x)
        finally:
            handle.remove()
        return store["f"]

    return features


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


def _nb_classes(setting: Setting) -> int:
    return 1000 if setting.name == "imagenet" else 10


def _classifier(setting: Setting, purifier):
    from art_diffpure.zoo import art_classifier

    return art_classifier(setting.model, setting.x.shape[1:], _nb_classes(setting), purifier=purifier,
                          device_type="cpu" if setting.device == "cpu" else "gpu")


def _attack(setting: Setting, purifier, randomness: str, seed: int, eot: int = 1, eps: float | None = None,
            max_iter: int | None = None):
    from art_diffpure.attack import RandomnessAlignedAttack

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
    with _numpy_seed(seed):
        result = attack.evaluate(x, y)
    return result, attack.last_x_adv


@contextlib.contextmanager
def _recorded(category: type[Warning]) -> Iterator[list[str]]:
    """
    Catch the warnings of ``category`` (only those) raised in the block; their messages fill the yielded list when
    the block ends. Warnings of other categories are re-issued unchanged.
    """
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", category)
        yield messages
    for w in caught:
        if issubclass(w.category, category):
            messages.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


class _Timer:
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


def _predict(setting: Setting, purifier, x, seed, ids=None) -> np.ndarray:
    """Labels predicted by classifier(purifier(x)) under base seed ``seed`` (``None``: fresh)."""
    import torch

    purified = purifier.purify(x, seed=seed, sample_ids=ids) if seed is not None else purifier.purify(x)
    with torch.no_grad():
        logits = setting.model(torch.tensor(purified, device=setting.device))
    return logits.argmax(1).cpu().numpy()


def _strip_timings(obj: Any, path: str, sink: dict) -> Any:
    """Move wall-clock entries out of the results (they differ between identical runs)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, str) and (k.endswith("time_s") or k == "time_per_step_s"):
                sink[f"{path}.{k}"] = v
            else:
                out[k] = _strip_timings(v, f"{path}.{k}", sink)
        return out
    if isinstance(obj, list):
        return [_strip_timings(v, f"{path}[{i}]", sink) for i, v in enumerate(obj)]
    return obj


# ---------------------------------------------------------------------------------------------- experiments
# The expensive experiments are independent jobs (an attack, a compression estimate, the neighbourhood analysis,
# ...). Each builds its own purifier and seeds every global RNG from nothing but its own arguments, so its result
# does not depend on which process runs it or in what order: `--jobs N` runs them in N processes (a UNet at these
# batch sizes uses one core about as well as two, so N single-threaded processes are ~N times faster on a CPU).
Job = tuple  # (timer name, kind, kwargs)


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
    row's noise comes from its sample id, PGD's steps are per row), so its first ``sweep_images`` rows of a larger
    run are that run on those images: Table 2 covers DDPM at the default t* for every seed, Table 6 the other
    samplers for the first seed.
    """
    s = setting.sizes
    if t != setting.t_star or s.sweep_images > s.n_images:
        return None
    if sampler == "ddpm":
        return f"table2 aligned seed {seed}"
    return f"table6 {sampler} attack" if seed == s.seeds[0] else None


def _head(report: dict[str, Any], n: int) -> dict[str, Any]:
    """An evaluate() report restricted to its first ``n`` images (per-image lists cut, accuracies recomputed)."""
    if report["n"] == n:
        return report
    out = {k: (v[:n] if isinstance(v, list) and len(v) == report["n"] else v) for k, v in report.items()}
    out["n"] = n
    out["robust_accuracy"] = float(np.mean(out["adv_correct"]))
    out["clean_accuracy"] = float(np.mean(out["clean_correct"]))
    out["attack_success_rate"] = float(np.mean(out["success"]))
    out["subset_of"] = f"the first {n} of {report['n']} images of the same attack"
    return out


def _sweep_results(setting: Setting, done: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """Table 7 / Fig. 3b rows per configuration: compression, and aligned accuracy per seed and as the seed mean."""
    s = setting.sizes
    n = min(s.sweep_images, s.n_images)
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for sampler, t in _sweep_configs(setting):
        reports = [_head(done[_reused_attack(setting, sampler, t, seed)
                              or f"sweep {sampler} t*={t} seed {seed} attack"][0], n) for seed in s.sweep_seed_list()]
        rate = done[f"sweep {sampler} t*={t} compression"]
        robust = [r["robust_accuracy"] for r in reports]
        clean = [r["clean_accuracy"] for r in reports]
        out[(sampler, t)] = {
            "t_star": t, "compression": rate["mean"], "compression_std": rate["std"],
            "aligned_robust_accuracy": float(np.mean(robust)), "aligned_robust_accuracy_per_seed": robust,
            "clean_accuracy": float(np.mean(clean)), "n": n, "seeds": list(s.sweep_seed_list()),
            "adv_correct": [list(r["adv_correct"]) for r in reports],
            "clean_correct": [list(r["clean_correct"]) for r in reports]}
    return out


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
             for k in ("ddpm", "reverse", "ddim")]
    jobs += [(f"sweep {k} t*={t} compression", "compression", dict(sampler=k, t_star=t, n=s.sweep_images))
             for k, t in _sweep_configs(setting)]
    return jobs


def _run_job(setting: Setting, kind: str, kw: dict[str, Any]) -> Any:
    """Run one job on a fresh purifier; the global RNGs are reset first so results do not depend on scheduling."""
    import torch

    from art_diffpure import diagnostics, metrics
    from art_diffpure.attack import gradient_correlation

    np.random.seed(0)
    torch.manual_seed(0)
    s, x, y = setting.sizes, setting.x, setting.y
    purifier = setting.make_purifier(kw.get("sampler", "ddpm"), kw.get("t_star", setting.t_star), 0,
                                     setting.gradient)
    if kind == "attack":
        n = kw["n"]
        return _run_attack(setting, purifier, kw["randomness"], kw["seed"], x[:n], y[:n], eot=kw.get("eot", 1))
    if kind == "compression":
        rate = metrics.compression_rate(purifier, x[: kw["n"]], eps=setting.eps, n_samples=s.compression_samples,
                                        seeds=(s.seeds[0],), batch_size=s.batch_size)
        return {"mean": rate.mean["l2"], "std": rate.std["l2"]}
    if kind == "neighbourhood":
        hood = metrics.neighbourhood_analysis(purifier, x[: s.neighbourhood_images], eps=setting.eps,
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
    if kind == "gradient_correlation":
        return gradient_correlation(_classifier(setting, purifier), x, y, seed_a=s.seeds[0], seed_b=s.seeds[0] + 1,
                                    eot_samples=s.eot_samples, batch_size=s.batch_size)
    if kind == "curve":
        curve = diagnostics.robustness_curve(
            setting.model, x[: s.curve_images], y[: s.curve_images],
            [f * setting.eps for f in s.curve_eps_factors], purifier=purifier,
            modes=("aligned", "transfer", "stochastic"), rel_step=rel_step(s.curve_max_iter), max_iter=s.curve_max_iter,
            seed=s.seeds[0], batch_size=s.batch_size, compression_samples=s.compression_samples,
            nb_classes=_nb_classes(setting))
        return curve.to_dict()
    if kind == "diagnostics":
        diag = diagnostics.gradient_masking_diagnostics(
            setting.model, x[: s.diagnostics_images], y[: s.diagnostics_images], setting.eps, purifier=purifier,
            seed=s.seeds[0], rel_step=rel_step(s.curve_max_iter), max_iter=s.curve_max_iter,
            batch_size=s.batch_size, square_queries=s.square_queries,
            iterations=tuple(sorted({max(1, s.curve_max_iter // 2), s.curve_max_iter, 2 * s.curve_max_iter})),
            nb_classes=_nb_classes(setting))
        return diag.to_dict()
    if kind == "jacobian":
        jac = metrics.jacobian_spectrum(purifier, x[: s.jacobian_images], seed=s.seeds[0], method="exact")
        return {"singular_values": np.asarray(jac.singular_values), "mean": jac.mean, "std": jac.std,
                "n_dims": jac.n_dims}
    raise ValueError(f"Unknown job kind {kind!r}")


_WORKER: dict[str, Any] = {}


def _worker_init(args: Any, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    _WORKER["setting"] = build_setting(args)


def _worker_run(job: Job) -> tuple[str, Any, float]:
    name, kind, kw = job
    t0 = time.perf_counter()
    return name, _run_job(_WORKER["setting"], kind, kw), time.perf_counter() - t0


def _run_jobs(setting: Setting, jobs: list[Job], n_procs: int, args: Any, timer: "_Timer") -> dict[str, Any]:
    """Results of ``jobs`` by name: in this process (``n_procs <= 1``) or in ``n_procs`` spawned processes."""
    from tqdm.auto import tqdm

    out: dict[str, Any] = {}
    bar = tqdm(total=len(jobs), desc="Experiments", disable=not setting.verbose)
    if n_procs <= 1 or args is None:
        for name, kind, kw in jobs:
            with timer(name):
                out[name] = _run_job(setting, kind, kw)
            bar.update()
    else:
        import concurrent.futures
        import multiprocessing

        import torch

        threads = max(1, torch.get_num_threads() // n_procs)
        logger.info("%d experiments in %d processes of %d thread(s)", len(jobs), n_procs, threads)
        with concurrent.futures.ProcessPoolExecutor(n_procs, mp_context=multiprocessing.get_context("spawn"),
                                                    initializer=_worker_init, initargs=(args, threads)) as pool:
            for future in concurrent.futures.as_completed([pool.submit(_worker_run, job) for job in jobs]):
                name, result, seconds = future.result()
                out[name], timer.times[name] = result, seconds
                logger.info("%s done (%.0f s)", name, seconds)
                bar.update()
    bar.close()
    return out


def run_experiments(setting: Setting, timer: "_Timer", n_procs: int = 1, args: Any = None) -> dict[str, Any]:
    """
    Run every experiment of the setting and return plain results (no files written here). With ``n_procs > 1``
    the independent experiments run in that many processes, each rebuilding the setting from ``args``.
    """
    from scipy.linalg import LinAlgWarning
    from scipy.optimize import OptimizeWarning

    from art_diffpure import laws, metrics
    from art_diffpure.attack import perturbation_correlation, transfer_test_seed

    s = setting.sizes
    x, y = setting.x, setting.y
    ids = np.arange(len(x))
    res: dict[str, Any] = {"setting": {"preset": setting.name, "eps": setting.eps, "t_star": setting.t_star,
                                       "gradient": setting.gradient, "rel_step": rel_step(s.max_iter),
                                       "sizes": dataclasses.asdict(s), "notes": setting.notes}}

    with timer("undefended"):
        from art_diffpure.zoo import art_classifier
        from art.attacks.evasion import ProjectedGradientDescent

        plain = art_classifier(setting.model, x.shape[1:], _nb_classes(setting),
                               device_type="cpu" if setting.device == "cpu" else "gpu")
        with _numpy_seed(0):
            adv = ProjectedGradientDescent(plain, eps=setting.eps, eps_step=rel_step(s.max_iter) * setting.eps,
                                           max_iter=s.max_iter, num_random_init=1, batch_size=s.batch_size,
                                           verbose=False).generate(x, y)
        clean_ok, adv_ok = plain.predict(x).argmax(1) == y, plain.predict(adv).argmax(1) == y
        res["undefended"] = {"clean_accuracy": float(clean_ok.mean()), "robust_accuracy": float(adv_ok.mean()),
                             "n": int(len(y)), "clean_correct": clean_ok.tolist(), "adv_correct": adv_ok.tolist()}

    done = _run_jobs(setting, _jobs(setting), n_procs, args, timer)
    ddpm = setting.make_purifier("ddpm", setting.t_star, 0, setting.gradient)

    # ---- Table 2 (and the adversarial examples that Tables 1, 4, 5, 6 reuse)
    table2: dict[str, Any] = {"aligned": [], "stochastic": []}
    adv_aligned: dict[int, np.ndarray] = {}
    for seed in s.seeds:
        report, adv_aligned[seed] = done[f"table2 aligned seed {seed}"]
        table2["aligned"].append(report)
        table2["stochastic"].append(done[f"table2 stochastic seed {seed}"][0])
    xe = x[: s.eot_images]
    table2["pgd_eot_stochastic"], adv_eot = done["table2 pgd-eot"]
    res["table2"] = table2

    # ---- Table 4: the aligned adversarial examples of seed s, tested under another fixed configuration
    with timer("table4"):
        runs = []
        for seed in s.seeds:
            pred = _predict(setting, ddpm, adv_aligned[seed], transfer_test_seed(seed), ids)
            runs.append({"attack_seed": seed, "test_seed": transfer_test_seed(seed), "n": int(len(y)),
                         "robust_accuracy": float((pred == y).mean()), "adv_correct": (pred == y).tolist(),
                         "adv_pred": pred.tolist()})
        res["table4"] = {"runs": runs, "robust_accuracy": rp.mean_std([r["robust_accuracy"] for r in runs])}

    # ---- Robustness over repeated test draws: the stochastic attack's examples under N fresh draws (predictions only)
    with timer("repeated test draws"):
        x_adv_sto = done[f"table2 stochastic seed {s.seeds[0]}"][1]
        fresh = setting.make_purifier("ddpm", setting.t_star, None, setting.gradient)
        correct = []
        for k in range(REPEATED_DRAWS):
            fresh.reseed_fresh(REPEATED_DRAW_GENERATOR_SEED + k)
            correct.append(_predict(setting, fresh, x_adv_sto, None) == y)
        correct_arr = np.asarray(correct, dtype=bool)
        res["repeated_draws"] = {
            "attack": f"table2 stochastic PGD, seed {s.seeds[0]}", "n_draws": REPEATED_DRAWS, "n": int(len(y)),
            "generator_seeds": [REPEATED_DRAW_GENERATOR_SEED + k for k in range(REPEATED_DRAWS)],
            "adv_correct": correct_arr.tolist(),
            "robust_accuracy_per_draw": correct_arr.mean(axis=1).tolist(),
            "mean_over_draws": float(correct_arr.mean()),
            "worst_case": float(correct_arr.all(axis=0).mean()),
            "best_case": float(correct_arr.any(axis=0).mean())}

    # ---- Table 5: correlations of perturbations / gradients across configurations
    t5: dict[str, Any] = {}
    if len(s.seeds) > 1:
        t5["perturbation_fixed_vs_fixed"] = perturbation_correlation(x, adv_aligned[s.seeds[0]],
                                                                     adv_aligned[s.seeds[1]])
    t5["perturbation_eot_vs_fixed"] = perturbation_correlation(xe, adv_eot, adv_aligned[s.seeds[0]][: len(xe)])
    t5["gradients"] = done["table5 gradients"]
    res["table5"] = t5

    # ---- Table 6 and Table 1: per sampler at t*
    table6, table1, fig1c = {}, {}, {}
    samplers = ("ddpm", "reverse", "ddim")
    for sampler in samplers:
        purifier = ddpm if sampler == "ddpm" else setting.make_purifier(sampler, setting.t_star, 0, setting.gradient)
        with timer(f"table6 {sampler}"):
            if sampler == "ddpm":
                report, x_adv = table2["aligned"][0], adv_aligned[s.seeds[0]]
            else:
                report, x_adv = done[f"table6 {sampler} attack"]
            success = np.asarray(report["success"], dtype=bool)
            uniform = done[f"table6 {sampler} compression"]
            adv_rate = metrics.compression_rate(purifier, x, perturbed=x_adv, seeds=(s.seeds[0],),
                                                batch_size=s.batch_size)
            per_image = np.asarray(adv_rate.per_image["l2"])
            table6[sampler] = {
                "compression_uniform": (uniform["mean"], uniform["std"]),
                "compression_pgd_robust": _masked_mean_std(per_image, ~success),
                "compression_pgd_nonrobust": _masked_mean_std(per_image, success),
                "aligned_robust_accuracy": report["robust_accuracy"],
                "clean_accuracy": report["clean_accuracy"],
                "mean_perturbation_l2": float(np.linalg.norm((x_adv - x).reshape(len(x), -1), axis=1).mean()),
                "n": int(report["n"]), "seed": int(s.seeds[0]),
                "adv_correct": list(report["adv_correct"]), "clean_correct": list(report["clean_correct"]),
            }
        with timer(f"table1 {sampler}"):
            traj = metrics.trajectory_distances(purifier, x, x_adv, seed=s.seeds[0], batch_size=s.batch_size)
            feats = _features_fn(setting)
            # With fewer images than feature dimensions the feature covariances are singular and scipy's sqrtm
            # warns that its square root may be inaccurate: record that with the value instead of printing it.
            with _recorded(LinAlgWarning) as fid_warnings:
                fid_before = metrics.feature_fid_from_model(feats, x_adv, x)
                fid_after = metrics.feature_fid_from_model(feats, purifier.purify(x_adv, seed=s.seeds[0]),
                                                           purifier.purify(x, seed=s.seeds[0]))
            table1[sampler] = {"mean": traj.mean, "std": traj.std, "fid": (fid_before, fid_after),
                               "fid_warnings": sorted(set(fid_warnings)),
                               "attack": f"aligned PGD, seed {s.seeds[0]} (the Table 6 attack)",
                               "adv_correct": list(report["adv_correct"]),
                               "per_image": {m: {k: np.asarray(traj.per_image[m][k]).tolist() for k in ("start", "end")}
                                             for m in ("l2", "linf", "ssim")}}
            fig1c[sampler] = np.asarray(traj.l2_trajectory).mean(axis=1)
    res["table6"], res["table1"] = table6, table1
    res["fig1c"] = {k: v for k, v in fig1c.items()}

    # ---- Table 7 and Fig. 3b: every sweep configuration with every seed on the first sweep_images images
    sweep = _sweep_results(setting, done)
    table7: dict[str, Any] = {"t_star": sorted({t for k, t in sweep if k != "ddim"})}
    for sampler in ("ddpm", "reverse"):
        table7[sampler] = [row for (k, _), row in sweep.items() if k == sampler]
    res["table7"] = table7

    # ---- Fig. 3b: the compression law over the distinct configurations, each with every seed
    with timer("fig3b"):
        points = [(row["compression"], row["aligned_robust_accuracy"], f"{k} t*={t}") for (k, t), row in sweep.items()]
        points, dropped = laws.distinct_points(points)
        fig3b: dict[str, Any] = {"points": points, "duplicates_removed": dropped, "n_seeds_per_point": len(s.sweep_seed_list()),
                                 "n_images_per_point": min(s.sweep_images, s.n_images), "warnings": [],
                                 "adv_correct": {f"{k} t*={t}": row["adv_correct"] for (k, t), row in sweep.items()}}
        try:
            with _recorded(OptimizeWarning) as fit_warnings:
                fit = metrics.fit_compression_law([p[0] for p in points], [p[1] for p in points])
            fig3b["fit"] = fit.to_dict()
            fig3b["fit_predict_at_0"] = float(fit.predict(0.0))
            fig3b["warnings"] += sorted(set(fit_warnings))
            lo, hi = min(p[0] for p in points), max(p[0] for p in points)
            c0 = fit.params["c0"]
            fig3b["inflection"] = c0
            fig3b["inflection_in_data_range"] = bool(lo <= c0 <= hi)
            if not lo <= c0 <= hi:
                fig3b["warnings"].append(
                    f"the fitted inflection c0 = {c0:.3g} lies outside the data's compression range [{lo:.3g}, "
                    f"{hi:.3g}]: the sigmoid is extrapolated, its shape is not supported by the data")
        except (ValueError, RuntimeError) as err:  # too few or degenerate points: say so, do not invent a fit
            fig3b["fit"] = None
            fig3b["fit_error"] = str(err)
        res["fig3b"] = fig3b

    # ---- Tables S5, S6, Fig. 2d-f (neighbourhood analysis), robustness curves, diagnostics, Fig. 3a
    res.update(done["tableS5 S6"])
    res["robustness_curve"] = done["robustness curves"]
    res["diagnostics"] = done["gradient-masking diagnostics"]
    res["fig3a"] = done["fig3a"]

    # ---- intervals, paired comparisons and the verdicts on the laws (statistics only: no model calls)
    with timer("statistics"):
        evaluation = laws.evaluate(res)
        res["statistics"] = {k: evaluation[k] for k in ("accuracies", "comparisons", "thresholds")}
        res["laws"] = evaluation["laws"]
    return res


def run_imagenet_experiments(setting: Setting, timer: _Timer) -> dict[str, Any]:
    """Table 3 (BPDA and BPDA-EOT with and without fixed randomness) and Table S2 (distances along DiffPure)."""
    from art_diffpure import metrics

    s, x, y = setting.sizes, setting.x, setting.y
    res: dict[str, Any] = {"setting": {"preset": setting.name, "eps": setting.eps, "t_star": setting.t_star,
                                       "gradient": setting.gradient, "rel_step": rel_step(s.max_iter),
                                       "sizes": dataclasses.asdict(s), "notes": setting.notes}}
    purifier = setting.make_purifier("ddpm", setting.t_star, 0, setting.gradient)
    table3: dict[str, Any] = {"aligned": [], "stochastic": []}
    adv: dict[str, np.ndarray] = {}
    for seed in s.seeds:
        for mode in ("aligned", "stochastic"):
            with timer(f"table3 {mode} seed {seed}"):
                report, x_adv = _run_attack(setting, purifier, mode, seed, x, y)
                table3[mode].append(report)
                adv.setdefault(mode, x_adv)
    with timer("table3 eot"):
        table3["eot_stochastic"], adv["eot"] = _run_attack(setting, purifier, "stochastic", s.seeds[0],
                                                           x[: s.eot_images], y[: s.eot_images], eot=s.eot_samples)
    res["table3"] = table3
    with timer("tableS2"):
        res["tableS2"] = {
            name: metrics.trajectory_distances(purifier, x[: len(v)], v, seed=s.seeds[0],
                                               batch_size=s.batch_size).to_dict()
            for name, v in (("bpda", adv["aligned"]), ("bpda_eot", adv["eot"]))}
    return res


def _imagenet_markdown(r: dict[str, Any], timings: dict[str, float]) -> str:
    st, t3 = r["setting"], r["table3"]
    lines = [f"# art-diffpure reproduce: preset `imagenet` ({st['gradient']})", "",
             f"Linf eps = {st['eps']:.4g}, t* = {st['t_star']}, PGD-{st['sizes']['max_iter']}, "
             f"{st['sizes']['n_images']} images, base seeds {list(st['sizes']['seeds'])}.", "",
             "## Table 3: robustness with and without fixed randomness", "",
             "Accuracies: `mean% [95% interval over images]` (Wilson for one seed, bootstrap of the per-image mean "
             "for several), seed-to-seed sd apart.", "",
             rp.table(["Fix random", "Clean (ours)", "BPDA (ours)", "BPDA-EOT (ours)", "paper clean", "paper BPDA",
                       "paper BPDA-EOT"],
                      [["✗", _runs_acc(t3["stochastic"], "clean_correct"), _runs_acc(t3["stochastic"], "adv_correct"),
                        _runs_acc([t3["eot_stochastic"]], "adv_correct"), "67.2±2.4%", "63.7±1.2%", "59.0%"],
                       ["✓", _runs_acc(t3["aligned"], "clean_correct"), _runs_acc(t3["aligned"], "adv_correct"), "–",
                        "68.5±0.8%", "29.5±0.4%", "–"]])]
    if t3["aligned"] and t3["stochastic"]:
        c = statistics.paired_difference([run["adv_correct"] for run in t3["stochastic"]],
                                         [run["adv_correct"] for run in t3["aligned"]])
        d = c.difference
        lines += ["", f"Stochastic minus aligned BPDA robust accuracy (same images): {100 * d.estimate:+.1f} points "
                  f"[{100 * d.low:+.1f}, {100 * d.high:+.1f}] (paired bootstrap over images), exact McNemar p = "
                  f"{c.test.p_value:.3g} (seed {st['sizes']['seeds'][0]}: b = {c.test.b}, c = {c.test.c})."]
    lines += ["", "## Table S2: distances to the clean images during DiffPure", ""]
    rows = []
    for metric in ("l2", "linf"):
        for name, t in r["tableS2"].items():
            rows.append([metric, name, *(rp.fmt((t["mean"][metric][k], t["std"][metric][k]))
                                         for k in ("start", "max", "end"))])
    lines += [rp.table(["Distance", "Attack", "Init (t=0)", "Max (t=t*)", "End"], rows), "",
              "Paper (BPDA): l2 3.537 → 61.116 → 17.712; linf 0.016 → 0.832 → 0.422.", "",
              "## Timings", "", rp.table(["Step", "Seconds"], [[k, f"{v:.1f}"] for k, v in timings.items()])]
    return "\n".join(lines) + "\n"


def _runs_acc(runs: list[dict], key: str) -> str:
    """Accuracy cell from evaluate() reports' per-image outcomes (seeds x images)."""
    return rp.fmt_accuracy(statistics.seed_summary([run[key] for run in runs]).to_dict())


def _features_fn(setting: Setting) -> Callable:
    import torch

    def feats(v):
        with torch.no_grad():
            return setting.features(torch.tensor(np.asarray(v), device=setting.device)).cpu().numpy()

    return feats


def _masked_mean_std(values: np.ndarray, mask: np.ndarray):
    picked = values[mask]
    picked = picked[np.isfinite(picked)]
    return (float(picked.mean()), float(picked.std())) if len(picked) else None


# ---------------------------------------------------------------------------------------------- report
def write_report(results: dict[str, Any], timings: dict[str, float], out: str) -> None:
    """report.md, results.json, timings.json and the figures."""
    os.makedirs(out, exist_ok=True)
    rp.write_json(os.path.join(out, "results.json"), results)
    rp.write_json(os.path.join(out, "timings.json"), timings)
    if results["setting"]["preset"] == "imagenet":
        text = _imagenet_markdown(results, timings)
    else:
        text = _markdown(results, timings, _figures(results, out))
    with open(os.path.join(out, "report.md"), "w") as handle:
        handle.write(text)


def _agg(runs: list[dict], key: str):
    return rp.mean_std([r[key] for r in runs])


def _acc(r: dict[str, Any], key: str) -> str:
    return rp.fmt_accuracy(r.get("statistics", {}).get("accuracies", {}).get(key))


def _md_laws(r: dict[str, Any]) -> list[str]:
    """The C1..C7 table, with the warnings and the two side statements the paper's Table 2 invites."""
    out = ["## The paper's laws: verdicts", "",
           "Each threshold is a constant in `art_diffpure/laws.py`, written before this run (see Disclosure). "
           "*holds*: the 95% interval (and for accuracy comparisons the exact McNemar test, seed 0) clears the "
           "threshold in the paper's direction; *does not hold*: the interval excludes it; *inconclusive at this n*: "
           "the interval straddles it.", ""]
    rows = []
    for law in r.get("laws", []):
        iv = law.get("interval")
        percent = law["law"] in ("C4", "C5")
        rows.append([law["law"], law["claim"] + f" ({law['source']})", law["value"],
                     rp.fmt_interval(iv, percent=percent, signed=percent) if iv else "see value",
                     law["threshold"], f"**{law['verdict']}**", law["paper"]])
    out.append(rp.table(["Law", "Claim", "Value (ours)", "95% interval", "Threshold", "Verdict", "Paper (CIFAR-10)"],
                        rows))
    for law in r.get("laws", []):
        if law["law"] == "C2" and law.get("snr_below_one") == "holds":
            out.append(f"- C2: SNR < 1 (internal randomness dominates the input's) does hold; \"far below\" "
                       "(an order of magnitude) is what the verdict tests.")
        for w in law.get("warnings", []) or []:
            out.append(f"- {law['law']} warning: {w}")
    comps = {c["name"]: c for c in r.get("statistics", {}).get("comparisons", [])}
    for name, text in (("PGD-EOT vs PGD (stochastic, same images)", "PGD-EOT vs PGD on the same images"),
                       ("stochastic vs aligned (clean)", "Aligned clean-accuracy drop (stochastic clean minus aligned "
                                                         "clean, same images)")):
        c = comps.get(name)
        if c:
            out.append(f"- {text}: {_cmp_text(c)}.")
    from art_diffpure.laws import ALPHA

    for family, what in (("table6", "Sampler ranking (Table 6)"), ("table7 ddpm", "t* sweep, DDPM (Table 7)"),
                         ("table7 reverse", "t* sweep, reverse (Table 7)")):
        fam = [c for c in comps.values() if c["family"] == family]
        if fam:
            sig = [c["name"] for c in fam if c.get("p_holm", 1.0) < ALPHA]
            out.append(f"- {what}: " + (f"significant after Holm over its {len(fam)} pairs: {', '.join(sig)}."
                                        if sig else f"no pairwise difference in aligned robust accuracy is "
                                        f"significant (exact McNemar, Holm over its {len(fam)} pairs): the "
                                        "ordering is not established at this n."))
    return out


def _cmp_text(c: dict[str, Any]) -> str:
    d = c["difference"]
    return (f"{100 * c['accuracy_a']:.1f}% vs {100 * c['accuracy_b']:.1f}%, difference {100 * d['estimate']:+.1f} "
            f"points {rp.fmt_interval(d, percent=True, signed=True)}, exact McNemar p = {c['test']['p_value']:.3g} "
            f"(seed 0: b = {c['test']['b']}, c = {c['test']['c']}, n = {c['test']['n']})")


def _md_comparisons(r: dict[str, Any]) -> list[str]:
    comps = r.get("statistics", {}).get("comparisons", [])
    if not comps:
        return []
    rows = []
    for c in comps:
        d, t = c["difference"], c["test"]
        per_seed = c.get("tests_per_seed")
        rows.append([c["name"], c["n_images"], f"{100 * c['accuracy_a']:.1f}%", f"{100 * c['accuracy_b']:.1f}%",
                     f"{100 * d['estimate']:+.1f} {rp.fmt_interval(d, percent=True, signed=True)}",
                     f"{t['b']} / {t['c']}", f"{t['p_value']:.3g}",
                     f"{c['p_holm']:.3g}" if "p_holm" in c else "–",
                     ", ".join(f"{p['p_value']:.3g}" for p in per_seed) if per_seed else "–"])
    return ["", "## Paired comparisons (same images)", "",
            "A − B in accuracy points. The difference is of the seed-mean accuracies, with a 95% paired percentile "
            f"bootstrap interval over images ({comps[0]['difference']['method'].split('(')[-1].rstrip(')')}). "
            "The test is the exact McNemar test (two-sided exact binomial on the discordant pairs b: A right and B "
            "wrong, c: the reverse) on seed 0; seeds are not pooled into one test because they re-use the same "
            "images, so pooled discordant pairs are not independent and the p-value would be too small. With several "
            "seeds on both sides the per-seed McNemar p-values are listed too. Holm adjusts within a family (Table 6 "
            "samplers; Table 7 t* per sampler).", "",
            rp.table(["Comparison (A vs B)", "n", "A", "B", "A − B [95%]", "b / c (seed 0)", "McNemar p",
                      "Holm p", "per-seed p"], rows)]


def _md_disclosure(r: dict[str, Any]) -> list[str]:
    st = r["setting"]
    quick = any(note.startswith("--quick") for note in st.get("notes", []))
    lines = ["", "## Disclosure: what was chosen when, and why", "",
             "- **Fixed before any run of this report**: the images (the first n of the fixed digits test split), "
             "the base seeds, every size (`Sizes` presets in `art_diffpure/reproduce.py`), the attack "
             "(PGD, Linf, one random start, step keeping 4/3 eps of total travel), the number of repeated test draws "
             f"({REPEATED_DRAWS}, generator seeds {REPEATED_DRAW_GENERATOR_SEED}+k) and every threshold of the "
             "verdicts (`art_diffpure/laws.py`). Nothing in the run reads its own results to change a setting.",
             "- **eps**: 0.2, by the rule stated when the models were trained (2026-11-21, "
             "`art_diffpure/weights/provenance.json`): the smallest budget of the sweep at which undefended PGD-40 "
             "leaves at most 10% accuracy (2.2% at 0.2).",
             "- **A first setting was tried and dropped.** The first session fixed, before measuring: the first 60 test "
             "images, t* = 20, Linf eps = 0.1, PGD-10 (step 0.025, no random start), seed 0. It gave aligned 80.0% vs "
             "stochastic 71.7% (one fresh test draw), transfer 81.7%, undefended 58.3%: aligned was NOT below "
             "stochastic, the paper's relation did not hold there (re-testing both attacks' examples under 5 fresh "
             "draws: 79.0% vs 78.7%). The setting then moved to the paper's t* = 100 (DiffPure's t* = 0.1) and the "
             "eps = 0.2 of the pre-stated rule above; there (n = 60, PGD-10) aligned was 33.3% vs stochastic 46.7%. "
             "That move was made after seeing the t* = 20 result, so the t* = 100 setting is not a pre-registered "
             "test of the relation; this record is kept in `tests/test_attack.py` and commit b83c973.",
             "- **Sizes** (32 images, seeds 0, 1, 2, PGD-40, EOT-15 on 8 images, the t* sweep, the diagnostics' "
             "sizes) were set by the 2-core CPU budget of the default run (commit 433340b). On 2026-12-01 (fourth "
             "session), before this run and for cost reasons only, they became: 128 images for Tables 2, 4, 6 and 1 "
             "(the issue asked for 128 images with three seeds), EOT-15 on 16 images, and three seeds for every "
             "Fig. 3b / Table 7 configuration on the first 32 images (it was one seed). The budget came from "
             "internal batches of 128 images (about 1.5x cheaper per image than 32 on this CPU, measured) and from "
             "reusing the Table 2 / Table 6 attacks for Table 7 at the default t* (the aligned attack is per "
             "sample: the first rows of a larger run are bit-identical to a run on those rows, tested). Sizes have "
             "not been changed in response to results.",
             "- **Thresholds** of C1–C7 were written on 2026-12-01, after the earlier default report (n = 32, commit "
             "d8c1dd1) had been read, including its Table 5 correlations (0.59, 0.68), SNR 0.185, Table S6 radii "
             "(0.657 initial, 0.307 fixed xi, 0.733 varying xi) and Table 2 numbers. Each threshold follows a stated "
             "reading of the paper's claim (see the comments in `laws.py`), but a reader should know they were not "
             "written blind. This report is the first run they were applied to.",
             "- **Fig. 3b** fits each distinct configuration once, each with every base seed on the same first "
             "images (until 2026-12-01 one seed per configuration, and DDPM / reverse at the default t* were "
             "counted twice before that was fixed)."]
    if quick:
        lines.append("- **--quick** was changed on 2026-12-01 from a t* = 20 smoke run (8 images, PGD-5: numbers "
                     "that meant nothing) to this small t* = 100 run, so that Tables 2 and 4 carry intervals that "
                     "say something; it is still a small run.")
    return lines


def _markdown(r: dict[str, Any], timings: dict[str, float], figures: list[str]) -> str:
    st = r["setting"]
    lines = [f"# art-diffpure reproduce: preset `{st['preset']}`", "",
             f"Linf eps = {st['eps']:.4g}, t* = {st['t_star']}, gradient = {st['gradient']}, "
             f"PGD-{st['sizes']['max_iter']} with step {st['rel_step']:.4g} x eps and one random start, "
             f"{st['sizes']['n_images']} images, base seeds {list(st['sizes']['seeds'])}.",
             "The paper's CIFAR-10 numbers (Liu & Wei 2025) stand beside ours for reference; the settings differ "
             "(data set, models, eps), so compare directions, not values.",
             "Accuracies are given as `mean% [95% interval over images]`: the Wilson interval for one seed, for "
             "several seeds on the same images the percentile bootstrap over images of each image's mean "
             "correctness; `seed sd` (ddof=1) is the seed-to-seed spread on the same images, a different and smaller "
             "quantity.", ""]
    lines += [f"- {note}" for note in st["notes"]]
    und = r["undefended"]
    lines += ["", f"Undefended classifier: clean {_acc(r, 'undefended.clean')}, PGD robust "
              f"{_acc(r, 'undefended.robust')}.", ""]
    lines += _md_laws(r)

    t2 = r["table2"]
    eot = t2["pgd_eot_stochastic"]
    lines += ["", "## Table 2: robustness with and without fixed randomness", "",
              rp.table(["Fix random", "Clean (ours)", "PGD (ours)", "PGD-EOT (ours)", "Clean (paper)", "PGD (paper)",
                        "PGD-EOT (paper)"],
                       [["✗", _acc(r, "table2.stochastic.clean"), _acc(r, "table2.stochastic.robust"),
                         f"{_acc(r, 'table2.pgd_eot_stochastic.robust')} (K={st['sizes']['eot_samples']}, "
                         f"n={eot['n']})", *PAPER["table2"]["stochastic"].values()],
                        ["✓", _acc(r, "table2.aligned.clean"), _acc(r, "table2.aligned.robust"), "–",
                         *PAPER["table2"]["aligned"].values()]])]
    draws = r.get("repeated_draws")
    if draws:
        lines += ["", f"## Robustness over repeated test draws (stochastic defence, N = {draws['n_draws']})", "",
                  f"The stochastic attack's adversarial examples ({draws['attack']}) tested under {draws['n_draws']} "
                  "independent fresh draws of the purifier's noise (as DiffHammer's N-evaluation and ADDT's "
                  "fixed-draw evaluation report it). *Worst case*: an image counts as robust only if it is classified "
                  "correctly under every draw.", "",
                  rp.table(["Evaluation", "Robust accuracy [95%]"],
                           [["stochastic, one test draw (Table 2, seed 0)",
                             rp.fmt_accuracy(_first_seed(t2["stochastic"][0]))],
                            [f"stochastic, mean over {draws['n_draws']} draws",
                             _acc(r, "repeated_draws.mean_over_draws").replace("seed sd", "draw-to-draw sd")],
                            [f"stochastic, worst case over {draws['n_draws']} draws", _acc(r, "repeated_draws.worst_case")],
                            ["aligned (Table 2, seeds mean)", _acc(r, "table2.aligned.robust")]])]
    t4 = r["table4"]
    lines += ["", "## Table 4: transfer across randomness configurations", "",
              rp.table(["Attack xi", "Test xi", "Robust acc. (ours)", "Paper (CIFAR-10)"],
                       [["fixed s", "fixed s + 1000000007",
                         _acc(r, "table4.transfer.robust") if "adv_correct" in t4["runs"][0]
                         else rp.fmt(t4["robust_accuracy"], percent=True), PAPER["table4"]]])]
    lines += _md_comparisons(r)
    t5 = r["table5"]
    rows = []
    def corr_cell(item):
        iv = None
        if item.get("per_sample") is not None:
            from art_diffpure.laws import _per_image_interval
            iv = _per_image_interval(item["per_sample"])
        return f"{rp.fmt((item['mean'], item['std']), 4)} {rp.fmt_interval(iv) if iv else ''}".strip()
    if "perturbation_fixed_vs_fixed" in t5:
        rows.append(["PGD (Fix) vs. PGD (Fix), perturbations", corr_cell(t5["perturbation_fixed_vs_fixed"]),
                     PAPER["table5"]["fixed_vs_fixed"]])
    rows.append(["PGD-EOT vs. PGD (Fix), perturbations", corr_cell(t5["perturbation_eot_vs_fixed"]),
                 PAPER["table5"]["eot_vs_fixed"]])
    g = t5["gradients"]
    rows.append(["fixed vs. fixed, loss gradients", corr_cell(g["fixed_vs_fixed"]), "–"])
    if g.get("eot_vs_fixed"):
        rows.append([f"EOT-{g['eot_samples']} vs. fixed, loss gradients", corr_cell(g["eot_vs_fixed"]), "–"])
    lines += ["", "## Table 5: correlations between attacks", "",
              "mean±std over images, then the 95% bootstrap interval of the mean.", "",
              rp.table(["Attacks", "Correlation (ours)", "Paper"], rows)]

    t1 = r["table1"]
    c1 = next((law for law in r.get("laws", []) if law["law"] == "C1"), None)
    lines += ["", "## Table 1: distances to the clean images before → after purification (aligned PGD inputs)", "",
              rp.table(["Sampling", "l2", "l2 increase [95%]", "linf", "SSIM", "feature-FID", "paper l2",
                        "paper linf", "paper SSIM", "paper FID"],
                       [[k, f"{rp.fmt(t1[k]['mean']['l2']['start'])} → {rp.fmt(t1[k]['mean']['l2']['end'])}",
                         (lambda iv: f"{iv['estimate']:+.3f} {rp.fmt_interval(iv, signed=True)}" if iv else "–")(
                             (c1 or {}).get("per_sampler", {}).get(k, {}).get("increase")),
                         *(f"{rp.fmt(t1[k]['mean'][m]['start'])} → {rp.fmt(t1[k]['mean'][m]['end'])}"
                           for m in ("linf", "ssim")),
                         f"{rp.fmt(t1[k]['fid'][0])} → {rp.fmt(t1[k]['fid'][1])}" + (" ¹" if t1[k].get("fid_warnings")
                                                                                      else ""),
                         *(f"{a} → {b}" for a, b in PAPER["table1"][k].values())] for k in t1])]
    fid_notes = sorted({w for k in t1 for w in t1[k].get("fid_warnings", [])})
    if fid_notes:
        lines += ["", f"¹ feature-FID on {len(t1[next(iter(t1))]['per_image']['l2']['start'])} images: fewer images "
                  "than feature dimensions make the feature covariances singular, and scipy's matrix square root "
                  f"warned: \"{fid_notes[0]}\". These FID values are unreliable at this n; l2, linf and SSIM are not "
                  "affected."]
    t6 = r["table6"]
    lines += ["", "## Table 6: compression rates (l2) and aligned robustness per sampler", "",
              rp.table(["Sampling", "PGD (robust)", "PGD (non-robust)", "Uniform", "PGD (Fix) [95%]",
                        "paper: PGD (robust)", "PGD (non-robust)", "Uniform", "PGD (Fix)"],
                       [[k, rp.fmt(t6[k]["compression_pgd_robust"]), rp.fmt(t6[k]["compression_pgd_nonrobust"]),
                         rp.fmt(t6[k]["compression_uniform"]), _acc(r, f"table6.{k}.robust"),
                         *PAPER["table6"][k]] for k in t6])]
    t7 = r["table7"]
    header = ["Model", "", *(f"t={t}" for t in t7["t_star"])]
    rows = []
    for k in ("ddpm", "reverse"):
        rows.append([k, "Compress", *(rp.fmt(row["compression"]) for row in t7[k])])
        rows.append(["", "PGD (Fix) [95%]", *(_acc(r, f"table7.{k}.t{row['t_star']}.robust") for row in t7[k])])
        rows.append(["", "Clean [95%]", *(_acc(r, f"table7.{k}.t{row['t_star']}.clean") for row in t7[k])])
        paper = PAPER["table7"]
        ref = dict(zip(paper["t"], zip(paper[k]["compress"], paper[k]["pgd_fix"])))
        rows.append(["", "paper Compress / PGD (Fix)",
                     *(f"{ref[t][0]:.3f} / {100 * ref[t][1]:.1f}%" if t in ref else "–" for t in t7["t_star"])])
    first = t7["ddpm"][0] if t7.get("ddpm") else {}
    lines += ["", "## Table 7: the effect of t*", "",
              f"Seeds {first.get('seeds', [st['sizes']['seeds'][0]])} on the first {first.get('n')} images per "
              "configuration (accuracies are seed means; at the default t* the rows are the first images of the "
              "Table 2 / Table 6 attacks); pairs of t* are compared in the paired table above.",
              "", rp.table(header, rows)]

    s5, s6 = r["tableS5"], r["tableS6"]
    lines += ["", "## Table S5: variances (per-pixel, x1e-3) and SNR (x1e-3)", "",
              rp.table(["", "Total Var.", "Input Var.", "Internal Var.", "SNR"],
                       [["ours", *(rp.fmt((1e3 * s5["mean"][k], 1e3 * s5["std"][k])) for k in
                                   ("total", "input", "internal", "snr"))],
                        ["paper", *PAPER["tableS5"].values()]])]
    keys = ("initial", "vary_input_fixed_xi", "vary_xi_fixed_input", "vary_both")
    lines += ["", "## Table S6: l2 distances to the centroids", "",
              "`vary_input_fixed_xi` is the paper's compression (fixed noise, 0.241), `vary_xi_fixed_input` its "
              "expansion (varying noise, 3.282).", "",
              rp.table(["", *keys], [["ours", *(rp.fmt((s6["mean"][k], s6["std"][k])) for k in keys)],
                                     ["paper", *(PAPER["tableS6"][k] for k in keys)]])]
    c = r["fig2de"]
    lines += ["", "Direction correlations (Fig. 2d, 2e): vary xi, fixed input "
              f"{rp.fmt((c['mean']['vary_xi_fixed_input'], c['std']['vary_xi_fixed_input']))} (paper 0.22); "
              f"vary input, fixed xi {rp.fmt((c['mean']['vary_input_fixed_xi'], c['std']['vary_input_fixed_xi']))} "
              "(paper 0.93)."]
    j = r["fig3a"]
    lines += ["", f"Jacobian spectrum (Fig. 3a, exact, {j['n_dims']} dims): fraction of singular values below 0.25 "
              f"{rp.fmt(j['mean']['frac_below'])} (paper > 0.90), above 1 {rp.fmt(j['mean']['frac_above'])} "
              "(paper 0.013)."]
    f3 = r["fig3b"]
    dup = f3.get("duplicates_removed")
    dup_text = f" ({', '.join(dup)} counted once)" if dup else ""
    if f3.get("fit"):
        fit = f3["fit"]
        c7 = next((law for law in r.get("laws", []) if law["law"] == "C7"), None)
        boot = (c7 or {}).get("fit_intervals") or {}

        def with_iv(name, value):
            iv = boot.get("r2") if name == "R²" else boot.get("params", {}).get(name)
            return f"{name} = {value:.3g}" + (f" [{iv[0]:.3g}, {iv[1]:.3g}]" if iv else "")

        lines += ["", f"Compression law (Fig. 3b): sigmoid `b + a / (1 + exp(k (c - c0)))` fit over {fit['n_points']} "
                  f"distinct configurations{dup_text}, {f3.get('n_seeds_per_point', 1)} seeds each on "
                  f"{f3.get('n_images_per_point', '?')} images (seed-mean accuracies): {with_iv('R²', fit['r2'])}, "
                  f"{', '.join(with_iv(k, v) for k, v in fit['params'].items())}"
                  + (f" (95% intervals: {boot['method']}; {boot['failed']} of {boot['n_boot']} refits failed)"
                     if boot.get("method") else "")
                  + f"; extrapolated to zero compression: {rp.fmt(f3['fit_predict_at_0'], percent=True)} (clean "
                  f"accuracy of the undefended classifier: {rp.fmt(und['clean_accuracy'], percent=True)})."]
    else:
        lines += ["", f"Compression law (Fig. 3b): no sigmoid fit ({f3.get('fit_error')})."]
    lines += [f"- warning: {w}" for w in f3.get("warnings", [])]
    curve = r["robustness_curve"]
    header = ["eps", *curve["modes"], "undefended", "theory (undefended at α·eps)", "α (compression)"]
    rows = []
    n_curve = len(curve["success"][curve["modes"][0]][0])
    for k, e in enumerate(curve["eps"]):
        theory, alpha = curve.get("theory"), curve.get("compression_rate")
        cells = []
        for m in curve["modes"]:
            n_ok = int(n_curve - sum(bool(v) for v in curve["success"][m][k]))
            cells.append(rp.fmt_accuracy(statistics.seed_summary(
                [True] * n_ok + [False] * (n_curve - n_ok)).to_dict()))
        k_und = int(round(curve["undefended"][k] * n_curve))
        rows.append([rp.fmt(e), *cells, rp.fmt_accuracy(statistics.seed_summary(
                         [True] * k_und + [False] * (n_curve - k_und)).to_dict()),
                     rp.fmt(theory[k], percent=True) if theory else "–", rp.fmt(alpha[k]) if alpha else "–"])
    lines += ["", f"## Robust accuracy against eps per randomness mode (PGD-{curve['config'].get('max_iter')}, "
              f"{n_curve} images, Wilson 95%)", "", rp.table(header, rows)]
    lines += [f"- {note}" for note in curve.get("notes", [])]
    from art_diffpure.diagnostics import diagnostics_table

    lines += ["", "## Gradient-masking diagnostics (fixed randomness): the LIGHTER version", "",
              f"{r['setting']['sizes']['diagnostics_images']} images, PGD-{r['setting']['sizes']['curve_max_iter']}, "
              f"Square with {r['setting']['sizes']['square_queries']} queries, DDPM only: too weak to pass or fail "
              "much. The checks at full strength (32 images, Square 1000 queries, PGD 10/40/100/200, restarts, BPDA, "
              "transfer, APGD-CE + APGD-DLR) are `art-diffpure masking`, committed in `docs/masking-report/`.", "",
              diagnostics_table(r["diagnostics"])]
    lines += _md_disclosure(r)
    lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in figures]
    procs = int(timings.get("processes", 1))
    lines += ["", "## Timings (this machine)", ""]
    if procs > 1:
        lines += [f"{procs} processes ran the experiments in parallel: each step's seconds are its own, "
                  "`total` is the wall time of the whole run.", ""]
    lines += [rp.table(["Step", "Seconds"], [[k, f"{v:.1f}"] for k, v in timings.items()
                                             if not k.startswith("results") and k != "processes"])]
    return "\n".join(lines) + "\n"


def _first_seed(report: dict[str, Any]) -> dict[str, Any]:
    return statistics.seed_summary(report["adv_correct"]).to_dict()


def _figures(r: dict[str, Any], out: str) -> list[str]:
    names = []
    fig, ax = rp.new_figure()
    for k, v in r["fig1c"].items():
        ax.plot(np.arange(len(v)), v, label=k)
    ax.axhline(r["table1"]["ddpm"]["mean"]["l2"]["start"], color="grey", ls=":", label="input (start)")
    ax.set_xlabel("purification state (input, forward noising, reverse steps)")
    ax.set_ylabel("mean l2 distance to the clean image")
    ax.set_title("Fig. 1c: distance along the purification trajectory")
    ax.legend()
    names.append(os.path.basename(rp.save_figure(fig, out, "fig1c_trajectory_l2.png")))

    fig, ax = rp.new_figure()
    labels = {"initial": "initial neighbourhood", "vary_input_fixed_xi": "fixed xi, vary input",
              "vary_xi_fixed_input": "fixed input, vary xi", "vary_both": "vary both"}
    for k, v in r["fig2f"].items():
        ax.hist(np.asarray(v), bins=40, alpha=0.5, label=labels.get(k, k))
    ax.set_xlabel("l2 distance to centroid")
    ax.set_ylabel("count")
    ax.set_title("Fig. 2f: distances to centroids")
    ax.legend()
    names.append(os.path.basename(rp.save_figure(fig, out, "fig2f_centroid_distances.png")))

    fig, ax = rp.new_figure()
    sv = np.asarray(r["fig3a"]["singular_values"])
    ax.hist(sv.ravel(), bins=50)
    ax.axvline(0.25, color="grey", ls=":")
    ax.axvline(1.0, color="grey", ls="--")
    ax.set_xlabel("singular value of J_f(x0), fixed xi")
    ax.set_ylabel("count")
    ax.set_title("Fig. 3a: Jacobian spectrum")
    names.append(os.path.basename(rp.save_figure(fig, out, "fig3a_jacobian_spectrum.png")))

    fig, ax = rp.new_figure()
    pts = r["fig3b"]["points"]
    per_image = r["fig3b"].get("adv_correct") or {}
    for c, acc, label in pts:
        if label in per_image:  # 95% interval over the configuration's images (seeds x images)
            iv = statistics.seed_summary(per_image[label]).interval
            ax.errorbar(c, acc, yerr=[[acc - iv.low], [iv.high - acc]], fmt="o", ms=4, capsize=2, lw=0.8)
        else:
            ax.scatter(c, acc, s=18)
        ax.annotate(label, (c, acc), fontsize=6)
    fit = r["fig3b"].get("fit")
    if fit:
        from art_diffpure.metrics import CompressionLawFit

        law = CompressionLawFit(model=fit["model"], params=fit["params"], r2=fit["r2"], n_points=fit["n_points"])
        grid = np.linspace(0, max(p[0] for p in pts) * 1.1, 200)
        ax.plot(grid, law.predict(grid), color="k", lw=1, label=f"sigmoid fit, R²={fit['r2']:.2f}")
        ax.legend()
    ax.set_xlabel("compression rate (uniform, l2)")
    ax.set_ylabel("aligned robust accuracy")
    ax.set_title("Fig. 3b: compression vs aligned robustness (seed means, 95% over images)")
    names.append(os.path.basename(rp.save_figure(fig, out, "fig3b_compression_law.png")))
    from art_diffpure.diagnostics import plot_robustness_curve

    fig = plot_robustness_curve(r["robustness_curve"], title="Robust accuracy against eps per randomness mode")
    names.append(os.path.basename(rp.save_figure(fig, out, "robustness_curve.png")))
    return names


# ---------------------------------------------------------------------------------------------- entry
def build_setting(args) -> Setting:
    """The preset's setting from the command-line arguments (raises :class:`PresetUnavailable`)."""
    if args.preset == "digits":
        if not _torch_device_ok(args.device):
            raise PresetUnavailable(f"device {args.device!r} is not available")
        return digits_setting(args.quick, args.device, args.n_images, args.seeds, not args.no_progress)
    if args.preset == "cifar10":
        return cifar10_setting(args)
    return imagenet_setting(args)


def n_processes(args, setting: Setting) -> int:
    """``--jobs``: as given; by default one process per CPU core (at most 4) on CPU, a single process on a GPU."""
    jobs = getattr(args, "jobs", None)
    if jobs:
        return int(jobs)
    if setting.device != "cpu" or setting.name == "imagenet":
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def run_preset(args) -> dict[str, Any]:
    """Build the preset's setting, run it, write the report; returns the results."""
    import torch

    setting = build_setting(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.use_deterministic_algorithms(False)
    timer = _Timer()
    t0 = time.perf_counter()
    if setting.name == "imagenet":
        results = run_imagenet_experiments(setting, timer)
    else:
        n_procs = n_processes(args, setting)
        results = run_experiments(setting, timer, n_procs, args)
        timer.times["processes"] = n_procs
    timings = {k: v for k, v in timer.times.items()}
    results = _strip_timings(results, "results", timings)
    timings["total"] = time.perf_counter() - t0
    write_report(results, timings, args.out)
    print(f"report written to {os.path.join(args.out, 'report.md')} ({timings['total']:.0f} s)")
    return results
