"""Read FFCV ``.beton`` files with numpy and mmap only, so that they are read where ffcv is not installed.

The layout (ffcv 1.0.x, format version 2, little-endian): a header (version u2, field count u2, page
size u4, sample count u8, allocation-table offset u8, C-aligned), one descriptor per field (type id u1,
name 16 bytes, 1024 bytes of arguments, C-aligned), the per-sample metadata table (one C-aligned struct
with one member per field), the data pages, and the allocation table (sample id, offset, size: u8 each).
Field metadata by type id: 0 float (f8), 1 int (i8), 2 RGB image (mode u1 -- 0 jpg, 1 raw --, width u2,
height u2, data offset u8). Variable-size data (the image bytes) lives at the metadata's offset; its size is
the allocation table's entry at that offset.

Used by ``--loader nvjpeg data.beton=PATH``: FFCV's packed sequential storage with GPU decoding.
"""
from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np

from sdmp_fast.data.folders import DataError

VERSION = 2
HEADER = np.dtype([("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"), ("num_samples", "<u8"),
                   ("alloc_table_ptr", "<u8")], align=True)
FIELD_DESC = np.dtype([("type_id", "<u1"), ("name", ("<u1", 16)), ("arguments", ("<u1", (1024,)))], align=True)
ALLOC = np.dtype([("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")])
RGB_META = np.dtype([("mode", "<u1"), ("width", "<u2"), ("height", "<u2"), ("data_ptr", "<u8")])
METADATA_BY_TYPE = {0: np.dtype("<f8"), 1: np.dtype("<i8"), 2: RGB_META}
JPG, RAW = 0, 1


class Beton:
    """A ``.beton`` opened read-only: ``fields`` (name -> type id), ``metadata`` (structured array), image bytes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"data.beton {str(self.path)!r}: no such file "
                            "(write one with python -m loaders.write_beton)")
        file_size = self.path.stat().st_size
        header = np.fromfile(self.path, dtype=HEADER, count=1)
        if len(header) != 1 or int(header[0]["version"]) != VERSION:
            found = int(header[0]["version"]) if len(header) else "none"
            raise DataError(f"{self.path}: not an FFCV .beton of format version {VERSION} (found {found})")
        h = header[0]
        self.num_samples, num_fields = int(h["num_samples"]), int(h["num_fields"])
        alloc_ptr = int(h["alloc_table_ptr"])

        def damaged(what: str) -> DataError:
            return DataError(f"{self.path}: truncated or damaged .beton ({what}; the file has {file_size} bytes); "
                             "write it again with python -m loaders.write_beton")

        if HEADER.itemsize + num_fields * FIELD_DESC.itemsize > file_size or not 0 < alloc_ptr <= file_size:
            raise damaged(f"the header points past the end: {num_fields} fields, allocation table at byte {alloc_ptr}")
        desc = np.fromfile(self.path, dtype=FIELD_DESC, count=num_fields, offset=HEADER.itemsize)
        names = [bytes(d["name"]).split(b"\0", 1)[0].decode("utf-8", "replace") for d in desc]
        types = [int(d["type_id"]) for d in desc]
        unknown = [(n, t) for n, t in zip(names, types) if t not in METADATA_BY_TYPE]
        if unknown:
            raise DataError(f"{self.path}: field(s) {unknown} are of a type this reader does not know "
                            "(it reads float, int and RGB image fields)")
        self.fields = dict(zip(names, types))
        meta_type = np.dtype([(n, METADATA_BY_TYPE[t]) for n, t in zip(names, types)], align=True)
        meta_end = HEADER.itemsize + desc.nbytes + self.num_samples * meta_type.itemsize
        if meta_end > alloc_ptr or (file_size - alloc_ptr) % ALLOC.itemsize:
            raise damaged(f"{self.num_samples} samples of metadata end at byte {meta_end}, the allocation table "
                          f"starts at {alloc_ptr} and holds {file_size - alloc_ptr} bytes")
        self.metadata = np.fromfile(self.path, dtype=meta_type, count=self.num_samples,
                                    offset=HEADER.itemsize + desc.nbytes)
        alloc = np.fromfile(self.path, dtype=ALLOC, offset=alloc_ptr)
        if len(alloc) and int((alloc["ptr"] + alloc["size"]).max()) > alloc_ptr:
            raise damaged("sample data points past the allocation table")
        order = np.argsort(alloc["ptr"])
        self._ptrs, self._sizes = alloc["ptr"][order], alloc["size"][order]
        self._file = open(self.path, "rb")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)

    def __len__(self) -> int:
        return self.num_samples

    def image_field(self) -> str:
        names = [n for n, t in self.fields.items() if t == 2]
        if len(names) != 1:
            raise DataError(f"{self.path}: expected exactly one RGB image field, found {names}")
        return names[0]

    def ints(self, name: str) -> np.ndarray:
        if self.fields.get(name) != 1:
            raise DataError(f"{self.path}: no int field {name!r} (fields: {sorted(self.fields)})")
        return np.asarray(self.metadata[name], dtype=np.int64)

    def image(self, i: int, field: str | None = None) -> tuple[int, int, int, np.ndarray]:
        """(mode, height, width, data) of sample ``i``'s image: a uint8 copy of its JPEG bytes (mode 0) or raw
        HWC pixels (mode 1)."""
        m = self.metadata[field or self.image_field()][i]
        ptr = int(m["data_ptr"])
        k = int(np.searchsorted(self._ptrs, ptr))
        if k >= len(self._ptrs) or int(self._ptrs[k]) != ptr:
            raise DataError(f"{self.path}: sample {i}'s image offset {ptr} is not in the allocation table "
                            "(corrupt file?)")
        size = int(self._sizes[k])
        data = np.frombuffer(self._map, dtype=np.uint8, count=size, offset=ptr).copy()  # the view is dropped here
        return int(m["mode"]), int(m["height"]), int(m["width"]), data

    def close(self) -> None:
        self._map.close()
        self._file.close()
