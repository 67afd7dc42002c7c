"""Convert one split of an ImageNet-style folder into an FFCV ``.beton``.

    python -m loaders.write_beton SRC OUT.beton [--split train|val] [--overwrite] [--max-resolution 400]
                                  [--write-mode jpg] [--jpeg-quality 90] [--compress-probability 0.5]
                                  [--workers N] [--limit N] [--skip-corrupt] [--class-subset FILE]

SRC is a data set root holding ``train/`` and ``val/`` (``--split`` picks one, train by default) or one
split (``SRC/<class>/*.jpg``). Fields: ``image`` (ffcv's RGBImageField), ``label`` (the class id), ``index``
(the sample's position in the scanned folder) and ``height``/``width`` (the ORIGINAL size, before
``--max-resolution``: the loaders draw crop boxes relative to it). Options keep ffcv's meanings:
``--max-resolution`` caps the longer side (400: 224 px crops of ImageNet images are rarely upsampled, and
the file is about a third of full-resolution JPEGs; larger keeps more detail for larger views at more bytes
to read and decode); ``--write-mode`` jpg / raw / smart / proportion (with ``--compress-probability``).
Every image is decoded once first (cached, as the training entry point does); unreadable images are listed
and fail the conversion unless ``--skip-corrupt``. ``--class-subset FILE`` keeps the classes named in FILE
(one folder name per line; labels renumbered in sorted name order, as ``data.class_subset`` does for
folders). An existing OUT is replaced only with ``--overwrite``. The output is written under a temporary
name and renamed when complete, so an interrupted conversion never leaves a ``.beton`` that looks valid.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from pathlib import Path

import numpy as np

from sdmp_fast.data.folders import DataError, Split, report_problems, scan_folder, verify_images
from sdmp_fast.data.splits import restrict_classes
from sdmp_fast.schema import HelpFormatter

WRITE_MODES = ("jpg", "raw", "smart", "proportion")
SPLITS = ("train", "val")


class _FolderImages:
    """Indexable (image, label, index, height, width) for ffcv's writer; PIL decode, RGB."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        from PIL import Image
        path, label = self.split.samples[i]
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
        return arr, label, i, arr.shape[0], arr.shape[1]


