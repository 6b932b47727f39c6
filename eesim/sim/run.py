"""`eesim simulate`: a scenario simulated, its outputs on disk."""

from __future__ import annotations

from pathlib import Path

from eesim.io import write_json_atomic, write_parquet_atomic
from eesim.metrics import RunResult
from eesim.scenario.request import SimulationRequest, prepare
from eesim.sim.simulate import simulate


def run_simulation(req: SimulationRequest, out: Path | None = None) -> RunResult:
    cost, behaviour, workload, strategy, sched = prepare(req)
    serving = req.serving
    result = simulate(cost, behaviour, workload, strategy, sched, replicas=serving.replicas,
                      router=serving.router, task_mix=req.load.mix(), seed=req.load.seed,
                      shadow_rate=serving.shadow_rate, kill_at=serving.kill_at)
    result.summary["request"] = req.model_dump(mode="json")
    if out is not None:
        write_parquet_atomic(result.requests, out / "requests.parquet", "{}")
        write_parquet_atomic(result.series, out / "series.parquet", "{}")
        write_json_atomic(out / "summary.json", result.summary)
    return result
