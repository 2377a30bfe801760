"""``teachclip data synth``: render the embedded synthetic dataset (videos, manifest, segments)."""

from __future__ import annotations

import time

import click
from tqdm import tqdm

from pipeline.data.synth import render_dataset
from pipeline.data.synth_plan import SynthParams
from stages.groups import data

_DEFAULTS = SynthParams()


@data.command("synth")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Output directory (manifest, videos/, segments.csv, synth_plan.json).")
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True,
              help="Seeds every video's plan (shapes, segments, captions): same seed, same set.")
@click.option("--n-train", type=int, default=_DEFAULTS.n_train, show_default=True,
              help="Videos in the train split.")
@click.option("--n-val", type=int, default=_DEFAULTS.n_val, show_default=True,
              help="Videos in the val split.")
@click.option("--n-test", type=int, default=_DEFAULTS.n_test, show_default=True,
              help="Videos in the test split.")
@click.option("--captions-per-video", type=int, default=_DEFAULTS.captions_per_video,
              show_default=True, help="Paraphrased captions per video.")
@click.option("--fps", type=int, default=_DEFAULTS.fps, show_default=True,
              help="Frame rate of the rendered videos.")
@click.option("--min-duration", type=float, default=_DEFAULTS.min_duration, show_default=True,
              help="Seconds.")
@click.option("--max-duration", type=float, default=_DEFAULTS.max_duration, show_default=True,
              help="Seconds.")
@click.option("--resolution", type=int, default=_DEFAULTS.resolution, show_default=True,
              help="Square frame side in pixels.")
@click.option("--min-segments", type=int, default=_DEFAULTS.min_segments, show_default=True,
              help="Fewest informative segments (what captions describe) per video.")
@click.option("--max-segments", type=int, default=_DEFAULTS.max_segments, show_default=True,
              help="Most informative segments per video.")
@click.option("--min-segment-s", type=float, default=_DEFAULTS.min_segment_s, show_default=True,
              help="Shortest informative segment, seconds.")
@click.option("--max-segment-s", type=float, default=_DEFAULTS.max_segment_s, show_default=True,
              help="Longest informative segment, seconds.")
@click.option("--partial-caption-prob", type=click.FloatRange(0, 1),
              default=_DEFAULTS.partial_caption_prob, show_default=True,
              help="Probability that a caption describes only some of a video's segments.")
@click.option("--min-described", type=click.IntRange(1), default=_DEFAULTS.min_described,
              show_default=True, help="Fewest segments a partial caption describes.")
@click.option("--unique-captions/--no-unique-captions", default=_DEFAULTS.unique_captions,
              show_default=True,
              help="Re-draw a partial caption while another video of its split also shows what "
                   "it describes (one right video per caption).")
@click.option("--size-mention-prob", type=float, default=_DEFAULTS.size_mention_prob,
              show_default=True, help="Probability that a caption names a segment's size.")
@click.option("--filler-difficulty", type=click.FloatRange(0, 1),
              default=_DEFAULTS.filler_difficulty, show_default=True,
              help="0 = flat filler, 1 = dense high-contrast clutter.")
@click.option("--shape-scale", type=click.FloatRange(0.25, 1.6), default=_DEFAULTS.shape_scale,
              show_default=True, help="Multiplies every shape's radius (1 = the built-in sizes).")
@click.option("--codec", default=_DEFAULTS.codec, show_default=True,
              help="auto (libx264, else mpeg4) or an ffmpeg encoder name.")
@click.option("--crf", type=int, default=_DEFAULTS.crf, show_default=True,
              help="Encoder quality (constant rate factor; lower = better, larger files).")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Videos rendered in parallel (one ffmpeg process each).")
def synth(out_dir: str, workers: int, **options: object) -> None:
    """Render moving-shape videos with informative segments between filler, plus captions."""
    params = SynthParams(**options)  # type: ignore[arg-type]
    total = params.n_train + params.n_val + params.n_test
    started = time.perf_counter()
    with tqdm(total=total, desc="synth", unit="video") as bar:
        manifest = render_dataset(out_dir, params, workers=workers, on_progress=bar.update)
    elapsed = time.perf_counter() - started
    click.echo(f"rendered {len(manifest.videos)} videos, {len(manifest.captions)} captions "
               f"into {out_dir} in {elapsed:.1f} s")
