"""The engine's interpreter of step plans: each operation executed with torch on the model.

One decoding step of a batch (K = 1): the same strategy generators the simulator prices are run
here against the model's layers, exit head and paged KV cache. Exit decisions come from a
controller (replay: forced from a trace, exactly as the simulator takes them; live: the model's
own confidences); the tokens are the model's own, read from the head where each row exits.

Each row holds `1 + drafts` token slots: slot 0 is its last token, slots 1..k the tokens it
drafts (self-speculation). An operation's `offset` says which slot a one-token operation works
on; a `query` of q > 1 works on slots 0..q-1 at once (verification). Rows of one operation are
run together, padded to the longest query, as a static-shape engine does; positions a padded
row writes past its own are rewritten by its next tokens before anyone reads them.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from eesim.model import EarlyExitLM
from eesim.model.signals import confidence_signals
from eesim.plan.ops import (
    Compact,
    Embed,
    ExitCheck,
    FinalHead,
    HostSync,
    KVFill,
    Layers,
    Regroup,
    executed,
    first_step,
)


class Executor:
    """Runs the operations of one step for R rows held in cache slots `slots`.

    `tokens` are the rows' input tokens, `positions` their cache lengths before this token.
    After the step, `head_top1` holds each row's latest head answer (per token slot after a
    verification); `layer_evals` and `exit_checks` count work per row the way the simulator's
    pricer does; `ops` counts the operations executed (eesim.plan.ops.executed), as the
    pricer counts them. With a `log` list, each executed operation appends (kind, rows, seconds, layers): its
    class name, row count, time (per check for an exit check) and span (Layers, KVFill).
    """

    def __init__(self, model: EarlyExitLM, cache, slots: torch.Tensor, tokens: torch.Tensor,
                 positions: torch.Tensor, drafts: int = 0) -> None:
        self.model, self.cache = model, cache
        self.slots, self.positions = slots, positions
        rows, width = len(slots), drafts + 1
        self.seq = torch.zeros(rows, width, dtype=torch.long)  # last token, then drafts
        self.seq[:, 0] = tokens
        self.h = torch.zeros(rows, width, model.cfg.dim, dtype=model.tok_emb.weight.dtype)
        self.head_top1 = torch.zeros(rows, width, dtype=torch.long)
        self.signals = torch.zeros(3, rows)  # max prob, entropy, margin of the last check
        self.layer_evals = np.zeros(rows)
        self.exit_checks = np.zeros(rows)
        self._offset = torch.zeros(rows, dtype=torch.long)  # slot of each row's last one-token op
        self.seconds = 0.0
        self.ops = 0
        self.log: list[tuple[str, int, float, int]] | None = None

    def run(self, op) -> None:
        """Execute one operation; `seconds` adds up the time spent here."""
        tick = time.perf_counter()
        self._run(op)
        spent = time.perf_counter() - tick
        self.seconds += spent
        ops = int(executed(op)[0])
        if ops:
            self.ops += ops
            if self.log is not None:
                rows = 0 if isinstance(op, HostSync) else int(op.rows[0].sum())
                span = first_step(op.end) - first_step(op.start) \
                    if isinstance(op, Layers | KVFill) else 0
                per = spent / op.count if isinstance(op, ExitCheck) else spent
                self.log.append((type(op).__name__, rows, per, span))

    @torch.inference_mode()
    def _run(self, op) -> None:
        if isinstance(op, HostSync):
            self.head_top1[:1, 0].tolist()  # the stall an exit decision costs
            return
        mask = op.rows[0]
        idx = torch.from_numpy(np.flatnonzero(mask))
        if len(idx) == 0:
            return
        m = self.model
        query = _per_row(getattr(op, "query", 1), mask)
        offset = _per_row(getattr(op, "offset", 0), mask)
        if isinstance(op, Embed):
            if query.max() == 1:
                self._offset[idx] = torch.from_numpy(offset)
                self.h[idx, self._offset[idx]] = m.embed(self.seq[idx, self._offset[idx]][:, None])[:, 0]
            else:
                q = int(query.max())
                self.h[idx, :q] = m.embed(self.seq[idx, :q])
        elif isinstance(op, Layers):
            start, end = first_step(op.start), first_step(op.end)
            if end == start:
                return
            if query.max() == 1:
                self._offset[idx] = torch.from_numpy(offset)
                off = self._offset[idx]
                h = self.h[idx, off][:, None]
                h = m.run_layers(h, start, end, cache=self.cache, rows=self.slots[idx],
                                 pos=self.positions[idx] + off)
                self.h[idx, off] = h[:, 0]
            else:
                q = int(query.max())
                self.h[idx, :q] = m.run_layers(self.h[idx, :q], start, end, cache=self.cache,
                                               rows=self.slots[idx], pos=self.positions[idx])
            self.layer_evals[idx.numpy()] += (end - start) * query
        elif isinstance(op, ExitCheck):
            off = self._offset[idx]
            for _ in range(op.count):  # each check is paid; the last answer is the one used
                top1, max_prob, entropy, margin = confidence_signals(
                    m.exit_logits(self.h[idx, off][:, None])[:, -1])
            self.head_top1[idx, off] = top1
            if self.seq.shape[1] > 1:  # drafting: the answer is the next slot's token
                self.seq[idx, torch.clamp(off + 1, max=self.seq.shape[1] - 1)] = top1
            self.signals[:, idx] = torch.stack([max_prob, entropy, margin])
            self.exit_checks[idx.numpy()] += op.count
        elif isinstance(op, FinalHead):
            if query.max() == 1:
                off = self._offset[idx]
                self.head_top1[idx, off] = m.exit_logits(self.h[idx, off][:, None])[:, -1].argmax(-1)
            else:
                q = int(query.max())
                self.head_top1[idx, :q] = m.exit_logits(self.h[idx, :q]).argmax(-1)
        elif isinstance(op, KVFill):
            off = self._offset[idx]
            m.fill_kv(self.h[idx, off][:, None], first_step(op.start), first_step(op.end),
                      self.cache, rows=self.slots[idx], pos=self.positions[idx] + off)
        elif isinstance(op, Compact):
            self.h.index_select(0, idx)  # the gather a dense batch of the remaining rows costs
        elif isinstance(op, Regroup):
            self.h.index_select(0, idx[torch.argsort(self.positions[idx], stable=True)])
        else:
            raise TypeError(f"the engine cannot execute {op!r}")


def _per_row(value, mask: np.ndarray) -> np.ndarray:
    """An operation's int-or-(K, R) field as one value per row of the single step's mask."""
    if np.isscalar(value):
        return np.full(int(mask.sum()), int(value), np.int64)
    return np.asarray(value)[0][mask].astype(np.int64)
