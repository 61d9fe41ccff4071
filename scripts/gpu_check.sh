#!/usr/bin/env bash
# The project's GPU checks on a machine with its own Python, torch and pytest but no package registry or network:
# installs carried wheels (ART, diffusers, ...) into a separate folder, puts it and this checkout on PYTHONPATH,
# records every version, runs `pytest -m cuda` and benchmarks/b5_gpu.py, each under its own timeout, and writes
# every log and JSON into --out as it goes (a run killed midway keeps what finished). README: "GPU check on an
# offline machine".
#
#   scripts/gpu_check.sh --wheels wheels --out gpu-out            # the GPU run (timeouts add up to 590 s)
#   scripts/gpu_check.sh --smoke --out /tmp/gpu-check-smoke       # the same steps, tiny, CPU allowed (tested)
#
# Options:
#   --wheels DIR          wheels to install (pip install --no-index --no-deps --target); without it the
#                         packages already importable are used. ART and diffusers wheels are always installed;
#                         any other wheel only when its distribution is not installed already.
#   --out DIR             where everything is written (created)
#   --smoke               tiny sizes: a few CPU-runnable tests and B5 --smoke (seconds; CPU or GPU)
#   --python PY           the interpreter (default: python3, else python, first on PATH)
#   --site DIR            install target (default: a temporary folder, removed at the end)
#   --pytest-timeout S    default 200 (smoke 180)
#   --b5-timeout S        default 300 (smoke 180); B5 gets --time-budget of this minus 60 s
#   --b5-args "ARGS"      replace B5's default arguments (GPU: --batch-sizes 16,64 --repeats 2)
#   --pytest-args "ARGS"  replace the pytest selection (GPU: -m cuda tests)
#   --steps LIST          which steps to run (default install,versions,pytest,b5)
#
# Files in --out: gpu_check.log (everything), summary.json (each step's status, rewritten after each step),
# steps.tsv, wheels.tsv, install.log, versions.json, versions.txt, nvidia-smi.txt, pytest.log, pytest.xml (junit),
# b5.log, b5_gpu.json (rewritten after every measured row). Exit status 0 when every step passed.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMMAND="$0 $*"
WHEELS="" OUT="" SMOKE=0 PY="" SITE="" PYTEST_TIMEOUT="" B5_TIMEOUT="" B5_ARGS="" PYTEST_ARGS=""
STEP_LIST="install,versions,pytest,b5"
usage() { sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) WHEELS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --smoke) SMOKE=1; shift ;;
        --python) PY="$2"; shift 2 ;;
        --site) SITE="$2"; shift 2 ;;
        --pytest-timeout) PYTEST_TIMEOUT="$2"; shift 2 ;;
        --b5-timeout) B5_TIMEOUT="$2"; shift 2 ;;
        --b5-args) B5_ARGS="$2"; shift 2 ;;
        --pytest-args) PYTEST_ARGS="$2"; shift 2 ;;
        --steps) STEP_LIST="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (--help)" >&2; exit 2 ;;
    esac
done
[ -n "$OUT" ] || { echo "gpu_check.sh: --out DIR is required (--help)" >&2; exit 2; }
if [ -z "$PY" ]; then PY="$(command -v python3 || command -v python || true)"; fi
[ -n "$PY" ] || { echo "gpu_check.sh: no python3/python on PATH (--python)" >&2; exit 2; }
if [ -n "$WHEELS" ] && [ ! -d "$WHEELS" ]; then echo "gpu_check.sh: --wheels $WHEELS is not a folder" >&2; exit 2; fi
command -v timeout >/dev/null || { echo "gpu_check.sh: needs coreutils' timeout" >&2; exit 2; }
if [ "$SMOKE" = 1 ]; then
    : "${PYTEST_TIMEOUT:=180}" "${B5_TIMEOUT:=180}"
else
    : "${PYTEST_TIMEOUT:=200}" "${B5_TIMEOUT:=300}"
