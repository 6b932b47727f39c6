"""Traces: what the recorded exits say before any serving question."""

import streamlit as st
import ui

from eesim import figures
from eesim.trace.analysis import acceptance_by_draft_layer, agreement_by_layer, exit_depths, tradeoff
from eesim.whatif import WhatIf

st.title("Traces")
path = ui.choose_trace()
trace = ui.friendly(ui.load_trace, path)
if trace.kind != "full":
    st.error(f"{path}: a '{trace.kind}' trace records decisions, not every exit's signals; "
             "choose a full trace for this page")
    st.stop()
meta = trace.meta
st.caption(f"{meta.model_name or 'model'} · {meta.n_layers} layers · {len(trace.tokens()):,} tokens · "
           f"requests by task {trace.requests_by_task()} · decoding {meta.decoding}")
signal = st.sidebar.selectbox("Signal (trade-off curve)", ("max_prob", "margin", "entropy", "static"),
                              key="t-signal")
budget = st.sidebar.slider("Quality budget", 0.0, 0.2, 0.01, 0.005, key="t-budget")
drafts = st.sidebar.slider("Drafts k (self-speculation)", 1, 8, 4, key="t-drafts")
oracle = st.sidebar.toggle("Exit depth: oracle (first layer agreeing with the final one)", True,
                           key="t-oracle")


@st.cache_data(show_spinner="replaying…")
def tables(path: str, signal: str, drafts: int):
    t = ui.load_trace(path)
    return agreement_by_layer(t), tradeoff(t, signal), acceptance_by_draft_layer(t, drafts)


agree, curve, accept = tables(path, signal, drafts)
policy = None
if not oracle:
    with st.sidebar:
        rule, threshold = ui.exit_rule(meta.n_layers, "t-policy")
    policy = WhatIf(signal=rule, threshold=threshold).policy(trace)
tab1, tab2, tab3, tab4 = st.tabs(["Exit depth", "Agreement", "Quality vs savings", "Self-speculation"])
with tab1:
    left, right = st.columns(2)
    left.plotly_chart(figures.depth_by_group(exit_depths(trace, policy, "task"), "Exit depth by task"),
                      key="by-task")
    right.plotly_chart(figures.depth_by_group(exit_depths(trace, policy, "token_class"),
                                              "Exit depth by token class"), key="by-class")
with tab2:
    st.plotly_chart(figures.agreement(agree), key="agreement")
with tab3:
    st.plotly_chart(figures.tradeoff(curve, budget), key="tradeoff")
    within = curve[curve["quality_delta"] <= budget]
    if len(within):
        best = within.loc[within["layers_saved"].idxmax()]
        st.write(f"Within a {budget:.1%} budget, one {signal} threshold for every task saves at most "
                 f"{best['layers_saved']:.1%} of layers (threshold {best['threshold']:.3g}); "
                 "`eesim calibrate` sets one per task.")
with tab4:
    st.plotly_chart(figures.acceptance(accept), key="acceptance")
    st.dataframe(accept)
