"""Retrieval cost: the student's one-vector index against the teachers' cross-grained heads.

Why: the whole point of TeachCLIP (method §1) is that the student keeps CLIP4Clip's search cost
(one D-vector per video, one dot product per text × video) while X-CLIP, TS2-Net and X-Pool need
per-frame (and per-word) features and an O(L·F·D) or O(F·D) head per pair. This benchmark puts
numbers on it, in one run, on the same machine, for N videos of random unit vectors / random
features of the real shapes (D=512, F=12, L=32 by default).

* student: exact search through the serving code ``pipeline.retrieval.index.top_k`` (numpy,
  chunked over N so 1M videos never need more than ``chunk_rows × D`` floats at once) on the CPU;
  on CUDA the same chunked matrix product + top-k in torch. Storage float16 or float32.
* teachers: ``Teacher.score`` (the real heads, e.g. ``XClipHead.score`` through
  ``XClipTeacher.score``) from per-video features of the teacher's own feature dict (shapes
  taken from the teacher's ``encode_video``/``encode_text``), chunked over videos, stored in the
  same dtype and converted to float32 per chunk. Heads are slow, so they run on a subset
  (``--teacher-videos``, ``--teacher-queries``) and the cost is extrapolated linearly in N and
  in queries (the table says so in its last column).

Usage: ``python bench/retrieval.py [--sizes 10000,100000,1000000] [--queries 1000]
[--storage float16,float32] [--teachers xclip,ts2net,xpool] [--teacher-videos 10000]
[--teacher-queries 4] [--device cpu|cuda]``. The default run takes 2-3 minutes on 2 CPU cores
and about 3.5 GiB of RAM.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

try:
    from bench.common import Column, format_table, human_bytes, machine_line, synchronize, timed
except ModuleNotFoundError:  # run as ``python bench/retrieval.py``: bench/ is on sys.path
    from common import Column, format_table, human_bytes, machine_line, synchronize, timed

from pipeline.models.clip import load_clip
from pipeline.models.teachers.base import DEFAULT_CHUNK_PAIRS, Features
from pipeline.retrieval.index import DEFAULT_CHUNK_ROWS, top_k

TEACHER_MODULES = {"xclip": "pipeline.models.teachers.xclip",
                   "ts2net": "pipeline.models.teachers.ts2net",
                   "xpool": "pipeline.models.teachers.xpool"}
STORAGE = {"float16": torch.float16, "float32": torch.float32}
#: Real-looking caption length for X-CLIP's word mask (MSR-VTT captions are ~10 BPE tokens).
WORDS_USED = 12

COLUMNS = [
    Column("model", "model", align="<"),
    Column("storage", "storage", align="<"),
    Column("bytes_per_video", "bytes/video", "{:,}"),
    Column("n_videos", "N videos", "{:,}"),
    Column("index_size", "index size"),
    Column("one_query_ms", "1 query (ms)", "{:,.2f}"),
    Column("batch_ms_per_query", "per query, batch (ms)", "{:,.3f}"),
    Column("ratio_one", "teacher/student 1q", "{:,.0f}x"),
    Column("ratio_batch", "teacher/student batch", "{:,.0f}x"),
    Column("how", "how", align="<"),
]


@dataclass
class TeacherTiming:
    """One measurement of a teacher head on ``n_videos`` videos."""

    n_videos: int
    n_queries: int
    one_query_s: float
    batch_s: float  # for n_queries queries


def available_teachers(requested: Sequence[str]) -> list[str]:
    """The requested teachers whose module exists in this checkout (others are skipped)."""
    return [k for k in requested if importlib.util.find_spec(TEACHER_MODULES[k]) is not None]


# ------------------------------------------------------------------------------ student


def random_unit(n: int, dim: int, generator: torch.Generator, chunk: int = 1 << 18
                ) -> torch.Tensor:
    """[n, dim] float32 rows uniformly on the sphere, made in chunks (bounded temporaries) on
    the generator's device."""
    out = torch.empty(n, dim, device=generator.device)
    for start in range(0, n, chunk):
        block = torch.randn(min(chunk, n - start), dim, generator=generator,
                            device=generator.device)
        out[start:start + len(block)] = torch.nn.functional.normalize(block, dim=-1)
    return out


