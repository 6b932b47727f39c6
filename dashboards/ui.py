"""What every page shares: the committed files, cached loaders, validated uploads and the
what-if question's widgets."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from eesim.costmodel import CostModel
from eesim.io import read_parquet_with_meta
from eesim.paths import committed
from eesim.plan.strategies import STRATEGIES
from eesim.profile.format import ProfileError, read_profile
from eesim.trace import ExitTrace, TraceError, read_trace
from eesim.whatif import WhatIf, threshold_range

MAX_UPLOAD_BYTES = 50 * 2**20  # a trace or profile larger than this is refused on the page
SIGNALS = ("max_prob", "margin", "entropy", "static")
UPLOADS = Path(tempfile.gettempdir()) / "eesim-uploads"


DEMO = Path("eesim-out")  # `eesim demo`'s outputs, relative to where the dashboard was started


def committed_profiles() -> list[Path]:
    """The committed profiles, then the quick profile of an `eesim demo` run here, if any."""
    found = sorted(p for p in committed("profiles").glob("*/*.parquet") if p.name != "validation.parquet")
    return found + [p.resolve() for p in [DEMO / "profile-quick.parquet"] if p.exists()]


def validation_tables() -> dict[str, Path]:
    """Validation tables by label: each committed device folder's, then a demo run's here."""
    tables = {f"committed: {p.parent.name}": p
              for p in sorted(committed("profiles").glob("*/validation.parquet"))}
    demo = DEMO / "validation" / "validation.parquet"
    if demo.exists():
        tables[f"this machine's demo run: {demo.parent}"] = demo.resolve()
    return tables


def committed_traces() -> list[Path]:
    return sorted(committed("traces").glob("*.parquet"))


@st.cache_resource(show_spinner=False)
def load_trace(path: str) -> ExitTrace:
    """One shared trace per file (read-only here): no copy of its tokens on every rerun."""
    return read_trace(path)


@st.cache_resource(show_spinner=False)
def load_cost(path: str) -> CostModel:
    return CostModel(read_profile(path))


@st.cache_data(show_spinner=False)
def load_validation(path: str) -> tuple[pd.DataFrame, dict]:
    return read_parquet_with_meta(Path(path), ValueError, "validation table")


def profile_label(path: Path) -> str:
    """'kind · model on device (folder/file)': measured and analytic profiles say which."""
    try:
        meta = load_cost(str(path)).meta
    except ProfileError as exc:
        return f"{path.name} (unreadable: {exc})"
    kind = "ANALYTIC" if meta.kind == "analytic" else "measured"
    return f"{kind} · {meta.model_name} on {meta.device} ({path.parent.name}/{path.name})"


def check_upload(name: str, data: bytes, kind: str, folder: Path = UPLOADS) -> tuple[str | None, str | None]:
    """(saved path, None) for a valid trace or profile upload, else (None, the error to show):
    size-limited, written to a temporary file then renamed, read by eesim's own validating
    readers (Parquet only: nothing is unpickled)."""
    if len(data) > MAX_UPLOAD_BYTES:
        return None, f"{name}: {len(data) / 2**20:.1f} MiB is above the {MAX_UPLOAD_BYTES >> 20} MiB limit"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}-{Path(name).name}"
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    try:
        (read_trace if kind == "trace" else read_profile)(path)
    except (TraceError, ProfileError, ValueError, OSError) as exc:
        path.unlink(missing_ok=True)
        return None, str(exc).replace(str(path), name)
    return str(path), None


def _upload(kind: str, key: str) -> str | None:
    """A validated uploaded trace or profile; None when nothing (or nothing valid) was
    uploaded. A bad file shows its error here, never a stack trace."""
    file = st.file_uploader(f"or upload a {kind} (Parquet, at most {MAX_UPLOAD_BYTES >> 20} MiB)",
                            type=["parquet"], key=key)
    if file is None:
        return None
    path, error = check_upload(file.name, file.getvalue(), kind)
    if error:
        st.error(error)
    return path


def choose_profile(key: str = "profile", container=st.sidebar) -> str:
    with container:
        paths = committed_profiles()
        default = next((i for i, p in enumerate(paths) if p.name == "ref.parquet"), 0)
        chosen = st.selectbox("Profile", paths, index=default, format_func=profile_label, key=key)
        uploaded = _upload("profile", f"{key}-upload")
    return uploaded or str(chosen)


def choose_trace(key: str = "trace", container=st.sidebar) -> str:
    with container:
        paths = committed_traces()
        default = next((i for i, p in enumerate(paths) if p.name == "reference-greedy.parquet"), 0)
        chosen = st.selectbox("Trace", paths, index=default, format_func=lambda p: p.name, key=key)
        uploaded = _upload("trace", f"{key}-upload")
    return uploaded or str(chosen)


def inputs() -> tuple[str, str, ExitTrace]:
    """The sidebar's profile and trace: (profile path, trace path, the trace)."""
    profile, trace_path = choose_profile(), choose_trace()
    return profile, trace_path, friendly(load_trace, trace_path)


