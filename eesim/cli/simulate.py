"""`eesim simulate` and `eesim measure`: predicted metrics from a trace, a policy, a strategy
and a profile, or the same run measured on the real model (same flags, same outputs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from eesim.cli.common import FLAG_NAMES, app, console, fail, fields_of, flag, user_errors
from eesim.plan.strategies import StrategyConfig
from eesim.scenario.options import LoadOptions, ServingOptions
from eesim.sched import SchedulerConfig


@app.command()
def simulate(
    ctx: typer.Context,
    profile_file: Path = typer.Option(..., "--profile", help="Profile (measured or analytic)."),
    trace_file: Path = typer.Option(..., "--trace", help="A full exit trace."),
    policy_file: Path = typer.Option(None, "--policy", help="Exit policy JSON (default: never exit)."),
    strategy: str = flag(StrategyConfig, "name", "--strategy"),
    draft_layer: int = flag(StrategyConfig, "draft_layer"),
    drafts: int = flag(StrategyConfig, "drafts"),
    kv: str = flag(StrategyConfig, "kv"),
    min_layer: int = flag(StrategyConfig, "min_layer"),
    check_every: int = flag(StrategyConfig, "check_every"),
    horizon: int = flag(StrategyConfig, "horizon"),
    rate: float = flag(LoadOptions, "rate"),
    burstiness: float = flag(LoadOptions, "burstiness"),
    arrivals: str = flag(LoadOptions, "arrivals"),
    time_scale: float = flag(LoadOptions, "time_scale"),
    concurrency: int = flag(LoadOptions, "concurrency"),
    requests: int = flag(LoadOptions, "requests"),
    prompt_len: int = flag(LoadOptions, "prompt_len"),
    output_len: int = flag(LoadOptions, "output_len"),
    max_prompt: int = flag(LoadOptions, "max_prompt"),
    max_output: int = flag(LoadOptions, "max_output"),
    task_mix: str = flag(LoadOptions, "task_mix"),
    seed: int = flag(LoadOptions, "seed"),
    max_batch: int = flag(SchedulerConfig, "max_batch"),
    batching: str = flag(SchedulerConfig, "batching"),
    prefill: str = flag(SchedulerConfig, "prefill"),
    max_batched_tokens: int = flag(SchedulerConfig, "max_batched_tokens"),
    kv_memory: float = flag(ServingOptions, "kv_memory_gib", "--kv-memory"),
    replicas: int = flag(ServingOptions, "replicas"),
    router: str = flag(ServingOptions, "router"),
    map_depth: bool = flag(ServingOptions, "map_depth", "--map-depth"),
    shadow_rate: float = flag(ServingOptions, "shadow_rate"),
    kill_at: float = flag(ServingOptions, "kill_at"),
    out: Path = typer.Option(None, help="Folder for requests.parquet, summary.json, series.parquet."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Predict TTFT, TPOT, throughput and peak memory by replaying exits through a strategy
    (`eesim measure`: run it for real on the profiled reference model, exits replayed)."""
    from eesim.scenario.request import SimulationRequest

    measured = ctx.info_name == "measure"
    if measured:
        from eesim.engine.run import run_measurement as run
    else:
        from eesim.sim.run import run_simulation as run

    given = dict(locals())
    given.update({field: given[flag_name] for field, flag_name in FLAG_NAMES.items()})
    try:
        req = SimulationRequest(
            profile=profile_file, trace=trace_file, policy=policy_file,
            strategy=fields_of(StrategyConfig, given), load=fields_of(LoadOptions, given),
            scheduler=fields_of(SchedulerConfig, given, skip=("block_tokens", "kv_capacity_bytes")),
            serving=fields_of(ServingOptions, given))
        with console.status("measuring on the model" if measured else "simulating"):
            result = run(req, out)
    except user_errors() as exc:
        fail(exc)
    summary = result.summary
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    ttft, tpot = summary["ttft_s"], summary["tpot_s"]
    typer.echo(f"{summary['profile']}, strategy {strategy}, {summary['requests']} requests "
               f"({summary['workload']}), {replicas} replica(s)")
    typer.echo(f"  TTFT mean {ttft['mean'] * 1e3:.1f} ms  p99 {ttft['p99'] * 1e3:.1f} ms")
    typer.echo(f"  TPOT mean {tpot['mean'] * 1e3:.2f} ms  p90 {tpot['p90'] * 1e3:.2f} ms"
               f"  p99 {tpot['p99'] * 1e3:.2f} ms")
    typer.echo(f"  throughput {summary['throughput_tokens_per_s']:.0f} tok/s, "
               f"{summary['throughput_requests_per_s']:.2f} req/s; peak memory "
               f"{summary['peak_memory_bytes'] / 2**30:.2f} GiB")
    typer.echo(f"  layers/token {summary['layers_per_token']:.2f}, quality delta "
               f"{summary['quality_delta']:.2%}, acceptance {summary['acceptance_rate']}")
    if summary["extrapolated"]:
        typer.echo(f"  note: the cost model extrapolated: {summary['extrapolated_points']}")
    if summary["depth_mapped_from"]:
        typer.echo(f"  note: exits mapped by relative depth from a "
                   f"{summary['depth_mapped_from']}-layer trace")
    if out:
        typer.echo(f"  outputs: {out}/")


app.command("measure", help="Run a workload for real on the profiled reference model with the same "
                             "flags and outputs as `eesim simulate` (exits replayed from the trace; "
                             "self-speculation not yet).")(simulate)
