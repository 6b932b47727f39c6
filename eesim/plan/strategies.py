"""Batching strategies: each turns a batch into the step plan of one decoding step.

A strategy is a generator: it yields plan operations (eesim.plan.ops) and asks a controller for
the exit decisions that only the step itself reveals (which rows pass the exit check at layer l,
how many drafts verification accepts). The simulator prices the operations with a cost model,
the engine executes them with torch; both run this code. Row sets are (K, R) masks: K steps of
R rows (the simulator prices K steps at once; the engine runs K = 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Protocol, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

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
)

StrategyName = Literal["full", "sync", "compact", "regroup", "selfspec", "monotone"]
KVPolicy = Literal["propagate", "defer", "shared"]
STRATEGIES = get_args(StrategyName)
KV_POLICIES = get_args(KVPolicy)


class StrategyConfig(BaseModel):
    """A batching strategy and its parameters, validated with field-named errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrategyName = Field(
        "full", description="full | sync | compact | regroup | selfspec | monotone "
                            "(docs/strategies.md).")
    kv: KVPolicy = Field(
        None, description="KV of skipped layers: propagate (CALM: projected from the exit state "
                          "at once), defer (EE-LLM: recomputed with the row's next token that "
                          "reaches the layer, as a catch-up chunk), shared (LayerSkip "
                          "self-speculation); default shared for selfspec, else propagate.",
        validate_default=False)
    min_layer: int = Field(1, ge=1, description="No exit check before this layer.")
    check_every: int = Field(1, ge=1, description="Exit checks only at layers divisible by this "
                                                  "(each check costs a full LM head).")
    draft_layer: int = Field(4, ge=1, description="selfspec: draft with layers 1..E.")
    drafts: int = Field(4, ge=1, description="selfspec: tokens drafted per step (k).")
    horizon: int = Field(128, ge=1, description="monotone: tokens over which depth falls to min.")

    @model_validator(mode="before")
    @classmethod
    def _default_kv(cls, data):
        """The KV policy's default depends on the strategy: the one place it is decided."""
        if isinstance(data, dict) and data.get("kv") is None:
            data = {**data, "kv": "shared" if data.get("name") == "selfspec" else "propagate"}
        return data

    @property
    def tokens_per_step(self) -> int:
        """KV positions a decode step may write per row: k + 1 when verifying k drafts."""
        return self.drafts + 1 if self.name == "selfspec" else 1

    # Regroup's per-row state, the depth a row's previous token left at (`Row.last_depth`),
    # kept the same way by every interpreter: set after the prefill and after each decode step.
    @property
    def depth_after_prefill(self) -> int:
        """A row's depth once its prompt is prefilled: optimistic, the first check."""
        return self.min_layer + 1

    def depth_after_step(self, last_depth: int, exit_layer: int, n_layers: int) -> int:
        """A row's depth after a decode step in which its token left at `exit_layer` (0: the
        last layer); self-speculation keeps the one it had."""
        if self.name == "selfspec":
            return last_depth
        return exit_layer or n_layers

    def expected_depth(self, last_depth: int) -> int:
        """The depth regroup expects of a row's next token: one less than the last, at least
        min_layer."""
        return max(self.min_layer, last_depth - 1)

    @model_validator(mode="after")
    def _kv_fits(self) -> StrategyConfig:
        if self.kv == "shared" and self.name != "selfspec":
            raise ValueError(f"kv='shared' is LayerSkip's self-speculation cache; strategy "
                             f"'{self.name}' needs kv='propagate' or 'defer'")
        return self


class Batch(Protocol):
    """What a strategy sees of the batch: K steps of R rows."""

    rows: np.ndarray          # (K, R) rows present in each step
    n_layers: int


class Controller(Protocol):
    """Exit decisions revealed during a step (from a trace in the simulator, from the model's
    own confidences in a live engine)."""

    def passes(self, layer: int, rows: np.ndarray) -> np.ndarray:
        """(K, R): rows whose exit check at `layer` passes."""

    def next_exit(self, layer: int, rows: np.ndarray, n_layers: int, every: int = 1) -> int:
        """The first check layer (>= `layer`, divisible by `every`) at which some row may pass
        (n_layers if none). A live controller cannot know and answers the first check layer;
        a trace controller knows."""

    def emit(self, layer, rows: np.ndarray) -> None:
        """Rows produce their token from the exit at `layer` (an int, or one per step (K,);
        n_layers: the full model)."""

    def shadow(self, rows: np.ndarray) -> np.ndarray:
        """(K, R): rows among those exiting early that also run to full depth (the shadow
        stream that watches for calibration drift)."""

    def expected_depth(self, rows: np.ndarray, min_layer: int = 1, every: int = 1) -> np.ndarray:
        """(K, R) the depth each row is expected to need (regroup's grouping key)."""

    def drafts(self, rows: np.ndarray, k: int) -> np.ndarray:
        """(K, R) drafts each row proposes this step (at most k, fewer near its end)."""

    def verify(self, rows: np.ndarray, drafted: np.ndarray) -> np.ndarray:
        """(K, R) accepted drafts per row; the step emits accepted + 1 tokens per row."""

    def scheduled_depth(self, rows: np.ndarray, min_layer: int, horizon: int) -> np.ndarray:
        """(K,) the monotone schedule's depth for each step's batch."""


