"""The engine's interpreter of step plans: each operation executed with torch on the model.

One decoding step of a batch (K = 1): the same strategy generators the simulator prices are run
here against the model's layers, exit head and KV cache. Exit decisions come from a controller
(replay: forced from a trace, exactly as the simulator takes them); the tokens are the model's
own, read from the head at the layer each row exits.
"""

from __future__ import annotations

import numpy as np
import torch

from eesim.model import EarlyExitLM, KVCache
from eesim.model.signals import confidence_signals
from eesim.plan.ops import Compact, Embed, ExitCheck, FinalHead, HostSync, KVFill, Layers, Regroup


class Executor:
    """Runs the operations of one step for R rows held in cache slots `slots`.

    `tokens` are the rows' input tokens, `positions` their cache lengths before this token.
    After the step, `head_top1` holds each row's latest head answer; `layer_evals` and
    `exit_checks` count work per row the way the simulator's pricer does.
    """

    def __init__(self, model: EarlyExitLM, cache: KVCache, slots: torch.Tensor,
                 tokens: torch.Tensor, positions: torch.Tensor) -> None:
        self.model, self.cache = model, cache
        self.slots, self.tokens, self.positions = slots, tokens, positions
        rows = len(slots)
        self.h = torch.zeros(rows, 1, model.cfg.dim, dtype=model.tok_emb.weight.dtype)
        self.head_top1 = torch.zeros(rows, dtype=torch.long)
        self.signals = torch.zeros(3, rows)  # max prob, entropy, margin of the last check
        self.layer_evals = np.zeros(rows)
        self.exit_checks = np.zeros(rows)

    @torch.inference_mode()
    def run(self, op) -> None:
        idx = torch.from_numpy(np.flatnonzero(op.rows[0] if hasattr(op, "rows") else op.steps))
        if isinstance(op, HostSync):
            self._last_decision = self.head_top1[:1].tolist()  # the stall an exit decision costs
            return
        if len(idx) == 0:
            return
        m = self.model
        if isinstance(op, Embed):
            self.h[idx] = m.embed(self.tokens[idx][:, None])
        elif isinstance(op, Layers):
            if not (np.isscalar(op.query) and op.query == 1):
                raise NotImplementedError("multi-token layers (verification) in the engine")
            if op.end > op.start:
                self.h[idx] = m.run_layers(self.h[idx], op.start, op.end, cache=self.cache,
                                           rows=self.slots[idx], pos=self.positions[idx])
                self.layer_evals[idx.numpy()] += op.end - op.start
        elif isinstance(op, ExitCheck):
            for _ in range(op.count):  # each check is paid; the last answer is the one used
                top1, max_prob, entropy, margin = confidence_signals(m.exit_logits(self.h[idx])[:, -1])
            self.head_top1[idx] = top1
            self.signals[:, idx] = torch.stack([max_prob, entropy, margin])
            self.exit_checks[idx.numpy()] += op.count
        elif isinstance(op, FinalHead):
            self.head_top1[idx] = m.exit_logits(self.h[idx])[:, -1].argmax(-1)
        elif isinstance(op, KVFill):
            m.fill_kv(self.h[idx], op.start, op.end, self.cache, rows=self.slots[idx],
                      pos=self.positions[idx])
        elif isinstance(op, Compact):
            self.h.index_select(0, idx)  # the gather a dense batch of the remaining rows costs
        elif isinstance(op, Regroup):
            self.h.index_select(0, idx[torch.argsort(self.positions[idx], stable=True)])
        else:
            raise TypeError(f"the engine cannot execute {op!r}")
