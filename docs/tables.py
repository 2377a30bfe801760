"""Copy the pipeline's result tables into docs/results/ and splice them into the README and docs.

Why: a number in the README must come from the pipeline's own files, never be typed in. Each
table lives once under docs/results/ (copied from what `dvc repro` / `bench/ablations.py` wrote)
and every Markdown file shows it between the markers

    <!-- table: docs/results/NAME.md -->
    ...
    <!-- /table -->

`python docs/tables.py` refreshes the copies (from the sources listed in SOURCES, those that
exist) and rewrites every marked block; `python docs/tables.py --check` only verifies that each
block equals its file (tests/test_docs_tables.py runs it, so a hand-edited number fails).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "docs" / "results"
#: docs/results/NAME.md <- the file a pipeline command wrote (relative to the repository).
SOURCES = {
    "default.md": "data/results/results.md",
    "ablations.md": "data/ablations/ablations/results.md",
    "ablations_selection.md": "data/ablations/ablations/selection.md",
    "ablations_control.md": "data/ablations/ablations/control.md",
    "draw1.md": "data/ablations/draw_draw1/results.md",
}
PAGES = ("README.md", "docs/results.md")
BLOCK = re.compile(r"(<!-- table: (docs/results/[\w.-]+\.md) -->\n)(.*?)(<!-- /table -->)",
                   re.DOTALL)


def table_text(path: Path) -> str:
    """A results file without its '# Results' title (the page has its own heading)."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"\A# [^\n]*\n+", "", text)
    return text if text.endswith("\n") else text + "\n"


def refresh_copies() -> list[str]:
    """Copy every existing source into docs/results/; returns the names copied."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    copied = []
    for name, source in SOURCES.items():
        if (REPO / source).is_file():
            shutil.copyfile(REPO / source, RESULTS / name)
            copied.append(name)
    return copied


def splice(page: Path, check: bool) -> list[str]:
    """Rewrite (or, with ``check``, compare) every marked block of ``page``; returns problems."""
    text = page.read_text(encoding="utf-8")
    problems: list[str] = []

    def replace(match: re.Match[str]) -> str:
        source = REPO / match.group(2)
        if not source.is_file():
            problems.append(f"{page.name}: {match.group(2)} does not exist")
            return match.group(0)
        wanted = table_text(source)
        if match.group(3) != wanted:
            problems.append(f"{page.name}: the block of {match.group(2)} differs from the file")
        return match.group(1) + wanted + match.group(4)

    new = BLOCK.sub(replace, text)
    if not check and new != text:
        page.write_text(new, encoding="utf-8")
    return problems if check else [p for p in problems if "does not exist" in p]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="verify only; exit 1 on a mismatch")
    args = parser.parse_args(argv)
    if not args.check:
        copied = refresh_copies()
        print(f"copied {', '.join(copied) or 'nothing'} into {RESULTS.relative_to(REPO)}")
    problems = [p for page in PAGES for p in splice(REPO / page, args.check)]
    for problem in problems:
        print(f"Error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
