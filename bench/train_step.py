"""Training throughput: the student step from the teacher cache vs. with an X-CLIP teacher online.

Why: TeachCLIP's offline pipeline scores the teachers once and trains the student from the
cache, so a training step should cost what a CLIP4Clip step costs; the official code instead
runs the teacher on every batch (method §8 anchors). This benchmark times both in one run, through
the real code: random frames written to a real ``frames.h5`` and random soft labels to a real
teacher cache, read by ``GlobalBatchDataset`` + ``epoch_loader`` (DataLoader workers, pinned
memory), stepped by ``pipeline.train.loop.run_training`` with ``student_loss_step``.

Modes (``--modes``):
* ``student``: the student step from the cache (what ``teachclip student train`` runs);
* ``student+teacher``: the same step with an X-CLIP teacher (its own CLIP towers, random
  weights) run online on every batch under no_grad: encode, score B×B, relevance (official);
* ``teacher-fwd``: the online teacher's forward alone (no student, no backward);
* ``data``: the input pipeline alone (read, collate, copy to the device): its ceiling;
* ``data-file``: the same, always reading the HDF5 files (even with ``--in-memory``).

Reported per row: clips/s over the measured steps (after ``--warmup`` steps, which absorb
``torch.compile``), ms per step, the data-wait fraction (time the loop blocked on the loader /
wall time), peak memory (CUDA max allocated on a GPU, the process's RSS peak on the CPU) and
the ratio to the ``student`` row with the same batch/amp/compile ("vs student") and, for
compiled rows, to the same row uncompiled ("vs eager").

Usage: ``python bench/train_step.py [--size tiny|vitb32] [--batch 32[,64]] [--steps 20]
[--warmup 3] [--amp none|bf16|fp16] [--compile [off|on|both]] [--workers N] [--in-memory]
[--device cpu|cuda] [--modes student,student+teacher]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

try:
    from bench.common import (
        Column,
        PeakMemory,
        format_table,
        human_bytes,
        machine_line,
        synchronize,
        write_frames,
        write_teacher_cache,
    )
except ModuleNotFoundError:  # run as ``python bench/train_step.py``: bench/ is on sys.path
    from common import (
        Column,
        PeakMemory,
        format_table,
        human_bytes,
        machine_line,
        synchronize,
        write_frames,
        write_teacher_cache,
    )

from pipeline.data.frames_store import FramesReader
from pipeline.distributed import DistInfo
from pipeline.models.clip import load_clip
from pipeline.models.clip_config import TINY_DEFAULTS
from pipeline.models.preprocess import normalize_frames
from pipeline.models.student import Student
from pipeline.models.teachers.xclip import XClipTeacher
from pipeline.precision import autocast_context
from pipeline.train.data_loading import (
    GlobalBatchDataset,
    TeacherSource,
    TrainingItems,
    epoch_loader,
    move_batch,
)
from pipeline.train.loop import LoopConfig, run_training
from pipeline.train.schedule import warmup_cosine
from pipeline.train.setup import OptimConfig, build_adamw
from pipeline.train.student import (
    StudentTrainConfig,
    build_step_model,
    student_loss_step,
    student_param_groups,
)

#: CLIP sizes (keys of ``pipeline.models.clip.TINY_DEFAULTS``). ViT-B/32 = OpenAI's config.
CLIP_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {},
    "vitb32": {"text_width": 512, "text_layers": 12, "text_heads": 8, "context_length": 77,
               "vision_width": 768, "vision_layers": 12, "vision_heads": 12,
               "image_size": 224, "patch_size": 32, "projection_dim": 512},
}
#: Defaults per size: batch, frames.h5 videos (captions are spread over them at random).
SIZE_DEFAULTS = {"tiny": {"batch": "32", "videos": 256},
                 "vitb32": {"batch": "120", "videos": 384}}
MODES = ("student", "student+teacher", "teacher-fwd", "data", "data-file")
SOT, EOT = 49406, 49407

COLUMNS = [
    Column("mode", "mode", align="<"),
    Column("size", "size", align="<"),
    Column("batch", "batch"),
    Column("amp", "amp"),
    Column("compile", "compile"),
    Column("workers", "workers"),
    Column("clips_per_s", "clips/s", "{:,.1f}"),
    Column("step_ms", "ms/step", "{:,.1f}"),
    Column("data_wait", "data wait", "{:.1%}"),
    Column("peak_memory", "peak memory"),
    Column("vs_student", "vs student", "{:.2f}x"),
    Column("vs_eager", "vs eager", "{:.2f}x"),
    Column("warmup_s", "warm-up (s)", "{:.1f}"),
    Column("note", "note", align="<"),
]


# ------------------------------------------------------------------------------ data


def random_tokens(n: int, max_words: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Caption token ids in the tokenizer's layout: SOT, 6–20 BPE ids, EOT, zero padding."""
    ids = np.zeros((n, max_words), dtype=np.int64)
    mask = np.zeros((n, max_words), dtype=np.int64)
    for i in range(n):
        length = int(rng.integers(6, min(20, max_words - 2) + 1))
        ids[i, 0] = SOT
        ids[i, 1:1 + length] = rng.integers(1, SOT, size=length)
        ids[i, 1 + length] = EOT
        mask[i, :2 + length] = 1
    return ids, mask