def exit_rule(n_layers: int, prefix: str) -> tuple[str, float]:
    """The exit signal and its threshold (one for every task)."""
    signal = st.selectbox("Exit signal", SIGNALS, key=f"{prefix}-signal")
    lo, hi = threshold_range(signal, n_layers)
    if signal == "static":
        return signal, float(st.slider("Exit layer (static)", int(lo), int(hi), max(1, n_layers // 2),
                                       key=f"{prefix}-threshold-static"))
    default = {"max_prob": 0.9, "margin": 0.8, "entropy": 0.5}[signal]
    return signal, st.slider("Threshold", lo, hi, default, step=(hi - lo) / 100,
                             key=f"{prefix}-threshold-{signal}")


def question(trace: ExitTrace, container=st.sidebar, strategy: bool = True, prefix: str = "q",
             requests: int = 1000) -> WhatIf:
    """The what-if question's widgets (policy, strategy and its parameters, batch, load)."""
    n = trace.meta.n_layers
    with container:
        signal, threshold = exit_rule(n, prefix)
        name = st.selectbox("Strategy", STRATEGIES, index=STRATEGIES.index("compact"),
                            key=f"{prefix}-strategy") if strategy else "compact"
        draft_layer, drafts = 4, 4
        if name == "selfspec":
            draft_layer = st.slider("Draft layer E", 1, max(1, n - 1), min(4, n - 1), key=f"{prefix}-E")
            drafts = st.slider("Drafts k", 1, 8, 4, key=f"{prefix}-k")
        max_batch = st.select_slider("Batch cap", [1, 2, 4, 8, 16, 32, 64, 128], 16, key=f"{prefix}-batch")
        rate = st.number_input("Load (requests/s)", 0.1, 10_000.0, 5.0, key=f"{prefix}-rate")
        replicas = st.number_input("Replicas", 1, 256, 1, key=f"{prefix}-replicas")
        requests = st.number_input("Requests", 10, 20_000, requests, step=100, key=f"{prefix}-requests")
        output_len = st.number_input("Output tokens", 2, 4096, 128, key=f"{prefix}-output")
        shadow = st.slider("Full-depth shadow rate", 0.0, 0.5, 0.0, 0.01, key=f"{prefix}-shadow")
    return WhatIf(strategy=name, draft_layer=draft_layer, drafts=drafts, signal=signal,
                  threshold=threshold, max_batch=max_batch, rate=rate, replicas=int(replicas),
                  requests=int(requests), output_len=int(output_len), shadow_rate=shadow)


@st.cache_data(show_spinner="simulating…", max_entries=64)
def what_if(profile: str, trace: str, q: WhatIf):
    """The question's answer (eesim.whatif.answer), cached per profile, trace and question."""
    from eesim.whatif import answer

    return answer(load_cost(profile), load_trace(trace), q)


def friendly(fn, *args, **kwargs):
    """Run `fn`; a user error (bad combination, foreign profile) is shown, not raised."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TraceError, ProfileError) as exc:
        st.error(str(exc))
        st.stop()
