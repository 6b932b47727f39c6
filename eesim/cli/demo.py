"""`eesim demo`: the whole loop on the embedded default: model, trace, policy, profile,
simulation, measurement and validation."""

from __future__ import annotations

from pathlib import Path

import typer

from eesim.cli.common import app, console
from eesim.cli.model import evaluate_reference, print_eval
from eesim.cli.trace import depth_markdown, policy_table


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
    from eesim.profile.format import write_profile
    from eesim.trace import REFERENCE_TRACE, read_trace, write_trace
    from eesim.trace.prompts import heldout_prompts
    from eesim.trace.record import RefExitModel, record

    written = {}
    report = evaluate_reference(None, 256, max_windows)
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
    typer.echo(policy_table({"signal": policy.signal, "thresholds": policy.thresholds,
                              "heldout": heldout}))
    written["policy"] = out / "policy.json"
    policy.save(written["policy"])
    written["calibration report"] = out / "calibration.json"
    write_json_atomic(written["calibration report"], heldout)
    table, summary, bench = _demo_validation(out / "validation")
    written["profile (quick)"] = out / "profile-quick.parquet"
    write_profile(bench.profile, written["profile (quick)"])
    written["simulations"] = out / "simulate"
    _demo_simulations(trace_, policy, bench.cost, written["simulations"])
    written["validation"] = out / "validation" / "validation.parquet"
    typer.echo("\nOutputs:")
    for name, path in written.items():
        typer.echo(f"  {name:20s} {path}")
    typer.echo(f"\n`eesim dashboard`, started in this folder, shows {written['validation']} on its "
               f"Validation page (beside the committed full grid, profiles/cpu/validation.parquet) "
               f"and offers {written['profile (quick)']} on its What-if page.")


def _demo_validation(out: Path):
    """Profile this machine (quick grid), then simulate and measure the quick scenario grid."""
    from eesim.cli.common import progress
    from eesim.validate import GRIDS, validate, write_validation

    grid = GRIDS["quick"]
    with progress() as bar:
        prof = bar.add_task("profiling ref (quick)", total=None, info="")
        runs = bar.add_task("simulating and measuring", total=len(grid.scenarios), info="")
        table, summary, bench = validate(
            grid, on_start=lambda n: bar.update(prof, total=n),
            on_point=lambda term: bar.update(prof, advance=1, info=term),
            on_scenario=lambda sc: bar.update(runs, advance=1, info=sc.label))
    write_validation(table, summary, out)
    typer.echo(f"\nPredicted vs measured on this machine ({len(table)} scenarios of the quick grid, "
               f"profile taken in the same run):")
    typer.echo("| scenario | TPOT predicted | TPOT measured | error | measured speedup (bound) |")
    typer.echo("|---|---|---|---|---|")
    for r in table.itertuples():
        typer.echo(f"| {r.scenario} | {r.tpot_mean_predicted * 1e3:.2f} ms | "
                   f"{r.tpot_mean_measured * 1e3:.2f} ms | {r.tpot_mean_abs_error:.1%} | "
                   f"{r.speedup_measured:.2f} ({r.speedup_bound:.2f}) |")
    med = summary["median_abs_error"]
    typer.echo("\n| error | " + " | ".join(med) + " |\n|---|" + "---|" * len(med))
    for name, key in (("median", "median_abs_error"), ("p90", "p90_abs_error"),
                      ("repeat noise, median", "median_repeat_noise"),
                      ("repeat noise, p90", "p90_repeat_noise")):
        typer.echo(f"| {name} | " + " | ".join("-" if e is None else f"{e:.1%}"
                                                for e in summary[key].values()) + " |")
    return table, summary, bench


def _demo_simulations(trace_, policy, cost, out: Path) -> None:
    """Every strategy on this machine's profile of the reference model, side by side."""
    from eesim.io import write_json_atomic
    from eesim.plan.strategies import STRATEGIES, StrategyConfig
    from eesim.scenario.behaviour import from_trace
    from eesim.scenario.workload import poisson
    from eesim.sched import SchedulerConfig
    from eesim.sim.simulate import simulate as run_sim

    behaviour = from_trace(trace_, policy, cost.meta.model.n_layers)
    workload = poisson(20.0, 300, seed=0)
    typer.echo(f"\nSimulated on {cost.label}: {workload.source}, 300 requests, max batch 16")
    typer.echo("| strategy | TPOT mean | TTFT mean | throughput | layers/token | quality delta |")
    typer.echo("|---|---|---|---|---|---|")
    with console.status("simulating every strategy"):
        for name in STRATEGIES:
            cfg = StrategyConfig(name=name)
            s = run_sim(cost, behaviour, workload, cfg, SchedulerConfig(max_batch=16)).summary
            write_json_atomic(out / f"{name}.json", s)
            typer.echo(f"| {name} | {s['tpot_s']['mean'] * 1e3:.2f} ms | "
                       f"{s['ttft_s']['mean'] * 1e3:.1f} ms | {s['throughput_tokens_per_s']:.0f} tok/s | "
                       f"{s['layers_per_token']:.2f} | {s['quality_delta']:.2%} |")
