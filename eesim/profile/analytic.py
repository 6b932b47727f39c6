"""Analytic (roofline) profiles from datasheet figures: what-if answers for hardware not at hand.

Every term costs max(FLOPs / (peak FLOP/s x compute efficiency), bytes / (bandwidth x memory
efficiency)) plus a fixed launch overhead per kernel. The numbers are stated, not measured; every
profile made here is labelled `analytic` in its metadata and wherever it is shown.
"""

from __future__ import annotations

import pandas as pd
from pydantic import BaseModel

from eesim.model.config import ModelConfig
from eesim.model.presets import model_shape
from eesim.profile.format import Profile, ProfileMeta
from eesim.profile.shapes import layer_params, memory_facts_from_shape


class Hardware(BaseModel):
    """Datasheet figures (dense bf16 tensor-core FLOP/s, HBM bandwidth, memory)."""

    name: str
    flops: float
    bandwidth: float
    memory_bytes: float
    compute_efficiency: float = 0.6   # achieved share of peak on large GEMMs
    memory_efficiency: float = 0.8    # achieved share of peak HBM bandwidth
    launch_s: float = 5e-6            # per kernel launch
    host_sync_s: float = 20e-6        # device-to-host round trip of a small tensor


HARDWARE = {
    "h100-sxm": Hardware(name="NVIDIA H100 SXM (datasheet)", flops=989e12, bandwidth=3.35e12,
                         memory_bytes=80e9),
    "h200": Hardware(name="NVIDIA H200 SXM (datasheet)", flops=989e12, bandwidth=4.8e12,
                     memory_bytes=141e9),
    "a100-80g": Hardware(name="NVIDIA A100 80GB SXM (datasheet)", flops=312e12, bandwidth=2.039e12,
                         memory_bytes=80e9),
    "l4": Hardware(name="NVIDIA L4 (datasheet)", flops=121e12, bandwidth=300e9, memory_bytes=24e9),
}
ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
QUERY = (1, 2, 4, 8, 16, 32, 128, 512, 2048, 8192, 16384)
CONTEXT = (0, 128, 512, 1024, 2048, 4096, 8192, 32768)
KERNELS_PER_LAYER = 8
BYTES = 2  # bf16


def roofline(hw: Hardware, flops: float, nbytes: float, kernels: int) -> float:
    return max(flops / (hw.flops * hw.compute_efficiency),
               nbytes / (hw.bandwidth * hw.memory_efficiency)) + kernels * hw.launch_s


def layer_seconds(hw: Hardware, cfg: ModelConfig, rows: int, query: int, context: int) -> float:
    tokens = rows * query
    attn_flops = 4 * rows * query * (context + query) * cfg.n_heads * cfg.head_dim
    kv = 2 * cfg.n_kv_heads * cfg.head_dim * BYTES
    nbytes = layer_params(cfg) * BYTES + rows * (context + query) * kv + tokens * cfg.dim * BYTES * 4
    return roofline(hw, 2 * layer_params(cfg) * tokens + attn_flops, nbytes, KERNELS_PER_LAYER)


def term_seconds(hw: Hardware, cfg: ModelConfig, term: str, rows: int) -> float:
    head = cfg.vocab_size * cfg.dim
    row_bytes = rows * cfg.dim * BYTES
    return {
        "exit_head": roofline(hw, 2 * head * rows + 5 * rows * cfg.vocab_size,
                              head * BYTES + rows * cfg.vocab_size * 4, 5),
        "final_head": roofline(hw, 2 * head * rows, head * BYTES + rows * cfg.vocab_size * 4, 3),
        "embed": roofline(hw, 0, row_bytes, 1),
        "sample": roofline(hw, 4 * rows * cfg.vocab_size, rows * cfg.vocab_size * 4, 3),
        "host_sync": hw.host_sync_s,
        "compact": roofline(hw, 0, 3 * row_bytes, 2),
        "regroup": roofline(hw, 0, 3 * row_bytes, 4) + hw.host_sync_s,
        "mask": roofline(hw, 0, 3 * row_bytes, 1),
        "kv_fill": roofline(hw, 2 * rows * cfg.dim * 2 * cfg.n_kv_heads * cfg.head_dim,
                            cfg.dim * 2 * cfg.n_kv_heads * cfg.head_dim * BYTES, 3),
    }[term]


def analytic_profile(hardware: str, model: str) -> Profile:
    """A full-grid profile of `model` on datasheet `hardware`, labelled analytic."""
    if hardware not in HARDWARE:
        raise ValueError(f"unknown hardware {hardware!r}; known: {', '.join(HARDWARE)}")
    hw, cfg = HARDWARE[hardware], model_shape(model)
    records = [("layer", r, q, c, layer_seconds(hw, cfg, r, q, c), 0.0, 0)
               for r in ROWS for q in QUERY for c in CONTEXT]
    for term in ("exit_head", "final_head", "embed", "sample", "host_sync", "compact", "regroup",
                 "mask", "kv_fill"):
        records += [(term, r, 1, 128 if term == "kv_fill" else 0, term_seconds(hw, cfg, term, r),
                     0.0, 0) for r in ROWS]
    table = pd.DataFrame(records, columns=["term", "rows", "query", "context", "median_s",
                                          "iqr_s", "runs"])
    memory = memory_facts_from_shape(cfg, BYTES) | {"device_memory_bytes": int(hw.memory_bytes)}
    meta = ProfileMeta(kind="analytic", device=hw.name, device_type="analytic", model_name=model,
                       batching="ragged",
                       model=cfg, dtype="bfloat16", layers_measured=0, memory=memory,
                       env={"hardware": hw.model_dump(), "kernels_per_layer": KERNELS_PER_LAYER},
                       notes=["ANALYTIC: roofline from datasheet figures with the stated "
                              "efficiency factors; not a measurement"])
    return Profile(table, meta, f"analytic profile of {model} on {hardware}")
