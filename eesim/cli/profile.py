"""`eesim profile ...`: device profiles, measured or analytic."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from eesim.cli.common import fail, profile_app, progress, user_errors


@profile_app.callback()
def profile(
    ctx: typer.Context,
    model: str = typer.Option("ref", help="ref | llama-3.2-1b | llama-3-8b | llama-2-7b | hf:CONFIG.json"),
    device: str = typer.Option("auto", help="auto (CUDA when present) | cpu | cuda[:N]"),
    quick: bool = typer.Option(False, "--quick", help="A small grid (about a minute on CPU)."),
    analytic: str = typer.Option(None, help="Make a roofline profile for h100-sxm | h200 | a100-80g | l4."),
    dtype: str = typer.Option(None, help="float32 | bfloat16 | float16 (default: bf16 CUDA, fp32 CPU)."),
    max_layers: int = typer.Option(2, min=1, help="Layers to instantiate for shape-only models."),
    out: Path = typer.Option(None, help="Parquet file to write."),
) -> None:
    """Measure what every step term costs on this device (or compute an analytic roofline)."""
    if ctx.invoked_subcommand:
        return
    if out is None:
        fail("--out FILE is required (or use: eesim profile show FILE)")
    from eesim.profile.analytic import analytic_profile
    from eesim.profile.bench import run_profile
    from eesim.profile.format import write_profile

    try:
        if analytic:
            prof = analytic_profile(analytic, model)
        else:
            with progress() as bar:
                task = bar.add_task(f"profiling {model}", total=None, info="")
                prof = run_profile(model, device, quick, dtype, max_layers,
                                   on_start=lambda n: bar.update(task, total=n),
                                   on_point=lambda term: bar.update(task, advance=1, info=term))
        write_profile(prof, out)
    except user_errors() as exc:
        fail(str(exc))
    typer.echo(json.dumps({"profile": str(out), "kind": prof.meta.kind, "points": len(prof.table),
                           "seconds": prof.meta.seconds, "notes": prof.meta.notes}))


@profile_app.command("show")
def profile_show(
    file: Path = typer.Argument(..., help="Profile Parquet file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """What a profile holds: kind (measured or ANALYTIC), device, model, terms and memory."""
    from rich.table import Table

    from eesim.profile.format import read_profile

    try:
        prof = read_profile(file)
    except user_errors() as exc:
        fail(str(exc))
    summary = prof.summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    kind = "ANALYTIC (datasheet roofline, not measured)" if prof.meta.kind == "analytic" else "measured"
    table = Table(title=f"{prof.meta.model_name} on {prof.meta.device} [{kind}], {prof.meta.dtype}")
    for col in ("term", "points", "rows", "query", "context", "fastest", "slowest"):
        table.add_column(col)
    for term, t in summary["by_term"].items():
        table.add_row(term, str(t["points"]), _span(t["rows"]), _span(t["query"]), _span(t["context"]),
                      f"{t['median_s']['min'] * 1e6:.1f} us", f"{t['median_s']['max'] * 1e6:.1f} us")
    Console().print(table)
    for note in prof.meta.notes:
        typer.echo(f"note: {note}")


def _span(values: list[int]) -> str:
    return str(values[0]) if len(values) == 1 else f"{values[0]}..{values[-1]} ({len(values)})"
