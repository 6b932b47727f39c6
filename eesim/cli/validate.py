"""`eesim validate`: the scenario grid simulated and measured in one process, one table."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import typer

from eesim.cli.common import app, console, fail, progress, user_errors


@app.command()
def validate(
    grid: str = typer.Option("quick", help="quick (a representative subset, small workloads; CI) | "
                                           "full (every strategy x batch x load x mix)."),
    out: Path = typer.Option(None, help="Folder for validation.parquet and validation.json "
                                        "(default: eesim-out/validation/<device>/; the committed "
                                        "evidence is profiles/<device>/, changed only on purpose)."),
    seed: int = typer.Option(0, help="Seed for workloads and request binding (both sides)."),
    repeats: int = typer.Option(None, min=1, help="Measured runs per scenario (default: the grid's, "
                                                  "2; one run has no repeat noise to report)."),
    max_median_error: float = typer.Option(None, min=0.0, help="Exit with status 1 when any metric's "
                                                               "median relative error exceeds this."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Profile this device, then run every scenario of a grid both ways, simulated (priced by
    that profile) and measured on the reference model with the same requests and exits, each
    twice unless --repeats says otherwise (calibrated before each run); write the
    predicted-vs-measured table, its error summary and the measurements' repeat noise (the
    floor no model's error can go below)."""
    from eesim.validate import default_folder, exceeding, grid_named, write_validation
    from eesim.validate import validate as run_validation

    try:
        chosen = grid_named(grid)
        if repeats is not None:
            chosen = dataclasses.replace(chosen, repeats=repeats)
        with progress() as bar:
            prof = bar.add_task("profiling ref", total=None, info="")
            runs = bar.add_task(f"validating ({grid} grid)", total=len(chosen.scenarios), info="")
            table, summary, bench = run_validation(
                chosen, seed,
                on_start=lambda n: bar.update(prof, total=n),
                on_point=lambda term: bar.update(prof, advance=1, info=term),
                on_scenario=lambda s: bar.update(runs, advance=1, info=s.label))
        paths = write_validation(table, summary, out or default_folder(bench))
    except user_errors() as exc:
        fail(exc)
    summary["outputs"] = [str(p) for p in paths]
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        _print_table(table, summary)
    for item in summary["unmeasured"]:
        console.print(f"note: {item['scenario']} not measured: {item['reason']}", highlight=False)
    if max_median_error is not None and (over := exceeding(summary, max_median_error)):
        console.print(f"[bold red]error:[/] median error above --max-median-error {max_median_error}: "
                      + ", ".join(f"{m} {e:.3f}" for m, e in over.items()), highlight=False)
        raise typer.Exit(1)


COLUMNS = {"tpot_mean": ("TPOT mean ms", 1e3), "tpot_p90": ("TPOT p90 ms", 1e3),
           "ttft_mean": ("TTFT mean ms", 1e3), "throughput": ("tok/s", 1.0),
           "peak_memory": ("peak MiB", 2**-20)}


def _print_table(table, summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    view = Table(title=f"{summary['profile']['label']}: {summary['grid']} grid, predicted / measured "
                       f"(relative error)")
    view.add_column("scenario")
    view.add_column("req", justify="right")
    for title, _ in COLUMNS.values():
        view.add_column(title, justify="right")
    view.add_column("layers/token", justify="right")
    view.add_column("speedup (bound)", justify="right")
    for r in table.to_dict("records"):
        cells = [_cell(r[f"{m}_predicted"], r[f"{m}_measured"], r[f"{m}_abs_error"], scale)
                 for m, (_, scale) in COLUMNS.items()]
        view.add_row(r["scenario"], str(r["requests"]), *cells, f"{r['layers_per_token_predicted']:.2f}",
                     f"{_num(r['speedup_measured'], '.2f')} ({r['speedup_bound']:.2f})")
    view.add_section()
    for name, key in (("median error", "median_abs_error"), ("p90 error", "p90_abs_error"),
                      ("median repeat noise", "median_repeat_noise"),
                      ("p90 repeat noise", "p90_repeat_noise")):
        view.add_row(f"[bold]{name}[/]", "", *(_pct(summary[key][m]) for m in COLUMNS), "", "")
    Console().print(view)
    typer.echo(f"{summary['scenarios']} scenarios ({summary['measured']} measured) in "
               f"{summary['seconds']:.0f} s; outputs: {', '.join(summary['outputs'])}")


def _num(value, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def _cell(predicted: float, measured: float, error: float, scale: float) -> str:
    return f"{_num(predicted * scale, '.4g')} / {_num(measured * scale, '.4g')} ({_pct(error)})"
