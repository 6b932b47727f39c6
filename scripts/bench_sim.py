"""Benchmark the simulator: the full hour of the Azure conversation log (19,366 requests) on the
analytic H100 profile of llama-3-8b, exits from the committed reference trace mapped by depth.

    python scripts/bench_sim.py [--requests N] [--strategies full,compact,selfspec]

Prints a markdown table for docs/benchmarks.md: wall time per strategy (one process, one core,
side by side), simulated output tokens per second and the predicted metrics.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

from eesim.costmodel import CostModel
from eesim.plan.strategies import StrategyConfig
from eesim.policy.calibrate import calibrate
from eesim.profile.env import cpu_name
from eesim.scenario.behaviour import from_trace
from eesim.scenario.workload import azure
from eesim.sched import SchedulerConfig
from eesim.sim.simulate import simulate
from eesim.trace import read_trace

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument("--strategies", default="full,compact,selfspec")
    args = ap.parse_args()
    trace = read_trace(ROOT / "traces" / "reference-greedy.parquet")
    policy, _ = calibrate(trace, 0.01)
    cost = CostModel.load(ROOT / "profiles" / "analytic" / "h100-sxm-llama-3-8b.parquet")
    behaviour = from_trace(trace, policy, cost.meta.model.n_layers, map_depth=True)
    workload = azure("azure-conv", args.requests)
    sched = SchedulerConfig(max_batch=64, kv_capacity_bytes=int(0.9 * (80e9 - 16.06e9)))
    print(f"### Simulator, Azure conv ({len(workload)} requests), analytic H100 llama-3-8b "
          f"({datetime.now(UTC):%Y-%m-%d}, {cpu_name()}, {platform.python_version()})\n")
    print("Command: `python scripts/bench_sim.py`\n")
    print("| strategy | wall time | simulated tokens/s of wall time | TPOT mean | TTFT mean | "
          "throughput | layers/token |\n|---|---|---|---|---|---|---|")
    for name in args.strategies.split(","):
        cfg = StrategyConfig(name=name, draft_layer=16)
        start = time.perf_counter()
        s = simulate(cost, behaviour, workload, cfg, sched).summary
        wall = time.perf_counter() - start
        print(f"| {name} | {wall:.1f} s | {s['output_tokens'] / wall:,.0f} | "
              f"{s['tpot_s']['mean'] * 1e3:.2f} ms | {s['ttft_s']['mean'] * 1e3:.1f} ms | "
              f"{s['throughput_tokens_per_s']:.0f} tok/s | {s['layers_per_token']:.1f} |")


if __name__ == "__main__":
    main()
