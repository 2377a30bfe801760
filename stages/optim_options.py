"""The optimiser and run options of the training commands (``teacher train``, ``student train``).

Why one place: both commands build the same :class:`OptimConfig` from the same options; written
twice, the help texts and defaults drifted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click

from pipeline.errors import InputError
from pipeline.plateau import status_from_summary
from pipeline.train.setup import OptimConfig


def optim_options(defaults: OptimConfig, *, afa: bool) -> Callable[[Any], Any]:
    """Decorator adding --epochs … --grad-clip (and --afa-lr-multiplier when ``afa``)."""
    options = [
        click.option("--epochs", type=int, default=defaults.epochs, show_default=True,
                     help="Passes over the training captions."),
        click.option("--batch-size", type=int, default=defaults.batch_size, show_default=True,
                     help="Global batch (split over torchrun processes)."),
        click.option("--lr", type=float, default=defaults.lr, show_default=True,
                     help="Peak learning rate of the new (non-CLIP) parameters."),
        click.option("--coef-lr", type=float, default=defaults.coef_lr, show_default=True,
                     help="CLIP lr = lr × coef-lr."),
    ]
    if afa:
        options.append(click.option(
            "--afa-lr-multiplier", type=float, default=defaults.afa_lr_multiplier,
            show_default=True, help="AFA layers' lr = lr × this."))
    options += [
        click.option("--weight-decay", type=float, default=defaults.weight_decay,
                     show_default=True,
                     help="AdamW weight decay (not on biases, norms, embeddings, logit scale)."),
        click.option("--warmup-fraction", type=float, default=defaults.warmup_fraction,
                     show_default=True,
                     help="Share of the steps with linear warm-up before the cosine decay."),
        click.option("--grad-clip", type=float, default=defaults.grad_clip, show_default=True,
                     help="Clip the gradient norm to this value (0 = off)."),
    ]

    return _stack(options)


def optim_from(values: Mapping[str, Any]) -> OptimConfig:
    """The OptimConfig of a training command's option values (no AFA option: multiplier 1)."""
    return OptimConfig(
        epochs=values["epochs"], batch_size=values["batch_size"], lr=values["lr"],
        coef_lr=values["coef_lr"], afa_lr_multiplier=values.get("afa_lr_multiplier", 1.0),
        weight_decay=values["weight_decay"], warmup_fraction=values["warmup_fraction"],
        grad_clip=values["grad_clip"],
    )


def run_options(defaults: Any) -> Callable[[Any], Any]:
    """Decorator adding --eval-split, --patience, --eval-batch-size, --log-every,
    --gradient-checkpointing
    (``defaults``: the command's train config, for the default values)."""
    options = [
        click.option("--eval-split", default="val", show_default=True,
                     help="Split for per-epoch validation and best-epoch selection "
                          "('' = none)."),
        click.option("--patience", type=int, default=defaults.patience, show_default=True,
                     help="Early stopping: end training once this many epochs in a row bring "
                          "no new best validation R@1 (the best epoch is kept); 0 = train "
                          "every --epochs."),
        click.option("--eval-batch-size", type=int, default=defaults.eval_batch_size,
                     show_default=True, help="Texts/videos per batch during validation."),
        click.option("--log-every", type=int, default=defaults.log_every, show_default=True,
                     help="Write a train_log.tsv row every this many steps."),
        click.option("--gradient-checkpointing/--no-gradient-checkpointing",
                     default=defaults.gradient_checkpointing, show_default=True,
                     help="Recompute CLIP activations in the backward pass (less memory, "
                          "~30 % slower)."),
    ]

    return _stack(options)


def check_patience(values: Mapping[str, Any]) -> None:
    """Refuse a negative --patience (0 = off) before any work starts."""
    if values["patience"] < 0:
        raise InputError(f"--patience must be >= 0 (0 = train every epoch), got "
                         f"{values['patience']}")


def echo_plateau_warning(summary: Mapping[str, Any], name: str) -> None:
    """``Warning:`` on stderr when the run's best epoch is among its last few (pipeline.plateau):
    the model was probably still improving, so comparisons with it are not fair yet."""
    status = status_from_summary(summary)
    text = status.warning(name) if status is not None else None
    if text:
        click.echo(f"Warning: {text}", err=True)


def plateau_note(summary: Mapping[str, Any]) -> str:
    """``; best epoch 28 of 40 (stopped early)`` for the CLI's closing line ('' if unknown)."""
    status = status_from_summary(summary)
    return f"; {status.describe()}" if status is not None else ""


def _stack(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    """One decorator applying ``options`` in the order listed (as stacked ``@click.option``)."""
    def decorate(command: Any) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate
