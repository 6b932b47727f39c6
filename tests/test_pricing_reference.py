"""The fast pricer against the plain path: K steps planned and priced at once (eesim.sim.pricer)
equal the same steps planned one at a time and priced operation by operation
(eesim.sim.reference), on random batches, strategies, exit policies and profiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eesim.plan.ops import executed
from eesim.plan.strategies import STRATEGIES, StrategyConfig, plan
from eesim.scenario.controller import TraceController
from eesim.sim.pricer import Pricer
from eesim.sim.reference import price_prefill, price_step
from tests.conftest import cached_cost as _cost
from tests.conftest import threshold_behaviour as _behaviour

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("profiles/cpu/ref.parquet", "profiles/cpu/ref-quick.parquet",
            "profiles/analytic/h100-sxm-llama-3-8b.parquet")


class _Batch:
    def __init__(self, rows: np.ndarray, n_layers: int) -> None:
        self.rows, self.n_layers = rows, n_layers


@st.composite
def scenarios(draw):
    cost = _cost(draw(st.sampled_from(PROFILES)))
    n = cost.meta.model.n_layers
    name = draw(st.sampled_from(STRATEGIES))
    kvs = ["propagate", "defer"] + (["shared"] if name == "selfspec" else [])
    cfg = StrategyConfig(name=name, kv=draw(st.sampled_from(kvs)),
                         min_layer=draw(st.integers(1, n)), check_every=draw(st.integers(1, 3)),
                         draft_layer=draw(st.integers(1, n - 1)), drafts=draw(st.integers(1, 5)),
                         horizon=draw(st.integers(1, 200)))
    k, r = draw(st.integers(1, 10)), draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**32 - 1))
    return (cost, cfg, _behaviour(draw(st.sampled_from([0.5, 0.8, 0.95])), n), k, r,
            draw(st.booleans()), draw(st.floats(0.0, 0.5)), seed)


def _controller(behaviour, tokens, last_depth, positions, enabled, shadow, drafted, accepted):
    ctl = TraceController(behaviour, tokens, last_depth, positions, enabled, shadow)
    ctl.drafted, ctl.accepted = drafted, accepted
    return ctl


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_bulk_pricing_equals_the_plain_path_one_step_at_a_time(scenario):
    cost, cfg, behaviour, k, r, enabled, shadow_share, seed = scenario
    n = behaviour.n_layers
    rng = np.random.default_rng(seed)
    present = rng.random((k, r)) < 0.8
    tokens = rng.integers(0, len(behaviour.pass_bits), (k, r))
    positions = np.cumsum(present, axis=0) + rng.integers(0, 300, r)
    context = rng.integers(1, 400, r) + positions
    last_depth = rng.integers(cfg.min_layer, n + 1, r)
    shadow = (rng.random((k, r)) < shadow_share) & present
    drafted = np.where(present, rng.integers(0, cfg.drafts + 1, (k, r)), 0)
    accepted = np.minimum(drafted, rng.integers(0, cfg.drafts + 1, (k, r)))
    defer = cfg.kv == "defer" and cfg.name != "selfspec"
    owed = rng.integers(0, 3, (r, n)) if defer else None

    ctl = _controller(behaviour, tokens, last_depth, positions, enabled, shadow, drafted, accepted)
    pricer = Pricer(cost, context, present, owed)
    pricer.passes(present.sum(axis=1))
    ops = list(plan(cfg, _Batch(present, n), ctl)) if present.any() else []
    for op in ops:
        pricer.price(op)
    bulk_ops = sum((executed(op) for op in ops), np.zeros(k))

    depth = last_depth.copy()
    for step in range(k):
        one = slice(step, step + 1)
        ctl1 = _controller(behaviour, tokens[one], depth, positions[one], enabled, shadow[one],
                           drafted[one], accepted[one])
        ops1 = list(plan(cfg, _Batch(present[one], n), ctl1)) if present[step].any() else []
        plain = price_step(cost, ops1, present[step], context[step], owed)
        assert plain.seconds == pytest.approx(pricer.seconds[step], rel=1e-9, abs=1e-15)
        assert plain.layer_evals.tolist() == pricer.layer_evals[step].tolist()
        assert plain.exit_checks.tolist() == pricer.exit_checks[step].tolist()
        assert plain.operations == bulk_ops[step]
        assert ctl1.exit_layer[0].tolist() == ctl.exit_layer[step].tolist()
        if defer:
            owed = plain.owed
            assert owed.tolist() == pricer.deferred_after(step + 1).tolist()
        # the next step's expectation (regroup): one less than the layer this token left at
        exit_layer = ctl1.exit_layer[0]
        depth = np.where(present[step], np.maximum(cfg.min_layer, np.where(exit_layer > 0,
                                                                           exit_layer, n) - 1), depth)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(PROFILES), st.lists(st.integers(1, 600), min_size=1, max_size=8),
       st.integers(0, 2**32 - 1))
def test_prefill_and_admissions_price_as_the_plain_path(path, prompts, seed):
    cost = _cost(path)
    n = cost.meta.model.n_layers
    rng = np.random.default_rng(seed)
    chunks = np.array(prompts)
    cached = rng.integers(0, 300, len(chunks))
    done = rng.random(len(chunks)) < 0.5
    pricer = Pricer(cost, np.zeros((3, 1)))
    pricer.prefill(0, chunks, cached, done, n)
    pricer.admit(np.full(len(chunks), 2), chunks, n)
    seconds = pricer.seconds
    assert seconds[0] == pytest.approx(price_prefill(cost, chunks, cached, int(done.sum()), n), rel=1e-9)
    assert seconds[1] == 0.0
    assert seconds[2] == pytest.approx(price_prefill(cost, chunks, np.zeros_like(chunks),
                                                     len(chunks), n), rel=1e-9)


def test_the_plain_path_fits_on_three_screens():
    lines = (ROOT / "eesim" / "sim" / "reference.py").read_text().splitlines()
    assert len(lines) <= 150
