"""The fixed metric definitions, one implementation for predicted and measured runs alike.

Input: one row per request with its event times (seconds) and counters. Definitions
(docs/metrics.md has them with notation):

- TTFT = first_token_s - arrival_s
- TPOT = (completion_s - first_token_s) / (output_tokens - 1), per request with >= 2 tokens
- throughput = output tokens (or requests) / measured window, the window running from the first
  arrival to the last completion unless given
- layers per token = sum of layer evaluations / sum of output tokens (drafted and rejected work
  included)
- quality delta = emitted tokens that differ from full depth / emitted tokens
- acceptance rate = accepted drafted tokens / drafted tokens
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

REQUEST_COLUMNS = ("request_id", "arrival_s", "first_token_s", "completion_s", "output_tokens",
                   "layer_evals", "drafted", "accepted", "differs")
PERCENTILES = (50, 90, 99)


@dataclass
class RunResult:
    """A run, predicted or measured: one row per request, the summary (`summarize` plus the
    run's own fields) and time series (batch, queue and memory over time; empty if none)."""

    requests: pd.DataFrame
    summary: dict
    series: pd.DataFrame = field(default_factory=pd.DataFrame)


def distribution(values: np.ndarray) -> dict:
    """mean, p50, p90, p99 of a sample (None for an empty one)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
    return {"mean": float(values.mean()),
            **{f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES}}


def per_request(requests: pd.DataFrame) -> pd.DataFrame:
    """TTFT and TPOT of every request (TPOT is NaN for single-token outputs)."""
    missing = [c for c in REQUEST_COLUMNS if c not in requests]
    if missing:
        raise ValueError(f"request table lacks column(s) {missing}")
    out = requests.copy()
    out["ttft_s"] = out["first_token_s"] - out["arrival_s"]
    decode = out["output_tokens"] - 1
    out["tpot_s"] = np.where(decode > 0, (out["completion_s"] - out["first_token_s"])
                             / decode.clip(lower=1), np.nan)
    return out


def summarize(requests: pd.DataFrame, window: tuple[float, float] | None = None) -> dict:
    """The summary every run reports, predicted or measured."""
    table = per_request(requests)
    if table.empty:
        raise ValueError("no completed requests to summarize")
    start, end = window or (float(table["arrival_s"].min()), float(table["completion_s"].max()))
    span = max(end - start, 1e-12)
    tokens = int(table["output_tokens"].sum())
    drafted = int(table["drafted"].sum())
    return {
        "requests": len(table),
        "output_tokens": tokens,
        "window_s": span,
        "ttft_s": distribution(table["ttft_s"].to_numpy()),
        "tpot_s": distribution(table["tpot_s"].dropna().to_numpy()),
        "throughput_tokens_per_s": tokens / span,
        "throughput_requests_per_s": len(table) / span,
        "layers_per_token": float(table["layer_evals"].sum()) / max(tokens, 1),
        "quality_delta": float(table["differs"].sum()) / max(tokens, 1),
        "acceptance_rate": float(table["accepted"].sum()) / drafted if drafted else None,
    }