fi
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
[ -z "$WHEELS" ] || WHEELS="$(cd "$WHEELS" && pwd)"
CLEAN_SITE=0
if [ -z "$SITE" ]; then SITE="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-site.XXXXXX")"; CLEAN_SITE=1; fi
mkdir -p "$SITE" && SITE="$(cd "$SITE" && pwd)"
TEE_PID=""
cleanup() {
    if [ "$CLEAN_SITE" = 1 ]; then rm -rf "$SITE"; fi
    if [ -n "$TEE_PID" ]; then exec 1>&- 2>&-; wait "$TEE_PID" 2>/dev/null; fi  # gpu_check.log complete on exit
}
trap cleanup EXIT
trap 'exit 143' TERM INT

exec > >(tee -a "$OUT/gpu_check.log") 2>&1
TEE_PID=$!
STEPS="$OUT/steps.tsv"
: > "$STEPS"
STARTED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
export PY WHEELS SITE OUT
echo "gpu_check.sh: checkout $ROOT, out $OUT, python $PY, smoke $SMOKE, wheels ${WHEELS:-(none: installed packages)}"

write_summary() {  # $1: complete (true/false); $2: the step now running, if any
    STEPS="$STEPS" OUT="$OUT" STARTED="$STARTED" SMOKE="$SMOKE" WHEELS="$WHEELS" SITE="$SITE" ROOT="$ROOT" \
    PYBIN="$PY" COMPLETE="$1" COMMAND="$COMMAND" RUNNING="${2:-}" "$PY" -I - <<'EOF'
import json, os, time
steps = []
with open(os.environ["STEPS"], encoding="utf-8") as f:
    for line in f:
        name, rc, status, seconds, log = line.rstrip("\n").split("\t")
        steps.append({"name": name, "rc": int(rc), "status": status, "seconds": int(seconds), "log": log})
summary = {"started_utc": os.environ["STARTED"], "updated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "complete": os.environ["COMPLETE"] == "true", "smoke": os.environ["SMOKE"] == "1",
           "checkout": os.environ["ROOT"], "python": os.environ["PYBIN"], "wheels": os.environ["WHEELS"] or None,
           "site": os.environ["SITE"], "command": os.environ["COMMAND"], "steps": steps,
           "running": os.environ["RUNNING"] or None,
           "all_ok": all(s["status"] == "ok" for s in steps)}
path = os.path.join(os.environ["OUT"], "summary.json")
with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
os.replace(path + ".tmp", path)
EOF
}

wanted() { case ",$STEP_LIST," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

run_step() {  # name timeout_s log cmd...: runs cmd under timeout, its output to log and the console
    local name="$1" limit="$2" log="$3"; shift 3
    echo
    echo "== $name (timeout ${limit} s): $*"
    local t0=$SECONDS rc status
    write_summary false "$name"  # a run killed during this step still says which one it was
    timeout --kill-after=15 "$limit" "$@" 2>&1 | tee "$OUT/$log"
    rc=${PIPESTATUS[0]}
    case "$rc" in
        0) status=ok ;;
        124|137) status=timeout ;;
        *) status=failed ;;
    esac
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$status" "$((SECONDS - t0))" "$log" >> "$STEPS"
    write_summary false
    echo "== $name: $status (exit $rc, $((SECONDS - t0)) s)"
}

