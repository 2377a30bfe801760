"""``teachclip evaluate``: method §7 retrieval metrics of any saved model, as JSON."""

from __future__ import annotations

import click

from pipeline.data.frames_store import FramesReader
from pipeline.data.manifest import SPLITS, Manifest
from pipeline.eval.metrics_file import write_metrics_files
from pipeline.eval.model_eval import evaluate_model, load_retrieval_model
from stages.groups import main
from stages.options import DEVICE_OPTION, amp_option, frames_option, manifest_option, resolve_device


@main.command("evaluate")
@click.option("--model", "model_path", required=True, type=click.Path(exists=True),
              help="Model directory (with model.pt) or a checkpoint file: student, baseline "
                   "or teacher.")
@frames_option()
@manifest_option()
@click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True,
              help="Split whose captions query its videos.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Metrics JSON path (numbers only); NAME.provenance.json is written beside it.")
@click.option("--name", default=None, help="Model name in the metrics (default: its folder).")
@DEVICE_OPTION
@amp_option()
@click.option("--batch-size", type=int, default=64, show_default=True,
              help="Texts/videos per encoder batch.")
def evaluate(model_path: str, frames_path: str, manifest_dir: str, split: str, out: str,
             name: str | None, device: str, amp: str, batch_size: int) -> None:
    """Embed the split's videos and captions once each; write t2v/v2t R@K, MdR, MnR."""
    dev = resolve_device(device)
    loaded = load_retrieval_model(model_path, dev)
    metrics = evaluate_model(loaded, FramesReader(frames_path), Manifest.load(manifest_dir),
                             split, dev, batch_size=batch_size, amp=amp, name=name)
    _, provenance = write_metrics_files(out, metrics)
    click.echo(f"wrote {out} (+ {provenance.name}): {metrics['model']} ({metrics['kind']}) "
               f"on {split}, "
               f"{metrics['n_queries']} queries: R@1 {metrics['R1']:.1f} R@5 {metrics['R5']:.1f} "
               f"R@10 {metrics['R10']:.1f} MdR {metrics['MedianR']:g} "
               f"MnR {metrics['MeanR']:.1f}")
