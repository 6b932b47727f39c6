"""Workloads are deterministic, have the asked-for rates, and refuse nonsense."""

import numpy as np
import pytest

from eesim.scenario.workload import azure, bursty, closed_loop, poisson


def test_same_seed_same_workload_and_rate_is_respected():
    a, b = poisson(4.0, 4000, seed=7), poisson(4.0, 4000, seed=7)
    assert np.array_equal(a.arrival_s, b.arrival_s)
    assert len(a) / a.arrival_s[-1] == pytest.approx(4.0, rel=0.05)
    gaps = np.diff(a.arrival_s)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.1)  # exponential: cv = 1


def test_bursty_gaps_have_the_asked_for_variability():
    w = bursty(4.0, 20000, seed=1, cv=3.0)
    gaps = np.diff(w.arrival_s)
    assert gaps.mean() == pytest.approx(0.25, rel=0.1)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.15)


def test_azure_replay_scales_time_and_clips_lengths():
    full = azure("azure-conv")
    assert len(full) == 19366 and 3400 < full.arrival_s[-1] < 3600
    fast = azure("azure-conv", n=1000, time_scale=2.0, max_prompt=512, max_output=64)
    assert np.allclose(fast.arrival_s, full.arrival_s[:1000] / 2)
    assert fast.prompt_len.max() == 512 and fast.output_len.max() == 64


def test_bad_workloads_are_refused():
    with pytest.raises(ValueError, match="rate must be > 0 requests/s, got -1"):
        poisson(-1, 10, 0)
    with pytest.raises(ValueError, match="unknown arrival log 'azure-chat'"):
        azure("azure-chat")
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        closed_loop(0, 10, 0)
    assert np.isnan(closed_loop(4, 10, 0).arrival_s).all()
