"""A real (tiny) CPU profile: every term measured, environment recorded, usable by the cost model."""

import json

import pytest
from typer.testing import CliRunner

from eesim.cli import app
from eesim.costmodel import CostModel
from eesim.model.presets import model_shape
from eesim.profile.format import Profile, ProfileError, read_profile

TINY_HF = {"vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
           "num_key_value_heads": 2, "intermediate_size": 128, "max_position_embeddings": 1024}


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("profile")
    (folder / "config.json").write_text(json.dumps(TINY_HF))
    out = CliRunner().invoke(app, ["profile", "--model", f"hf:{folder / 'config.json'}", "--quick",
                                   "--device", "cpu", "--out", str(folder / "p.parquet")])
    assert out.exit_code == 0, out.output
    return folder / "p.parquet"


def test_profile_show_lists_the_terms_and_environment(tiny_profile):
    out = CliRunner().invoke(app, ["profile", "show", str(tiny_profile), "--json"])
    doc = json.loads(out.stdout)
    assert doc["kind"] == "measured" and doc["device_type"] == "cpu"
    assert {"layer", "exit_head", "host_sync", "compact", "kv_fill", "regroup", "mask",
            "final_head", "embed", "sample", "layer_call", "step"} <= set(doc["terms"])
    assert doc["env"]["torch"] and doc["env"]["nvml"] is None and doc["env"]["threads"] >= 1
    assert doc["memory"]["kv_bytes_per_token_per_layer"] == 2 * 2 * 16 * 4
    assert doc["by_term"]["layer"]["query"] == [1, 4, 64]


def test_measured_costs_grow_with_work(tiny_profile):
    model = CostModel(read_profile(tiny_profile))
    assert model.cost("layer", 16, 64, 512) > model.cost("layer", 1, 1, 0)
    assert model.cost("exit_head", 16) > 0 and not model.extrapolated
    model.cost("layer", 64, 1, 0)
    assert model.extrapolations["layer"] == 1


def test_profile_for_another_shape_is_refused(tiny_profile):
    with pytest.raises(ProfileError, match="another shape"):
        CostModel(read_profile(tiny_profile)).check_shape(model_shape("llama-2-7b"))


def test_bad_requests_fail_with_one_clear_line(tmp_path):
    runner = CliRunner()
    out = runner.invoke(app, ["profile", "--model", "gpt-5", "--out", str(tmp_path / "x.parquet")])
    assert out.exit_code == 2 and "unknown model 'gpt-5'" in out.output
    out = runner.invoke(app, ["profile", "--analytic", "tpu-v9", "--model", "llama-3-8b",
                              "--out", str(tmp_path / "x.parquet")])
    assert out.exit_code == 2 and "unknown hardware 'tpu-v9'" in out.output
    out = runner.invoke(app, ["profile", "--device", "cuda", "--out", str(tmp_path / "x.parquet")])
    assert out.exit_code == 2 and "no CUDA device" in out.output
    assert not (tmp_path / "x.parquet").exists()


def test_the_engine_step_overhead_is_measured_per_row_count(tiny_profile):
    """Term `step`: an engine pass's cost beyond its operations, timed on the engine itself. At
    one row count it may come out 0 (the pass less its operations at the per-operation cost,
    two medians of separate runs, at least 0) when a noisy machine overstates that cost."""
    table = read_profile(tiny_profile).table
    step = table[table["term"] == "step"]
    assert list(step["rows"]) == [1, 4, 16]
    assert (step["median_s"] >= 0).all() and (step["median_s"] > 0).any()
    assert (step["runs"] >= 20).all()  # decode passes that prefilled nothing


