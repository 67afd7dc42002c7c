#!/usr/bin/env bash
# `make gpu-test`: every gpu-marked test, as JUnit XML ($OUT/gpu-test.xml) and a log ($OUT/gpu-test.log),
# OUT = $GPU_CHECK_OUT (default runs/gpu-check). Stopped after GPU_TEST_SECONDS (default 150): the log and the
# XML written so far stay. GPU_TEST_PATHS: what to collect (default tests).
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
require_gpu gpu-test
limit=${GPU_TEST_SECONDS:-150}
echo "== gpu tests (limit ${limit} s) -> $OUT/gpu-test.xml"
# shellcheck disable=SC2086
timeout --kill-after=10 "$limit" $PY -m pytest -m gpu -q -p no:cacheprovider -rfEs --durations=10 \
  --junitxml "$OUT/gpu-test.xml" ${GPU_TEST_PATHS:-tests} 2>&1 | tee "$OUT/gpu-test.log"
status=${PIPESTATUS[0]}
[ "$status" = 124 ] && echo "gpu-test: stopped after ${limit} s" | tee -a "$OUT/gpu-test.log"
exit "$status"
