"""Writing HDF5 files on a disk that may fill up: a clean error, never a segfault.

Why this exists: when a write fails for lack of space, HDF5 keeps the dirty chunks and metadata it
could not write, every later close fails the same way, and at interpreter exit the half-closed
file is torn down during garbage collection, which segfaults (h5py 3.16 / HDF5 2.0; measured:
``teachclip frames`` exits 139). Two measures keep it clean:

* a *reserve* (ballast) file of :data:`RESERVE_BYTES` beside the tmp, allocated when the writer
  opens and removed on close. When a write fails, the writer deletes the reserve first: HDF5 then
  has room to flush what it holds and close the file properly, so the tmp stays resumable;
* a free-space check before each write (:meth:`DiskGuard.check_space`) stops *before* HDF5 ever
  hits ENOSPC in the common case of a disk that fills gradually.

Writers hold their datasets open for the file's lifetime: a dataset object dropped right after a
write flushes its chunk cache in a destructor, where h5py swallows the error and the data is lost
without a word.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import h5py

from pipeline.errors import WriteFailedError

#: Bytes kept in reserve beside a tmp file: room for HDF5 to flush its chunk caches (1 MiB per
#: open dataset by default) and dirty metadata when the disk is otherwise full.
RESERVE_BYTES = 16 << 20
RESERVE_SUFFIX = ".reserve"
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _errno_of(exc: BaseException) -> int | None:
    """The OS error number of an exception, also when h5py only quotes it in the message."""
    number = getattr(exc, "errno", None)
    if isinstance(number, int):
        return number
    text = str(exc)
    for code in _FULL_ERRNOS + (errno.EIO, errno.EROFS, errno.EACCES):
        if f"errno = {code}," in text or f"[Errno {code}]" in text:
            return code
    return None


def is_disk_full(exc: BaseException) -> bool:
    """True for "no space left on device" and "disk quota exceeded", however h5py wraps them."""
    return _errno_of(exc) in _FULL_ERRNOS or "No space left on device" in str(exc)


def reason_of(exc: BaseException) -> str:
    """A short reason for a failed write: the OS's words and the errno name, else the message."""
    number = _errno_of(exc)
    if number is not None:
        return f"{os.strerror(number).lower()} ({errno.errorcode.get(number, number)})"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def free_bytes(directory: str | Path) -> int:
    """Bytes available to this user in ``directory``'s file system."""
    stats = os.statvfs(directory)
    return int(stats.f_bavail) * int(stats.f_frsize)


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class DiskGuard:
    """The reserve file of one tmp, and the free-space check before each write."""

    def __init__(self, tmp: str | Path, reserve_bytes: int | None = None) -> None:
        self.tmp = Path(tmp)
        self.path = self.tmp.with_name(self.tmp.name + RESERVE_SUFFIX)
        self.reserve_bytes = RESERVE_BYTES if reserve_bytes is None else int(reserve_bytes)
        self._held = False

    def acquire(self) -> None:
        """Allocate the reserve; WriteFailedError (tmp untouched, so kept) when it does not fit."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                if self.reserve_bytes:
                    os.posix_fallocate(fd, 0, self.reserve_bytes)
            finally:
                os.close(fd)
        except OSError as exc:
            self.path.unlink(missing_ok=True)
            if is_disk_full(exc):
                raise WriteFailedError(
                    f"not enough free space to start writing ({_mib(free_bytes(self.tmp.parent))}"
                    f" free; a writer keeps {_mib(self.reserve_bytes)} in reserve so it can always "
                    "close its file cleanly): free space and rerun",
                    file=self.tmp, kept=self.tmp.exists()) from None
            raise WriteFailedError(f"cannot write beside the output: {reason_of(exc)}",
                                   file=self.tmp, kept=self.tmp.exists()) from None
        self._held = True

    def release(self) -> None:
        """Delete the reserve (on close, and first thing after a failed write)."""
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def check_space(self, need_bytes: int, doing: str) -> None:
        """Stop before a write of about ``need_bytes`` that would not fit (nothing written yet)."""
        free = free_bytes(self.tmp.parent)
        need = need_bytes + (1 << 20)  # data plus room for HDF5's metadata
        if free < need:
            raise WriteFailedError(
                f"no space left on device for {doing} ({_mib(free)} free, about "
                f"{_mib(need)} needed); the tmp file is kept with everything finished so "
                "far: free space and rerun the same command to resume",
                file=self.tmp, kept=True)


def close_after_failure(handle: h5py.File | None, guard: DiskGuard | None) -> bool:
    """Close a file whose write just failed; True when it closed cleanly (tmp resumable).

    The reserve goes first so HDF5 has room to write what it still holds; the handle's open
    datasets are closed by h5py's ``File.close`` before the file itself.
    """
    if guard is not None:
        guard.release()
    if handle is None or not handle.id.valid:
        return True
    try:
        handle.flush()
    except (OSError, RuntimeError):
        pass  # close below retries the same writes and reports whether they made it
    try:
        handle.close()
    except (OSError, RuntimeError):
        return False
    return not handle.id.valid
