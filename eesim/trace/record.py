"""Record a `full` exit trace: decode at full depth and log what every exit would have said.

The recorder talks to any model through `ExitModel`: the reference model (`RefExitModel`) and
Hugging Face causal LMs (`eesim.model.hf.HFExitModel`) both implement it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from eesim.model import Checkpoint, KVCache
from eesim.model.signals import confidence_signals
from eesim.trace.schema import ExitTrace, TraceMeta
from eesim.trace.tokenclass import token_class


class ExitModel(Protocol):
    """A decoder whose every exit layer's logits are visible at each decoding step.

    `start` prefills the prompts (any lengths) and returns the logits of every exit at each
    prompt's last position, (R, L, V) with exits in `exit_layers` order (the last one the full
    model). `advance` appends one token per row and returns the same for the new position.
    """

    name: str
    sha256: str
    n_layers: int
    exit_layers: list[int]

    def start(self, prompts: list[list[int]], max_new_tokens: int) -> Tensor: ...

    def advance(self, tokens: Tensor) -> Tensor: ...

    def token_text(self, token_id: int) -> str: ...


class RefExitModel:
    """ExitModel over an eesim checkpoint, with a preallocated KV cache (one row per prompt)."""

    def __init__(self, ckpt: Checkpoint, name: str = "reference") -> None:
        self.model, self.tokenizer = ckpt.model, ckpt.tokenizer
        self.name, self.sha256 = name, ckpt.sha256
        self.n_layers = self.model.cfg.n_layers
        self.exit_layers = list(range(1, self.n_layers + 1))
        self.cache: KVCache | None = None
        self.lengths: Tensor | None = None

    def start(self, prompts: list[list[int]], max_new_tokens: int) -> Tensor:
        longest = max(len(p) for p in prompts) + max_new_tokens
        self.cache = self.model.new_cache(len(prompts), longest)
        outs = []
        for row, prompt in enumerate(prompts):  # prompts differ in length: prefill row by row
            tokens = torch.tensor([prompt])
            outs.append(self._all_exits(tokens, torch.tensor([row]), 0))
        self.lengths = torch.tensor([len(p) for p in prompts])
        return torch.cat(outs)

    def advance(self, tokens: Tensor) -> Tensor:
        logits = self._all_exits(tokens[:, None], None, self.lengths)
        self.lengths = self.lengths + 1
        return logits

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    @torch.no_grad()
    def _all_exits(self, tokens: Tensor, rows: Tensor | None, pos) -> Tensor:
        """(R, L, V) exit logits after every layer, at the chunk's last position."""
        h, exits = self.model.embed(tokens), []
        for i in range(self.n_layers):
            h = self.model.run_layers(h, i, i + 1, cache=self.cache, rows=rows, pos=pos)
            exits.append(h[:, -1])
        return self.model.exit_logits(torch.stack(exits, dim=1)).float()


@dataclass(frozen=True)
class Request:
    """A prompt to decode, with its task class."""

    request_id: int
    task: str
    prompt: list[int]
    prompt_text: str = ""


def record(model: ExitModel, requests: list[Request], max_new_tokens: int, *,
           temperature: float = 0.0, seed: int = 0, batch_size: int = 32,
           on_batch: Callable[[int], None] | None = None, meta: dict | None = None) -> ExitTrace:
    """Decode every request for `max_new_tokens` and log all exits; greedy when temperature 0.

    The emitted token comes from the full model (greedy, or sampled at `temperature` with a
    seeded generator); signals are taken from each exit's softmax at the same temperature.
    """
    gen = torch.Generator().manual_seed(seed)
    texts: dict[int, str] = {}
    frames = []
    for start in range(0, len(requests), batch_size):
        batch = requests[start : start + batch_size]
        logits = model.start([r.prompt for r in batch], max_new_tokens)
        for pos in range(max_new_tokens):
            scaled = logits / temperature if temperature > 0 else logits  # (R, L, V)
            token = _choose(scaled[:, -1], temperature, gen)
            frames.append(_rows(model, batch, pos, token, scaled, texts))
            if pos + 1 < max_new_tokens:
                logits = model.advance(token)
        if on_batch:
            on_batch(len(batch))
    table = pd.concat(frames, ignore_index=True)
    decoding = {"mode": "sample" if temperature > 0 else "greedy", "temperature": temperature,
                "max_new_tokens": max_new_tokens, "seed": seed}
    info = TraceMeta(kind="full", model_sha256=model.sha256, model_name=model.name,
                     n_layers=model.n_layers, exit_layers=model.exit_layers, decoding=decoding,
                     **(meta or {}))
    return ExitTrace(table, info, f"trace recorded from {model.name}")


def _choose(final_logits: Tensor, temperature: float, gen: torch.Generator) -> Tensor:
    if temperature <= 0:
        return final_logits.argmax(-1)
    return torch.multinomial(torch.softmax(final_logits, -1), 1, generator=gen)[:, 0]


def _rows(model: ExitModel, batch: list[Request], pos: int, token: Tensor, logits: Tensor,
          texts: dict[int, str]) -> pd.DataFrame:
    """Long-format rows for one decoding position of a batch: one per (request, exit)."""
    top1, max_prob, entropy, margin = (t.numpy() for t in confidence_signals(logits))
    n_exits = len(model.exit_layers)
    token_np = token.numpy()
    text = [_text(model, int(t), texts) for t in token_np]
    top1_text = [_text(model, int(t), texts) for t in top1.reshape(-1)]
    return pd.DataFrame({
        "request_id": np.repeat([r.request_id for r in batch], n_exits),
        "position": pos,
        "prompt_len": np.repeat([len(r.prompt) for r in batch], n_exits),
        "task": np.repeat([r.task for r in batch], n_exits),
        "prompt_text": np.repeat([r.prompt_text for r in batch], n_exits),
        "token": np.repeat(token_np, n_exits),
        "token_text": np.repeat(text, n_exits),
        "token_class": np.repeat([token_class(t) for t in text], n_exits),
        "layer": np.tile(model.exit_layers, len(batch)),
        "top1": top1.reshape(-1), "top1_text": top1_text,
        "top1_class": [token_class(t) for t in top1_text],
        "max_prob": max_prob.reshape(-1), "entropy": entropy.reshape(-1),
        "margin": margin.reshape(-1),
    })


def _text(model: ExitModel, token_id: int, cache: dict[int, str]) -> str:
    if token_id not in cache:
        cache[token_id] = model.token_text(token_id)
    return cache[token_id]
