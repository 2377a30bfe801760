"""Crash-safe output: write under ``<name>.tmp`` and ``os.replace`` at the end.

A killed stage therefore never leaves a half-written file under the real name (DVC would hash
it), and resumable stages keep their progress inside the tmp file and continue from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def tmp_path_for(final: str | Path) -> Path:
    """The temporary name used while ``final`` is being written (same directory => same fs)."""
    final = Path(final)
    return final.with_name(final.name + ".tmp")


@contextmanager
def atomic_output(final: str | Path, *, keep_tmp_on_error: bool = False) -> Iterator[Path]:
    """Yield a tmp path; on success move it onto ``final`` atomically.

    ``keep_tmp_on_error`` leaves the partial tmp file in place for resumable writers; otherwise
    a failed write removes it so that nothing stale is picked up later.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(final)
    try:
        yield tmp
    except BaseException:
        if not keep_tmp_on_error and tmp.exists():
            if tmp.is_dir():
                            shutil.rmtree(tmp)
            else:
                tmp.unlink()
        raise
    os.replace(tmp, final)


def write_bytes_atomic(final: str | Path, data: bytes) -> None:
    """Write a small file atomically."""
    with atomic_output(final) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(final: str | Path, text: str) -> None:
    """Write a small UTF-8 text file atomically."""
    write_bytes_atomic(final, text.encode("utf-8"))


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (used for checkpoint and artifact provenance)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def publish_dir(work: str | Path, out: str | Path) -> None:
    """Move a finished work directory onto ``out``, replacing an older result.

    The old result is first renamed aside, so at every instant ``out`` is either the complete old
    or the complete new directory (never a mix), then removed.
    """
    work, out = Path(work), Path(out)
    if out.exists():
        old = out.with_name(out.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
        os.replace(work, out)
        shutil.rmtree(old)
    else:
        os.replace(work, out)


#: Every stage directory's description of what it holds (rank 0 writes it last, before publish).
SUMMARY_FILE = "summary.json"


def write_json_atomic(final: str | Path, data: Any) -> None:
    """Pretty, key-sorted JSON (values JSON cannot hold become strings), written atomically."""
    write_text_atomic(final, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def sha256_tree(path: str | Path) -> str:
    """sha256 of a file, or of a directory as (relative path, file sha256) pairs in sorted order
    (so a Hugging Face weights directory has one digest, independent of file timestamps)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()
