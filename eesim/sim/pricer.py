"""Pricing a step plan with the cost model: the simulator's interpreter of `eesim.plan`.

`Pricer` turns each operation of a plan (K steps of R rows) into seconds per step and counts
layer evaluations and exit checks per row; the exits the plan follows come from
`eesim.scenario.controller.TraceController`.

The plain path is `eesim.sim.reference.price_step`, one step and one operation at a time; this
one prices K steps with each term in one vectorised lookup (what it buys: a bulk of 64 steps for
about the numpy calls of one), and tests/test_pricing_reference.py holds the two equal.
"""

from __future__ import annotations

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
    Regroup,
    per_step,
)


class Pricer:
    """Seconds per step (K,) of a plan's operations, and layer evaluations per row (K, R).

    Operations are collected and priced together at the end: each operation's row mask is kept,
    and all masks are counted in one reduction, every rows-only term priced in one table lookup,
    layers in one interpolation per kind (one-token or chunk); the sum is the same. Operations
    with per-row queries (verification, catch-up chunks) are measured as they come.
    """

    def __init__(self, cost: CostModel, context: np.ndarray, present: np.ndarray | None = None,
                 deferred: np.ndarray | None = None) -> None:
        self.cost = cost
        self.padded = cost.meta.batching == "padded"
        self.context = context.astype(float)
        self.k = context.shape[0]
        self._layer_evals = np.zeros(context.shape)
        self._exit_checks = np.zeros(context.shape)
        self._pending: dict[str, list[tuple]] = {}  # per layer term: (parts m, n, q, ctx, times)
        self._row_parts: list[tuple[int, np.ndarray, float]] = []  # rows-only terms
        self._row_blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # kept masks' terms
        self._host_sync = np.zeros(self.k)  # syncs per step
        self._syncs: list[np.ndarray] = []  # host syncs' steps (K,) and counts
        self._sync_counts: list[int] = []
        self._seconds: np.ndarray | None = None
        # kept row masks, and what each is priced for: rows-only terms (index, mask, times),
        # one-token-or-chunk layers (mask, query, layers), layer evaluations and exit checks per
        # row (mask, weight), executed operations (mask, per step)
        self._masks: list[np.ndarray] = []
        self._mask_terms: list[tuple[int, int, float | np.ndarray]] = []
        self._mask_layers: list[tuple[int, float, int]] = []
        self._mask_evals: list[tuple[int, float]] = []
        self._mask_checks: list[tuple[int, float]] = []
        self._mask_ops: list[tuple[int, int | np.ndarray]] = []
        self._finished = False
        self._counted = False
        self._stacked: np.ndarray | None = None
        # kv='defer': (R, L) tokens each row still owes each layer before this plan; every
        # layer a row runs then processes 1 + what it owes (the catch-up chunk).
        self.deferred = deferred
        self.present = present
        self._runs: list[tuple[int, int, np.ndarray, int | np.ndarray]] = []
        # per-operation engine overhead (profile term `plan_op`): operations executed per step
        self._op_index = cost.row_index.get("plan_op")
        self._call_index = cost.row_index.get("layer_call")
        self._ops = np.zeros(self.k)
        self._pass_rows: np.ndarray | None = None

    def _add(self, term: str, n, query=1.0, context=0.0, times=1.0) -> None:
        if term == "layer" and not (np.isscalar(query) and query == 1):
            term = "layer/chunks"  # priced apart: one-token layers read the decode table
        self._pending.setdefault(term, []).append((1, n, query, context, times))

    def _rows(self, term: str, rows: np.ndarray, query=1, times=1.0, with_context=False) -> None:
        n = _count(rows)
        index = self.cost.row_index.get(term)
        if index is not None:  # priced with every other rows-only term in one lookup
            self._row_parts.append((index, n, times))
            return
        if self.padded:  # the batch runs padded to its longest query and context
            q = query if np.isscalar(query) else np.where(rows, query, 0).max(axis=1, initial=1)
            ctx = np.where(rows, self.context, 0).max(axis=1, initial=0) if with_context else 0.0
        else:  # ragged (paged attention): each row's own tokens, priced at the mean
            safe = np.maximum(n, 1)
            q = query if np.isscalar(query) else np.where(rows, query, 0).sum(axis=1) / safe
            ctx = np.where(rows, self.context, 0).sum(axis=1) / safe if with_context else 0.0
        self._add(term, n, q, ctx, times)

    def _term(self, term: str, mask: int, times: float | np.ndarray = 1.0) -> None:
        """A rows-only term on kept mask `mask` (counted at the end), `times` per step."""
        index = self.cost.row_index.get(term)
        if index is None:  # a profile without a rows-only table for it
            self._rows(term, self._masks[mask], times=times)
        else:
            self._mask_terms.append((index, mask, times))

    def passes(self, rows: np.ndarray) -> None:
        """A step with rows is one pass of the engine's loop over `rows` (K,) rows, with its
        fixed cost (profile term `step`, if measured); a step without rows costs nothing.
        Each operation the pass executes adds `plan_op` (if measured) at that row count."""
        index = self.cost.row_index.get("step")
        if index is not None:
            self._row_parts.append((index, rows.astype(np.int64), 1.0))
        self._pass_rows = rows.astype(np.int64)

    def _call(self, n: np.ndarray, calls: int | np.ndarray = 1) -> None:
        """`calls` calls (per step) of a segment of layers on n rows per step (their fixed cost)."""
        index = self.cost.row_index.get("layer_call")
        if index is not None:
            self._row_parts.append((index, n, np.asarray(calls, float)))

    def price(self, op) -> None:
        kind = type(op)
        if kind is HostSync:  # counted with the others at the end
            self._syncs.append(op.steps)
            self._sync_counts.append(op.count)
            return
        mask = len(self._masks)
        self._masks.append(op.rows)
        if self._op_index is not None:
            self._mask_ops.append((mask, per_step(op)))
        if kind is Layers:
            span = op.end - op.start  # an int, or one per step
            if isinstance(span, np.ndarray):
                calls = np.where(span > 0, op.calls, 0)
            elif span:
                calls = op.calls
            else:
                return
        one_query = not isinstance(op.query, np.ndarray) if kind is Layers else True
        if kind is Layers and self.deferred is not None and one_query:
            self._runs.append((op.start, op.end, op.rows, calls))
        elif kind is Layers:
            if self._call_index is not None:
                self._mask_terms.append((self._call_index, mask,
                                         calls.astype(float) if isinstance(calls, np.ndarray)
                                         else float(calls)))
            if one_query:
                self._mask_layers.append((mask, float(op.query), span))
                self._mask_evals.append((mask, span * op.query))
            else:
                self._rows("layer", op.rows, op.query, span, with_context=True)
                self._layer_evals += span * np.where(op.rows, op.query, 0)
        elif kind is ExitCheck:
            self._term("exit_head", mask, op.count)
            self._mask_checks.append((mask, float(op.count)))
        elif kind is Compact:
            self._term("compact", mask)
        elif kind is KVFill:
            self._term("kv_fill", mask, op.end - op.start)
            if "kv_fill_call" in self.cost.row_index:  # a fill's fixed cost (older profiles: none)
                self._term("kv_fill_call", mask)
        elif kind is Regroup:
            self._term("regroup", mask)
        elif kind is FinalHead or kind is Embed:  # one row per token (verified positions)
            term = self.cost.row_index["final_head" if kind is FinalHead else "embed"]
            if np.isscalar(op.query) and op.query == 1:
                self._mask_terms.append((term, mask, 1.0))
            else:
                self._row_parts.append((term, np.where(op.rows, op.query, 0).sum(axis=1), 1.0))
        else:
            raise TypeError(f"no price for operation {op!r}")

    def prefill(self, step: int, chunks: np.ndarray, context: np.ndarray, finishing: np.ndarray,
                n_layers: int) -> None:
        """Prompt chunks in `step`: `chunks` tokens per prefilling row after `context` cached
        ones, through every layer; `finishing` rows (prompt complete) also run the final head.
        Prompt work is not counted as layer evaluations per output token."""
        n, heads = np.zeros(self.k, np.int64), np.zeros(self.k, np.int64)
        q, ctx = np.ones(self.k), np.zeros(self.k)
        pad = np.max if self.padded else np.mean
        n[step], q[step], ctx[step] = len(chunks), pad(chunks), pad(context)
        heads[step] = int(finishing.sum())
        self._prefill_parts(n, q, ctx, heads, n_layers)

    def admit(self, steps: np.ndarray, prompts: np.ndarray, n_layers: int) -> None:
        """Whole prompts of requests admitted in `steps` (one per prompt): each step's prompts
        prefilled together, as `prefill` prices them, the final head included."""
        n = np.bincount(steps, minlength=self.k)
        if self.padded:
            q = np.ones(self.k)
            np.maximum.at(q, steps, prompts)
        else:
            q = np.where(n > 0, np.bincount(steps, weights=prompts, minlength=self.k)
                         / np.maximum(n, 1), 1.0)
        self._prefill_parts(n, q, np.zeros(self.k), n, n_layers)

    def _prefill_parts(self, n: np.ndarray, query: np.ndarray, context: np.ndarray,
                       heads: np.ndarray, n_layers: int) -> None:
        """Per step: n prompt chunks of `query` tokens after `context` through every layer (one
        call), and `heads` final heads."""
        self._add("layer", n, query, context, n_layers)
        self._call(n)
        self._row_parts.append((self.cost.row_index["final_head"], heads, 1.0))

    def _price_catch_up(self) -> None:
        """Layers under kv='defer': each run of layer l by a row processes 1 + the tokens that
        skipped l since the row last ran it (they are caught up together)."""
        n_layers = self.deferred.shape[1]
        ran = np.zeros((n_layers, *self.context.shape), bool)
        layers = np.arange(n_layers)[:, None]
        spans = [(layers >= start) & (layers < end) for start, end, _, _ in self._runs]  # (L, K)
        for span, (_, _, rows, _) in zip(spans, self._runs, strict=True):
            ran |= span[:, :, None] & rows
        owed = np.zeros_like(ran, dtype=np.int64)
        owed[:, 0] = self.deferred.T
        for k in range(1, self.k):  # tokens of earlier steps that skipped the layer
            owed[:, k] = np.where(ran[:, k - 1], 0, owed[:, k - 1] + self.present[k - 1])
        self._owed, self._ran = owed, ran
        for span, (start, end, rows, calls) in zip(spans, self._runs, strict=True):
            self._call(_count(rows), calls)
            for layer in range(int(np.min(start)), int(np.max(end))):
                query = 1 + owed[layer]
                within = rows & span[layer][:, None]
                self._rows("layer", within, query, 1, with_context=True)
                self._layer_evals += np.where(within, query, 0)

    def deferred_after(self, k: int) -> np.ndarray:
        """(R, L) tokens each row owes each layer after the first k steps."""
        last = np.where(self._ran[:, k - 1], 0, self._owed[:, k - 1] + self.present[k - 1])
        return last.T

    def _finish(self) -> None:
        """Count every kept mask at once and turn the operations on them into priced parts and
        executed operations (`_count_work` counts layer evaluations and exit checks)."""
        if self._finished:
            return
        self._finished = True
        if self.deferred is not None:
            self._price_catch_up()
        if self._syncs:  # each sync is also an executed operation
            syncs = np.array(self._sync_counts, float) @ np.array(self._syncs)
            self._host_sync += syncs
            if self._op_index is not None:
                self._ops += syncs
        if not self._masks:
            return
        masks = np.concatenate(self._masks).reshape(len(self._masks), *self._masks[0].shape)
        counts = _counts(masks)                                         # (N, K)
        k = self.k
        if self._mask_terms:  # one block of parts, in the order they came
            index, ids, times = zip(*self._mask_terms, strict=True)
            self._row_blocks.append((np.repeat(np.array(index), k), counts[list(ids)].ravel(),
                                     _per_step(times, k)))
        if self._mask_layers:
            ids, query, span = (list(c) for c in zip(*self._mask_layers, strict=True))
            n = counts[ids]
            # (R, L, K): rows first, so that reducing over them runs along whole (L, K) planes
            # (a reduction along the short last axis costs several times more)
            within = np.ascontiguousarray(masks[ids].transpose(2, 0, 1)) * self.context.T[:, None, :]
            if self.padded:  # the batch runs padded to its longest context (contexts >= 0)
                ctx = np.maximum.reduce(within, axis=0)
            else:  # ragged: each row's own context, priced at the mean
                ctx = np.add.reduce(within, axis=0) / np.maximum(n, 1)
            if all(q == 1 for q in query):  # one-token layers only: one block
                self._pending.setdefault("layer", []).append(
                    (len(ids), n.ravel(), 1.0, ctx.ravel(), _per_step(span, k)))
            else:  # each term's parts in their order
                query = np.array(query)
                one = query == 1
                for term in dict.fromkeys("layer" if q == 1 else "layer/chunks" for q in query):
                    pick = one if term == "layer" else ~one
                    self._pending.setdefault(term, []).append((
                        int(pick.sum()), n[pick].ravel(), np.repeat(query[pick], k),
                        ctx[pick].ravel(), _per_step([s for s, p in zip(span, pick, strict=True) if p], k)))
        if self._mask_ops:
            ids, each = zip(*self._mask_ops, strict=True)
            present = counts[list(ids)] > 0
            self._ops += np.einsum("nk,nk->k", present, _by_step(each, k))
        self._stacked = masks

    def _count_work(self) -> None:
        """Layer evaluations and exit checks per row of the kept masks (only when asked for: a
        pricing that is priced again needs its seconds alone)."""
        self._finish()
        if self._counted:
            return
        self._counted = True
        masks = self._stacked
        for parts, out in ((self._mask_evals, self._layer_evals), (self._mask_checks, self._exit_checks)):
            if parts:  # each mask's weight: one, or one per step
                if any(isinstance(w, np.ndarray) for _, w in parts):
                    weights = np.empty((len(parts), self.k))
                    for i, (_, w) in enumerate(parts):
                        weights[i] = w
                    out += np.einsum("nk,nkr->kr", weights, masks[[m for m, _ in parts]])
                else:
                    weights = np.array([w for _, w in parts], float)
                    out += np.tensordot(weights, masks[[m for m, _ in parts]], axes=1)

    @property
    def layer_evals(self) -> np.ndarray:
        """(K, R) layer evaluations per row (each layer x its query tokens)."""
        self._count_work()
        return self._layer_evals

    @property
    def exit_checks(self) -> np.ndarray:
        """(K, R) exit checks per row."""
        self._count_work()
        return self._exit_checks

    @property
    def seconds(self) -> np.ndarray:
        """(K,) seconds of each step: every collected operation, priced per term."""
        if self._seconds is not None:
            return self._seconds
        self._finish()
        k = self.k
        total = self._host_sync * self.cost.host_sync_s
        loose = self._row_parts  # parts added directly come first, then the kept masks' block
        index = [np.repeat(np.array([p[0] for p in loose], np.int64), k)] if loose else []
        n = [p[1] for p in loose]
        times = [_per_step([p[2] for p in loose], k)] if loose else []
        blocks = list(self._row_blocks)
        if self._op_index is not None and self._pass_rows is not None:
            blocks.append((np.full(k, self._op_index), self._pass_rows, self._ops))
        for block_index, block_n, block_times in blocks:
            index.append(block_index)
            n.append(block_n)
            times.append(block_times)
        if n:
            index, n, times = np.concatenate(index), np.concatenate(n), np.concatenate(times)
            values = times * self.cost.price_row_terms(index, n)
            total += values.reshape(-1, k).sum(axis=0)
        for term, parts in self._pending.items():
            size = sum(m for m, *_ in parts) * k
            n, q, ctx, times = (np.empty(size) for _ in range(4))
            at = 0
            for m, pn, pq, pc, pt in parts:
                sl = slice(at, at + m * k)
                n[sl], q[sl], ctx[sl], times[sl] = pn, pq, pc, pt
                at += m * k
            values = times * self.cost.price_layers(n.astype(np.int64), q, ctx, term == "layer")
            total += values.reshape(-1, k).sum(axis=0)
        self._seconds = total
        return total


