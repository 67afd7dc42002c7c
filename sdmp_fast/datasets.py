"""Finding and checking image data: ImageNet-style folders and the embedded Fashion-MNIST.

An ImageNet-style folder is ``ROOT/<class>/<image>`` (one split) or ``ROOT/train/<class>/...`` plus
``ROOT/val/<class>/...``. Class ids follow the sorted folder names.

Fashion-MNIST (Debian's ``dataset-fashion-mnist``: gzip IDX files) is materialised once, atomically
(temporary folder + rename), as such a folder of RGB JPEGs, so every loader decodes real JPEGs from
the layout a user's ImageNet has. Folder names sort in label order, so label ids are kept.

CIFAR-10 / CIFAR-100 (the python versions: ``cifar-10-batches-py`` / ``cifar-100-python``) are found
when ``data.path`` points at such a folder and materialised the same way, as lossless PNGs (``train/``
from the training batches, ``val/`` from the test batch, class folders ``03_cat``), under a key of the
files' content, so every loader and evaluation command reads them unchanged.

Split selection, shared by pretraining, the loaders and the evaluation commands (``load_splits``):
``data.class_subset`` keeps the classes named in a text file (labels renumbered in sorted name order,
``restrict_classes``); the evaluation commands' label fractions and label files pick the labelled
training images of semi-supervised fine-tuning (``label_fraction``, ``label_subset``).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import re
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

    def write(tmp: Path) -> dict:
        jobs = []
        for split, (images, labels) in data.items():
            for c in FASHION_MNIST_CLASSES:
                (tmp / split / c).mkdir(parents=True, exist_ok=True)
            chunk = 2000
            jobs += [(tmp / split, images[i:i + chunk], labels[i:i + chunk], i) for i in range(0, len(images), chunk)]
        total = _run_writers(_write_jpegs, jobs, sum(len(v[0]) for v in data.values()),
                             "Fashion-MNIST -> JPEG folder", progress)
        return {"images": total}

    return _materialise(final, write)


def _run_writers(writer, jobs: list, total: int, desc: str, progress: bool) -> int:
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


def _materialise(final: Path, write) -> Path:
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


# ----------------------------------------------------------------------------- CIFAR

@dataclass(frozen=True)
class CifarLayout:
    """The files of a CIFAR python version and the keys of its pickled dicts."""
    name: str                # data set name: cifar10 / cifar100
    folder: str              # the folder the archive extracts to
    train: tuple[str, ...]   # training batches, in order
    test: str
    meta: str
    label_key: bytes
    names_key: bytes

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, self.test, self.meta)


CIFAR_LAYOUTS = (
    CifarLayout("cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                "batches.meta", b"labels", b"label_names"),
    CifarLayout("cifar100", "cifar-100-python", ("train",), "test", "meta", b"fine_labels", b"fine_label_names"),
)
CIFAR_HELP = ("a CIFAR folder is the extracted python version: cifar-10-batches-py/ (data_batch_1 ... data_batch_5, "
              "test_batch, batches.meta) or cifar-100-python/ (train, test, meta), from "
              "https://www.cs.toronto.edu/~kriz/cifar.html (cifar-10-python.tar.gz, cifar-100-python.tar.gz)")
_CIFAR_FORMAT = "png_v1"  # bump when the materialised layout changes


def _looks_like(p: Path, layout: CifarLayout) -> bool:
    if p.name == layout.folder:
        return True
    if layout.name == "cifar100":  # "train" and "test" are files here, folders in an ImageNet-style root
        return (p / "meta").is_file() and ((p / "train").is_file() or (p / "test").is_file())
    return any((p / f).is_file() for f in (layout.train[0], layout.test, layout.meta))


def cifar_layout(path: str | Path) -> tuple[CifarLayout, Path] | None:
    """(layout, folder) when ``path`` is an extracted CIFAR folder or holds exactly one; None otherwise."""
    p = Path(path)
    if not p.is_dir():
        return None
    for layout in CIFAR_LAYOUTS:
        if _looks_like(p, layout):
            return layout, p
    inner = [(layout, p / layout.folder) for layout in CIFAR_LAYOUTS if (p / layout.folder).is_dir()]
    if len(inner) > 1:
        raise DataError(f"{p} holds both {inner[0][1].name} and {inner[1][1].name}: point data.path at one of them")
    return inner[0] if inner else None


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """How Python 3 writes bytes in a protocol-2 pickle (``_codecs.encode(text, 'latin1')``); nothing else allowed."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _cifar_globals() -> dict[tuple[str, str], object]:
    """The only globals CIFAR's pickles name: numpy's array and dtype reconstruction (numpy 1 and 2 module names),
    and the latin-1 bytes of protocol-2 pickles written by Python 3."""
    reconstruct = np.zeros(1, np.uint8).__reduce__()[0]
    frombuffer = np.zeros(1, np.uint8).__reduce_ex__(5)[0]  # protocol-5 pickles of contiguous arrays
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                              ("_codecs", "encode"): _latin1_bytes}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR's files: plain containers (dicts, lists, bytes, str, ints) and numpy arrays only.

    A pickle runs code through the globals it names; every global other than numpy's array and dtype
    reconstruction is refused, so a file that is not CIFAR data cannot execute anything while loading.
    """

    def find_class(self, module: str, name: str):
        obj = _cifar_globals().get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: CIFAR files hold only arrays, lists, "
                                         "bytes, strings and numbers")
        return obj


def load_cifar_pickle(path: Path) -> dict[bytes, object]:
    """One CIFAR file: the pickled dict with bytes keys (``encoding='bytes'``, as the format's Python 2 pickles need)."""
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{path}: missing; {CIFAR_HELP}") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is not CIFAR data
        raise DataError(f"{path}: not a CIFAR python pickle ({type(e).__name__}: {e}); extract the archive again "
                        f"({CIFAR_HELP})") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(d).__name__}; {CIFAR_HELP}")
    return {k.encode() if isinstance(k, str) else k: v for k, v in d.items()}


