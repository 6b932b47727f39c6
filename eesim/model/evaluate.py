"""Held-out evaluation of every exit: loss and top-1 agreement with the final layer, per task."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from eesim.model.checkpoint import Checkpoint
from eesim.model.corpus import TASKS, Document, read_heldout
from eesim.model.tokenizer import EOS, TASK_TOKENS

HELDOUT = "heldout.jsonl.gz"


def heldout_windows(docs: list[Document], tokenizer, task: str, window: int,
                    max_windows: int) -> torch.Tensor:
    """(N, window+1) token windows cut in order from the task's held-out documents."""
    ids: list[int] = []
    eos = tokenizer.token_to_id(EOS)
    for doc in docs:
        if doc.task == task:
            ids += [tokenizer.token_to_id(TASK_TOKENS[task]), *tokenizer.encode(doc.text).ids, eos]
        if len(ids) >= (window + 1) * max_windows:
            break
    n = min(max_windows, len(ids) // (window + 1))
    if n == 0:
        raise ValueError(f"held-out split has too few '{task}' tokens for one window of {window}")
    return torch.tensor(ids[: n * (window + 1)]).view(n, window + 1)


def unigram_loss(targets: torch.Tensor) -> float:
    """Cross-entropy of the best context-free predictor: the targets' own unigram distribution."""
    counts = Counter(targets.flatten().tolist())
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values())


@torch.no_grad()
def evaluate(ckpt: Checkpoint, window: int = 256, max_windows: int = 32,
             batch: int = 8) -> dict:
    """Per exit layer: held-out loss and agreement with the final layer's top-1, by task."""
    model, tok = ckpt.model, ckpt.tokenizer
    docs = read_heldout(Path(ckpt.path) / HELDOUT)
    n_layers = model.cfg.n_layers
    sums = {t: {"loss": torch.zeros(n_layers, dtype=torch.float64),
                "agree": torch.zeros(n_layers, dtype=torch.float64), "tokens": 0} for t in TASKS}
    unigram = {}
    for task in TASKS:
        windows = heldout_windows(docs, tok, task, window, max_windows)
        unigram[task] = unigram_loss(windows[:, 1:])
        for chunk in windows.split(batch):
            inputs, targets = chunk[:, :-1], chunk[:, 1:]
            logits = [model.exit_logits(h).float() for h in model.hidden_states(inputs)]
            final_top1 = logits[-1].argmax(-1)
            for i, lg in enumerate(logits):
                sums[task]["loss"][i] += F.cross_entropy(
                    lg.flatten(0, 1), targets.flatten(), reduction="sum").item()
                sums[task]["agree"][i] += (lg.argmax(-1) == final_top1).sum().item()
            sums[task]["tokens"] += targets.numel()
    return _report(ckpt, sums, unigram, n_layers)


def _report(ckpt: Checkpoint, sums: dict, unigram: dict, n_layers: int) -> dict:
    total = sum(s["tokens"] for s in sums.values())
    per_layer = []
    for i in range(n_layers):
        by_task = {t: {"loss": round(float(s["loss"][i]) / s["tokens"], 4),
                       "agreement": round(float(s["agree"][i]) / s["tokens"], 4)}
                   for t, s in sums.items()}
        per_layer.append({
            "layer": i + 1,
            "loss": round(sum(float(s["loss"][i]) for s in sums.values()) / total, 4),
            "agreement": round(sum(float(s["agree"][i]) for s in sums.values()) / total, 4),
            "by_task": by_task,
        })
    return {
        "model_sha256": ckpt.sha256, "layers": n_layers, "vocab": ckpt.model.cfg.vocab_size,
        "tokens": {t: s["tokens"] for t, s in sums.items()},
        "unigram_loss": {t: round(v, 4) for t, v in unigram.items()},
        "final_loss": {t: v["loss"] for t, v in per_layer[-1]["by_task"].items()},
        "per_layer": per_layer,
    }
