"""Finding and checking image data: ImageNet-style folders and the embedded Fashion-MNIST.

An ImageNet-style folder is ``ROOT/<class>/<image>`` (one split) or ``ROOT/train/<class>/...`` plus
``ROOT/val/<class>/...``. Class ids follow the sorted folder names.

Fashion-MNIST (Debian's ``dataset-fashion-mnist``: gzip IDX files) is materialised once, atomically
(temporary folder + rename), as such a folder of RGB JPEGs, so every loader decodes real JPEGs from
the layout a user's ImageNet has. Folder names sort in label order, so label ids are kept.
"""
from __future__ import annotations

import gzip
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
FASHION_MNIST_RAW = Path(os.environ.get("SDMP_FASHION_MNIST_RAW", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = ("0_tshirt_top", "1_trouser", "2_pullover", "3_dress", "4_coat",
                         "5_sandal", "6_shirt", "7_sneaker", "8_bag", "9_ankle_boot")
_FMNIST_FOLDER = "fashion_mnist_jpeg_v1"


class DataError(ValueError):
    """The data is missing or malformed; the message names the file and what to do."""


@dataclass(frozen=True)
class DataRoot:
    train: Path
    val: Path | None
    name: str


@dataclass(frozen=True)
class Split:
    """A scanned split: ``samples[i] = (path, label)``; the sample index is the position i."""
    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[str, int], ...]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return np.fromiter((s[1] for s in self.samples), dtype=np.int64, count=len(self.samples))


def default_cache_dir(cache_dir: str = "") -> Path:
    return Path(cache_dir or os.environ.get("SDMP_CACHE") or Path.home() / ".cache" / "sdmp_fast")


# ----------------------------------------------------------------------------- Fashion-MNIST

def _read_idx(path: Path, magic: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise DataError(f"{path}: not an IDX file of the expected kind (magic {got:#x}, expected {magic:#x})")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_mnist_raw(raw_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    names = {"train": "train", "val": "t10k"}
    missing = [str(raw_dir / f"{p}-{k}-idx{n}-ubyte.gz") for p in names.values()
               for k, n in (("images", 3), ("labels", 1)) if not (raw_dir / f"{p}-{k}-idx{n}-ubyte.gz").is_file()]
    if missing:
        raise DataError(
            "Fashion-MNIST (the embedded default data set) was not found: missing " + ", ".join(missing) + ".\n"
            "Install it with `apt-get install dataset-fashion-mnist` (Debian; `make setup` does this), "
            "or point SDMP_FASHION_MNIST_RAW at a folder with the four gzip IDX files, "
            "or train on your own ImageNet-style folder with --data PATH.")
    out = {}
    for split, prefix in names.items():
        images = _read_idx(raw_dir / f"{prefix}-images-idx3-ubyte.gz", 0x803)
        labels = _read_idx(raw_dir / f"{prefix}-labels-idx1-ubyte.gz", 0x801)
        if len(images) != len(labels):
            raise DataError(f"{raw_dir}: {prefix} has {len(images)} images but {len(labels)} labels")
        out[split] = (images, labels)
    return out


def _write_jpegs(args: tuple[Path, np.ndarray, np.ndarray, int]) -> int:
    from PIL import Image
    root, images, labels, start = args
    for k, (img, lab) in enumerate(zip(images, labels)):
        rgb = np.repeat(img[:, :, None], 3, axis=2)
        Image.fromarray(rgb, "RGB").save(root / FASHION_MNIST_CLASSES[lab] / f"{start + k:05d}.jpg", quality=95)
    return len(images)


def fashion_mnist_folder(cache_dir: str = "", raw_dir: Path | None = None, progress: bool = True) -> Path:
    """Return the Fashion-MNIST JPEG folder (``train/`` and ``val/``), materialising it on first use."""
    final = default_cache_dir(cache_dir) / _FMNIST_FOLDER
    if (final / ".complete").is_file():
        return final
    data = _fashion_mnist_raw(raw_dir or FASHION_MNIST_RAW)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{_FMNIST_FOLDER}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.time()
    total = sum(len(v[0]) for v in data.values())
    jobs = []
    for split, (images, labels) in data.items():
        for c in FASHION_MNIST_CLASSES:
            (tmp / split / c).mkdir(parents=True, exist_ok=True)
        chunk = 2000
        jobs += [(tmp / split, images[i:i + chunk], labels[i:i + chunk], i) for i in range(0, len(images), chunk)]
    try:
        from tqdm import tqdm
        bar = tqdm(total=total, desc="Fashion-MNIST -> JPEG folder", unit="img", disable=not progress)
        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            for n in pool.map(_write_jpegs, jobs):
                bar.update(n)
        bar.close()
        (tmp / ".complete").write_text(json.dumps({"images": total, "seconds": round(time.time() - t0, 1)}))
        try:
            os.rename(tmp, final)
        except OSError:
            # another process finished first: keep theirs
            if not (final / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# ----------------------------------------------------------------------------- folders

def find_data(path: str = "", cache_dir: str = "") -> DataRoot:
    """Resolve ``data.path``: empty = Fashion-MNIST; a folder with train/ (and val/); or one split."""
    if not path:
        root = fashion_mnist_folder(cache_dir)
        return DataRoot(train=root / "train", val=root / "val", name="fashion-mnist")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data.path {str(p)!r} does not exist; give an ImageNet-style folder "
                        "(ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg, or ROOT/<class>/*.jpg)")
    if not p.is_dir():
        raise DataError(f"data.path {str(p)!r} is a file, not a folder of class sub-folders")
    if (p / "train").is_dir():
        return DataRoot(train=p / "train", val=(p / "val") if (p / "val").is_dir() else None, name=p.name)
    return DataRoot(train=p, val=None, name=p.name)


def scan_folder(root: Path, skip_corrupt: bool = False) -> tuple[Split, list[str]]:
    """List ``root/<class>/<image>``; returns the split and the skipped non-image files.

    Non-image files (by extension) are an error naming them unless ``skip_corrupt``; hidden files
    (dot-files) are ignored. An empty class folder is an error.
    """
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
        raise DataError(f"{root}: class folder(s) without images: {', '.join(empty[:10])}"
                        + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
                        + "; remove them or add images (class ids follow the sorted folder names)")
    bad += stray
    if bad and not skip_corrupt:
        raise DataError(f"{root}: {len(bad)} file(s) that are not images: {', '.join(bad[:10])}"
                        + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
                        + f"; remove them, or set data.skip_corrupt=true to ignore them ({', '.join(IMG_EXTENSIONS)})")
    return Split(root=root, classes=tuple(classes), samples=tuple(samples)), bad


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


def verify_images(split: Split, cache_dir: str = "", skip_corrupt: bool = False, progress: bool = True) -> tuple[Split, list[tuple[str, str]]]:
    """Decode every image once and list the unreadable ones (result cached per folder state).

    Raises :class:`DataError` with the offending paths unless ``skip_corrupt``, in which case they
    are dropped and returned. The cache key covers the paths, sizes and modification times.
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
        raise DataError(f"{len(failures)} unreadable image(s) under {split.root}:\n  {listing}{more}\n"
                        "Fix or remove them, or set data.skip_corrupt=true to skip them.")
    if failures:
        dropped = {p for p, _ in failures}
        split = Split(split.root, split.classes, tuple(s for s in split.samples if s[0] not in dropped))
    return split, failures


def write_jpeg_folder(root: Path, classes: int = 3, per_class: int = 12,
                      sizes: tuple[tuple[int, int], ...] = ((48, 40), (64, 52), (40, 64)),
                      quality: int = 90, seed: int = 0) -> Path:
    """Write an ImageNet-style folder of textured RGB JPEGs (for tests and loader benchmarks).

    Content is natural-image-like rather than flat: smooth colour gradients, a few blurred blobs and
    pixel noise, so JPEG sizes and decode costs resemble photographs. ``sizes`` are (width, height)
    and cycle over the images, giving varied sizes and aspect ratios.
    """
    from PIL import Image
    rng = np.random.default_rng(seed)
    root = Path(root)
    for c in range(classes):
        d = root / f"class_{c:03d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = sizes[(c + i) % len(sizes)]
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            img = np.empty((h, w, 3), np.float32)
            for ch in range(3):
                (fx, fy), ph = rng.uniform(0.5, 4, 2) / max(w, h) * 2 * np.pi, rng.uniform(0, 2 * np.pi)
                img[..., ch] = 128 + 60 * np.sin(xx * fx + yy * fy + ph)
            for _ in range(4):
                cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.3) * max(w, h)
                blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
                img += blob[..., None] * rng.uniform(-90, 90, 3)
            img += rng.normal(0, 10, img.shape)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"img_{i:04d}.jpg", quality=quality)
    return root
