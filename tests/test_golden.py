"""The simulator's answers to a fixed set of fully stated questions stay what they were.

`scripts/golden_answers.py` holds the questions (every strategy and KV option, batch caps 1/4/16,
Poisson and closed loop, a measured and an analytic profile) and wrote the committed answers;
refactors that must not change a prediction are checked against them. The default suite checks
every fifth question; `-m benchmark` checks them all.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("golden_answers", ROOT / "scripts" / "golden_answers.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)
ENTRIES = json.loads(golden.GOLDEN.read_text())


def _id(entry: dict) -> str:
    q = entry["question"]
    return (f"{Path(q['profile']).stem[:8]}-{q['strategy']}-{q['kv']}-b{q['max_batch']}-"
            f"{'poisson' if q['rate'] else 'closed'}")


def test_the_committed_questions_are_the_scripts():
    assert [e["question"] for e in ENTRIES] == golden.questions()
    assert len(ENTRIES) >= 64


@pytest.mark.parametrize("entry", ENTRIES[::5], ids=_id)
def test_answer_is_unchanged(entry):
    assert golden.differences(entry["answer"], golden.answer(entry["question"])) == []


@pytest.mark.benchmark
@pytest.mark.parametrize("entry", ENTRIES, ids=_id)
def test_every_answer_is_unchanged(entry):
    assert golden.differences(entry["answer"], golden.answer(entry["question"])) == []


def test_a_changed_answer_is_caught():
    entry = ENTRIES[0]
    changed = dict(entry["answer"], **{"tpot_s.mean": entry["answer"]["tpot_s.mean"] * (1 + 1e-8)})
    assert golden.differences(entry["answer"], changed) == [
        f"tpot_s.mean: {entry['answer']['tpot_s.mean']} -> {changed['tpot_s.mean']}"]
