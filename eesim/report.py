"""The design-review report: one self-contained HTML file (plotly.js inlined, no network) with
the question asked, its assumptions, every strategy's prediction, the trace's evidence, the
validation table if there is one, answers to the design-review questions, and the versions and
profile environment behind it all. `eesim report` and the dashboard's report page write it."""

from __future__ import annotations

import html
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import pandas as pd

import eesim
from eesim import figures
from eesim.costmodel import CostModel
from eesim.plan.strategies import STRATEGIES
from eesim.policy.policy import ExitPolicy
from eesim.trace import ExitTrace
from eesim.trace.analysis import acceptance_by_draft_layer, agreement_by_layer, exit_depths, tradeoff
from eesim.whatif import Answer, WhatIf, answer

SHADOW_RATE = 0.05  # the full-depth comparison stream the report prices


@dataclass
class Evidence:
    """Everything the report shows, computed once (the dashboard shows the same tables)."""

    question: WhatIf
    answers: dict[str, Answer]
    shadowed: Answer | None
    profile_label: str
    analytic: bool
    traces: dict[str, pd.DataFrame]
    validation: pd.DataFrame | None
    validation_summary: dict | None


def gather(cost: CostModel, trace: ExitTrace, q: WhatIf, strategies: tuple[str, ...] = STRATEGIES,
           policy: ExitPolicy | None = None, validation: pd.DataFrame | None = None,
           validation_summary: dict | None = None) -> Evidence:
    """Simulate the question under every strategy (and the chosen one with a shadow stream)
    and compute the trace's tables."""
    answers = {s: answer(cost, trace, q.model_copy(update={"strategy": s}), policy) for s in strategies}
    shadowed = None
    if q.strategy in ("compact", "sync", "regroup", "monotone") and q.threshold is not None:
        shadowed = answer(cost, trace, q.model_copy(update={"shadow_rate": SHADOW_RATE}), policy)
    tables = {}
    if trace.kind == "full":
        tables = {"agreement": agreement_by_layer(trace),
                  "tradeoff": tradeoff(trace, q.signal if q.signal != "static" else "max_prob"),
                  "acceptance": acceptance_by_draft_layer(trace, q.drafts),
                  "depth_by_task": exit_depths(trace, policy or q.policy(trace), "task"),
                  "depth_by_token_class": exit_depths(trace, policy or q.policy(trace), "token_class")}
    return Evidence(q, answers, shadowed, cost.label, cost.meta.kind == "analytic", tables,
                    validation, validation_summary)


def strategy_table(ev: Evidence) -> pd.DataFrame:
    """One row per strategy: latency, throughput, memory, work, quality, speedup and bound."""
    rows = []
    full = ev.answers.get("full")
    for name, a in ev.answers.items():
        s = a.summary
        f = full.summary if full else None
        rows.append({
            "strategy": name, "TTFT mean ms": s["ttft_s"]["mean"] * 1e3,
            "TTFT p99 ms": s["ttft_s"]["p99"] * 1e3,
            "TPOT mean ms": s["tpot_s"]["mean"] * 1e3, "TPOT p99 ms": s["tpot_s"]["p99"] * 1e3,
            "tokens/s": s["throughput_tokens_per_s"], "peak memory GiB": s["peak_memory_bytes"] / 2**30,
            "layers/token": s["layers_per_token"], "quality delta": s["quality_delta"],
            "TPOT speedup vs full": f["tpot_s"]["mean"] / s["tpot_s"]["mean"] if f else np.nan,
            "layer-savings bound": f["layers_per_token"] / s["layers_per_token"] if f else np.nan,
        })
    return pd.DataFrame(rows).set_index("strategy")


