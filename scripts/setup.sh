#!/usr/bin/env bash
# One-shot, idempotent set-up of a fresh machine (root, Debian, PyPI): system packages, .venv, pinned deps.
# Quick (about a second) when everything is already in place: a stamp records the hash of the inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
APT_PKGS="dataset-fashion-mnist libturbojpeg0-dev libopencv-dev pkg-config"

missing=()
for p in $APT_PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=.venv/.sdmp_setup_stamp
want=$(cat requirements/pins.txt requirements/constraints.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  bash scripts/setup_triton36.sh
  exit 0
fi
[ -x .venv/bin/python ] || { echo "[setup] creating .venv"; $PY -m venv .venv; }
echo "[setup] installing pinned dependencies into .venv (first time: about 2 minutes)"
t0=$(date +%s)
# torch and torchvision are pinned in the same command, or pip drifts to another build (ENVIRONMENT.md).
# (grep drops pip's noise about this machine's empty local index folders; pipefail keeps pip's exit code)
.venv/bin/pip install -q --disable-pip-version-check -r requirements/pins.txt -c requirements/constraints.txt 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
.venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
.venv/bin/python -c "import torch, torchvision, timm, nvidia.dali, ffcv, tensorboard, matplotlib" 2>/dev/null \
  || { echo "[setup] import check failed: see the pip output above" >&2; exit 1; }
bash scripts/setup_triton36.sh
echo "$want" > "$stamp"
echo "[setup] done in $(( $(date +%s) - t0 )) s"
