"""One lock per output: a second run on the same output stops at once instead of sharing its tmp.

Why a lock of our own: HDF5's file lock is switched off on many shared file systems
(``HDF5_USE_FILE_LOCKING=FALSE``, docs/checks.md recommends it there), covers only HDF5 files (not
training work directories), and when it does trip, its error looks exactly like a damaged file,
so a writer that "restarts unreadable tmp files" would delete a colleague's live work. The lock
here is an ``flock`` on ``<out>.tmp.lock`` (via :mod:`filelock`), independent of HDF5's setting,
released by the kernel when its process dies (no stale locks after a kill), and never waited
for: a second run fails immediately and says who holds the lock.

The lock file stays in place after release, as filelock intends: the lock is the ``flock`` on
its inode, and deleting the path would let a racing process lock a fresh inode while another
still holds the old one (tox-dev/filelock#574). An empty or stale ``.tmp.lock`` file therefore
means nothing by itself; ``*.tmp.lock`` is git-ignored.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from pipeline.atomic import tmp_path_for
from pipeline.errors import InputError, OutputLockedError

LOCK_SUFFIX = ".lock"


def lock_path_for_tmp(tmp: str | Path) -> Path:
    """The lock file guarding a tmp file or work directory: ``<tmp>.lock`` beside it."""
    tmp = Path(tmp)
    return tmp.with_name(tmp.name + LOCK_SUFFIX)


def _holder(lock_file: Path) -> str:
    try:
        text = lock_file.read_text(encoding="utf-8").strip()
    except OSError:
        return ""
    return f" ({text})" if text else ""


class OutputLock:
    """A held lock on one tmp; create with :func:`acquire_tmp_lock`, end with :meth:`release`."""

    def __init__(self, tmp: Path, lock: FileLock) -> None:
        self.tmp = tmp
        self.path = lock_path_for_tmp(tmp)
        self._lock = lock

    def release(self) -> None:
        """Drop the lock (idempotent); the lock file stays (see the module docstring)."""
        if self._lock.is_locked:
            self._lock.release(force=True)


def acquire_tmp_lock(tmp: str | Path) -> OutputLock:
    """Lock ``tmp`` (a writer's ``<out>.tmp``) for this process, or raise OutputLockedError.

    Also the first place that finds out whether the output's directory is writable, so that
    problem becomes an InputError naming the directory instead of a traceback from deep inside.
    """
    tmp = Path(tmp)
    lock_file = lock_path_for_tmp(tmp)
    try:
        tmp.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            reason = "a file is in the way: a part of the path is not a directory"
        raise InputError(f"cannot create the output directory ({reason}); choose an output "
                         "path in a writable directory", file=tmp.parent) from None
    lock = FileLock(str(lock_file), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise OutputLockedError(
            f"{tmp}: another run is writing this output (it holds {lock_file}"
            f"{_holder(lock_file)}); wait for it to finish, or stop it and rerun") from None
    except OSError as exc:
        raise InputError(f"cannot create the lock file ({exc.strerror}); the output directory "
                         "must be writable", file=lock_file) from None
    try:
        lock_file.write_text(f"pid {os.getpid()} on {socket.gethostname()}\n", encoding="utf-8")
    except OSError:
        pass  # the holder description is a courtesy; the kernel lock is what counts
    return OutputLock(tmp, lock)


@contextmanager
def output_lock(final: str | Path, *, enabled: bool = True) -> Iterator[None]:
    """Hold the lock of output ``final`` (file ``<final>.tmp.lock``) for the ``with`` body.

    ``enabled=False`` is for the ranks of a distributed run that write no files (rank 0 holds
    the lock for all of them).
    """
    if not enabled:
        yield
        return
    held = acquire_tmp_lock(tmp_path_for(final))
    try:
        yield
    finally:
        held.release()
