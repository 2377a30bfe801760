"""CLIP attention kernel per device: the student and teacher training steps with SDPA and eager.

Why: profiling the embedded default's student step on 2 CPU cores put a fifth of its time in
PyTorch's CPU flash-attention kernel, which is slow on CLIP's short sequences (17 image tokens at
32 px, 50 for ViT-B/32). `pipeline.models.clip.attention_implementation` therefore builds CLIP
with the eager (matmul) attention where there is no CUDA, SDPA where there is; the maths is the
same. This benchmark times both kernels in one run, on the shapes of the default (batch 64,
12 frames of 32 px, 32 tokens, tiny CLIP) or of ViT-B/32 (``--size vitb32``), and prints the
ratio, so the choice can be re-checked on other machines.

    python bench/attention.py                 # tiny CLIP, CPU, 2 threads
    python bench/attention.py --steps 5 --size vitb32 --batch 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence

import torch

from pipeline.models.clip import load_clip
from pipeline.models.student import Student, StudentConfig, student_logits
from pipeline.train.losses import symmetric_infonce

SIZES = {  # tiny CLIP overrides (pipeline.models.clip_config.TINY_DEFAULTS) and image size
    "tiny": ({}, 32),
    "vitb32": ({"text_width": 512, "text_layers": 12, "text_heads": 8, "vision_width": 768,
                "vision_layers": 12, "vision_heads": 12, "image_size": 224, "patch_size": 32,
                "projection_dim": 512}, 224),
}


def time_step(attention: str, size: str, batch: int, frames: int, words: int, steps: int,
              warmup: int) -> list[float]:
    """Seconds per training step (forward, backward, AdamW) of the student with ``attention``."""
    overrides, pixels = SIZES[size]
    source = "tiny:" + json.dumps(overrides) if overrides else "tiny"
    torch.manual_seed(0)
    towers = load_clip(source, seed=0, attention=attention)
    towers.freeze_per_spec()
    student = Student(towers, StudentConfig(temporal="seqTransf", aggregation="afa"))
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad])
    generator = torch.Generator().manual_seed(1)
    video = torch.randn(batch, frames, 3, pixels, pixels, generator=generator)
    mask = torch.ones(batch, frames)
    ids = torch.randint(1, 400, (batch, words), generator=generator)
    attention_mask = torch.ones(batch, words, dtype=torch.long)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        sentence = student.encode_text(ids, attention_mask)
        out = student.encode_video(video, mask)
        loss = symmetric_infonce(student_logits(sentence, out.embedding,
                                                student.clip.logit_scale))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main(argv: Sequence[str] | None = None) -> list[dict[str, float | str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--words", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows: list[dict[str, float | str]] = []
    for attention in ("sdpa", "eager"):
        times = time_step(attention, args.size, args.batch, args.frames, args.words,
                          args.steps, args.warmup)
        rows.append({"attention": attention, "median_s": statistics.median(times),
                     "min_s": min(times)})
    base = rows[0]["median_s"]
    print(f"student training step, {args.size}, batch {args.batch}, F={args.frames}, "
          f"L={args.words}, {args.threads} thread(s), torch {torch.__version__}, "
          f"{args.steps} steps after {args.warmup} warm-up")
    print("| attention | median s/step | min s/step | vs sdpa |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['attention']} | {row['median_s']:.3f} | {row['min_s']:.3f} | "
              f"{float(base) / float(row['median_s']):.2f}× |")
    return rows


if __name__ == "__main__":
    main()
