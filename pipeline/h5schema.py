"""Opening the project's HDF5 files: one place that checks a file is what its reader expects.

Every HDF5 file the project writes (``frames.h5``, teacher caches, embedding indexes) carries
``schema`` and ``schema_version`` attributes. Readers open through :func:`open_checked`, so a
missing file, a file HDF5 cannot read, another kind of file or another version are each one clear
``Error:`` that names the file, instead of five slightly different checks.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.errors import InputError, MismatchError, OutputLockedError


def plain(value: Any) -> Any:
    """numpy scalars/bytes from h5py attrs -> plain Python values (comparable, JSON-able)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def plain_attrs(obj: h5py.HLObject) -> dict[str, Any]:
    """All attributes of an HDF5 object as plain Python values."""
    return {k: plain(v) for k, v in obj.attrs.items()}


def schema_problem(attrs: dict[str, Any], schema: str, version: int) -> str | None:
    """What is wrong with a file's schema attributes, or None when they match."""
    if attrs.get("schema") != schema:
        return f"schema is {attrs.get('schema')!r}, expected {schema!r}"
    if attrs.get("schema_version") != version:
        return f"schema_version is {attrs.get('schema_version')!r}, expected {version}"
    return None


def open_checked(path: str | Path, *, schema: str, version: int | tuple[int, ...], what: str,
                 fix: str | None = None, **kwargs: Any) -> h5py.File:
    """Open ``path`` read-only and check its schema; InputError/MismatchError naming the file.

    ``what`` names the artifact in messages ("teacher cache", "frames file"), ``version`` is the
    version (or the versions) the reader understands, ``fix`` says how to get a file it does
    understand; ``kwargs`` go to :class:`h5py.File` (e.g. ``rdcc_nbytes``). The caller closes
    the handle.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found", file=path)
    try:
        handle = h5py.File(path, "r", **kwargs)
    except OSError as exc:
        hint = f"; {fix}" if fix else ""
        raise InputError(f"cannot open {what} as HDF5 (truncated or damaged?): {exc}{hint}",
                         file=path) from exc
    attrs = plain_attrs(handle)
    if attrs.get("schema") != schema:
        handle.close()
        raise InputError(f"not a {what} (schema {attrs.get('schema')!r}, expected {schema!r})",
                         file=path)
    versions = (version,) if isinstance(version, int) else tuple(version)
    found = attrs.get("schema_version")
    if found not in versions:
        handle.close()
        expected = versions[0] if len(versions) == 1 else " or ".join(map(str, versions))
        if isinstance(found, int) and found > max(versions):
            fix = "it was written by a newer teachclip: upgrade this installation to read it"
        raise MismatchError(f"{what} schema_version", expected, found, file=path,
                            expected_in="what this teachclip reads", found_in="the file",
                            fix=fix)
    return handle


def is_lock_error(exc: OSError) -> bool:
    """True when HDF5 refused to open a file because another process holds its file lock."""
    number = getattr(exc, "errno", None)
    return number in (errno.EAGAIN, errno.EWOULDBLOCK) or "unable to lock file" in str(exc)


def open_tmp_for_resume(path: str | Path, mode: str = "r+") -> h5py.File | None:
    """Open a writer's tmp file to continue it; None only when HDF5 cannot read it at all.

    Why so careful: a tmp HDF5 will not open because another process holds its file lock is
    someone's live work, and deleting it "because it is broken" destroys that work. A lock error
    is therefore never taken for damage (OutputLockedError), and a file counts as unreadable only
    if it also fails to open without locking. ``HDF5_USE_FILE_LOCKING=TRUE`` overrides
    ``locking=False``, which is why the error is classified first.
    """
    path = Path(path)
    try:
        return h5py.File(path, mode)
    except OSError as exc:
        first = exc
    if not is_lock_error(first):
        try:
            with h5py.File(path, "r", locking=False):
                pass
        except OSError:
            return None  # e.g. killed mid-write: nothing in it can be trusted
    raise OutputLockedError(
        f"{path}: the file is open in another process (HDF5: "
        f"{str(first).splitlines()[0]}); it was left untouched: wait for that process to "
        "finish or close it, then rerun") from None
