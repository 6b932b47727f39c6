"""What a full exit trace says before any serving question: exit depths by task and token
class, each layer's agreement with the final layer, the quality/savings trade-off as a
threshold moves, and self-speculative acceptance by draft layer. Tables for the dashboard's
traces page and the design-review report."""

from __future__ import annotations

import numpy as np
import pandas as pd

from eesim.policy.policy import ExitPolicy
from eesim.policy.replay import oracle_exit_layers, replay
from eesim.policy.selfspec import acceptance, speculate
from eesim.trace.schema import ExitTrace, TraceError


def _full(trace: ExitTrace, what: str) -> None:
    if trace.kind != "full":
        raise TraceError(f"{trace.where}: {what} needs a 'full' trace, this one is '{trace.kind}'")


def exit_depths(trace: ExitTrace, policy: ExitPolicy | None = None, by: str = "task") -> pd.DataFrame:
    """Share of tokens leaving at each layer, per value of `by` (task or token_class): long
    table (group, layer, share, tokens). Under `policy`, the layers it exits at; without one,
    the oracle's (the first layer that agrees with the final layer)."""
    _full(trace, "exit depths")
    tokens = trace.tokens()
    if by not in tokens:
        raise TraceError(f"{trace.where}: has no column {by!r}")
    layers = replay(policy, trace).exit_layer if policy is not None else oracle_exit_layers(trace)
    frame = pd.DataFrame({"group": tokens[by].astype(str).to_numpy(), "layer": layers})
    counts = frame.groupby(["group", "layer"]).size().rename("tokens").reset_index()
    counts["share"] = counts["tokens"] / counts.groupby("group")["tokens"].transform("sum")
    return counts


def agreement_by_layer(trace: ExitTrace) -> pd.DataFrame:
    """Per exit layer and task ('all' included): the share of tokens whose exit top-1 equals
    the final layer's."""
    _full(trace, "agreement")
    top1 = trace.matrix("top1")
    agree = top1 == top1[:, -1:]
    tasks = trace.tokens()["task"].astype(str).to_numpy()
    rows = []
    for task in ["all", *sorted(set(tasks))]:
        mask = np.ones(len(tasks), bool) if task == "all" else tasks == task
        for i, layer in enumerate(trace.meta.exit_layers):
            rows.append((task, int(layer), float(agree[mask, i].mean())))
    return pd.DataFrame(rows, columns=["task", "layer", "agreement"])


def tradeoff(trace: ExitTrace, signal: str = "max_prob", points: int = 21,
             min_layer: int = 1) -> pd.DataFrame:
    """The quality/savings curve: for thresholds across the signal's range (one threshold for
    every task), layers saved, quality delta and layers per token."""
    _full(trace, "the trade-off curve")
    n = trace.meta.n_layers
    if signal == "static":
        values = np.arange(1, n + 1, dtype=float)
    elif signal == "entropy":
        values = np.linspace(0.0, 8.0, points)
    else:
        values = np.linspace(0.0, 1.0, points)
    rows = []
    for t in values:
        policy = ExitPolicy(signal=signal, thresholds={"*": float(t)}, min_layer=min_layer,
                            model_sha256=trace.meta.model_sha256, n_layers=n)
        r = replay(policy, trace)
        layers = float(r.exit_layer.mean())
        rows.append((signal, float(t), layers, 1 - layers / n, float(r.differs.mean())))
    return pd.DataFrame(rows, columns=["signal", "threshold", "layers_per_token", "layers_saved",
                                       "quality_delta"])


def acceptance_by_draft_layer(trace: ExitTrace, drafts: int = 4) -> pd.DataFrame:
    """Greedy self-speculation at every early exit as the draft layer: acceptance rate and
    tokens per verification step (exact from a full trace)."""
    _full(trace, "acceptance")
    rows = []
    for layer in trace.meta.exit_layers:
        if layer >= trace.meta.n_layers:
            continue
        a = acceptance(speculate(trace, int(layer), drafts))
        rows.append((int(layer), drafts, a["acceptance_rate"], a["tokens_per_step"]))
    return pd.DataFrame(rows, columns=["draft_layer", "drafts", "acceptance_rate", "tokens_per_step"])
