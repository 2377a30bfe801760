"""Dataset importers: each official annotation format -> one normalised :class:`Manifest`.

``IMPORTERS`` maps a format name to ``import_xxx(root: Path, *, video_dir, skip_bad, ...) ->
ImportResult``. Importers only read; writing (paths relative to the output, skipped.csv) is
:func:`save_import`, so a failed import never touches the output directory.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.data.importers.activitynet import import_activitynet
from pipeline.data.importers.common import ImportResult, SkipRecord
from pipeline.data.importers.didemo import import_didemo
from pipeline.data.importers.msrvtt import import_msrvtt, import_vatex
from pipeline.data.importers.msvd import import_msvd
from pipeline.data.importers.output import save_import
from pipeline.data.importers.plain import import_csv, import_jsonl
from pipeline.data.importers.teachclip_txt import import_teachclip_txt

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
