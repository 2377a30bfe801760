"""Error types that carry enough context (file, line, id) for a user to fix their input."""

from __future__ import annotations

from pathlib import Path


def _restore(cls: type, args: tuple, state: dict) -> Exception:
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc


class TeachclipError(Exception):
    """Base class: the CLI turns any of these into a one-line message and exit code 1.

    Picklable whatever the subclass's constructor (an error raised in a DataLoader worker must
    reach the main process unchanged).
    """

    def __reduce__(self) -> tuple:
        return _restore, (type(self), self.args, dict(self.__dict__))


class InputError(TeachclipError):
    """Bad user input: names the file, the line (1-based) and the id that are wrong.

    Why a dedicated type: the standards demand that bad input is reported with enough context to
    fix it without reading code, and tests assert on these fields rather than on message wording.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        item_id: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.item_id = item_id
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        ident = f"id {self.item_id!r}: " if self.item_id is not None else ""
        return f"{where}{ident}{self.message}"


class MismatchError(TeachclipError):
    """Two artifacts disagree (e.g. a teacher cache built for other frames): names both values.

    ``expected_in`` / ``found_in`` say where each value comes from (a file, "this run's
    settings"), and ``fix`` what to do about it: two bare 64-character digests tell a user
    nothing about which file to replace.
    """

    def __init__(
        self, what: str, expected: object, found: object, *, file: str | Path | None = None,
        expected_in: str | Path | None = None, found_in: str | Path | None = None,
        fix: str | None = None,
    ) -> None:
        self.what, self.expected, self.found = what, expected, found
        self.file = str(file) if file is not None else None
        self.fix = fix
        prefix = f"{self.file}: " if self.file else ""
        left = f"{expected!r} in {expected_in}" if expected_in is not None else (
            f"expected {expected!r}")
        right = f"{found!r} in {found_in}" if found_in is not None else f"found {found!r}"
        message = f"{prefix}{what} mismatch: {left}, {right}"
        super().__init__(message + (f"; {fix}" if fix else ""))


class OutputLockedError(TeachclipError):
    """Another run is writing the same output (it holds the output's lock file)."""


class WriteFailedError(TeachclipError):
    """Writing an output failed (disk full, I/O error); says whether the tmp was kept."""

    def __init__(self, message: str, *, file: str | Path, kept: bool) -> None:
        self.file, self.kept = str(file), kept
        super().__init__(f"{self.file}: {message}")


class TeachclipWarning(UserWarning):
    """Something the user must know about a run that still succeeds; the CLI prints it as one
    ``Warning:`` line (no source location: the cause is in the data, not in the code)."""


class DataIntegrityError(TeachclipError):
    """Stored data is damaged (a chunk fails its checksum, a digest differs) or holds NaN/inf."""


class UncheckedFileWarning(TeachclipWarning):
    """A file was written before per-chunk checksums existed: damage to it would go unnoticed."""
