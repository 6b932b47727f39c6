"""The engine executes the simulator's plans for real: same decisions, same work, real tokens."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eesim.costmodel import CostModel
from eesim.engine.measure import measure
from eesim.model import load_checkpoint
from eesim.plan.strategies import StrategyConfig
from eesim.policy.calibrate import calibrate
from eesim.policy.policy import never_exit
from eesim.scenario.behaviour import from_trace
from eesim.scenario.workload import closed_loop
from eesim.sched import SchedulerConfig
from eesim.sim.simulate import simulate
from eesim.trace import read_trace

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup():
    trace = read_trace(ROOT / "traces" / "reference-greedy.parquet")
    policy, _ = calibrate(trace, 0.02)
    return load_checkpoint(), trace, policy, CostModel.load(ROOT / "profiles" / "cpu" / "ref.parquet")


STRATEGIES = [("full", {}), ("sync", {}), ("compact", {}), ("regroup", {}), ("monotone", {}),
              ("compact", {"check_every": 2, "min_layer": 2}),
              ("selfspec", {"kv": "shared", "draft_layer": 2}),
              ("selfspec", {"kv": "propagate", "draft_layer": 4, "drafts": 3})]


@pytest.mark.parametrize(("name", "params"), STRATEGIES)
def test_engine_and_simulator_agree_on_work_and_tokens(setup, name, params):
    """Closed loop, so batches form the same way whatever the clock says: the measured and the
    simulated run must count the same layer evaluations, exit checks, drafts and emitted
    tokens."""
    ckpt, trace, policy, cost = setup
    behaviour = from_trace(trace, policy, 8)
    workload = closed_loop(3, 8, 0, prompt=(12, 12), output=(20, 20))
    cfg = StrategyConfig(name=name, **params)
    measured, summary = measure(ckpt, behaviour, workload, cfg, SchedulerConfig(max_batch=3))
    simulated = simulate(cost, behaviour, workload, cfg, SchedulerConfig(max_batch=3)).requests
    for col in ("output_tokens", "layer_evals", "exit_checks", "differs", "drafted", "accepted"):
        assert np.array_equal(measured[col].to_numpy(), simulated[col].to_numpy()), col
    assert (measured["first_token_s"] >= measured["arrival_s"]).all()
    assert (measured["completion_s"] > measured["first_token_s"]).all()
    assert summary["tpot_s"]["mean"] > 0


def test_with_exits_off_the_engine_runs_every_layer(setup):
    ckpt, trace, _, _ = setup
    behaviour = from_trace(trace, never_exit(trace.meta.model_sha256, 8), 8)
    workload = closed_loop(2, 4, 0, prompt=(8, 8), output=(10, 10))
    measured, _ = measure(ckpt, behaviour, workload, StrategyConfig(name="compact"),
                          SchedulerConfig(max_batch=2))
    assert (measured["layer_evals"] == 8 * 9).all()  # 9 decode steps after the prefill token
    assert (measured["differs"] == 0).all()


@pytest.mark.parametrize("name", ["compact", "sync", "regroup", "selfspec"])
def test_a_live_run_that_never_exits_decodes_exactly_at_full_depth(setup, name):
    """Live exits from the model's own confidences, at a threshold nothing reaches: the tokens
    are the full-depth greedy tokens, one by one. Live self-speculation is lossless whatever
    its drafts: it must give the same tokens."""
    import torch

    from eesim.policy.policy import ExitPolicy

    ckpt, trace, _, _ = setup
    behaviour = from_trace(trace, None, 8)
    policy = ExitPolicy(signal="max_prob", thresholds={"*": 1.01}, model_sha256=ckpt.sha256,
                        n_layers=8)
    outputs: dict = {}
    measure(ckpt, behaviour, closed_loop(2, 4, 0, prompt=(10, 10), output=(12, 12)),
            StrategyConfig(name=name),
            SchedulerConfig(max_batch=2), live=policy, outputs=outputs)
    model = ckpt.model
    for request in outputs.values():
        ids = list(request["prompt"])
        with torch.no_grad():
            for _ in range(12):
                ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
        assert request["tokens"] == ids[len(request["prompt"]):]


def test_a_live_run_with_a_loose_threshold_exits_early(setup):
    from eesim.policy.policy import ExitPolicy

    ckpt, trace, _, _ = setup
    behaviour = from_trace(trace, None, 8)
    policy = ExitPolicy(signal="max_prob", thresholds={"*": 0.0}, model_sha256=ckpt.sha256,
                        n_layers=8)
    measured, _ = measure(ckpt, behaviour, closed_loop(2, 4, 0, prompt=(10, 10), output=(12, 12)),
                          StrategyConfig(name="compact"), SchedulerConfig(max_batch=2), live=policy)
    assert (measured["layer_evals"] == 11).all()  # every decoded token leaves after layer 1


def test_measure_cli_takes_the_simulate_flags_and_writes_the_same_files(tmp_path):
    import json

    from typer.testing import CliRunner

    from eesim.cli import app

    args = ["--profile", str(ROOT / "profiles" / "cpu" / "ref.parquet"),
            "--trace", str(ROOT / "traces" / "reference-greedy.parquet"), "--strategy", "compact",
            "--concurrency", "2", "--requests", "4", "--prompt-len", "8", "--output-len", "10",
            "--max-batch", "2", "--json"]
    out = CliRunner().invoke(app, ["measure", *args, "--out", str(tmp_path / "m")])
    assert out.exit_code == 0, out.output
    measured = json.loads(out.stdout)
    simulated = json.loads(CliRunner().invoke(app, ["simulate", *args]).stdout)
    assert measured["measured"] is True and measured["environment"]["torch"]
    assert measured["layers_per_token"] == simulated["layers_per_token"]
    assert set(simulated) - set(measured) <= {"extrapolated_points", "preemptions", "shadow_rate",
                                              "shadow_tokens", "kill_at_s", "replicas",
                                              "prefill_tokens"}
    assert (tmp_path / "m" / "requests.parquet").exists()
    realised = read_trace(tmp_path / "m" / "realised.parquet")
    assert realised.kind == "exits" and len(realised.table) == 4 * 10  # a row per emitted token
    bad = CliRunner().invoke(app, ["measure", *args[:1],
                                   str(ROOT / "profiles" / "analytic" / "h100-sxm-llama-3-8b.parquet"),
                                   *args[2:], "--map-depth"])
    assert bad.exit_code == 2 and "runs the reference model" in bad.output
    defer = CliRunner().invoke(app, ["measure", *args, "--kv", "defer"])
    assert defer.exit_code == 2 and "--kv defer" in defer.output


def test_engine_preempts_and_recomputes_like_the_simulator(setup):
    """KV memory for five blocks while three rows grow to two blocks each: the youngest row is
    preempted and recomputed. Engine and simulator preempt the same number of times and still
    emit every token with the same work."""
    ckpt, trace, policy, cost = setup
    behaviour = from_trace(trace, policy, 8)
    workload = closed_loop(3, 6, 0, prompt=(12, 12), output=(20, 20))
    block = 16 * 8 * 2 * 2 * 32 * 4  # tokens x layers x (K, V) x KV heads x head dim x fp32
    sched = SchedulerConfig(max_batch=3, kv_capacity_bytes=5 * block)
    cfg = StrategyConfig(name="compact")
    measured, summary = measure(ckpt, behaviour, workload, cfg, sched)
    simulated = simulate(cost, behaviour, workload, cfg, sched)
    assert summary["preemptions"] > 0
    assert summary["preemptions"] == simulated.summary["preemptions"]
    for col in ("output_tokens", "layer_evals", "exit_checks", "differs"):
        assert np.array_equal(measured[col].to_numpy(), simulated.requests[col].to_numpy()), col
    assert (measured["output_tokens"] == 20).all()


@pytest.mark.parametrize("name", ["compact", "regroup"])
def test_a_prediction_from_the_realised_trace_counts_the_same_work(setup, name, tmp_path):
    """Live exits: the engine's own decisions, written as an `exits` trace and read back, drive
    a simulation that counts exactly the engine's layer evaluations, checks and tokens."""
    from eesim.engine.measure import realised_trace
    from eesim.policy.policy import ExitPolicy
    from eesim.trace import write_trace

    ckpt, trace, _, cost = setup
    policy = ExitPolicy(signal="max_prob", thresholds={"*": 0.5}, model_sha256=ckpt.sha256,
                        n_layers=8)
    workload = closed_loop(3, 6, 0, prompt=(10, 10), output=(16, 16))
    cfg, sched = StrategyConfig(name=name), SchedulerConfig(max_batch=3)
    realised: dict = {}
    measured, _ = measure(ckpt, from_trace(trace, None, 8), workload, cfg, sched, live=policy,
                          realised=realised)
    exits = realised_trace(realised, measured, ckpt.sha256, 8, cfg)
    write_trace(exits, tmp_path / "realised.parquet")
    behaviour = from_trace(read_trace(tmp_path / "realised.parquet"), None, 8)
    simulated = simulate(cost, behaviour, workload, cfg, sched, binding=np.arange(6)).requests
    assert 6 * 8 * 15 > measured["layer_evals"].sum() > 6 * 15  # some exits, not all at layer 1
    for col in ("output_tokens", "layer_evals", "exit_checks"):
        assert np.array_equal(measured[col].to_numpy(), simulated[col].to_numpy()), col


@pytest.mark.parametrize(("name", "params"), STRATEGIES)
def test_engine_and_simulator_count_the_same_plan_operations(setup, name, params):
    """Priced with a profile where every operation costs one second and nothing else costs
    anything, the simulated run lasts exactly as many seconds as the engine executed plan
    operations (the unit of term `plan_op`), bulk stepping included."""
    from eesim.profile.format import Profile

    ckpt, trace, policy, cost = setup
    table = cost.profile.table.copy()
    table["median_s"] = 0.0
    ops = table[table["term"] == "step"].assign(term="plan_op", median_s=1.0)
    counting = CostModel(Profile(pd.concat([table, ops], ignore_index=True), cost.meta))
    behaviour = from_trace(trace, policy, 8)
    workload = closed_loop(3, 8, 0, prompt=(12, 12), output=(20, 20))
    cfg = StrategyConfig(name=name, **params)
    timeline: list = []
    measure(ckpt, behaviour, workload, cfg, SchedulerConfig(max_batch=3), timeline=timeline)
    simulated = simulate(counting, behaviour, workload, cfg, SchedulerConfig(max_batch=3)).requests
    assert simulated["completion_s"].max() == sum(it.ops for it in timeline) > 0
