"""Replay an exit policy on a recorded trace: each token's exit layer and what it costs in quality.

Replay is teacher-forced: every position keeps the full-depth context the trace was recorded
with, so the exit at position p is judged as if earlier positions had been decoded at full depth.
Quality delta is the share of tokens whose exit top-1 differs from the full-depth top-1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from eesim.policy.policy import HIGHER_PASSES, ExitPolicy
from eesim.trace.schema import ExitTrace, TraceError


@dataclass
class Replay:
    """Per-token outcome of a policy on a trace (arrays aligned with `trace.tokens()`)."""

    tokens: pd.DataFrame     # request_id, position, task, token_class, ...
    exit_layer: np.ndarray   # (N,) layer the token left at (n_layers = full depth)
    emitted: np.ndarray      # (N,) token id the exit produced (-1 when unknown)
    differs: np.ndarray      # (N,) exit top-1 != full-depth top-1 (False when unknown)
    checks: np.ndarray       # (N,) early exit heads evaluated for the token
    n_layers: int

    def summary(self) -> dict:
        """layers per token, quality delta and exit depths, overall and by task / token class."""
        out = _stats(self, np.ones(len(self.exit_layer), dtype=bool))
        for col in ("task", "token_class"):
            if col in self.tokens:
                values = self.tokens[col].astype(str).to_numpy()
                out[f"by_{col}"] = {v: _stats(self, values == v) for v in sorted(set(values))}
        return out


def signal_matrix(trace: ExitTrace, policy: ExitPolicy) -> np.ndarray:
    """(tokens, exits) values of the policy's signal, oriented so that larger passes."""
    if policy.signal == "static":
        layers = np.asarray(trace.meta.exit_layers, dtype=float)
        return np.broadcast_to(layers, (len(trace.tokens()), len(layers)))
    if policy.signal == "risk":
        mp, ent, mg = (trace.matrix(c) for c in ("max_prob", "entropy", "margin"))
        cols = [policy.risk_model.risk(layer, mp[:, i], ent[:, i], mg[:, i])
                if layer in policy.risk_model.coef else np.ones(len(mp))
                for i, layer in enumerate(trace.meta.exit_layers)]
        return -np.stack(cols, axis=1)
    values = trace.matrix(policy.signal).astype(np.float64)
    return values if HIGHER_PASSES[policy.signal] else -values


def thresholds_per_token(tokens: pd.DataFrame, policy: ExitPolicy) -> np.ndarray:
    """(tokens,) threshold of each token's task, oriented like `signal_matrix`."""
    sign = 1.0 if HIGHER_PASSES[policy.signal] else -1.0
    if "task" not in tokens:
        return np.full(len(tokens), sign * policy.threshold(""), dtype=np.float64)
    column = tokens["task"]  # each distinct task looked up once
    if isinstance(column.dtype, pd.CategoricalDtype) and not column.isna().any():
        codes, names = column.cat.codes.to_numpy(), column.cat.categories.astype(str)
    else:
        codes, names = pd.factorize(column.astype(str))
    return sign * np.array([policy.threshold(t) for t in names], dtype=np.float64)[codes]


def replay(policy: ExitPolicy, trace: ExitTrace, *, check_model: bool = True) -> Replay:
    """Exit layer of every token under `policy`; `exits` traces replay their recorded exits."""
    if trace.kind == "exits":
        return _recorded_exits(trace)
    if trace.kind != "full":
        raise TraceError(f"a '{trace.kind}' trace holds no exit signals to replay a policy on")
    if check_model:
        policy.check_model(trace.meta.model_sha256)
    tokens = trace.tokens()
    return decide(policy, trace, tokens, signal_matrix(trace, policy),
                  thresholds_per_token(tokens, policy))


