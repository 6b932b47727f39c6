"""Validation: a grid run both ways in one process gives one table of predicted vs measured."""

import json

import numpy as np
import pytest

from eesim.scenario.behaviour import Behaviour
from eesim.validate import (
    COMPACT,
    FULL,
    GRIDS,
    METRICS,
    SELFSPEC_2,
    SYNC,
    Grid,
    Scenario,
    Sizes,
    error_summary,
    exit_depths,
    grid_named,
    grid_summary,
    prepare,
    run_grid,
    run_scenario,
    straggler_binding,
    write_validation,
)

TINY = Grid("tiny", (Scenario(FULL, 2, "closed", "mixed"), Scenario(COMPACT, 2, "closed", "mixed"),
                     Scenario(FULL, 2, "poisson", "json"), Scenario(SYNC, 2, "closed", "straggler"),
                     Scenario(SELFSPEC_2, 2, "closed", "mixed")),
            Sizes(prompt=(16, 16), output=(12, 16), per_row=2, min_requests=3), quick_profile=True)


@pytest.fixture(scope="module")
def bench():
    return prepare(quick=True)


@pytest.fixture(scope="module")
def table(bench):
    return run_grid(bench, TINY)


def test_one_row_per_scenario_with_every_column(table):
    assert table["scenario"].tolist() == [s.label for s in TINY.scenarios]
    fields = ["strategy", "kv", "draft_layer", "drafts", "max_batch", "load", "mix", "requests", "rate"]
    metrics = [f"{m}_{k}" for m in METRICS for k in ("predicted", "measured", "abs_error")]
    lpt = ["layers_per_token_predicted", "layers_per_token_measured"]
    speedups = ["speedup_measured", "speedup_predicted", "speedup_bound"]
    assert set(fields + metrics + lpt + speedups + ["extrapolated", "unmeasured"]) <= set(table)
    assert table["requests"].tolist() == [TINY.sizes.requests(s.max_batch) for s in TINY.scenarios]
    poisson = table["load"] == "poisson"
    assert (table.loc[poisson, "rate"] > 0).all() and table.loc[~poisson, "rate"].isna().all()
    assert table.loc[table["strategy"] == "selfspec", "draft_layer"].tolist() == [2]


def test_replayed_runs_do_the_same_work_on_both_sides(table):
    """Same requests, same seed, same replayed exits: the same layers per token. Only a strategy
    the engine does not execute yet (self-speculation) may be left unmeasured, and says why."""
    unmeasured = table[table["unmeasured"] != ""]
    assert set(unmeasured["strategy"]) <= {"selfspec"}
    assert unmeasured["unmeasured"].str.contains("selfspec").all()
    assert unmeasured[[f"{m}_measured" for m in METRICS]].isna().all().all()
    measured = table[table["unmeasured"] == ""]
    assert len(measured) >= len(TINY.scenarios) - 1
    np.testing.assert_allclose(measured["layers_per_token_measured"],
                               measured["layers_per_token_predicted"], rtol=1e-12)
    assert (measured[[f"{m}_measured" for m in METRICS]] > 0).all().all()


def test_errors_and_speedups_are_computed_as_documented(bench, table):
    for m in METRICS:
        pred, meas = table[f"{m}_predicted"], table[f"{m}_measured"]
        np.testing.assert_allclose(table[f"{m}_abs_error"], (pred - meas).abs() / meas)
    for row in table.itertuples():
        full = table[(table["strategy"] == "full") & (table["max_batch"] == row.max_batch)
                     & (table["load"] == row.load) & (table["mix"] == row.mix)]
        expected = row.throughput_measured / full["throughput_measured"].iloc[0] if len(full) else np.nan
        np.testing.assert_allclose(row.speedup_measured, expected)
        bound = (full["layers_per_token_predicted"].iloc[0] / row.layers_per_token_predicted
                 if len(full) else np.nan)  # full's layers per token over the strategy's
        np.testing.assert_allclose(row.speedup_bound, bound)
    errors = error_summary(table)
    for m in METRICS:
        assert errors["median_abs_error"][m] == pytest.approx(np.nanmedian(table[f"{m}_abs_error"]))
        assert errors["p90_abs_error"][m] == pytest.approx(np.nanpercentile(table[f"{m}_abs_error"], 90))


def test_each_scenario_is_measured_twice_and_says_how_repeatable_it_was(bench, table):
    """Two measured runs per scenario (means on both sides); the repeat noise is their spread
    (max - min) / (max + min): real runs never time alike, their exits and tokens always do."""
    measured = table[table["unmeasured"] == ""]
    assert TINY.repeats == 2 and (measured["runs"] == 2).all()
    assert (table.loc[table["unmeasured"] != "", "runs"] == 0).all()
    noise = measured["tpot_mean_repeat_noise"]
    assert ((noise > 0) & (noise < 1)).all()
    assert (measured["peak_memory_repeat_noise"] < 0.05).all()
    assert table.loc[table["unmeasured"] != "", "tpot_mean_repeat_noise"].isna().all()
    errors = error_summary(table)
    for m in METRICS:
        assert errors["median_repeat_noise"][m] == pytest.approx(np.nanmedian(table[f"{m}_repeat_noise"]))
        noise = table[f"{m}_repeat_noise"]
        assert errors["p90_repeat_noise"][m] == pytest.approx(np.nanpercentile(noise, 90))


