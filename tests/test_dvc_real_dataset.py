"""The README's real-dataset route, end to end, on the project's real dvc.yaml.

A tiny MSR-VTT in the layout the dataset ships (``MSRVTT_data.json``, the 9k train CSV, the
JSFUSION test CSV, encoded mp4s) and an OpenAI-format CLIP state dict (tiny sizes) are written
where ``params.msrvtt9k.yaml`` expects them; the params file used differs from the shipped one
only in sizes. Then, as a lab would:

1. ``dvc repro`` runs every stage (dataset import, frames, CLIP from the user's weights, two
   teachers trained and scored, baselines, students, report);
2. editing student-only code makes ``dvc status`` list the student stages and no teacher stage;
3. ``dvc push``, a colleague's ``git clone`` + ``dvc pull``: nothing to rerun; adding a student is
   a params edit, and ``dvc repro`` then trains it from the pulled caches without running any
   teacher command (the cache file keeps its inode and mtime).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from dvc_project import REPO, make_project, run, stages_run

from pipeline.data.synth import encode_frames

SHIPPED = REPO / "params.msrvtt9k.yaml"
#: The only keys the test's params may change: sizes (and worker counts) for a 2-core CPU run.
SIZE_KEYS = {"max_frames", "size", "workers", "batch_size", "max_words", "epochs"}
SIZES = [  # (section path, key, value)
    (("frames",), "max_frames", 4), (("frames",), "size", 32), (("frames",), "workers", 1),
    (("teacher", "train"), "batch_size", 8), (("teacher", "train"), "max_words", 16),
    (("teacher", "train"), "workers", 0), (("teacher", "score"), "batch_size", 8),
    (("teachers", "xclip"), "epochs", 1), (("teachers", "ts2net"), "epochs", 1),
    (("teachers", "ts2net"), "batch_size", 8), (("student", "train"), "batch_size", 8),
    (("student", "train"), "max_words", 16), (("student", "train"), "epochs", 1),
    (("student", "train"), "workers", 0),
]
N_TRAIN, N_TEST = 16, 4


def small_params() -> str:
    """params.msrvtt9k.yaml with only the sizes changed (checked by comparing the two trees)."""
    params = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    for path, key, value in SIZES:
        node = params
        for part in path:
            node = node[part]
        assert key in node or path[0] == "teachers", f"{path}.{key} not in the shipped file"
        node[key] = value
    return yaml.safe_dump(params, sort_keys=False)


def _leaf_diff(a: object, b: object, key: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return set().union(*(_leaf_diff(a.get(k), b.get(k), k) for k in set(a) | set(b)))
    return set() if a == b else {key}


def write_msrvtt(root: Path) -> None:
    """MSR-VTT as it ships: annotation JSON + CSVs and real encoded videos."""
    ann = root / "Annotations"
    ann.mkdir(parents=True)
    (root / "VideoData").mkdir()
    rng = np.random.default_rng(0)
    sentences = []
    for i in range(N_TRAIN + N_TEST):
        colour = rng.integers(0, 255, 3)
        frames = np.zeros((15, 40, 48, 3), np.uint8)
        for t in range(15):  # a square moving right over a coloured background
            frames[t] = colour
            frames[t, 10:26, 2 * t:2 * t + 16] = 255 - colour
        encode_frames(frames, root / "VideoData" / f"video{i}.mp4", fps=5)
        sentences += [{"caption": f"clip {i} shows a square moving right", "video_id":
                       f"video{i}", "sen_id": 2 * i},
                      {"caption": f"a square crosses scene {i}", "video_id": f"video{i}",
                       "sen_id": 2 * i + 1}]
    data = {"info": {"year": 2016},
            "videos": [{"id": i, "video_id": f"video{i}"} for i in range(N_TRAIN + N_TEST)],
            "sentences": sentences}
    (ann / "MSRVTT_data.json").write_text(json.dumps(data), encoding="utf-8")
    (ann / "MSRVTT_train.9k.csv").write_text(
        "video_id\n" + "".join(f"video{i}\n" for i in range(N_TRAIN)), encoding="utf-8")
    (ann / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\n" + "".join(
            f"ret{i},msr{i},video{i},a square moves right in video {i}\n"
            for i in range(N_TRAIN, N_TRAIN + N_TEST)), encoding="utf-8")


def write_openai_clip(path: Path) -> None:
    """An OpenAI-format CLIP state dict (the layout of ViT-B-32.pt) at tiny sizes."""
    g = torch.Generator().manual_seed(0)
    width, ctx, image, patch, embed = 32, 16, 32, 16, 32

    def rnd(*shape: int, std: float = 0.05) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    def block(prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}attn.in_proj_weight": rnd(3 * width, width),
                f"{prefix}attn.in_proj_bias": rnd(3 * width),
                f"{prefix}attn.out_proj.weight": rnd(width, width),
                f"{prefix}attn.out_proj.bias": rnd(width),
                f"{prefix}ln_1.weight": 1 + rnd(width), f"{prefix}ln_1.bias": rnd(width),
                f"{prefix}ln_2.weight": 1 + rnd(width), f"{prefix}ln_2.bias": rnd(width),
                f"{prefix}mlp.c_fc.weight": rnd(4 * width, width),
                f"{prefix}mlp.c_fc.bias": rnd(4 * width),
                f"{prefix}mlp.c_proj.weight": rnd(width, 4 * width),
                f"{prefix}mlp.c_proj.bias": rnd(width)}

    grid = image // patch
    state = {"token_embedding.weight": rnd(49408, width, std=0.02),
             "positional_embedding": rnd(ctx, width, std=0.01),
             "ln_final.weight": 1 + rnd(width), "ln_final.bias": rnd(width),
             "text_projection": rnd(width, embed), "logit_scale": torch.tensor(math.log(1 / 0.07)),
             "visual.conv1.weight": rnd(width, 3, patch, patch),
             "visual.class_embedding": rnd(width), "visual.positional_embedding":
             rnd(grid * grid + 1, width), "visual.ln_pre.weight": 1 + rnd(width),
             "visual.ln_pre.bias": rnd(width), "visual.ln_post.weight": 1 + rnd(width),
             "visual.ln_post.bias": rnd(width), "visual.proj": rnd(width, embed),
             **block("transformer.resblocks.0."), **block("visual.transformer.resblocks.0.")}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


def test_small_params_differ_from_the_shipped_recipe_only_in_sizes() -> None:
    shipped = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    changed = _leaf_diff(shipped, yaml.safe_load(small_params()))
    assert changed and changed <= SIZE_KEYS, changed


@pytest.mark.slow
def test_msrvtt_route_through_dvc_repro_and_lab_sharing(tmp_path: Path) -> None:
    alice = make_project(tmp_path / "alice", small_params())
    write_msrvtt(alice / "data/raw/msrvtt")
    weights = alice / "data/raw/ViT-B-32.pt"
    write_openai_clip(weights)

    ran = stages_run(run(["dvc", "repro"], alice))
    expected = {"dataset", "frames", "clip", "teacher_train@xclip", "teacher_train@ts2net",
                "teacher_score@xclip", "teacher_score@ts2net", "baseline@baseline_meanP",
                "baseline@baseline_seqTransf", "student@xclip", "student@ts2net",
                "student@xclip_ts2net", "report"}
    assert set(ran) == expected
    videos = (alice / "data/dataset/videos.csv").read_text().splitlines()
    assert len(videos) == 1 + N_TRAIN + N_TEST
    clip = json.loads((alice / "data/clip/summary.json").read_text())
    assert clip["source_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    results = (alice / "data/results/results.md").read_text()
    for row in ("teacher_xclip", "teacher_ts2net", "baseline_meanP", "student_xclip_ts2net"):
        assert f"| {row} |" in results
    assert "up to date" in run(["dvc", "status"], alice)

    # 2. student-only code: the students are stale, no teacher stage is
    student_code = alice / "pipeline/train/student.py"
    original = student_code.read_text()
    student_code.write_text(original + "\n# a lab's edit to the student's training code\n")
    status = run(["dvc", "status"], alice)
    stale = set(re.findall(r"^(\S+):\s*$", status, flags=re.M))
    assert "student@xclip" in stale and "baseline@baseline_meanP" in stale
    assert not {s for s in stale if s.startswith(("teacher_", "frames", "dataset", "clip"))}
    student_code.write_text(original)

    # 3. share through a DVC remote; a colleague pulls and trains a new student
    remote = tmp_path / "lab-remote"
    run(["dvc", "remote", "add", "-d", "lab", str(remote)], alice)
    run(["dvc", "push"], alice)
    run(["git", "add", "-A"], alice)
    run(["git", "commit", "-q", "-m", "msrvtt pipeline"], alice)
    assert "cache.h5" not in run(["git", "ls-files"], alice)
    bob = tmp_path / "bob"
    run(["git", "clone", "-q", str(alice), str(bob)], tmp_path)
    shutil.copytree(alice / "data/raw", bob / "data/raw")  # the lab's shared dataset mount
    run(["dvc", "pull"], bob)
    cache = bob / "data/teachers/xclip/cache/cache.h5"
    before = cache.stat()
    assert "up to date" in run(["dvc", "status"], bob)
    params = yaml.safe_load((bob / "params.yaml").read_text())
    params["students"]["xclip_seed7"] = {"teachers": ["xclip"], "seed": 7}
    (bob / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = stages_run(run(["dvc", "repro"], bob))
    assert set(ran) == {"student@xclip_seed7", "report"}
    after = cache.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert "| student_xclip_seed7 |" in (bob / "data/results/results.md").read_text()
