"""Calibrate exit thresholds against an error budget, and report them on held-out requests.

Requests are split by a hash of their id into a calibration half and a held-out half. Per task
class, the threshold chosen is the one that saves the most layers while the quality delta on the
calibration half stays within the budget; the report is computed on the held-out half only.
"""

from __future__ import annotations

import hashlib

import numpy as np

from eesim.policy.policy import DEFAULT_TASK, HIGHER_PASSES, ExitPolicy, RiskModel
from eesim.policy.product import json_validity
from eesim.policy.replay import Replay, decide, replay, signal_matrix
from eesim.trace.schema import ExitTrace, TraceError

CANDIDATES = 400


def calibration_mask(trace: ExitTrace) -> np.ndarray:
    """(tokens,) True for tokens of requests in the calibration half (hash of request id)."""
    ids = trace.tokens()["request_id"].to_numpy()
    in_cal = {int(r): hashlib.sha256(f"eesim-split/{int(r)}".encode()).digest()[0] < 128
              for r in np.unique(ids)}
    return np.array([in_cal[int(r)] for r in ids])


def fit_risk_model(trace: ExitTrace, mask: np.ndarray, l2: float = 1e-3) -> RiskModel:
    """Per early exit, logistic regression of disagreement with full depth on the signals."""
    mp, ent, mg = (trace.matrix(c)[mask].astype(np.float64) for c in ("max_prob", "entropy", "margin"))
    top1 = trace.matrix("top1")[mask]
    coef = {}
    for i, layer in enumerate(trace.meta.exit_layers[:-1]):
        x = np.column_stack([np.ones(len(mp)), mp[:, i], ent[:, i], mg[:, i]])
        y = (top1[:, i] != top1[:, -1]).astype(np.float64)
        coef[int(layer)] = [round(float(v), 6) for v in _logistic(x, y, l2)]
    return RiskModel(coef=coef)


def _logistic(x: np.ndarray, y: np.ndarray, l2: float, iters: int = 25) -> np.ndarray:
    """Newton's method for L2-regularised logistic regression; deterministic."""
    w = np.zeros(x.shape[1])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) / len(y) + l2 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x / len(y) + l2 * np.eye(x.shape[1])
        w -= np.linalg.solve(hess, grad)
    return w


def calibrate(trace: ExitTrace, budget: float, signal: str = "max_prob", *, min_layer: int = 1,
              forbidden_classes: list[str] | None = None) -> tuple[ExitPolicy, dict]:
    """Choose per-task thresholds on the calibration half; report on the held-out half."""
    if not 0 <= budget <= 1:
        raise ValueError(f"budget must be in [0, 1], got {budget}")
    if trace.kind != "full":
        raise TraceError(f"calibration needs a 'full' trace, this one is '{trace.kind}'")
    cal = calibration_mask(trace)
    if cal.all() or not cal.any():
        raise TraceError("calibration needs at least two requests (one per split)")
    risk = fit_risk_model(trace, cal) if signal == "risk" else None
    n_layers = trace.meta.n_layers
    draft = ExitPolicy(signal=signal, thresholds={}, min_layer=min_layer,
                       forbidden_classes=forbidden_classes or [],
                       model_sha256=trace.meta.model_sha256, n_layers=n_layers, risk_model=risk)
    tokens = trace.tokens()
    oriented = signal_matrix(trace, draft)
    tasks = tokens["task"].astype(str).to_numpy()
    thresholds, choice = {}, {}
    for task in sorted(set(tasks)):
        rows = cal & (tasks == task)
        best = _best_threshold(draft, trace, tokens, oriented, rows, budget)
        sign = 1.0 if HIGHER_PASSES[signal] else -1.0
        thresholds[task] = float(sign * best["threshold"]) if np.isfinite(best["threshold"]) \
            else (float(n_layers) if signal == "static" else sign * float("inf"))
        choice[task] = {k: v for k, v in best.items() if k != "threshold"}
    policy = draft.model_copy(update={"thresholds": thresholds, "calibration": {
        "budget": budget, "trace_model_sha256": trace.meta.model_sha256,
        "calibration_requests": int(len(np.unique(tokens["request_id"][cal]))),
        "calibration_split": choice}})
    return policy, evaluate(policy, trace, heldout_only=True)


def _best_threshold(policy: ExitPolicy, trace: ExitTrace, tokens, oriented: np.ndarray,
                    rows: np.ndarray, budget: float) -> dict:
    """The candidate threshold with the fewest layers whose quality delta <= budget."""
    layers = np.asarray(trace.meta.exit_layers)
    early = oriented[rows][:, (layers < layers[-1]) & (layers >= policy.min_layer)]
    values = np.unique(early) if policy.signal == "static" else \
        np.unique(np.quantile(early, np.linspace(0, 1, CANDIDATES))) if early.size else np.array([])
    best = {"threshold": np.inf, "layers_per_token": float(trace.meta.n_layers),
            "quality_delta": 0.0}
    sub_tokens = tokens.loc[rows]
    sub_trace = _Rows(trace, rows)
    for value in values[::-1]:  # from strict to lenient: layers fall, delta rises
        r = decide(policy, sub_trace, sub_tokens, oriented[rows], np.full(rows.sum(), value))
        delta, depth = float(r.differs.mean()), float(r.exit_layer.mean())
        if delta <= budget and depth < best["layers_per_token"]:
            best = {"threshold": float(value), "layers_per_token": round(depth, 4),
                    "quality_delta": round(delta, 5)}
    return best


class _Rows:
    """A view of a trace's per-exit matrices restricted to some tokens (for `decide`)."""

    def __init__(self, trace: ExitTrace, rows: np.ndarray) -> None:
        self.meta, self._trace, self._rows, self._cache = trace.meta, trace, rows, {}

    def matrix(self, column: str) -> np.ndarray:
        if column not in self._cache:
            self._cache[column] = self._trace.matrix(column)[self._rows]
        return self._cache[column]


def evaluate(policy: ExitPolicy, trace: ExitTrace, *, heldout_only: bool = False) -> dict:
    """A policy's layers, savings and quality delta on a trace (held-out half if asked)."""
    result = replay(policy, trace)
    mask = ~calibration_mask(trace) if heldout_only else np.ones(len(result.exit_layer), bool)
    sub = Replay(result.tokens.loc[mask].reset_index(drop=True), result.exit_layer[mask],
                 result.emitted[mask], result.differs[mask], result.checks[mask], result.n_layers)
    report = sub.summary()
    report["split"] = "heldout" if heldout_only else "all"
    report["requests"] = int(sub.tokens["request_id"].nunique())
    if "top1_text" in trace.table and "prompt_text" in trace.table:
        report["json_validity"] = json_validity(trace, result, mask)
    return report


__all__ = ["DEFAULT_TASK", "calibrate", "calibration_mask", "evaluate", "fit_risk_model"]