def _versions() -> dict[str, str]:
    out = {"eesim": eesim.__version__, "python": platform.python_version()}
    for pkg in ("torch", "numpy", "pandas", "simpy", "plotly", "streamlit", "pydantic"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def review(ev: Evidence, policy: ExitPolicy | None) -> list[tuple[str, str]]:
    """The article's design-review questions, each answered from the evidence."""
    q = ev.question
    table = strategy_table(ev)
    chosen = table.loc[q.strategy] if q.strategy in table.index else None
    forbidden = (policy.forbidden_classes if policy is not None else []) or []
    out = [("Which token classes are forbidden from early exit?",
            ", ".join(forbidden) if forbidden else "none in this policy; the exit depth by token "
            "class below shows which classes leave early")]
    out.append(("How is confidence calibrated after a model update?",
                "policies carry the model's sha256 and are refused on another model; recalibrate "
                "with `eesim calibrate --trace NEW --budget B`, check drift with "
                "`eesim calibrate --evaluate P.json --trace NEW`"))
    if chosen is not None:
        bound, got = chosen["layer-savings bound"], chosen["TPOT speedup vs full"]
        out.append(("Does divergence erase the saved layer compute?",
                    f"{q.strategy}: layer-savings bound {bound:.2f}x, predicted TPOT speedup "
                    f"{got:.2f}x over full" + (" (the bound is not reached: exit checks, syncs, KV "
                                                "fill and divergence cost the rest)" if got < bound else "")))
    if ev.shadowed is not None:
        base, shadow = ev.answers[q.strategy].summary, ev.shadowed.summary
        out.append(("What full-depth shadow rate is affordable?",
                    f"a {SHADOW_RATE:.0%} shadow stream moves mean TPOT from "
                    f"{base['tpot_s']['mean'] * 1e3:.2f} to {shadow['tpot_s']['mean'] * 1e3:.2f} ms and "
                    f"layers per token from {base['layers_per_token']:.2f} to "
                    f"{shadow['layers_per_token']:.2f}"))
    out.append(("Which product metric defines acceptable quality loss?",
                "here the quality delta (emitted tokens differing from full depth, teacher-forced "
                "replay); the calibration budget and any product metric (e.g. JSON validity from "
                "`eesim calibrate`) belong to the product owner"))
    return out


def render(ev: Evidence, policy: ExitPolicy | None = None, profile_env: dict | None = None) -> str:
    """The report as one HTML document."""
    q = ev.question
    parts: list[str] = []
    first = [True]

    def fig(f) -> None:
        parts.append(f.to_html(full_html=False, include_plotlyjs="inline" if first[0] else False,
                               default_width="100%", default_height="420px"))
        first[0] = False

    def table(frame: pd.DataFrame, fmt: str = "{:.3g}") -> None:
        parts.append(frame.to_html(float_format=lambda v: fmt.format(v), border=0, classes="t"))

    esc = html.escape
    parts.append(f"<h1>eesim design review</h1><p>{esc(datetime.now(UTC).isoformat(timespec='seconds'))} "
                 f"&middot; eesim {esc(eesim.__version__)}</p>")
    if ev.analytic:
        parts.append("<p class='warn'>The profile is ANALYTIC (datasheet roofline), not measured: "
                     "treat absolute times as estimates.</p>")
    parts.append("<h2>Question and assumptions</h2>")
    table(pd.DataFrame({"value": [str(v) for v in q.model_dump().values()]}, index=list(q.model_dump())))
    said = policy.model_dump_json(exclude={"calibration", "risk_model"}) if policy \
        else "one threshold for every task, as above"
    parts.append(f"<ul><li>profile: {esc(ev.profile_label)}</li><li>policy: {esc(said)}</li>"
                 "<li>exits are replayed from the trace (teacher-forced: each position keeps the "
                 "full-depth context); Poisson arrivals; greedy decoding</li></ul>")
    parts.append("<h2>Every strategy on this question</h2>")
    table(strategy_table(ev))
    fig(figures.tpot_cdf({k: a.requests for k, a in ev.answers.items()}))
    chosen = ev.answers.get(q.strategy)
    if chosen is not None:
        fig(figures.depth_histogram(chosen.exit_layers, chosen.trace_layers,
                                    "Exit depth under the policy (trace layers)"))
    if ev.traces:
        parts.append("<h2>What the trace says</h2>")
        fig(figures.agreement(ev.traces["agreement"]))
        fig(figures.tradeoff(ev.traces["tradeoff"]))
        fig(figures.depth_by_group(ev.traces["depth_by_task"], "Exit depth by task"))
        fig(figures.depth_by_group(ev.traces["depth_by_token_class"], "Exit depth by token class"))
        fig(figures.acceptance(ev.traces["acceptance"]))
    if ev.validation is not None:
        from eesim.validate import speedup_table

        parts.append("<h2>Validation: predicted against measured</h2>")
        if ev.validation_summary:
            s = ev.validation_summary
            label = s.get("profile", {}).get("label")
            parts.append(f"<p>{esc(str(s.get('grid')))} grid, {s.get('scenarios')} scenarios, "
                         f"{esc(str(s.get('date')))}, profile {esc(str(label))}</p>")
        table(figures.error_table(ev.validation), "{:.1%}")
        fig(figures.predicted_vs_measured(ev.validation, "tpot_mean"))
        fig(figures.speedup(speedup_table(ev.validation)))
    parts.append("<h2>Design-review questions</h2><dl>")
    for question, reply in review(ev, policy):
        parts.append(f"<dt>{esc(question)}</dt><dd>{esc(reply)}</dd>")
    parts.append("</dl><h2>Versions and environment</h2>")
    table(pd.DataFrame({"version": _versions()}))
    if profile_env:
        table(pd.DataFrame({"value": {k: str(v) for k, v in profile_env.items()}}))
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table.t{border-collapse:collapse;font-size:13px}table.t td,table.t th{padding:3px 8px;"
             "border-bottom:1px solid #ddd;text-align:right}.warn{background:#fff3cd;padding:.5em}"
             "dt{font-weight:600;margin-top:.6em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>eesim design review</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
