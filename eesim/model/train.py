"""Train the reference early-exit model, LayerSkip-style, on 2 CPU cores.

    eesim train --out eesim/model/assets/ref          # the committed checkpoint (~40 min here)
    eesim train --steps 20 --out /tmp/ref-smoke       # a smoke run

Recipe (Elhoushi et al., LayerSkip, 2024): an early-exit loss through the shared head at a
rotating subset of layers (every `rotation`-th layer, shifted each step, plus the last layer
always), scaled up with depth and warmed in by a curriculum; layer dropout per sequence whose rate
rises linearly with depth to `max_layer_dropout`. bf16 autocast keeps a step well under a second.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from eesim.model.checkpoint import save_checkpoint
from eesim.model.config import ModelConfig
from eesim.model.corpus import TASKS, Document, build_corpus, write_heldout
from eesim.model.tokenizer import EOS, TASK_TOKENS, train_tokenizer
from eesim.model.transformer import EarlyExitLM


class TrainConfig(BaseModel):
    """Every knob of a training run, recorded in the checkpoint's metadata."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(3000, ge=1, description="Optimizer steps.")
    batch_size: int = Field(16, ge=1, description="Sequences per step.")
    seq_len: int = Field(128, ge=8, description="Tokens per sequence.")
    lr: float = Field(2e-3, gt=0, description="Peak learning rate (AdamW).")
    warmup: int = Field(100, ge=0, description="Linear warm-up steps, then cosine decay to 10%.")
    weight_decay: float = Field(0.1, ge=0)
    rotation: int = Field(2, ge=1, description="Exit loss on every rotation-th layer, rotating.")
    exit_curriculum: int = Field(300, ge=0, description="Steps over which the exit loss ramps in.")
    max_layer_dropout: float = Field(0.1, ge=0, lt=1, description="Dropout rate of the last layer.")
    task_weights: dict[str, float] = Field(
        default_factory=lambda: {"prose": 0.4, "code": 0.35, "json": 0.25},
        description="Sampling share of each task class.")
    seed: int = 0
    threads: int = Field(2, ge=1)
    bf16: bool = Field(True, description="bf16 autocast for the forward pass.")


def encode_streams(docs: list[Document], tokenizer) -> dict[str, Tensor]:
    """Per task, one long stream: <|task|> document <|eos|> for every training document."""
    eos = tokenizer.token_to_id(EOS)
    streams = {}
    for task in TASKS:
        texts = [d.text for d in docs if d.task == task and d.split == "train"]
        ids = []
        for enc in tokenizer.encode_batch(texts):
            ids += [tokenizer.token_to_id(TASK_TOKENS[task]), *enc.ids, eos]
        streams[task] = torch.tensor(ids, dtype=torch.int32)
    return streams


def sample_batch(streams: dict[str, Tensor], cfg: TrainConfig, gen: torch.Generator) -> Tensor:
    """(B, T+1) windows drawn from task streams by the configured shares."""
    tasks = list(cfg.task_weights)
    probs = torch.tensor([cfg.task_weights[t] for t in tasks])
    choice = torch.multinomial(probs, cfg.batch_size, replacement=True, generator=gen)
    rows = []
    for c in choice.tolist():
        stream = streams[tasks[c]]
        start = int(torch.randint(0, len(stream) - cfg.seq_len - 1, (1,), generator=gen))
        rows.append(stream[start : start + cfg.seq_len + 1])
    return torch.stack(rows).long()


def exit_weights(step: int, n_layers: int, cfg: TrainConfig) -> dict[int, float]:
    """Layer index (0-based) -> weight of its exit loss at this step, summing to 1."""
    ramp = min(1.0, (step + 1) / cfg.exit_curriculum) if cfg.exit_curriculum else 1.0
    active = {i: ramp * (i + 1) / n_layers for i in range(n_layers - 1)
              if (i + step) % cfg.rotation == 0}
    active[n_layers - 1] = 1.0
    total = sum(active.values())
    return {i: w / total for i, w in active.items()}


def layerskip_loss(model: EarlyExitLM, batch: Tensor, step: int, cfg: TrainConfig,
                   gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Weighted early-exit loss and the last layer's loss on a (B, T+1) batch."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    n = model.cfg.n_layers
    weights = exit_weights(step, n, cfg)
    h = model.embed(inputs)  # (B, T, C)
    positions = model.positions(h.shape[0], h.shape[1])
    cos, sin = model.rope_cos[positions], model.rope_sin[positions]
    loss, final = h.new_zeros((), dtype=torch.float32), None
    for i, block in enumerate(model.layers):
        out = block(h, cos, sin, None)
        p_drop = cfg.max_layer_dropout * i / max(1, n - 1)
        if p_drop > 0:
            keep = torch.rand(h.shape[0], 1, 1, generator=gen) >= p_drop  # per sequence
            out = torch.where(keep, out, h)
        h = out
        if i in weights:
            logits = model.exit_logits(h).float()
            ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
            loss = loss + weights[i] * ce
            final = ce
    return loss, final


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(cfg: TrainConfig, out: Path, cache_dir: Path, model_cfg: ModelConfig | None = None,
          on_step: Callable[[int, float], None] | None = None) -> str:
    """Build corpus and tokenizer, train, save the checkpoint and held-out split; return sha256."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    gen = torch.Generator().manual_seed(cfg.seed)
    started = time.time()
    docs = build_corpus(cache_dir)
    model_cfg = model_cfg or ModelConfig()
    tokenizer = train_tokenizer((d.text for d in docs if d.split == "train"), model_cfg.vocab_size)
    streams = encode_streams(docs, tokenizer)
    model = EarlyExitLM(model_cfg)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr,
                            betas=(0.9, 0.95))
    model.train()
    losses = []
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = sample_batch(streams, cfg, gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss, final = layerskip_loss(model, batch, step, cfg, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(final.item())
        if on_step:
            on_step(step, losses[-1])
    out.mkdir(parents=True, exist_ok=True)
    write_heldout(docs, out / "heldout.jsonl.gz")
    metadata = {"train": cfg.model_dump(), "seconds": round(time.time() - started, 1),
                "tokens_seen": cfg.steps * cfg.batch_size * cfg.seq_len,
                "final_loss_last_100": sum(losses[-100:]) / len(losses[-100:]),
                "torch": torch.__version__,
                "corpus_documents": {t: sum(d.task == t and d.split == "train" for d in docs)
                                     for t in TASKS}}
    return save_checkpoint(model, tokenizer, out, metadata)
