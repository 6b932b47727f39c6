"""Report: the self-contained HTML design-review report, to download (`eesim report` writes the
same from the command line)."""

import streamlit as st
import ui

from eesim.report import gather, render, review
from eesim.validate import ROOT

st.title("Design-review report")
st.caption("The question on the left, answered under every strategy, with the trace's evidence, "
           "the validation table, the design-review questions and the versions behind them: one "
           "HTML file with plotly inlined (it opens offline).")
profile = ui.choose_profile()
trace_path = ui.choose_trace()
trace = ui.friendly(ui.load_trace, trace_path)
q = ui.friendly(ui.question, trace, prefix="r", requests=300)
cost = ui.load_cost(profile)
validation_file = ROOT / "profiles" / cost.meta.device_type / "validation.parquet"
with_validation = st.toggle("Include the validation table", validation_file.exists(),
                            disabled=not validation_file.exists())


@st.cache_data(show_spinner="building the report…")
def build(profile: str, trace: str, q, validation: str | None) -> tuple[str, list]:
    table, summary = ui.load_validation(validation) if validation else (None, None)
    cost = ui.load_cost(profile)
    ev = gather(cost, ui.load_trace(trace), q, validation=table, validation_summary=summary)
    return render(ev, profile_env=cost.meta.env), review(ev, None)


html, answers = ui.friendly(build, profile, trace_path, q,
                            str(validation_file) if with_validation else None)
st.download_button("Download report (HTML)", html, file_name="eesim-report.html", mime="text/html")
st.write(f"{len(html) / 2**20:.1f} MiB · {html.count('plotly-graph-div')} figures")
st.subheader("Design-review questions")
for asked, said in answers:
    st.markdown(f"**{asked}** {said}")
st.components.v1.html(html, height=900, scrolling=True)
