"""The early-exit decoder: model, KV cache, tokenizer, checkpoints, training and evaluation."""

from eesim.model.checkpoint import (
    REFERENCE_DIR,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from eesim.model.config import ModelConfig
from eesim.model.kvcache import KVCache, PagedKVCache
from eesim.model.transformer import EarlyExitLM

__all__ = ["REFERENCE_DIR", "Checkpoint", "CheckpointError", "EarlyExitLM", "KVCache",
           "ModelConfig", "PagedKVCache", "load_checkpoint", "save_checkpoint"]
