"""eesim dashboard: `eesim dashboard [--port P]` (or `streamlit run dashboards/app.py`).

One file per page under pages/; the figures come from eesim.figures, the numbers from eesim's
own functions (eesim.whatif, eesim.capacity, eesim.trace.analysis, eesim.report).
"""

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent))  # pages import ui.py

st.set_page_config(page_title="eesim", page_icon=":material/call_split:", layout="wide")
PAGES = [
    st.Page("pages/what_if.py", title="What-if", icon=":material/tune:", default=True),
    st.Page("pages/validation.py", title="Validation", icon=":material/fact_check:"),
    st.Page("pages/traces.py", title="Traces", icon=":material/stacked_line_chart:"),
    st.Page("pages/capacity.py", title="Capacity", icon=":material/dns:"),
    st.Page("pages/report.py", title="Report", icon=":material/description:"),
]
st.navigation(PAGES).run()
