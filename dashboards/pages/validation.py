"""Validation: predicted against measured, per scenario, with the error table and speedups."""

import streamlit as st
import ui

from eesim import figures
from eesim.validate import speedup_table

st.title("Validation")
st.caption("Every scenario simulated (priced by a profile taken in the same run) and measured on "
           "the reference model with the same requests and exits (`eesim validate`).")
tables = ui.validation_tables()
if not tables:
    st.info("No validation table yet: run `eesim validate --grid quick`.")
    st.stop()
source = st.sidebar.selectbox("Validation run", list(tables), key="v-device")
table, summary = ui.friendly(ui.load_validation, str(tables[source]))
strategies = sorted(table["strategy"].unique())
chosen = st.sidebar.multiselect("Strategies", strategies, strategies, key="v-strategies")
metric = st.sidebar.selectbox("Metric", list(figures.METRIC_LABELS),
                              format_func=figures.METRIC_LABELS.get, key="v-metric")
batches = st.sidebar.multiselect("Batch caps", sorted(table["max_batch"].unique()),
                                 sorted(table["max_batch"].unique()), key="v-batches")
rows = table[table["strategy"].isin(chosen) & table["max_batch"].isin(batches)]
st.write(f"{summary.get('grid', '?')} grid · {len(rows)} of {len(table)} scenarios · "
         f"{summary.get('date', '')} · {summary.get('profile', {}).get('label', '')}")
if rows.empty:
    st.warning("No scenario matches these filters.")
    st.stop()
st.plotly_chart(figures.predicted_vs_measured(rows, metric), key="scatter")
st.subheader("Absolute relative error")
st.dataframe(figures.error_table(rows).style.format("{:.1%}"))
st.subheader("Realised speedup over full (closed loop)")
speed = speedup_table(rows)
if len(speed):
    st.plotly_chart(figures.speedup(speed), key="speedup")
    st.dataframe(speed.style.format({c: "{:.2f}" for c in speed.columns if c.startswith("speedup")}))
with st.expander("Every scenario"):
    st.dataframe(rows)
