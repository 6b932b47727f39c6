"""Trace files: recording from a real model, round trips, and malformed files named precisely."""

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from eesim.cli import app
from eesim.model import Checkpoint
from eesim.trace import TraceError, read_trace, write_trace
from eesim.trace.record import RefExitModel, Request, record
from tests.conftest import full_trace

TOKENS = [{"request_id": r, "position": p, "top1": [1, 2, 3, 3], "max_prob": [0.2, 0.4, 0.6, 0.8]}
          for r in range(2) for p in range(3)]


@pytest.fixture
def ref_source(tiny_model, tiny_tokenizer) -> RefExitModel:
    return RefExitModel(Checkpoint(tiny_model, tiny_tokenizer, "c" * 64, {}, None), name="tiny")


def test_recorded_greedy_tokens_equal_an_uncached_greedy_loop(ref_source, tiny_model):
    prompts = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11]]
    reqs = [Request(i, ["prose", "code", "json"][i], p) for i, p in enumerate(prompts)]
    trace = record(ref_source, reqs, max_new_tokens=6, batch_size=2)
    tokens = trace.tokens()
    for req in reqs:
        ids = list(req.prompt)
        with torch.no_grad():
            for _ in range(6):
                ids.append(int(tiny_model(torch.tensor([ids]))[0, -1].argmax()))
        got = tokens.loc[tokens["request_id"] == req.request_id, "token"].tolist()
        assert got == ids[len(req.prompt):]
    assert (trace.matrix("top1")[:, -1] == tokens["token"].to_numpy()).all()
    assert trace.requests_by_task() == {"code": 1, "json": 1, "prose": 1}


def test_signals_are_consistent(ref_source):
    trace = record(ref_source, [Request(0, "prose", [1, 2, 3])], max_new_tokens=4)
    mp, ent, mg = (trace.matrix(c) for c in ("max_prob", "entropy", "margin"))
    assert ((mp > 0) & (mp <= 1)).all() and (ent > 0).all() and ((mg >= 0) & (mg <= mp)).all()


def test_sampling_is_seeded_and_recorded(ref_source):
    reqs = [Request(0, "prose", [1, 2, 3])]
    a = record(ref_source, reqs, 8, temperature=1.5, seed=3)
    b = record(ref_source, reqs, 8, temperature=1.5, seed=3)
    assert a.tokens()["token"].tolist() == b.tokens()["token"].tolist()
    assert a.meta.decoding == {"mode": "sample", "temperature": 1.5, "max_new_tokens": 8, "seed": 3}


def test_trace_round_trip(tmp_path, ref_source):
    trace = record(ref_source, [Request(0, "code", [1, 2]), Request(1, "json", [3])], 5)
    write_trace(trace, tmp_path / "t.parquet")
    back = read_trace(tmp_path / "t.parquet")
    assert back.meta == trace.meta
    pd.testing.assert_frame_equal(back.table.astype(str), trace.table.astype(str))
    assert back.table["layer"].dtype == "int8" and back.table["max_prob"].dtype == "float32"


def test_trace_info_cli(tmp_path, ref_source):
    write_trace(record(ref_source, [Request(0, "code", [1, 2])], 3), tmp_path / "t.parquet")
    out = CliRunner().invoke(app, ["trace", "info", str(tmp_path / "t.parquet"), "--json"])
    info = json.loads(out.stdout)
    assert info["rows"] == 3 * 4 and info["requests_by_task"] == {"code": 1}
    assert info["exit_layers"] == [1, 2, 3, 4] and info["model_sha256"] == "c" * 64


def broken(tmp_path, mutate) -> str:
    """Write a hand-made trace whose table `mutate` spoiled, bypassing write_trace's checks."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    trace = full_trace(TOKENS)
    table = pa.Table.from_pandas(mutate(trace.table.copy()), preserve_index=False)
    path = tmp_path / "bad.parquet"
    pq.write_table(table.replace_schema_metadata({b"eesim": trace.meta.model_dump_json().encode()}),
                   path)
    return str(path)


def with_value(col, row, value):
    def mutate(t):
        t[col] = t[col].astype(float if value != value else t[col].dtype)
        t.loc[row, col] = value
        return t
    return mutate


def test_missing_column_is_named(tmp_path):
    path = broken(tmp_path, lambda t: t.drop(columns=["entropy"]))
    with pytest.raises(TraceError, match=r"bad.parquet: missing column 'entropy'"):
        read_trace(path)


def test_nan_confidence_is_named_with_its_row(tmp_path):
    path = broken(tmp_path, with_value("max_prob", 5, float("nan")))
    with pytest.raises(TraceError, match=r"bad.parquet: column 'max_prob' row 5 is NaN"):
        read_trace(path)


def test_negative_position_is_named_with_its_value(tmp_path):
    path = broken(tmp_path, with_value("position", 6, -1))
    with pytest.raises(TraceError, match=r"column 'position' row 6 is -1, must be >= 0"):
        read_trace(path)


def test_layer_out_of_range_and_missing_exit_rows(tmp_path):
    path = broken(tmp_path, with_value("layer", 2, 9))
    with pytest.raises(TraceError, match=r"column 'layer' row \d+ is 9, must be in \[1, 4\]"):
        read_trace(path)
    path = broken(tmp_path, lambda t: t.drop(index=[1]))
    with pytest.raises(TraceError, match="request 0 position 0 has 3 exit rows"):
        read_trace(path)


def test_not_a_trace_file(tmp_path):
    (tmp_path / "x.parquet").write_text("hello")
    with pytest.raises(TraceError, match="x.parquet: not a readable Parquet file"):
        read_trace(tmp_path / "x.parquet")
    with pytest.raises(TraceError, match="nope.parquet: no such trace file"):
        read_trace(tmp_path / "nope.parquet")
