"""bench/train_step.py and bench/gpu.sh at a tiny size on the CPU: rows, positive numbers."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import train_step  # noqa: E402


def test_train_step_rows_through_real_files_and_loop(tmp_path: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rows = train_step.main([
            "--size", "tiny", "--device", "cpu", "--batch", "8", "--steps", "2", "--warmup",
            "1", "--workers", "1", "--videos", "24", "--threads", "1", "--tmp-dir",
            str(tmp_path), "--modes", "student,student+teacher,teacher-fwd,data"])
    assert [r["mode"] for r in rows] == ["student", "student+teacher", "teacher-fwd", "data"]
    for row in rows:
        assert not row["note"], row["note"]
        assert row["clips_per_s"] > 0 and row["step_ms"] > 0 and row["peak_bytes"] > 0
        assert 0 <= row["data_wait"] <= 1
        assert row["workers"] == 1 and row["compile"] is False and row["amp"] == "none"
    student = rows[0]
    assert student["vs_student"] == pytest.approx(1.0)
    # The input pipeline alone outruns the step it feeds.
    assert rows[3]["clips_per_s"] > student["clips_per_s"]
    table = out.getvalue()
    assert "| student+teacher |" in table and "clips/s" in table
    assert not list(tmp_path.iterdir()), "temporary files left behind"


def test_online_teacher_targets_have_the_cache_layout() -> None:
    args = train_step.parse_args(["--frames", "4", "--words", "8"])
    source = train_step.clip_source("tiny", None)
    student, teacher = train_step.build_models(source, args, torch.device("cpu"),
                                               need_teacher=True)
    # Both towers use the device's attention kernel: SDPA with CUDA, eager (matmul) without,
    # which profiled faster on the CPU (bench/attention.py); the seqTransf calls SDPA directly.
    expected = "sdpa" if torch.cuda.is_available() else "eager"
    assert student.clip.model.config._attn_implementation == expected
    assert student.clip.model.text_model.config._attn_implementation == expected
    rng = np.random.default_rng(0)
    ids, mask = train_step.random_tokens(3, 8, rng)
    assert (ids.argmax(1) == mask.sum(1) - 1).all()  # EOT is the last real token
    video_mask = torch.ones(3, 4, dtype=torch.bool)
    video_mask[2, 2:] = False
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
             "frames": torch.randint(0, 256, (3, 4, 32, 32, 3), dtype=torch.uint8),
             "video_mask": video_mask}
    targets = train_step.online_teacher_targets(teacher, batch, torch.device("cpu"))
    assert targets["logits"].shape == (3, 3) and targets["logits"].dtype == torch.float32
    assert targets["relevance_logits"].shape == (3, 4)
    assert torch.equal(targets["relevance_mask"], video_mask)
    assert not targets["logits"].requires_grad


def test_gpu_script_tiny_prints_both_tables() -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--tiny"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("| ")]
    train = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines
             if ln.split("|")[1].strip() in train_step.MODES]
    # modes × batches 8 and 16, compile off on the CPU
    assert sorted((r[0], r[2]) for r in train) == sorted(
        (m, b) for m in ("student", "student+teacher", "teacher-fwd", "data-file")
        for b in ("8", "16"))
    for r in train:
        assert float(r[6].replace(",", "")) > 0 and float(r[7].replace(",", "")) > 0, r
    retrieval = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines
                 if ln.split("|")[1].strip().endswith(("head", "vector/video)"))]
    assert len(retrieval) == 2 * 4  # sizes 2000, 5000 × student + 3 teacher heads
    for r in retrieval:
        assert float(r[5].replace(",", "")) > 0
        if r[0] == "xclip head":
            assert float(r[8].rstrip("x").replace(",", "")) > 1
