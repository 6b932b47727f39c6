"""Policy replay on a hand-made trace gives the exit layers worked out by hand."""

import json

import numpy as np
import pytest

from eesim.policy.calibrate import calibrate, calibration_mask
from eesim.policy.policy import ExitPolicy, PolicyError, load_policy, never_exit
from eesim.policy.replay import replay
from tests.conftest import full_trace

SHA = "a" * 64

# Three tokens of two requests on a 4-layer model. Full-depth top-1 is the last entry.
TOKENS = [
    # exits at 2 under max_prob >= 0.8 (layer 1 is 0.85 but min_layer=2 in some tests)
    {"request_id": 0, "position": 0, "task": "prose", "top1": [5, 7, 7, 7],
     "max_prob": [0.85, 0.9, 0.95, 0.99]},
    # never confident before the last layer; layer 3 disagrees with full depth
    {"request_id": 0, "position": 1, "task": "prose", "top1": [1, 2, 3, 4],
     "max_prob": [0.1, 0.2, 0.3, 0.5]},
    # confident and wrong at layer 1, right from layer 2; its layer-2 candidate is punctuation
    {"request_id": 1, "position": 0, "task": "code", "top1": [9, 8, 8, 8],
     "max_prob": [0.95, 0.96, 0.97, 0.98],
     "top1_class": ["word", "punctuation", "punctuation", "punctuation"]},
]


def policy(**kw) -> ExitPolicy:
    base = {"signal": "max_prob", "thresholds": {"*": 0.8}, "model_sha256": SHA, "n_layers": 4}
    return ExitPolicy(**(base | kw))


def test_max_prob_exits_at_first_confident_layer():
    r = replay(policy(), full_trace(TOKENS))
    assert r.exit_layer.tolist() == [1, 4, 1]
    assert r.emitted.tolist() == [5, 4, 9]
    assert r.differs.tolist() == [True, False, True]
    assert r.checks.tolist() == [1, 3, 1]


def test_min_layer_and_per_task_thresholds():
    r = replay(policy(min_layer=2, thresholds={"prose": 0.92, "code": 0.5}), full_trace(TOKENS))
    assert r.exit_layer.tolist() == [3, 4, 2]
    assert r.differs.tolist() == [False, False, False]
    assert r.checks.tolist() == [2, 2, 1]  # exits 2, 3 checked; the last layer is no check


def test_forbidden_candidate_class_defers_the_exit():
    r = replay(policy(min_layer=2, forbidden_classes=["punctuation"]), full_trace(TOKENS))
    assert r.exit_layer.tolist() == [2, 4, 4]


def test_task_without_threshold_never_exits_early():
    r = replay(policy(thresholds={"prose": 0.8}), full_trace(TOKENS))
    assert r.exit_layer.tolist() == [1, 4, 4]


def test_entropy_exits_when_low_and_static_exits_at_its_layer():
    entropy = policy(signal="entropy", thresholds={"*": 0.12})  # entropy = 1 - max_prob here
    assert replay(entropy, full_trace(TOKENS)).exit_layer.tolist() == [2, 4, 1]
    static = policy(signal="static", thresholds={"*": 3})
    assert replay(static, full_trace(TOKENS)).exit_layer.tolist() == [3, 3, 3]
    assert replay(never_exit(SHA, 4), full_trace(TOKENS)).exit_layer.tolist() == [4, 4, 4]


def test_summary_reports_layers_and_quality_by_task():
    s = replay(policy(), full_trace(TOKENS)).summary()
    assert s["layers_per_token"] == pytest.approx(2.0)
    assert s["quality_delta"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["by_task"]["code"]["quality_delta"] == 1.0
    assert s["exit_depth"] == {1: pytest.approx(2 / 3, abs=1e-4), 4: pytest.approx(1 / 3, abs=1e-4)}


def test_policy_for_another_model_is_refused():
    with pytest.raises(PolicyError, match="calibrated for model bbbbbbbb.*recalibrate"):
        replay(policy(model_sha256="b" * 64), full_trace(TOKENS))


def test_bad_policy_files_name_the_field(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"signal": "vibes", "thresholds": {}, "model_sha256": SHA,
                                "n_layers": 4}))
    with pytest.raises(PolicyError, match=r"p.json: field 'signal'.*'vibes'"):
        load_policy(path)
    path.write_text("{")
    with pytest.raises(PolicyError, match="p.json: not valid JSON"):
        load_policy(path)
    with pytest.raises(ValueError, match="unknown token classes"):
        policy(forbidden_classes=["emoji"])
    policy().save(path)
    assert load_policy(path) == policy()


def separable_trace(n_requests: int = 40):
    """Confident exits are right, unconfident ones wrong: a budget of 0 is reachable."""
    rng = np.random.default_rng(0)
    tokens = []
    for r in range(n_requests):
        for p in range(10):
            good_from = int(rng.integers(1, 5))  # first layer that agrees with full depth
            top1 = [100 + i if i + 1 < good_from else 7 for i in range(4)]
            conf = [0.3 if i + 1 < good_from else 0.9 for i in range(4)]
            tokens.append({"request_id": r, "position": p, "task": ["prose", "code"][r % 2],
                           "top1": top1, "max_prob": conf})
    return full_trace(tokens)


def test_calibration_meets_a_zero_budget_on_held_out_requests():
    trace = separable_trace()
    pol, heldout = calibrate(trace, budget=0.0)
    assert heldout["quality_delta"] == 0.0
    assert heldout["layers_per_token"] < 4.0
    assert 0.3 < pol.thresholds["prose"] <= 0.9
    cal = calibration_mask(trace)
    assert 0 < cal.mean() < 1 and heldout["requests"] == len(set(
        trace.tokens()["request_id"][~cal]))


def test_calibration_with_a_loose_budget_saves_more():
    trace = separable_trace()
    _, tight = calibrate(trace, budget=0.0)
    _, loose = calibrate(trace, budget=0.8)  # 3 in 4 tokens are wrong at layer 1
    assert loose["layers_per_token"] < tight["layers_per_token"]
    _, risk = calibrate(trace, budget=0.0, signal="risk")
    assert risk["quality_delta"] <= 0.05
