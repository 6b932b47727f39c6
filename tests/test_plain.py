"""The simulator's fast path against its plain path: bulk stepping with a vectorised pricer and
look-ahead (eesim/sim/replica.py) gives what one step at a time priced operation by operation
(eesim/sim/plain.py) gives, on random workloads, strategies, KV options, policies, schedulers
and profiles: the same counts, times equal to 1e-9 relative."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eesim.plan.strategies import STRATEGIES, StrategyConfig
from eesim.scenario.workload import bursty, closed_loop, poisson
from eesim.sched import SchedulerConfig
from eesim.sim.replica import Stepping
from eesim.sim.simulate import simulate
from tests.conftest import cached_cost as _cost
from tests.conftest import threshold_behaviour as _behaviour

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("profiles/cpu/ref.parquet", "profiles/analytic/h100-sxm-llama-3-8b.parquet")


@st.composite
def runs(draw):
    cost = _cost(draw(st.sampled_from(PROFILES)))
    n = cost.meta.model.n_layers
    name = draw(st.sampled_from(STRATEGIES))
    kvs = ["propagate", "defer"] + (["shared"] if name == "selfspec" else [])
    cfg = StrategyConfig(name=name, kv=draw(st.sampled_from(kvs)), min_layer=draw(st.integers(1, n)),
                         check_every=draw(st.integers(1, 2)), draft_layer=draw(st.integers(1, n - 1)),
                         drafts=draw(st.integers(1, 4)), horizon=draw(st.integers(4, 64)))
    count, seed = draw(st.integers(4, 24)), draw(st.integers(0, 999))
    prompt, output = (8, draw(st.integers(8, 80))), (2, draw(st.integers(2, 40)))
    kind = draw(st.sampled_from(["poisson", "bursty", "closed"]))
    rate = draw(st.floats(2.0, 400.0))
    workload = (poisson(rate, count, seed, prompt, output) if kind == "poisson" else
                bursty(rate, count, seed, 3.0, prompt, output) if kind == "bursty" else
                closed_loop(draw(st.integers(1, 6)), count, seed, prompt, output))
    block = cost.meta.memory["kv_bytes_per_token_per_layer"] * n * 16
    sched = SchedulerConfig(max_batch=draw(st.integers(1, 8)),
                            batching=draw(st.sampled_from(["continuous", "static"])),
                            prefill=draw(st.sampled_from(["whole", "chunked"])),
                            max_batched_tokens=draw(st.sampled_from([16, 48, 8192])),
                            kv_capacity_bytes=block * draw(st.sampled_from([12, 24, 10_000])))
    options = {"replicas": draw(st.integers(1, 2)),
               "router": draw(st.sampled_from(["round-robin", "least-work"])),
               "shadow_rate": draw(st.sampled_from([0.0, 0.2])),
               "kill_at": draw(st.sampled_from([None, 0.05])), "seed": seed}
    return cost, _behaviour(draw(st.sampled_from([0.6, 0.9])), n), workload, cfg, sched, options


@settings(max_examples=int(__import__('os').environ.get('EESIM_PLAIN_EXAMPLES', 60)), deadline=None)
@given(runs())
def test_the_fast_path_gives_the_plain_paths_run(run):
    cost, behaviour, workload, cfg, sched, options = run
    fast = simulate(cost, behaviour, workload, cfg, sched, **options)
    plain = simulate(cost, behaviour, workload, cfg, sched, **options, stepping=Stepping.PLAIN)
    pd.testing.assert_frame_equal(fast.requests, plain.requests, check_exact=False, rtol=1e-9)
    for key in ("peak_memory_bytes", "prefill_tokens", "preemptions", "shadow_tokens"):
        assert fast.summary[key] == plain.summary[key], key


def _workload(kind: str):
    if kind == "closed":
        return closed_loop(6, 30, 1, prompt=(64, 64), output=(5, 30))
    if kind == "closed-short":
        return closed_loop(3, 6, 0, prompt=(8, 8), output=(2, 2))
    if kind == "slow":
        return bursty(2.0, 11, 1, 3.0, prompt=(8, 9), output=(2, 12))
    return bursty(44.0, 16, 474, 3.0, prompt=(8, 9), output=(2, 19))


@pytest.mark.parametrize(("what", "name", "kind", "sched", "options"), [
    # chunked prefill whose budget leaves admitted prompts for later steps
    ("prompts waiting for the prefill budget", "full", "closed",
     SchedulerConfig(max_batch=4, prefill="chunked", max_batched_tokens=32), {}),
    # another replica's completion sends a closed-loop request here in the middle of a bulk
    ("closed loop across replicas", "full", "closed-short", SchedulerConfig(max_batch=2),
     {"replicas": 2}),
    # the memory peak is the step holding the most (not the most blocks and most rows of a bulk)
    ("memory peak per step", "full", "slow", SchedulerConfig(max_batch=3), {"replicas": 2}),
    # the least-work router reads each replica's work as of now, mid-bulk
    ("least work mid-bulk", "full", "bursty", SchedulerConfig(max_batch=1), {"replicas": 2,
                                                                           "router": "least-work"}),
    # regroup's expectation for a preempted row that rejoins after its recompute
    ("regroup after a recompute", "regroup", "bursty",
     SchedulerConfig(max_batch=7, kv_capacity_bytes=786432), {"replicas": 2, "router": "least-work"}),
])
def test_cases_the_plain_path_found(what, name, kind, sched, options):
    """Each case once gave another run in bulks than one step at a time."""
    cost = _cost(PROFILES[0])
    behaviour = _behaviour(0.6, 8)
    workload = _workload(kind)
    cfg = StrategyConfig(name=name)
    seed = 0 if kind in ("closed-short", "slow") else 474
    fast = simulate(cost, behaviour, workload, cfg, sched, seed=seed, **options)
    plain = simulate(cost, behaviour, workload, cfg, sched, seed=seed, stepping=Stepping.PLAIN, **options)
    pd.testing.assert_frame_equal(fast.requests, plain.requests, check_exact=False, rtol=1e-9)
    assert fast.summary["peak_memory_bytes"] == plain.summary["peak_memory_bytes"], what
