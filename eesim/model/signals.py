"""Confidence signals an exit controller reads from an exit's logits."""

from __future__ import annotations

import torch
from torch import Tensor


def confidence_signals(logits: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """top-1 id, max probability, entropy (nats) and top-1/top-2 margin over the last dim."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    probs = logp.exp()
    top2 = probs.topk(2, dim=-1)
    entropy = (-(probs * logp).sum(-1)).clamp_min(0.0)
    margin = top2.values[..., 0] - top2.values[..., 1]
    return top2.indices[..., 0], top2.values[..., 0], entropy, margin
