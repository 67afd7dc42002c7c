#!/usr/bin/env bash
# The one GPU command (`make gpu-check`): every gpu-marked test, then the throughput benchmark on CUDA (every
# section: loaders, ffcv, augment, mixing, step with its eager / compile / graph modes, FLOPs and MFU, e2e per
# loader), written as JSON and as a Markdown report (device, driver, versions, every figure, the targets) to
# $GPU_CHECK_OUT (default benchmarks/results): throughput-cuda.json and gpu-check-report.md.
# Runs with the machine's own python3 and installs nothing (GPU machines have torch, torchvision, timm,
# triton, pytest and no package registry). Uses DALI from /tmp/dali-site when it was staged there.
# Budget: about 8 minutes on one H100. The benchmark gets what the tests left of GPU_CHECK_SECONDS (default
# 480) less a margin for the report: step-mode arms (compile last) and e2e loaders that would start after that
# are listed as skipped in the report, not run. torch.compile runs at batch 128 only (each batch compiles anew).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d /tmp/dali-site ] && export PYTHONPATH="/tmp/dali-site:$PYTHONPATH"
export PYTHONUNBUFFERED=1
OUT_DIR=${GPU_CHECK_OUT:-benchmarks/results}
mkdir -p "$OUT_DIR"

$PY - <<'PYEOF' || exit 1
import platform, torch
if not torch.cuda.is_available():
    raise SystemExit("gpu-check: no CUDA device visible to torch; run this on a GPU machine")
p = torch.cuda.get_device_properties(0)
print(f"device: {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")
vers = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
for m in ("torchvision", "timm", "triton"):
    try:
        vers[m] = __import__(m).__version__
    except Exception as e:
        vers[m] = f"missing ({e})"
try:
    import nvidia.dali as dali
    vers["dali"] = dali.__version__
except Exception:
    vers["dali"] = "not installed"
print("versions:", vers)
PYEOF
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true

status=0
echo "== gpu tests"
$PY -m pytest -m gpu -q -p no:cacheprovider -rs --durations=10 tests || status=1
echo "== throughput benchmark (cuda)"
budget=$(( ${GPU_CHECK_SECONDS:-480} - SECONDS - 20 ))
[ "$budget" -lt 120 ] && budget=120  # the tests ran long: still measure the essentials
echo "benchmark time budget: ${budget} s (after ${SECONDS} s of set-up and tests)"
$PY benchmarks/throughput.py --device cuda --budget-s "$budget" --compile-batches 128 \
    --json "$OUT_DIR/throughput-cuda.json" --report "$OUT_DIR/gpu-check-report.md" || status=1
[ -f "$OUT_DIR/gpu-check-report.md" ] && echo "report: $OUT_DIR/gpu-check-report.md"
echo "total: ${SECONDS} s"
echo "gpu-check: $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