def plan(cfg: StrategyConfig, batch: Batch, ctl: Controller) -> Iterator[Op]:
    """The step plan of `cfg.name` for this batch."""
    return _STEPS[cfg.name](cfg, batch, ctl)


def full(cfg: StrategyConfig, b: Batch, ctl: Controller) -> Iterator[Op]:
    """Every row runs every layer; no exit checks (the baseline)."""
    yield Embed(b.rows)
    yield Layers(0, b.n_layers, b.rows)
    yield FinalHead(b.rows)
    ctl.emit(b.n_layers, b.rows)


def compact(cfg: StrategyConfig, b: Batch, ctl: Controller) -> Iterator[Op]:
    """Rows that pass an exit check leave; later layers run on the remaining rows only."""
    yield Embed(b.rows)
    active = b.rows.copy()
    yield from _layer_by_layer(cfg, b.n_layers, active, 1, ctl)


def check_layers(cfg: StrategyConfig, first: int, last: int, n_layers: int) -> int:
    """How many exit checks run after layers first..last (checks: >= min_layer, divisible by
    check_every, never after the last layer)."""
    lo, hi = max(first, cfg.min_layer), min(last, n_layers - 1)
    if hi < lo:
        return 0
    every = cfg.check_every
    return hi // every - (lo - 1) // every


def segment_calls(cfg: StrategyConfig, first: int, stop: int, n_layers: int,
                  checks: int | None = None) -> int:
    """Calls of layers first..stop when each exit check among them ends a call (a live engine
    stops at every check to read it): the checks, plus one if `stop` is not a check layer."""
    if checks is None:
        checks = check_layers(cfg, first, stop, n_layers)
    ends_on_check = stop < n_layers and stop >= cfg.min_layer and stop % cfg.check_every == 0
    return max(1, checks + (0 if ends_on_check else 1))


def _layer_by_layer(cfg: StrategyConfig, n_layers: int, active: np.ndarray, first_check: int,
                    ctl: Controller, start: int = 0) -> Iterator[Op]:
    """Run layers start+1..n on `active`, checking from `first_check` on, compacting exits.

    Layers between two exits run as one segment whose checks nobody passes but every one of
    them is paid for (the controller says where the next exit can be). Shadowed exits keep
    running to full depth (no more checks, no second token) so their KV needs no filling.
    """
    check_from = max(first_check, cfg.min_layer)
    running = active  # rows computing layers: the active ones and any shadowed exits
    shadowed = False
    tail = None  # steps left with shadowed rows only: one last call
    layer = start + 1
    checking = active.any(axis=1)
    any_active = bool(checking.any())
    while layer <= n_layers:
        if not any_active and not shadowed:
            break
        stop = ctl.next_exit(max(layer, check_from), active, n_layers, cfg.check_every) \
            if layer < n_layers and any_active else n_layers
        stop = max(min(stop, n_layers), layer)
        checks = check_layers(cfg, max(layer, check_from), stop, n_layers)
        calls = segment_calls(cfg, 0, stop, n_layers, checks) if any_active else 1
        if shadowed:  # a step with only shadowed rows left runs the rest in one call
            tail = np.zeros(len(checking), bool) if tail is None else tail
            calls = np.where(checking, calls, np.where(tail, 0, 1))
            tail = tail | (~checking & running.any(axis=1))
        yield Layers(layer - 1, stop, running, calls=calls)
        if checks and any_active:
            yield ExitCheck(min(stop, n_layers - 1), active, checks)
            yield HostSync(checking, checks)
        if stop < n_layers and any_active:
            leaving = ctl.passes(stop, active)
            left = leaving.any(axis=1)
            if left.any():
                ctl.emit(stop, leaving)
                shadow = ctl.shadow(leaving)
                if shadow.any():
                    shadowed = True
                    if cfg.kv == "propagate":
                        yield KVFill(stop, n_layers, leaving & ~shadow)
                    active = active & ~leaving  # new arrays: yielded ops keep their masks
                    running = running & ~(leaving & ~shadow)
                else:
                    if cfg.kv == "propagate":
                        yield KVFill(stop, n_layers, leaving)
                    active = active & ~leaving
                    running = active if not shadowed else running & ~leaving
                yield Compact(running & left[:, None])
                checking = active.any(axis=1)
                any_active = bool(checking.any())
        layer = stop + 1
    yield FinalHead(running)
    ctl.emit(n_layers, active)


