"""The simulator: deterministic, conservative where it must be, and honest queueing."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from eesim.cli import app
from eesim.costmodel import CostModel
from eesim.plan.strategies import StrategyConfig
from eesim.policy.calibrate import calibrate
from eesim.policy.policy import never_exit
from eesim.policy.replay import replay
from eesim.scenario.behaviour import from_trace
from eesim.scenario.workload import bursty, closed_loop, poisson
from eesim.sched import SchedulerConfig
from eesim.sim.replica import Stepping
from eesim.sim.simulate import simulate
from eesim.trace import read_trace

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "traces" / "reference-greedy.parquet"
PROFILE = ROOT / "profiles" / "cpu" / "ref.parquet"
EARLY_EXIT = ["sync", "compact", "regroup", "monotone", "selfspec"]


@pytest.fixture(scope="module")
def trace():
    return read_trace(TRACE)


@pytest.fixture(scope="module")
def policy(trace):
    return calibrate(trace, 0.02)[0]


@pytest.fixture(scope="module")
def cost():
    return CostModel.load(PROFILE)


def strategy(name: str) -> StrategyConfig:
    return StrategyConfig(name=name)


def run(cost, behaviour, name, workload=None, strategy_kv=None, **kw):
    workload = workload or poisson(50.0, 60, seed=3, output=(24, 40))
    sched = kw.pop("sched", SchedulerConfig(max_batch=8))
    cfg = strategy(name) if strategy_kv is None else StrategyConfig(name=name, kv=strategy_kv)
    return simulate(cost, behaviour, workload, cfg, sched, **kw)


@pytest.mark.parametrize("name", ["full", *EARLY_EXIT])
def test_same_inputs_and_seed_give_identical_outputs(cost, trace, policy, name):
    behaviour = from_trace(trace, policy, 8)
    a, b = run(cost, behaviour, name), run(cost, behaviour, name)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    assert a.summary == b.summary


def test_full_ignores_the_policy(cost, trace, policy):
    with_exits = run(cost, from_trace(trace, policy, 8), "full")
    without = run(cost, from_trace(trace, None, 8), "full")
    pd.testing.assert_frame_equal(with_exits.requests.drop(columns="differs"),
                                  without.requests.drop(columns="differs"))
    assert with_exits.summary["quality_delta"] == 0


@pytest.mark.parametrize("name", EARLY_EXIT)
def test_without_exits_every_strategy_costs_at_least_full(cost, trace, name):
    """A trace where every token needs the last layer: no check passes, no draft agrees."""
    deep = from_trace(trace, never_exit(trace.meta.model_sha256, 8), 8)
    last = np.uint64(1 << 7)
    deep.pass_bits[:], deep.agree_bits[:] = last, last
    full = run(cost, deep, "full").summary
    other = run(cost, deep, name).summary
    if name == "monotone":  # no checks: it keeps its schedule and pays in quality instead
        assert other["quality_delta"] > 0
        return
    assert other["layers_per_token"] >= full["layers_per_token"]
    assert other["quality_delta"] == 0
    assert other["tpot_s"]["mean"] >= full["tpot_s"]["mean"] * 0.999
    assert other["ttft_s"]["mean"] >= full["ttft_s"]["mean"] * 0.999


def test_compact_layers_per_token_follow_the_policy_replay(cost, trace, policy):
    result = run(cost, from_trace(trace, policy, 8), "compact",
                 workload=poisson(5.0, 40, seed=1, output=(128, 128)))
    replayed = replay(policy, trace).summary()["layers_per_token"]
    assert result.summary["layers_per_token"] == pytest.approx(replayed, rel=0.15)
    assert 0 < result.summary["quality_delta"] < 0.05


def test_selfspec_acceptance_matches_the_trace(cost, trace):
    from eesim.policy.selfspec import acceptance, speculate

    result = run(cost, from_trace(trace, None, 8), "selfspec",
                 workload=poisson(5.0, 60, seed=2, output=(128, 128)))
    exact = acceptance(speculate(trace, 4, 4))["acceptance_rate"]
    assert result.summary["acceptance_rate"] == pytest.approx(exact, abs=0.05)
    assert result.summary["quality_delta"] == 0


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["full", *EARLY_EXIT]), rate=st.floats(5, 400),
       max_batch=st.integers(1, 12), kv_blocks=st.integers(12, 60), seed=st.integers(0, 99),
       chunk=st.sampled_from([None, 8, 32]), defer=st.booleans())
def test_every_request_completes_once_in_order_within_memory(cost, trace, policy, name, rate,
                                                             max_batch, kv_blocks, seed, chunk,
                                                             defer):
    behaviour = from_trace(trace, policy, 8)
    workload = poisson(rate, 30, seed=seed, prompt=(8, 40), output=(2, 60))
    block_bytes = 16 * 8 * cost.meta.memory["kv_bytes_per_token_per_layer"]
    sched = SchedulerConfig(max_batch=max_batch, kv_capacity_bytes=kv_blocks * block_bytes,
                            prefill="chunked" if chunk else "whole",
                            max_batched_tokens=chunk or 8192)
    kv = "defer" if defer and name != "selfspec" else None
    r = run(cost, behaviour, name, workload, strategy_kv=kv, sched=sched, seed=seed)
    req = r.requests
    assert (req["output_tokens"].to_numpy() == workload.output_len).all()
    assert (req["first_token_s"] >= req["arrival_s"]).all()
    assert (req["completion_s"] >= req["first_token_s"]).all()
    assert np.all(np.diff(r.series["time_s"].to_numpy()) >= 0)
    kv = r.series["memory_bytes"] - cost.meta.memory["weights_bytes"] \
        - r.series["batch"] * cost.meta.memory["activation_bytes_per_token"]
    assert kv.max() <= kv_blocks * block_bytes


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["full", "compact", "selfspec"]), replicas=st.integers(1, 3))
def test_more_replicas_never_lower_throughput(cost, trace, policy, name, replicas):
    behaviour = from_trace(trace, policy, 8)
    workload = poisson(400.0, 80, seed=5, output=(32, 32))
    fewer = run(cost, behaviour, name, workload, replicas=replicas).summary
    more = run(cost, behaviour, name, workload, replicas=replicas + 1).summary
    assert more["throughput_tokens_per_s"] >= fewer["throughput_tokens_per_s"] * 0.99


def test_batch_of_one_queues_like_md1(cost, trace):
    """Max batch 1, fixed lengths: a single deterministic server. Pollaczek-Khinchine:
    mean wait Wq = rho / (2 mu (1 - rho))."""
    behaviour = from_trace(trace, None, 8)
    probe = run(cost, behaviour, "full", closed_loop(1, 3, 0, prompt=(16, 16), output=(8, 8)),
                sched=SchedulerConfig(max_batch=1))
    service = float((probe.requests["completion_s"] - probe.requests["arrival_s"]).iloc[-1])
    prefill = float((probe.requests["first_token_s"] - probe.requests["arrival_s"]).iloc[-1])
    rho = 0.5
    workload = poisson(rho / service, 3000, seed=11, prompt=(16, 16), output=(8, 8))
    r = run(cost, behaviour, "full", workload, sched=SchedulerConfig(max_batch=1))
    wait = (r.requests["first_token_s"] - r.requests["arrival_s"]).mean() - prefill
    expected = rho * service / (2 * (1 - rho))
    assert wait == pytest.approx(expected, rel=0.12)


def test_bad_input_is_refused_before_any_work(tmp_path):
    runner = CliRunner()
    base = ["simulate", "--profile", str(PROFILE), "--trace", str(TRACE), "--requests", "5"]
    cases = [
        (["--strategy", "turbo", "--rate", "1"], "strategy"),
        (["--rate", "-3"], "rate"),
        (["--rate", "1", "--arrivals", "azure-conv"], "exactly one of"),
        (["--profile", str(ROOT / "profiles/analytic/h100-sxm-llama-3-8b.parquet"), "--rate", "1"],
         "recorded on a model of 8 layers"),
        (["--rate", "1", "--trace", str(tmp_path / "none.parquet")], "no such trace file"),
    ]
    for extra, message in cases:
        out = runner.invoke(app, base + extra)
        assert out.exit_code == 2, (extra, out.output)
        assert message in out.output, (extra, out.output)


def test_simulate_cli_writes_the_outputs(tmp_path):
    out = CliRunner().invoke(app, ["simulate", "--profile", str(PROFILE), "--trace", str(TRACE),
                                   "--strategy", "compact", "--rate", "20", "--requests", "20",
                                   "--json", "--out", str(tmp_path / "o")])
    assert out.exit_code == 0, out.output
    import json

    summary = json.loads(out.stdout)
    for key in ("ttft_s", "tpot_s", "throughput_tokens_per_s", "throughput_requests_per_s",
                "peak_memory_bytes", "layers_per_token", "acceptance_rate", "quality_delta",
                "extrapolated"):
        assert key in summary
    assert set(summary["tpot_s"]) == {"mean", "p50", "p90", "p99"}
    assert len(pd.read_parquet(tmp_path / "o" / "requests.parquet")) == 20
    assert {"time_s", "batch", "queue", "memory_bytes"} <= set(
        pd.read_parquet(tmp_path / "o" / "series.parquet").columns)


def test_shadow_rate_costs_more_and_changes_no_token(cost, trace, policy):
    behaviour = from_trace(trace, policy, 8)
    runs = [run(cost, behaviour, "compact", shadow_rate=r).summary for r in (0.0, 0.3, 1.0)]
    assert runs[0]["shadow_tokens"] == 0 < runs[1]["shadow_tokens"] < runs[2]["shadow_tokens"]
    assert runs[0]["layers_per_token"] < runs[1]["layers_per_token"] < runs[2]["layers_per_token"]
    assert runs[0]["quality_delta"] == runs[1]["quality_delta"] == runs[2]["quality_delta"]
    assert runs[2]["layers_per_token"] == pytest.approx(
        run(cost, behaviour, "full").summary["layers_per_token"])


@pytest.mark.parametrize("name", EARLY_EXIT)
def test_kill_switch_at_zero_means_full_depth_decoding(cost, trace, policy, name):
    s = run(cost, from_trace(trace, policy, 8), name, kill_at=0.0).summary
    assert s["quality_delta"] == 0
    assert s["layers_per_token"] >= run(cost, from_trace(trace, None, 8), "full").summary[
        "layers_per_token"] - 1e-9


def test_static_batching_waits_for_the_whole_batch(cost, trace):
    behaviour = from_trace(trace, None, 8)
    workload = poisson(200.0, 40, seed=4, output=(10, 60))
    cont = run(cost, behaviour, "full", workload, sched=SchedulerConfig(max_batch=8)).summary
    static = run(cost, behaviour, "full", workload,
                 sched=SchedulerConfig(max_batch=8, batching="static")).summary
    assert static["ttft_s"]["mean"] > cont["ttft_s"]["mean"]
    assert static["throughput_tokens_per_s"] < cont["throughput_tokens_per_s"]


def test_chunked_prefill_keeps_long_prompts_from_stalling_decodes(cost, trace):
    behaviour = from_trace(trace, None, 8)
    workload = poisson(40.0, 80, seed=6, prompt=(16, 700), output=(32, 64))
    whole = run(cost, behaviour, "full", workload, sched=SchedulerConfig(max_batch=16)).summary
    chunked = run(cost, behaviour, "full", workload, sched=SchedulerConfig(
        max_batch=16, prefill="chunked", max_batched_tokens=64)).summary
    assert chunked["tpot_s"]["p99"] < whole["tpot_s"]["p99"]
    assert chunked["output_tokens"] == whole["output_tokens"]


@pytest.mark.parametrize("defer", [False, True])
def test_a_layer_range_per_step_prices_as_one_operation_per_step(cost, defer):
    """Layers and KV fills whose range differs per step ((K,) arrays, monotone's depth) cost
    what the same operations cost given step by step with an int range each (deferred KV's
    catch-up across steps included)."""
    from eesim.plan.ops import KVFill, Layers
    from eesim.sim.pricer import Pricer

    rng = np.random.default_rng(3)
    rows = rng.random((4, 5)) < 0.7
    context = rng.integers(5, 300, (4, 5))
    depth = np.array([8, 3, 1, 5])

    def priced(ops):
        pricer = Pricer(cost, context, rows, np.zeros((5, 8), np.int64) if defer else None)
        for op in ops:
            pricer.price(op)
        return pricer.seconds, pricer.layer_evals

    early = rows & (depth < 8)[:, None]
    together = priced([Layers(0, depth, rows), KVFill(depth, 8, early)])
    steps = np.eye(4, dtype=bool)[:, :, None]  # step k alone
    apart = priced([op for k in range(4) for op in (Layers(0, int(depth[k]), rows & steps[k]),
                                                     KVFill(int(depth[k]), 8, early & steps[k]))])
    np.testing.assert_allclose(together[0], apart[0], rtol=1e-12)
    assert together[1].tolist() == apart[1].tolist()
    if not defer:
        assert together[1].sum(axis=1).tolist() == (rows.sum(axis=1) * depth).tolist()


def test_deferred_kv_is_caught_up_by_the_next_token_that_reaches_the_layer(cost):
    """One row, three steps, four layers: the first token exits after layer 2, so the second
    token runs layers 3 and 4 for two positions (itself and the catch-up)."""
    from eesim.plan.ops import Layers
    from eesim.sim.pricer import Pricer

    present = np.ones((3, 1), bool)
    pricer = Pricer(cost, np.full((3, 1), 10), present, deferred=np.zeros((1, 4), np.int64))
    pricer.price(Layers(0, 2, present))
    pricer.price(Layers(2, 4, np.array([[False], [True], [True]])))
    seconds = pricer.seconds
    assert pricer.layer_evals[:, 0].tolist() == [2, 1 + 1 + 2 + 2, 4]
    assert pricer.deferred_after(1)[0].tolist() == [0, 0, 1, 1]
    assert pricer.deferred_after(3)[0].tolist() == [0, 0, 0, 0]
    assert seconds[1] > seconds[2] > seconds[0]


def test_defer_trades_kv_fill_for_catch_up_work(cost, trace, policy):
    behaviour = from_trace(trace, policy, 8)
    propagate = run(cost, behaviour, "compact").summary
    defer = run(cost, behaviour, "compact", strategy_kv="defer").summary
    assert defer["layers_per_token"] > propagate["layers_per_token"]
    assert defer["quality_delta"] == propagate["quality_delta"]


@pytest.mark.parametrize("name", ["full", *EARLY_EXIT])
def test_bulk_stepping_equals_stepping_one_at_a_time(cost, trace, policy, name):
    """Pricing K steps per pass of the strategy is bookkeeping only: the same run, one step per
    pass, gives the same tokens, times and counters."""

    behaviour = from_trace(trace, policy, 8)
    workload = poisson(80.0, 40, seed=9, output=(10, 50))
    bulk = run(cost, behaviour, name, workload, shadow_rate=0.2).requests
    single = run(cost, behaviour, name, workload, shadow_rate=0.2, stepping=Stepping.PLAIN).requests
    pd.testing.assert_frame_equal(bulk, single, check_exact=False, rtol=1e-9)


@pytest.mark.parametrize("name", ["sync", "compact", "regroup", "monotone"])
def test_bulk_stepping_equals_one_step_at_a_time_with_deferred_kv(cost, trace, policy, name):

    behaviour = from_trace(trace, policy, 8)
    workload = poisson(80.0, 30, seed=12, output=(10, 40))
    bulk = run(cost, behaviour, name, workload, strategy_kv="defer").requests
    single = run(cost, behaviour, name, workload, strategy_kv="defer", stepping=Stepping.PLAIN).requests
    pd.testing.assert_frame_equal(bulk, single, check_exact=False, rtol=1e-9)


@pytest.mark.parametrize("name", ["full", *EARLY_EXIT])
def test_a_yielded_operation_keeps_its_rows(trace, policy, name):
    """Interpreters may keep operations (deferred KV prices them at the end): a strategy must
    never change a row mask it has already yielded."""
    from eesim.plan.strategies import plan
    from eesim.scenario.controller import TraceController

    behaviour = from_trace(trace, policy, 8)
    rng = np.random.default_rng(0)
    k, r = 6, 10
    tokens = rng.integers(0, len(behaviour.pass_bits), (k, r))
    ctl = TraceController(behaviour, tokens, np.full(r, 3), np.tile(np.arange(k)[:, None], (1, r)))
    ctl.drafted = np.full((k, r), 4)
    ctl.accepted = rng.integers(0, 5, (k, r))

    class Batch:
        rows = rng.random((k, r)) < 0.8
        n_layers = 8

    seen = []
    for op in plan(strategy(name), Batch(), ctl):
        masks = [v for v in (getattr(op, f, None) for f in ("rows", "steps")) if v is not None]
        seen.append((op, [m.copy() for m in masks]))
    for op, copies in seen:
        masks = [v for v in (getattr(op, f, None) for f in ("rows", "steps")) if v is not None]
        for now, then in zip(masks, copies, strict=True):
            assert np.array_equal(now, then), op


@pytest.mark.parametrize("name", ["full", *EARLY_EXIT])
@pytest.mark.parametrize("budget", [8192, 96])
def test_planning_arrivals_into_a_bulk_changes_nothing(cost, trace, policy, name, budget):
    """Arrivals planned into a bulk (admitted at the first step after they arrive) give the
    run that ending the bulk at every arrival gives, prefill budget per step included."""
    behaviour = from_trace(trace, policy, 8)
    workload = bursty(20.0, 120, seed=0, cv=3.0, prompt=(16, 80), output=(64, 160))
    sched = SchedulerConfig(max_batch=16, max_batched_tokens=budget)
    ahead = run(cost, behaviour, name, workload, sched=sched).requests
    plain = run(cost, behaviour, name, workload, sched=sched,
                stepping=Stepping(lookahead=False)).requests
    pd.testing.assert_frame_equal(ahead, plain, check_exact=False, rtol=1e-9)


@pytest.mark.parametrize("name", ["full", *EARLY_EXIT])
@pytest.mark.parametrize(("bulk", "output"), [(64, (64, 160)), (256, (16, 60))])
def test_planning_arrivals_into_rows_that_completions_free_changes_nothing(cost, trace, policy, name,
                                                                           bulk, output, monkeypatch):
    """With no row free, an arrival planned into a bulk is admitted a step after a row
    completes (the running rows', or, in long bulks, a planned arrival's), first come first
    served: the run that ending the bulk at every arrival gives."""
    import eesim.sim.replica as replica

    behaviour = from_trace(trace, policy, 8)
    workload = poisson(5.0, 120, seed=0, prompt=(16, 80), output=output)
    sched = SchedulerConfig(max_batch=4)
    past_free_rows = []
    price = replica.Replica._price

    def counted(self, decoding, joining, future, admit_at, *args):
        p = price(self, decoding, joining, future, admit_at, *args)
        past_free_rows.append(int((p.admit_at < p.k_steps).sum()) > self._room())
        return p
    monkeypatch.setattr(replica.Replica, "_price", counted)
    ahead = run(cost, behaviour, name, workload, sched=sched, stepping=Stepping(bulk=bulk)).requests
    assert any(past_free_rows)  # the case under test happened
    plain = run(cost, behaviour, name, workload, sched=sched,
                stepping=Stepping(bulk=bulk, lookahead=False)).requests
    pd.testing.assert_frame_equal(ahead, plain, check_exact=False, rtol=1e-9)


@pytest.mark.parametrize("name", ["full", *EARLY_EXIT])
@pytest.mark.parametrize("budget", [8192, 100])
def test_planning_queued_requests_into_a_bulk_changes_nothing(cost, trace, policy, name, budget):
    """Under overload a completion hands its row to the head of the queue a step later; a bulk
    that plans those admissions in gives the run that stepping one at a time gives (prompts
    admitted together within the prefill budget, arrivals queueing behind)."""

    behaviour = from_trace(trace, policy, 8)
    workload = poisson(400.0, 48, seed=5, prompt=(16, 80), output=(8, 40))
    sched = SchedulerConfig(max_batch=4, max_batched_tokens=budget)
    bulk = run(cost, behaviour, name, workload, sched=sched)
    single = run(cost, behaviour, name, workload, sched=sched, stepping=Stepping.PLAIN)
    pd.testing.assert_frame_equal(bulk.requests, single.requests, check_exact=False, rtol=1e-9)
    assert bulk.summary["prefill_tokens"] == single.summary["prefill_tokens"] == workload.prompt_len.sum()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 12), k=st.integers(1, 12), r=st.integers(1, 6), min_layer=st.integers(1, 13),
       every=st.integers(1, 3), enabled=st.booleans(), seed=st.integers(0, 2**16))
def test_expected_depth_follows_each_rows_previous_exit(n, k, r, min_layer, every, enabled, seed):
    """Regroup's predictor, walked one row and one token at a time: a present token is expected
    at the depth its row's previous token left at minus one (at least min_layer, at most the
    last layer), and the next
    token's expectation follows from where this one exits (its first passing check at or past
    that depth, else the last layer); an absent step keeps the row's expectation."""
    from eesim.scenario.behaviour import Behaviour
    from eesim.scenario.controller import TraceController

    rng = np.random.default_rng(seed)
    t = k * r
    bits = rng.integers(0, 1 << n, t).astype(np.uint64)
    b = Behaviour(n_layers=n, offsets=np.array([0, t]), tasks=np.array(["any"]), pass_bits=bits,
                  agree_bits=np.zeros(t, np.uint64), mapped_from=None)
    tokens = np.arange(t).reshape(k, r)
    rows = rng.random((k, r)) < 0.7
    last = rng.integers(1, n + 1, r)
    got = TraceController(b, tokens, last, None, enabled).expected_depth(rows, min_layer, every)
    checks = [m for m in range(1, n) if m % every == 0]
    for col in range(r):
        current = min(n, max(min_layer, int(last[col])))
        for step in range(k):
            assert got[step, col] == current
            if rows[step, col]:
                word = int(bits[tokens[step, col]])
                exits = [m for m in checks if m >= current and enabled and word >> (m - 1) & 1]
                current = min(n, max(min_layer, (exits[0] if exits else n) - 1))
