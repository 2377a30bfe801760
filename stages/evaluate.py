"""``teachclip evaluate``: SPEC §7 retrieval metrics of any saved model, as JSON."""

from __future__ import annotations

import click

from pipeline.data.frames_store import FramesReader
from pipeline.data.manifest import SPLITS, Manifest
from pipeline.eval.metrics_file import write_metrics_files
from pipeline.eval.model_eval import evaluate_model, load_retrieval_model
from stages.groups import main
from stages.options import resolve_device


@main.command("evaluate")
@click.option("--model", "model_path", required=True, type=click.Path(exists=True),
              help="Model directory (with model.pt) or a checkpoint file: student, baseline "
                   "or teacher.")
@click.option("--frames", "frames_path", required=True, type=click.Path(dir_okay=False))
@click.option("--manifest", "manifest_dir", required=True, type=click.Path(file_okay=False))
@click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="metrics.json path.")
@click.option("--name", default=None, help="Model name in the metrics (default: its folder).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--amp", type=click.Choice(["none", "bf16", "fp16"]), default="none",
              show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
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
