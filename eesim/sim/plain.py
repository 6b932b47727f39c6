"""The plain path of a replica: one step at a time, each step's plan priced operation by
operation (eesim/sim/reference.py). It is the definition of what the simulator does; `Replica`
(eesim/sim/replica.py) does the same in bulks of steps with a vectorised pricer, and tests hold
the two equal (times to 1e-9 relative, identical counts). Chosen by
`simulate(..., stepping=Stepping.PLAIN)`.

One step, as the engine's loop runs it: preempt what memory cannot hold, admit what fits,
prefill the prompt chunks due and decode the running rows with the strategy's plan, then apply
what the step produced (tokens, exits, drafts, completions) when its time has passed.
"""

from __future__ import annotations

import numpy as np
import simpy

from eesim.plan.strategies import plan
from eesim.policy.selfspec import timeline
from eesim.scenario.controller import TraceController
from eesim.sched import Row, Scheduler
from eesim.sim.reference import price_prefill, price_step, rows_cost


class _Batch:
    def __init__(self, rows: np.ndarray, n_layers: int) -> None:
        self.rows, self.n_layers = rows, n_layers


class PlainReplica:
    """A scheduler, a clock and the records of the requests it served, stepped plainly."""

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
        env, sim, sched = self.sim.env, self.sim, self.sched
        while True:
            if not sched.running and not sched.waiting:
                self.wake = env.event()
                yield self.wake
                self.wake = None
                continue
            sched.make_room(sim.strategy.tokens_per_step)
            sched.admit(sim.strategy.tokens_per_step)
            decoding = [r for r in sched.running if not r.needs_prefill]
            chunks = sched.prefill_chunks()
            seconds, apply = self.step(decoding, chunks)
            for row, chunk in chunks:
                row.prefilled += chunk
            yield env.timeout(seconds)
            apply(env.now)
            for row in sched.finish():
                sim.complete(row, row.completed_at)
            sim.record_memory(self)

    def step(self, decoding: list[Row], chunks: list[tuple[Row, int]]):
        """The seconds of one step (prefill chunks and one decode step of `decoding`) and a
        function that applies what it produced once it has ended."""
        sim, cfg, n = self.sim, self.sim.strategy, self.sim.n_layers
        sim.prefill_tokens += sum(c for _, c in chunks)
        joining = [r for r, c in chunks if r.prefilled + c == r.context]
        seconds = 0.0
        if chunks:
            sizes = np.array([c for _, c in chunks])
            cached = np.array([r.prefilled for r, _ in chunks])
            seconds += price_prefill(sim.cost, sizes, cached, len(joining), n)
        if not decoding and not joining:  # only prompts still prefilling: a pass that prefills
            seconds += rows_cost(sim.cost, "step", 1)
        decoded = self._decode(decoding) if decoding else None
        if decoded is not None:
            seconds += decoded[0]
        rows = decoding + joining
        ends = [r.context + (decoded[1][i] if decoded and i < len(decoding) else 1)
                for i, r in enumerate(rows)]
        sim.note_memory(sum(-(-e // self.sched.cfg.block_tokens) for e in ends), len(rows))

        def apply(now: float) -> None:
            for row in joining:
                row.needs_prefill = False
                if row.generated == 0:
                    sim.first_token[row.request] = now
                row.generated += 1
                row.last_depth = cfg.depth_after_prefill
                if row.remaining <= 0:
                    row.completed_at = now
                sim.output_tokens[row.request] = row.generated
            if decoded is not None:
                self._apply(decoding, decoded, now)
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

    def _apply(self, rows: list[Row], decoded, now: float) -> None:
        sim, cfg = self.sim, self.sim.strategy
        _, emitted, cost, ctl = decoded
        differs = ctl.differs()[0]
        for i, row in enumerate(rows):
            row.generated += int(emitted[i])
            if cost.owed is not None:
                row.deferred = cost.owed[i]
            row.last_depth = cfg.depth_after_step(row.last_depth, int(ctl.exit_layer[0, i]), sim.n_layers)
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
