"""What-if questions: one serving configuration, predicted from a profile and a trace.

The dashboard's what-if and capacity pages and `eesim report` ask the same thing: with this
profile (measured or analytic), this trace, an exit policy (a signal and one threshold, or a
policy file), a strategy, a batch cap, a load and a replica count, what TTFT, TPOT, throughput,
peak memory, layers per token and quality delta follow? `WhatIf` holds the question with
field-named validation; `answer()` runs the SimPy simulation. Same question, same answer, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from eesim.costmodel import CostModel
from eesim.metrics import per_request
from eesim.plan.strategies import STRATEGIES, StrategyConfig
from eesim.policy.policy import SIGNALS, ExitPolicy
from eesim.policy.replay import replay
from eesim.scenario.behaviour import from_trace
from eesim.scenario.workload import poisson
from eesim.sched import SchedulerConfig
from eesim.sim.simulate import simulate
from eesim.trace import ExitTrace

THRESHOLD_RANGE = {"max_prob": (0.0, 1.0), "margin": (0.0, 1.0), "entropy": (0.0, 8.0)}
# static: 1..n_layers; risk needs a fitted risk model (eesim calibrate --signal risk: a policy file)


class WhatIf(BaseModel):
    """One configuration to predict. `threshold` None means never exit early (the baseline);
    `rate` is Poisson requests per second across all replicas."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: str = "compact"
    draft_layer: int = Field(4, ge=1)
    drafts: int = Field(4, ge=1)
    signal: str = "max_prob"
    threshold: float | None = 0.9
    min_layer: int = Field(1, ge=1)
    max_batch: int = Field(16, ge=1)
    rate: float = Field(20.0, gt=0)
    replicas: int = Field(1, ge=1)
    requests: int = Field(1000, ge=1)
    prompt_len: int = Field(64, ge=1)
    output_len: int = Field(128, ge=1)
    kv_memory_gib: float | None = Field(None, gt=0)
    shadow_rate: float = Field(0.0, ge=0, le=1)
    seed: int = 0

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value not in STRATEGIES:
            raise ValueError(f"strategy {value!r} is not one of {', '.join(STRATEGIES)}")
        return value

    @field_validator("signal")
    @classmethod
    def _known_signal(cls, value: str) -> str:
        if value not in SIGNALS or value == "risk":
            raise ValueError(f"signal {value!r} is not one of max_prob, margin, entropy, static")
        return value

    def strategy_config(self) -> StrategyConfig:
        kv = "shared" if self.strategy == "selfspec" else "propagate"
        return StrategyConfig(name=self.strategy, kv=kv, min_layer=self.min_layer,
                              draft_layer=self.draft_layer, drafts=self.drafts)

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


def kv_capacity(cost: CostModel, gib: float | None) -> int:
    """Bytes for KV blocks: as given, else 90% of the device's memory left by the weights."""
    if gib is not None:
        return int(gib * 2**30)
    mem = cost.meta.memory
    free = 0.9 * (mem["device_memory_bytes"] - mem["weights_bytes"])
    if free <= 0:
        raise ValueError(f"{cost.profile.where}: the weights leave no memory for KV; give kv_memory_gib")
    return int(free)


def answer(cost: CostModel, trace: ExitTrace, q: WhatIf, policy: ExitPolicy | None = None,
           depths: bool = True) -> Answer:
    """Simulate the question on the profile; `policy` overrides the question's signal and
    threshold (a calibrated policy file). A trace of another depth than the profile's model is
    mapped by relative depth, and the summary says so (`depth_mapped_from`). `depths=False`
    skips the per-token exit depths (sweeps do not show them)."""
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

