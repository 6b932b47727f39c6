"""A Llama-style decoder whose every layer can exit through one shared head.

Shapes in comments: R rows (sequences), Q query positions, T cached positions, C model width,
H query heads, G key/value heads, D head width, V vocabulary.

Exit layers are counted from 1: "exit at layer e" means e decoder layers have run and the shared
head (final norm + LM head) reads the residual stream there; e = n_layers is the full model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eesim.model.config import ModelConfig
from eesim.model.kvcache import KVCache


class RMSNorm(nn.Module):
    """Root-mean-square normalisation with a learned gain, computed in float32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


def rope_table(cfg: ModelConfig) -> tuple[Tensor, Tensor]:
    """cos and sin of the rotary angles, each (max_seq_len, D/2)."""
    half = cfg.head_dim // 2
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(half, dtype=torch.float64) / half))
    angles = torch.outer(torch.arange(cfg.max_seq_len, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (R, Q, heads, D) by per-position angles cos/sin of shape (R, Q, D/2)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)


class Attention(nn.Module):
    """Grouped-query self-attention that reads and writes a preallocated KV cache."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wkv = nn.Linear(cfg.dim, 2 * cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def keys_values(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        """Rotated keys and values of x (R, Q, C), each (R, Q, G, D)."""
        r, q, _ = x.shape
        k, v = self.wkv(x).view(r, q, 2, self.n_kv, self.head_dim).unbind(2)
        return apply_rope(k, cos, sin), v

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache_view: CacheView | None) -> Tensor:
        r, q, _ = x.shape
        xq = apply_rope(self.wq(x).view(r, q, self.n_heads, self.head_dim), cos, sin)
        k, v = self.keys_values(x, cos, sin)
        if cache_view is None:  # uncached: the chunk attends causally to itself
            out = F.scaled_dot_product_attention(
                xq.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                is_causal=q > 1, enable_gqa=True,
            )
        else:
            keys, values, mask = cache_view.write_and_read(k, v)  # (R, T, G, D), (R, 1, Q, T)
            out = F.scaled_dot_product_attention(
                xq.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2),
                attn_mask=mask, enable_gqa=True,
            )
        return self.wo(out.transpose(1, 2).reshape(r, q, -1))


class MLP(nn.Module):
    """SwiGLU feed-forward block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.w_gate_up = nn.Linear(cfg.dim, 2 * cfg.ffn_dim, bias=False)
        self.w_down = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w_gate_up(x).chunk(2, dim=-1)
        return self.w_down(F.silu(gate) * up)


class Block(nn.Module):
    """Pre-norm decoder layer: attention then MLP, each added to the residual stream."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, h: Tensor, cos: Tensor, sin: Tensor, cache_view: CacheView | None) -> Tensor:
        h = h + self.attn(self.attn_norm(h), cos, sin, cache_view)
        return h + self.mlp(self.mlp_norm(h))


class CacheView:
    """One layer's slice of a KVCache for a set of rows whose chunks start at `pos`."""

    def __init__(self, cache: KVCache, layer: int, rows: Tensor | None, positions: Tensor) -> None:
        self.cache, self.layer, self.rows, self.positions = cache, layer, rows, positions

    def write_and_read(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        self.cache.write(self.layer, self.rows, self.positions, k, v)
        length = int(self.positions[:, -1].max()) + 1
        keys, values = self.cache.read(self.layer, self.rows, length, k.shape[0])
        key_pos = torch.arange(length, device=k.device)
        mask = key_pos[None, None, :] <= self.positions[:, :, None]  # (R, Q, T)
        return keys, values, mask[:, None]


class EarlyExitLM(nn.Module):
    """Decoder LM with a shared exit head usable after any layer.

    The pieces are exposed so that an engine can run layers a..b on a subset of rows, check the
    exit head in between, fill the KV cache of layers it skipped, and continue later from where
    it stopped. `forward` is the plain full-depth pass used for training and as the reference.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        cos, sin = rope_table(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for block in self.layers:  # scaled residual projections (GPT-2)
            for w in (block.attn.wo.weight, block.mlp.w_down.weight):
                nn.init.normal_(w, std=0.02 / (2 * cfg.n_layers) ** 0.5)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def positions(self, rows: int, length: int, start: Tensor | int = 0) -> Tensor:
        """(R, Q) absolute positions of a chunk of `length` tokens starting at `start`."""
        start_t = torch.as_tensor(start, device=self.rope_cos.device).reshape(-1, 1)
        return (start_t + torch.arange(length, device=self.rope_cos.device)).expand(rows, length)

    def embed(self, tokens: Tensor) -> Tensor:
        """(R, Q) token ids to the residual stream (R, Q, C)."""
        return self.tok_emb(tokens)

    def run_layers(
        self, h: Tensor, start: int, end: int, *, cache: KVCache | None = None,
        rows: Tensor | None = None, pos: Tensor | int = 0,
    ) -> Tensor:
        """Run layers start..end-1 (0-based) on h (R, Q, C) whose chunks begin at `pos`.

        With a cache, `rows` says which cache rows h belongs to (None: rows 0..R-1) and each
        layer writes its keys/values at positions pos..pos+Q-1 before attending to 0..pos+Q-1.
        """
        self._check_range(start, end)
        positions = self.positions(h.shape[0], h.shape[1], pos)
        if positions.max() >= self.cfg.max_seq_len:
            raise ValueError(f"position {int(positions.max())} >= max_seq_len {self.cfg.max_seq_len}")
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        for i in range(start, end):
            view = None if cache is None else CacheView(cache, i, rows, positions)
            h = self.layers[i](h, cos, sin, view)
        return h

    def fill_kv(
        self, h: Tensor, start: int, end: int, cache: KVCache, *,
        rows: Tensor | None = None, pos: Tensor | int = 0,
    ) -> None:
        """Write keys/values of layers start..end-1 computed from h, without running them.

        This is CALM's state propagation: a token that exited early still leaves K/V in the
        layers it skipped, projected from its exit hidden state, so later tokens can attend.
        """
        self._check_range(start, end)
        positions = self.positions(h.shape[0], h.shape[1], pos)
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        for i in range(start, end):
            block = self.layers[i]
            k, v = block.attn.keys_values(block.attn_norm(h), cos, sin)
            cache.write(i, rows, positions, k, v)

    def exit_logits(self, h: Tensor) -> Tensor:
        """The shared exit head: final norm + LM head, (R, Q, C) -> (R, Q, V)."""
        return self.lm_head(self.norm(h))

    def forward(self, tokens: Tensor) -> Tensor:
        """Full-depth logits (R, Q, V) of an uncached pass."""
        return self.exit_logits(self.run_layers(self.embed(tokens), 0, self.cfg.n_layers))

    def hidden_states(self, tokens: Tensor) -> list[Tensor]:
        """Residual stream after each layer 1..n_layers of an uncached pass, each (R, Q, C)."""
        h, out = self.embed(tokens), []
        for i in range(self.cfg.n_layers):
            h = self.run_layers(h, i, i + 1)
            out.append(h)
        return out

    def new_cache(self, rows: int, length: int, dtype: torch.dtype | None = None) -> KVCache:
        """A zeroed cache for `rows` sequences of up to `length` tokens on the model's device."""
        dtype = dtype or self.tok_emb.weight.dtype
        return KVCache(self.cfg, rows, length, dtype=dtype, device=self.rope_cos.device)

    def _check_range(self, start: int, end: int) -> None:
        if not 0 <= start <= end <= self.cfg.n_layers:
            raise ValueError(f"layer range {start}..{end} outside 0..{self.cfg.n_layers}")
