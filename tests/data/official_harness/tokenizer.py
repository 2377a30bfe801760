"""Official tokenizer ids for the captions in ``captions.py`` (usage: OFFICIAL_DIR OUT_JSON)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
sys.path.insert(0, str(Path(__file__).parent))

import ftfy  # noqa: E402
from captions import CAPTIONS  # noqa: E402
from modules.tokenization_clip import SimpleTokenizer  # noqa: E402

tok = SimpleTokenizer()
out = {
    "source": {"repo": "ruc-aimc-lab/TeachCLIP", "path": "modules/tokenization_clip.py",
               "commit": "23c991fd7e4fe7bdbd7eb431f78e8e1340fdc736",
               "function": "SimpleTokenizer.encode (basic_clean: ftfy.fix_text + html.unescape "
                           "x2, whitespace_clean, lower)",
               "ftfy": ftfy.__version__},
    "cases": [{"text": text, "ids": tok.encode(text)} for text in CAPTIONS],
    "note": "Produced by running the official tokenizer outside this repository on each text; "
            "ids exclude the start/end tokens. Regenerate only from the official code.",
}
Path(sys.argv[2]).write_text(json.dumps(out, ensure_ascii=True, indent=1), encoding="utf-8")
