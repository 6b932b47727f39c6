"""The plain path of a replica: one step at a time, each step's plan priced operation by
operation (eesim/sim/reference.py). It is the definition of what the simulator does; `Replica`
(eesim/sim/replica.py) does the same in bulks of steps with a vectorised pricer, and tests hold
the two equal (times to 1e-9 relative, identical counts). Chosen by
`simulate(..., stepping=Stepping.PLAIN)`.

One step, as the engine's loop runs it (eesim/serve.py, the contract both share): preempt what
memory cannot hold, admit what fits, prefill the prompt chunks due and decode the running rows
with the strategy's plan, then apply what the step produced (tokens, exits, drafts,
completions) when its time has passed.
"""

from __future__ import annotations

import numpy as np
import simpy

from eesim.plan.strategies import plan
from eesim.policy.selfspec import timeline
from eesim.scenario.controller import TraceController
from eesim.sched import Row, Scheduler
from eesim.serve import Step, decoded, prefilled, schedule
from eesim.sim.reference import price_prefill, price_step, rows_cost


class _Batch:
    def __init__(self, rows: np.ndarray, n_layers: int) -> None:
        self.rows, self.n_layers = rows, n_layers


class ReplicaQueue:
    """What every replica has, plain or in bulks: a scheduler, the process that serves it, and
    the requests submitted to it."""

    def __init__(self, sim, index: int, scheduler: Scheduler) -> None:
        self.sim, self.index, self.sched = sim, index, scheduler
        self.wake: simpy.Event | None = None

    def submit(self, row: Row) -> None:
        self.sched.waiting.append(row)
        if self.wake is not None and not self.wake.triggered:
            self.wake.succeed()

    def outstanding(self) -> int:
        """Tokens still to generate here (the least-outstanding-work router's key)."""
        return sum(r.remaining for r in self.sched.running) + sum(r.remaining for r in self.sched.waiting)


class PlainReplica(ReplicaQueue):
    """A scheduler, a clock and the records of the requests it served, stepped plainly."""

    def __init__(self, sim, index: int, scheduler: Scheduler) -> None:
        super().__init__(sim, index, scheduler)
        self.process = sim.env.process(self.run())

    def run(self):
        env, sim, sched = self.sim.env, self.sim, self.sched
        while True:
            if not sched.running and not sched.waiting:
                self.wake = env.event()
                yield self.wake
                self.wake = None
                continue
            step = schedule(sched, sim.strategy)
            seconds, apply = self.step(step)
            yield env.timeout(seconds)
            apply(env.now)
            for row in sched.finish():
                sim.complete(row, row.completed_at)
            sim.record_memory(self)

    def step(self, step: Step):
        """The seconds of one step (its prompt chunks and one decode step of its decoding rows)
        and a function that applies what it produced once it has ended."""
        sim, cfg, n = self.sim, self.sim.strategy, self.sim.n_layers
        decoding, chunks, joining = step.decoding, step.chunks, step.joining
        sim.prefill_tokens += sum(c for _, c in chunks)
        seconds = 0.0
        if chunks:
            sizes = np.array([c for _, c in chunks])
            cached = np.array([r.prefilled for r, _ in chunks])
            seconds += price_prefill(sim.cost, sizes, cached, len(joining), n)
        if not decoding and not joining:  # only prompts still prefilling: a pass that prefills
            seconds += rows_cost(sim.cost, "step", 1)
        result = self._decode(decoding) if decoding else None
        if result is not None:
            seconds += result[0]
        rows = decoding + joining
        ends = [r.context + (result[1][i] if result and i < len(decoding) else 1)
                for i, r in enumerate(rows)]
        sim.note_memory(sum(-(-e // self.sched.cfg.block_tokens) for e in ends), len(rows))

        def apply(now: float) -> None:
            for row in prefilled(step, cfg):
                if row.generated == 1:  # a fresh request's first token (not a recompute's)
                    sim.first_token[row.request] = now
                if row.remaining <= 0:
                    row.completed_at = now
                sim.output_tokens[row.request] = row.generated
            if result is not None:
                self._apply(decoding, result, now)
        return seconds, apply

    def _decode(self, rows: list[Row]):
        """One decode step of `rows`: its seconds, tokens emitted per row, and what it did."""
        sim, cfg, n = self.sim, self.sim.strategy, self.sim.n_layers
        req = np.array([r.request for r in rows])
        generated = np.array([r.generated for r in rows])
        remaining = np.array([r.remaining for r in rows])
        enabled = sim.exits_enabled(sim.env.now)
        present = np.ones((1, len(rows)), bool)
        tokens = sim.behaviour.token_index(sim.binding[req], generated)[None, :]
        expected = np.array([cfg.expected_depth(r.last_depth) for r in rows])
        ctl = TraceController(sim.behaviour, tokens, expected, generated[None, :], enabled,
                              sim.shadow_mask(req, generated[None, :]))
        if cfg.name == "selfspec" and enabled:
            b = sim.behaviour
            ctl.drafted, ctl.accepted, _ = timeline(b.draft_runs(sim.draft_trace_layer, cfg.drafts),
                                                    b.offsets, sim.binding[req], generated,
                                                    remaining, cfg.drafts, 1)
        owed = None
        if cfg.kv == "defer" and cfg.name != "selfspec":
            owed = np.stack([np.zeros(n, np.int64) if r.deferred is None else r.deferred for r in rows])
        ops = list(plan(cfg, _Batch(present, n), ctl))
        context = np.array([r.prompt for r in rows]) + generated
        cost = price_step(sim.cost, ops, present[0], context, owed)
        emitted = np.minimum(ctl.accepted[0] + 1, remaining)
        return cost.seconds, emitted, cost, ctl

    def _apply(self, rows: list[Row], result, now: float) -> None:
        sim, cfg = self.sim, self.sim.strategy
        _, emitted, cost, ctl = result
        differs = ctl.differs()[0]
        for i, row in enumerate(rows):
            decoded(row, int(emitted[i]), int(ctl.exit_layer[0, i]), cfg, sim.n_layers)
            if cost.owed is not None:
                row.deferred = cost.owed[i]
            if row.remaining <= 0:
                row.completed_at = now
            sim.output_tokens[row.request] = row.generated
            r = row.request
            sim.layer_evals[r] += cost.layer_evals[i]
            sim.exit_checks[r] += cost.exit_checks[i]
            sim.differs[r] += int(differs[i])
            sim.shadowed[r] += int(ctl.shadowed[0, i])
            sim.drafted[r] += int(ctl.drafted[0, i])
            sim.accepted[r] += int(ctl.accepted[0, i])
