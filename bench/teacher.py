"""Benchmark cached teacher soft labels against running the teacher online every batch.

Online (the official TeachCLIP training): every step encodes the batch's B texts and B videos with
the teacher and scores the B×B matrix (plus the B×F relevance). Cached (this pipeline): the
teacher scores every caption × video pair once (``teachclip teacher score``), then each step
reads a B×B block and B×F relevance from the float16 cache (``TeacherCache.batch``). Frame
decoding/reading is left out of both: the student reads the same frames either way.

Two settings, measured in the same run:
(a) the synthetic default's size (480 train videos × 3 captions, F=12) with the tiny CLIP X-CLIP:
    real frames.h5, the real ``score_teacher``, the real cache reader;
(b) MSR-VTT-9k size (180k captions × 9k videos, L=32, F=12, D=512): the X-CLIP head's pairs/s is
    measured on random features and extrapolated to the full matrix; the encoders are a
    ViT-B/32-sized CLIP with random weights, timed on a few items and extrapolated; a real float16
    cache of a row subset gives bytes/caption and batch read latency.

Usage: ``python bench/teacher.py [--batch 120] [--epochs 10] [--msrvtt-rows 1024]
[--skip-encoders]`` (default run < 3 min on 2 CPU cores). CPU numbers; on a GPU every compute
term shrinks while the cache read does not, so re-run there before quoting ratios.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import pandas as pd
import torch

from pipeline.cache.reader import TeacherCache
from pipeline.cache.schema import CacheMeta
from pipeline.cache.score import cache_meta, score_teacher
from pipeline.cache.writer import TeacherCacheWriter
from pipeline.data.frames_store import FramesReader, FramesWriter
from pipeline.data.manifest import Manifest
from pipeline.models.clip import load_clip
from pipeline.models.preprocess import normalize_frames
from pipeline.models.teachers import build_teacher
from pipeline.models.teachers.xclip import XClipHead
from pipeline.models.tokenizer import ClipTokenizer

VIT_B32 = ('tiny:{"text_width": 512, "text_layers": 12, "text_heads": 8, "vision_width": 768, '
           '"vision_layers": 12, "vision_heads": 12, "image_size": 224, "patch_size": 32, '
           '"projection_dim": 512}')


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Mean seconds of ``fn`` over ``repeat`` calls (after one warm-up call)."""
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def synth_inputs(root: Path, n_videos: int, caps: int, frames_per_video: int, size: int
                 ) -> tuple[Manifest, FramesReader]:
    """Random frames for ``n_videos`` train videos with ``caps`` captions each."""
    rng = np.random.default_rng(0)
    vids = [f"v{i:04d}" for i in range(n_videos)]
    videos = pd.DataFrame({"video_id": vids, "path": [f"{v}.mp4" for v in vids],
                           "split": "train"})
    captions = pd.DataFrame([{"caption_id": f"{v}_{j}", "video_id": v, "split": "train",
                              "text": f"a shape number {i} moves {j}"}
                             for i, v in enumerate(vids) for j in range(caps)])
    manifest = Manifest(videos, captions, root=root)
    tmp = root / "frames.h5.tmp"
    attrs = {"sampling_policy": "bench", "max_frames": frames_per_video, "resolution": size}
    with FramesWriter.open(tmp, vids, max_frames=frames_per_video, size=size, attrs=attrs,
                           compression="none") as writer:
        for row in range(n_videos):
            writer.write(row, rng.integers(0, 256, (frames_per_video, size, size, 3), np.uint8),
                         np.ones(frames_per_video, bool), frames_per_video)
        writer.finalize(attrs)
    os.replace(tmp, root / "frames.h5")
    return manifest, FramesReader(root / "frames.h5")


def read_latency(cache: TeacherCache, batch: int, n_rows: int, repeat: int = 20) -> float:
    """Mean seconds of one training step's cache read: B random rows × their B videos."""
    rng = np.random.default_rng(1)

    def one() -> None:
        rows = rng.choice(n_rows, size=batch, replace=False)
        cache.batch(rows, cache.caption_video[rows])

    return timed(one, repeat)


