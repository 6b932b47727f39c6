"""The plain path: what one step costs, priced operation by operation, top to bottom.

This file is the definition. `Pricer` (eesim/sim/pricer.py) computes the same sums for K steps
at once, with each operation's row masks kept and every term priced in one vectorised lookup;
tests hold the two equal (times to 1e-9 relative, identical counts). Read this to learn how a
step is priced; read the Pricer to see how that is made fast.

A step's plan (eesim.plan.strategies, K = 1: every row set is a (1, R) mask) costs:
- per operation on rows: its term at the number of rows it runs on (`rows_cost`); a layer at
  (rows, query, context) padded to the longest query and context of its rows (a `padded`
  profile) or at their means (`ragged`, paged attention), times the layers it spans;
- per call of a layer segment, `layer_call`; per exit check, `exit_head`; per host sync, the
  profile's sync time; per KV fill, `kv_fill` per layer and `kv_fill_call` once;
- per step with rows, `step` at the batch's row count, and `plan_op` at that row count for each
  operation the engine executes (`eesim.plan.ops.executed`);
- with kv='defer', a layer a row runs processes 1 + the tokens that skipped it since the row
  last ran it (the catch-up chunk): a per-row query.
Terms a profile did not measure (`step`, `plan_op`, `layer_call`, `kv_fill_call`) cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eesim.costmodel import CostModel
from eesim.plan.ops import (
    Compact,
    Embed,
    ExitCheck,
    FinalHead,
    HostSync,
    KVFill,
    Layers,
    Op,
    Regroup,
    first_step,
    per_step,
)

OPTIONAL = ("step", "plan_op", "layer_call", "kv_fill_call")


@dataclass
class StepCost:
    """One step priced: its seconds, the layer evaluations and exit checks of each row (R,),
    the operations an engine executes, and (kv='defer') what each row owes each layer after it."""

    seconds: float
    layer_evals: np.ndarray
    exit_checks: np.ndarray
    operations: int
    owed: np.ndarray | None = None


def rows_cost(cost: CostModel, term: str, n: int) -> float:
    """A rows-only term at n rows (no rows, or an optional term not measured: nothing)."""
    if n == 0 or (term in OPTIONAL and term not in cost.terms):
        return 0.0
    return float(cost.cost(term, n))


def layer_cost(cost: CostModel, rows: np.ndarray, query, context: np.ndarray) -> float:
    """One layer on `rows` (R,) with `query` tokens each (an int, or one per row) after
    `context` cached ones: padded to the longest, or (ragged) at the means."""
    n = int(rows.sum())
    if n == 0:
        return 0.0
    q = np.broadcast_to(np.asarray(query, float), rows.shape)[rows]
    ctx = context[rows].astype(float)
    if cost.meta.batching == "padded":
        q_at, ctx_at = max(float(q.max()), 1.0), float(ctx.max())
    else:
        q_at, ctx_at = float(q.mean()), float(ctx.mean())
    return float(cost.cost("layer", n, q_at, ctx_at))


def price_step(cost: CostModel, ops: list[Op], present: np.ndarray, context: np.ndarray,
               owed: np.ndarray | None = None) -> StepCost:
    """The plan `ops` of one step over the batch's rows `present` (R,), each with `context`
    tokens cached; `owed` (R, L): kv='defer', the tokens each row owes each layer before it."""
    seconds, executed = 0.0, 0
    evals, checks = np.zeros(len(present)), np.zeros(len(present))
    ran = None if owed is None else np.zeros(owed.shape, bool)  # (R, L) layers each row ran
    for op in ops:
        if type(op) is HostSync:
            if op.steps[0]:
                seconds += op.count * cost.host_sync_s
                executed += op.count
            continue
        rows = op.rows[0]
        n = int(rows.sum())
        if n:
            executed += first_step(per_step(op))
        if type(op) in (Embed, FinalHead):  # one row per token (verification: k + 1 each)
            tokens = int(np.where(rows, op.query if np.ndim(op.query) == 0 else op.query[0], 0).sum())
            seconds += rows_cost(cost, "embed" if type(op) is Embed else "final_head", tokens)
        elif type(op) is Layers:
            start, end = first_step(op.start), first_step(op.end)
            if end <= start:
                continue
            seconds += first_step(op.calls) * rows_cost(cost, "layer_call", n)
            query = op.query if np.ndim(op.query) == 0 else op.query[0]
            if ran is not None and np.ndim(op.query) == 0:  # catch-up, layer by layer
                for layer in range(start, end):
                    q = 1 + owed[:, layer]
                    seconds += layer_cost(cost, rows, q, context)
                    evals += np.where(rows, q, 0)
                    ran[rows, layer] = True
            else:
                seconds += (end - start) * layer_cost(cost, rows, query, context)
                evals += (end - start) * np.where(rows, query, 0)
        elif type(op) is ExitCheck:
            seconds += op.count * rows_cost(cost, "exit_head", n)
            checks += op.count * rows
        elif type(op) is KVFill:
            span = first_step(op.end) - first_step(op.start)
            seconds += span * rows_cost(cost, "kv_fill", n) + rows_cost(cost, "kv_fill_call", n)
        elif type(op) in (Compact, Regroup):
            seconds += rows_cost(cost, "compact" if type(op) is Compact else "regroup", n)
        else:
            raise TypeError(f"no price for operation {op!r}")
    batch = int(present.sum())
    seconds += rows_cost(cost, "step", batch) + executed * rows_cost(cost, "plan_op", batch)
    after = None if owed is None else np.where(ran, 0, owed + present[:, None])
    return StepCost(seconds, evals, checks, executed, after)


def price_prefill(cost: CostModel, chunks: np.ndarray, cached: np.ndarray, heads: int,
                  n_layers: int) -> float:
    """Prompt chunks prefilled together in a step: `chunks` tokens per row after `cached` ones,
    every layer in one call, and the final head for the `heads` rows whose prompt completes.
    Whole prompts admitted in a step are chunks with nothing cached."""
    rows = np.ones(len(chunks), bool)
    return (n_layers * layer_cost(cost, rows, np.asarray(chunks), np.asarray(cached))
            + rows_cost(cost, "layer_call", len(chunks)) + rows_cost(cost, "final_head", heads))
