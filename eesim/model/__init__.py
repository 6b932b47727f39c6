"""The early-exit decoder: model, KV cache, tokenizer, checkpoints, training and evaluation.

Names are imported on first use (PEP 562), so that the torch-free parts of this package (the
model's shape, `eesim.model.config`, and the presets) load without torch: the simulator's side
reads shapes only.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "REFERENCE_DIR": "checkpoint", "Checkpoint": "checkpoint", "CheckpointError": "checkpoint",
    "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint", "ModelConfig": "config",
    "KVCache": "kvcache", "PagedKVCache": "kvcache", "EarlyExitLM": "transformer",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'eesim.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"eesim.model.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
