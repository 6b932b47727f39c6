"""What-if questions: one serving configuration, predicted from a profile and a trace.

The dashboard's what-if and capacity pages and `eesim report` ask the same thing: with this
profile (measured or analytic), this trace, an exit policy (a signal and one threshold, or a
policy file), a strategy, a batch cap, a load and a replica count, what TTFT, TPOT, throughput,
peak memory, layers per token and quality delta follow? `WhatIf` holds the question with
field-named validation; `answer()` runs the SimPy simulation. Same question, same answer, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from eesim.plan.strategies import KVPolicy, StrategyConfig, StrategyName
from eesim.policy.policy import SIGNALS, ExitPolicy
from eesim.scenario.options import DEFAULT_REQUESTS, LoadOptions, ServingOptions, kv_capacity
from eesim.sched import SchedulerConfig

if TYPE_CHECKING:  # the question loads light (the CLI declares flags from it); answers load the rest
    import pandas as pd

    from eesim.costmodel import CostModel
    from eesim.trace import ExitTrace

_strategy = StrategyConfig.model_fields
_load = LoadOptions.model_fields
_serving = ServingOptions.model_fields
THRESHOLD_RANGE = {"max_prob": (0.0, 1.0), "margin": (0.0, 1.0), "entropy": (0.0, 8.0)}
# static: 1..n_layers; risk needs a fitted risk model (eesim calibrate --signal risk: a policy file)


class WhatIf(BaseModel):
    """One configuration to predict. `threshold` None means never exit early (the baseline);
    `rate` is Poisson requests per second across all replicas. Every option that `eesim
    simulate` also takes is declared there once (its default, bounds and description) and
    reused here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: StrategyName = _strategy["name"]
    kv: KVPolicy | None = _strategy["kv"]
    draft_layer: int = _strategy["draft_layer"]
    drafts: int = _strategy["drafts"]
    min_layer: int = _strategy["min_layer"]
    check_every: int = _strategy["check_every"]
    horizon: int = _strategy["horizon"]
    signal: str = Field("max_prob", description="The exit signal: max_prob | margin | entropy | static.")
    threshold: float | None = Field(0.9, description="The signal's threshold (None: never exit).")
    max_batch: int = SchedulerConfig.model_fields["max_batch"]
    rate: float = Field(20.0, gt=0, description="Poisson arrivals per second, all replicas together.")
    replicas: int = _serving["replicas"]
    requests: int = Field(DEFAULT_REQUESTS, ge=1, description="Requests simulated.")
    prompt_len: int = _load["prompt_len"]
    output_len: int = _load["output_len"]
    kv_memory_gib: float | None = _serving["kv_memory_gib"]
    shadow_rate: float = _serving["shadow_rate"]
    seed: int = _load["seed"]

    @field_validator("signal")
    @classmethod
    def _known_signal(cls, value: str) -> str:
        if value not in SIGNALS or value == "risk":
            raise ValueError(f"signal {value!r} is not one of max_prob, margin, entropy, static")
        return value

    def strategy_config(self) -> StrategyConfig:
        return StrategyConfig(name=self.strategy, kv=self.kv, min_layer=self.min_layer,
                              check_every=self.check_every, draft_layer=self.draft_layer,
                              drafts=self.drafts, horizon=self.horizon)

    def policy(self, trace: ExitTrace) -> ExitPolicy | None:
        """A policy with one threshold for every task, for the trace's model (None: no exits)."""
        if self.threshold is None:
            return None
        return ExitPolicy(signal=self.signal, thresholds={"*": float(self.threshold)},
                          min_layer=min(self.min_layer, trace.meta.n_layers),
                          model_sha256=trace.meta.model_sha256, n_layers=trace.meta.n_layers)


@dataclass
class Answer:
    """A what-if's prediction: the summary (eesim.metrics plus the simulator's fields), the
    per-request table with TTFT and TPOT, and the exit depths of the trace's tokens under the
    policy (trace layers, before any mapping to the profile's depth)."""

    question: WhatIf
    summary: dict
    requests: pd.DataFrame
    exit_layers: np.ndarray
    trace_layers: int


def answer(cost: CostModel, trace: ExitTrace, q: WhatIf, policy: ExitPolicy | None = None,
           depths: bool = True) -> Answer:
    """Simulate the question on the profile; `policy` overrides the question's signal and
    threshold (a calibrated policy file). A trace of another depth than the profile's model is
    mapped by relative depth, and the summary says so (`depth_mapped_from`). `depths=False`
    skips the per-token exit depths (sweeps do not show them)."""
    from eesim.metrics import per_request
    from eesim.policy.replay import replay
    from eesim.scenario.behaviour import from_trace
    from eesim.scenario.workload import poisson
    from eesim.sim.simulate import simulate

    policy = policy if policy is not None else q.policy(trace)
    n_layers = cost.meta.model.n_layers
    behaviour = from_trace(trace, policy, n_layers, map_depth=trace.meta.n_layers != n_layers)
    sched = SchedulerConfig(max_batch=q.max_batch, kv_capacity_bytes=kv_capacity(cost, q.kv_memory_gib))
    workload = poisson(q.rate, q.requests, q.seed, prompt=(q.prompt_len,) * 2,
                       output=(q.output_len,) * 2)
    result = simulate(cost, behaviour, workload, q.strategy_config(), sched, replicas=q.replicas,
                      seed=q.seed, shadow_rate=q.shadow_rate)
    if not depths:
        exits = np.zeros(0, np.int64)
    elif policy is not None and trace.kind == "full":
        exits = replay(policy, trace).exit_layer
    else:
        exits = np.full(len(trace.tokens()), trace.meta.n_layers)
    return Answer(q, result.summary, per_request(result.requests), exits, trace.meta.n_layers)


def threshold_range(signal: str, n_layers: int) -> tuple[float, float]:
    """Slider bounds for a signal's threshold."""
    return (1.0, float(n_layers)) if signal == "static" else THRESHOLD_RANGE[signal]