def test_a_sweep_splits_into_a_segment_call_and_per_layer_cost():
    """T1 = call + layer, T_L = call + L x layer, at every grid point T_L = call + L x layer."""
    import pandas as pd

    from eesim.profile.bench import per_layer

    call, layer, layers = 30e-6, 100e-6, 4
    rows = [("layer_call", 2, 1, 0, call + layer), ("sweep", 2, 1, 0, call + layers * layer),
            ("layer", 2, 1, 0, call + layers * layer), ("layer", 2, 8, 64, call + layers * 5 * layer),
            ("exit_head", 2, 1, 0, 7e-6)]
    table = pd.DataFrame([(*r, 0.0, 10) for r in rows],
                         columns=["term", "rows", "query", "context", "median_s", "iqr_s", "runs"])
    out = per_layer(table, layers).set_index(["term", "query"])["median_s"]
    assert out[("layer_call", 1)] == pytest.approx(call)
    assert out[("layer", 1)] == pytest.approx(layer)
    assert out[("layer", 8)] == pytest.approx(5 * layer)
    assert out[("exit_head", 1)] == 7e-6 and "sweep" not in out.index.get_level_values(0)


def test_a_kv_fill_splits_into_its_call_and_per_layer_cost():
    """A fill of every layer and one of a single layer give the fill's call and its layers, so a
    fill of s layers is priced call + s x layer, not s / L of a fill of every layer."""
    import pandas as pd

    from eesim.profile.bench import per_layer

    call, layer, layers = 200e-6, 100e-6, 8
    rows = [("kv_fill", 4, 1, 128, call + layers * layer), ("kv_fill_call", 4, 1, 0, call + layer)]
    table = pd.DataFrame([(*r, 0.0, 10) for r in rows],
                         columns=["term", "rows", "query", "context", "median_s", "iqr_s", "runs"])
    out = per_layer(table, layers).set_index("term")["median_s"]
    assert out["kv_fill"] == pytest.approx(layer) and out["kv_fill_call"] == pytest.approx(call)


def test_each_term_takes_its_own_in_situ_factor(tiny_profile):
    """A term measured at twice its profiled time inside engine passes gets a factor of 2, and
    no other term moves with it; operations without a factor of their own take the layer's."""
    from eesim.profile.insitu import IN_SITU_TERMS, InSitu, in_situ, own_timings

    profile = read_profile(tiny_profile)
    own = Profile(own_timings(profile), profile.meta)
    cost = CostModel(own)
    seconds = {t: cost.cost(t, 4, 1, 40 if t == "layer" else 0) for t in IN_SITU_TERMS}
    seconds["embed"] *= 2.0
    seconds["layer"] *= 1.5
    factors, terms = in_situ(own, profile.meta.model.n_layers, {4: InSitu(seconds, 40.0)})
    assert terms["embed"][4] == pytest.approx(2.0, rel=1e-3)
    assert factors[4] == pytest.approx(1.5, rel=1e-3)
    for term in ("final_head", "exit_head", "host_sync", "layer_call"):
        assert terms[term][4] == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize(("first", "stop", "every", "calls"), [
    (1, 5, 1, 5),   # checks after 1..5, the segment ends on the check at 5
    (1, 8, 1, 8),   # checks after 1..7, then layer 8 alone
    (3, 8, 2, 3),   # checks after 4 and 6, calls end at 4, 6 and the last layer
    (2, 2, 1, 1),
])
def test_a_live_engine_splits_a_segment_at_every_check(first, stop, every, calls):
    from eesim.plan.strategies import StrategyConfig, segment_calls

    assert segment_calls(StrategyConfig(name="compact", check_every=every), first, stop, 8) == calls


def test_recalibration_measures_the_factors_again_and_keeps_the_timings(tiny_profile):
    """Only `step` and the in-situ factors of the row counts asked for are measured again; an
    operation's own timing (its priced time over its factor) is kept."""
    import torch

    from eesim.model import EarlyExitLM
    from eesim.profile.insitu import own_timings, recalibrate

    profile = read_profile(tiny_profile)
    torch.manual_seed(0)
    again = recalibrate(profile, EarlyExitLM(profile.meta.model).eval(), [1, 4])
    assert set(again.meta.in_situ) == {1, 4, 16} and again.meta.in_situ[16] == profile.meta.in_situ[16]

    def own(p, term, rows):
        t = own_timings(p)
        return t[(t["term"] == term) & (t["rows"] == rows)]["median_s"].iloc[0]

    for rows in (1, 4, 16):
        assert own(again, "final_head", rows) == pytest.approx(own(profile, "final_head", rows))
    assert (again.table["term"] == "step").sum() == 3