def test_one_run_has_no_repeat_noise(bench):
    row = run_scenario(bench, TINY.scenarios[0], TINY.sizes, repeats=1)
    assert row["runs"] == 1 and np.isnan(row["tpot_mean_repeat_noise"])
    assert row["tpot_mean_measured"] > 0


def test_summary_has_the_error_keys_and_is_written_beside_the_table(bench, table, tmp_path):
    from eesim.io import read_parquet_with_meta

    summary = grid_summary(table, TINY, bench, 1.0, 0)
    for key in ("median_abs_error", "p90_abs_error", "median_repeat_noise", "p90_repeat_noise"):
        assert set(summary[key]) == set(METRICS)
    assert summary["repeats"] == 2
    assert summary["grid"] == "tiny" and summary["scenarios"] == len(TINY.scenarios)
    assert summary["profile"]["quick"] and summary["profile"]["device_type"] == "cpu"
    assert summary["environment"]["torch"] and summary["date"]
    assert summary["layers_per_token_mismatches"] == 0
    parquet, doc = write_validation(table, summary, tmp_path / "v")
    written, meta = read_parquet_with_meta(parquet, ValueError, "validation")
    assert len(written) == len(table) and meta["grid"] == "tiny"
    assert json.loads(doc.read_text())["median_abs_error"] == summary["median_abs_error"]


def test_straggler_is_the_deepest_code_request_first_among_prose(bench):
    behaviour = bench.behaviour
    binding = straggler_binding(behaviour, 12, seed=3)
    tasks = behaviour.tasks[binding]
    assert (tasks == "code").sum() == 1 and tasks[0] == "code"
    assert (tasks[1:] == "prose").all()
    code = np.flatnonzero(behaviour.tasks == "code")
    assert exit_depths(behaviour)[binding[0]] == exit_depths(behaviour)[code].max()
    assert (straggler_binding(behaviour, 12, seed=3) == binding).all()


def test_exit_depth_is_the_first_passing_check_averaged_per_request():
    b = Behaviour(n_layers=4, offsets=np.array([0, 2, 4]), tasks=np.array(["code", "code"]),
                  pass_bits=np.array([0b1000, 0b0010, 0b0001, 0b1100], np.uint64),
                  agree_bits=np.zeros(4, np.uint64), mapped_from=None)
    assert exit_depths(b).tolist() == [3.0, 2.0]


def test_grids():
    full = GRIDS["full"].scenarios
    assert len(full) == len(set(full)) == 7 * 3 * 2 * 5
    quick = GRIDS["quick"].scenarios
    assert set(quick) <= set(full)
    assert {s.strategy for s in quick} == {s.strategy for s in full}
    assert {"closed", "poisson"} <= {s.load for s in quick} and "straggler" in {s.mix for s in quick}
    with pytest.raises(ValueError, match="--grid 'huge'"):
        grid_named("huge")


def test_cli_bad_grid_names_the_flag():
    from typer.testing import CliRunner

    from eesim.cli import app

    out = CliRunner().invoke(app, ["validate", "--grid", "huge"])
    assert out.exit_code == 2 and "--grid 'huge' is not one of quick, full" in out.output


@pytest.mark.slow
def test_cli_quick_grid_is_the_fidelity_guard(tmp_path):
    """The CI guard (about 2.5 minutes on a slow 2-core VM): the quick grid, profile included,
    one measured run per scenario (the tiny grid's tests cover two), must predict every metric
    within a median error of 25% (a regression guard for a noisy machine), and the exit status
    says so."""
    from typer.testing import CliRunner

    from eesim.cli import app

    out = CliRunner().invoke(app, ["validate", "--grid", "quick", "--repeats", "1", "--json",
                                   "--out", str(tmp_path), "--max-median-error", "0.25"])
    summary = json.loads(out.stdout)
    assert summary["grid"] == "quick" and summary["scenarios"] == len(GRIDS["quick"].scenarios)
    assert summary["repeats"] == 1
    assert (tmp_path / "validation.parquet").exists() and (tmp_path / "validation.json").exists()
    over = {m: e for m, e in summary["median_abs_error"].items() if e is None or e > 0.25}
    assert not over, f"median errors above 25%: {over}"
    assert out.exit_code == 0, out.output


def test_validate_writes_under_eesim_out_unless_told(tmp_path, monkeypatch):
    """A validation run never overwrites the committed evidence under profiles/ by default."""
    from types import SimpleNamespace

    from eesim.validate import default_folder

    monkeypatch.chdir(tmp_path)
    bench = SimpleNamespace(profile=SimpleNamespace(meta=SimpleNamespace(device_type="cpu")))
    folder = default_folder(bench)
    assert folder.resolve() == tmp_path / "eesim-out" / "validation" / "cpu"