def _per_step(values, k: int) -> np.ndarray:
    """(M * K,): M values, each a number or one per step (K,), as K entries each in turn."""
    return _by_step(values, k).ravel()


def _by_step(values, k: int) -> np.ndarray:
    """(M, K): M values, each a number or one per step (K,), broadcast along the steps."""
    try:
        out = np.array(values, float)  # numbers only (M,), or arrays only (M, K)
    except ValueError:  # a mix of numbers and arrays
        out = None
    if out is not None and out.ndim == 1:
        return np.repeat(out, k).reshape(len(values), k)
    if out is not None:
        return out
    out = np.empty((len(values), k))
    for i, v in enumerate(values):
        out[i] = v
    return out


def _counts(masks: np.ndarray) -> np.ndarray:
    """(N, K) rows per step of N stacked (K, R) masks, as one float32 product with ones (exact
    below 2**24 rows; a reduction along the short row axis costs 2-3 times more)."""
    with np.errstate(invalid="ignore"):  # OpenBLAS may leave a stale FE_INVALID flag (numpy#24067)
        return (masks.astype(np.float32) @ np.ones(masks.shape[-1], np.float32)).astype(np.int64)


def _count(rows: np.ndarray) -> np.ndarray:
    """Rows per step of a (K, R) mask (the reduction itself: np.count_nonzero's wrapper costs
    more than the count at these sizes)."""
    return np.add.reduce(rows, axis=1, dtype=np.int64)
