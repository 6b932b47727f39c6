"""Plotly figure builders: tables in, figures out, no Streamlit. The dashboard's pages and the
design-review report draw with these, so a figure looks the same in both."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

METRIC_LABELS = {"tpot_mean": "mean TPOT", "tpot_p90": "p90 TPOT", "ttft_mean": "mean TTFT",
                 "throughput": "throughput", "peak_memory": "peak memory"}
METRIC_UNITS = {"tpot_mean": (1e3, "ms"), "tpot_p90": (1e3, "ms"), "ttft_mean": (1e3, "ms"),
                "throughput": (1.0, "tokens/s"), "peak_memory": (2**-20, "MiB")}


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, template="plotly_white",
                      margin={"l": 60, "r": 20, "t": 50, "b": 50}, legend_title_text="")
    return fig


def tpot_cdf(runs: dict[str, pd.DataFrame]) -> go.Figure:
    """Empirical CDF of per-request TPOT (ms), one line per labelled request table."""
    fig = go.Figure()
    for label, requests in runs.items():
        values = np.sort(requests["tpot_s"].dropna().to_numpy() * 1e3)
        if len(values):
            fig.add_trace(go.Scatter(x=values, y=np.arange(1, len(values) + 1) / len(values),
                                     mode="lines", name=label))
    return _layout(fig, "TPOT per request (CDF)", "TPOT (ms)", "share of requests")


def depth_histogram(exit_layers: np.ndarray, n_layers: int, title: str = "Exit depth") -> go.Figure:
    """Share of tokens leaving at each layer."""
    counts = np.bincount(np.asarray(exit_layers, int), minlength=n_layers + 1)[1:]
    share = counts / max(counts.sum(), 1)
    fig = go.Figure(go.Bar(x=np.arange(1, n_layers + 1), y=share, name="tokens"))
    return _layout(fig, title, "exit layer", "share of tokens")


def depth_by_group(depths: pd.DataFrame, title: str) -> go.Figure:
    """Stacked exit-depth shares per group (eesim.trace.analysis.exit_depths)."""
    fig = go.Figure()
    for layer, part in depths.groupby("layer"):
        fig.add_trace(go.Bar(x=part["group"], y=part["share"], name=f"layer {layer}"))
    fig.update_layout(barmode="stack")
    return _layout(fig, title, "", "share of tokens")


def agreement(table: pd.DataFrame) -> go.Figure:
    """Per-layer agreement with the final layer, one line per task."""
    fig = go.Figure()
    for task, part in table.groupby("task", sort=False):
        fig.add_trace(go.Scatter(x=part["layer"], y=part["agreement"], mode="lines+markers",
                                 name=task))
    return _layout(fig, "Agreement of each exit with the final layer", "exit layer",
                   "share of tokens with the final layer's top-1")


def tradeoff(curve: pd.DataFrame, budget: float | None = None) -> go.Figure:
    """Quality delta against layers saved as the threshold moves (threshold on hover)."""
    fig = go.Figure(go.Scatter(x=curve["layers_saved"], y=curve["quality_delta"], mode="lines+markers",
                               text=[f"threshold {t:.3g}" for t in curve["threshold"]],
                               name=str(curve["signal"].iloc[0]) if len(curve) else ""))
    if budget is not None:
        fig.add_hline(y=budget, line_dash="dot", annotation_text=f"budget {budget:.1%}")
    fig.update_xaxes(tickformat=".0%")
    fig.update_yaxes(tickformat=".1%")
    return _layout(fig, "Quality against layer savings", "layers saved", "quality delta")


def acceptance(table: pd.DataFrame) -> go.Figure:
    """Self-speculative acceptance rate and tokens per step by draft layer."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=table["draft_layer"], y=table["acceptance_rate"], name="acceptance rate"))
    fig.add_trace(go.Scatter(x=table["draft_layer"], y=table["tokens_per_step"], mode="lines+markers",
                             name="tokens per step"), secondary_y=True)
    fig.update_yaxes(title_text="tokens per step", secondary_y=True)
    return _layout(fig, "Self-speculation by draft layer", "draft layer", "acceptance rate")


