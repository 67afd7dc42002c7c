"""Which images a run uses: the splits of ``data.path``, class subsets and the labelled fraction.

``load_splits`` (pretraining, the loaders and the evaluation commands) finds the data, scans and verifies
it (rank 0 first) and keeps the classes of ``data.class_subset`` (labels renumbered in sorted name
order). ``label_fraction`` / ``label_subset`` pick the labelled training images of the semi-supervised
evaluations.
"""
from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path

import numpy as np

from sdmp_fast import dist
from sdmp_fast.data.folders import DataError, Split, report_problems, scan_folder, verify_images
from sdmp_fast.data.sources import find_data
from sdmp_fast.schema import ConfigError


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
        listing = ", ".join(f"{name!r} (line {n})" for name, n in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        close = difflib.get_close_matches(unknown[0][0], split.classes, n=3)
        raise DataError(f"{class_subset}: {len(unknown)} class(es) that are not class folders of {split.root}: "
                        f"{listing}{more}" + (f" (did you mean {', '.join(close)}?)" if close else "")
                        + f"; it has {len(split.classes)} classes, e.g. {', '.join(split.classes[:3])}")
    classes = tuple(sorted(name for name, _ in wanted))
    new_label = {have[c]: k for k, c in enumerate(classes)}
    samples = tuple((path, new_label[label]) for path, label in split.samples if label in new_label)
    return Split(split.root, classes, samples, split.skipped)


def training_split(data, split: Split | None) -> Split:
    """A loader's training split: ``split`` when the caller scanned one (restricted to ``data.class_subset``, which
    changes nothing when the caller applied it already), else the training split of ``load_splits(data)``."""
    if split is None:
        return load_splits(data)[0]
    return restrict_classes(split, getattr(data, "class_subset", ""))


def refuse_class_subset(data, source: str) -> None:
    """Sources that hold their own class list (a .beton, WebDataset shards) cannot take ``data.class_subset``."""
    if getattr(data, "class_subset", ""):
        raise ConfigError(f"data.class_subset = {data.class_subset!r} cannot be applied to {source}: it holds the "
                          "classes it was written with. Write it from the subset (python -m loaders.write_beton SRC "
                          "OUT.beton --class-subset FILE, or shards of a folder of those classes) and leave "
                          "data.class_subset empty")


def load_splits(data, progress: bool = True) -> tuple[Split, Split | None, str]:
    """The training and validation splits of a data config (fields ``path``, ``cache_dir``, ``skip_corrupt`` and
    optionally ``class_subset``): found (Fashion-MNIST and CIFAR materialised by rank 0 first), scanned,
    restricted to ``class_subset`` and verified once. Returns (train, val or None, data name)."""
    root = dist.main_first(lambda: find_data(data.path, data.cache_dir))
    subset = getattr(data, "class_subset", "")
    splits: list[Split | None] = []
    problems: list[str] = []  # every problem of both splits, reported at once
    for part in (root.train, root.val):
        if part is None:
            splits.append(None)
            continue
        split, skipped = scan_folder(part, data.skip_corrupt, problems)
        split = restrict_classes(split, subset)
        split, failed = dist.main_first(lambda s=split: verify_images(s, data.cache_dir, data.skip_corrupt,
                                                                      progress=progress and dist.is_main(),
                                                                      problems=problems))
        if data.skip_corrupt and (skipped or failed) and dist.is_main():
            print(f"[data] {part}: skipped {len(skipped)} non-image file(s) and {len(failed)} unreadable image(s) "
                  "(data.skip_corrupt=true)", file=sys.stderr)
        splits.append(split)
    report_problems(problems)
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
    return Split(split.root, split.classes, tuple(split.samples[i] for i in chosen), split.skipped)


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
    return Split(split.root, split.classes, tuple(split.samples[i] for i in sorted(chosen)), split.skipped)


def label_record(split: Split, full: Split, how: dict) -> dict:
    """What the labelled subset is, for results files: ``how`` plus image counts (total, per class min / max)."""
    counts = np.bincount(split.labels, minlength=len(split.classes)) if len(split) else np.zeros(len(split.classes))
    return {**how, "images": len(split), "of": len(full), "per_class_min": int(counts.min()),
            "per_class_max": int(counts.max()), "classes_without_labels": int((counts == 0).sum())}


def labelled_split(train: Split, data) -> tuple[Split, dict | None]:
    """The labelled training images of a ``LabelledData`` config (``data.label_fraction`` or ``data.label_subset``)
    and their record for the results (None when every label is used)."""
    if getattr(data, "label_subset", ""):
        kept = label_subset(train, data.label_subset)
        return kept, label_record(kept, train, {"subset_file": data.label_subset})
    fraction = getattr(data, "label_fraction", 1.0)
    if fraction >= 1:
        return train, None
    kept = label_fraction(train, fraction, data.label_seed)
    return kept, label_record(kept, train, {"fraction": fraction, "seed": data.label_seed})
