"""The data sets this project reads without a download, materialised as image folders; ``find_data``.

Fashion-MNIST (Debian's ``dataset-fashion-mnist``: gzip IDX files) is materialised once, atomically
(temporary folder + rename), as a folder of RGB JPEGs, so every loader decodes real JPEGs from the layout
a user's ImageNet has. Folder names sort in label order, so label ids are kept.

CIFAR-10 / CIFAR-100 (the python versions: ``cifar-10-batches-py`` / ``cifar-100-python``) are found when
``data.path`` points at such a folder and materialised the same way, as lossless PNGs (``train/`` from the
training batches, ``val/`` from the test batch, class folders ``03_cat``), under a key of the files'
content, so every loader and evaluation command reads them unchanged.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdmp_fast.data.folders import DataError, DataRoot, default_cache_dir, materialise, run_writers

FASHION_MNIST_RAW = Path(os.environ.get("SDMP_FASHION_MNIST_RAW", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = ("0_tshirt_top", "1_trouser", "2_pullover", "3_dress", "4_coat",
                         "5_sandal", "6_shirt", "7_sneaker", "8_bag", "9_ankle_boot")
_FMNIST_FOLDER = "fashion_mnist_jpeg_v1"


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
        total = run_writers(_write_jpegs, jobs, sum(len(v[0]) for v in data.values()),
                             "Fashion-MNIST -> JPEG folder", progress)
        return {"images": total}

    return materialise(final, write)


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
    """One CIFAR file: the pickled dict with bytes keys (``encoding='bytes'``, which the format's Python 2 pickles
    need)."""
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
        run_writers(_write_pngs, jobs, sum(counts.values()), f"{name} -> PNG folder", progress)
        return {"source": str(folder.resolve()), "images": counts, "classes": list(classes)}

    return materialise(final, write), layout


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
