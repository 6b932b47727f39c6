"""Import other tools' early-exit and speculation logs as eesim traces.

Each importer reads one file and returns a validated `ExitTrace` for a model of `n_layers`
decoder layers; `write_trace` stores it. Every bad input raises `TraceError` naming the file, the
line, the field and the value. Lines count from 1 and include blank lines and the CSV header, so
they match an editor's.

calm (kind `exits`): JSON lines, one object per generated sequence::

    {"id": 7, "exit_layers": [3, 8, 2], "confidences": [0.91, 0.55, 0.97], "task": "code",
     "prompt_len": 40}

  Token i exited at `exit_layers[i]`. `confidences` (one per token, each in [0, 1]), `task` and
  `prompt_len` are optional, but one given on some line must be given on every line. `id`
  defaults to the line number. eesim counts layers from 1 (layer n_layers is the full model);
  CALM's code counts from 0, so pass `zero_based=True` to add one to every layer.

specbench (kind `accept`): the answer files of Spec-Bench (github.com/hemingkx/Spec-Bench,
evaluation/eval.py), one object per question::

    {"question_id": 81, "category": "writing", "model_id": "vicuna-7b-v1.3-eagle",
     "choices": [{"index": 0, "turns": ["..", ".."], "new_tokens": [7, 3],
                  "wall_time": [0.1, 0.05], "accept_lengths": [4, 1, 2, 2, 1]}]}

  `accept_lengths` holds the tokens each decoding step emitted, the verified bonus token
  included, so each is >= 1. Spec-Bench concatenates them over a choice's turns and keeps the
  per-turn step counts in method-specific fields (`idxs`, `decoding_steps`), so one choice
  becomes one request and its turns are not told apart. The request id is `question_id` when
  every line has one choice; otherwise choice k of a question gets `question_id * C + k`, where
  C is the largest number of choices on any line. `category` becomes `task`; `model_id`
  (optional, the same on every line) becomes the trace's `model_name`.

csv (kind `exits`): a header `request,position,exit_layer` with optional columns `confidence`,
`task` and `prompt_len` in any order, then one row per generated token, rows in any order.
Layers count from 1; each request's positions must run 0, 1, 2, ... with no gap or repeat.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from eesim.trace.schema import ExitTrace, TraceError, TraceMeta

CALM_OPTIONAL = ("confidences", "task", "prompt_len")
CSV_REQUIRED = ("request", "position", "exit_layer")
CSV_OPTIONAL = ("confidence", "task", "prompt_len")


def import_calm(path: Path | str, n_layers: int, *, zero_based: bool = False) -> ExitTrace:
    """Import CALM-style per-token exit layers and confidences (see the module docstring)."""
    path = Path(path)
    _check_n_layers(n_layers)
    shift = 1 if zero_based else 0
    columns: dict[str, list] = {"request_id": [], "position": [], "exit_layer": []}
    owners: dict[int, _Line] = {}
    first: tuple[_Line, list[str]] | None = None
    for line, record in _json_records(path):
        given = [name for name in CALM_OPTIONAL if name in record]
        first = first or (line, given)
        if given != first[1]:
            raise line.fail(f"has optional fields {given}, line {first[0].number} has "
                            f"{first[1]}; give each on every line or on none")
        layers = [_layer(line, f"exit_layers[{i}]", value, n_layers, shift)
                  for i, value in enumerate(_list(line, record, "exit_layers"))]
        if "id" in record:
            request = _claim(owners, line, "id", _whole(line, "id", record["id"]))
        else:
            request = _claim(owners, line, "id (absent: the line number)", line.number)
        n = len(layers)
        columns["request_id"] += [request] * n
        columns["position"] += range(n)
        columns["exit_layer"] += layers
        if "confidences" in record:
            values = _list(line, record, "confidences")
            if len(values) != n:
                raise line.fail(f"field 'confidences' has {len(values)} values but "
                                f"'exit_layers' has {n}")
            columns.setdefault("confidence", []).extend(
                _probability(line, f"confidences[{i}]", value) for i, value in enumerate(values))
        if "task" in record:
            columns.setdefault("task", []).extend([_text(line, "task", record["task"])] * n)
        if "prompt_len" in record:
            prompt_len = _whole(line, "prompt_len", record["prompt_len"])
            columns.setdefault("prompt_len", []).extend([prompt_len] * n)
    return _trace(path, "calm", "exits", n_layers, columns)


def import_specbench(path: Path | str, n_layers: int) -> ExitTrace:
    """Import a Spec-Bench answer file's per-step accept lengths (see the module docstring)."""
    path = Path(path)
    _check_n_layers(n_layers)
    answers = [_Answer.parse(line, record) for line, record in _json_records(path)]
    owners: dict[int, _Line] = {}
    for answer in answers:
        _claim(owners, answer.line, "question_id", answer.question_id)
        if answer.model_id != answers[0].model_id:
            raise answer.line.bad("model_id", answer.model_id, f"{answers[0].model_id!r} as on "
                                  f"line {answers[0].line.number} (one trace, one model)")
    stride = max(len(answer.choices) for answer in answers)
    columns: dict[str, list] = {"request_id": [], "step": [], "accept_length": [], "task": []}
    for answer in answers:
        for k, lengths in enumerate(answer.choices):
            request = answer.question_id if stride == 1 else answer.question_id * stride + k
            columns["request_id"] += [request] * len(lengths)
            columns["step"] += range(len(lengths))
            columns["accept_length"] += lengths
            columns["task"] += [answer.category] * len(lengths)
    return _trace(path, "specbench", "accept", n_layers, columns, answers[0].model_id)


