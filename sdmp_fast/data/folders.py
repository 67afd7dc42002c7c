"""Image folders: the split type, scanning a folder, checking every image once, atomic materialisation.

An ImageNet-style folder is ``ROOT/<class>/<image>`` (one split) or ``ROOT/train/<class>/...`` plus
``ROOT/val/<class>/...``. Class ids follow the sorted folder names. Every image of a split is decoded
once before its first use (the verdicts are cached), so unreadable files are listed up front.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


class DataError(ValueError):
    """The data is missing or malformed; the message names the file and what to do."""


@dataclass(frozen=True)
class DataRoot:
    train: Path
    val: Path | None
    name: str


@dataclass(frozen=True)
class Split:
    """A scanned split: ``samples[i] = (path, label)``; the sample index is the position i. ``skipped``: the files
    under ``root`` left out by ``skip_corrupt`` (non-image files, unreadable images)."""
    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[str, int], ...]
    skipped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return np.fromiter((s[1] for s in self.samples), dtype=np.int64, count=len(self.samples))


def default_cache_dir(cache_dir: str = "") -> Path:
    return Path(cache_dir or os.environ.get("SDMP_CACHE") or Path.home() / ".cache" / "sdmp_fast")


def run_writers(writer, jobs: list, total: int, desc: str, progress: bool) -> int:
    """Run ``writer(job)`` (returns the images written) over ``jobs`` in a thread pool, with a progress bar."""
    from tqdm import tqdm
    bar = tqdm(total=total, desc=desc, unit="img", disable=not progress)
    done = 0
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        for n in pool.map(writer, jobs):
            bar.update(n)
            done += n
    bar.close()
    return done


def materialise(final: Path, write) -> Path:
    """Build the folder ``final`` once, atomically: ``write(tmp)`` fills a temporary sibling folder (and returns a
    dict recorded in ``.complete``), which is renamed to ``final`` only when complete."""
    if (final / ".complete").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.time()
    try:
        info = write(tmp)
        (tmp / ".complete").write_text(json.dumps({**info, "seconds": round(time.time() - t0, 1)}))
        try:
            os.rename(tmp, final)
        except OSError:
            # another process finished first: keep theirs
            if not (final / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def report_problems(problems: list[str]) -> None:
    """Raise one :class:`DataError` listing every problem found (``problems``: messages), if any."""
    if len(problems) == 1:
        raise DataError(problems[0])
    if problems:
        raise DataError(f"{len(problems)} problems with the data (all listed; fix them and run again):\n- "
                        + "\n- ".join(problems))


def scan_folder(root: Path, skip_corrupt: bool = False, problems: list[str] | None = None) -> tuple[Split, list[str]]:
    """List ``root/<class>/<image>``; returns the split and the skipped non-image files.

    Non-image files (by extension) are an error naming them unless ``skip_corrupt``; hidden files
    (dot-files) are ignored. An empty class folder is an error. With ``problems``, those two errors are
    appended to it (for :func:`report_problems`, once every check has run) instead of raised.
    """
    found: list[str] = []
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    entries = sorted((e for e in os.scandir(root) if not e.name.startswith(".")), key=lambda e: e.name)
    classes = [e.name for e in entries if e.is_dir()]
    stray = [e.path for e in entries if not e.is_dir()]
    if not classes:
        raise DataError(f"{root}: no class sub-folders found; expected {root}/<class>/<image>.jpg "
                        + (f"(found only files, e.g. {stray[0]})" if stray else "(the folder is empty)"))
    samples: list[tuple[str, int]] = []
    bad: list[str] = []
    empty: list[str] = []
    for label, c in enumerate(classes):
        n0 = len(samples)
        for dirpath, dirnames, filenames in os.walk(root / c, followlinks=True):
            dirnames.sort()
            for fn in sorted(filenames):
                if fn.startswith("."):
                    continue
                full = os.path.join(dirpath, fn)
                if fn.lower().endswith(IMG_EXTENSIONS):
                    samples.append((full, label))
                else:
                    bad.append(full)
        if len(samples) == n0:
            empty.append(str(root / c))
    if empty:
        found.append(f"{root}: class folder(s) without images: {', '.join(empty[:10])}"
                     + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
                     + "; remove them or add images (class ids follow the sorted folder names)")
    bad += stray
    if bad and not skip_corrupt:
        found.append(f"{root}: {len(bad)} file(s) that are not images: {', '.join(bad[:10])}"
                     + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
                     + f"; remove them, or set data.skip_corrupt=true to ignore them ({', '.join(IMG_EXTENSIONS)})")
    if problems is None:
        report_problems(found)
    else:
        problems += found
    return Split(root=root, classes=tuple(classes), samples=tuple(samples), skipped=tuple(bad)), bad


def _check_image(path: str) -> str | None:
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.load()
            if im.size[0] < 1 or im.size[1] < 1:
                return "empty image"
    except Exception as e:  # noqa: BLE001 - every decoder failure is reported with its path
        return f"{type(e).__name__}: {e}"
    return None


def verify_images(split: Split, cache_dir: str = "", skip_corrupt: bool = False, progress: bool = True,
                  problems: list[str] | None = None) -> tuple[Split, list[tuple[str, str]]]:
    """Decode every image once and list the unreadable ones (result cached per folder state).

    Raises :class:`DataError` with the offending paths unless ``skip_corrupt``, in which case they
    are dropped and returned (and added to ``Split.skipped``); with ``problems`` the message is appended to it
    instead of raised. The cache key covers the paths, sizes and modification times.
    """
    h = hashlib.sha256()
    for p, _ in split.samples:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    key = h.hexdigest()[:24]
    cache = default_cache_dir(cache_dir) / "verified" / f"{key}.json"
    if cache.is_file():
        failures = [tuple(x) for x in json.loads(cache.read_text())["failures"]]
    else:
        from tqdm import tqdm
        paths = [p for p, _ in split.samples]
        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            results = list(tqdm(pool.map(_check_image, paths, chunksize=64), total=len(paths),
                                desc=f"verifying {split.root}", unit="img", disable=not progress))
        failures = [(p, r) for p, r in zip(paths, results) if r is not None]
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"root": str(split.root), "failures": failures}))
        os.replace(tmp, cache)
    if failures and not skip_corrupt:
        listing = "\n  ".join(f"{p} ({why})" for p, why in failures[:20])
        more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
        message = (f"{len(failures)} unreadable image(s) under {split.root}:\n  {listing}{more}\n"
                   "Fix or remove them, or set data.skip_corrupt=true to skip them.")
        if problems is None:
            raise DataError(message)
        problems.append(message)
    elif failures:
        dropped = {p for p, _ in failures}
        split = Split(split.root, split.classes, tuple(s for s in split.samples if s[0] not in dropped),
                      split.skipped + tuple(p for p, _ in failures))
    return split, failures
