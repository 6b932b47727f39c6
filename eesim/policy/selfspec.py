"""Greedy self-speculation replayed exactly from a trace: the one replay (`timeline`) that the
trace analysis, the simulator and the engine's replayed runs all read.

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


def runs_from(flags: np.ndarray, offsets: np.ndarray, k: int) -> np.ndarray:
    """(N,) how many tokens in a row, at most k, are flagged from each token on, within its
    request (offsets (M + 1,): where each request's tokens start), wrapping around its end."""
    runs = np.zeros(len(flags), np.int64)
    for start, end in zip(offsets[:-1], offsets[1:], strict=True):
        a = flags[start:end]
        alive = np.ones(len(a), bool)
        for u in range(k):
            alive &= np.roll(a, -u)
            runs[start:end] += alive
    return runs


def timeline(agree_runs: np.ndarray, offsets: np.ndarray, trace_request: np.ndarray,
             start: np.ndarray, remaining: np.ndarray, k: int, steps: int,
             confident_runs: np.ndarray | None = None):
    """The one replay of greedy self-speculation: per step and row (steps, R), the drafts
    proposed, the drafts accepted and the position the step starts at, for rows at output
    positions `start` with `remaining` tokens to emit. Position p of a row reads trace token
    p mod its length. A step drafts min(k, remaining - 1) (the verifier emits the last token;
    fewer where `confident_runs` says the draft's confidence stops it), accepts the run of
    agreeing drafts among them, and emits accepted + 1. The serving convention: a request's
    prefill emits position 0 at full depth, so drafting starts at position 1."""
    rows = len(start)
    drafted, accepted, position = (np.zeros((steps, rows), np.int64) for _ in range(3))
    offset = offsets[trace_request]
    length = offsets[trace_request + 1] - offset
    pos, left = start.astype(np.int64), remaining.astype(np.int64)
    for s in range(steps):
        position[s] = pos
        if not (left > 0).any():  # every row done: nothing drafted from here on
            position[s:] = pos
            break
        token = offset + pos % length
        d = np.maximum(np.minimum(left - 1, k), 0)
        if confident_runs is not None:
            d = np.minimum(d, confident_runs[token])
        a = np.minimum(agree_runs[token], d)
        drafted[s], accepted[s] = d, a
        emitted = (a + 1) * (left > 0)
        pos = pos + emitted
        left = left - emitted
    return drafted, accepted, position


def speculate(trace: ExitTrace, draft_layer: int, drafts: int,
              stop_below: float | None = None) -> pd.DataFrame:
    """One row per decoding step of every trace request served whole: request_id, step,
    position, drafted, accepted, emitted, draft_evals (`timeline`, from position 1: the
    prefill emits position 0).

    `drafted` counts tokens proposed for verification; `draft_evals` counts draft passes through
    layers 1..E (a pass whose max probability is below `stop_below` ends drafting and its token is
    not proposed).
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
    ids = trace.tokens()["request_id"].to_numpy()
    offsets = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1], True])
    lengths = np.diff(offsets)
    confident = None if stop_below is None else runs_from(conf[:, col] >= stop_below, offsets, drafts)
    requests = np.arange(len(lengths))
    d, a, pos = timeline(runs_from(top1[:, col] == top1[:, -1], offsets, drafts), offsets, requests,
                         np.ones(len(lengths), np.int64), lengths - 1, drafts,
                         int(lengths.max(initial=1)), confident)
    active = (pos - 1) < (lengths - 1)[None, :]  # steps that still had tokens to emit
    row, step = np.nonzero(active.T)  # by request, then step
    budget = np.minimum(lengths[row] - pos.T[row, step], drafts + 1) - 1
    drafted, accepted = d.T[row, step], a.T[row, step]
    evals = drafted + ((drafted < budget) if stop_below is not None else 0)
    return pd.DataFrame({"request_id": ids[offsets[:-1]][row], "step": step,
                         "position": pos.T[row, step], "drafted": drafted, "accepted": accepted,
                         "emitted": accepted + 1, "draft_evals": evals})


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
