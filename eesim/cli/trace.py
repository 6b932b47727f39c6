"""`eesim trace ...` and `eesim calibrate`: exit traces and the policies replayed on them."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from eesim.cli.common import app, fail, progress, trace_app, user_errors


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
    typer.echo(json.dumps(report, indent=2) if as_json else policy_table(report))


def policy_table(report: dict) -> str:
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
