"""Greedy self-speculation replayed exactly from a `full` trace.

Layers 1..E draft up to k tokens one at a time; the full model verifies them in one pass and keeps
the longest prefix that agrees with its own greedy tokens, plus one token of its own (the
correction at the first disagreement, or a bonus token when every draft is kept).

Why a full-depth trace makes this exact for greedy decoding: while drafts agree with the full
model, the draft context *is* the full-depth context, so the draft at position p is the trace's
layer-E top-1 at p. The first disagreeing draft is also read at a full-depth context, and it ends
the step. Nothing after it is ever needed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from eesim.trace.schema import ExitTrace, TraceError


def speculate(trace: ExitTrace, draft_layer: int, drafts: int,
              stop_below: float | None = None) -> pd.DataFrame:
    """One row per decoding step: request_id, step, position, drafted, accepted, emitted, draft_evals.

    `drafted` counts tokens proposed for verification; `draft_evals` counts draft passes through
    layers 1..E (a pass whose max probability is below `stop_below` ends drafting and its token is
    not proposed). A step never drafts past the request's last token.
    """
    if trace.kind != "full":
        raise TraceError(f"self-speculation needs a 'full' trace, this one is '{trace.kind}'")
    if draft_layer not in trace.meta.exit_layers or draft_layer >= trace.meta.n_layers:
        raise TraceError(f"draft layer {draft_layer} is not an early exit of this trace "
                         f"(exit layers {trace.meta.exit_layers}, n_layers {trace.meta.n_layers})")
    if drafts < 1:
        raise ValueError(f"drafts must be >= 1, got {drafts}")
    col = trace.meta.exit_layers.index(draft_layer)
    top1, conf = trace.matrix("top1"), trace.matrix("max_prob")
    agree = top1[:, col] == top1[:, -1]
    confident = np.ones(len(agree), bool) if stop_below is None else conf[:, col] >= stop_below
    tokens = trace.tokens()
    rows = []
    bounds = np.flatnonzero(np.r_[True, np.diff(tokens["request_id"].to_numpy()) != 0, True])
    for start, end in zip(bounds[:-1], bounds[1:], strict=False):
        rows += _steps(int(tokens["request_id"].iloc[start]), agree[start:end],
                       confident[start:end], drafts)
    return pd.DataFrame(rows, columns=["request_id", "step", "position", "drafted", "accepted",
                                       "emitted", "draft_evals"])


def _steps(request_id: int, agree: np.ndarray, confident: np.ndarray, k: int) -> list[tuple]:
    n, pos, step, out = len(agree), 0, 0, []
    while pos < n:
        budget = min(k, n - pos - 1)  # leave the last position to the verifier
        drafted = evals = 0
        while drafted < budget:
            evals += 1
            if not confident[pos + drafted]:
                break
            drafted += 1
        accepted = 0
        while accepted < drafted and agree[pos + accepted]:
            accepted += 1
        out.append((request_id, step, pos, drafted, accepted, accepted + 1, evals))
        pos, step = pos + accepted + 1, step + 1
    return out


def acceptance(steps: pd.DataFrame) -> dict:
    """Acceptance rate (accepted / drafted) and tokens per verification step."""
    drafted = int(steps["drafted"].sum())
    return {
        "steps": len(steps),
        "drafted": drafted,
        "accepted": int(steps["accepted"].sum()),
        "acceptance_rate": round(float(steps["accepted"].sum()) / drafted, 5) if drafted else 0.0,
        "tokens_per_step": round(float(steps["emitted"].mean()), 4),
        "mean_accepted_length": round(float(steps["accepted"].mean()), 4),
    }