def split_folder(src: str | Path, split: str | None = None) -> Path:
    """The folder of the split to convert: ``SRC/<split>`` (train by default) when SRC holds train/ or val/, else
    SRC itself (one split, where ``--split`` has nothing to choose)."""
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src}: no such folder (expected SRC/train/<class>/*.jpg or SRC/<class>/*.jpg)")
    if any((src / s).is_dir() for s in SPLITS):
        chosen = split or "train"
        if not (src / chosen).is_dir():
            have = ", ".join(s for s in SPLITS if (src / s).is_dir())
            raise DataError(f"{src} has no {chosen}/ split (it has {have})")
        return src / chosen
    if split:
        raise DataError(f"--split {split}: {src} holds no train/ or val/ folder; it is one split, converted as it is "
                        "(leave out --split)")
    return src


@contextlib.contextmanager
def _labelled_writer_bar(desc: str, progress: bool):
    """ffcv's DatasetWriter draws an unlabelled tqdm bar of its own (``ffcv.writer.tqdm``, no option): named
    ``desc`` here (and hidden without ``progress``) for the time of the write."""
    import ffcv.writer
    plain = ffcv.writer.tqdm
    ffcv.writer.tqdm = functools.partial(plain, desc=desc, unit="img", disable=not progress)
    try:
        yield
    finally:
        ffcv.writer.tqdm = plain


def write_beton(src: str | Path, out: str | Path, max_resolution: int = 400, write_mode: str = "jpg",
                jpeg_quality: int = 90, compress_probability: float = 0.5, workers: int = 0, limit: int = 0,
                skip_corrupt: bool = False, cache_dir: str = "", progress: bool = True, class_subset: str = "",
                split: str | None = None, overwrite: bool = False) -> dict:
    """Write the .beton of one split of ``src`` (:func:`split_folder`); returns a summary {images, bytes, seconds,
    images_per_s, skipped, split}. An existing ``out`` is an error unless ``overwrite``."""
    import loaders.ffcv_loader  # noqa: F401 - first: keeps torch's CPU threads as they are when ffcv is imported
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter
    if write_mode not in WRITE_MODES:
        raise DataError(f"--write-mode {write_mode!r}: choose {', '.join(WRITE_MODES)}")
    if not 1 <= jpeg_quality <= 100 or not 0 <= compress_probability <= 1 or max_resolution < 1:
        raise DataError("--jpeg-quality must be in [1, 100], --compress-probability in [0, 1], --max-resolution >= 1")
    out = Path(out)
    if out.suffix != ".beton":
        raise DataError(f"{out}: the output name must end in .beton")
    if out.exists() and not overwrite:
        raise DataError(f"{out} exists; pass --overwrite to replace it, or choose another name (nothing was written)")
    folder = split_folder(src, split)
    problems: list[str] = []  # every kind of bad file, reported at once
    found, stray = scan_folder(folder, skip_corrupt, problems)
    found = restrict_classes(found, class_subset)
    if limit:
        found = Split(found.root, found.classes, found.samples[:limit], found.skipped)
    found, failed = verify_images(found, cache_dir, skip_corrupt, progress=progress, problems=problems)
    report_problems(problems)
    t0 = time.time()
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = {"image": RGBImageField(write_mode=write_mode, max_resolution=max_resolution,
                                     jpeg_quality=jpeg_quality, compress_probability=compress_probability),
              "label": IntField(), "index": IntField(), "height": IntField(), "width": IntField()}
    try:
        writer = DatasetWriter(str(tmp), fields, num_workers=workers or (os.cpu_count() or 1))
        with _labelled_writer_bar(f"writing {out.name}", progress):
            writer.from_indexed_dataset(_FolderImages(found), chunksize=64)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    secs = time.time() - t0
    return {"images": len(found), "classes": len(found.classes), "split": str(folder), "bytes": out.stat().st_size,
            "seconds": round(secs, 2), "images_per_s": round(len(found) / max(secs, 1e-9), 1),
            "skipped": len(stray) + len(failed)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loaders.write_beton", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("src", help="a data set root (SRC/train/<class>/*.jpg, SRC/val/...) or one split "
                               "(SRC/<class>/*.jpg)")
    p.add_argument("out", help="output file, e.g. train.beton")
    p.add_argument("--split", choices=SPLITS, default=None,
                   help="the split of a data set root to convert (default: train; an error for a one-split SRC)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT (refused otherwise)")
    p.add_argument("--max-resolution", type=int, default=400, metavar="PX",
                   help="longer side of the stored images, in pixels (smaller images are kept as they are)")
    p.add_argument("--write-mode", default="jpg", choices=WRITE_MODES,
                   help="how images are stored: jpg (JPEG), raw (decoded pixels), smart (raw when smaller than the "
                        "JPEG), proportion (JPEG with probability --compress-probability)")
    p.add_argument("--jpeg-quality", type=int, default=90, metavar="Q", help="JPEG quality of the stored images, 1-100")
    p.add_argument("--compress-probability", type=float, default=0.5, metavar="P",
                   help="--write-mode proportion: the probability that an image is stored as JPEG")
    p.add_argument("--workers", type=int, default=0, help="writer processes (0 = all cores)")
    p.add_argument("--limit", type=int, default=0, help="only the first N images (a quick subset; 0 = all)")
    p.add_argument("--skip-corrupt", action="store_true", help="drop unreadable images and report the count")
    p.add_argument("--class-subset", default="", metavar="FILE",
                   help="only the classes named in FILE, one folder name per line (labels renumbered in sorted order)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        s = write_beton(a.src, a.out, a.max_resolution, a.write_mode, a.jpeg_quality, a.compress_probability,
                        a.workers, a.limit, a.skip_corrupt, class_subset=a.class_subset, split=a.split,
                        overwrite=a.overwrite)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[beton] {a.out}: {s['images']} images of {s['classes']} classes from {s['split']}, "
          f"{s['bytes'] / 2**20:.1f} MiB in {s['seconds']} s ({s['images_per_s']} images/s); skipped {s['skipped']}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
