"""Which source frames the official loader returns, for whole videos and start/end clips.

Usage: OFFICIAL_DIR OUT_JSON. Whole videos go through ``MSRVTT_DataLoader._get_rawvideo``, clips
through ``DiDeMo_DataLoader._get_rawvideo`` (the path DiDeMo and ActivityNet use), both reading
with OpenCV via ``RawVideoExtractorCV2``. Frame i of each test video shows i in binary (16 blocks
of 8x8 px, bit b white or black); the loader's preprocessing transform is replaced by one that
reads that index back from the image OpenCV returns, so the loader's own index arithmetic,
seeking, slicing and masking run unchanged.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, sys.argv[1])
_tv, _tvt = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
for _name in ("Compose", "Resize", "CenterCrop", "ToTensor", "Normalize"):  # unused here
    setattr(_tvt, _name, lambda *a, **k: None)
_tv.transforms = _tvt  # type: ignore[attr-defined]
sys.modules.update({"torchvision": _tv, "torchvision.transforms": _tvt})
np.long = np.int64  # type: ignore[attr-defined]  # removed from numpy 1.24; the loaders use it
np.float = np.float64  # type: ignore[attr-defined]

import cv2  # noqa: E402
import imageio_ffmpeg  # noqa: E402
from dataloaders.dataloader_didemo_retrieval import DiDeMo_DataLoader  # noqa: E402
from dataloaders.dataloader_msrvtt_retrieval import MSRVTT_DataLoader  # noqa: E402
from dataloaders.rawvideo_util import RawVideoExtractorCV2  # noqa: E402

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
SIDE, BLOCK = 32, 8
CLIPS = [None, (0, 31), (0, 14), (0, 4), (2.7, 9.2), (3, 3), (7.9, 2.2), (5.5, 100), (-1.5, 4),
         (12.2, 13.9), (13, 20)]
VIDEOS = (("25", 350), ("30000/1001", 420))


def indexed_frames(n: int) -> np.ndarray:
    frames = np.full((n, SIDE, SIDE, 3), 16, np.uint8)
    for i in range(n):
        for b in range(16):
            if (i >> b) & 1:
                r, c = divmod(b, 4)
                frames[i, r * BLOCK:(r + 1) * BLOCK, c * BLOCK:(c + 1) * BLOCK] = 235
    return frames


def read_index(img: object) -> int:
    arr = np.asarray(img, dtype=np.float64)
    scale = arr.shape[0] / SIDE
    value = 0
    for b in range(16):
        r, c = divmod(b, 4)
        if arr[int((r + 0.5) * BLOCK * scale), int((c + 0.5) * BLOCK * scale)].mean() > 125:
            value |= 1 << b
    return value


def make_video(path: Path, fps: str, n_frames: int) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
                    "-pix_fmt", "rgb24", "-s", f"{SIDE}x{SIDE}", "-r", fps, "-i", "pipe:",
                    "-threads", "1", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset",
                    "ultrafast", str(path)], input=indexed_frames(n_frames).tobytes(), check=True)
    raw = subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-i", str(path), "-f",
                          "rawvideo", "-pix_fmt", "rgb24", "pipe:"], check=True,
                         capture_output=True).stdout
    every = np.frombuffer(raw, np.uint8).reshape(-1, SIDE, SIDE, 3)
    assert [read_index(f) for f in every] == list(range(n_frames))


def extractor() -> RawVideoExtractorCV2:
    ext = RawVideoExtractorCV2(framerate=1, size=1)
    ext.transform = lambda image: np.full((3, 1, 1), float(read_index(image)))
    return ext


def official_indices(path: Path, clip: tuple | None, max_frames: int) -> tuple[list[int], int]:
    me = types.SimpleNamespace(max_frames=max_frames, slice_framepos=2, frame_order=0,
                               rawVideoExtractor=extractor(), video_path=str(path.parent),
                               video_dict={"v": str(path)})
    if clip is None:
        video, mask = MSRVTT_DataLoader._get_rawvideo(me, [path.stem])
    else:  # the DiDeMo loader first stores start/end in an integer array
        start, end = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
        start[0], end[0] = clip
        video, mask = DiDeMo_DataLoader._get_rawvideo(me, "v", start, end)
    n = int(mask[0].sum())
    return video[0, :n, 0, 0, 0, 0].astype(int).tolist(), n


videos = []
with tempfile.TemporaryDirectory() as tmp:
    for fps, n_frames in VIDEOS:
        path = Path(tmp) / f"v{fps.replace('/', '_')}.mp4"
        make_video(path, fps, n_frames)
        cap = cv2.VideoCapture(str(path))
        entry = {"fps": fps, "size": [SIDE, SIDE], "n_frames": n_frames,
                 "cv2_frame_count": int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
                 "cv2_fps": cap.get(cv2.CAP_PROP_FPS), "cases": []}
        for clip in CLIPS:
            for max_frames in (64, 5):
                indices, n_real = official_indices(path, clip, max_frames)
                entry["cases"].append({"start": None if clip is None else clip[0],
                                       "end": None if clip is None else clip[1],
                                       "max_frames": max_frames, "indices": indices,
                                       "n_real": n_real})
        videos.append(entry)
out = {"source": {"repo": "ruc-aimc-lab/TeachCLIP",
                  "commit": "23c991fd7e4fe7bdbd7eb431f78e8e1340fdc736",
                  "paths": ["dataloaders/rawvideo_util.py (RawVideoExtractorCV2.video_to_tensor)",
                            "dataloaders/dataloader_msrvtt_retrieval.py "
                            "(MSRVTT_DataLoader._get_rawvideo)",
                            "dataloaders/dataloader_didemo_retrieval.py "
                            "(DiDeMo_DataLoader._get_rawvideo)"],
                  "opencv": cv2.__version__, "framerate": 1, "slice_framepos": 2},
       "how": (__doc__ or "").strip(),
       "videos": videos,
       "note": "start/end are what the manifest gives; the DiDeMo loader first stores them in an "
               "integer array (truncation). A case with a negative start makes the official "
               "loader fail (its clamp turns the start into the float 0.0, which "
               "video_to_tensor's isinstance(int) assertion rejects), so it returns no frames: "
               "indices [] and n_real 0."}
Path(sys.argv[2]).write_text(json.dumps(out, indent=1), encoding="utf-8")