def predicted_vs_measured(table: pd.DataFrame, metric: str) -> go.Figure:
    """Validation scatter of one metric, coloured by strategy, with the y = x line."""
    pred, meas = f"{metric}_predicted", f"{metric}_measured"
    rows = table.dropna(subset=[pred, meas])
    scale, unit = METRIC_UNITS.get(metric, (1.0, ""))
    fig = go.Figure()
    for strategy, part in rows.groupby("strategy"):
        fig.add_trace(go.Scatter(x=part[meas] * scale, y=part[pred] * scale, mode="markers",
                                 name=strategy, text=part["scenario"]))
    if len(rows):
        lo = float(min(rows[pred].min(), rows[meas].min())) * scale
        hi = float(max(rows[pred].max(), rows[meas].max())) * scale
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x",
                                 line={"dash": "dash", "color": "grey"}))
    label = METRIC_LABELS.get(metric, metric)
    return _layout(fig, f"Predicted against measured: {label}", f"measured {label} ({unit})",
                   f"predicted {label} ({unit})")


def error_table(table: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Median and p90 absolute relative error per strategy and metric, and over all rows."""
    metrics = metrics or list(METRIC_LABELS)

    def stats(part: pd.DataFrame) -> dict:
        out = {}
        for m in metrics:
            out[f"{m} median"] = part[f"{m}_abs_error"].median()
            out[f"{m} p90"] = part[f"{m}_abs_error"].quantile(0.9)
        return out

    rows = {str(s): stats(part) for s, part in table.groupby("strategy")}
    rows["all"] = stats(table)
    return pd.DataFrame.from_dict(rows, orient="index")


def speedup(table: pd.DataFrame) -> go.Figure:
    """Realised speedup over full, measured and predicted, beside the layer-savings bound, by
    strategy and batch cap (eesim.validate.speedup_table)."""
    fig = make_subplots(rows=1, cols=len(table["max_batch"].unique()) or 1, shared_yaxes=True,
                        subplot_titles=[f"batch {b}" for b in sorted(table["max_batch"].unique())])
    colours = {"speedup_bound": "#bbbbbb", "speedup_measured": "#1f77b4", "speedup_predicted": "#ff7f0e"}
    for i, batch in enumerate(sorted(table["max_batch"].unique()), start=1):
        part = table[table["max_batch"] == batch]
        for col, colour in colours.items():
            fig.add_trace(go.Bar(x=part["label"], y=part[col], name=col.split("_")[1],
                                 marker_color=colour, showlegend=i == 1), row=1, col=i)
    fig.add_hline(y=1.0, line_dash="dot")
    fig.update_layout(barmode="group")
    return _layout(fig, "Speedup over full (closed loop)", "", "throughput / full's")


def load_sweep(sweep: pd.DataFrame, tpot_limit_s: float | None = None) -> go.Figure:
    """TPOT p99 and throughput against offered load, one line per strategy."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["TPOT p99 (ms)", "throughput (tokens/s)"])
    for i, (strategy, part) in enumerate(sweep.groupby("strategy", sort=False)):
        colour = _COLOURS[i % len(_COLOURS)]
        fig.add_trace(go.Scatter(x=part["rate"], y=part["tpot_p99_s"] * 1e3, mode="lines+markers",
                                 name=strategy, line={"color": colour}), row=1, col=1)
        fig.add_trace(go.Scatter(x=part["rate"], y=part["throughput_tokens_per_s"], mode="lines+markers",
                                 name=strategy, line={"color": colour}, showlegend=False), row=1, col=2)
    if tpot_limit_s is not None:
        fig.add_hline(y=tpot_limit_s * 1e3, line_dash="dot", row=1, col=1)
    fig.update_xaxes(title_text="requests per second")
    return _layout(fig, "Load sweep", "requests per second", "")


def replicas(sizings: pd.DataFrame) -> go.Figure:
    """Replicas needed per strategy (infeasible ones annotated)."""
    ok = sizings["replicas"].notna()
    fig = go.Figure(go.Bar(x=sizings["strategy"], y=sizings["replicas"].fillna(0),
                           text=[f"{int(r)}" if k else "not met" for r, k in zip(sizings["replicas"], ok,
                                                                                  strict=True)],
                           textposition="outside"))
    return _layout(fig, "Replicas needed for the target load", "", "replicas")


_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