def _cifar_images(d: dict, path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 32, 32, 3], labels int64 [N]) of one loaded CIFAR batch, checked."""
    if b"data" not in d or label_key not in d:
        raise DataError(f"{path}: no {b'data'!r} and {label_key!r} entries (keys: {sorted(map(repr, d))}); "
                        f"is this the right data set? {CIFAR_HELP}")
    data, labels = d[b"data"], d[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: b'data' must be a uint8 array [N, 3072] (32 x 32 RGB planes), got {what}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: {label_key!r} must be a list of integer labels") from None
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but {labels.size} labels in {label_key!r}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels must be in 0..{num_classes - 1} (the meta file names {num_classes} classes), "
                        f"found {labels.min()}..{labels.max()}")
    # each row is 1024 red, then 1024 green, then 1024 blue values, row-major over the 32 x 32 image
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _cifar_class_names(meta: dict, path: Path, key: bytes) -> tuple[str, ...]:
    """Folder names that sort in label order: ``03_cat`` (two digits at least), from the meta file's names."""
    names = meta.get(key)
    if not isinstance(names, list) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{path}: no list of class names under {key!r}; {CIFAR_HELP}")
    width = max(2, len(str(len(names) - 1)))
    out = []
    for i, n in enumerate(names):
        text = n.decode("utf-8", "replace") if isinstance(n, bytes) else n
        out.append(f"{i:0{width}d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', text).strip('_') or 'class'}")
    return tuple(out)


