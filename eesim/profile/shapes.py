"""What a model's shape alone says: weights per layer and in all, and the byte counts a profile
records (weights, KV per token and layer, activations, exit heads). Torch-free: the analytic
profiles and the simulator's side read these without loading torch."""

from __future__ import annotations

from eesim.model.config import ModelConfig


def layer_params(cfg: ModelConfig) -> int:
    """Weights of one decoder layer (attention + MLP + norms)."""
    attn = cfg.dim * cfg.n_heads * cfg.head_dim * 2 + cfg.dim * 2 * cfg.n_kv_heads * cfg.head_dim
    return attn + 3 * cfg.dim * cfg.ffn_dim + 2 * cfg.dim


def model_params(cfg: ModelConfig) -> int:
    heads = cfg.vocab_size * cfg.dim * (1 if cfg.tie_embeddings else 2)
    return cfg.n_layers * layer_params(cfg) + heads + cfg.dim


def memory_facts_from_shape(cfg: ModelConfig, size: int) -> dict:
    """Byte counts that follow from the shape and the element size alone."""
    head = (cfg.vocab_size * cfg.dim + cfg.dim) * size
    return {
        "weights_bytes": model_params(cfg) * size,
        "layer_weights_bytes": layer_params(cfg) * size,
        "shared_exit_head_extra_bytes": 0,
        "per_exit_heads_bytes": (cfg.n_layers - 1) * head,
        "exit_head_bytes_read": head,
        "kv_bytes_per_token_per_layer": 2 * cfg.n_kv_heads * cfg.head_dim * size,
        "activation_bytes_per_token": (4 * cfg.dim + 2 * cfg.ffn_dim) * size,
        "logits_bytes_per_row": cfg.vocab_size * 4,
    }
