"""MSR-VTT and VATEX (same official loader): ``*_data.json`` + train/val/test CSVs.

Train captions: every JSON sentence whose video is listed in the train CSV, in JSON order (the
official "expand" mode). Val/test captions: the CSV rows (``video_id``, ``sentence``) in file order,
attached to their video **by id** (the official loader groups by a Python set, which is only right
when rows are grouped with equal counts; see artifacts §10.9).

Caption ids are ``<video_id>#<n>``: for train, ``n`` is the index among that video's sentences in
JSON order (counting every entry, so skipping a bad one does not renumber the rest); for val/test,
``n`` is the index among that video's rows of the CSV. ``sen_id`` is not used: VATEX lacks it and
the CSV captions have none, and one scheme for all splits keeps ids comparable.

A video listed in two split files is an error (train/test leakage); with ``--skip-bad`` it is kept
in the later-priority split (test > val > train) so the test set stays complete.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.importers.common import (
    CaptionEntry,
    ImportResult,
    Issues,
    VideoEntry,
    annotation_dir,
    build_result,
    caption_text,
    drop_captionless,
    find_by_candidates,
    hold_out_val,
    in_dir,
    read_csv,
    read_json,
    video_directory,
)
from pipeline.errors import InputError

# Official resolution order for MSR-VTT/VATEX files: <id>.mp4, then .avi, then the bare name.
VIDEO_SUFFIXES = (".mp4", ".avi", "")
# Share of train videos held out as val when no val CSV exists (keeps test out of selection).
DEFAULT_VAL_FRACTION = 0.05


def _sentences(data: object, path: Path) -> tuple[list, set[str] | None]:
    """The ``sentences`` list and, when the JSON has one, the set of ids in ``videos``."""
    if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
        raise InputError('expected an object with a "sentences" list', file=path)
    known = None
    if isinstance(data.get("videos"), list):
        known = {v.get("video_id") for v in data["videos"] if isinstance(v, dict)}
    return data["sentences"], known


class _Splits:
    """Which split each video belongs to, where it was listed, in listing order.

    Why a class: three files (test, val, train CSV) claim videos, and every claim must check the
    same rules (no video in two splits, every video known to the JSON) with the same messages.
    """

    def __init__(self, issues: Issues, known: set[str] | None, json_path: Path) -> None:
        self.issues, self.known, self.json_path = issues, known, json_path
        self.split_of: dict[str, str] = {}
        self.sources: dict[str, tuple[Path, int | None]] = {}
        self.order: dict[str, list[str]] = {"train": [], "val": [], "test": []}

    def claim(self, video_id: str, split: str, path: Path, line: int) -> bool:
        """Register a video for a split; report one listed in two split files."""
        if video_id in self.split_of:
            if self.split_of[video_id] == split:
                return True
            other, other_line = self.sources[video_id]
            self.issues.report(f"video is also in split {self.split_of[video_id]!r} "
                               f"({other}:{other_line}); splits must not overlap",
                               file=path, line=line, item_id=video_id)
            return False
        if self.known is not None and video_id not in self.known:
            self.issues.report(f"video is not among the videos of {self.json_path.name}",
                               file=path, line=line, item_id=video_id)
            return False
        self.split_of[video_id] = split
        self.sources[video_id] = (path, line)
        self.order[split].append(video_id)
        return True


def _eval_captions(ann: Path, split: str, name: str, splits: _Splits,
                   issues: Issues) -> list[CaptionEntry]:
    """A val/test CSV: one row per caption, attached to its video by id (``<video>#<n>``)."""
    path = in_dir(ann, name)
    counts: dict[str, int] = {}
    captions = []
    for line, row in read_csv(path, issues, ["video_id", "sentence"]):
        video_id = row["video_id"].strip()
        if not splits.claim(video_id, split, path, line):
            continue
        n = counts.get(video_id, 0)
        counts[video_id] = n + 1
        caption_id = f"{video_id}#{n}"
        text = caption_text(row["sentence"], issues, file=path, line=line, item_id=caption_id)
        if text is not None:
            captions.append(CaptionEntry(caption_id, video_id, text))
    return captions


def _claim_train(ann: Path, train_csv: str, splits: _Splits, issues: Issues) -> None:
    """The train CSV lists video ids only (their captions come from the JSON)."""
    train_path = in_dir(ann, train_csv)
    seen_train: dict[str, int] = {}
    for line, row in read_csv(train_path, issues, ["video_id"]):
        video_id = row["video_id"].strip()
        if video_id in seen_train:
            issues.report(f"duplicate id (first on line {seen_train[video_id]})",
                          file=train_path, line=line, item_id=video_id)
            continue
        seen_train[video_id] = line
        splits.claim(video_id, "train", train_path, line)


def _video_entries(vdir: Path, splits: _Splits, issues: Issues) -> list[VideoEntry]:
    """Every claimed video with its file (official order: .mp4, .avi, bare name)."""
    videos: list[VideoEntry] = []
    for split in ("train", "val", "test"):
        for video_id in splits.order[split]:
            path = find_by_candidates(vdir, video_id, VIDEO_SUFFIXES)
            if path is None:
                file, line = splits.sources[video_id]
                issues.report(f"video file not found in {vdir} (tried .mp4, .avi, bare name)",
                              file=file, line=line, item_id=video_id)
                continue
            videos.append(VideoEntry(video_id, path, split))
    return videos


def _train_captions(sentences: list, json_path: Path, splits: _Splits,
                    issues: Issues) -> list[CaptionEntry]:
    """Every JSON sentence of a train video, in JSON order (the official "expand" mode)."""
    captions: list[CaptionEntry] = []
    counts: dict[str, int] = {}
    for index, entry in enumerate(sentences):
        if not isinstance(entry, dict) or not isinstance(entry.get("video_id"), str):
            issues.report("sentence entry lacks a string video_id", file=json_path,
                          item_id=f"sentences[{index}]")
            continue
        video_id = entry["video_id"]
        n = counts.get(video_id, 0)
        counts[video_id] = n + 1
        if splits.split_of.get(video_id) != "train":
            continue
        caption_id = f"{video_id}#{n}"
        text = caption_text(entry.get("caption"), issues, file=json_path, line=None,
                            item_id=caption_id)
        if text is not None:
            captions.append(CaptionEntry(caption_id, video_id, text))
    return captions


def import_msrvtt_like(
    root: Path,
    *,
    video_dir: Path | None,
    skip_bad: bool,
    annotations: Path | None,
    data_json: str,
    train_csv: str,
    val_csv: str | None,
    test_csv: str,
    val_fraction: float | None,
) -> ImportResult:
    """Shared body of :func:`import_msrvtt` and :func:`import_vatex` (see module docstring)."""
    issues = Issues(skip_bad)
    ann = annotation_dir(root, annotations)
    vdir = video_directory(root, video_dir)
    json_path = in_dir(ann, data_json)
    sentences, known = _sentences(read_json(json_path), json_path)
    if val_csv and val_fraction:
        raise InputError("--val-fraction cannot be combined with a val CSV (val already given)")
    fraction = (0.0 if val_csv else DEFAULT_VAL_FRACTION) if val_fraction is None else val_fraction
    splits = _Splits(issues, known, json_path)
    # Highest priority first, so --skip-bad drops an overlapping video from train, never test.
    eval_captions = [c for split, name in (("test", test_csv), ("val", val_csv)) if name
                     for c in _eval_captions(ann, split, name, splits, issues)]
    _claim_train(ann, train_csv, splits, issues)
    videos = _video_entries(vdir, splits, issues)
    train = _train_captions(sentences, json_path, splits, issues)
    val = [c for c in eval_captions if splits.split_of[c.video_id] == "val"]
    test = [c for c in eval_captions if splits.split_of[c.video_id] == "test"]
    captions = train + val + test
    videos = drop_captionless(videos, captions, issues, splits.sources)
    videos = hold_out_val(videos, fraction)
    return build_result(videos, captions, issues)


def import_msrvtt(
    root: Path,
    *,
    video_dir: Path | None = None,
    skip_bad: bool = False,
    annotations: Path | None = None,
    data_json: str = "MSRVTT_data.json",
    train_csv: str = "MSRVTT_train.9k.csv",
    val_csv: str | None = None,
    test_csv: str = "MSRVTT_JSFUSION_test.csv",
    val_fraction: float | None = None,
) -> ImportResult:
    """MSR-VTT. 9k (default): train 9k + JSFUSION 1k-A test, val held out of train.

    7k: ``train_csv="MSRVTT_train.7k.csv", val_csv="MSRVTT_full_split_val.csv",
    test_csv="MSRVTT_full_split_test.csv"``. ``val_fraction`` (default 0.05 when no val CSV,
    else 0) moves that share of train videos to val; 0 reproduces the official train set.
    """
    return import_msrvtt_like(
        root, video_dir=video_dir, skip_bad=skip_bad, annotations=annotations,
        data_json=data_json, train_csv=train_csv, val_csv=val_csv, test_csv=test_csv,
        val_fraction=val_fraction,
    )


def import_vatex(
    root: Path,
    *,
    video_dir: Path | None = None,
    skip_bad: bool = False,
    annotations: Path | None = None,
    data_json: str = "VATEX_data.json",
    train_csv: str = "VATEX_train.csv",
    val_csv: str | None = "VATEX_val.csv",
    test_csv: str = "VATEX_test.csv",
    val_fraction: float | None = None,
) -> ImportResult:
    """VATEX through the MSR-VTT loader: the VATEX_ files, a real val split by default."""
    return import_msrvtt_like(
        root, video_dir=video_dir, skip_bad=skip_bad, annotations=annotations,
        data_json=data_json, train_csv=train_csv, val_csv=val_csv, test_csv=test_csv,
        val_fraction=val_fraction,
    )
