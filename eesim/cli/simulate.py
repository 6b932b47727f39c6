"""`eesim simulate` and `eesim measure`: predicted metrics from a trace, a policy, a strategy
and a profile, or the same run measured on the real model (same flags, same outputs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from eesim.cli.common import app, console, fail, user_errors


@app.command()
def simulate(
    ctx: typer.Context,
    profile_file: Path = typer.Option(..., "--profile", help="Profile (measured or analytic)."),
    trace_file: Path = typer.Option(..., "--trace", help="A full exit trace."),
    policy_file: Path = typer.Option(None, "--policy", help="Exit policy JSON (default: never exit)."),
    strategy: str = typer.Option("full", help="full | sync | compact | regroup | selfspec | monotone"),
    draft_layer: int = typer.Option(4, help="selfspec: draft with layers 1..E."),
    drafts: int = typer.Option(4, help="selfspec: tokens drafted per step."),
    kv: str = typer.Option(None, help="propagate | defer | shared (default: shared for selfspec)."),
    min_layer: int = typer.Option(1, help="No exit check before this layer."),
    check_every: int = typer.Option(1, help="Exit checks only at every N-th layer."),
    rate: float = typer.Option(None, help="Poisson arrivals per second."),
    burstiness: float = typer.Option(None, help="Gamma arrivals with this coefficient of variation."),
    arrivals: str = typer.Option(None, help="Replay azure-code | azure-conv."),
    time_scale: float = typer.Option(1.0, help="Replay speed-up (2 = twice the load)."),
    concurrency: int = typer.Option(None, help="Closed loop with N users."),
    requests: int = typer.Option(None, help="Requests (default: 1000; all of a replayed log)."),
    prompt_len: int = typer.Option(64, help="Synthetic prompt length."),
    output_len: int = typer.Option(128, help="Synthetic output length."),
    max_prompt: int = typer.Option(None, help="Replay: clip prompts to this length."),
    max_output: int = typer.Option(None, help="Replay: clip outputs to this length."),
    task_mix: str = typer.Option(None, help="e.g. prose=1,code=1,json=2 (default: even)."),
    max_batch: int = typer.Option(16, help="Rows decoded together."),
    batching: str = typer.Option("continuous", help="continuous | static"),
    prefill: str = typer.Option("whole", help="whole | chunked"),
    max_batched_tokens: int = typer.Option(8192, help="Prompt tokens prefilled per step."),
    kv_memory: float = typer.Option(None, help="GiB for KV blocks (default: device memory less "
                                                "weights, 90%)."),
    replicas: int = typer.Option(1, help="Replicas behind the router."),
    router: str = typer.Option("round-robin", help="round-robin | least-work"),
    map_depth: bool = typer.Option(False, "--map-depth", help="Map a trace of another depth "
                                                              "by relative depth."),
    seed: int = typer.Option(0, help="Seed for arrivals and request binding."),
    shadow_rate: float = typer.Option(0.0, help="Share of early-exited tokens also run to full "
                                                "depth (drift watch)."),
    kill_at: float = typer.Option(None, help="Kill switch: exits off from this simulated second."),
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

    try:
        req = SimulationRequest(
            profile=profile_file, trace=trace_file, policy=policy_file, strategy=strategy,
            draft_layer=draft_layer, drafts=drafts, kv=kv, min_layer=min_layer,
            check_every=check_every, rate=rate,
            burstiness=burstiness, arrivals=arrivals, time_scale=time_scale,
            concurrency=concurrency, requests=requests, prompt_len=prompt_len,
            output_len=output_len, max_prompt=max_prompt, max_output=max_output,
            task_mix=task_mix, max_batch=max_batch, batching=batching, prefill=prefill,
            max_batched_tokens=max_batched_tokens, kv_memory_gib=kv_memory,
            replicas=replicas, router=router, map_depth=map_depth, seed=seed,
            shadow_rate=shadow_rate, kill_at=kill_at)
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