def torch_top_k(index: torch.Tensor, queries: torch.Tensor, k: int, chunk_rows: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked exact top-k on a device (as ``pipeline.retrieval.index.top_k``, ties aside)."""
    best_s: torch.Tensor | None = None
    best_i = torch.empty(0)
    q = queries.to(index.dtype)
    for start in range(0, index.shape[0], chunk_rows):
        scores = (q @ index[start:start + chunk_rows].T).float()
        vals, idx = scores.topk(min(k, scores.shape[1]), dim=1)
        idx = idx + start
        if best_s is None:
            best_s, best_i = vals, idx
            continue
        cand_s, cand_i = torch.cat([best_s, vals], 1), torch.cat([best_i, idx], 1)
        best_s, pos = cand_s.topk(min(k, cand_s.shape[1]), dim=1)
        best_i = cand_i.gather(1, pos)
    assert best_s is not None
    return best_s, best_i


def student_searcher(index: torch.Tensor, device: torch.device, k: int, chunk_rows: int
                     ) -> Callable[[torch.Tensor], Any]:
    """Search function over ``index``: the serving code on CPU, torch on CUDA."""
    if device.type == "cpu":
        array = index.numpy()
        return lambda q: top_k(array, q.numpy(), k, chunk_rows)
    return lambda q: torch_top_k(index, q, k, chunk_rows)


# ------------------------------------------------------------------------------ teachers


def feature_shapes(kind: str, dim: int, max_words: int, max_frames: int
                   ) -> tuple[Any, dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """The teacher (random weights, tiny CLIP with projection ``dim``) and per-item feature
    shapes read from its own ``encode_text``/``encode_video`` (so they follow the code)."""
    from pipeline.models.teachers import build_teacher

    towers = load_clip("tiny:" + json.dumps({"projection_dim": dim}), seed=0)
    teacher = build_teacher(kind, towers, max_words, max_frames).eval()
    size = towers.image_size
    with torch.no_grad():
        video = teacher.encode_video(torch.zeros(1, max_frames, 3, size, size),
                                     torch.ones(1, max_frames))
        text = teacher.encode_text(torch.ones(1, max_words, dtype=torch.long),
                                   torch.ones(1, max_words, dtype=torch.long))
    return (teacher, {k: tuple(v.shape[1:]) for k, v in text.items()},
            {k: tuple(v.shape[1:]) for k, v in video.items()})


def is_mask(name: str) -> bool:
    return "mask" in name


def bytes_per_item(shapes: dict[str, tuple[int, ...]], dtype: torch.dtype) -> int:
    """Storage of one item's features: floats in ``dtype``, masks as one byte per entry."""
    item = torch.empty((), dtype=dtype).element_size()
    return sum(int(np.prod(s)) * (1 if is_mask(k) else item) for k, s in shapes.items())


def random_features(shapes: dict[str, tuple[int, ...]], n: int, dtype: torch.dtype,
                    generator: torch.Generator, device: torch.device, text: bool = False
                    ) -> Features:
    """Random features of the given per-item shapes (vectors normalised, masks realistic)."""
    out: Features = {}
    for name, shape in shapes.items():
        if is_mask(name):
            mask = torch.ones(n, *shape, device=device)
            if text and len(shape) == 1 and shape[0] > WORDS_USED:
                mask[:, WORDS_USED:] = 0
            out[name] = mask
        else:
            x = torch.randn(n, *shape, generator=generator, device=device)
            out[name] = torch.nn.functional.normalize(x, dim=-1).to(dtype)
    return out


def teacher_scorer(teacher: Any, video: Features, chunk_videos: int, chunk_pairs: int, k: int
                   ) -> Callable[[Features], torch.Tensor]:
    """Score text features against every stored video, chunk by chunk, then take the top-k."""

    def run(text: Features) -> torch.Tensor:
        n = next(iter(video.values())).shape[0]
        parts = []
        for start in range(0, n, chunk_videos):
            chunk = {name: t[start:start + chunk_videos].float() for name, t in video.items()}
            parts.append(teacher.score(text, chunk, chunk_pairs=chunk_pairs))
        scores = torch.cat(parts, dim=1)
        return scores.topk(min(k, scores.shape[1]), dim=1).indices

    return run


def time_teacher(kind: str, args: argparse.Namespace, storage: str, n_videos: int,
                 device: torch.device) -> tuple[TeacherTiming, int]:
    """Time one query and a batch of ``--teacher-queries`` over ``n_videos`` (fresh features)."""
    teacher, text_shapes, video_shapes = feature_shapes(kind, args.dim, args.words, args.frames)
    teacher = teacher.to(device)
    gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    dtype = STORAGE[storage]
    video = random_features(video_shapes, n_videos, dtype, gen, device)
    text = random_features(text_shapes, args.teacher_queries, torch.float32, gen, device,
                           text=True)
    score = teacher_scorer(teacher, video, args.teacher_chunk_videos, args.chunk_pairs, args.k)
    with torch.inference_mode():
        first = {name: t[:1] for name, t in text.items()}
        score(first)  # warm-up (allocator, kernels)
        one = timed(lambda: score(first), device, args.repeats)
        batch = timed(lambda: score(text), device, 1)
    gc.collect()
    return (TeacherTiming(n_videos, args.teacher_queries, one, batch),
            bytes_per_item(video_shapes, dtype))


# ------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,1000000",
                   help="comma-separated numbers of videos in the index")
    p.add_argument("--queries", type=int, default=1000, help="queries in the student batch")
    p.add_argument("--storage", default="float16,float32", help="index/feature storage dtypes")
    p.add_argument("--teachers", default="xclip,ts2net,xpool",
                   help="teacher heads to time (those whose module exists)")
    p.add_argument("--teacher-videos", type=int, default=10000,
                   help="videos the teacher heads actually score (larger N is extrapolated)")
    p.add_argument("--teacher-queries", type=int, default=4,
                   help="queries in the teachers' batch (per-query cost extrapolated to "
                        "--queries)")
    p.add_argument("--teacher-chunk-videos", type=int, default=16384,
                   help="videos converted to float32 and scored per call of Teacher.score")
    p.add_argument("--chunk-pairs", type=int, default=DEFAULT_CHUNK_PAIRS,
                   help="Teacher.score pair budget per block (the teachers' default)")
    p.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS,
                   help="student index rows per block (pipeline.retrieval.index default)")
    p.add_argument("--dim", type=int, default=512, help="embedding width D")
    p.add_argument("--frames", type=int, default=12, help="frames per video F")
    p.add_argument("--words", type=int, default=32, help="max words L")
    p.add_argument("--k", type=int, default=10, help="top-k returned per query")
    p.add_argument("--repeats", type=int, default=3, help="repeats of the 1-query timings")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (numpy's BLAS follows OMP/OPENBLAS_NUM_THREADS)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark, print the table, return its rows (one dict per row)."""
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    storages = [s.strip() for s in args.storage.split(",")]
    for s in storages:
        if s not in STORAGE:
            raise SystemExit(f"unknown storage {s!r}; use float16 and/or float32")
    requested = [t.strip() for t in args.teachers.split(",") if t.strip()]
    unknown = sorted(set(requested) - set(TEACHER_MODULES))
    if unknown:
        raise SystemExit(f"unknown teacher(s) {unknown}; known: {sorted(TEACHER_MODULES)}")
    kinds = available_teachers(requested)
    started = time.perf_counter()

    gen = torch.Generator(device=device).manual_seed(args.seed)
    queries = random_unit(args.queries, args.dim, gen)
    base = random_unit(max(sizes), args.dim, gen)
    rows: list[dict[str, Any]] = []
    student_cost: dict[tuple[str, int], tuple[float, float]] = {}
    for storage in storages:
        full = base.to(device=device, dtype=STORAGE[storage])
        item_bytes = args.dim * full.element_size()
        for n in sizes:
            search = student_searcher(full[:n], device, args.k, args.chunk_rows)
            search(queries[:1])  # warm-up
            one = timed(lambda search=search: search(queries[:1]), device, args.repeats)
            batch = timed(lambda search=search: search(queries), device, 1) / args.queries
            student_cost[(storage, n)] = (one, batch)
            rows.append({"model": "student (1 vector/video)", "storage": storage,
                         "bytes_per_video": item_bytes, "n_videos": n,
                         "index_size": human_bytes(item_bytes * n),
                         "one_query_ms": one * 1e3, "batch_ms_per_query": batch * 1e3,
                         "ratio_one": None, "ratio_batch": None,
                         "how": f"measured: 1 query, {args.queries} queries"})
        del full
        gc.collect()

    for kind in kinds:
        for storage in storages:
            measured: dict[int, TeacherTiming] = {}
            for n in sizes:
                n_run = min(n, args.teacher_videos)
                if n_run not in measured:
                    measured[n_run], item_bytes = time_teacher(kind, args, storage, n_run,
                                                               device)
                t = measured[n_run]
                scale = n / t.n_videos
                one = t.one_query_s * scale
                batch = t.batch_s / t.n_queries * scale
                s_one, s_batch = student_cost[(storage, n)]
                if n_run == n and t.n_queries >= args.queries:
                    how = "measured"
                elif n_run == n:
                    how = f"measured; batch from {t.n_queries} queries"
                else:
                    how = (f"extrapolated from {t.n_videos:,} videos"
                           f" ({t.n_queries} queries in the batch)")
                rows.append({"model": f"{kind} head", "storage": storage,
                             "bytes_per_video": item_bytes, "n_videos": n,
                             "index_size": human_bytes(item_bytes * n),
                             "one_query_ms": one * 1e3, "batch_ms_per_query": batch * 1e3,
                             "ratio_one": one / s_one, "ratio_batch": batch / s_batch,
                             "how": how})
    synchronize(device)
    order = {s: i for i, s in enumerate(storages)}
    rows.sort(key=lambda r: (r["n_videos"], order[r["storage"]]))
    print(f"retrieval cost on {machine_line(device)}")
    print(f"D={args.dim} F={args.frames} L={args.words} top-{args.k}; student batch "
          f"{args.queries} queries; teacher heads on {args.teacher_videos:,} videos, batch "
          f"{args.teacher_queries} queries, chunk_pairs={args.chunk_pairs}; skipped teachers: "
          f"{sorted(set(requested) - set(kinds)) or 'none'}")
    print(format_table(rows, COLUMNS))
    print(f"total {time.perf_counter() - started:.0f} s")
    return rows


if __name__ == "__main__":
    main()
