"""One scenario as `eesim simulate` and `eesim measure` take it: validated before any work
starts, then loaded and cross-checked (`prepare`) into what both the simulator and the engine
run: the cost model, the exit behaviour, the workload, the strategy and the scheduler."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from eesim.costmodel import CostModel
from eesim.plan.strategies import StrategyConfig
from eesim.policy.policy import load_policy
from eesim.scenario.behaviour import from_trace
from eesim.scenario.options import LoadOptions, ServingOptions, kv_capacity
from eesim.sched import SchedulerConfig
from eesim.trace import read_trace

CONCERNS = ("strategy", "load", "scheduler", "serving")  # the composed models, by field name


class SimulationRequest(BaseModel):
    """Everything `eesim simulate` takes: the files, and one model per concern (each option
    declared once, in eesim.scenario.options, eesim.sched and eesim.plan.strategies)."""

    model_config = ConfigDict(extra="forbid")

    profile: Path
    trace: Path
    policy: Path | None = None
    strategy: StrategyConfig = StrategyConfig()
    load: LoadOptions
    scheduler: SchedulerConfig = SchedulerConfig()
    serving: ServingOptions = ServingOptions()


def prepare(req: SimulationRequest):
    """Load and cross-check every input; raises before any simulation work. Returns the cost
    model, the exit behaviour, the workload, the strategy and the scheduler's configuration."""
    cost = CostModel.load(req.profile)
    trace = read_trace(req.trace)
    policy = load_policy(req.policy) if req.policy else None
    if policy is not None:
        policy.check_model(trace.meta.model_sha256, f"trace {req.trace}")
    map_depth = req.serving.map_depth
    foreign = cost.meta.model_sha256 and trace.meta.model_sha256 != cost.meta.model_sha256
    if foreign and not map_depth:
        raise ValueError(f"{req.profile}: profiled model {cost.meta.model_sha256[:12]}… is not the "
                         f"trace's model {trace.meta.model_sha256[:12]}…")
    behaviour = from_trace(trace, policy, cost.meta.model.n_layers, map_depth)
    sched = req.scheduler.model_copy(update={
        "kv_capacity_bytes": kv_capacity(cost, req.serving.kv_memory_gib)})
    return cost, behaviour, req.load.workload(), req.strategy, sched
