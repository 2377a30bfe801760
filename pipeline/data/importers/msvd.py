"""MSVD: ``raw-captions.pkl`` + ``{train,val,test}_list.txt``; video files found by walking.

Captions are token lists joined with single spaces, one caption per list entry, ordered by the
split list then caption order (as the official loader). Caption ids are ``<video_id>#<n>`` with
``n`` the index in the pickle's list (stable even when a bad caption is skipped). A video file's
id is its name up to the first ``.``.

The pickle is read with an unpickler that refuses every global, so a crafted file cannot run code:
the official content (a dict of lists of lists of str) needs none.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from pipeline.data.importers.common import (
    CaptionEntry,
    ImportResult,
    Issues,
    VideoEntry,
    annotation_dir,
    build_result,
    drop_captionless,
    in_dir,
    index_video_files,
    pick_indexed_file,
    read_id_list,
    require_file,
    video_directory,
)
from pipeline.errors import InputError

SPLIT_FILES = (("train", "train_list.txt"), ("val", "val_list.txt"), ("test", "test_list.txt"))


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickler for plain containers only: any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> object:
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _load_captions(path: Path) -> dict:
    with open(require_file(path), "rb") as handle:
        try:
            data = _DataOnlyUnpickler(handle).load()
        except Exception as exc:  # pickle raises many types on corrupt input
            raise InputError(f"cannot read pickle: {exc}", file=path) from exc
    if not isinstance(data, dict):
        raise InputError(f"expected a dict video_id -> captions, got {type(data).__name__}",
                         file=path)
    return data


def _join_tokens(tokens: object, issues: Issues, path: Path, caption_id: str) -> str | None:
    """Tokens joined by single spaces; a non-list, a non-UTF-8 token or an empty result is bad."""
    if not isinstance(tokens, list | tuple):
        issues.report(f"caption is {type(tokens).__name__}, expected a list of tokens",
                      file=path, item_id=caption_id)
        return None
    words = []
    for token in tokens:
        if isinstance(token, bytes):  # Python 2 pickles store str as bytes
            try:
                token = token.decode("utf-8")
            except UnicodeDecodeError:
                issues.report("caption token is not valid UTF-8", file=path, item_id=caption_id)
                return None
        if not isinstance(token, str):
            issues.report(f"caption token is {type(token).__name__}, expected str", file=path,
                          item_id=caption_id)
            return None
        words.append(token)
    text = " ".join(words).strip()
    if not text:
        issues.report("empty caption", file=path, item_id=caption_id)
        return None
    return text


def import_msvd(
    root: Path,
    *,
    video_dir: Path | None = None,
    skip_bad: bool = False,
    annotations: Path | None = None,
    captions_pkl: str = "raw-captions.pkl",
) -> ImportResult:
    """MSVD with its official 1,200/100/670 lists (see module docstring)."""
    issues = Issues(skip_bad)
    ann = annotation_dir(root, annotations)
    vdir = video_directory(root, video_dir)
    pkl_path = in_dir(ann, captions_pkl)
    raw = _load_captions(pkl_path)
    files = index_video_files(vdir, lambda name: name.split(".", 1)[0])

    videos: list[VideoEntry] = []
    captions: list[CaptionEntry] = []
    sources: dict[str, tuple[Path, int | None]] = {}
    for split, name in SPLIT_FILES:
        list_path = in_dir(ann, name)
        for line, video_id in read_id_list(list_path, issues):
            if video_id in sources:
                other, other_line = sources[video_id]
                issues.report(f"video is listed twice ({other}:{other_line})", file=list_path,
                              line=line, item_id=video_id)
                continue
            sources[video_id] = (list_path, line)
            if video_id not in raw:
                issues.report(f"video has no captions in {pkl_path.name}", file=list_path,
                              line=line, item_id=video_id)
                continue
            path = pick_indexed_file(files, video_id, video_id, issues, file=list_path,
                                     line=line, video_dir=vdir)
            if path is None:
                continue
            entries = raw[video_id]
            if not isinstance(entries, list | tuple):
                issues.report("captions entry is not a list", file=pkl_path, item_id=video_id)
                continue
            videos.append(VideoEntry(video_id, path, split))
            for n, tokens in enumerate(entries):
                caption_id = f"{video_id}#{n}"
                text = _join_tokens(tokens, issues, pkl_path, caption_id)
                if text is not None:
                    captions.append(CaptionEntry(caption_id, video_id, text))
    videos = drop_captionless(videos, captions, issues, sources)
    return build_result(videos, captions, issues)