def import_csv(path: Path | str, n_layers: int) -> ExitTrace:
    """Import a minimal per-token exit CSV (see the module docstring)."""
    path = Path(path)
    _check_n_layers(n_layers)
    reader = csv.reader(io.StringIO(_read(path)))
    header = _csv_header(path, next(reader, []))
    columns: dict[str, list] = {name: [] for name in ("request_id", "position", "exit_layer")}
    columns.update({name: [] for name in CSV_OPTIONAL if name in header})
    owners: dict[tuple[int, int], _Line] = {}
    for cells in reader:
        line = _Line(path, reader.line_num)
        if not cells:
            continue
        if len(cells) != len(header):
            raise line.fail(f"{len(cells)} values {cells} for {len(header)} columns {header}")
        row = dict(zip(header, cells, strict=True))
        request = _whole(line, "request", _number(row["request"], int))
        position = _whole(line, "position", _number(row["position"], int))
        if (request, position) in owners:
            raise line.bad("position", position, f"one row per token, but line "
                           f"{owners[request, position].number} is request {request} too")
        owners[request, position] = line
        columns["request_id"].append(request)
        columns["position"].append(position)
        columns["exit_layer"].append(
            _layer(line, "exit_layer", _number(row["exit_layer"], int), n_layers, 0))
        if "confidence" in row:
            columns["confidence"].append(
                _probability(line, "confidence", _number(row["confidence"], float)))
        if "task" in row:
            columns["task"].append(row["task"])
        if "prompt_len" in row:
            columns["prompt_len"].append(
                _whole(line, "prompt_len", _number(row["prompt_len"], int)))
    if not owners:
        raise TraceError(f"{path}: no rows after the header")
    _check_no_gaps(path, owners)
    return _trace(path, "csv", "exits", n_layers, columns)


def _csv_header(path: Path, cells: list[str]) -> list[str]:
    header = [name.strip() for name in cells]
    expected = f"{list(CSV_REQUIRED)} and any of {list(CSV_OPTIONAL)}"
    if not header:
        raise TraceError(f"{path}: empty file, expected a header with columns {expected}")
    missing = [name for name in CSV_REQUIRED if name not in header]
    unknown = [name for name in header if name not in CSV_REQUIRED + CSV_OPTIONAL]
    repeated = sorted({name for name in header if header.count(name) > 1})
    problems = [f"{what} columns {names}" for what, names in
                (("missing", missing), ("unknown", unknown), ("repeated", repeated)) if names]
    if problems:
        raise _Line(path, 1).fail(f"header has {'; '.join(problems)}; expected {expected}")
    return header


@dataclass(frozen=True)
class _Line:
    """A place in an input file; builds the TraceError for a problem found there."""

    path: Path
    number: int

    def fail(self, problem: str) -> TraceError:
        return TraceError(f"{self.path} line {self.number}: {problem}")

    def bad(self, field: str, value: Any, expected: str) -> TraceError:
        text = repr(value)
        text = text if len(text) <= 60 else text[:57] + "..."
        return self.fail(f"field '{field}' is {text}, expected {expected}")