def bench_synth(tmp: Path, batch: int, epochs: int) -> list[tuple[str, float, float]]:
    """(a): real scoring + real cache reads vs the online teacher per batch."""
    manifest, frames = synth_inputs(tmp, 480, 3, 12, 32)
    teacher = build_teacher("xclip", load_clip("tiny", seed=0), 32, 12).eval()
    tokenizer = ClipTokenizer.default()
    meta = cache_meta(teacher, checkpoint_sha256="0" * 64, frames=frames, manifest=manifest)
    cpu = torch.device("cpu")
    start = time.perf_counter()
    result = score_teacher(teacher, frames, manifest, out_path=tmp / "cache.h5", meta=meta,
                           tokenizer=tokenizer, device=cpu, batch_size=120)
    score_s = time.perf_counter() - start
    cache = TeacherCache(tmp / "cache.h5")
    n_caps = cache.n_captions
    steps = n_caps // batch
    read_s = read_latency(cache, batch, n_caps)

    ids, mask = tokenizer.encode(
        list(manifest.captions["text"][:batch]), 32)
    pixels, vmask = frames.read(np.arange(batch) % len(frames))
    pixels_t, vmask_t = torch.from_numpy(pixels), torch.from_numpy(vmask)

    @torch.no_grad()
    def online_step() -> None:
        text = teacher.encode_text(torch.as_tensor(ids), torch.as_tensor(mask))
        video = teacher.encode_video(normalize_frames(pixels_t, vmask_t), vmask_t)
        teacher.score(text, video)
        teacher.relevance_logits(text, video)

    online_s = timed(online_step, 3)
    size = (tmp / "cache.h5").stat().st_size
    return [
        ("(a) synthetic: captions × videos", n_caps, result.n_videos),
        ("(a) full-matrix scoring, s (once)", score_s, result.pairs_per_s),
        ("(a) cache bytes / caption", size / n_caps, 0.0),
        ("(a) step: cache read, ms | pairs/s", read_s * 1e3, batch * batch / read_s),
        ("(a) step: online teacher, ms | pairs/s", online_s * 1e3, batch * batch / online_s),
        ("(a) 1 epoch: cached s | online s", steps * read_s, steps * online_s),
        (f"(a) {epochs} epochs: cached s (incl. scoring) | online s",
         score_s + epochs * steps * read_s, epochs * steps * online_s),
    ]


