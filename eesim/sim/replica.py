"""One serving replica as a SimPy process: schedule, price the step plan, advance the clock.

Decode-only stretches are stepped in bulk: K steps of the same rows are planned and priced with
one pass of the strategy (every row set a (K, R) mask), then cut at the first event that could
change the batch (a completion, the next arrival, KV memory running out). The result is the
same as stepping one at a time; only the bookkeeping is shared.
"""

from __future__ import annotations

import numpy as np
import simpy

from eesim.plan.ops import FinalHead, Layers
from eesim.plan.strategies import StrategyConfig, plan
from eesim.sched import Row, Scheduler
from eesim.sim.step import Pricer, TraceController, speculation

BULK = 64


class Replica:
    """A scheduler, a clock and the records of the requests it served."""

    def __init__(self, sim, index: int, scheduler: Scheduler) -> None:
        self.sim, self.index, self.sched = sim, index, scheduler
        self.wake: simpy.Event | None = None
        self.process = sim.env.process(self.run())

    def submit(self, row: Row) -> None:
        self.sched.waiting.append(row)
        if self.wake is not None and not self.wake.triggered:
            self.wake.succeed()

    def outstanding(self) -> int:
        """Tokens still to generate here (the least-outstanding-work router's key)."""
        return sum(r.remaining for r in self.sched.running) + sum(r.remaining for r in self.sched.waiting)

    def run(self):
        env, sim = self.sim.env, self.sim
        while True:
            if not self.sched.running and not self.sched.waiting:
                self.wake = env.event()
                yield self.wake
                self.wake = None
                continue
            self.sched.make_room(self.tokens_per_step)
            admitted = self.sched.admit(self.tokens_per_step)
            decoding = [r for r in self.sched.running if not r.needs_prefill]
            if admitted:
                seconds = self.prefill(admitted)
                if decoding:
                    step, apply = self.decode(decoding, 1, None)
                    seconds += float(step[0])
                else:
                    apply = None
                yield env.timeout(seconds)
                for row in admitted:
                    row.needs_prefill = False
                    if row.generated == 0:
                        sim.first_token[row.request] = env.now
                    row.generated += 1
                    row.last_depth = cfg_first_depth(sim)
                    sim.output_tokens[row.request] = row.generated
                if apply:
                    apply(1, env.now)
            else:
                steps, apply = self.decode(decoding, BULK, sim.next_arrival_after(env.now))
                yield env.timeout(float(steps.sum()))
                apply(len(steps), env.now)
            sim.record_memory(self)
            for row in self.sched.finish():
                sim.complete(row, env.now)

    def prefill(self, rows: list[Row]) -> float:
        """Seconds to prefill `rows` (prompt plus anything generated before a preemption)."""
        mask = np.ones((1, len(rows)), bool)
        query = np.array([[r.context for r in rows]])
        pricer = Pricer(self.sim.cost, np.zeros((1, len(rows))))
        pricer.price(Layers(0, self.sim.n_layers, mask, query))
        pricer.price(FinalHead(mask))
        self.sim.prefill_tokens += int(query.sum())  # prompt work is not per output token
        return float(pricer.seconds[0])

    def decode(self, rows: list[Row], bulk: int, next_arrival: float | None):
        """Price up to `bulk` decode steps of `rows`; return step seconds and an applier."""
        sim = self.sim
        cfg: StrategyConfig = sim.strategy
        req = np.array([r.request for r in rows])
        trace_req = sim.binding[req]
        generated = np.array([r.generated for r in rows])
        remaining = np.array([r.remaining for r in rows])
        k_steps = max(1, min(bulk, self._memory_tokens() // self.tokens_per_step))
        exits_enabled = sim.exits_enabled(sim.env.now)
        if cfg.name == "selfspec" and not exits_enabled:  # kill switch: plain decoding
            k_steps = min(k_steps, int(remaining.min()))
            position = generated + np.arange(k_steps)[:, None]
            drafted = accepted = np.zeros((k_steps, len(rows)), np.int64)
            emitted = np.ones((k_steps, len(rows)), np.int64)
        elif cfg.name == "selfspec":
            drafted, accepted, position = speculation(
                sim.behaviour, sim.draft_trace_layer, trace_req, generated, remaining,
                cfg.drafts, k_steps)
            emitted = np.minimum(accepted + 1, np.maximum(remaining - (position - generated), 0))
            done_at = np.cumsum(emitted, axis=0) >= remaining
            first_done = np.flatnonzero(done_at.any(axis=1))
            k_steps = int(first_done[0]) + 1 if len(first_done) else k_steps
            drafted, accepted, position, emitted = (a[:k_steps] for a in
                                                    (drafted, accepted, position, emitted))
        else:
            k_steps = min(k_steps, int(remaining.min()))
            position = generated + np.arange(k_steps)[:, None]
            emitted = np.ones((k_steps, len(rows)), np.int64)
        tokens = sim.behaviour.token_index(trace_req, position)
        expected = np.array([max(cfg.min_layer, r.last_depth - 1) for r in rows])
        ctl = TraceController(sim.behaviour, tokens, expected, position, exits_enabled,
                              sim.shadow_mask(req, position))
        if cfg.name == "selfspec":
            ctl.drafted, ctl.accepted = drafted, accepted
        batch = _Batch(np.ones((k_steps, len(rows)), bool), sim.n_layers)
        pricer = Pricer(sim.cost, np.array([r.prompt for r in rows]) + position)
        for op in plan(cfg, batch, ctl):
            pricer.price(op)
        steps = pricer.seconds
        if next_arrival is not None and k_steps > 1:
            starts = sim.env.now + np.r_[0.0, np.cumsum(steps)[:-1]]
            k_steps = max(1, int((starts < next_arrival).sum()))
            steps = steps[:k_steps]
        differs = ctl.differs()

        def apply(k: int, now: float) -> None:
            for i, row in enumerate(rows):
                row.generated += int(emitted[:k, i].sum())
                sim.output_tokens[row.request] = row.generated
                sim.layer_evals[row.request] += pricer.layer_evals[:k, i].sum()
                sim.differs[row.request] += int(differs[:k, i].sum())
                sim.shadowed[row.request] += int(ctl.shadowed[:k, i].sum())
                if cfg.name == "selfspec":
                    sim.drafted[row.request] += int(drafted[:k, i].sum())
                    sim.accepted[row.request] += int(accepted[:k, i].sum())
                else:
                    row.last_depth = int(ctl.exit_layer[k - 1, i]) or sim.n_layers

        return steps, apply

    @property
    def tokens_per_step(self) -> int:
        """KV positions a step may write per row: k + 1 when verifying k drafts."""
        return self.sim.strategy.drafts + 1 if self.sim.strategy.name == "selfspec" else 1

    def _memory_tokens(self) -> int:
        """The most tokens per row that still fit in KV memory, up to BULK x tokens per step
        (at least one step's worth: preemption made room for it)."""
        most = BULK * self.tokens_per_step
        return max(self.tokens_per_step, self.sched.tokens_that_fit(most))


def cfg_first_depth(sim) -> int:
    """Expected depth of a row's first decoded token (regroup): optimistic, the first check."""
    return sim.strategy.min_layer + 1


class _Batch:
    def __init__(self, rows: np.ndarray, n_layers: int) -> None:
        self.rows, self.n_layers = rows, n_layers
