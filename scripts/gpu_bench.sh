#!/usr/bin/env bash
# `make gpu-bench`: the GPU figures, in $OUT/gpu-bench.json (rewritten after every arm) and gpu-bench.md:
# mixing against the per-sample loop and a device copy; ViT-S/16 MoCo v3 + SDMP (bf16): the single-view
# forward+backward rate, eager vs CUDA graph at batches 64 and 128, compile at 128, images/s and MFU; each
# installed loader end to end against synthetic. One time budget covers every section (GPU_BENCH_SECONDS,
# default 180): arms that would start after it are listed as skipped; the run is killed 60 s after it.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
require_gpu gpu-bench
budget=${GPU_BENCH_SECONDS:-180}
if [ "$DRY" = 1 ]; then
  args=(--device cpu --quick --step-batches 8 --step-modes eager,graph,compile --compile-batches 8
        --e2e-loaders synthetic --e2e-batch 8 --e2e-steps 2 --e2e-warmup 1 --e2e-workers 0)
else
  args=(--device cuda --step-batches 64,128 --step-modes eager,graph,compile --compile-batches 128)
fi
echo "== gpu benchmark (budget ${budget} s) -> $OUT/gpu-bench.json"
timeout --kill-after=10 $(( budget + 60 )) $PY benchmarks/throughput.py --only mixing,modes,e2e \
  --step-methods mocov3 --budget-s "$budget" --json "$OUT/gpu-bench.json" --report "$OUT/gpu-bench.md" \
  "${args[@]}" 2>&1 | tee "$OUT/gpu-bench.log"
status=${PIPESTATUS[0]}
[ "$status" = 124 ] && echo "gpu-bench: killed after $(( budget + 60 )) s (the JSON holds every arm that ended)" \
  | tee -a "$OUT/gpu-bench.log"
exit "$status"
