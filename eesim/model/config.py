"""The shape of an early-exit decoder, validated at the boundary."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelConfig(BaseModel):
    """Shape of a Llama-style decoder whose every layer can exit through a shared head.

    The exit head is the final RMSNorm followed by the LM head; it is the same module whether it
    is applied after layer 3 or after the last layer, so an exit check costs one head evaluation.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    vocab_size: int = Field(4096, ge=2, description="Tokens in the vocabulary.")
    dim: int = Field(256, ge=8, description="Width of the residual stream.")
    n_layers: int = Field(8, ge=1, description="Decoder layers; every one is an exit point.")
    n_heads: int = Field(8, ge=1, description="Query heads.")
    n_kv_heads: int = Field(2, ge=1, description="Key/value heads (grouped-query attention).")
    ffn_dim: int = Field(704, ge=1, description="Hidden width of the SwiGLU MLP.")
    max_seq_len: int = Field(1024, ge=1, description="Longest sequence the RoPE table covers.")
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base frequency.")
    norm_eps: float = Field(1e-5, gt=0, description="RMSNorm epsilon.")
    tie_embeddings: bool = Field(True, description="LM head shares the embedding matrix.")

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelConfig:
        if self.dim % self.n_heads:
            raise ValueError(f"dim={self.dim} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}"
            )
        if (self.dim // self.n_heads) % 2:
            raise ValueError(f"head_dim={self.dim // self.n_heads} must be even for RoPE")
        return self

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads
