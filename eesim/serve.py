"""One serving step: the cycle the simulator's plain replica (eesim/sim/plain.py) and the engine
(eesim/engine/measure.py) both run, stated as a contract the way vLLM's scheduler interface is
(what a step takes, what it returns). Neither interpreter admits, preempts, chunks or keeps a
row's state in any other way.

    step = schedule(sched, strategy)   # preempt what memory cannot hold, admit what fits: the
                                       # prompt chunks due and the rows that decode this step
    ...                                # the interpreter prefills step.chunks and runs the
                                       # strategy's plan over step.decoding (priced, or executed)
    for row in prefilled(step, strategy):   # when the step has ended: chunks written, and the
        ...                                 # rows whose prompt completed emitted a first token
    decoded(row, tokens, exit_layer, strategy, n_layers)   # each decoding row's result
    done = sched.finish()              # rows with nothing left to generate leave the batch

The bulk replica (eesim/sim/replica.py) runs many such steps in one pass for speed, with the
same scheduler calls and the same row rules, and is tested equal to the plain replica.
"""

from __future__ import annotations

from dataclasses import dataclass

from eesim.plan.strategies import StrategyConfig
from eesim.sched import Row, Scheduler


@dataclass
class Step:
    """What one step serves: the rows preempted to make room (to be recomputed) and admitted,
    the rows that decode, the prompt chunks prefilled, and among those the rows whose prompt
    completes with this step's chunk (they decode from the next step)."""

    preempted: list[Row]
    admitted: list[Row]
    decoding: list[Row]
    chunks: list[tuple[Row, int]]
    joining: list[Row]


def schedule(sched: Scheduler, strategy: StrategyConfig) -> Step:
    """The next step of a replica's batch, room kept for every running row's writes."""
    ahead = strategy.tokens_per_step
    preempted = sched.make_room(ahead)
    admitted = sched.admit(ahead)
    decoding = [r for r in sched.running if not r.needs_prefill]
    chunks = sched.prefill_chunks()
    joining = [r for r, c in chunks if r.prefilled + c == r.context]
    return Step(preempted, admitted, decoding, chunks, joining)


def prefilled(step: Step, strategy: StrategyConfig) -> list[Row]:
    """After the step: each chunk is in the KV cache; a row whose prompt (or recomputed
    context) is complete has emitted its first token at full depth and decodes from now on.
    Returns those rows."""
    for row, chunk in step.chunks:
        row.prefilled += chunk
    for row in step.joining:
        row.needs_prefill = False
        row.generated += 1
        row.last_depth = strategy.depth_after_prefill
    return step.joining


def decoded(row: Row, tokens: int, exit_layer: int, strategy: StrategyConfig, n_layers: int) -> None:
    """After the step: a decoding row emitted `tokens` (1, or accepted drafts + 1), its token
    leaving at `exit_layer` (0: the last layer)."""
    row.generated += tokens
    row.last_depth = strategy.depth_after_step(row.last_depth, exit_layer, n_layers)
