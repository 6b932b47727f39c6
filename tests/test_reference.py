"""The committed reference model and traces: what the README promises holds on this machine."""

import json

import pytest
from typer.testing import CliRunner

from eesim.cli import app
from eesim.model import REFERENCE_DIR, load_checkpoint
from eesim.model.evaluate import evaluate
from eesim.trace import read_trace

TRACE = REFERENCE_DIR.parents[3] / "traces" / "reference-greedy.parquet"


@pytest.fixture(scope="module")
def reference():
    return load_checkpoint()


@pytest.fixture(scope="module")
def report(reference):
    return evaluate(reference, window=128, max_windows=6)


def test_reference_checkpoint_has_the_promised_shape(reference):
    assert reference.model.cfg.n_layers >= 8 and reference.model.cfg.vocab_size >= 2048
    assert (REFERENCE_DIR / "model.safetensors").stat().st_size + \
        (REFERENCE_DIR / "tokenizer.json").stat().st_size <= 20 * 2**20


def test_agreement_with_the_final_layer_rises_with_depth(report):
    agreement = [row["agreement"] for row in report["per_layer"]]
    assert agreement[-1] == 1.0
    assert agreement[0] < agreement[len(agreement) // 2] < agreement[-2] < 1.0


def test_final_layer_beats_the_unigram_baseline_on_every_task(report):
    for task, loss in report["final_loss"].items():
        assert loss < report["unigram_loss"][task] - 0.5, task


def test_model_eval_cli_json_keys():
    out = CliRunner().invoke(app, ["model", "eval", "--json", "--window", "64", "--max-windows", "2"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert {"layers", "vocab", "unigram_loss", "per_layer"} <= set(doc)
    assert [r["layer"] for r in doc["per_layer"]] == list(range(1, doc["layers"] + 1))
    assert set(doc["per_layer"][0]) >= {"layer", "loss", "agreement", "by_task"}


@pytest.mark.skipif(not TRACE.exists(), reason="committed trace not present")
def test_committed_trace_covers_three_tasks_from_the_reference_model(reference):
    trace = read_trace(TRACE)
    assert trace.meta.model_sha256 == reference.sha256
    by_task = trace.requests_by_task()
    assert set(by_task) == {"prose", "code", "json"} and min(by_task.values()) >= 200
    assert trace.tokens().groupby("request_id").size().min() >= 128


@pytest.mark.skipif(not TRACE.exists(), reason="committed trace not present")
def test_calibrate_cli_meets_the_budget_and_refuses_a_foreign_policy(tmp_path):
    runner = CliRunner()
    out = runner.invoke(app, ["calibrate", "--trace", str(TRACE), "--budget", "0.02",
                              "--out", str(tmp_path / "p.json"), "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["heldout"]["quality_delta"] <= 0.04
    assert doc["heldout"]["layers_per_token"] < read_trace(TRACE).meta.n_layers
    policy = json.loads((tmp_path / "p.json").read_text())
    policy["model_sha256"] = "f" * 64
    (tmp_path / "p.json").write_text(json.dumps(policy))
    out = runner.invoke(app, ["calibrate", "--trace", str(TRACE), "--evaluate",
                              str(tmp_path / "p.json")])
    assert out.exit_code == 2 and "calibrated for model ffffffff" in out.output
