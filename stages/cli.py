"""Entry point of the ``teachclip`` console script: imports every stage so its commands register.

Each stage module attaches its commands to a group from :mod:`stages.groups` on import.
"""

from __future__ import annotations

from stages.groups import main

# Stage modules register themselves on import (keep this list sorted).
STAGE_MODULES: list[str] = [
    "cache",
    "clip_prepare",
    "cache_show",
    "clip_pretrain",
    "data_import",
    "data_prepare",
    "data_synth",
    "embed",
    "evaluate",
    "frames",
    "index",
    "report",
    "search",
    "student_import",
    "student_train",
    "teacher_import",
    "teacher_score",
    "teacher_train",
]

for _name in STAGE_MODULES:
    __import__(f"stages.{_name}")

__all__ = ["main"]

if __name__ == "__main__":  # pragma: no cover
    main()
