"""Report: the self-contained HTML design-review report, to download (`eesim report` writes the
same from the command line)."""

import streamlit as st
import ui

from eesim import figures
from eesim.paths import committed
from eesim.report import gather, render, review, strategy_table

st.title("Design-review report")
st.caption("The question on the left, answered under every strategy, with the trace's evidence, "
           "the validation table, the design-review questions and the versions behind them: one "
           "HTML file with plotly inlined (it opens offline).")
profile, trace_path, trace = ui.inputs()
q = ui.friendly(ui.question, trace, prefix="r", requests=300)
cost = ui.load_cost(profile)
validation_file = committed("profiles", cost.meta.device_type, "validation.parquet")
with_validation = st.toggle("Include the validation table", validation_file.exists(),
                            disabled=not validation_file.exists())


@st.cache_data(show_spinner="building the report…")
def build(profile: str, trace: str, q, validation: str | None):
    table, summary = ui.load_validation(validation) if validation else (None, None)
    cost = ui.load_cost(profile)
    ev = gather(cost, ui.load_trace(trace), q, validation=table, validation_summary=summary)
    cdf = figures.tpot_cdf({k: a.requests for k, a in ev.answers.items()})
    return render(ev, profile_env=cost.meta.env), review(ev, None), strategy_table(ev), cdf


html, answers, table, cdf = ui.friendly(build, profile, trace_path, q,
                                        str(validation_file) if with_validation else None)
st.download_button("Download report (HTML)", html, file_name="eesim-report.html", mime="text/html")
st.write(f"{len(html) / 2**20:.1f} MiB · {html.count('plotly-graph-div')} figures")
left, right = st.columns([3, 2])
left.dataframe(table.style.format("{:.3g}"))
right.plotly_chart(cdf, key="report-cdf")
st.subheader("Design-review questions")
for asked, said in answers:
    st.markdown(f"**{asked}** {said}")
with st.expander("Preview the whole report"):
    st.components.v1.html(html, height=900, scrolling=True)
