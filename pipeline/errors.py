"""Error types that carry enough context (file, line, id) for a user to fix their input."""

from __future__ import annotations

from pathlib import Path


class TeachclipError(Exception):
    """Base class: the CLI turns any of these into a one-line message and exit code 1."""


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
    """Two artifacts disagree (e.g. a teacher cache built for other frames): names both values."""

    def __init__(
        self, what: str, expected: object, found: object, *, file: str | Path | None = None
    ) -> None:
        self.what, self.expected, self.found = what, expected, found
        self.file = str(file) if file is not None else None
        prefix = f"{self.file}: " if self.file else ""
        super().__init__(f"{prefix}{what} mismatch: expected {expected!r}, found {found!r}")