@dataclass
class BenchData:
    """Everything a config reads: frames file, teacher cache and per-caption arrays."""

    frames: Any  # FramesReader (in RAM with --in-memory)
    cache: Any  # TeacherCache (in RAM with --in-memory)
    frames_file: Any  # FramesReader that always reads the file
    token_ids: np.ndarray
    token_mask: np.ndarray
    frame_rows: np.ndarray
    cache_rows: np.ndarray
    cache_cols: np.ndarray

    def items(self, n: int, with_cache: bool) -> TrainingItems:
        """The first ``n`` captions, with (student) or without (online teacher) cached labels."""
        sources = [TeacherSource(self.cache, self.cache_rows[:n], self.cache_cols[:n])]
        return TrainingItems(self.token_ids[:n], self.token_mask[:n], self.frame_rows[:n],
                             sources if with_cache else [])


def make_data(tmp: Path, n_captions: int, n_videos: int, frames: int, size: int,
              max_words: int, seed: int, in_memory: bool) -> BenchData:
    """Write frames.h5 and the teacher cache (real writers) and tokenise random captions."""
    rng = np.random.default_rng(seed)
    reader = write_frames(tmp / "frames.h5", n_videos, frames, size, seed=seed, short_every=5)
    video_of = rng.integers(0, n_videos, size=n_captions)
    caption_ids = [f"c{i:07d}" for i in range(n_captions)]
    cache = write_teacher_cache(tmp / "xclip.h5", caption_ids, reader.video_ids, video_of,
                                max_frames=frames, max_words=max_words,
                                frames_digest=reader.digest, seed=seed)
    file_reader = FramesReader(tmp / "frames.h5")
    if in_memory:
        reader.load_all()
        cache.load_all()
    ids, mask = random_tokens(n_captions, max_words, rng)
    return BenchData(reader, cache, file_reader, ids, mask, video_of.astype(np.int64),
                     np.arange(n_captions, dtype=np.int64), video_of.astype(np.int64))


# ------------------------------------------------------------------------------ timing


