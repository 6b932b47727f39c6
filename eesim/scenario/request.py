"""One scenario as `eesim simulate` and `eesim measure` take it: validated before any work
starts, then loaded and cross-checked (`prepare`) into what both the simulator and the engine
run: the cost model, the exit behaviour, the workload, the strategy and the scheduler."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from eesim.costmodel import CostModel
from eesim.plan.strategies import KV_POLICIES, STRATEGIES, StrategyConfig
from eesim.policy.policy import load_policy
from eesim.scenario.behaviour import from_trace
from eesim.scenario.workload import azure, bursty, closed_loop, poisson
from eesim.sched import SchedulerConfig
from eesim.trace import read_trace

DEFAULT_REQUESTS = 1000


class SimulationRequest(BaseModel):
    """Everything `eesim simulate` takes; errors name the flag and the value."""

    model_config = ConfigDict(extra="forbid")

    profile: Path
    trace: Path
    policy: Path | None = None
    strategy: str = "full"
    draft_layer: int = Field(4, ge=1)
    drafts: int = Field(4, ge=1)
    kv: str | None = None
    min_layer: int = Field(1, ge=1)
    check_every: int = Field(1, ge=1)
    rate: float | None = Field(None, gt=0)
    burstiness: float | None = Field(None, gt=0)
    arrivals: str | None = None
    time_scale: float = Field(1.0, gt=0)
    concurrency: int | None = Field(None, ge=1)
    requests: int | None = Field(None, ge=1)
    prompt_len: int = Field(64, ge=1)
    output_len: int = Field(128, ge=1)
    max_prompt: int | None = Field(None, ge=1)
    max_output: int | None = Field(None, ge=1)
    task_mix: str | None = None
    max_batch: int = Field(16, ge=1)
    batching: str = "continuous"
    prefill: str = "whole"
    max_batched_tokens: int = Field(8192, ge=1)
    kv_memory_gib: float | None = Field(None, gt=0)
    replicas: int = Field(1, ge=1)
    router: str = "round-robin"
    map_depth: bool = False
    seed: int = 0
    shadow_rate: float = Field(0.0, ge=0, le=1)
    kill_at: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_load(self) -> SimulationRequest:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--strategy {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if self.kv is not None and self.kv not in KV_POLICIES:
            raise ValueError(f"--kv {self.kv!r} is not one of {', '.join(KV_POLICIES)}")
        given = [n for n in ("rate", "arrivals", "concurrency") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of --rate, --arrivals, --concurrency (got {given})")
        if self.router not in ("round-robin", "least-work"):
            raise ValueError(f"--router {self.router!r} is not round-robin or least-work")
        return self

    def strategy_config(self) -> StrategyConfig:
        kv = self.kv or ("shared" if self.strategy == "selfspec" else "propagate")
        return StrategyConfig(name=self.strategy, kv=kv, min_layer=self.min_layer,
                              check_every=self.check_every,
                              draft_layer=self.draft_layer, drafts=self.drafts)

    def mix(self) -> dict[str, float] | None:
        if not self.task_mix:
            return None
        try:
            return {k.strip(): float(v) for k, v in (p.split("=") for p in self.task_mix.split(","))}
        except ValueError as exc:
            raise ValueError(f"--task-mix {self.task_mix!r}: expected task=share,... ") from exc

    def workload(self):
        n = self.requests or DEFAULT_REQUESTS
        lengths = {"prompt": (self.prompt_len,) * 2, "output": (self.output_len,) * 2}
        if self.arrivals:
            return azure(self.arrivals, self.requests, self.time_scale, self.max_prompt, self.max_output)
        if self.concurrency:
            return closed_loop(self.concurrency, n, self.seed, **lengths)
        if self.burstiness:
            return bursty(self.rate, n, self.seed, self.burstiness, **lengths)
        return poisson(self.rate, n, self.seed, **lengths)


def prepare(req: SimulationRequest):
    """Load and cross-check every input; raises before any simulation work."""
    strategy = req.strategy_config()
    cost = CostModel.load(req.profile)
    trace = read_trace(req.trace)
    policy = load_policy(req.policy) if req.policy else None
    if policy is not None:
        policy.check_model(trace.meta.model_sha256, f"trace {req.trace}")
    foreign = cost.meta.model_sha256 and trace.meta.model_sha256 != cost.meta.model_sha256
    if foreign and not req.map_depth:
        raise ValueError(f"{req.profile}: profiled model {cost.meta.model_sha256[:12]}… is not the "
                         f"trace's model {trace.meta.model_sha256[:12]}…")
    behaviour = from_trace(trace, policy, cost.meta.model.n_layers, req.map_depth)
    mem = cost.meta.memory
    capacity = (req.kv_memory_gib * 2**30 if req.kv_memory_gib else
                0.9 * (mem["device_memory_bytes"] - mem["weights_bytes"]))
    if capacity <= 0:
        raise ValueError(f"{req.profile}: the weights ({mem['weights_bytes'] / 2**30:.1f} GiB) leave "
                         f"no memory for KV; give --kv-memory")
    sched = SchedulerConfig(batching=req.batching, max_batch=req.max_batch, prefill=req.prefill,
                            max_batched_tokens=req.max_batched_tokens,
                            kv_capacity_bytes=int(capacity))
    return cost, behaviour, req.workload(), strategy, sched
