"""Dataset importers: each official annotation format -> one normalised :class:`Manifest`.

``IMPORTERS`` maps a format name to ``import_xxx(root: Path, *, video_dir, skip_bad, ...) ->
ImportResult``. Importers only read; writing (paths relative to the output, skipped.csv) is
:func:`save_import`, so a failed import never touches the output directory.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.importers.activitynet import import_activitynet
from pipeline.importers.common import ImportResult, SkipRecord
from pipeline.importers.didemo import import_didemo
from pipeline.importers.msrvtt import import_msrvtt, import_vatex
from pipeline.importers.msvd import import_msvd
from pipeline.importers.output import save_import
from pipeline.importers.plain import import_csv, import_jsonl
from pipeline.importers.teachclip_txt import import_teachclip_txt

IMPORTERS: dict[str, Callable[..., ImportResult]] = {
    "activitynet": import_activitynet,
    "csv": import_csv,
    "didemo": import_didemo,
    "jsonl": import_jsonl,
    "msrvtt": import_msrvtt,
    "msvd": import_msvd,
    "teachclip-txt": import_teachclip_txt,
    "vatex": import_vatex,
}

__all__ = ["IMPORTERS", "ImportResult", "SkipRecord", "save_import"]
