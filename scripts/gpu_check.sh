#!/usr/bin/env bash
# `make gpu-check`: doctor, then gpu-test, then gpu-bench, within GPU_CHECK_SECONDS (default 360, 6 minutes on
# one H100), each stopped by its own limit; everything under $GPU_CHECK_OUT (default runs/gpu-check): doctor.txt
# and doctor.json, gpu-test.xml and .log, gpu-bench.json, .md and .log, gpu-check.log (all of the output) and
# summary.txt, the last lines printed (at most 40: the checks, the tests, the targets met / NOT met / not
# measured). GPU_CHECK_DRY=1: the same at tiny sizes on a CPU (tests/test_gpu_scripts.py runs it).
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
require_gpu gpu-check
total=${GPU_CHECK_SECONDS:-360}
exec > >(tee "$OUT/gpu-check.log") 2>&1
status=0
echo "== doctor -> $OUT/doctor.txt"
if [ "$DRY" = 1 ]; then doctor_args=(--only gpu-eager-step,gpu-graph-step); else doctor_args=(); fi
timeout --kill-after=10 "${GPU_DOCTOR_SECONDS:-100}" $PY -m sdmp_fast.doctor "${doctor_args[@]}" \
  --json "$OUT/doctor.json" | tee "$OUT/doctor.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
GPU_TEST_SECONDS=${GPU_TEST_SECONDS:-150} bash scripts/gpu_test.sh || status=1
left=$(( total - SECONDS - 30 ))  # 30 s for the summary and the kill margin
[ "$left" -lt 60 ] && left=60     # the tests ran long: still measure what fits in a minute
GPU_BENCH_SECONDS=$left bash scripts/gpu_bench.sh || status=1
$PY scripts/gpu_summary.py "$OUT" --seconds "$SECONDS" --limit "$total" --status "$status" | tee "$OUT/summary.txt"
exit $status
