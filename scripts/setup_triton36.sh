#!/usr/bin/env bash
# triton 3.6.0 (what the GPU machines have) in a side folder, .venv/triton36, outside the venv's site-packages:
# the kernel tests run the interpreter parity and the sm_90 compile under it in a subprocess with that folder
# first on sys.path (tests/kernels/triton_versions.py). A 188 MB wheel, about 640 MB installed; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.venv/triton36
[ -f "$dest/.complete" ] && exit 0
echo "[setup] triton 3.6.0 into $dest (the GPU machines' version, for the kernel tests)"
rm -rf "$dest"
.venv/bin/pip install -q --disable-pip-version-check --no-deps --target "$dest" triton==3.6.0 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
touch "$dest/.complete"
