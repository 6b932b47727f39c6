"""What-if: one serving configuration predicted, beside the full-depth baseline."""

import streamlit as st
import ui

from eesim import figures

st.title("What-if")
st.caption("Predicted by the SimPy simulator from a profile and a trace: exits replayed under the "
           "policy, priced step by step. Change anything on the left; the answer follows.")
profile, trace_path, trace = ui.inputs()
q = ui.friendly(ui.question, trace)
cost = ui.load_cost(profile)
if cost.meta.kind == "analytic":
    st.warning(f"{cost.label}: an ANALYTIC profile (datasheet roofline), not a measurement.")
got = ui.friendly(ui.what_if, profile, trace_path, q)
base = ui.friendly(ui.what_if, profile, trace_path, q.model_copy(update={"strategy": "full",
                                                                          "threshold": None}))
s, b = got.summary, base.summary
if s.get("depth_mapped_from"):
    st.info(f"The trace has {s['depth_mapped_from']} layers, the profile's model "
            f"{cost.meta.model.n_layers}: exits mapped by relative depth.")


def seconds(value: float) -> str:
    return f"{value:.2f} s" if value >= 1 else f"{value * 1e3:.1f} ms"


def versus(key: str, stat: str | None = "mean") -> str:
    now, then = (x[key][stat] if stat else x[key] for x in (s, b))
    return f"{now / then - 1:+.1%} vs full" if then else ""


top, bottom = st.columns(3), st.columns(3)
top[0].metric("TTFT mean", seconds(s["ttft_s"]["mean"]), versus("ttft_s"), delta_color="inverse")
top[1].metric("TPOT mean", seconds(s["tpot_s"]["mean"]), versus("tpot_s"), delta_color="inverse")
top[2].metric("Throughput", f"{s['throughput_tokens_per_s']:,.0f} tok/s",
              versus("throughput_tokens_per_s", None))
bottom[0].metric("Peak memory", f"{s['peak_memory_bytes'] / 2**30:.2f} GiB")
bottom[1].metric("Layers / token", f"{s['layers_per_token']:.2f}", versus("layers_per_token", None),
                 delta_color="inverse")
bottom[2].metric("Quality delta", f"{s['quality_delta']:.2%}")
left, right = st.columns(2)
left.plotly_chart(figures.tpot_cdf({f"{q.strategy} (this policy)": got.requests,
                                    "full (no exits)": base.requests}), key="tpot-cdf")
right.plotly_chart(figures.depth_histogram(got.exit_layers, got.trace_layers,
                                           "Exit depth under the policy (trace layers)"), key="depth")
with st.expander("Summary (JSON)"):
    st.json({k: v for k, v in s.items() if k != "strategy"}, expanded=False)
if s.get("extrapolated"):
    st.warning(f"The cost model extrapolated beyond the profile's grid: {s['extrapolated_points']}")
