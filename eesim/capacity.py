"""Capacity answers: how latency and throughput move with load per strategy, and how many
replicas a target load needs within TPOT and TTFT limits and a quality budget.

`load_sweep` simulates each strategy at each request rate; `replicas_needed` searches the fewest
replicas that meet the limits (doubling, then bisecting: each probe is one simulation), and
checks the quality delta against the budget first, since replicas do not change it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from eesim.costmodel import CostModel
from eesim.policy.policy import ExitPolicy
from eesim.trace import ExitTrace
from eesim.whatif import WhatIf, answer

SWEEP_COLUMNS = ["strategy", "rate", "replicas", "tpot_p99_s", "tpot_mean_s", "ttft_p99_s",
                 "throughput_tokens_per_s", "quality_delta", "layers_per_token", "peak_memory_bytes"]


def _row(q: WhatIf, summary: dict) -> tuple:
    return (q.strategy, q.rate, q.replicas, summary["tpot_s"]["p99"], summary["tpot_s"]["mean"],
            summary["ttft_s"]["p99"], summary["throughput_tokens_per_s"], summary["quality_delta"],
            summary["layers_per_token"], summary["peak_memory_bytes"])


def load_sweep(cost: CostModel, trace: ExitTrace, base: WhatIf, strategies: list[str],
               rates: list[float], policy: ExitPolicy | None = None) -> pd.DataFrame:
    """One simulation per (strategy, rate), everything else as in `base`."""
    if any(r <= 0 for r in rates):
        raise ValueError(f"rates must be > 0 requests/s, got {rates}")
    rows = []
    for name in strategies:
        for rate in rates:
            q = base.model_copy(update={"strategy": name, "rate": float(rate)})
            rows.append(_row(q, answer(cost, trace, q, policy, depths=False).summary))
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


@dataclass
class Limits:
    """Service limits: p99 TPOT and TTFT in seconds (None: no limit), quality delta budget."""

    tpot_p99_s: float | None = None
    ttft_p99_s: float | None = None
    quality_budget: float | None = None

    def misses(self, summary: dict) -> list[str]:
        out = []
        if self.tpot_p99_s is not None and summary["tpot_s"]["p99"] > self.tpot_p99_s:
            out.append(f"TPOT p99 {summary['tpot_s']['p99'] * 1e3:.1f} ms > {self.tpot_p99_s * 1e3:.1f} ms")
        if self.ttft_p99_s is not None and summary["ttft_s"]["p99"] > self.ttft_p99_s:
            out.append(f"TTFT p99 {summary['ttft_s']['p99'] * 1e3:.0f} ms > {self.ttft_p99_s * 1e3:.0f} ms")
        if self.quality_budget is not None and summary["quality_delta"] > self.quality_budget:
            out.append(f"quality delta {summary['quality_delta']:.2%} > budget {self.quality_budget:.2%}")
        return out


@dataclass
class Sizing:
    """The fewest replicas meeting the limits (None if none up to the cap), its summary, and
    every probe made (replicas, misses)."""

    strategy: str
    replicas: int | None
    summary: dict | None
    probes: list[tuple[int, list[str]]] = field(default_factory=list)
    reason: str = ""


def replicas_needed(cost: CostModel, trace: ExitTrace, base: WhatIf, limits: Limits,
                    max_replicas: int = 64, policy: ExitPolicy | None = None) -> Sizing:
    """The fewest replicas (1..max_replicas) serving `base.rate` requests/s within `limits`.

    Latency falls as replicas are added at a fixed load, so the search doubles until the limits
    are met, then bisects. The quality delta does not depend on replicas: a strategy over the
    budget at one replica is reported as infeasible without further probes.
    """
    if max_replicas < 1:
        raise ValueError(f"max_replicas must be >= 1, got {max_replicas}")
    sizing = Sizing(base.strategy, None, None)
    cache: dict[int, dict] = {}

    def probe(n: int) -> list[str]:
        if n not in cache:
            cache[n] = answer(cost, trace, base.model_copy(update={"replicas": n}), policy,
                              depths=False).summary
            sizing.probes.append((n, limits.misses(cache[n])))
        return limits.misses(cache[n])

    first = probe(1)
    if limits.quality_budget is not None and cache[1]["quality_delta"] > limits.quality_budget:
        sizing.reason = first[-1]
        return sizing
    low, high = 0, 1  # low fails (0 trivially), high is being tried
    while probe(high):
        low = high
        if high >= max_replicas:
            sizing.reason = f"limits not met with {max_replicas} replicas: {'; '.join(probe(high))}"
            return sizing
        high = min(2 * high, max_replicas)
    while high - low > 1:
        mid = (low + high) // 2
        if probe(mid):
            low = mid
        else:
            high = mid
    sizing.replicas, sizing.summary = high, cache[high]
    return sizing


PLAN_THRESHOLDS = (0.8, 0.95)  # max_prob thresholds tried besides the calibrated policy
FIXED_DEPTH = {"full": "none (full depth)", "selfspec": "lossless (draft, then verify)",
               "monotone": "scheduled depth (no confidence policy)"}  # no exit policy to vary


@dataclass
class Candidate:
    """One (strategy, policy) sized for the load."""

    strategy: str
    policy: str
    replicas: int | None
    tpot_p99_s: float | None
    ttft_p99_s: float | None
    quality_delta: float | None
    throughput_tokens_per_s: float | None
    reason: str = ""
    question: dict = field(default_factory=dict)   # the WhatIf simulated (replicas excluded)
    exit_policy: dict | None = None                 # the ExitPolicy used, if not the question's


def plan(cost: CostModel, trace: ExitTrace, base: WhatIf, limits: Limits,
         strategies: tuple[str, ...], max_replicas: int = 256,
         thresholds: tuple[float, ...] = PLAN_THRESHOLDS) -> dict:
    """For each strategy, the fewest replicas meeting `limits` at `base.rate` under each
    candidate policy (calibrated to the quality budget if one is given, and one max_prob
    threshold each of `thresholds`; full, selfspec and monotone take none: see FIXED_DEPTH):
    the best per strategy, the best overall (fewest replicas, then lowest quality delta, then
    lowest TPOT p99) and the Pareto front of quality delta, TPOT p99 and replicas (cost) over
    the feasible candidates."""
    from eesim.policy.calibrate import calibrate

    policies: list[tuple[str, ExitPolicy | None, WhatIf]] = []
    if limits.quality_budget is not None and trace.kind == "full":
        calibrated, _ = calibrate(trace, limits.quality_budget)
        policies.append((f"calibrated to {limits.quality_budget:g}", calibrated, base))
    for t in thresholds:
        policies.append((f"max_prob >= {t:g}", None,
                         base.model_copy(update={"signal": "max_prob", "threshold": t})))
    candidates: list[Candidate] = []
    for name in strategies:
        tried = [(FIXED_DEPTH[name], None, base)] if name in FIXED_DEPTH else policies
        for label, policy, q in tried:
            s = replicas_needed(cost, trace, q.model_copy(update={"strategy": name}), limits,
                                max_replicas, policy)
            m = s.summary or {}
            candidates.append(Candidate(
                name, label, s.replicas, m.get("tpot_s", {}).get("p99"), m.get("ttft_s", {}).get("p99"),
                m.get("quality_delta"), m.get("throughput_tokens_per_s"), s.reason,
                q.model_copy(update={"strategy": name}).model_dump(),
                policy.model_dump(mode="json", exclude={"calibration"}) if policy else None))
    feasible = [c for c in candidates if c.replicas is not None]

    def rank(c: Candidate) -> tuple:
        return (c.replicas, c.quality_delta, c.tpot_p99_s)

    per_strategy = {}
    for name in strategies:
        mine = [c for c in feasible if c.strategy == name]
        per_strategy[name] = (min(mine, key=rank).__dict__ if mine else
                              {"strategy": name, "replicas": None,
                               "reason": "; ".join(c.reason for c in candidates if c.strategy == name)})
    best = min(feasible, key=rank) if feasible else None
    return {"qps": base.rate, "limits": limits.__dict__, "profile": cost.label,
            "strategies": per_strategy, "best": best.__dict__ if best else None,
            "pareto": [c.__dict__ for c in pareto(feasible)],
            "candidates": [c.__dict__ for c in candidates]}


def pareto(candidates: list[Candidate]) -> list[Candidate]:
    """Candidates no other one beats on quality delta, TPOT p99 and replicas at once."""
    def key(c: Candidate) -> tuple:
        return (c.quality_delta, c.tpot_p99_s, c.replicas)

    front = [c for c in candidates
             if not any(all(a <= b for a, b in zip(key(o), key(c), strict=True)) and key(o) != key(c)
                        for o in candidates)]
    return sorted(front, key=key)