def pass_matrix(policy: ExitPolicy, trace, signal: np.ndarray,
                threshold: np.ndarray) -> np.ndarray:
    """(tokens, exits): whether an exit check at each exit would let the token leave."""
    layers = np.asarray(trace.meta.exit_layers)
    allowed = np.broadcast_to(layers >= policy.min_layer, signal.shape).copy()
    if policy.forbidden_classes:
        allowed &= ~np.isin(trace.matrix("top1_class").astype(str), policy.forbidden_classes)
    passes = allowed & (signal >= threshold[:, None])
    passes[:, -1] = True  # the last exit is the full model: the fallback always answers
    return passes


def policy_passes(policy: ExitPolicy, trace: ExitTrace) -> np.ndarray:
    """`pass_matrix` of a policy on a full trace (the simulator's view of exit checks)."""
    policy.check_model(trace.meta.model_sha256)
    tokens = trace.tokens()
    return pass_matrix(policy, trace, signal_matrix(trace, policy),
                       thresholds_per_token(tokens, policy))


def decide(policy: ExitPolicy, trace: ExitTrace, tokens: pd.DataFrame, signal: np.ndarray,
           threshold: np.ndarray) -> Replay:
    """Exit at the first allowed exit whose oriented signal >= the token's threshold."""
    layers = np.asarray(trace.meta.exit_layers)
    top1 = trace.matrix("top1")
    passes = pass_matrix(policy, trace, signal, threshold)
    idx = passes.argmax(axis=1)
    rows = np.arange(len(idx))
    early = (layers < layers[-1]) & (layers >= policy.min_layer)
    checks = np.cumsum(early)[idx]
    emitted = top1[rows, idx]
    return Replay(tokens, layers[idx], emitted, emitted != top1[:, -1], checks, trace.meta.n_layers)


def _recorded_exits(trace: ExitTrace) -> Replay:
    tokens = trace.tokens()
    exit_layer = tokens["exit_layer"].to_numpy().astype(int)
    n = len(exit_layer)
    return Replay(tokens, exit_layer, np.full(n, -1), np.zeros(n, dtype=bool),
                  np.minimum(exit_layer, trace.meta.n_layers - 1), trace.meta.n_layers)


def _stats(r: Replay, mask: np.ndarray) -> dict:
    n = int(mask.sum())
    if n == 0:
        return {"tokens": 0}
    depth = np.bincount(r.exit_layer[mask], minlength=r.n_layers + 1)[1:]
    layers = float(r.exit_layer[mask].mean())
    return {
        "tokens": n,
        "layers_per_token": round(layers, 4),
        "layers_saved": round(1 - layers / r.n_layers, 4),
        "quality_delta": round(float(r.differs[mask].mean()), 5),
        "exit_checks_per_token": round(float(r.checks[mask].mean()), 4),
        "exit_depth": {int(i + 1): round(c / n, 5) for i, c in enumerate(depth) if c},
    }


def oracle_exit_layers(trace: ExitTrace) -> np.ndarray:
    """(tokens,) the first exit layer whose top-1 equals the full-depth top-1.

    This is the depth an oracle controller could exit at without changing the output: the
    model's own exit-depth distribution, before any confidence signal or threshold.
    """
    top1 = trace.matrix("top1")
    agree = top1 == top1[:, -1:]
    return np.asarray(trace.meta.exit_layers)[agree.argmax(axis=1)]


def depth_distribution(trace: ExitTrace) -> dict:
    """Oracle exit-depth statistics overall, by task and by token class (for docs and pages)."""
    layers = oracle_exit_layers(trace)
    tokens = trace.tokens()
    n = trace.meta.n_layers
    r = Replay(tokens, layers, trace.matrix("top1")[:, -1], np.zeros(len(layers), bool),
               np.zeros(len(layers), int), n)
    out = r.summary()
    for part in [out, *out.get("by_task", {}).values(), *out.get("by_token_class", {}).values()]:
        for key in ("quality_delta", "exit_checks_per_token"):
            part.pop(key, None)
    return out
