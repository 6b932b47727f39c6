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
    steps = speculate(trace(), draft_layer=2, drafts=3)
    # step 0 at pos 0: drafts 0,1,2 -> agree, agree, disagree: accept 2, emit 3 (next pos 3)
    # step 1 at pos 3: drafts 3,4,5 all agree: accept 3, emit 4 (next pos 7)
    # step 2 at pos 7: last position, no draft: emit 1
    assert steps[["position", "drafted", "accepted", "emitted"]].values.tolist() == [
        [0, 3, 2, 3], [3, 3, 3, 4], [7, 0, 0, 1]]
    assert steps["emitted"].sum() == len(AGREE)
    acc = acceptance(steps)
    assert acc["acceptance_rate"] == pytest.approx(5 / 6, abs=1e-4)
    assert acc["tokens_per_step"] == pytest.approx(8 / 3, abs=1e-4)


def test_confidence_stop_ends_drafting_early():
    steps = speculate(trace(), draft_layer=2, drafts=3, stop_below=0.5)
    # pos 0: accept 2, emit 3; pos 3: conf 0.4 < 0.5, nothing drafted (1 eval): emit 1;
    # pos 4: drafts 4,5,6 -> agree, agree, disagree: accept 2, emit 3; pos 7: emit 1
    assert steps[["position", "drafted", "accepted", "draft_evals"]].values.tolist() == [
        [0, 3, 2, 3], [3, 0, 0, 1], [4, 3, 2, 3], [7, 0, 0, 0]]


def test_draft_layer_must_be_an_early_exit():
    with pytest.raises(ValueError, match="draft layer 4 is not an early exit"):
        speculate(trace(), draft_layer=4, drafts=2)
