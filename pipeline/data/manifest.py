"""The normalised dataset manifest every stage reads: videos and captions keyed by id.

Every importer (MSR-VTT, MSVD, VATEX, DiDeMo, ActivityNet, TeachCLIP text files, plain CSV/JSONL)
produces this one shape, so no later stage knows about dataset formats. Everything is keyed by
id and nothing is ever aligned by position (a missing file in the official loaders shifts lists).

On disk: ``<dir>/videos.csv`` (video_id, path, split, start, end) and ``<dir>/captions.csv``
(caption_id, video_id, split, text). ``path`` is absolute or relative to the manifest directory;
``start``/``end`` are seconds or empty (whole video). A caption's split is its video's split.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.atomic import write_bytes_atomic
from pipeline.errors import InputError

VIDEO_COLUMNS = ["video_id", "path", "split", "start", "end"]
CAPTION_COLUMNS = ["caption_id", "video_id", "split", "text"]
SPLITS = ("train", "val", "test")
VIDEOS_FILE = "videos.csv"
CAPTIONS_FILE = "captions.csv"


def _frame_to_csv_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n", float_format="%.6g")
    return buffer.getvalue().encode("utf-8")


@dataclass
class Manifest:
    """Videos and captions of one dataset, all splits, validated on construction."""

    videos: pd.DataFrame
    captions: pd.DataFrame
    root: Path | None = None  # directory relative paths are resolved against

    def __post_init__(self) -> None:
        self.videos = self.videos.reset_index(drop=True)
        self.captions = self.captions.reset_index(drop=True)
        for column in VIDEO_COLUMNS:
            if column not in self.videos.columns:
                if column in ("start", "end"):
                    self.videos[column] = math.nan
                else:
                    raise InputError(f"videos table lacks column {column!r}")
        for column in CAPTION_COLUMNS:
            if column not in self.captions.columns:
                raise InputError(f"captions table lacks column {column!r}")
        self.videos = self.videos[VIDEO_COLUMNS].astype(
            {"video_id": str, "path": str, "split": str, "start": float, "end": float}
        )
        self.captions = self.captions[CAPTION_COLUMNS].astype(
            {"caption_id": str, "video_id": str, "split": str, "text": str}
        )
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self, source: str | Path | None = None) -> None:
        """Raise InputError on duplicate ids, unknown videos, empty captions or bad splits."""
        dup = self.videos["video_id"][self.videos["video_id"].duplicated()]
        if len(dup):
            raise InputError("duplicate video id", file=source, item_id=str(dup.iloc[0]))
        dup = self.captions["caption_id"][self.captions["caption_id"].duplicated()]
        if len(dup):
            raise InputError("duplicate caption id", file=source, item_id=str(dup.iloc[0]))
        bad_split = ~self.videos["split"].isin(SPLITS)
        if bad_split.any():
            row = self.videos[bad_split].iloc[0]
            raise InputError(
                f"split {row['split']!r} is not one of {SPLITS}", file=source,
                item_id=row["video_id"],
            )
        known = set(self.videos["video_id"])
        unknown = ~self.captions["video_id"].isin(known)
        if unknown.any():
            row = self.captions[unknown].iloc[0]
            raise InputError(
                f"caption refers to unknown video {row['video_id']!r}", file=source,
                item_id=row["caption_id"],
            )
        empty = self.captions["text"].str.strip() == ""
        if empty.any():
            raise InputError("empty caption", file=source,
                             item_id=self.captions[empty].iloc[0]["caption_id"])
        split_of = dict(zip(self.videos["video_id"], self.videos["split"], strict=True))
        wrong = self.captions["split"] != self.captions["video_id"].map(split_of)
        if wrong.any():
            row = self.captions[wrong].iloc[0]
            raise InputError(
                f"caption split {row['split']!r} differs from its video's split", file=source,
                item_id=row["caption_id"],
            )

    # ------------------------------------------------------------------ views
    def split(self, name: str) -> Manifest:
        """The sub-manifest of one split (videos and their captions)."""
        if name not in SPLITS:
            raise InputError(f"unknown split {name!r}; expected one of {SPLITS}")
        return Manifest(
            self.videos[self.videos["split"] == name],
            self.captions[self.captions["split"] == name],
            self.root,
        )

    def resolved_paths(self) -> list[Path]:
        """Absolute paths of all videos, in ``videos`` order."""
        out = []
        for raw in self.videos["path"]:
            path = Path(raw)
            if not path.is_absolute() and self.root is not None:
                path = self.root / path
            out.append(path)
        return out

    # ------------------------------------------------------------------ io
    def to_bytes(self) -> tuple[bytes, bytes]:
        """Canonical CSV bytes of (videos, captions): the basis of the digest."""
        return _frame_to_csv_bytes(self.videos), _frame_to_csv_bytes(self.captions)

    def digest(self) -> str:
        """sha256 over the canonical CSV bytes: recorded in every downstream artifact."""
        videos, captions = self.to_bytes()
        h = hashlib.sha256()
        h.update(videos)
        h.update(b"\0")
        h.update(captions)
        return h.hexdigest()

    def save(self, out_dir: str | Path) -> None:
        """Write videos.csv and captions.csv atomically."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        videos, captions = self.to_bytes()
        write_bytes_atomic(out_dir / VIDEOS_FILE, videos)
        write_bytes_atomic(out_dir / CAPTIONS_FILE, captions)

    @classmethod
    def load(cls, directory: str | Path) -> Manifest:
        """Read a manifest directory written by :meth:`save` (or by hand in the same format)."""
        directory = Path(directory)
        videos_path = directory / VIDEOS_FILE
        captions_path = directory / CAPTIONS_FILE
        for path in (videos_path, captions_path):
            if not path.is_file():
                raise InputError("manifest file not found", file=path)
        try:
            videos = pd.read_csv(videos_path, dtype={"video_id": str, "path": str, "split": str},
                                 keep_default_na=False, na_values={"start": [""], "end": [""]})
            captions = pd.read_csv(
                captions_path, dtype=str, keep_default_na=False,
            )
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot parse manifest: {exc}", file=directory) from exc
        manifest = cls.__new__(cls)
        try:
            Manifest.__init__(manifest, videos, captions, directory.resolve())
        except InputError as exc:
            if exc.file is None:
                exc.file = str(directory)
                exc.args = (str(exc),)
            raise
        return manifest