def _cifar_key(folder: Path, layout: CifarLayout) -> str:
    """Content key of a CIFAR folder: the SHA-256 of its files (about 0.2 s for CIFAR-10)."""
    h = hashlib.sha256(f"{layout.name}/{_CIFAR_FORMAT}".encode())
    for name in layout.files:
        h.update(f"\0{name}\0".encode())
        with open(folder / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _write_pngs(args: tuple[Path, np.ndarray, np.ndarray, int, tuple[str, ...]]) -> int:
    from PIL import Image
    root, images, labels, start, classes = args
    for k, (img, lab) in enumerate(zip(images, labels)):
        Image.fromarray(np.ascontiguousarray(img), "RGB").save(root / classes[lab] / f"{start + k:05d}.png",
                                                                compress_level=1)
    return len(images)


def cifar_folder(path: str | Path, cache_dir: str = "", progress: bool = True) -> tuple[Path, CifarLayout]:
    """The PNG folder (``train/``, ``val/``) of the CIFAR folder at ``path``, materialised on first use.

    The training batches become ``train/`` (file ``{index:05d}.png``, index over the batches in order), the
    test batch ``val/``. The cache folder is named by a hash of the files' content: another CIFAR folder, or
    changed files, get their own. The files are user data read with a restricted unpickler (``_CifarUnpickler``).
    """
    found = cifar_layout(path)
    if found is None:
        raise DataError(f"{path}: not a CIFAR folder; {CIFAR_HELP}")
    layout, folder = found
    missing = [str(folder / f) for f in layout.files if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{folder} looks like {layout.folder} but lacks {', '.join(missing)}; {CIFAR_HELP}")
    final = default_cache_dir(cache_dir) / f"{layout.name}_{_CIFAR_FORMAT}_{_cifar_key(folder, layout)}"
    if (final / ".complete").is_file():
        return final, layout

    def write(tmp: Path) -> dict:
        classes = _cifar_class_names(load_cifar_pickle(folder / layout.meta), folder / layout.meta, layout.names_key)
        parts = {"train": [folder / f for f in layout.train], "val": [folder / layout.test]}
        jobs, counts = [], {}
        for split, files in parts.items():
            batches = [_cifar_images(load_cifar_pickle(f), f, layout.label_key, len(classes)) for f in files]
            images = np.concatenate([b[0] for b in batches])
            labels = np.concatenate([b[1] for b in batches])
            for c in classes:
                (tmp / split / c).mkdir(parents=True, exist_ok=True)
            chunk = 2000
            jobs += [(tmp / split, images[i:i + chunk], labels[i:i + chunk], i, classes)
                     for i in range(0, len(images), chunk)]
            counts[split] = len(images)
        name = "CIFAR-10" if layout.name == "cifar10" else "CIFAR-100"
        _run_writers(_write_pngs, jobs, sum(counts.values()), f"{name} -> PNG folder", progress)
        return {"source": str(folder.resolve()), "images": counts, "classes": list(classes)}

    return _materialise(final, write), layout


# ----------------------------------------------------------------------------- folders

def find_data(path: str = "", cache_dir: str = "") -> DataRoot:
    """Resolve ``data.path``: empty = Fashion-MNIST; a folder with train/ (and val/); a CIFAR folder (materialised
    as PNGs, ``cifar_folder``); or one split."""
    if not path:
        root = fashion_mnist_folder(cache_dir)
        return DataRoot(train=root / "train", val=root / "val", name="fashion-mnist")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data.path {str(p)!r} does not exist; give an ImageNet-style folder "
                        "(ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg, or ROOT/<class>/*.jpg) or a CIFAR "
                        "folder (cifar-10-batches-py or cifar-100-python)")
    if not p.is_dir():
        raise DataError(f"data.path {str(p)!r} is a file, not a folder of class sub-folders")
    if (p / "train").is_dir():
        return DataRoot(train=p / "train", val=(p / "val") if (p / "val").is_dir() else None, name=p.name)
    if cifar_layout(p) is not None:
        root, layout = cifar_folder(p, cache_dir)
        return DataRoot(train=root / "train", val=root / "val", name=layout.name)
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


# ----------------------------------------------------------------------------- split selection

def read_class_subset(path: str | Path) -> tuple[tuple[str, int], ...]:
    """``data.class_subset``: (class folder name, line number) for every line that is not blank or a ``#`` comment."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"data.class_subset {str(p)!r}: no such file; give a text file with one class folder name "
                        "per line (e.g. the 100 WordNet ids of ImageNet-100)")
    try:
        lines = p.read_text().splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not a text file ({e}); list one class folder name per line") from None
    names: list[tuple[str, int]] = []
    first: dict[str, int] = {}
    for n, line in enumerate(lines, 1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if "/" in name or "\\" in name or name in (".", ".."):
            raise DataError(f"{p}, line {n}: {name!r} is not a class folder name (one folder name per line, no paths)")
        if name in first:
            raise DataError(f"{p}, line {n}: class {name!r} is listed twice (first at line {first[name]})")
        first[name] = n
        names.append((name, n))
    if not names:
        raise DataError(f"{p}: the class subset is empty; list one class folder name per line")
    return tuple(names)


def restrict_classes(split: Split, class_subset: str | Path = "") -> Split:
    """``split`` keeping only the classes named in the file ``class_subset`` (empty: unchanged); labels are
    renumbered 0..K-1 in sorted class-name order, so restricting twice by the same file changes nothing."""
    if not class_subset:
        return split
    wanted = read_class_subset(class_subset)
    have = {c: i for i, c in enumerate(split.classes)}
    unknown = [(name, n) for name, n in wanted if name not in have]
    if unknown:
        import difflib
        listing = ", ".join(f"{name!r} (line {n})" for name, n in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        close = difflib.get_close_matches(unknown[0][0], split.classes, n=3)
        raise DataError(f"{class_subset}: {len(unknown)} class(es) that are not class folders of {split.root}: "
                        f"{listing}{more}" + (f" (did you mean {', '.join(close)}?)" if close else "")
                        + f"; it has {len(split.classes)} classes, e.g. {', '.join(split.classes[:3])}")
    classes = tuple(sorted(name for name, _ in wanted))
    new_label = {have[c]: k for k, c in enumerate(classes)}
    samples = tuple((path, new_label[label]) for path, label in split.samples if label in new_label)
    return Split(split.root, classes, samples)


def training_split(data, split: Split | None) -> Split:
    """A loader's training split: ``split`` when the caller scanned one (restricted to ``data.class_subset``, which
    changes nothing when the caller applied it already), else the training split of ``load_splits(data)``."""
    if split is None:
        return load_splits(data)[0]
    return restrict_classes(split, getattr(data, "class_subset", ""))


def refuse_class_subset(data, source: str) -> None:
    """Sources that hold their own class list (a .beton, WebDataset shards) cannot take ``data.class_subset``."""
    if getattr(data, "class_subset", ""):
        from sdmp_fast.config import ConfigError
        raise ConfigError(f"data.class_subset = {data.class_subset!r} cannot be applied to {source}: it holds the "
                          "classes it was written with. Write it from the subset (python -m loaders.write_beton SRC "
                          "OUT.beton --class-subset FILE, or shards of a folder of those classes) and leave "
                          "data.class_subset empty")


def load_splits(data, progress: bool = True) -> tuple[Split, Split | None, str]:
    """The training and validation splits of a data config (fields ``path``, ``cache_dir``, ``skip_corrupt`` and
    optionally ``class_subset``): found (Fashion-MNIST and CIFAR materialised by rank 0 first), scanned,
    restricted to ``class_subset`` and verified once. Returns (train, val or None, data name)."""
    import sys

    from sdmp_fast import dist
    root = dist.main_first(lambda: find_data(data.path, data.cache_dir))
    subset = getattr(data, "class_subset", "")
    splits: list[Split | None] = []
    for part in (root.train, root.val):
        if part is None:
            splits.append(None)
            continue
        split, skipped = scan_folder(part, data.skip_corrupt)
        split = restrict_classes(split, subset)
        split, failed = dist.main_first(lambda s=split: verify_images(s, data.cache_dir, data.skip_corrupt,
                                                                      progress=progress and dist.is_main()))
        if (skipped or failed) and dist.is_main():
            print(f"[data] {part}: skipped {len(skipped)} non-image file(s) and {len(failed)} unreadable image(s) "
                  "(data.skip_corrupt=true)", file=sys.stderr)
        splits.append(split)
    train = splits[0]
    name = root.name + (f" ({len(train.classes)} classes of {Path(subset).name})" if subset else "")
    return train, splits[1], name


def label_fraction(split: Split, fraction: float, seed: int = 0) -> Split:
    """A seeded class-balanced share of ``split``: ``max(1, round(fraction * n_c))`` images of each class c (drawn
    without replacement with numpy's PCG64 from ``seed``), kept in folder order."""
    if not 0 < fraction <= 1:
        raise DataError(f"label fraction {fraction}: must be in (0, 1] (0.01 and 0.1 are SimCLR's 1 % and 10 %)")
    if fraction == 1:
        return split
    labels = split.labels
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    for c in range(len(split.classes)):
        idx = np.flatnonzero(labels == c)
        if len(idx):
            keep.append(rng.choice(idx, size=max(1, int(round(fraction * len(idx)))), replace=False))
    chosen = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
    return Split(split.root, split.classes, tuple(split.samples[i] for i in chosen))


def label_subset(split: Split, path: str | Path) -> Split:
    """The images of ``split`` listed in the file ``path``, one per line: a path relative to the split's root
    (``n01440764/n01440764_10026.JPEG``) or, without a ``/``, a file name (the form of SimCLR's 1 % / 10 %
    ImageNet files). Blank lines and ``#`` comments are ignored; unknown, ambiguous or repeated names are errors."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"label subset {str(p)!r}: no such file; give a text file with one image per line "
                        "(a path relative to the training folder, or a file name)")
    by_rel: dict[str, int] = {}
    by_name: dict[str, list[int]] = {}
    for i, (full, _) in enumerate(split.samples):
        rel = Path(os.path.relpath(full, split.root)).as_posix()
        by_rel[rel] = i
        by_name.setdefault(Path(full).name, []).append(i)
    chosen: dict[int, int] = {}
    for n, line in enumerate(p.read_text().splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if "/" in entry:
            i = by_rel.get(entry[2:] if entry.startswith("./") else entry)
            if i is None:
                raise DataError(f"{p}, line {n}: {entry!r} is not an image of {split.root} (paths are relative to it)")
        else:
            hits = by_name.get(entry, [])
            if not hits:
                raise DataError(f"{p}, line {n}: no image named {entry!r} under {split.root}")
            if len(hits) > 1:
                raise DataError(f"{p}, line {n}: {entry!r} names {len(hits)} images under {split.root}; "
                                "give its path relative to that folder (class/file)")
            i = hits[0]
        if i in chosen:
            raise DataError(f"{p}, line {n}: {entry!r} is listed twice (first at line {chosen[i]})")
        chosen[i] = n
    if not chosen:
        raise DataError(f"{p}: the label subset is empty; list one image per line")
    return Split(split.root, split.classes, tuple(split.samples[i] for i in sorted(chosen)))


def label_record(split: Split, full: Split, how: dict) -> dict:
    """What the labelled subset is, for results files: ``how`` plus image counts (total, per class min / max)."""
    counts = np.bincount(split.labels, minlength=len(split.classes)) if len(split) else np.zeros(len(split.classes))
    return {**how, "images": len(split), "of": len(full), "per_class_min": int(counts.min()),
            "per_class_max": int(counts.max()), "classes_without_labels": int((counts == 0).sum())}


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
