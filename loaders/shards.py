"""WebDataset shards of an ImageNet-style folder, for data sets that live in tar files, and their manifest.

    python -m loaders.shards SRC OUT [--per-shard 5000] [--split train] [--overwrite]

writes ``OUT/<split>/shard-000000.tar`` ... with one DALI index file per tar (``.idx``, made by DALI's
``wds2idx``) and ``OUT/<split>/manifest.json`` (classes, sample count, shards). Sample ``i`` of the
scanned folder (the order of ``sdmp_fast.data.folders.scan_folder``) is stored under the key ``%09d`` with three
members: ``.img`` (the original encoded bytes: DALI's decoder reads the format from the content),
``.cls`` (the class id) and ``.idx`` (``i``), both little-endian int32, so a loader knows each sample's
index and label without the folder. Every image is decoded once first (``verify_images``), so no
unreadable file is sharded. The split is written into ``<split>.partial`` and renamed when complete:
an interrupted run leaves no directory that looks finished.

With ``data.format: webdataset`` the ``dali`` loader reads ``data.path`` = OUT (see ``loaders/dali.py``).
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np

from sdmp_fast.data.folders import DataError, scan_folder, verify_images
from sdmp_fast.schema import HelpFormatter

MANIFEST = "manifest.json"
EXTS = ("img", "cls", "idx")


def read_manifest(split_dir: str | Path) -> dict:
    """The manifest of one written split, with absolute tar/index paths; errors say what to run."""
    d = Path(split_dir)
    f = d / MANIFEST
    if not f.is_file():
        hint = " (an interrupted write: run the writer again)" if Path(str(d) + ".partial").exists() else ""
        raise DataError(f"{d}: no {MANIFEST}{hint}; write shards with `python -m loaders.shards SRC {d.parent}`")
    m = json.loads(f.read_text())
    m["tars"] = [str(d / s["tar"]) for s in m["shards"]]
    m["indices"] = [str(d / s["index"]) for s in m["shards"]]
    missing = [p for p in m["tars"] + m["indices"] if not Path(p).is_file()]
    if missing:
        raise DataError(f"{d}: {len(missing)} file(s) named in {MANIFEST} are missing, e.g. {missing[0]}")
    return m


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(src: str | Path, out: str | Path, split: str = "train", per_shard: int = 5000,
                 overwrite: bool = False, cache_dir: str = "", progress: bool = True) -> Path:
    """Write ``src`` (an ImageNet-style split folder) as WebDataset shards in ``out/split``; returns that folder."""
    from wds2idx import IndexCreator  # ships with nvidia-dali (its wds2idx tool)
    from tqdm import tqdm
    if per_shard < 1:
        raise DataError(f"--per-shard {per_shard}: must be >= 1")
    final = Path(out) / split
    if final.exists():
        if not overwrite:
            raise DataError(f"{final} already exists; pass --overwrite to replace it (nothing was written)")
    samples, _ = scan_folder(Path(src))
    samples, _ = verify_images(samples, cache_dir, skip_corrupt=False, progress=progress)
    partial = Path(str(final) + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shards = []
    bar = tqdm(total=len(samples), desc=f"shards {split}", unit="img", disable=not progress)
    for s, start in enumerate(range(0, len(samples), per_shard)):
        name = f"shard-{s:06d}"
        ids = range(start, min(start + per_shard, len(samples)))
        with tarfile.open(partial / f"{name}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in ids:
                path, label = samples.samples[i]
                key = f"{i:09d}"
                _add(tar, f"{key}.img", Path(path).read_bytes())
                _add(tar, f"{key}.cls", np.int32(label).tobytes())
                _add(tar, f"{key}.idx", np.int32(i).tobytes())
                bar.update(1)
        with IndexCreator(str(partial / f"{name}.tar"), str(partial / f"{name}.idx"), verbose=False) as creator:
            creator.create_index()
        shards.append({"tar": f"{name}.tar", "index": f"{name}.idx", "count": len(ids)})
    bar.close()
    manifest = {"format": "sdmp_fast-webdataset-v1", "source": str(Path(src).resolve()), "split": split,
                "classes": list(samples.classes), "num_samples": len(samples), "exts": list(EXTS),
                "shards": shards}
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=1))
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    return final


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loaders.shards", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("src", help="ImageNet-style folder: SRC/<class>/*.jpg, or SRC/train and SRC/val")
    p.add_argument("out", help="output root: OUT/<split>/shard-*.tar, *.idx, manifest.json")
    p.add_argument("--per-shard", type=int, default=5000, help="images per tar file")
    p.add_argument("--split", action="append", help="split(s) to write (default: train and val when SRC has them)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output splits")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    src = Path(args.src)
    splits = args.split or ([s for s in ("train", "val") if (src / s).is_dir()] or ["train"])
    try:
        for split in splits:
            folder = src / split if (src / split).is_dir() else src
            done = write_shards(folder, args.out, split, args.per_shard, args.overwrite)
            print(f"[shards] {done}: {read_manifest(done)['num_samples']} images", file=sys.stderr)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
