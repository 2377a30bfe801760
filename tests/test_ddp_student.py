"""Two gloo processes doing one distillation step == one process on the global batch.

Why this matters: the contrastive and distillation losses need the *global* batch (features are
all-gathered with gradients), and DDP then averages parameter gradients. If the gather's backward
were the official one (local slice only) the gradient would be 1/world_size too small; if the
teacher targets were per-rank the loss would differ. Both would show up here.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.cache.reader import TeacherCache
from pipeline.data.frames_store import FramesReader
from pipeline.data.manifest import Manifest
from pipeline.distributed import DistInfo
from pipeline.models.clip import load_clip
from pipeline.models.student import Student
from pipeline.models.tokenizer import ClipTokenizer
from pipeline.train.data_loading import GlobalBatchDataset, build_training_items
from pipeline.train.student import StudentStep, StudentTrainConfig, student_loss_step
from tests.student_fixtures import make_cache, make_frames, make_manifest

GLOBAL_BATCH = 8


def one_step(root: Path, info: DistInfo) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and gradients (after DDP averaging when distributed) of the first global batch."""
    torch.manual_seed(0)
    towers = load_clip("tiny", seed=0)
    towers.freeze_per_spec()
    student = Student(towers)
    student.train()  # the tiny CLIP and the student heads have no dropout
    manifest = Manifest.load(root / "manifest")
    frames = FramesReader(root / "frames.h5")
    cache = TeacherCache(root / "xclip.h5")
    config = StudentTrainConfig()
    items, _ = build_training_items(manifest, frames, ClipTokenizer.default(), config.max_words,
                                    [cache])
    dataset = GlobalBatchDataset(items, frames, GLOBAL_BATCH, seed=1, rank=info.rank,
                                 world_size=info.world_size)
    step_model: torch.nn.Module = StudentStep(student)
    if info.enabled:
        step_model = torch.nn.parallel.DistributedDataParallel(step_model)
    parts = student_loss_step(step_model, student, dataset[0], config, torch.device("cpu"))
    parts["total"].backward()
    assert float(parts["coarse"]) > 0 and float(parts["fine"]) > 0  # distillation included
    grads = {name: p.grad.detach().clone() for name, p in student.named_parameters()
             if p.grad is not None}
    return float(parts["total"].detach()), grads


def _worker(rank: int, root: str, store: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        loss, grads = one_step(Path(root), DistInfo(rank=rank, world_size=2))
        torch.save({"loss": loss, "grads": grads}, Path(root) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_step_equals_global_batch(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path)
    frames = make_frames(tmp_path / "frames.h5", list(manifest.videos["video_id"]),
                         short=["v01", "v05"])  # padded frames take part too
    make_cache(tmp_path / "xclip.h5", manifest, frames)
    mp.spawn(_worker, args=(str(tmp_path), str(tmp_path / "store")), nprocs=2, join=True)
    ref_loss, ref_grads = one_step(tmp_path, DistInfo())
    assert len(ref_grads) > 20
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert abs(got["loss"] - ref_loss) < 1e-5
        assert set(got["grads"]) == set(ref_grads)
        for name, grad in ref_grads.items():
            torch.testing.assert_close(got["grads"][name], grad, atol=1e-5, rtol=1e-4,
                                       msg=lambda m, n=name: f"{n}: {m}")
