"""Step-plan operations: what one decoding step of a strategy does, with its shapes.

A plan describes K steps at once (K = 1 in the engine, many in the simulator's bulk stepping):
every row set is a (K, R) boolean mask over the batch's R rows, and a layer range may be one per
step ((K,) arrays: monotone's depth falls step by step), so the simulator prices K steps with one
array operation and the engine reads the rows and layers of its single step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Embed:
    """Look up the embeddings of the rows' input tokens: `query` tokens from `offset` on (a
    self-speculating row's tokens are its last token then its drafts; offset i is draft i)."""

    rows: np.ndarray
    query: int | np.ndarray = 1
    offset: int | np.ndarray = 0


@dataclass(frozen=True, slots=True)
class Layers:
    """Run layers start..end-1 (0-based) on rows, `query` tokens per row (an int, or a (K, R)
    array when rows verify different numbers of drafts), starting `offset` tokens past the
    row's next position (a draft's index; an int or a (K, R) array). `calls`: how many calls
    an engine makes of it: one, or one per exit check inside it, since a live engine cannot
    know at which check a row will leave (a planner that knows merges them); an int or (K,).
    `start` and `end`: ints, or (K,) arrays (one range per step)."""

    start: int | np.ndarray
    end: int | np.ndarray
    rows: np.ndarray
    query: int | np.ndarray = 1
    offset: int | np.ndarray = 0
    calls: int | np.ndarray = 1


@dataclass(frozen=True, slots=True)
class ExitCheck:
    """Apply the shared exit head and compute the confidence signals on rows, after `count`
    consecutive layers ending at `layer` (count > 1 when no row passed at the earlier ones)."""

    layer: int
    rows: np.ndarray
    count: int = 1


@dataclass(frozen=True, slots=True)
class HostSync:
    """Copy exit decisions to the host (a stall on accelerators), `count` times in the steps
    marked."""

    steps: np.ndarray  # (K,)
    count: int = 1


@dataclass(frozen=True, slots=True)
class Compact:
    """Gather the rows that stay into a dense batch (hidden states and row bookkeeping)."""

    rows: np.ndarray  # rows kept; priced only in steps where some row left


@dataclass(frozen=True, slots=True)
class KVFill:
    """Write K/V of layers start..end-1 for rows from their exit state (CALM propagation);
    `start` and `end`: ints, or (K,) arrays."""

    start: int | np.ndarray
    end: int | np.ndarray
    rows: np.ndarray


@dataclass(frozen=True, slots=True)
class Regroup:
    """Sort rows by expected depth and split them into sub-batches."""

    rows: np.ndarray


@dataclass(frozen=True, slots=True)
class FinalHead:
    """Final norm + LM head + token choice on rows, for `query` positions each."""

    rows: np.ndarray
    query: int | np.ndarray = 1


Op = Embed | Layers | ExitCheck | HostSync | Compact | KVFill | Regroup | FinalHead


def executed(op: Op) -> np.ndarray:
    """(K,) operations an engine executes for `op` in each step, the unit of the profile's
    per-operation overhead (`plan_op`): one per segment call (`Layers.calls`), per exit check
    and per host sync, one for any other operation on rows, none without rows or layers."""
    if type(op) is HostSync:
        return op.steps * op.count
    return np.logical_or.reduce(op.rows, axis=1) * per_step(op)


def per_step(op: Op) -> int | np.ndarray:
    """Operations executed for `op` in a step where it has rows (`executed`); not HostSync."""
    kind = type(op)
    if kind is Layers:
        if isinstance(op.end, np.ndarray) or isinstance(op.start, np.ndarray):  # per step
            return np.where(np.asarray(op.end) > op.start, op.calls, 0)
        return op.calls if op.end > op.start else 0
    if kind is ExitCheck:
        return op.count
    return 1


def first_step(value) -> int:
    """An operation's int-or-(K,) field in the first step (the engine runs K = 1)."""
    return int(value) if np.ndim(value) == 0 else int(np.asarray(value).reshape(-1)[0])
