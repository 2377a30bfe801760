"""Reading whole ``sim`` rows straight from the file: one ``preadv`` per row at its byte offset.

Why: a training step needs B random caption rows of the float16 caption × video matrix (B = 120:
120 rows × 18 KB at MSR-VTT-9k size). Through h5py each row is a ``read_direct`` call whose
selection and dataspace bookkeeping cost ~100 µs, 12.7 % of a 120 ms step in total
(``bench/cache_read.py``); the bytes themselves are a few µs to copy from the page cache. ``sim``
chunks are stored unfiltered (or with only the fletcher32 checksum, which appends 4 bytes and
leaves the data as is), so each row is a contiguous run of bytes at a fixed file offset: the
chunk table (read once per process from HDF5) gives those offsets and the OS does the rest.
Rows adjacent on disk are read by one call. Before reading, every row of the batch is announced
with ``posix_fadvise(WILLNEED)``, so with a cold page cache the disk gets all of them at once
instead of one after another (measured: 13.9 → 3.4 ms per batch of 120 cold rows; no cost
warm). The page cache is shared by every DataLoader worker, so nothing is copied per worker
(unlike ``load_all``).

Where this does not apply (a compression or shuffle filter, a chunk narrower than a row, a
non-native dtype, a chunk not allocated, a virtual source that cannot be opened),
:meth:`DirectRows.open` returns None and the caller reads through h5py. What this path skips:
HDF5's fletcher32 verification on each read (the checksums are verified when the writer
finalises and by ``teachclip cache verify``, which read through HDF5; a training read trusts
them). It is therefore opt-in: ``TEACHCLIP_CACHE_READER=direct``; the default reads through
HDF5, checksum verified.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.errors import InputError

_RAW_FILTERS = {int(h5py.h5z.FILTER_FLETCHER32)}


def direct_reading_enabled() -> bool:
    """True only when ``TEACHCLIP_CACHE_READER=direct`` asks for it.

    Why opt-in: the direct path skips HDF5's fletcher32 check on each read, and a damaged chunk
    must fail the read that meets it (docs/checks.md). ``student train`` re-checks every cache
    whole before its first step, so opting in is safe against damage present at start.
    """
    return os.environ.get("TEACHCLIP_CACHE_READER", "h5py").strip().lower() == "direct"


def _raw_layout(ds: h5py.Dataset) -> bool:
    """True if every chunk of ``ds`` holds whole rows of native bytes at a file offset."""
    if ds.ndim != 2 or ds.chunks is None or ds.chunks[1] != ds.shape[1]:
        return False
    if not ds.dtype.isnative:
        return False
    plist = ds.id.get_create_plist()
    filters = {int(plist.get_filter(i)[0]) for i in range(plist.get_nfilters())}
    return filters <= _RAW_FILTERS


def _chunk_table(ds: h5py.Dataset) -> list[tuple[int, int]]:
    """(first row, byte offset) of every allocated chunk of ``ds``."""
    table: list[tuple[int, int]] = []

    def add(info: Any) -> None:
        table.append((int(info.chunk_offset[0]), int(info.byte_offset)))

    if hasattr(ds.id, "chunk_iter"):
        ds.id.chunk_iter(add)
    else:  # h5py < 3.8
        for i in range(ds.id.get_num_chunks()):
            add(ds.id.get_chunk_info(i))
    return table


def _fill(ds: h5py.Dataset, file_index: int, rows: range, row_file: np.ndarray,
          row_offset: np.ndarray) -> None:
    """Set the file and byte offset of ``rows`` (allocated chunks of ``ds`` only)."""
    rows_per_chunk = int(ds.chunks[0])
    row_bytes = ds.shape[1] * ds.dtype.itemsize
    for first, offset in _chunk_table(ds):
        lo, hi = max(first, rows.start), min(first + rows_per_chunk, ds.shape[0], rows.stop)
        if lo < hi:
            row_file[lo:hi] = file_index
            row_offset[lo:hi] = offset + (np.arange(lo, hi) - first) * row_bytes


@dataclass
class DirectRows:
    """Row → (file, byte offset) for a 2-D dataset whose rows are raw bytes on disk.

    Picklable: file descriptors are opened lazily in the process that reads and dropped on
    pickling (DataLoader workers open their own).
    """

    paths: list[Path]
    row_file: np.ndarray  # int32 [n_rows]: index into ``paths``
    row_offset: np.ndarray  # int64 [n_rows]: byte offset of the row in that file
    n_cols: int
    dtype: np.dtype

    def __post_init__(self) -> None:
        self._fds: list[int] = []
        self._pid: int | None = None

    @classmethod
    def open(cls, ds: h5py.Dataset, file_path: str | Path) -> DirectRows | None:
        """The direct reader of ``ds`` (file ``file_path``), or None to read through h5py."""
        file_path = Path(file_path)
        n_rows, n_cols = ds.shape
        row_file = np.full(n_rows, -1, dtype=np.int32)
        row_offset = np.zeros(n_rows, dtype=np.int64)
        paths: list[Path] = []
        try:
            if ds.is_virtual:
                for vmap in ds.virtual_sources():
                    source = Path(vmap.file_name)
                    if not source.is_absolute():
                        source = file_path.parent / source
                    if source not in paths:
                        paths.append(source)
                    start, stop = _row_bounds(vmap)
                    with h5py.File(source, "r") as handle:
                        src = handle[vmap.dset_name]
                        if src.shape != ds.shape or not _raw_layout(src):
                            return None
                        _fill(src, paths.index(source), range(start, stop), row_file,
                              row_offset)
            else:
                if not _raw_layout(ds):
                    return None
                paths.append(file_path)
                _fill(ds, 0, range(n_rows), row_file, row_offset)
        except (OSError, KeyError, ValueError):
            return None
        if (row_file < 0).any():
            return None  # a chunk never written: h5py returns its fill value
        return cls(paths, row_file, row_offset, int(n_cols), np.dtype(ds.dtype))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fds"], state["_pid"] = [], None
        return state

    def _handles(self) -> list[int]:
        if self._pid != os.getpid():
            self._fds = []
            for path in self.paths:
                fd = os.open(path, os.O_RDONLY)
                if hasattr(os, "posix_fadvise"):  # random rows: no readahead past a row
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                self._fds.append(fd)
            self._pid = os.getpid()
        return self._fds

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (sorted, unique) as an array [len(rows), n_cols]."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.n_cols), dtype=self.dtype)
        if len(rows) == 0:
            return out
        fds = self._handles()
        row_bytes = self.n_cols * self.dtype.itemsize
        files, offsets = self.row_file[rows], self.row_offset[rows]
        # Runs of rows that follow each other on disk: one read each.
        breaks = np.flatnonzero((np.diff(offsets) != row_bytes) | (np.diff(files) != 0)) + 1
        flat = out.reshape(-1).view(np.uint8)
        runs = list(zip([0, *breaks.tolist()], [*breaks.tolist(), len(rows)], strict=True))
        if hasattr(os, "posix_fadvise"):  # queue every read at once (cold cache: 4× faster)
            for lo, hi in runs:
                os.posix_fadvise(fds[int(files[lo])], int(offsets[lo]), (hi - lo) * row_bytes,
                                 os.POSIX_FADV_WILLNEED)
        for lo, hi in runs:
            want = (hi - lo) * row_bytes
            got = os.preadv(fds[int(files[lo])], [flat[lo * row_bytes:hi * row_bytes]],
                            int(offsets[lo]))
            if got != want:
                raise InputError(
                    f"teacher cache ends inside row {int(rows[lo])} (byte {int(offsets[lo])}: "
                    f"{got} of {want} bytes read): the file is truncated, e.g. an unfinished "
                    "copy; check it with `teachclip cache verify` and copy it again",
                    file=self.paths[int(files[lo])])
        return out

    def close(self) -> None:
        """Close this process's file descriptors (reopened on the next read)."""
        if self._pid == os.getpid():
            for fd in self._fds:
                os.close(fd)
        self._fds, self._pid = [], None


def _row_bounds(vmap: Any) -> tuple[int, int]:
    """[start, stop) rows a virtual-dataset mapping covers (whole rows, as merge writes them)."""
    start, end = vmap.vspace.get_select_bounds()
    return int(start[0]), int(end[0]) + 1
