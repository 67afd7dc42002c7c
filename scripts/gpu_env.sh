# Sourced by scripts/gpu_{test,bench,check}.sh: the python, the paths and the output folder of the GPU checks.
# GPU machines have torch, torchvision, timm, triton and pytest in their own python3 and no package registry:
# nothing is installed; the checkout is put first on PYTHONPATH (and DALI from /tmp/dali-site if staged there).
# GPU_CHECK_DRY=1: the same commands on a CPU at tiny sizes (the tests run this, so the scripts cannot rot).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d /tmp/dali-site ] && export PYTHONPATH="/tmp/dali-site:$PYTHONPATH"
export PYTHONUNBUFFERED=1
OUT=${GPU_CHECK_OUT:-runs/gpu-check}
DRY=${GPU_CHECK_DRY:-0}
mkdir -p "$OUT"

require_gpu() {
  [ "$DRY" = 1 ] && return 0
  $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "$1: no CUDA device visible to torch; run it on a GPU machine (GPU_CHECK_DRY=1: a CPU dry run)" >&2
    exit 2
  }
}