class StepClock:
    """Times the measured steps of a run: wall time, time blocked on the loader, peak memory.

    The loop calls ``on_progress`` after every step; the device is synchronised only at the two
    boundaries (end of warm-up, end of the last step), never inside the measured steps.
    """

    def __init__(self, device: torch.device, warmup: int, total: int) -> None:
        self.device = device
        self.warmup = warmup
        self.total = total
        self.step = 0
        self.wait = 0.0
        self.measuring = False
        self.started = time.perf_counter()
        self.t0 = self.t1 = math.nan
        self.peak_bytes = 0
        self.memory = PeakMemory(device)
        self.memory.reset()

    def batches(self, iterable: Iterable[Any]) -> Iterator[Any]:
        it = iter(iterable)
        while True:
            before = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            if self.measuring:
                self.wait += time.perf_counter() - before
            yield batch

    def on_progress(self, n: int) -> None:
        self.step += n
        if self.step == self.warmup:
            synchronize(self.device)
            self.t0 = time.perf_counter()
            self.measuring = True
        if self.step == self.total:
            synchronize(self.device)
            self.t1 = time.perf_counter()
            self.measuring = False
            self.peak_bytes = self.memory.peak()
            self.memory.close()

    def result(self, batch: int) -> dict[str, Any]:
        steps = self.total - self.warmup
        wall = self.t1 - self.t0
        if not (steps > 0 and wall > 0):
            raise RuntimeError(f"run ended after {self.step} of {self.total} steps")
        return {"clips_per_s": steps * batch / wall, "step_ms": wall / steps * 1e3,
                "data_wait": self.wait / wall, "peak_bytes": self.peak_bytes,
                "peak_memory": human_bytes(self.peak_bytes),
                "warmup_s": self.t0 - self.started}


# ------------------------------------------------------------------------------ steps


def online_teacher_targets(teacher: XClipTeacher, batch: dict[str, Any],
                           device: torch.device) -> dict[str, torch.Tensor]:
    """What the official code does every batch: teacher encode (no grad), B×B score, relevance."""
    with torch.no_grad():
        frames = normalize_frames(batch["frames"], batch["video_mask"])
        text = teacher.encode_text(batch["input_ids"], batch["attention_mask"])
        video = teacher.encode_video(frames, batch["video_mask"])
        logits = teacher.score(text, video)
        rel_logits, rel_mask = teacher.relevance_logits(text, video)
    return {"logits": logits.float(), "relevance_logits": rel_logits.float(),
            "relevance_mask": rel_mask.bool()}


def online_teacher_step(model: nn.Module, student: Student, teacher: XClipTeacher,
                        batch: dict[str, Any], config: StudentTrainConfig,
                        device: torch.device) -> dict[str, torch.Tensor]:
    batch = move_batch(batch, device)
    batch["teachers"] = [online_teacher_targets(teacher, batch, device)]
    return student_loss_step(model, student, batch, config, device)


# ------------------------------------------------------------------------------ runs


@dataclass(frozen=True)
class RunSpec:
    mode: str
    batch: int
    amp: str
    compile: bool


def clip_source(size: str, image_size: int | None) -> str:
    overrides = dict(CLIP_SIZES[size])
    if image_size:
        overrides["image_size"] = image_size
    return "tiny:" + json.dumps(overrides, sort_keys=True) if overrides else "tiny"


def train_config(args: argparse.Namespace, spec: RunSpec, source: str) -> StudentTrainConfig:
    return StudentTrainConfig(
        clip=source, optim=OptimConfig(epochs=1, batch_size=spec.batch),
        max_words=args.words, amp=spec.amp, workers=args.workers, in_memory=args.in_memory,
        log_every=args.warmup + args.steps, seed=args.seed, compile=spec.compile,
    )


