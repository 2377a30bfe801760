"""Every results table in the README and docs is the pipeline's file, byte for byte."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _tables():
    spec = importlib.util.spec_from_file_location("docs_tables", REPO / "docs" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_tables"] = module
    spec.loader.exec_module(module)
    return module


tables = _tables()


def test_every_marked_block_equals_its_results_file() -> None:
    problems = [p for page in tables.PAGES for p in tables.splice(REPO / page, check=True)]
    assert problems == []
    marked = sum(len(tables.BLOCK.findall((REPO / page).read_text())) for page in tables.PAGES)
    assert marked >= 3  # the default's table, the ablations and the second draw


def test_a_hand_edited_number_is_caught(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "t.md").write_text("# Results\n\n| a |\n|---|\n| 1.0 |\n")
    page = tmp_path / "README.md"
    page.write_text("x\n<!-- table: docs/results/t.md -->\n| a |\n|---|\n| 1.5 |\n"
                    "<!-- /table -->\n")
    monkeypatch.setattr(tables, "REPO", tmp_path)
    assert tables.splice(page, check=True) == [
        "README.md: the block of docs/results/t.md differs from the file"]
    tables.splice(page, check=False)
    assert "| 1.0 |" in page.read_text() and tables.splice(page, check=True) == []