# ------------------------------------------------------------------ 1. wheels
install_wheels() {
    export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CONFIG_FILE=/dev/null
    unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL
    # Which carried wheels to install: ART and diffusers always; others only if their distribution is missing.
    local plan
    plan="$("$PY" -I - "$WHEELS" <<'EOF'
import importlib.metadata as md, os, re, sys
folder = sys.argv[1]
always = {"adversarial_robustness_toolbox", "diffusers"}
for name in sorted(os.listdir(folder)):
    if not name.endswith(".whl"):
        continue
    dist = re.sub(r"[-_.]+", "_", name.split("-")[0]).lower()
    size = os.path.getsize(os.path.join(folder, name))
    try:
        have = md.version(dist)
    except md.PackageNotFoundError:
        have = None
    action = "install" if dist in always or have is None else "skip"
    print(f"{action}\t{name}\t{size}\t{have or '-'}")
EOF
)" || return 1
    printf 'action\twheel\tbytes\talready_installed\n%s\n' "$plan" > "$OUT/wheels.tsv"
    echo "$plan" | awk -F'\t' '{printf "  %-8s %-75s %9d bytes (installed: %s)\n", $1, $2, $3, $4}'
    local files=()
    while IFS=$'\t' read -r action name _ _; do
        [ "$action" = install ] && files+=("$WHEELS/$name")
    done <<< "$plan"
    [ ${#files[@]} -gt 0 ] || { echo "no wheel to install"; return 0; }
    if "$PY" -m pip --version >/dev/null 2>&1; then
        "$PY" -m pip install --no-index --no-deps --no-cache-dir --no-compile --target "$SITE" "${files[@]}"
    else  # no pip on the machine: a wheel is a zip of its site-packages contents
        echo "no pip: unpacking the wheels into $SITE"
        "$PY" -I - "$SITE" "${files[@]}" <<'EOF'
import os, shutil, sys, zipfile
site = sys.argv[1]
for wheel in sys.argv[2:]:
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    for entry in os.listdir(site):
        if entry.endswith(".data"):
            for kind in ("purelib", "platlib"):
                src = os.path.join(site, entry, kind)
                if os.path.isdir(src):
                    for item in os.listdir(src):
                        shutil.move(os.path.join(src, item), os.path.join(site, item))
            shutil.rmtree(os.path.join(site, entry))
    print("unpacked", os.path.basename(wheel))
EOF
    fi
}
if [ -n "$WHEELS" ] && wanted install; then
    export -f install_wheels
    run_step install 30 install.log bash -c install_wheels
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PIP_NO_INDEX=1
cd "$ROOT" || exit 2

# ------------------------------------------------------------------ 2. versions
if command -v nvidia-smi >/dev/null; then
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
else
    echo "nvidia-smi: not found" > "$OUT/nvidia-smi.txt"
fi
versions() {
    "$PY" - "$OUT/versions.json" "$SITE" <<'EOF'
import importlib, importlib.metadata, importlib.util, json, os, platform, subprocess, sys
out, site = sys.argv[1], sys.argv[2]
v = {"python": platform.python_version(), "executable": sys.executable, "platform": platform.platform(),
     "pythonpath": os.environ.get("PYTHONPATH"), "modules": {}, "missing": {}}
# Imported (what the checks need: an import error shows here, not in the middle of a test run) ...
for mod in ("torch", "numpy", "scipy", "sklearn", "pytest", "PIL", "diffusers", "art", "art_diffpure"):
    try:
        m = importlib.import_module(mod)
    except Exception as e:  # noqa: BLE001 - record any failure
        v["missing"][mod] = f"{type(e).__name__}: {e}"[:300]
        continue
    path = getattr(m, "__file__", None) or ""
    v["modules"][mod] = {"version": getattr(m, "__version__", None), "from_carried_wheels": path.startswith(site),
                         "path": path}
# ... or only looked up (imported on demand, or by the above).
for mod, dist in (("huggingface_hub", "huggingface-hub"), ("safetensors", "safetensors"), ("timm", "timm"),
                  ("torchvision", "torchvision"), ("requests", "requests"), ("six", "six"), ("tqdm", "tqdm"),
                  ("multiprocess", "multiprocess"), ("dill", "dill")):
    spec = importlib.util.find_spec(mod)
    if spec is None:
        v["missing"][mod] = "not installed"
        continue
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = None
    path = spec.origin or ""
    v["modules"][mod] = {"version": version, "from_carried_wheels": path.startswith(site), "path": path}
try:
    v["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                     timeout=10).stdout.strip() or None
except Exception:  # noqa: BLE001
    v["git_commit"] = None
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    v["nvidia_smi"] = smi.stdout.strip().splitlines() or smi.stderr.strip()
except Exception as e:  # noqa: BLE001
    v["nvidia_smi"] = f"not available: {e}"
if "torch" in v["modules"]:
    import torch
    cuda = {"available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "devices": []}
    if cuda["available"]:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            cuda["devices"].append({"name": p.name, "capability": f"{p.major}.{p.minor}",
                                    "memory_gib": round(p.total_memory / 2**30, 1)})
        try:
            d = torch._C._cuda_getDriverVersion()
            cuda["driver_api"] = f"{d // 1000}.{d % 1000 // 10}"
        except Exception:  # noqa: BLE001
            pass
    v["cuda"] = cuda
with open(out, "w", encoding="utf-8") as f:
    json.dump(v, f, indent=2)
    f.write("\n")
print(f"python {v['python']} ({v['executable']})")
for line in (v["nvidia_smi"] if isinstance(v["nvidia_smi"], list) else [v["nvidia_smi"]]):
    print(f"GPU (nvidia-smi): {line}")
c = v.get("cuda", {})
print(f"torch CUDA {c.get('torch_cuda')}, cuDNN {c.get('cudnn')}, CUDA available {c.get('available')}, "
      f"driver API {c.get('driver_api')}, devices {c.get('devices')}")
for mod, info in v["modules"].items():
    print(f"{mod:16s} {str(info['version']):14s} {'(carried wheel)' if info['from_carried_wheels'] else ''}")
for mod, why in v["missing"].items():
    print(f"{mod:16s} MISSING: {why}")
print(f"checkout commit {v['git_commit']}")
required = ("torch", "numpy", "scipy", "sklearn", "pytest", "PIL", "diffusers", "art", "art_diffpure")
lacking = [m for m in required if m in v["missing"]]
if lacking:
    sys.exit(f"required modules missing: {', '.join(lacking)} (see README: GPU check on an offline machine)")
EOF
}
export -f versions
wanted versions && run_step versions 60 versions.txt bash -c versions

# ------------------------------------------------------------------ 3. pytest
if [ -n "$PYTEST_ARGS" ]; then
    read -r -a selection <<< "$PYTEST_ARGS"
elif [ "$SMOKE" = 1 ]; then
    # the GPU tests' files: their GPU tests (skipped without CUDA) and a few fast CPU tests
    fast="test_hash_matches_formula_table or test_ddpm_step_matches_diffusers_step"
    fast="$fast or test_checkpointing_gives_same_gradient or tf32"
    selection=(tests/test_purifier.py tests/test_devices.py -k "cuda or $fast")
else
    selection=(-m cuda tests)
fi
wanted pytest && run_step pytest "$PYTEST_TIMEOUT" pytest.log \
    "$PY" -m pytest -ra -p no:cacheprovider --junitxml="$OUT/pytest.xml" "${selection[@]}"

# ------------------------------------------------------------------ 4. B5
if [ -n "$B5_ARGS" ]; then
    read -r -a b5_args <<< "$B5_ARGS"
elif [ "$SMOKE" = 1 ]; then
    b5_args=(--smoke --threads 1 --batch-sizes 1)
else
    b5_args=(--batch-sizes 16,64 --repeats 2)
fi
wanted b5 && run_step b5 "$B5_TIMEOUT" b5.log \
    "$PY" benchmarks/b5_gpu.py "${b5_args[@]}" --out "$OUT/b5_gpu.json" \
    --time-budget "$((B5_TIMEOUT > 120 ? B5_TIMEOUT - 60 : B5_TIMEOUT / 2))"

write_summary true
echo
echo "gpu_check.sh: done; summary in $OUT/summary.json"
awk -F'\t' '{printf "  %-9s %-8s exit %-4s %5s s  %s\n", $1, $3, $2, $4, $5}' "$STEPS"
! awk -F'\t' '$3 != "ok" {bad = 1} END {exit !bad}' "$STEPS"
