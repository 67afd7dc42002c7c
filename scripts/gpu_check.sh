#!/usr/bin/env bash
# The one GPU command (`make gpu-check`): every gpu-marked test, then the throughput benchmark on CUDA.
# Runs with the machine's own python3 and installs nothing (GPU machines have torch, torchvision, timm,
# triton, pytest and no package registry). Uses DALI from /tmp/dali-site when it was staged there.
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
$PY benchmarks/throughput.py --device cuda --json "$OUT_DIR/throughput-cuda.json" || status=1
echo "gpu-check: $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