def bench_msrvtt(tmp: Path, batch: int, epochs: int, rows: int, encoders: bool
                 ) -> list[tuple[str, float, float]]:
    """(b): MSR-VTT-9k size; head measured on random features, encoders on a few items."""
    n_c, n_v, dim, words, n_f = 180_000, 9_000, 512, 32, 12
    gen = torch.Generator().manual_seed(0)

    def unit(*shape: int) -> torch.Tensor:
        x = torch.randn(*shape, generator=gen)
        return x / x.norm(dim=-1, keepdim=True)

    head = XClipHead(dim, words, n_f).eval()
    n_t, n_vs = 64, 512
    t = (unit(n_t, dim), unit(n_t, words, dim), torch.ones(n_t, words))
    v = (unit(n_vs, dim), unit(n_vs, n_f, dim), torch.ones(n_vs, n_f))
    with torch.no_grad():
        head_s = timed(lambda: head.score(t[0], t[1], t[2], v[0], v[1], v[2], 100.0), 1)
        step_head_s = timed(lambda: head.score(t[0][:batch], t[1][:batch], t[2][:batch],
                                               v[0][:batch], v[1][:batch], v[2][:batch],
                                               100.0), 2)
    head_rate = n_t * n_vs / head_s
    full_head_s = n_c * n_v / head_rate

    enc_text_s = enc_video_s = 0.0  # per item
    if encoders:
        clip = load_clip(VIT_B32, seed=0).eval()
        teacher = build_teacher("xclip", clip, words, n_f).eval()
        ids = torch.full((8, words), 320)
        ids[:, 0], ids[:, -1] = 49406, 49407
        pixels = torch.randn(2, n_f, 3, 224, 224)
        vmask = torch.ones(2, n_f)
        with torch.no_grad():
            enc_text_s = timed(lambda: teacher.encode_text(ids, torch.ones_like(ids))) / 8
            enc_video_s = timed(lambda: teacher.encode_video(pixels, vmask)) / 2
    online_step_s = batch * (enc_text_s + enc_video_s) + step_head_s
    score_once_s = n_c * enc_text_s + n_v * enc_video_s + full_head_s

    rng = np.random.default_rng(0)
    meta = CacheMeta(teacher_kind="xclip", checkpoint_sha256="0" * 64, frames_digest="bench",
                     manifest_digest="bench", max_words=words, max_frames=n_f, logit_scale=100.0)
    path = tmp / "msrvtt_subset.h5"
    writer = TeacherCacheWriter(path, caption_ids=[f"c{i}" for i in range(rows)],
                                video_ids=[f"v{i}" for i in range(n_v)],
                                caption_video=rng.integers(0, n_v, rows), meta=meta)
    with writer:
        for b in writer.pending_blocks():
            s, e = writer.block_range(b)
            writer.write_block(b, rng.normal(0, 10, (e - s, n_v)).astype(np.float32),
                               rng.normal(size=(e - s, n_f)).astype(np.float32),
                               np.ones((e - s, n_f), bool))
        writer.finalize()
    per_caption = path.stat().st_size / rows
    cache = TeacherCache(path)
    read_s = read_latency(cache, batch, rows)
    steps = n_c // batch
    note = "" if encoders else " (encoders skipped)"
    return [
        ("(b) MSR-VTT: captions × videos", n_c, n_v),
        ("(b) X-CLIP head pairs/s (D=512,L=32,F=12)", head_rate, 0.0),
        ("(b) encoder s/text | s/video (ViT-B/32)" + note, enc_text_s, enc_video_s),
        ("(b) full-matrix scoring, h (once, extrapolated)", score_once_s / 3600,
         n_c * n_v / score_once_s if score_once_s else 0.0),
        ("(b) cache bytes / caption | full cache GB", per_caption, per_caption * n_c / 1e9),
        ("(b) step: cache read, ms | pairs/s", read_s * 1e3, batch * batch / read_s),
        ("(b) step: online teacher, ms | pairs/s", online_step_s * 1e3,
         batch * batch / online_step_s),
        ("(b) 1 epoch: cached h | online h", steps * read_s / 3600, steps * online_step_s / 3600),
        (f"(b) {epochs} epochs: cached h (incl. scoring) | online h",
         (score_once_s + epochs * steps * read_s) / 3600, epochs * steps * online_step_s / 3600),
    ]


@click.command()
@click.option("--batch", type=int, default=120, show_default=True, help="Training batch B.")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--msrvtt-rows", type=int, default=1024, show_default=True,
              help="Rows of the real MSR-VTT-width float16 cache written for read timing.")
@click.option("--skip-encoders", is_flag=True, help="Leave out the ViT-B/32 encoder timing.")
def main(batch: int, epochs: int, msrvtt_rows: int, skip_encoders: bool) -> None:
    """Print the table (two value columns; see each row's label for units)."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_synth(Path(tmp), batch, epochs)
        rows += bench_msrvtt(Path(tmp), batch, epochs, msrvtt_rows, not skip_encoders)
    width = max(len(r[0]) for r in rows)
    click.echo(f"{'measure':<{width}}  {'value 1':>14}  {'value 2':>14}")
    for label, a, b in rows:
        click.echo(f"{label:<{width}}  {a:>14,.3f}  {b:>14,.3f}")
    for tag in ("(a)", "(b)"):
        step = [r for r in rows if r[0].startswith(f"{tag} step: online")][0][1]
        read = [r for r in rows if r[0].startswith(f"{tag} step: cache")][0][1]
        total = [r for r in rows if r[0].startswith(f"{tag} {epochs} epochs")][0]
        click.echo(f"{tag} per-step speed-up (online / cached read): {step / read:,.1f}x; "
                   f"{epochs}-epoch total incl. one-off scoring: {total[2] / total[1]:,.2f}x")


if __name__ == "__main__":
    main()
