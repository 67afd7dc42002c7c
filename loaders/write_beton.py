"""Convert an ImageNet-style folder (one split) into an FFCV ``.beton``.

    python -m loaders.write_beton SRC_DIR OUT.beton [--max-resolution 400] [--write-mode jpg]
                                  [--jpeg-quality 90] [--compress-probability 0.5] [--workers N]
                                  [--limit N] [--skip-corrupt] [--class-subset FILE]

Fields: ``image`` (ffcv's RGBImageField), ``label`` (the class id), ``index`` (the sample's position in
the scanned folder) and ``height``/``width`` (the ORIGINAL size, before ``--max-resolution``: the loaders
draw crop boxes relative to it). Options keep ffcv's meanings: ``--max-resolution`` caps the longer side
(default 400: 224 px crops of ImageNet images are rarely upsampled, and the file is about a third of
full-resolution JPEGs; larger keeps more detail for larger views at more bytes to read and decode);
``--write-mode`` jpg / raw / smart / proportion (with ``--compress-probability``). Every image is decoded
once first (cached, as the training entry point does); unreadable images are listed and fail the
conversion unless ``--skip-corrupt``. ``--class-subset FILE`` keeps the classes named in FILE (one folder
name per line; labels renumbered in sorted name order, as ``data.class_subset`` does for folders). The output is written under a temporary name and renamed when
complete, so an interrupted conversion never leaves a ``.beton`` that looks valid.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from sdmp_fast.data.folders import DataError, Split, scan_folder, verify_images
from sdmp_fast.data.splits import restrict_classes


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


def write_beton(src: str | Path, out: str | Path, max_resolution: int = 400, write_mode: str = "jpg",
                jpeg_quality: int = 90, compress_probability: float = 0.5, workers: int = 0, limit: int = 0,
                skip_corrupt: bool = False, cache_dir: str = "", progress: bool = True, class_subset: str = "") -> dict:
    """Write the .beton; returns a summary {images, bytes, seconds, images_per_s, skipped}."""
    import loaders.ffcv_loader  # noqa: F401 - first: keeps torch's CPU threads as they are when ffcv is imported
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter
    if write_mode not in ("jpg", "raw", "smart", "proportion"):
        raise DataError(f"--write-mode {write_mode!r}: choose jpg, raw, smart or proportion")
    if not 1 <= jpeg_quality <= 100 or not 0 <= compress_probability <= 1 or max_resolution < 1:
        raise DataError("--jpeg-quality must be in [1, 100], --compress-probability in [0, 1], --max-resolution >= 1")
    out = Path(out)
    if out.suffix != ".beton":
        raise DataError(f"{out}: the output name must end in .beton")
    split, stray = scan_folder(Path(src), skip_corrupt)
    split = restrict_classes(split, class_subset)
    if limit:
        split = Split(split.root, split.classes, split.samples[:limit])
    split, failed = verify_images(split, cache_dir, skip_corrupt, progress=progress)
    t0 = time.time()
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = {"image": RGBImageField(write_mode=write_mode, max_resolution=max_resolution,
                                     jpeg_quality=jpeg_quality, compress_probability=compress_probability),
              "label": IntField(), "index": IntField(), "height": IntField(), "width": IntField()}
    try:
        writer = DatasetWriter(str(tmp), fields, num_workers=workers or (os.cpu_count() or 1))
        writer.from_indexed_dataset(_FolderImages(split), chunksize=64)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    secs = time.time() - t0
    return {"images": len(split), "bytes": out.stat().st_size, "seconds": round(secs, 2),
            "images_per_s": round(len(split) / max(secs, 1e-9), 1), "skipped": len(stray) + len(failed)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="one split: SRC_DIR/<class>/*.jpg")
    p.add_argument("out", help="output file, e.g. train.beton")
    p.add_argument("--max-resolution", type=int, default=400)
    p.add_argument("--write-mode", default="jpg", choices=["jpg", "raw", "smart", "proportion"])
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--compress-probability", type=float, default=0.5)
    p.add_argument("--workers", type=int, default=0, help="writer processes (0 = all cores)")
    p.add_argument("--limit", type=int, default=0, help="only the first N images (a quick subset)")
    p.add_argument("--skip-corrupt", action="store_true", help="drop unreadable images and report the count")
    p.add_argument("--class-subset", default="", metavar="FILE",
                   help="only the classes named in FILE, one folder name per line (labels renumbered in sorted order)")
    a = p.parse_args(argv)
    try:
        s = write_beton(a.src, a.out, a.max_resolution, a.write_mode, a.jpeg_quality, a.compress_probability,
                        a.workers, a.limit, a.skip_corrupt, class_subset=a.class_subset)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[beton] {a.out}: {s['images']} images, {s['bytes'] / 2**20:.1f} MiB in {s['seconds']} s "
          f"({s['images_per_s']} images/s); skipped {s['skipped']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
