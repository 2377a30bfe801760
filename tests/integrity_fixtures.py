"""Helpers for the integrity tests: damage real files, run the real CLI, mount a tiny disk."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import h5py

REPO = Path(__file__).resolve().parents[1]


def flip_byte(path: Path, dataset: str, row: int) -> int:
    """Invert one byte in the middle of the stored chunk holding ``row`` of ``dataset`` (the
    bytes on disk, after compression and checksum); returns the chunk's file offset."""
    with h5py.File(path, "r") as handle:
        ds = handle[dataset]
        info = ds.id.get_chunk_info_by_coord((row,) + (0,) * (ds.ndim - 1))
    offset = int(info.byte_offset) + int(info.size) // 2
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))
    return int(info.byte_offset)


def run_cli(args: list[str], *, env: Mapping[str, str] | None = None, timeout: float = 120,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``teachclip ARGS`` in a fresh interpreter (a segfault shows as returncode -11/139)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "stages.cli", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=cwd)


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a helper interpreter that imports the project from this checkout."""
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(extra or {})}


def can_mount() -> bool:
    """True when this process may mount a tmpfs (root with CAP_SYS_ADMIN, e.g. a CI container
    run as root); the real-disk-full tests are skipped otherwise."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    probe = Path(f"/tmp/teachclip-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                          capture_output=True).returncode != 0:
            return False
        subprocess.run(["umount", str(probe)], capture_output=True)
        return True
    except OSError:
        return False
    finally:
        probe.rmdir()


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. ``"6m"``) mounted at ``path`` for the ``with`` body."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def resize_tmpfs(path: Path, size: str) -> None:
    """Grow (or shrink) a mounted tmpfs in place: "free space" without touching its files."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)