@dataclass
class _Answer:
    """One line of a Spec-Bench answer file: a question and the accept lengths of its choices."""

    line: _Line
    question_id: int
    category: str
    model_id: str
    choices: list[list[int]]

    @classmethod
    def parse(cls, line: _Line, record: dict) -> _Answer:
        question_id = _whole(line, "question_id", _field(line, record, "question_id"))
        category = _text(line, "category", _field(line, record, "category"))
        choices = []
        for k, choice in enumerate(_list(line, record, "choices")):
            if not isinstance(choice, dict):
                raise line.bad(f"choices[{k}]", choice, "a JSON object")
            label = f"choices[{k}].accept_lengths"
            lengths = _list(line, choice, "accept_lengths", label)
            choices.append([_whole(line, f"{label}[{i}]", value, low=1)
                            for i, value in enumerate(lengths)])
        return cls(line, question_id, category, _text(line, "model_id", record.get("model_id", "")),
                   choices)


def _trace(path: Path, fmt: str, kind: str, n_layers: int, columns: dict[str, list],
           model_name: str = "") -> ExitTrace:
    layers = sorted(set(columns["exit_layer"])) if kind == "exits" else []
    meta = TraceMeta(kind=kind, n_layers=n_layers, exit_layers=layers, model_name=model_name,
                     source=f"{fmt}:{path.name}")
    return ExitTrace(pd.DataFrame(columns), meta, str(path))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraceError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: cannot read it as UTF-8 text ({exc})") from exc


def _json_records(path: Path) -> list[tuple[_Line, dict]]:
    """The JSON object on each non-blank line; a file without one is an error."""
    records = []
    for number, text in enumerate(_read(path).split("\n"), start=1):
        if not text.strip():
            continue
        line = _Line(path, number)
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise line.fail(f"invalid JSON ({exc.msg} at column {exc.colno}): "
                            f"{text[:60]!r}") from None
        if not isinstance(record, dict):
            raise line.fail(f"expected a JSON object, found {text[:60]!r}")
        records.append((line, record))
    if not records:
        raise TraceError(f"{path}: empty file, no JSON lines to import")
    return records


def _check_n_layers(n_layers: int) -> None:
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise TraceError(f"n_layers is {n_layers!r}, expected a whole number >= 1")


def _check_no_gaps(path: Path, owners: dict[tuple[int, int], _Line]) -> None:
    """Each request's positions must be 0, 1, 2, ...; repeats were refused as rows came in."""
    positions: dict[int, set[int]] = {}
    for request, position in owners:
        positions.setdefault(request, set()).add(position)
    for request, seen in sorted(positions.items()):
        last = max(seen)
        if len(seen) != last + 1:
            gap = min(set(range(last)) - seen)
            raise TraceError(f"{path}: request {request} has no row for position {gap}, but "
                             f"line {owners[request, last].number} has position {last}")


def _claim(owners: dict[int, _Line], line: _Line, field: str, request: int) -> int:
    """Refuse a request id an earlier line already used; return it."""
    if request in owners:
        raise line.bad(field, request, f"a new request id, but line {owners[request].number} "
                       f"has it")
    owners[request] = line
    return request


def _field(line: _Line, record: dict, name: str, label: str | None = None) -> Any:
    if name not in record:
        raise line.fail(f"missing field '{label or name}'")
    return record[name]


def _list(line: _Line, record: dict, name: str, label: str | None = None) -> list:
    value = _field(line, record, name, label)
    if not isinstance(value, list) or not value:
        raise line.bad(label or name, value, "a non-empty list")
    return value


def _whole(line: _Line, field: str, value: Any, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise line.bad(field, value, f"a whole number >= {low}")
    return value


def _layer(line: _Line, field: str, value: Any, n_layers: int, shift: int) -> int:
    """An exit layer counted from 1 - shift, returned counted from 1."""
    first, last = 1 - shift, n_layers - shift
    if isinstance(value, bool) or not isinstance(value, int) or not first <= value <= last:
        counting = " (zero_based: counting from 0)" if shift else ""
        raise line.bad(field, value, f"a layer in {first}..{last}{counting}")
    return value + shift


def _probability(line: _Line, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise line.bad(field, value, "a probability in [0, 1]")  # NaN fails the comparison
    return float(value)


def _text(line: _Line, field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise line.bad(field, value, "text")
    return value


def _number(text: str, kind: type) -> Any:
    """CSV text as int or float where it parses; otherwise the text, for the checks to refuse."""
    try:
        return kind(text)
    except ValueError:
        return text


IMPORTERS = {"calm": import_calm, "specbench": import_specbench, "csv": import_csv}


def import_trace(path: Path | str, fmt: str, n_layers: int, **options: Any) -> ExitTrace:
    """Import `path` written in format `fmt` (a key of IMPORTERS); options go to its importer."""
    if fmt not in IMPORTERS:
        raise TraceError(f"unknown trace format {fmt!r}; known formats: {', '.join(IMPORTERS)}")
    return IMPORTERS[fmt](Path(path), n_layers, **options)
