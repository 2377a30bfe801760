"""The official "bigfile" feature layout (artifacts §9.2).

Why: TeachCLIP's released evaluation scripts (and many lab tools around them) read video features
from a directory holding ``feature.bin`` (raw float32, native byte order, row-major N×D, no
header), ``id.txt`` (all ids on one line, single spaces, no trailing newline) and ``shape.txt``
(``"N D"``, no newline). Exporting to it lets our embeddings plug into those tools unchanged.

Unlike the official converter we never drop anything silently: duplicate ids, NaN/inf vectors or a
ragged dimension are errors, and the reader returns rows in the order asked for (the official
``BigFile.read`` returns them in file order, a known trap).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.atomic import publish_dir, tmp_path_for
from pipeline.errors import InputError, MismatchError

FEATURE_FILE = "feature.bin"
ID_FILE = "id.txt"
SHAPE_FILE = "shape.txt"


def write_bigfile(directory: str | Path, ids: Sequence[str], vectors: np.ndarray) -> Path:
    """Write ``vectors`` [N,D] (row i belongs to ``ids[i]``) as a bigfile directory, atomically.

    The directory is assembled under ``<dir>.tmp`` and renamed into place, so a crash never leaves
    a ``feature.bin`` whose ``shape.txt`` disagrees with it.
    """
    directory = Path(directory)
    ids = [str(i) for i in ids]
    data = np.asarray(vectors, dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(f"vectors must be 2-D [N, D], got shape {data.shape}")
    if data.shape[0] != len(ids):
        raise ValueError(f"{len(ids)} ids for {data.shape[0]} vectors")
    seen: set[str] = set()
    for item in ids:
        if not item or any(ch.isspace() for ch in item):
            raise InputError("bigfile ids must be non-empty and contain no whitespace",
                             item_id=item)
        if item in seen:
            raise InputError("duplicate id in bigfile export", item_id=item)
        seen.add(item)
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():
        raise InputError("non-finite vector in bigfile export",
                         item_id=ids[int(np.flatnonzero(bad)[0])])
    tmp = tmp_path_for(directory)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    native = data.astype(data.dtype.newbyteorder("="), copy=False)
    np.ascontiguousarray(native).tofile(tmp / FEATURE_FILE)
    (tmp / ID_FILE).write_text(" ".join(ids), encoding="utf-8")
    (tmp / SHAPE_FILE).write_text(f"{data.shape[0]} {data.shape[1]}", encoding="utf-8")
    publish_dir(tmp, directory)
    return directory


class BigFile:
    """Reader of a bigfile directory: ``ids``, ``shape`` and vectors by id or all at once."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        for name in (FEATURE_FILE, ID_FILE, SHAPE_FILE):
            if not (self.directory / name).is_file():
                raise InputError(f"bigfile directory lacks {name}", file=self.directory)
        shape_text = (self.directory / SHAPE_FILE).read_text(encoding="utf-8").split()
        if len(shape_text) != 2:
            raise InputError(f"shape.txt must hold 'N D', found {' '.join(shape_text)!r}",
                             file=self.directory / SHAPE_FILE)
        self.shape: tuple[int, int] = (int(shape_text[0]), int(shape_text[1]))
        raw = (self.directory / ID_FILE).read_text(encoding="utf-8")
        # The official reader splits on newlines first and falls back to spaces.
        self.ids: list[str] = raw.split("\n") if "\n" in raw.strip() else raw.split()
        self.ids = [i for i in (s.strip() for s in self.ids) if i]
        if len(self.ids) != self.shape[0]:
            raise MismatchError("bigfile id count", self.shape[0], len(self.ids),
                                file=self.directory)
        size = (self.directory / FEATURE_FILE).stat().st_size
        expected = self.shape[0] * self.shape[1] * 4
        if size != expected:
            raise MismatchError("feature.bin size (bytes)", expected, size, file=self.directory)
        self._row = {item: i for i, item in enumerate(self.ids)}

    def read_all(self) -> np.ndarray:
        """Every vector, float32 [N, D], in id.txt order (memory-mapped, then copied)."""
        data = np.fromfile(self.directory / FEATURE_FILE, dtype=np.dtype("=f4"))
        return data.reshape(self.shape)

    def read(self, names: Sequence[str]) -> np.ndarray:
        """Vectors of ``names`` in the order asked for (not file order); unknown ids raise."""
        try:
            rows = [self._row[str(n)] for n in names]
        except KeyError as exc:
            raise InputError("id not in bigfile", file=self.directory,
                             item_id=str(exc.args[0])) from None
        memmap = np.memmap(self.directory / FEATURE_FILE, dtype=np.dtype("=f4"), mode="r",
                           shape=self.shape)
        return np.asarray(memmap[rows], dtype=np.float32)


def native_byte_order() -> str:
    """``little`` or ``big``: what feature.bin uses on this machine (recorded for users)."""
    return sys.byteorder