def run_training_mode(spec: RunSpec, args: argparse.Namespace, data: BenchData,
                      student: Student, teacher: XClipTeacher | None, source: str,
                      device: torch.device, work: Path) -> dict[str, Any]:
    """One ``student`` / ``student+teacher`` row through the real loop."""
    config = train_config(args, spec, source)
    total = args.warmup + args.steps
    online = spec.mode == "student+teacher"
    dataset = GlobalBatchDataset(data.items(total * spec.batch, with_cache=not online),
                                 data.frames, spec.batch, args.seed)
    optimizer = build_adamw(student_param_groups(student, config.optim), config.optim, device)
    scheduler = warmup_cosine(optimizer, total, config.optim.warmup_fraction)
    step_model = build_step_model(student, config)
    clock = StepClock(device, args.warmup, total)

    def step_fn(model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if online:
            assert teacher is not None
            return online_teacher_step(model, student, teacher, batch, config, device)
        return student_loss_step(model, student, batch, config, device)

    run_training(
        model=step_model, optimizer=optimizer, scheduler=scheduler, step_fn=step_fn,
        batches_for_epoch=lambda epoch: clock.batches(
            epoch_loader(dataset, epoch, args.workers, device.type == "cuda")),
        steps_per_epoch=len(dataset),
        config=LoopConfig(epochs=1, seed=args.seed, grad_clip=config.optim.grad_clip,
                          amp=spec.amp, log_every=config.log_every,
                          fingerprint={"bench": str(work)}),
        work_dir=work, device=device, dist_info=DistInfo(),
        after_step=student.clip.clamp_logit_scale,
        batch_size_of=lambda batch: len(batch["input_ids"]),
        on_progress=clock.on_progress,
    )
    return clock.result(spec.batch)


def run_forward_mode(spec: RunSpec, args: argparse.Namespace, data: BenchData,
                     teacher: XClipTeacher | None, device: torch.device) -> dict[str, Any]:
    """``teacher-fwd`` (teacher forward per batch) or ``data``/``data-file`` (loader + copy)."""
    total = args.warmup + args.steps
    frames = data.frames_file if spec.mode == "data-file" else data.frames
    dataset = GlobalBatchDataset(data.items(total * spec.batch,
                                            with_cache=spec.mode.startswith("data")),
                                 frames, spec.batch, args.seed)
    clock = StepClock(device, args.warmup, total)
    with torch.no_grad():
        for batch in clock.batches(epoch_loader(dataset, 0, args.workers, device.type == "cuda")):
            batch = move_batch(batch, device)
            if spec.mode == "teacher-fwd":
                assert teacher is not None
                with autocast_context(device, spec.amp):
                    online_teacher_targets(teacher, batch, device)
            clock.on_progress(1)
    return clock.result(spec.batch)


def build_models(source: str, args: argparse.Namespace, device: torch.device,
                 need_teacher: bool) -> tuple[Student, XClipTeacher | None]:
    """Student as ``train_student`` builds it (method §6 freezing) and an X-CLIP teacher."""
    towers = load_clip(source, seed=args.seed)
    towers.freeze_per_spec()
    student = Student(towers).to(device)
    teacher = None
    if need_teacher:
        teacher = XClipTeacher(load_clip(source, seed=args.seed + 1), args.words, args.frames)
        teacher = teacher.to(device).eval()
        teacher.requires_grad_(False)
    return student, teacher


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", choices=sorted(CLIP_SIZES), default="tiny",
                   help="CLIP size: tiny (32px, widths 64) or vitb32 (224px ViT-B/32)")
    p.add_argument("--batch", default=None,
                   help="comma-separated batch sizes (default: 32 tiny, 120 vitb32)")
    p.add_argument("--steps", type=int, default=20, help="measured steps per row")
    p.add_argument("--warmup", type=int, default=3,
                   help="steps before timing starts (absorb torch.compile, allocator)")
    p.add_argument("--amp", default=None,
                   help="autocast: none|bf16|fp16, comma list allowed (default: bf16 on CUDA, "
                        "none on CPU)")
    p.add_argument("--compile", nargs="?", const="on", default="off",
                   choices=("off", "on", "both"), help="torch.compile the student step")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers (default: 8 on CUDA, 1 on CPU)")
    p.add_argument("--in-memory", action="store_true",
                   help="load frames.h5 and the teacher cache into RAM first")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--modes", default="student,student+teacher",
                   help=f"comma-separated, from {', '.join(MODES)}")
    p.add_argument("--frames", type=int, default=12, help="frames per video F")
    p.add_argument("--words", type=int, default=32, help="max words L")
    p.add_argument("--videos", type=int, default=None,
                   help="videos in frames.h5 (default: 256 tiny, 384 vitb32)")
    p.add_argument("--image-size", type=int, default=None, help="override the CLIP image size")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--tmp-dir", default=None, help="where the frames/cache files are written")
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        p.error("--warmup and --steps must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run every (mode, batch, amp, compile) combination, print one table, return the rows."""
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.workers is None:
        args.workers = min(8, (os.cpu_count() or 2) // 2) if device.type == "cuda" else 1
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = sorted(set(modes) - set(MODES))
    if bad:
        raise SystemExit(f"unknown mode(s) {bad}; known: {', '.join(MODES)}")
    batches = [int(b) for b in (args.batch or SIZE_DEFAULTS[args.size]["batch"]).split(",")]
    amps = (args.amp or ("bf16" if device.type == "cuda" else "none")).split(",")
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    source = clip_source(args.size, args.image_size)
    image_size = args.image_size or CLIP_SIZES[args.size].get("image_size",
                                                              TINY_DEFAULTS["image_size"])
    n_videos = args.videos or SIZE_DEFAULTS[args.size]["videos"]
    n_captions = (args.warmup + args.steps) * max(batches)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="teachclip-bench-", dir=args.tmp_dir) as tmp_name:
        tmp = Path(tmp_name)
        data = make_data(tmp, n_captions, n_videos, args.frames, image_size, args.words,
                         args.seed, args.in_memory)
        student, teacher = build_models(source, args, device,
                                        need_teacher=bool({"student+teacher", "teacher-fwd"}
                                                          & set(modes)))
        run_id = 0
        for use_compile in compiles:
            for amp in amps:
                for batch in batches:
                    for mode in modes:
                        if use_compile and False in compiles and mode not in (
                                "student", "student+teacher"):
                            continue  # nothing of it is compiled: the eager row says it all
                        spec = RunSpec(mode, batch, amp, use_compile)
                        row: dict[str, Any] = {"mode": mode, "size": args.size, "batch": batch,
                                               "amp": amp, "compile": use_compile,
                                               "workers": args.workers, "note": ""}
                        run_id += 1
                        try:
                            if mode in ("student", "student+teacher"):
                                row.update(run_training_mode(spec, args, data, student, teacher,
                                                             source, device,
                                                             tmp / f"run{run_id}"))
                            else:
                                if use_compile:
                                    row["note"] = "not compiled (no student step)"
                                row.update(run_forward_mode(spec, args, data, teacher, device))
                        except Exception as exc:  # a failed row is reported, not fatal
                            row["note"] = f"failed: {type(exc).__name__}: {exc}"[:160]
                        rows.append(row)
                        gc.collect()
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
        for row in rows:
            base = next((r for r in rows if r["mode"] == "student" and r["batch"] == row["batch"]
                         and r["amp"] == row["amp"] and r["compile"] == row["compile"]
                         and r.get("clips_per_s")), None)
            if base is not None and row.get("clips_per_s"):
                row["vs_student"] = row["clips_per_s"] / base["clips_per_s"]
            eager = next((r for r in rows if r["mode"] == row["mode"] and not r["compile"]
                          and r["batch"] == row["batch"] and r["amp"] == row["amp"]
                          and r.get("clips_per_s")), None)
            if row["compile"] and eager is not None and row.get("clips_per_s"):
                row["vs_eager"] = row["clips_per_s"] / eager["clips_per_s"]
        data.frames.close()
        data.frames_file.close()
        data.cache.close()
    print(f"training step on {machine_line(device)}")
    print(f"size={args.size} ({image_size}px) F={args.frames} L={args.words} "
          f"steps={args.steps} warm-up={args.warmup} videos={n_videos} "
          f"in-memory={args.in_memory}; X-CLIP teacher online = official behaviour")
    print(format_table(rows, COLUMNS))
    print(f"total {time.perf_counter() - started:.0f} s")
    return rows


if __name__ == "__main__":
    main()