def sync(cfg: StrategyConfig, b: Batch, ctl: Controller) -> Iterator[Op]:
    """The batch runs until its deepest row has exited (CALM's batch rule): rows that exited
    keep being computed, and once every row is done the rest of the layers are skipped."""
    n = b.n_layers
    yield Embed(b.rows)
    undecided = b.rows.copy()
    running = b.rows.copy()
    layer = 1
    while layer <= n and running.any():
        stop = ctl.next_exit(max(layer, cfg.min_layer), undecided, n, cfg.check_every) \
            if layer < n else layer
        stop = max(min(stop, n), layer)
        checks = check_layers(cfg, layer, stop, n)
        yield Layers(layer - 1, stop, running, calls=segment_calls(cfg, 0, stop, n, checks))
        if checks:
            yield ExitCheck(min(stop, n - 1), undecided, checks)
            yield HostSync(undecided.any(axis=1), checks)
        if stop < n:
            leaving = ctl.passes(stop, undecided)
            ctl.emit(stop, leaving)
            undecided = undecided & ~leaving
            stopping = running.any(axis=1) & ~undecided.any(axis=1)
            if stopping.any():  # every row decided: skipped layers still need their K/V
                if cfg.kv == "propagate":
                    yield KVFill(stop, n, running & stopping[:, None])
                running = running & ~stopping[:, None]
        layer = stop + 1
    yield FinalHead(undecided)
    ctl.emit(n, undecided)


def regroup(cfg: StrategyConfig, b: Batch, ctl: Controller) -> Iterator[Op]:
    """Rows are grouped by expected depth; each group runs as its own sub-batch straight to
    that depth, then continues layer by layer with exit checks like `compact`."""
    n = b.n_layers
    yield Regroup(b.rows)
    expected = np.clip(ctl.expected_depth(b.rows, cfg.min_layer, cfg.check_every), cfg.min_layer, n)
    for depth in np.unique(expected[b.rows]):
        group = b.rows & (expected == depth)
        yield Embed(group)
        yield Layers(0, int(depth) - 1, group)
        yield from _layer_by_layer(cfg, n, group.copy(), int(depth), ctl, start=int(depth) - 1)


def monotone(cfg: StrategyConfig, b: Batch, ctl: Controller) -> Iterator[Op]:
    """One exit depth per step for the whole batch, falling linearly with position from the full
    depth to `min_layer` over `horizon` tokens and never rising for a batch (SkipDecode). No
    confidence checks and no host sync: the depth is known before the step (one layer range
    per step)."""
    n = b.n_layers
    depth = ctl.scheduled_depth(b.rows, cfg.min_layer, cfg.horizon)  # (K,)
    yield Embed(b.rows)
    yield Layers(0, depth, b.rows)
    yield FinalHead(b.rows)
    ctl.emit(depth, b.rows)
    early = b.rows & (depth < n)[:, None]
    if early.any():
        shadow = ctl.shadow(early)
        if cfg.kv == "propagate":
            yield KVFill(depth, n, early & ~shadow)
        if shadow.any():
            yield Layers(depth, n, shadow)
            yield FinalHead(shadow)


def selfspec(cfg: StrategyConfig, b: Batch, ctl: Controller) -> Iterator[Op]:
    """Layers 1..E draft up to k tokens; the full model verifies them in one pass and keeps the
    longest agreeing prefix plus one token of its own (LayerSkip, Draft & Verify)."""
    n, e = b.n_layers, min(cfg.draft_layer, b.n_layers - 1)
    drafted = ctl.drafts(b.rows, cfg.drafts)
    for i in range(cfg.drafts):  # draft i reads token i (the last token, then drafts) at offset i
        drafting = b.rows & (drafted > i)
        if not drafting.any():
            break
        yield Embed(drafting, offset=i)
        yield Layers(0, e, drafting, offset=i)
        yield ExitCheck(e, drafting)
    verify = np.where(b.rows, drafted + 1, 0)
    if cfg.kv == "shared":  # drafts' layers 1..E are cached; only the last draft needs them
        last = np.where(b.rows, drafted, 0)
        yield Embed(b.rows, offset=last)
        yield Layers(0, e, b.rows, offset=last)
        yield Layers(e, n, b.rows, query=verify)
    else:
        yield Embed(b.rows, query=verify)
        yield Layers(0, n, b.rows, query=verify)
    yield FinalHead(b.rows, query=verify)
    ctl.verify(b.rows, drafted)


_STEPS = {"full": full, "sync": sync, "compact": compact, "regroup": regroup,
          "monotone": monotone, "selfspec": selfspec}
