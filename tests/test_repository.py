"""The repository stands alone: no tracked file points at documents outside it.

A user's clone holds only the tracked files, so a citation of a file beside the repository (the method
specification, the environment notes) is a dead end for them; docs/method.md holds what the code cites.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Built from parts so that this file does not match itself.
OUTSIDE = ("SDMP" + "_SPEC", ".." + "/shared")
# Checkpoints written by earlier code (tests/test_compat.py): binary, and never edited.
FROZEN_BINARY = ("tests/fixtures/compat/",)


def tracked_files() -> list[str]:
    """Paths of the tracked files, relative to the repository root (skips outside a git checkout)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    done = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if done.returncode != 0:
        pytest.skip("not a git checkout")
    return [p for p in done.stdout.decode().split("\0") if p]


def test_no_tracked_file_points_outside_the_repository():
    found = []
    for rel in tracked_files():
        path = ROOT / rel
        if not path.is_file():  # deleted in the work tree, or a submodule
            continue
        data = path.read_bytes()
        if rel.startswith(FROZEN_BINARY) and b"\0" in data:
            continue
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if any(needle in line for needle in OUTSIDE):
                found.append(f"{rel}:{number}: {line.strip()[:100]}")
    assert not found, ("files outside the repository are cited; cite a heading of docs/method.md instead "
                       "(\"docs/method.md, <heading>\"):\n" + "\n".join(found))
