"""``teachclip index | search | embed``, the embeddings store and the bigfile export."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import h5py
import imageio_ffmpeg
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.data.frames_store import FramesReader
from pipeline.errors import InputError
from pipeline.models.checkpoint import load_model, save_model
from pipeline.models.clip import load_clip
from pipeline.models.preprocess import normalize_frames
from pipeline.models.student import Student
from pipeline.models.tokenizer import ClipTokenizer
from pipeline.retrieval.bigfile import BigFile, write_bigfile
from pipeline.retrieval.index import read_index, top_k
from stages.cli import main
from tests.student_fixtures import MAX_WORDS, make_frames, make_manifest

QUERY = "a blue square moving 0"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("index")
    manifest = make_manifest(root, n_train=1, n_val=0, n_test=5)
    make_frames(root / "frames.h5", list(manifest.videos["video_id"]), short=["v02"])
    for seed in (0, 1):
        (root / f"model{seed}").mkdir()
        save_model(root / f"model{seed}" / "model.pt", Student(load_clip("tiny", seed=seed)),
                   extra={"train_config": {"max_words": MAX_WORDS}})
    out = root / "emb.h5"
    result = CliRunner().invoke(main, [
        "index", "--model", str(root / "model0"), "--frames", str(root / "frames.h5"),
        "--manifest", str(root / "manifest"), "--split", "test", "--out", str(out),
        "--bigfile", str(root / "bigfile"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return {"root": root, "index": out}


def test_index_holds_normalised_student_embeddings(world: dict) -> None:
    index = read_index(world["index"])
    assert index.video_ids == [f"v{i:02d}" for i in range(1, 6)]
    assert index.attrs["schema"] == "teachclip.embeddings" and index.attrs["dim"] == 64
    assert index.attrs["frames_digest"] == FramesReader(world["root"] / "frames.h5").digest
    np.testing.assert_allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-5)
    # independent recomputation from frames.h5 with the model itself
    model, _ = load_model(world["root"] / "model0" / "model.pt")
    frames = FramesReader(world["root"] / "frames.h5")
    pixels, mask = frames.read([frames.row_of(v) for v in index.video_ids])
    mask_t = torch.from_numpy(mask)
    with torch.no_grad():
        ref = model.encode_video(normalize_frames(torch.from_numpy(pixels), mask_t), mask_t)
    np.testing.assert_allclose(index.embeddings, ref.embedding.numpy(), atol=1e-5)


def test_search_ranks_like_brute_force(world: dict) -> None:
    result = CliRunner().invoke(main, ["search", QUERY, "--index", str(world["index"]),
                                       "--model", str(world["root"] / "model0"), "--top-k", "3",
                                       "--json", "--chunk-rows", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    index = read_index(world["index"])
    model, _ = load_model(world["root"] / "model0" / "model.pt")
    ids, mask = ClipTokenizer.default().encode([QUERY], MAX_WORDS)
    with torch.no_grad():
        q = torch.nn.functional.normalize(model.encode_text(ids, mask), dim=-1).numpy()[0]
    scores = index.embeddings.astype(np.float32) @ q
    order = np.argsort(-scores, kind="stable")[:3]
    assert [h["video_id"] for h in hits] == [index.video_ids[i] for i in order]
    np.testing.assert_allclose([h["score"] for h in hits], scores[order], atol=1e-5)
    other = CliRunner().invoke(main, ["search", QUERY, "--index", str(world["index"]),
                                      "--model", str(world["root"] / "model1"), "--device",
                                      "cpu"])
    assert other.exit_code == 1 and "model sha256" in other.output


def test_top_k_chunked_is_exact_with_ties() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 8)).astype(np.float32)
    emb[[3, 17, 41]] = emb[9]  # ties with row 9
    queries = np.stack([emb[9], rng.normal(size=8).astype(np.float32)])
    for chunk in (1, 7, 50, 1000):
        scores, rows = top_k(emb, queries, 6, chunk_rows=chunk)
        for i, q in enumerate(queries):
            full = emb @ q
            expected = np.lexsort((np.arange(50), -full))[:6]
            assert rows[i].tolist() == expected.tolist()
            np.testing.assert_allclose(scores[i], full[expected], rtol=1e-6)
    assert rows[0][:4].tolist() == [3, 9, 17, 41]


def test_bigfile_round_trip(world: dict, tmp_path: Path) -> None:
    index = read_index(world["index"])
    big = BigFile(world["root"] / "bigfile")
    assert big.ids == index.video_ids and big.shape == (5, 64)
    np.testing.assert_array_equal(big.read_all(), index.embeddings.astype(np.float32))
    np.testing.assert_array_equal(big.read(["v05", "v01"]), big.read_all()[[4, 0]])
    assert (world["root"] / "bigfile" / "id.txt").read_text() == "v01 v02 v03 v04 v05"
    assert (world["root"] / "bigfile" / "shape.txt").read_text() == "5 64"
    raw = np.fromfile(world["root"] / "bigfile" / "feature.bin", dtype="<f4").reshape(5, 64)
    np.testing.assert_array_equal(raw, big.read_all())
    with pytest.raises(InputError, match="non-finite"):
        write_bigfile(tmp_path / "b", ["a", "b"], np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(InputError, match="duplicate"):
        write_bigfile(tmp_path / "b", ["a", "a"], np.ones((2, 2)))
    assert not (tmp_path / "b").exists()


def _video(path: Path, colour: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error",
                    "-f", "lavfi", "-i", f"color=c={colour}:s=64x64:d=3:r=5", "-pix_fmt",
                    "yuv420p", "-y", str(path)], check=True, capture_output=True)


def test_embed_own_videos_lists_corrupt_ones(world: dict, tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    for colour, name in (("red", "red.mp4"), ("green", "sub/green.mp4"), ("blue", "blue.mp4")):
        _video(videos / name, colour)
    (videos / "broken.mp4").write_bytes(b"not a video at all" * 20)
    (videos / "notes.txt").write_text("ignored: not a video suffix")
    out = tmp_path / "own.h5"
    result = CliRunner().invoke(main, ["embed", "--model", str(world["root"] / "model0"),
                                       "--videos", str(videos), "--out", str(out),
                                       "--max-frames", "4", "--dtype", "float16",
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "failed: broken:" in result.output
    index = read_index(out)
    assert index.video_ids == ["blue", "red", "sub/green"]
    assert [f[0] for f in index.failed] == ["broken"] and index.failed[0][1]
    assert index.embeddings.dtype == np.float16 and index.attrs["source"] == "videos"
    assert np.all(np.isfinite(index.embeddings)) and np.abs(index.embeddings).sum(1).min() > 0.5
    assert not np.allclose(index.embeddings[0], index.embeddings[1], atol=1e-3)
    with h5py.File(out, "r") as handle:
        assert handle.attrs["resolution"] == 32 and handle.attrs["max_frames"] == 4
    listing = tmp_path / "list.txt"
    listing.write_text("videos/red.mp4\n# comment\nvideos/blue.mp4\n")
    out2 = tmp_path / "list.h5"
    result = CliRunner().invoke(main, ["embed", "--model", str(world["root"] / "model0"),
                                       "--videos", str(listing), "--out", str(out2),
                                       "--max-frames", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    listed = read_index(out2)
    assert listed.video_ids == ["red", "blue"]
    np.testing.assert_allclose(listed.embeddings[0], index.embeddings[1].astype(np.float32),
                               atol=2e-3)


def test_teacher_cannot_be_indexed(world: dict, tmp_path: Path) -> None:
    from pipeline.models.teachers import build_teacher

    save_model(tmp_path / "x.pt", build_teacher("xclip", load_clip("tiny"), MAX_WORDS, 4))
    result = CliRunner().invoke(main, [
        "index", "--model", str(tmp_path / "x.pt"), "--frames",
        str(world["root"] / "frames.h5"), "--out", str(tmp_path / "e.h5"), "--device", "cpu"])
    assert result.exit_code == 1 and "single video vector" in result.output


# ------------------------------------------------------------------ search --sheet
def _search(world: dict, *extra: str, index: Path | None = None):
    return CliRunner().invoke(main, ["search", QUERY, "--index", str(index or world["index"]),
                                     "--model", str(world["root"] / "model0"), "--device", "cpu",
                                     *extra])


def test_search_sheet_from_frames(world: dict, tmp_path: Path) -> None:
    from tests.picture_checks import assert_picture

    frames = str(world["root"] / "frames.h5")
    heights = {}
    for k in (2, 5):
        sheet = tmp_path / f"hits{k}.png"
        result = _search(world, "--top-k", str(k), "--sheet", str(sheet), "--frames", frames,
                         "--sheet-frames", "3", "--json")
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.stdout)) == k  # JSON on stdout stays parseable
        heights[k] = assert_picture(sheet, min_width=300, min_height=200).shape[0]
    assert heights[5] > 2 * heights[2] * 0.9  # one row per hit
    result = _search(world, "--sheet", str(tmp_path / "x.png"))
    assert result.exit_code == 1 and "--frames" in result.output and "--videos" in result.output
    result = _search(world, "--frames", frames)
    assert result.exit_code == 1 and "--sheet" in result.output
    few = make_frames(tmp_path / "few.h5", ["v01"])  # lacks the other hits
    result = _search(world, "--top-k", "5", "--sheet", str(tmp_path / "y.png"), "--frames",
                     str(few.path))
    assert result.exit_code == 1 and "not in the frames file" in result.output
    assert not (tmp_path / "y.png").exists()


def test_search_sheet_decodes_own_videos(world: dict, tmp_path: Path) -> None:
    from tests.picture_checks import assert_picture, colour_fraction

    videos = tmp_path / "videos"
    videos.mkdir()
    for colour in ("red", "blue"):
        _video(videos / f"{colour}.mp4", colour)
    out = tmp_path / "own.h5"
    result = CliRunner().invoke(main, ["embed", "--model", str(world["root"] / "model0"),
                                       "--videos", str(videos), "--out", str(out),
                                       "--max-frames", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    sheet = tmp_path / "own.png"
    result = _search(world, "--sheet", str(sheet), "--videos", str(videos), index=out)
    assert result.exit_code == 0, result.output
    image = assert_picture(sheet)
    assert colour_fraction(image, (1.0, 0.0, 0.0), tol=0.1) > 0.02  # the red video's frames
    assert colour_fraction(image, (0.0, 0.0, 1.0), tol=0.1) > 0.02  # the blue video's frames


def test_embed_parallel_decoding_and_amp_keep_order_and_values(world: dict,
                                                               tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    colours = ("red", "green", "blue", "yellow", "white")
    for i, colour in enumerate(colours):
        _video(videos / f"{i}_{colour}.mp4", colour)
    (videos / "2b_broken.mp4").write_bytes(b"garbage" * 50)
    outs = {}
    for name, extra in (("serial", ["--workers", "1"]), ("pool", ["--workers", "3"]),
                        ("bf16", ["--workers", "2", "--amp", "bf16"])):
        outs[name] = tmp_path / f"{name}.h5"
        result = CliRunner().invoke(main, ["embed", "--model", str(world["root"] / "model0"),
                                           "--videos", str(videos), "--out", str(outs[name]),
                                           "--max-frames", "4", "--device", "cpu",
                                           "--batch-size", "2", *extra])
        assert result.exit_code == 0, result.output
        assert "failed: 2b_broken:" in result.output
    serial, pool, bf16 = (read_index(outs[n]) for n in ("serial", "pool", "bf16"))
    expected = [f"{i}_{c}" for i, c in enumerate(colours)]
    assert serial.video_ids == pool.video_ids == bf16.video_ids == expected  # listing order
    np.testing.assert_array_equal(serial.embeddings, pool.embeddings)
    np.testing.assert_allclose(bf16.embeddings, serial.embeddings, atol=0.05)
    assert not np.array_equal(bf16.embeddings, serial.embeddings)  # autocast really ran
