"""The cost model interpolates measured grids honestly; profiles round-trip and refuse misuse."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eesim.costmodel import CostModel, GridTerm
from eesim.model.presets import PRESETS, from_hf_config, model_shape
from eesim.profile.analytic import analytic_profile
from eesim.profile.env import nvml_facts, nvml_used_bytes, resolve_device
from eesim.profile.format import Profile, ProfileError, ProfileMeta, read_profile, write_profile

ROWS, QUERY, CONTEXT = (1, 4, 16), (1, 4), (0, 128, 512)


def cost(r, q, c):
    """A made-up but monotone cost surface."""
    return 1e-4 + 2e-5 * r * q + 1e-7 * r * c + 3e-6 * q


def grid_points(drop=()) -> pd.DataFrame:
    return pd.DataFrame([(r, q, c, cost(r, q, c)) for r in ROWS for q in QUERY for c in CONTEXT
                         if (r, q, c) not in drop], columns=["rows", "query", "context", "median_s"])


def test_exact_at_grid_points():
    term = GridTerm.from_points(grid_points())
    for r in ROWS:
        for q in QUERY:
            for c in CONTEXT:
                value, extrapolated = term(r, q, c)
                assert value == pytest.approx(cost(r, q, c), rel=1e-12)
                assert not extrapolated


@settings(max_examples=200, deadline=None)
@given(r=st.floats(1, 16), c=st.floats(0, 512), dr=st.floats(0, 8), dc=st.floats(0, 256))
def test_monotone_between_grid_points(r, c, dr, dc):
    term = GridTerm.from_points(grid_points())
    a, _ = term(r, 1, c)
    b, _ = term(min(r + dr, 16), 1, min(c + dc, 512))
    assert b >= a - 1e-15


def test_noisy_measurements_are_made_monotone():
    points = grid_points()
    points.loc[(points["rows"] == 4) & (points["query"] == 1) & (points["context"] == 0),
               "median_s"] = 1e-6  # a glitch: faster with more rows than with one
    term = GridTerm.from_points(points)
    assert term(4, 1, 0)[0] >= term(1, 1, 0)[0]


def test_extrapolation_is_reported_and_continues_the_last_slope():
    term = GridTerm.from_points(grid_points())
    value, extrapolated = term(32, 1, 512)
    assert extrapolated
    slope = cost(16, 1, 512) - cost(4, 1, 512)
    assert value == pytest.approx(cost(16, 1, 512) + slope * (32 - 16) / (16 - 4))
    values, flags = term(np.array([2, 64]), 1, np.array([100, 2048]))
    assert flags.tolist() == [False, True]


def test_points_skipped_by_the_profiler_count_as_extrapolated():
    term = GridTerm.from_points(grid_points(drop={(16, 4, 512)}))
    assert term(16, 4, 512)[1] and not term(4, 1, 128)[1]
    assert term(16, 4, 512)[0] > 0


def analytic():
    return analytic_profile("h100-sxm", "llama-3-8b")


def test_profile_round_trip(tmp_path):
    prof = analytic()
    write_profile(prof, tmp_path / "p.parquet")
    back = read_profile(tmp_path / "p.parquet")
    assert back.meta == prof.meta
    pd.testing.assert_frame_equal(back.table, prof.table)
    assert CostModel(back).cost("layer", 8, 1, 1024) == CostModel(prof).cost("layer", 8, 1, 1024)


def test_analytic_profiles_are_labelled_and_hold_every_term():
    model = CostModel(analytic())
    assert model.meta.kind == "analytic" and "ANALYTIC" in model.label
    assert {"layer", "exit_head", "host_sync", "compact", "kv_fill"} <= set(model.terms)
    # batch-1 decode of an 8B model is bandwidth bound: ~16 GB of weights at ~2.7 TB/s
    step = 32 * model.cost("layer", 1, 1, 512) + model.cost("final_head", 1)
    assert 4e-3 < step < 1e-2
    assert model.cost("exit_head", 1) < model.cost("layer", 1, 1, 512) * 3


def test_a_profile_of_another_shape_is_refused():
    model = CostModel(analytic())
    model.check_shape(PRESETS["llama-3-8b"])
    with pytest.raises(ProfileError, match=r"made for model 'llama-3-8b'.*dim: profile 4096 vs trace 2048"):
        model.check_shape(PRESETS["llama-3.2-1b"], "trace")


def test_unknown_terms_and_negative_times_are_refused():
    prof = analytic()
    bad = prof.table.copy()
    bad.loc[0, "median_s"] = -1.0
    with pytest.raises(ProfileError, match="column 'median_s' row 0 is -1.0"):
        Profile(bad, prof.meta, "bad.parquet")
    with pytest.raises(ProfileError, match="has no term 'warp'"):
        CostModel(prof).cost("warp", 1)


def test_device_facts_follow_the_machine():
    """Without a GPU: no NVML facts, `auto` is the CPU and `cuda` is refused; with one, NVML
    (where the driver answers) reports its memory and `auto` picks it."""
    import torch

    if not torch.cuda.is_available():
        assert nvml_facts() is None and nvml_used_bytes() is None
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
        return
    facts = nvml_facts()
    if facts is not None:
        assert facts["memory_total_bytes"] > 0 and 0 <= nvml_used_bytes() <= facts["memory_total_bytes"]
    assert resolve_device("auto").type == "cuda" and resolve_device("cuda").type == "cuda"


def test_model_shapes_by_name_and_from_hf_config(tmp_path):
    assert model_shape("llama-3-8b").n_kv_heads == 8
    (tmp_path / "config.json").write_text(
        '{"vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,'
        ' "num_key_value_heads": 2, "intermediate_size": 128}')
    cfg = from_hf_config(tmp_path / "config.json")
    assert (cfg.dim, cfg.n_layers, cfg.n_kv_heads) == (64, 3, 2)
    with pytest.raises(ValueError, match="unknown model 'gpt-5'"):
        model_shape("gpt-5")
    (tmp_path / "bad.json").write_text('{"hidden_size": 64}')
    with pytest.raises(ValueError, match="bad.json: missing field"):
        from_hf_config(tmp_path / "bad.json")


def test_profile_meta_requires_kind():
    with pytest.raises(ValueError):
        ProfileMeta(device="x", device_type="cpu", model_name="m", model=PRESETS["llama-2-7b"],
                    dtype="float32", layers_measured=1, kind="guessed")
