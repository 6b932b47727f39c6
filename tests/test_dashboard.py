"""The dashboard's building blocks (what-if, capacity, trace analysis, figures, report, uploads)
on the committed profile and trace, and every page through Streamlit's AppTest."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from eesim import figures
from eesim.costmodel import CostModel
from eesim.paths import ROOT
from eesim.trace import REFERENCE_TRACE, read_trace
from eesim.whatif import WhatIf, answer

PROFILE = ROOT / "profiles" / "cpu" / "ref.parquet"
ANALYTIC = ROOT / "profiles" / "analytic" / "h100-sxm-llama-3-8b.parquet"
VALIDATION = ROOT / "profiles" / "cpu" / "validation.parquet"
APP = ROOT / "dashboards" / "app.py"
sys.path.insert(0, str(ROOT / "dashboards"))


@pytest.fixture(scope="module")
def trace():
    return read_trace(REFERENCE_TRACE)


@pytest.fixture(scope="module")
def cost():
    return CostModel.load(PROFILE)


@pytest.fixture(scope="module")
def validation():
    from eesim.io import read_parquet_with_meta

    return read_parquet_with_meta(VALIDATION, ValueError, "validation table")[0]


SMALL = WhatIf(strategy="compact", threshold=0.9, requests=120, rate=20.0, max_batch=8, output_len=32)


# what-if and capacity -------------------------------------------------------------------------

def test_a_what_if_answer_is_deterministic_and_follows_the_threshold(cost, trace):
    a, b = answer(cost, trace, SMALL), answer(cost, trace, SMALL)
    assert a.summary["tpot_s"] == b.summary["tpot_s"]
    pd.testing.assert_frame_equal(a.requests, b.requests)
    lenient = answer(cost, trace, SMALL.model_copy(update={"threshold": 0.3}))
    assert lenient.summary["layers_per_token"] < a.summary["layers_per_token"]
    assert lenient.summary["quality_delta"] > a.summary["quality_delta"]
    assert lenient.exit_layers.mean() < a.exit_layers.mean()
    never = answer(cost, trace, SMALL.model_copy(update={"threshold": None}))
    full = answer(cost, trace, SMALL.model_copy(update={"strategy": "full"}))
    assert never.summary["layers_per_token"] == full.summary["layers_per_token"]
    assert never.summary["quality_delta"] == 0 and (never.exit_layers == trace.meta.n_layers).all()


def test_a_what_if_maps_a_trace_onto_a_deeper_analytic_model(trace):
    got = answer(CostModel.load(ANALYTIC), trace, SMALL)
    assert got.summary["depth_mapped_from"] == trace.meta.n_layers
    assert got.summary["layers_per_token"] < 32 and got.trace_layers == trace.meta.n_layers


@pytest.mark.parametrize(("field", "value", "message"), [
    ("strategy", "turbo", "strategy\\n  Input should be 'full', 'sync', 'compact'"),
    ("rate", -1.0, "greater than 0"),
    ("signal", "vibes", "signal 'vibes'"),
])
def test_a_bad_question_names_its_field(field, value, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        WhatIf(**{field: value})


def test_replicas_needed_is_the_fewest_that_meet_the_limits(cost, trace):
    """Checked by simulating the answer and one replica fewer."""
    from eesim.capacity import Limits, replicas_needed

    q = SMALL.model_copy(update={"rate": 200.0, "requests": 200})
    one = answer(cost, trace, q).summary
    limits = Limits(tpot_p99_s=one["tpot_s"]["p99"] * 0.75, ttft_p99_s=None)
    got = replicas_needed(cost, trace, q, limits, max_replicas=32)
    assert got.replicas is not None and got.replicas > 1
    at = answer(cost, trace, q.model_copy(update={"replicas": got.replicas})).summary
    fewer = answer(cost, trace, q.model_copy(update={"replicas": got.replicas - 1})).summary
    assert not limits.misses(at) and limits.misses(fewer)
    assert got.summary["tpot_s"] == at["tpot_s"]
    over = replicas_needed(cost, trace, q, Limits(quality_budget=0.0))
    assert over.replicas is None and "quality delta" in over.reason and len(over.probes) == 1


def test_a_load_sweep_has_a_row_per_strategy_and_rate(cost, trace):
    from eesim.capacity import load_sweep

    table = load_sweep(cost, trace, SMALL, ["full", "compact"], [5.0, 50.0])
    assert list(table["strategy"]) == ["full", "full", "compact", "compact"]
    full = table[table["strategy"] == "full"]
    assert full["tpot_p99_s"].iloc[1] >= full["tpot_p99_s"].iloc[0]  # more load, no faster
    with pytest.raises(ValueError, match="rates must be > 0"):
        load_sweep(cost, trace, SMALL, ["full"], [-1.0])


# trace analysis --------------------------------------------------------------------------------

def test_trace_analysis_tables(trace):
    from eesim.trace.analysis import acceptance_by_draft_layer, agreement_by_layer, exit_depths, tradeoff

    agree = agreement_by_layer(trace)
    last = agree[agree["layer"] == trace.meta.n_layers]
    assert (last["agreement"] == 1.0).all() and set(agree["task"]) >= {"all", "prose", "code", "json"}
    curve = tradeoff(trace, "max_prob", points=11)
    assert curve["layers_saved"].iloc[0] > curve["layers_saved"].iloc[-1]  # threshold 0 exits most
    assert curve["quality_delta"].iloc[0] >= curve["quality_delta"].iloc[-1]
    depths = exit_depths(trace, None, "token_class")
    assert np.allclose(depths.groupby("group")["share"].sum(), 1.0)
    accept = acceptance_by_draft_layer(trace, 4)
    assert list(accept["draft_layer"]) == list(range(1, trace.meta.n_layers))
    assert accept["acceptance_rate"].is_monotonic_increasing or accept["acceptance_rate"].iloc[-1] > \
        accept["acceptance_rate"].iloc[0]


# figures ---------------------------------------------------------------------------------------

def test_tpot_cdf_ends_at_one_per_run(cost, trace):
    a = answer(cost, trace, SMALL)
    fig = figures.tpot_cdf({"compact": a.requests, "again": a.requests})
    assert len(fig.data) == 2 and fig.data[0].y[-1] == 1.0
    assert np.all(np.diff(fig.data[0].x) >= 0)


def test_depth_histogram_shares_sum_to_one():
    fig = figures.depth_histogram(np.array([1, 1, 3, 4]), 4)
    assert list(fig.data[0].y) == [0.5, 0.0, 0.25, 0.25]


def test_predicted_vs_measured_has_a_y_equals_x_line(validation):
    fig = figures.predicted_vs_measured(validation, "tpot_mean")
    line = fig.data[-1]
    assert line.name == "y = x" and line.x[0] == line.y[0] and line.x[1] == line.y[1]
    assert sum(len(t.x) for t in fig.data[:-1]) == validation["tpot_mean_measured"].notna().sum()


def test_error_table_rows_are_strategies_and_all(validation):
    table = figures.error_table(validation, ["tpot_mean"])
    assert table.loc["all", "tpot_mean median"] == pytest.approx(validation["tpot_mean_abs_error"].median())
    compact = validation[validation["strategy"] == "compact"]["tpot_mean_abs_error"]
    assert table.loc["compact", "tpot_mean p90"] == pytest.approx(compact.quantile(0.9))


def test_speedup_figure_has_a_panel_per_batch(validation):
    from eesim.validate import speedup_table

    fig = figures.speedup(speedup_table(validation))
    assert [a.text for a in fig.layout.annotations][:3] == ["batch 1", "batch 4", "batch 16"]


def test_trace_figures(trace):
    from eesim.trace.analysis import acceptance_by_draft_layer, agreement_by_layer, exit_depths, tradeoff

    assert len(figures.agreement(agreement_by_layer(trace)).data) == 4  # all + 3 tasks
    curve = tradeoff(trace, points=5)
    fig = figures.tradeoff(curve, budget=0.01)
    assert list(fig.data[0].x) == list(curve["layers_saved"]) and fig.layout.shapes
    assert len(figures.acceptance(acceptance_by_draft_layer(trace)).data) == 2
    depths = exit_depths(trace, None, "task")
    assert len(figures.depth_by_group(depths, "t").data) == depths["layer"].nunique()


def test_capacity_figures():
    sweep = pd.DataFrame({"strategy": ["full", "full", "compact", "compact"], "rate": [1, 2, 1, 2],
                          "tpot_p99_s": [0.01, 0.02, 0.015, 0.03],
                          "throughput_tokens_per_s": [100, 200, 100, 190]})
    fig = figures.load_sweep(sweep, tpot_limit_s=0.025)
    assert len(fig.data) == 4 and list(fig.data[0].y) == [10.0, 20.0]
    sizes = pd.DataFrame({"strategy": ["full", "compact"], "replicas": [3, None]})
    assert list(figures.replicas(sizes).data[0].text) == ["3", "not met"]


# report ----------------------------------------------------------------------------------------

def test_the_report_is_self_contained_and_answers_the_review(cost, trace, validation):
    from eesim.report import gather, render, strategy_table

    ev = gather(cost, trace, SMALL, strategies=("full", "compact"), validation=validation)
    html = render(ev, profile_env=cost.meta.env)
    assert html.count("<script src=") == 0 and "plotly" in html  # plotly.js inlined, no network
    for text in ("Question and assumptions", "Every strategy", "Validation", "Design-review questions",
                 "Does divergence erase the saved layer compute?", "shadow stream", "torch"):
        assert text in html
    table = strategy_table(ev)
    assert table.loc["full", "TPOT speedup vs full"] == 1.0
    assert table.loc["compact", "layer-savings bound"] > 1.0


def test_eesim_report_writes_the_file(tmp_path):
    from typer.testing import CliRunner

    from eesim.cli import app

    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", "--requests", "60", "--output-len", "16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("<!doctype html>")
    bad = CliRunner().invoke(app, ["report", "--strategy", "turbo", "--out", str(tmp_path / "x.html")])
    assert bad.exit_code == 2 and "turbo" in bad.output and not (tmp_path / "x.html").exists()


# uploads ---------------------------------------------------------------------------------------

def test_uploads_are_validated_size_limited_and_never_half_written(tmp_path):
    import ui

    path, error = ui.check_upload("t.parquet", REFERENCE_TRACE.read_bytes(), "trace", tmp_path)
    assert error is None and read_trace(path).meta.n_layers == 8
    path, error = ui.check_upload("junk.parquet", b"not parquet", "trace", tmp_path)
    assert path is None and "junk.parquet" in error and "Parquet" in error
    path, error = ui.check_upload("p.parquet", REFERENCE_TRACE.read_bytes(), "profile", tmp_path)
    assert path is None and "p.parquet" in error  # a trace is not a profile
    path, error = ui.check_upload("big.parquet", b"0" * (ui.MAX_UPLOAD_BYTES + 1), "trace", tmp_path)
    assert path is None and "limit" in error
    assert not list(tmp_path.glob("*.part")) and len(list(tmp_path.iterdir())) == 1


# pages (AppTest) -------------------------------------------------------------------------------

def _app():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def _charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_what_if_page_follows_the_threshold():
    at = _app()
    before = (_metric(at, "Layers / token"), _metric(at, "TPOT mean"))
    charts = _charts(at)
    assert len(charts) == 2
    at.slider(key="q-threshold-max_prob").set_value(0.5).run()
    assert not at.exception
    after = (_metric(at, "Layers / token"), _metric(at, "TPOT mean"))
    assert after != before and float(after[0]) < float(before[0])
    assert _metric(at, "TPOT mean").endswith(("ms", " s"))
    assert _charts(at)[1] != charts[1]  # the exit-depth histogram moved


def test_validation_page_filters_and_switches_metric():
    at = _app()
    at.switch_page("pages/validation.py").run()
    assert not at.exception
    title = _charts(at)[0]["layout"]["title"]["text"]
    at.selectbox(key="v-metric").set_value("throughput").run()
    assert _charts(at)[0]["layout"]["title"]["text"] != title
    at.multiselect(key="v-strategies").set_value(["compact"]).run()
    assert not at.exception
    names = {t["name"] for t in _charts(at)[0]["data"]}
    assert names == {"compact", "y = x"}


def test_traces_page_follows_the_signal():
    at = _app()
    at.switch_page("pages/traces.py").run()
    assert not at.exception
    curve = [c for c in _charts(at) if "Quality against" in c["layout"]["title"]["text"]][0]
    at.selectbox(key="t-signal").set_value("entropy").run()
    assert not at.exception
    again = [c for c in _charts(at) if "Quality against" in c["layout"]["title"]["text"]][0]
    assert again["data"][0]["name"] == "entropy" and again["data"][0]["x"] != curve["data"][0]["x"]


def test_capacity_page_follows_the_target_load():
    at = _app()
    at.switch_page("pages/capacity.py").run()
    assert not at.exception
    at.multiselect(key="c-strategies").set_value(["full", "compact"]).run()
    before = at.dataframe[-1].value.copy()
    at.number_input(key="c-qps").set_value(120.0).run()
    assert not at.exception
    after = at.dataframe[-1].value
    assert list(after["strategy"]) == ["full", "compact"]
    assert not after.equals(before)
    assert len(_charts(at)) == 2


def test_report_page_offers_the_html():
    at = _app()
    at.switch_page("pages/report.py").run()
    assert not at.exception
    def divergence():
        return next(m.value for m in at.markdown if "Does divergence" in m.value)

    before = divergence()
    assert before.split("**")[-1].strip().startswith("compact:")
    at.selectbox(key="r-strategy").set_value("regroup").run()
    assert not at.exception
    assert divergence() != before and "regroup:" in divergence()
    assert at.get("download_button")


def test_validation_page_offers_a_demo_run_made_where_it_started(tmp_path, monkeypatch):
    import shutil

    (tmp_path / "eesim-out" / "validation").mkdir(parents=True)
    shutil.copy(VALIDATION, tmp_path / "eesim-out" / "validation" / "validation.parquet")
    monkeypatch.chdir(tmp_path)
    at = _app()
    at.switch_page("pages/validation.py").run()
    options = at.selectbox(key="v-device").options
    assert options[0] == "committed: cpu" and "demo run" in options[-1]
    at.selectbox(key="v-device").set_value(options[-1]).run()
    assert not at.exception and _charts(at)
