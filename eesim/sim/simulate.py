"""The simulation: arrivals, a router, one SimPy process per replica, and the records.

`simulate()` is the whole stage: it validates everything before any work starts, runs the
event loop and returns the per-request table, the summary (eesim.metrics) and time series.
Same inputs and seed, same outputs, bit for bit: arrivals come from a seeded generator, ties
in SimPy are broken by its event counter, and nothing reads the wall clock.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import simpy

from eesim.costmodel import CostModel
from eesim.metrics import RunResult, summarize
from eesim.plan.strategies import StrategyConfig
from eesim.scenario.behaviour import Behaviour, bind_requests, draft_trace_layer
from eesim.scenario.workload import Workload
from eesim.sched import Row, Scheduler, SchedulerConfig
from eesim.sim.plain import PlainReplica
from eesim.sim.replica import Replica, Stepping

Router = Literal["round-robin", "least-work"]


class Simulation:
    """State shared by the arrival process and the replicas."""

    def __init__(self, cost: CostModel, behaviour: Behaviour, workload: Workload,
                 strategy: StrategyConfig, sched: SchedulerConfig, replicas: int,
                 router: Router, binding: np.ndarray, shadow_rate: float = 0.0,
                 kill_at: float | None = None, seed: int = 0,
                 stepping: Stepping = Stepping()) -> None:
        self.shadow_rate, self.kill_at, self.seed = shadow_rate, kill_at, seed
        self.stepping = stepping
        self.env = simpy.Environment()
        self.cost, self.behaviour, self.workload = cost, behaviour, workload
        self.strategy, self.router = strategy, router
        self.n_layers = behaviour.n_layers
        self.binding = binding
        self.draft_trace_layer = draft_trace_layer(behaviour, strategy.draft_layer)
        n = len(workload)
        self.arrival = workload.arrival_s.astype(float).copy()
        self.claimed = np.zeros(n, bool)
        self.first_token = np.full(n, np.nan)
        self.completion = np.full(n, np.nan)
        self.output_tokens = np.zeros(n, np.int64)
        self.layer_evals = np.zeros(n)
        self.exit_checks = np.zeros(n)
        self.differs = np.zeros(n, np.int64)
        self.drafted = np.zeros(n, np.int64)
        self.accepted = np.zeros(n, np.int64)
        self.shadowed = np.zeros(n, np.int64)
        self.prefill_tokens = 0
        mem = cost.meta.memory
        self.block_bytes = sched.block_tokens * self.n_layers * mem["kv_bytes_per_token_per_layer"]
        self.static_bytes = mem["weights_bytes"] + mem.get("shared_exit_head_extra_bytes", 0)
        self.act_bytes = mem["activation_bytes_per_token"]
        kind = PlainReplica if stepping.plain else Replica
        self.replicas = [kind(self, i, Scheduler(sched, self.block_bytes)) for i in range(replicas)]
        self.series: list[tuple] = []
        self.peak_memory = self.static_bytes
        self._next = 0
        self._rr = 0
        self.completed = 0
        self.env.process(self.arrivals())

    def arrivals(self):
        w = self.workload
        if w.concurrency is not None:
            for _ in range(min(w.concurrency, len(w))):
                self.dispatch(self.env.now)
            return
        for i in range(len(w)):
            delay = self.arrival[i] - self.env.now
            if delay > 0:
                yield self.env.timeout(delay)
            if self.claimed[i]:  # a replica planned its admission ahead of time
                self._next = i + 1
            else:
                self.dispatch(self.env.now)
        yield self.env.timeout(0)

    def upcoming(self, until: float, limit: int) -> list[int]:
        """Open-loop requests not yet dispatched that arrive before `until` (at most `limit`)."""
        out, i = [], self._next
        while i < len(self.workload) and len(out) < limit and self.arrival[i] < until:
            if not self.claimed[i]:
                out.append(i)
            i += 1
        return out

    def claim(self, i: int) -> None:
        self.claimed[i] = True

    def dispatch(self, now: float) -> None:
        """Hand the next request to a replica chosen by the router."""
        i = self._next
        self._next += 1
        self.arrival[i] = now
        if self.router == "least-work":
            replica = min(self.replicas, key=lambda r: (r.outstanding(), r.index))
        else:
            replica = self.replicas[self._rr % len(self.replicas)]
            self._rr += 1
        replica.submit(Row(i, int(self.workload.prompt_len[i]), int(self.workload.output_len[i])))

    def next_arrival_after(self, now: float, skip: int = 0) -> float | None:
        """When the batch may next change from outside: an arrival (after the first `skip`
        undispatched ones), or the kill switch."""
        events = []
        nxt = self._next
        while nxt < len(self.workload) and (self.claimed[nxt] or skip > 0):
            skip -= 0 if self.claimed[nxt] else 1
            nxt += 1
        if self.workload.concurrency is None and nxt < len(self.workload):
            events.append(float(self.arrival[nxt]))
        if self.kill_at is not None and now < self.kill_at:
            events.append(self.kill_at)
        return min(events) if events else None

    def exits_enabled(self, now: float) -> bool:
        """False once the kill switch has fired: every token goes to full depth."""
        return self.kill_at is None or now < self.kill_at

    def shadow_mask(self, request: np.ndarray, position: np.ndarray) -> np.ndarray:
        """(K, R) tokens sampled for the full-depth shadow stream: a seeded hash of
        (request, position) below the shadow rate, so the sample does not depend on batching."""
        if self.shadow_rate <= 0:
            return np.zeros(position.shape, bool)
        with np.errstate(over="ignore"):  # the hash wraps around 2**64 on purpose
            mix = (np.uint64(self.seed) * np.uint64(0x9E3779B97F4A7C15)
                   + request.astype(np.uint64)[None, :] * np.uint64(0xBF58476D1CE4E5B9)
                   + position.astype(np.uint64) * np.uint64(0x94D049BB133111EB))
            mix ^= mix >> np.uint64(31)
            mix *= np.uint64(0xD6E8FEB86659FD93)
            mix ^= mix >> np.uint64(32)
        return (mix >> np.uint64(11)).astype(np.float64) / float(1 << 53) < self.shadow_rate

    def complete(self, row: Row, now: float) -> None:
        self.completion[row.request] = now
        self.completed += 1
        if self.workload.concurrency is not None and self._next < len(self.workload):
            self.dispatch(now)

    def note_memory(self, blocks, rows) -> None:
        """The KV blocks and rows held in each step of a bulk (arrays, or one step's ints):
        the memory peak is that of the step holding the most."""
        memory = self.static_bytes + np.asarray(blocks) * self.block_bytes + np.asarray(rows) * self.act_bytes
        self.peak_memory = max(self.peak_memory, int(np.max(memory)))

    def record_memory(self, replica: Replica) -> None:
        rows = len(replica.sched.running)
        kv = replica.sched.used_blocks(0) * self.block_bytes
        memory = self.static_bytes + kv + rows * self.act_bytes
        self.peak_memory = max(self.peak_memory, memory)
        self.series.append((self.env.now, replica.index, rows, len(replica.sched.waiting), memory))


def simulate(cost: CostModel, behaviour: Behaviour, workload: Workload, strategy: StrategyConfig,
             sched: SchedulerConfig, *, replicas: int = 1, router: Router = "round-robin",
             task_mix: dict[str, float] | None = None, seed: int = 0, shadow_rate: float = 0.0,
             kill_at: float | None = None, binding: np.ndarray | None = None,
             stepping: Stepping = Stepping()) -> RunResult:
    """Run the workload through `replicas` replicas serving with `strategy`; `shadow_rate` of
    early-exited tokens also run to full depth; from `kill_at` seconds on, exits are off.
    `binding` names each request's trace request outright (else drawn by `task_mix`).
    `stepping` changes how the work is done, never the result (`Stepping.PLAIN`: one step at a
    time)."""
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if not 0 <= shadow_rate <= 1:
        raise ValueError(f"shadow rate must be in [0, 1], got {shadow_rate}")
    if kill_at is not None and kill_at < 0:
        raise ValueError(f"kill switch time must be >= 0 s, got {kill_at}")
    if behaviour.n_layers != cost.meta.model.n_layers:
        raise ValueError(f"behaviour has {behaviour.n_layers} layers, the profile's model "
                         f"{cost.meta.model.n_layers}")
    cost.extrapolations.clear()
    tasks, binding = bind_requests(behaviour, len(workload), task_mix, seed, binding)
    sim = Simulation(cost, behaviour, workload, strategy, sched, replicas, router, binding,
                     shadow_rate, kill_at, seed, stepping)
    sim.env.run()
    if sim.completed != len(workload):
        raise RuntimeError(f"simulation ended with {sim.completed} of {len(workload)} completed")
    requests = pd.DataFrame({
        "request_id": np.arange(len(workload)), "task": tasks, "trace_request": binding,
        "arrival_s": sim.arrival, "first_token_s": sim.first_token,
        "completion_s": sim.completion, "prompt_tokens": workload.prompt_len,
        "output_tokens": sim.output_tokens, "layer_evals": sim.layer_evals,
        "exit_checks": sim.exit_checks,
        "drafted": sim.drafted, "accepted": sim.accepted, "differs": sim.differs,
        "shadowed": sim.shadowed,
    })
    summary = summarize(requests)
    summary.update({
        "peak_memory_bytes": int(sim.peak_memory),
        "extrapolated": cost.extrapolated,
        "extrapolated_points": dict(cost.extrapolations),
        "preemptions": sum(r.sched.preemptions for r in sim.replicas),
        "prefill_tokens": sim.prefill_tokens,
        "shadow_rate": shadow_rate,
        "shadow_tokens": int(sim.shadowed.sum()),
        "kill_at_s": kill_at,
        "depth_mapped_from": behaviour.mapped_from,
        "profile": cost.label,
        "strategy": strategy.model_dump(),
        "replicas": replicas,
        "workload": workload.source,
    })
    series = pd.DataFrame(sim.series, columns=["time_s", "replica", "batch", "queue", "memory_bytes"])
    return RunResult(requests, summary, series)
