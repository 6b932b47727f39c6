"""`eesim dashboard` (the Streamlit app) and `eesim report` (its design-review report as a file)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from eesim.cli.common import app, console, fail, flag, user_errors
from eesim.paths import committed
from eesim.whatif import WhatIf

APP = committed("dashboards", "app.py")
MAX_UPLOAD_MB = 50


@app.command()
def dashboard(port: int = typer.Option(8501, min=1, max=65535, help="Port on 127.0.0.1."),
              headless: bool = typer.Option(True, help="Do not open a browser.")) -> None:
    """Start the Streamlit dashboard bound to 127.0.0.1 (what-if, validation, traces, capacity,
    report)."""
    if not APP.exists():
        fail(f"{APP}: the dashboard ships with the repository (pip install -e . from a clone)")
    console.print(f"eesim dashboard on http://127.0.0.1:{port}", highlight=False)
    sys.stdout.flush()
    sys.stderr.flush()
    # the process becomes Streamlit's (no child left behind): one signal stops the server
    os.execv(sys.executable, [
        sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", "127.0.0.1",
        "--server.port", str(port), "--server.headless", str(headless).lower(),
        "--server.maxUploadSize", str(MAX_UPLOAD_MB), "--browser.gatherUsageStats", "false"])


@app.command()
def report(
    profile_file: Path = typer.Option(None, "--profile", help="Profile (measured or analytic; "
                                                              "default: profiles/cpu/ref.parquet)."),
    trace_file: Path = typer.Option(None, "--trace", help="A full exit trace (default: the "
                                                          "committed reference trace)."),
    policy_file: Path = typer.Option(None, "--policy", help="Exit policy JSON (default: --signal "
                                                            "and --threshold for every task)."),
    strategy: str = flag(WhatIf, "strategy"),
    signal: str = flag(WhatIf, "signal"),
    threshold: float = flag(WhatIf, "threshold"),
    draft_layer: int = flag(WhatIf, "draft_layer"),
    drafts: int = flag(WhatIf, "drafts"),
    max_batch: int = flag(WhatIf, "max_batch"),
    rate: float = flag(WhatIf, "rate"),
    replicas: int = flag(WhatIf, "replicas"),
    requests: int = flag(WhatIf, "requests"),
    output_len: int = flag(WhatIf, "output_len"),
    validation: Path = typer.Option(None, help="validation.parquet to include (default: the "
                                               "profile's device folder's, if any)."),
    out: Path = typer.Option(Path("eesim-report.html"), help="HTML file to write."),
) -> None:
    """Write the self-contained HTML design-review report (the dashboard's report page)."""
    from eesim.costmodel import CostModel
    from eesim.io import read_parquet_with_meta, write_text_atomic
    from eesim.paths import committed
    from eesim.policy.policy import load_policy
    from eesim.report import gather, render
    from eesim.trace import REFERENCE_TRACE, read_trace

    profile_file = profile_file or committed("profiles", "cpu", "ref.parquet")
    trace_file = trace_file or REFERENCE_TRACE
    try:
        q = WhatIf(strategy=strategy, signal=signal, threshold=threshold, draft_layer=draft_layer,
                   drafts=drafts, max_batch=max_batch, rate=rate, replicas=replicas,
                   requests=requests, output_len=output_len)
        cost = CostModel.load(profile_file)
        trace = read_trace(trace_file)
        policy = load_policy(policy_file) if policy_file else None
        if policy is not None:
            policy.check_model(trace.meta.model_sha256, f"trace {trace_file}")
        validation = validation or committed("profiles", cost.meta.device_type, "validation.parquet")
        table, summary = read_parquet_with_meta(validation, ValueError, "validation table") \
            if validation.exists() else (None, None)
        with console.status("simulating every strategy"):
            html = render(gather(cost, trace, q, policy=policy, validation=table,
                                 validation_summary=summary), policy, cost.meta.env)
        write_text_atomic(out, html)
    except user_errors() as exc:
        fail(exc)
    console.print(f"wrote {out} ({len(html) / 2**20:.1f} MiB)", highlight=False)
