"""Self-speculative acceptance replayed from a trace matches a hand count."""

import pytest

from eesim.policy.selfspec import acceptance, speculate
from tests.conftest import full_trace

# One request, 8 positions, 4 layers. Draft layer 2 agrees with full depth where marked.
AGREE = [True, True, False, True, True, True, False, True]
CONF = [0.9, 0.9, 0.9, 0.4, 0.9, 0.9, 0.9, 0.9]


def trace():
    return full_trace([
        {"request_id": 3, "position": p, "top1": [0, 1 if a else 2, 1, 1],
         "max_prob": [0.5, c, 0.9, 0.95]}
        for p, (a, c) in enumerate(zip(AGREE, CONF, strict=True))])


def test_accepted_lengths_match_a_hand_count():
    """As served: the prefill emits position 0 at full depth; drafting starts at position 1."""
    steps = speculate(trace(), draft_layer=2, drafts=3)
    # step 0 at pos 1: drafts 1,2,3 -> agree, disagree: accept 1, emit 2 (next pos 3)
    # step 1 at pos 3: drafts 3,4,5 all agree: accept 3, emit 4 (next pos 7)
    # step 2 at pos 7: last position, no draft: emit 1
    assert steps[["position", "drafted", "accepted", "emitted"]].values.tolist() == [
        [1, 3, 1, 2], [3, 3, 3, 4], [7, 0, 0, 1]]
    assert steps["emitted"].sum() == len(AGREE) - 1
    acc = acceptance(steps)
    assert acc["acceptance_rate"] == pytest.approx(4 / 6, abs=1e-4)
    assert acc["tokens_per_step"] == pytest.approx(7 / 3, abs=1e-4)


def test_confidence_stop_ends_drafting_early():
    steps = speculate(trace(), draft_layer=2, drafts=3, stop_below=0.5)
    # pos 1: drafts 1,2 (conf 0.4 at 3 stops: 3 evals) -> agree, disagree: accept 1, emit 2;
    # pos 3: conf 0.4 < 0.5, nothing drafted (1 eval): emit 1;
    # pos 4: drafts 4,5,6 -> agree, agree, disagree: accept 2, emit 3; pos 7: emit 1
    assert steps[["position", "drafted", "accepted", "draft_evals"]].values.tolist() == [
        [1, 2, 1, 3], [3, 0, 0, 1], [4, 3, 2, 3], [7, 0, 0, 0]]


def test_draft_layer_must_be_an_early_exit():
    with pytest.raises(ValueError, match="draft layer 4 is not an early exit"):
        speculate(trace(), draft_layer=4, drafts=2)


def test_the_trace_replay_is_the_simulators():
    """The trace analysis and the simulator read one replay: served whole from position 1,
    each request's steps are the simulator's timeline for that request."""
    import numpy as np

    from eesim.policy.selfspec import runs_from, timeline

    steps = speculate(trace(), draft_layer=2, drafts=3)
    agree = np.array(AGREE)
    offsets = np.array([0, len(AGREE)])
    d, a, pos = timeline(runs_from(agree, offsets, 3), offsets, np.array([0]), np.array([1]),
                         np.array([len(AGREE) - 1]), 3, len(steps))
    assert steps[["position", "drafted", "accepted"]].values.tolist() == \
        np.stack([pos[:, 0], d[:, 0], a[:, 0]], axis=1).tolist()
