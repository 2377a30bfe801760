"""CLIP byte-level BPE tokenizer, built offline from OpenAI's merges file (method §5 "Text").

Why our own implementation instead of ``transformers.CLIPTokenizer``: no model hub access, and the
algorithm is ~60 lines (OpenAI ``simple_tokenizer``), so we avoid generating and caching
vocab.json/merges.txt just to feed HF. ``from_dir`` still reads HF's files when a user has them.

Text cleaning is the official one (TeachCLIP ``modules/tokenization_clip.py``, same as OpenAI CLIP):
``ftfy.fix_text`` (curly quotes → straight, ligatures and full-width letters → ASCII, decomposed
accents composed, mojibake repaired), then ``html.unescape`` twice, whitespace collapse, strip,
lower-case. Without the ftfy step about one real caption in ten gets different ids ("it’s" would
not split into ``it`` + ``'s``), so ``ftfy`` is a hard dependency; ``tests/data/
official_tokenizer.json`` holds ids produced by the official tokenizer for tricky captions.
"""

from __future__ import annotations

import gzip
import html
import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import regex
import torch

ASSET = Path(__file__).resolve().parent.parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
#: Number of BPE merges in OpenAI's vocabulary (49152 − 256 − 2).
N_MERGES = 49152 - 256 - 2
PAD_ID = 0

_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP reversible byte → printable unicode character table."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def clean_text(text: str) -> str:
    """The official cleaning: ``ftfy.fix_text``, HTML-unescape twice, collapse whitespace, strip,
    lower-case (the order matters: ftfy first, as the official ``basic_clean``)."""
    # Imported here rather than at the top so the module's import block stays as it is while the
    # package layout is being restructured; Python caches the module after the first call.
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


def _pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return {(a, b) for a, b in zip(word[:-1], word[1:], strict=True)}


class ClipTokenizer:
    """Byte-level BPE with CLIP's specials at the top ids (SOT 49406, EOT 49407 for OpenAI)."""

    def __init__(
        self, merges: Sequence[tuple[str, str]], vocab: dict[str, int] | None = None
    ) -> None:
        self.byte_encoder = bytes_to_unicode()
        if vocab is None:
            tokens = list(self.byte_encoder.values())
            tokens = tokens + [t + "</w>" for t in tokens]
            tokens.extend("".join(m) for m in merges)
            tokens.extend([SOT_TOKEN, EOT_TOKEN])
            vocab = {tok: i for i, tok in enumerate(tokens)}
        self.encoder = vocab
        self.bpe_ranks = {tuple(m): i for i, m in enumerate(merges)}
        self.sot_id = vocab[SOT_TOKEN]
        self.eot_id = vocab[EOT_TOKEN]
        self._cache: dict[str, str] = {SOT_TOKEN: SOT_TOKEN, EOT_TOKEN: EOT_TOKEN}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    @classmethod
    def default(cls) -> ClipTokenizer:
        """The OpenAI CLIP vocabulary from the shipped merges file (49,408 ids)."""
        return _default_tokenizer()

    @classmethod
    def from_merges_file(cls, path: str | Path) -> ClipTokenizer:
        """OpenAI ``bpe_simple_vocab_16e6.txt.gz`` layout: header line, then merges."""
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
        return cls(merges)  # type: ignore[arg-type]

    @classmethod
    def from_dir(cls, path: str | Path) -> ClipTokenizer:
        """A Hugging Face tokenizer directory (``vocab.json`` + ``merges.txt``)."""
        path = Path(path)
        vocab = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
        lines = (path / "merges.txt").read_text(encoding="utf-8").split("\n")
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]
        merges = [tuple(line.split()) for line in lines if line.strip()]
        return cls(merges, vocab)  # type: ignore[arg-type]

    def save_dir(self, path: str | Path) -> None:
        """Write ``vocab.json`` + ``merges.txt`` (what ``transformers.CLIPTokenizer`` reads)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "vocab.json").write_text(json.dumps(self.encoder), encoding="utf-8")
        merges = sorted(self.bpe_ranks, key=self.bpe_ranks.__getitem__)
        body = "\n".join(" ".join(m) for m in merges)
        (path / "merges.txt").write_text("#version: 0.2\n" + body + "\n", encoding="utf-8")

    def _bpe(self, token: str) -> str:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = _pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            merged: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        result = " ".join(word)
        self._cache[token] = result
        return result

    def tokenize(self, text: str) -> list[int]:
        """BPE ids of ``text`` without SOT/EOT."""
        ids: list[int] = []
        for piece in regex.findall(_PATTERN, clean_text(text)):
            piece = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(piece).split(" "))
        return ids

    def encode(self, texts: Sequence[str], max_words: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``[SOT] + ≤ L−2 ids + [EOT]`` padded with 0 → (ids int64 [N,L], mask int64 [N,L]).

        Truncation keeps the first L−2 BPE ids and always ends with EOT, so the sentence position
        ``ids.argmax(-1)`` (EOT is the largest id) is valid for every row.
        """
        if max_words < 2:
            raise ValueError(f"max_words must be ≥ 2 (room for SOT and EOT), got {max_words}")
        if isinstance(texts, str):
            raise TypeError("encode expects a sequence of strings, not one string")
        ids = torch.full((len(texts), max_words), PAD_ID, dtype=torch.int64)
        mask = torch.zeros((len(texts), max_words), dtype=torch.int64)
        for row, text in enumerate(texts):
            seq = [self.sot_id, *self.tokenize(text)[: max_words - 2], self.eot_id]
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.int64)
            mask[row, : len(seq)] = 1
        return ids, mask


@lru_cache(maxsize=1)
def _default_tokenizer() -> ClipTokenizer:
    return ClipTokenizer.from_merges_file(ASSET)
