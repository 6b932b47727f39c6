"""Capacity: latency and throughput against load per strategy, and replicas for a target load."""

import pandas as pd
import streamlit as st
import ui

from eesim import figures
from eesim.capacity import Limits, load_sweep, replicas_needed
from eesim.plan.strategies import STRATEGIES

st.title("Capacity")
st.caption("Each point is one simulation; the replica search doubles, then bisects, until the "
           "limits hold (eesim.capacity).")
profile, trace_path, trace = ui.inputs()
base = ui.friendly(ui.question, trace, st.sidebar, strategy=False, prefix="c", requests=300)
strategies = st.multiselect("Strategies", STRATEGIES, ["full", "compact", "selfspec"], key="c-strategies")
c1, c2, c3 = st.columns(3)
low = c1.number_input("Lowest load (requests/s)", 0.1, 10_000.0, 5.0)
high = c2.number_input("Highest load (requests/s)", 0.1, 10_000.0, 40.0)
points = c3.slider("Load points", 2, 12, 5, key="c-points")
if high <= low:
    st.error(f"Highest load {high} must be above the lowest {low}")
    st.stop()
rates = [float(r) for r in pd.Series(range(points)).map(lambda i: low + (high - low) * i / (points - 1))]


@st.cache_data(show_spinner="sweeping…")
def sweep(profile: str, trace: str, base, strategy: str, rates: tuple) -> pd.DataFrame:
    """One strategy's sweep (cached apart: adding or removing a strategy reruns no other)."""
    return load_sweep(ui.load_cost(profile), ui.load_trace(trace), base, [strategy], list(rates))


st.subheader("Load sweep")
t1, t2, t3, t4 = st.columns(4)
qps = t1.number_input("Target load (requests/s)", 0.1, 100_000.0, 60.0, key="c-qps")
tpot = t2.number_input("TPOT p99 limit (ms)", 0.1, 10_000.0, 60.0)
ttft = t3.number_input("TTFT p99 limit (ms)", 1.0, 600_000.0, 2000.0)
budget = t4.number_input("Quality budget", 0.0, 1.0, 0.02, step=0.005, format="%.3f")
if strategies:
    table = pd.concat([ui.friendly(sweep, profile, trace_path, base, name, tuple(rates))
                       for name in strategies], ignore_index=True)
    st.plotly_chart(figures.load_sweep(table, tpot / 1e3), key="sweep")
    with st.expander("Sweep table"):
        st.dataframe(table)


@st.cache_data(show_spinner="searching replicas…")
def sizing(profile: str, trace: str, base, strategy: str, qps: float, limits: tuple) -> dict:
    """One strategy's replica search (cached apart, like its sweep)."""
    s = replicas_needed(ui.load_cost(profile), ui.load_trace(trace),
                        base.model_copy(update={"strategy": strategy, "rate": qps}),
                        Limits(*limits), max_replicas=64)
    return {"strategy": strategy, "replicas": s.replicas,
            "TPOT p99 ms": s.summary["tpot_s"]["p99"] * 1e3 if s.summary else None,
            "TTFT p99 ms": s.summary["ttft_s"]["p99"] * 1e3 if s.summary else None,
            "quality delta": s.summary["quality_delta"] if s.summary else None,
            "probes": len(s.probes), "why not": s.reason}


st.subheader("Replicas for the target load")
if strategies:
    table = pd.DataFrame([ui.friendly(sizing, profile, trace_path, base, name, float(qps),
                                      (tpot / 1e3, ttft / 1e3, budget)) for name in strategies])
    st.plotly_chart(figures.replicas(table), key="replicas")
    st.dataframe(table)
    ok = table.dropna(subset=["replicas"])
    if len(ok):
        best = ok.sort_values(["replicas", "TPOT p99 ms"]).iloc[0]
        st.success(f"Fewest replicas: {best['strategy']} with {int(best['replicas'])}")
