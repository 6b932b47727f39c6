"""`eesim sweep` (a grid of simulations, resumable, local or on Ray) and `eesim plan` (replicas
per strategy for a load within latency limits and a quality budget)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from eesim.cli.common import app, console, fail, flag, progress, user_errors
from eesim.whatif import WhatIf

LOCAL_RAY = "local"  # `--ray` given without an address (see eesim.cli.main)


@app.command()
def sweep(
    grid: Path = typer.Option(..., help="Grid file (TOML: [base] what-if fields, [axes] lists)."),
    out: Path = typer.Option(..., help="Folder: points/<id>.json per point, results.parquet."),
    workers: int = typer.Option(2, help="Local worker processes."),
    ray: str = typer.Option(None, "--ray", help="Run on Ray: a cluster ADDRESS, or no address "
                                                "for a local instance."),
    retry_failed: bool = typer.Option(False, help="Run again the points recorded as failed."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Simulate every point of a grid; an interrupted sweep resumes where it stopped."""
    from eesim.sweep import GridError, load_grid, pending
    from eesim.sweep import sweep as run_sweep

    try:
        points = load_grid(grid)
        todo = len(pending(points, out, retry_failed))
        counts = {"points": len(points), "already_done": len(points) - todo, "ok": 0, "failed": 0}
        with progress() as bar:
            task = bar.add_task("sweeping", total=todo, info="")

            def advance(record: dict) -> None:
                counts["ok" if record["status"] == "ok" else "failed"] += 1
                bar.update(task, advance=1, info=f"failed {counts['failed']}")

            table = run_sweep(points, out, workers, None if ray == LOCAL_RAY else ray,
                              use_ray=ray is not None, retry_failed=retry_failed, on_result=advance)
    except (GridError, *user_errors()) as exc:
        fail(exc)
    counts["results"] = str(out / "results.parquet")
    counts["failed_total"] = int((table["status"] == "failed").sum()) if len(table) else 0
    if as_json:
        typer.echo(json.dumps(counts, indent=2))
    else:
        console.print(f"{counts['ok']} ok, {counts['failed']} failed, {counts['already_done']} already "
                      f"done of {counts['points']} points; results in {counts['results']}",
                      highlight=False)


@app.command()
def plan(
    profile_file: Path = typer.Option(..., "--profile", help="Profile (measured or analytic)."),
    trace_file: Path = typer.Option(..., "--trace", help="A full exit trace."),
    qps: float = typer.Option(..., help="Target load, requests per second (Poisson)."),
    slo_tpot_p99: float = typer.Option(..., help="TPOT p99 limit, milliseconds."),
    slo_ttft_p99: float = typer.Option(None, help="TTFT p99 limit, milliseconds."),
    budget: float = typer.Option(None, help="Quality budget: largest quality delta (e.g. 0.02)."),
    strategies: str = typer.Option("full,sync,compact,regroup,selfspec,monotone",
                                   help="Comma-separated strategies to size."),
    max_batch: int = flag(WhatIf, "max_batch"),
    requests: int = flag(WhatIf, "requests"),
    output_len: int = flag(WhatIf, "output_len"),
    prompt_len: int = flag(WhatIf, "prompt_len"),
    draft_layer: int = typer.Option(None, help="selfspec draft layer (default: a quarter of the depth)."),
    max_replicas: int = typer.Option(256, help="Give up above this many replicas."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Fewest replicas per strategy for a load within TPOT/TTFT limits and a quality budget;
    the best choice and the Pareto front of quality delta, TPOT and cost."""
    from eesim.capacity import Limits
    from eesim.capacity import plan as make_plan
    from eesim.costmodel import CostModel
    from eesim.plan.strategies import STRATEGIES
    from eesim.trace import read_trace

    try:
        names = tuple(s.strip() for s in strategies.split(",") if s.strip())
        unknown = [s for s in names if s not in STRATEGIES]
        if unknown or not names:
            raise ValueError(f"--strategies {strategies!r}: unknown {unknown}; choose from "
                             f"{', '.join(STRATEGIES)}")
        if budget is not None and not 0 <= budget <= 1:
            raise ValueError(f"--budget must be in [0, 1], got {budget}")
        for flag, value in (("--slo-tpot-p99", slo_tpot_p99), ("--slo-ttft-p99", slo_ttft_p99)):
            if value is not None and value <= 0:
                raise ValueError(f"{flag} must be > 0 ms, got {value}")
        cost = CostModel.load(profile_file)
        trace = read_trace(trace_file)
        depth = cost.meta.model.n_layers
        q = WhatIf(rate=qps, max_batch=max_batch, requests=requests, output_len=output_len,
                   prompt_len=prompt_len, draft_layer=draft_layer or max(1, depth // 4))
        limits = Limits(slo_tpot_p99 / 1e3, slo_ttft_p99 / 1e3 if slo_ttft_p99 else None, budget)
        with console.status(f"sizing {len(names)} strategies"):
            result = make_plan(cost, trace, q, limits, names, max_replicas)
    except user_errors() as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    _print_plan(result)


def _print_plan(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    view = Table(title=f"{result['profile']}: {result['qps']:g} requests/s")
    for col in ("strategy", "policy", "replicas", "TPOT p99 ms", "TTFT p99 ms", "quality delta"):
        view.add_column(col, justify="right" if col not in ("strategy", "policy") else "left")
    for name, c in result["strategies"].items():
        if c.get("replicas") is None:
            view.add_row(name, f"not met: {c.get('reason', '').split(';')[0][:48]}", "-", "", "", "")
            continue
        view.add_row(name, c["policy"], str(c["replicas"]), f"{c['tpot_p99_s'] * 1e3:.1f}",
                     f"{c['ttft_p99_s'] * 1e3:.0f}", f"{c['quality_delta']:.2%}")
    Console().print(view)
    best = result["best"]
    if best:
        console.print(f"best: {best['strategy']} ({best['policy']}) with {best['replicas']} replicas",
                      highlight=False)
    else:
        console.print("no strategy meets the limits", highlight=False)
