"""Importers: each small file in tests/data gives the rows worked out by hand, survives a round trip
through Parquet, and every malformed input fails naming its file, line, field and value."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from eesim.trace.importers import import_calm, import_csv, import_specbench, import_trace
from eesim.trace.schema import TraceError, read_trace, write_trace

DATA = Path(__file__).parent / "data"
N_LAYERS = 6
EXITS = ["request_id", "position", "exit_layer"]
ACCEPT = ["request_id", "step", "accept_length", "task"]


def rows(trace, columns: list[str]) -> list[tuple]:
    return list(trace.table[columns].itertuples(index=False, name=None))


def says(*parts: str) -> str:
    """A pytest `match` pattern: these literal parts, in this order, anywhere in the message."""
    return ".*".join(re.escape(part) for part in parts)


def test_calm_gives_one_row_per_token_sorted_by_request():
    trace = import_calm(DATA / "calm_small.jsonl", N_LAYERS)
    assert rows(trace, [*EXITS, "confidence", "task", "prompt_len"]) == [
        (2, 0, 6, 0.42, "chat", 12), (2, 1, 1, 1.0, "chat", 12),
        (7, 0, 3, 0.91, "code", 40), (7, 1, 6, 0.55, "code", 40), (7, 2, 2, 0.97, "code", 40)]
    assert trace.meta.kind == "exits"
    assert trace.meta.n_layers == N_LAYERS
    assert trace.meta.exit_layers == [1, 2, 3, 6]
    assert trace.meta.source == "calm:calm_small.jsonl"
    assert (trace.meta.model_name, trace.meta.decoding) == ("", {})


def test_calm_zero_based_shifts_layers_and_numbers_requests_by_line():
    # Lines 1 and 3 hold records (line 2 is blank); layers 0 and 5 of a 6-layer model become 1, 6.
    trace = import_calm(DATA / "calm_zero_based.jsonl", N_LAYERS, zero_based=True)
    assert list(trace.table.columns) == EXITS
    assert rows(trace, EXITS) == [(1, 0, 1), (1, 1, 6), (3, 0, 3)]
    assert trace.meta.exit_layers == [1, 3, 6]


def test_specbench_gives_one_row_per_decoding_step():
    trace = import_specbench(DATA / "specbench_small.jsonl", N_LAYERS)
    assert rows(trace, ACCEPT) == [
        (3, 0, 1, "translation"), (3, 1, 3, "translation"),
        (81, 0, 4, "writing"), (81, 1, 1, "writing"), (81, 2, 2, "writing"),
        (81, 3, 2, "writing"), (81, 4, 1, "writing")]
    # The steps of both turns of question 81 are one request; they emit all 7 + 3 new tokens.
    totals = trace.table.groupby("request_id")["accept_length"].sum().to_dict()
    assert totals == {3: 4, 81: 10}
    assert trace.meta.kind == "accept"
    assert trace.meta.exit_layers == []
    assert trace.meta.model_name == "vicuna-7b-v1.3-eagle-float16"
    assert trace.meta.source == "specbench:specbench_small.jsonl"


def test_specbench_numbers_choices_question_times_most_choices_plus_index():
    # At most 2 choices per line: question 1 -> requests 2 and 3, question 2 -> request 4.
    trace = import_specbench(DATA / "specbench_choices.jsonl", N_LAYERS)
    assert rows(trace, ACCEPT) == [(2, 0, 2, "qa"), (3, 0, 1, "qa"), (3, 1, 1, "qa"),
                                   (4, 0, 3, "rag")]
    assert trace.meta.model_name == "m"


def test_csv_rows_in_any_order_come_out_sorted():
    trace = import_csv(DATA / "exits_small.csv", N_LAYERS)
    assert list(trace.table.columns) == [*EXITS, "confidence", "task"]
    assert rows(trace, [*EXITS, "confidence", "task"]) == [
        (0, 0, 6, 1.0, "qa"), (5, 0, 2, 0.75, "math"), (5, 1, 4, 0.25, "math")]
    assert trace.meta.exit_layers == [2, 4, 6]
    assert trace.meta.source == "csv:exits_small.csv"


@pytest.mark.parametrize("fmt, name, options", [
    ("calm", "calm_small.jsonl", {}),
    ("calm", "calm_zero_based.jsonl", {"zero_based": True}),
    ("specbench", "specbench_small.jsonl", {}),
    ("specbench", "specbench_choices.jsonl", {}),
    ("csv", "exits_small.csv", {}),
])
def test_imported_trace_round_trips_through_parquet(tmp_path, fmt, name, options):
    trace = import_trace(DATA / name, fmt, N_LAYERS, **options)
    write_trace(trace, tmp_path / "trace.parquet")
    back = read_trace(tmp_path / "trace.parquet")
    assert back.meta == trace.meta
    # On disk integers are narrowed, confidences are float32 and text is categorical.
    pd.testing.assert_frame_equal(back.table, trace.table, check_dtype=False,
                                  check_categorical=False, rtol=1e-6)


def test_dispatcher_refuses_an_unknown_format_naming_the_known_ones():
    with pytest.raises(TraceError, match=says("unknown trace format 'eagle'",
                                              "calm, specbench, csv")):
        import_trace(DATA / "calm_small.jsonl", "eagle", N_LAYERS)


def test_importers_refuse_a_missing_file_and_a_bad_layer_count(tmp_path):
    with pytest.raises(TraceError, match=says("nowhere.jsonl", "no such file")):
        import_calm(tmp_path / "nowhere.jsonl", N_LAYERS)
    with pytest.raises(TraceError, match=says("n_layers is 0", ">= 1")):
        import_csv(DATA / "exits_small.csv", 0)


GOOD = '{"exit_layers": [1, 2]}\n'


@pytest.mark.parametrize("text, options, match", [
    (GOOD + GOOD + '{"exit_layers": [1, 2}\n', {},
     says("bad.jsonl line 3: invalid JSON", '[1, 2}')),
    ("[1, 2]\n", {}, says("bad.jsonl line 1: expected a JSON object", "[1, 2]")),
    ('{"id": 1, "confidences": [0.5]}\n', {},
     says("bad.jsonl line 1: missing field 'exit_layers'")),
    ('{"exit_layers": []}\n', {}, says("bad.jsonl line 1: field 'exit_layers' is []", "non-empty")),
    ('{"exit_layers": [1, 2, 3], "confidences": [0.5, 0.5]}\n', {},
     says("bad.jsonl line 1: field 'confidences' has 2 values but 'exit_layers' has 3")),
    (GOOD + '{"exit_layers": [1, 7]}\n', {},
     says("bad.jsonl line 2: field 'exit_layers[1]' is 7", "1..6")),
    ('{"exit_layers": [0]}\n', {}, says("bad.jsonl line 1: field 'exit_layers[0]' is 0", "1..6")),
    ('{"exit_layers": [6]}\n', {"zero_based": True},
     says("bad.jsonl line 1: field 'exit_layers[0]' is 6", "0..5", "zero_based")),
    ('{"exit_layers": [2.5]}\n', {}, says("bad.jsonl line 1: field 'exit_layers[0]' is 2.5")),
    ('{"exit_layers": [1, 2], "confidences": [0.5, NaN]}\n', {},
     says("bad.jsonl line 1: field 'confidences[1]' is nan", "[0, 1]")),
    ('{"exit_layers": [1], "confidences": [1.5]}\n', {},
     says("bad.jsonl line 1: field 'confidences[0]' is 1.5", "[0, 1]")),
    ('{"id": -1, "exit_layers": [1]}\n', {}, says("bad.jsonl line 1: field 'id' is -1", ">= 0")),
    ('{"id": 4, "exit_layers": [1]}\n{"id": 4, "exit_layers": [2]}\n', {},
     says("bad.jsonl line 2: field 'id' is 4", "line 1 has it")),
    ('{"exit_layers": [1], "task": "qa"}\n' + GOOD, {},
     says("bad.jsonl line 2: has optional fields []", "line 1 has ['task']")),
    ("", {}, says("bad.jsonl: empty file")),
    ("\n\n", {}, says("bad.jsonl: empty file")),
])
def test_calm_refuses_bad_input_naming_file_line_and_value(tmp_path, text, options, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(TraceError, match=match):
        import_calm(path, N_LAYERS, **options)


def answer(qid=1, lengths="[2, 1]", model="m", extra=""):
    return (f'{{"question_id": {qid}, "category": "qa", "model_id": "{model}", "choices": '
            f'[{{"index": 0, "turns": ["x"], "accept_lengths": {lengths}}}]{extra}}}\n')


@pytest.mark.parametrize("text, match", [
    (answer(lengths="[2, 0, 1]"),
     says("bad.jsonl line 1: field 'choices[0].accept_lengths[1]' is 0", ">= 1")),
    (answer(lengths="[]"), says("bad.jsonl line 1: field 'choices[0].accept_lengths' is []")),
    ('{"question_id": 1, "category": "qa", "choices": [{"index": 0}]}\n',
     says("bad.jsonl line 1: missing field 'choices[0].accept_lengths'")),
    ('{"question_id": 1, "category": "qa"}\n', says("bad.jsonl line 1: missing field 'choices'")),
    (answer() + '{"category": "qa", "choices": [{"accept_lengths": [1]}]}\n',
     says("bad.jsonl line 2: missing field 'question_id'")),
    ('{"question_id": 1, "category": "qa", "choices": []}\n',
     says("bad.jsonl line 1: field 'choices' is []", "non-empty")),
    (answer(qid=5) + answer(qid=5), says("bad.jsonl line 2: field 'question_id' is 5",
                                         "line 1 has it")),
    (answer(model="a") + answer(qid=2, model="b"),
     says("bad.jsonl line 2: field 'model_id' is 'b'", "'a' as on line 1")),
    (answer() + answer(qid=2)[:-5] + "\n", says("bad.jsonl line 2: invalid JSON")),
    ("", says("bad.jsonl: empty file")),
])
def test_specbench_refuses_bad_input_naming_file_line_and_value(tmp_path, text, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(TraceError, match=match):
        import_specbench(path, N_LAYERS)


HEADER = "request,position,exit_layer,confidence\n"


@pytest.mark.parametrize("text, match", [
    (HEADER + "0,0,1,0.5\n0,-1,3,0.5\n", says("bad.csv line 3: field 'position' is -1", ">= 0")),
    ("request,exit_layer\n0,1\n", says("bad.csv line 1: header has missing columns ['position']")),
    ("request,position,layer\n0,0,1\n",
     says("bad.csv line 1: header has", "unknown columns ['layer']")),
    (HEADER + "0,0,three,0.5\n", says("bad.csv line 2: field 'exit_layer' is 'three'")),
    (HEADER + "0,0,9,0.5\n", says("bad.csv line 2: field 'exit_layer' is 9", "1..6")),
    (HEADER + "0,0,1,nan\n", says("bad.csv line 2: field 'confidence' is nan", "[0, 1]")),
    (HEADER + "0,0,1,1.5\n", says("bad.csv line 2: field 'confidence' is 1.5", "[0, 1]")),
    (HEADER + "0,0,1,0.5\n0,0,2,0.5\n",
     says("bad.csv line 3: field 'position' is 0", "line 2 is request 0 too")),
    (HEADER + "0,0,1,0.5\n0,2,1,0.5\n",
     says("bad.csv: request 0 has no row for position 1", "line 3 has position 2")),
    (HEADER + "0,0\n", says("bad.csv line 2: 2 values ['0', '0'] for 4 columns")),
    (HEADER, says("bad.csv: no rows after the header")),
    ("", says("bad.csv: empty file")),
])
def test_csv_refuses_bad_input_naming_file_line_and_value(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(TraceError, match=match):
        import_csv(path, N_LAYERS)
