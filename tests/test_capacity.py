"""Sweeps (grid files, resume after a kill, failures recorded, Ray = process pool) and plans
(checked by simulating the chosen replica count and one fewer)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eesim.cli import app
from eesim.costmodel import CostModel
from eesim.paths import ROOT
from eesim.sweep import GridError, load_grid, point_id, sweep
from eesim.trace import REFERENCE_TRACE, read_trace

ANALYTIC = ROOT / "profiles" / "analytic" / "h100-sxm-llama-3-8b.parquet"
PROFILE = ROOT / "profiles" / "cpu" / "ref.parquet"


def _grid(tmp_path: Path, axes: str, base: str = "requests = 40\noutput_len = 16") -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(f"[base]\nprofile = '{PROFILE}'\ntrace = '{REFERENCE_TRACE}'\n{base}\n\n[axes]\n{axes}\n")
    return path


def test_a_grid_is_the_product_of_its_axes(tmp_path):
    points = load_grid(_grid(tmp_path, "strategy = ['full', 'compact']\nrate = [5.0, 10.0, 20.0]"))
    assert len(points) == 6 and points[0]["strategy"] == "full" and points[1]["rate"] == 10.0
    assert len({point_id(p) for p in points}) == 6
    assert all(Path(p["profile"]).is_absolute() for p in points)


@pytest.mark.parametrize(("axes", "message"), [
    ("strategy = ['turbo']", "'strategy' = 'turbo'"),
    ("rate = [-1.0]", "'rate' = -1.0"),
    ("colour = ['red']", "field 'colour' is not a what-if field"),
    ("rate = []", "must be a non-empty list"),
    ("trace = ['missing.parquet']", "'trace' = 'missing.parquet': no such file"),
])
def test_a_bad_grid_names_the_file_field_and_value(tmp_path, axes, message):
    path = _grid(tmp_path, axes)
    with pytest.raises(GridError, match=message) as err:
        load_grid(path)
    assert str(path) in str(err.value)


def test_a_sweep_records_failures_and_results(tmp_path):
    from eesim.policy.policy import ExitPolicy

    foreign = tmp_path / "foreign.json"
    foreign.write_text(ExitPolicy(signal="max_prob", thresholds={"*": 0.9}, model_sha256="b" * 64,
                                  n_layers=8).model_dump_json())
    grid = _grid(tmp_path, f"strategy = ['full', 'compact']\npolicy = ['{foreign}']")
    points = load_grid(grid)
    points.append({**points[0], "policy": None})
    table = sweep(points, tmp_path / "out", workers=2)
    assert list(table["status"]) == ["failed", "failed", "ok"]
    assert "calibrated for model bbbb" in table["error"].iloc[0]
    assert table["tpot_mean_s"].iloc[2] > 0 and (tmp_path / "out" / "results.parquet").exists()


def test_a_killed_sweep_resumes_without_redoing_finished_points(tmp_path):
    grid = _grid(tmp_path, "strategy = ['full', 'compact', 'sync']\nrate = [4.0, 8.0, 16.0, 32.0]",
                 base="requests = 150\noutput_len = 32")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "eesim.cli", "sweep", "--grid", str(grid), "--out",
                             str(out), "--workers", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "points").glob("*.json"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "points").glob("*.json")}
    assert 3 <= len(finished) < 12, "the sweep should have been killed part-way"
    for f in finished:
        json.loads((out / "points" / f).read_text())  # no half-written result
    ran = []
    table = sweep(load_grid(grid), out, workers=1, on_result=ran.append)
    assert len(ran) == 12 - len(finished)
    assert not {point_id(r["point"]) + ".json" for r in ran} & set(finished)
    assert all((out / "points" / f).stat().st_mtime_ns == t for f, t in finished.items())
    assert len(table) == 12 and (table["status"] == "ok").all()


def test_ray_gives_the_process_pools_results(tmp_path):
    pytest.importorskip("ray")
    grid = _grid(tmp_path, "strategy = ['full', 'compact', 'selfspec']\nrate = [5.0, 20.0]")
    points = load_grid(grid)
    pool = sweep(points, tmp_path / "pool", workers=2)
    on_ray = sweep(points, tmp_path / "ray", use_ray=True)
    assert (on_ray["status"] == "ok").all() and len(on_ray) == 6
    metrics = ["tpot_mean_s", "ttft_p99_s", "throughput_tokens_per_s", "quality_delta"]
    assert pool[metrics].equals(on_ray[metrics])
    for p in points:
        a = json.loads((tmp_path / "pool" / "points" / f"{point_id(p)}.json").read_text())
        b = json.loads((tmp_path / "ray" / "points" / f"{point_id(p)}.json").read_text())
        assert a["summary"] == b["summary"]


def test_sweep_cli_counts(tmp_path):
    grid = _grid(tmp_path, "strategy = ['full', 'compact']")
    run = CliRunner().invoke(app, ["sweep", "--grid", str(grid), "--out", str(tmp_path / "o"),
                                   "--workers", "1", "--json"])
    assert run.exit_code == 0, run.output
    doc = json.loads(run.output[run.output.index("{"):])
    assert doc["points"] == 2 and doc["ok"] == 2
    again = CliRunner().invoke(app, ["sweep", "--grid", str(grid), "--out", str(tmp_path / "o"), "--json"])
    assert json.loads(again.output[again.output.index("{"):])["already_done"] == 2
    bad = CliRunner().invoke(app, ["sweep", "--grid", str(tmp_path / "none.toml"), "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "no such grid file" in bad.output


def test_plan_is_checked_by_simulating_its_answer_and_one_fewer():
    """The committed trace on the analytic H100 profile: the best choice meets the limits with
    its replica count and misses them with one fewer."""
    from eesim.capacity import Limits
    from eesim.policy.policy import ExitPolicy
    from eesim.whatif import WhatIf, answer

    run = CliRunner().invoke(app, [
        "plan", "--profile", str(ANALYTIC), "--trace", str(REFERENCE_TRACE), "--qps", "200",
        "--slo-tpot-p99", "30", "--slo-ttft-p99", "2000", "--budget", "0.02",
        "--strategies", "full,compact,selfspec", "--requests", "300", "--json"])
    assert run.exit_code == 0, run.output
    result = json.loads(run.output[run.output.index("{"):])
    best = result["best"]
    assert best is not None and best["replicas"] >= 2
    assert set(result["strategies"]) == {"full", "compact", "selfspec"}
    assert all(c["quality_delta"] <= 0.02 for c in result["pareto"])
    cost, trace = CostModel.load(ANALYTIC), read_trace(REFERENCE_TRACE)
    q = WhatIf(**best["question"])
    policy = ExitPolicy(**best["exit_policy"]) if best["exit_policy"] else None
    limits = Limits(0.030, 2.0, 0.02)
    at = answer(cost, trace, q.model_copy(update={"replicas": best["replicas"]}), policy, depths=False)
    fewer = answer(cost, trace, q.model_copy(update={"replicas": best["replicas"] - 1}), policy,
                   depths=False)
    assert not limits.misses(at.summary) and limits.misses(fewer.summary)


def test_plan_rejects_bad_flags():
    run = CliRunner().invoke(app, ["plan", "--profile", str(ANALYTIC), "--trace", str(REFERENCE_TRACE),
                                   "--qps", "10", "--slo-tpot-p99", "-5"])
    assert run.exit_code == 2 and "--slo-tpot-p99 must be > 0" in run.output
    run = CliRunner().invoke(app, ["plan", "--profile", str(ANALYTIC), "--trace", str(REFERENCE_TRACE),
                                   "--qps", "10", "--slo-tpot-p99", "30", "--strategies", "warp"])
    assert run.exit_code == 2 and "warp" in run.output
