"""The serving scheduler, in plain Python, shared by the simulator and the engine.

Continuous (iteration-level) batching admits waiting requests whenever a row and KV memory are
free; static batching admits a new batch only when the previous one has finished. KV memory is
counted in blocks of `block_tokens` tokens over every layer (skipped layers still hold KV), and
grouped-query attention is accounted for by the profile's bytes per token per layer. When the
running rows need more blocks than are free, the youngest is preempted and later recomputed
(its prompt and generated tokens are prefilled again).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class SchedulerConfig(BaseModel):
    """Batching limits; every field is checked at the boundary."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batching: Literal["continuous", "static"] = Field(
        "continuous", description="continuous (iteration-level: rows join as others leave) | "
                                  "static (a new batch when the last has finished)")
    prefill: Literal["whole", "chunked"] = Field(
        "whole", description="whole: a prompt in one step; chunked: at most max_batched_tokens "
                             "prompt tokens per step, decode steps interleaved")
    max_batch: int = Field(16, ge=1, description="Rows decoded together.")
    max_batched_tokens: int = Field(8192, ge=1, description="Prompt tokens prefilled per step.")
    block_tokens: int = Field(16, ge=1, description="Tokens per KV block.")
    kv_capacity_bytes: int = Field(2**34, ge=1, description="Memory for KV blocks.")


@dataclass
class Row:
    """A request in service: how far it got and what it has cost."""

    request: int
    prompt: int
    output: int
    generated: int = 0
    needs_prefill: bool = True
    prefilled: int = 0  # tokens of the context already in the KV cache
    deferred: object = None  # kv='defer': tokens owed to each layer (numpy array), or None
    completed_at: float = 0.0  # when the last token was emitted
    last_depth: int = 0

    @property
    def context(self) -> int:
        return self.prompt + self.generated

    @property
    def remaining(self) -> int:
        return self.output - self.generated


@dataclass
class Scheduler:
    """Waiting queue, running rows and KV blocks of one replica."""

    cfg: SchedulerConfig
    block_bytes: int
    waiting: deque = field(default_factory=deque)
    running: list[Row] = field(default_factory=list)
    preemptions: int = 0

    @property
    def capacity_blocks(self) -> int:
        return self.cfg.kv_capacity_bytes // self.block_bytes

    def blocks(self, tokens: int) -> int:
        return -(-tokens // self.cfg.block_tokens)

    def used_blocks(self, ahead: int = 0) -> int:
        """Blocks the running rows hold after `ahead` more tokens each."""
        b = self.cfg.block_tokens
        return sum([-(-min(r.prompt + r.generated + ahead, r.prompt + r.output) // b)
                    for r in self.running])

    def tokens_that_fit(self, most: int) -> int:
        """The largest look-ahead (tokens per running row, at most `most`) whose blocks fit."""
        if not self.running or self.used_blocks(most) <= self.capacity_blocks:
            return most  # blocks never fall with the look-ahead: the longest fits, so all do
        context = np.array([r.context for r in self.running])
        final = np.array([r.prompt + r.output for r in self.running])
        ahead = np.arange(1, most + 1)[:, None]
        tokens = np.minimum(context + ahead, final)
        blocks = (-(-tokens // self.cfg.block_tokens)).sum(axis=1)
        fits = np.flatnonzero(blocks <= self.capacity_blocks)
        return int(fits[-1]) + 1 if len(fits) else 0

    def admit(self, ahead: int = 1) -> list[Row]:
        """Rows to prefill this step, in arrival order (FIFO; no overtaking), keeping room for
        the running rows to write `ahead` more tokens each."""
        if self.cfg.batching == "static" and self.running:
            return []
        admitted, tokens = [], 0
        used = self.used_blocks(ahead)
        while self.waiting and len(self.running) < self.cfg.max_batch:
            row = self.waiting[0]
            need = self.blocks(row.context + 1)
            over_budget = (self.cfg.prefill == "whole" and admitted
                           and tokens + row.context > self.cfg.max_batched_tokens)
            if used + need > self.capacity_blocks or over_budget:
                if not self.running and not admitted:
                    raise ValueError(f"request {row.request} needs {need} KV blocks, more than "
                                     f"the {self.capacity_blocks} that fit in memory")
                break
            self.waiting.popleft()
            used += need
            tokens += row.context
            admitted.append(row)
            self.running.append(row)
        return admitted

    def make_room(self, ahead: int) -> list[Row]:
        """Preempt the youngest rows until `ahead` more tokens each fit; they wait again."""
        preempted = []
        while len(self.running) > 1 and self.used_blocks(ahead) > self.capacity_blocks:
            row = self.running.pop()
            row.needs_prefill = True
            row.prefilled = 0
            row.deferred = None
            self.waiting.appendleft(row)
            preempted.append(row)
            self.preemptions += 1
        return preempted

    def prefill_chunks(self) -> list[tuple[Row, int]]:
        """(row, tokens to prefill this step) for the rows still prefilling, in admission
        order; chunked prefill shares `max_batched_tokens` among them."""
        budget = self.cfg.max_batched_tokens if self.cfg.prefill == "chunked" else None
        chunks = []
        for row in self.running:
            if not row.needs_prefill:
                continue
            todo = row.context - row.prefilled
            chunk = todo if budget is None else min(todo, budget)
            if chunk <= 0:
                break
            chunks.append((row, chunk))
            if budget is not None:
                budget -= chunk
        return chunks

    def finish(self) -> list[Row]:
        done = [r for r in self.running if r.remaining <= 0]
        self.running = [r for r in self.running if r.remaining > 0]
        return done
