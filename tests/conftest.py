"""Shared fixtures: a tiny random early-exit model and a tiny tokenizer, built in-process."""

from __future__ import annotations

import functools

import pytest
import torch

from eesim.model import EarlyExitLM, ModelConfig
from eesim.model.tokenizer import train_tokenizer

TINY = ModelConfig(vocab_size=300, dim=64, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=128,
                   max_seq_len=64)


@pytest.fixture
def tiny_model() -> EarlyExitLM:
    torch.manual_seed(0)
    return EarlyExitLM(TINY).eval()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    texts = ["To be, or not to be, that is the question.\n",
             "def add(a, b):\n    return a + b\n",
             '{"name": "eesim", "version": "0.1.0", "layers": [1, 2, 3]}\n'] * 20
    return train_tokenizer(texts, vocab_size=300)


def full_trace(tokens: list[dict], n_layers: int = 4, sha: str = "a" * 64):
    """A hand-made `full` trace. Each token dict: request_id, position, task, token_class, and
    per-exit lists top1, max_prob (entropy and margin derived), top1_class (optional)."""
    import pandas as pd

    from eesim.trace import ExitTrace, TraceMeta

    rows = []
    for t in tokens:
        for i in range(n_layers):
            p = t["max_prob"][i]
            rows.append({
                "request_id": t["request_id"], "position": t["position"], "prompt_len": 5,
                "task": t.get("task", "prose"), "token": t["top1"][-1], "token_text": "x",
                "token_class": t.get("token_class", "word"), "layer": i + 1,
                "top1": t["top1"][i], "top1_class": t.get("top1_class", ["word"] * n_layers)[i],
                "max_prob": p, "entropy": t.get("entropy", [1.0 - p] * n_layers)[i],
                "margin": p / 2,
            })
    meta = TraceMeta(kind="full", model_sha256=sha, n_layers=n_layers,
                     exit_layers=list(range(1, n_layers + 1)))
    return ExitTrace(pd.DataFrame(rows), meta)


def _git_status() -> str | None:
    """The checkout's `git status --porcelain`, or None outside a git checkout."""
    import subprocess
    from pathlib import Path

    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                             cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def pytest_sessionstart(session):
    session.config._eesim_git_status = _git_status()


def pytest_sessionfinish(session, exitstatus):
    """The suite leaves the repository as it found it: a test that writes into the tree fails
    the run, naming what it left."""
    before = getattr(session.config, "_eesim_git_status", None)
    after = _git_status()
    if before is None or after is None or after == before:
        return
    left = sorted(set(after.splitlines()) - set(before.splitlines()))
    print(f"\nthe suite changed the repository's git status: {left}")
    if session.exitstatus == 0:
        session.exitstatus = 1


@functools.cache
def cached_cost(path: str):
    """The cost model of a committed profile (path relative to the repository), loaded once."""
    from pathlib import Path

    from eesim.costmodel import CostModel

    return CostModel.load(Path(__file__).resolve().parents[1] / path)


@functools.cache
def threshold_behaviour(threshold: float, n_layers: int):
    """The committed reference trace's exit behaviour under one max-prob threshold, mapped to
    `n_layers` by relative depth where that differs from the trace's."""
    from pathlib import Path

    from eesim.policy.policy import ExitPolicy
    from eesim.scenario.behaviour import from_trace
    from eesim.trace import read_trace

    trace = read_trace(Path(__file__).resolve().parents[1] / "traces" / "reference-greedy.parquet")
    policy = ExitPolicy(signal="max_prob", thresholds={"*": threshold}, min_layer=1,
                        model_sha256=trace.meta.model_sha256, n_layers=trace.meta.n_layers)
    return from_trace(trace, policy, n_layers, map_depth=n_layers != trace.meta.n_layers)
