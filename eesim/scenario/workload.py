"""Workloads: when requests arrive and how long their prompts and outputs are.

Open-loop arrivals are Poisson (exponential gaps) or bursty (gamma gaps with a coefficient of
variation > 1) at a rate, or a replay of a real log (the Azure LLM inference trace 2023 in
`traces/azure-llm-inference-2023/`, with time scaling and length clipping). Closed-loop
workloads keep N users each sending its next request when the previous one completes; their
arrival times are decided by the simulation, so here they only fix lengths. Everything is drawn
from one seeded generator: the same arguments give the same workload.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from eesim.paths import committed

AZURE_DIR = committed("traces", "azure-llm-inference-2023")
AZURE = {"azure-code": "AzureLLMInferenceTrace_code.csv", "azure-conv": "AzureLLMInferenceTrace_conv.csv"}


@dataclass(frozen=True)
class Workload:
    """Requests in arrival order: arrival time (s; NaN for closed loop), prompt and output length."""

    arrival_s: np.ndarray
    prompt_len: np.ndarray
    output_len: np.ndarray
    source: str
    concurrency: int | None = None  # closed loop: users in flight

    def __len__(self) -> int:
        return len(self.prompt_len)


def _lengths(n: int, rng: np.random.Generator, prompt: tuple[int, int], output: tuple[int, int]):
    return (rng.integers(prompt[0], prompt[1] + 1, n), rng.integers(output[0], output[1] + 1, n))


def poisson(rate: float, n: int, seed: int, prompt=(64, 64), output=(128, 128)) -> Workload:
    """n requests with exponential gaps at `rate` per second."""
    _check(rate=rate, n=n)
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, n))
    return Workload(arrivals, *_lengths(n, rng, prompt, output), f"poisson({rate}/s)")


def bursty(rate: float, n: int, seed: int, cv: float = 3.0, prompt=(64, 64),
           output=(128, 128)) -> Workload:
    """n requests with gamma gaps of mean 1/rate and coefficient of variation `cv`."""
    _check(rate=rate, n=n)
    if cv <= 0:
        raise ValueError(f"burstiness cv must be > 0, got {cv}")
    rng = np.random.default_rng(seed)
    shape = 1.0 / cv**2
    arrivals = np.cumsum(rng.gamma(shape, 1.0 / (rate * shape), n))
    return Workload(arrivals, *_lengths(n, rng, prompt, output), f"gamma({rate}/s, cv={cv})")


def closed_loop(concurrency: int, n: int, seed: int, prompt=(64, 64), output=(128, 128)) -> Workload:
    """n requests sent by `concurrency` users back to back (arrival times set by the run)."""
    _check(n=n)
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    rng = np.random.default_rng(seed)
    return Workload(np.full(n, np.nan), *_lengths(n, rng, prompt, output),
                    f"closed-loop({concurrency} users)", concurrency)


def azure(name: str, n: int | None = None, time_scale: float = 1.0, max_prompt: int | None = None,
          max_output: int | None = None, folder: Path = AZURE_DIR) -> Workload:
    """Replay an Azure log: arrival gaps divided by `time_scale` (2 = twice the load), lengths
    clipped to the given maxima, the first n requests."""
    if name not in AZURE:
        raise ValueError(f"unknown arrival log {name!r}; known: {', '.join(AZURE)}")
    if time_scale <= 0:
        raise ValueError(f"time scale must be > 0, got {time_scale}")
    path = folder / AZURE[name]
    table = pd.read_csv(path)
    for col in ("TIMESTAMP", "ContextTokens", "GeneratedTokens"):
        if col not in table:
            raise ValueError(f"{path}: missing column '{col}'")
    if n is not None:
        table = table.iloc[:n]
    stamps = pd.to_datetime(table["TIMESTAMP"]).astype("int64").to_numpy() / 1e9
    arrivals = (stamps - stamps[0]) / time_scale
    prompt = table["ContextTokens"].to_numpy().clip(1, max_prompt)
    output = table["GeneratedTokens"].to_numpy().clip(1, max_output)
    return Workload(arrivals, prompt.astype(int), output.astype(int), f"{name} x{time_scale}")


def _check(rate: float | None = None, n: int | None = None) -> None:
    if rate is not None and not rate > 0:
        raise ValueError(f"arrival rate must be > 0 requests/s, got {rate}")
    if n is not None and n < 1:
        raise ValueError(f"number of requests must be >= 1, got {n}")
