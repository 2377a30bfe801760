"""Teacher registry: ``TEACHERS[kind]`` → class, ``build_teacher`` constructs one.

Other teacher modules add their entry here (kind → class); a class's ``kind`` must equal its key.
"""

from __future__ import annotations

from typing import Any

from pipeline.models.clip import ClipTowers
from pipeline.models.teachers.base import Teacher
from pipeline.models.teachers.ts2net import TS2NetTeacher
from pipeline.models.teachers.xclip import XClipTeacher
from pipeline.models.teachers.xpool import XPoolTeacher

TEACHERS: dict[str, type[Teacher]] = {
    "xclip": XClipTeacher,
    "ts2net": TS2NetTeacher,
    "xpool": XPoolTeacher,
}


def build_teacher(
    kind: str, towers: ClipTowers, max_words: int, max_frames: int, **options: Any
) -> Teacher:
    """Construct teacher ``kind`` around ``towers``; unknown kinds name the known ones."""
    try:
        cls = TEACHERS[kind]
    except KeyError:
        raise ValueError(f"unknown teacher kind {kind!r}; known: {sorted(TEACHERS)}") from None
    return cls(towers, max_words, max_frames, **options)
