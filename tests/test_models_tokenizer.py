"""CLIP BPE tokenizer: known OpenAI ids, truncation/padding rules, HF interop of saved files."""

from __future__ import annotations

import html
import json
from pathlib import Path
from unittest import mock

import pytest
import regex
import torch

from pipeline.models.tokenizer import ASSET, ClipTokenizer, clean_text


@pytest.fixture(scope="module")
def tok() -> ClipTokenizer:
    return ClipTokenizer.default()


def test_vocab_and_specials(tok: ClipTokenizer) -> None:
    assert tok.vocab_size == 49408
    assert (tok.sot_id, tok.eot_id) == (49406, 49407)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a photo of a cat", [49406, 320, 1125, 539, 320, 2368, 49407]),
        ("hello world", [49406, 3306, 1002, 49407]),
        ("  Hello\tWORLD  ", [49406, 3306, 1002, 49407]),  # lower-case + whitespace cleanup
    ],
)
def test_known_ids(tok: ClipTokenizer, text: str, expected: list[int]) -> None:
    ids, mask = tok.encode([text], max_words=12)
    assert ids[0, : len(expected)].tolist() == expected
    assert ids[0, len(expected) :].eq(0).all()
    assert mask[0].tolist() == [1] * len(expected) + [0] * (12 - len(expected))
    assert ids.dtype == torch.int64 and mask.dtype == torch.int64


def test_truncation_keeps_eot_last(tok: ClipTokenizer) -> None:
    ids, mask = tok.encode(["a photo of a cat", "hello world"], max_words=4)
    assert ids.tolist() == [[49406, 320, 1125, 49407], [49406, 3306, 1002, 49407]]
    assert mask.sum().item() == 8
    assert ids.argmax(-1).tolist() == [3, 3]  # sentence position = EOT


def test_empty_text_and_bad_length(tok: ClipTokenizer) -> None:
    ids, mask = tok.encode([""], max_words=3)
    assert ids.tolist() == [[49406, 49407, 0]] and mask.tolist() == [[1, 1, 0]]
    with pytest.raises(ValueError):
        tok.encode(["x"], max_words=1)


def test_saved_files_roundtrip_and_match_transformers(tok: ClipTokenizer, tmp_path: Path) -> None:
    """Our vocab.json/merges.txt are read back identically, and HF's CLIPTokenizer agrees."""
    tok.save_dir(tmp_path)
    again = ClipTokenizer.from_dir(tmp_path)
    texts = ["a man is playing a guitar on stage", "two dogs run, jump & play!", "zebra's 3 cars"]
    assert torch.equal(again.encode(texts, 16)[0], tok.encode(texts, 16)[0])
    from transformers import CLIPTokenizer

    hf = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    for text in texts:
        assert hf(text)["input_ids"] == [49406, *tok.tokenize(text), 49407]


OFFICIAL_IDS = Path(__file__).parent / "data" / "official_tokenizer.json"


def _official_cases() -> list[dict]:
    return json.loads(OFFICIAL_IDS.read_text(encoding="utf-8"))["cases"]


def test_official_ids_for_tricky_captions(tok: ClipTokenizer) -> None:
    """Every caption (curly quotes, entities, ligatures, full-width, mojibake, ...) gets exactly
    the ids of the official tokenizer (tests/data/official_tokenizer.json says where from)."""
    cases = _official_cases()
    assert len(cases) >= 70
    wrong = [c["text"] for c in cases if tok.tokenize(c["text"]) != c["ids"]]
    assert wrong == []


def test_ftfy_step_is_what_makes_them_agree(tok: ClipTokenizer) -> None:
    """The issue's example, and proof the fixture is not trivially passed: without ftfy's
    fix_text, many of the official ids would not be reproduced."""
    assert tok.tokenize("it\u2019s a man\u2019s world") == [585, 568, 320, 786, 568, 1002]
    assert tok.tokenize("it&#8217;s a man&#8217;s world") == [585, 568, 320, 786, 568, 1002]
    assert clean_text("the \ufb01rst \uff21") == "the first a"

    def no_ftfy(text: str) -> str:
        text = html.unescape(html.unescape(text)).strip()
        return regex.sub(r"\s+", " ", text).strip().lower()

    with mock.patch("pipeline.models.tokenizer.clean_text", no_ftfy):
        fresh = ClipTokenizer.from_merges_file(ASSET)
        differ = sum(fresh.tokenize(c["text"]) != c["ids"] for c in _official_cases())
    assert differ >= 15
