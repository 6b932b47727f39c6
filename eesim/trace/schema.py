"""Exit traces on disk and in memory: one Parquet file, validated on load.

Three kinds share one file layout (a Parquet table plus JSON metadata under the key `eesim`):

- `full`: recorded by eesim. One row per (generated token, exit layer) with that exit's top-1
  token and its confidence signals. Any exit policy can be replayed on it offline.
- `exits`: imported from a tool that logged only the exit it took, or realised by a measured
  run. One row per token with `exit_layer`, optionally `confidence` and `differs` (1 where the
  token is not the full-depth one). Exit decisions are fixed; no policy can be replayed.
- `accept`: imported self-speculation logs. One row per decoding step with `accept_length`
  (tokens emitted by the step, the verified bonus token included).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

import eesim
from eesim.io import read_parquet_with_meta, write_parquet_atomic
from eesim.paths import committed

SCHEMA_VERSION = 1
REFERENCE_TRACE = committed("traces", "reference-greedy.parquet")
Kind = Literal["full", "exits", "accept"]

# column -> (numpy kind, required) per trace kind; "S" marks strings.
COLUMNS: dict[str, dict[str, tuple[str, bool]]] = {
    "full": {
        "request_id": ("i", True), "position": ("i", True), "prompt_len": ("i", True),
        "task": ("S", True), "token": ("i", True), "token_text": ("S", True),
        "token_class": ("S", True), "layer": ("i", True), "top1": ("i", True),
        "top1_class": ("S", True), "max_prob": ("f", True), "entropy": ("f", True),
        "margin": ("f", True), "top1_text": ("S", False), "prompt_text": ("S", False),
    },
    "exits": {
        "request_id": ("i", True), "position": ("i", True), "exit_layer": ("i", True),
        "confidence": ("f", False), "task": ("S", False), "prompt_len": ("i", False),
        "token_class": ("S", False), "differs": ("i", False),
    },
    "accept": {
        "request_id": ("i", True), "step": ("i", True), "accept_length": ("i", True),
        "task": ("S", False), "prompt_len": ("i", False),
    },
}
NARROW = {"request_id": "int32", "position": "int32", "prompt_len": "int32", "token": "int32",
          "layer": "int8", "top1": "int32", "max_prob": "float32", "entropy": "float32",
          "margin": "float32", "exit_layer": "int8", "confidence": "float32", "step": "int32",
          "accept_length": "int16", "differs": "int8"}
CATEGORICAL = ("task", "token_class", "top1_class", "top1_text", "prompt_text")


class TraceError(ValueError):
    """A trace that cannot be used as it is; the message names file, column, row and value."""


class TraceMeta(BaseModel):
    """What a trace is and where it came from; stored as JSON in the Parquet metadata."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    kind: Kind = Field(description="full, exits or accept (see the module docstring).")
    model_sha256: str = Field("", description="Identity of the model the trace was recorded on.")
    model_name: str = ""
    n_layers: int = Field(ge=1, description="Decoder layers of that model.")
    exit_layers: list[int] = Field(default_factory=list, description="Exit layers recorded.")
    decoding: dict = Field(default_factory=dict, description="greedy or sampling settings.")
    split: str = ""
    source: str = Field("eesim", description="eesim, or the tool and file it was imported from.")
    eesim_version: str = eesim.__version__
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


@dataclass
class ExitTrace:
    """A trace, validated on construction: its table (rows sorted by request, position or step,
    layer) and metadata. `where` names the source in error messages."""

    table: pd.DataFrame
    meta: TraceMeta
    where: str = "trace"

    def __post_init__(self) -> None:
        self.table = validate(self.table, self.meta, self.where)
        self._tokens: pd.DataFrame | None = None

    @property
    def kind(self) -> str:
        return self.meta.kind

    def tokens(self) -> pd.DataFrame:
        """One row per generated token (for `full`, the rows of the deepest exit layer); made
        once and shared by every caller, so read it, never change it."""
        if self.kind != "full":
            return self.table
        if self._tokens is None:
            last = self.table["layer"] == self.meta.exit_layers[-1]
            self._tokens = self.table.loc[last].reset_index(drop=True)
        return self._tokens

    def matrix(self, column: str) -> np.ndarray:
        """(tokens, exit layers) array of a per-exit column of a `full` trace."""
        if self.kind != "full":
            raise TraceError(f"a '{self.kind}' trace has no per-exit column '{column}'")
        values = self.table[column].to_numpy()
        return values.reshape(-1, len(self.meta.exit_layers))

    def requests_by_task(self) -> dict[str, int]:
        tokens = self.tokens()
        if "task" not in tokens:
            return {"unknown": int(tokens["request_id"].nunique())}
        counts = tokens.groupby("task", observed=True)["request_id"].nunique()
        return {str(k): int(v) for k, v in counts.items()}


def write_trace(trace: ExitTrace, path: Path) -> None:
    """Write Parquet (zstd, narrow dtypes, categorical strings) atomically."""
    write_parquet_atomic(_narrow(trace.table), Path(path), trace.meta.model_dump_json())


def read_trace(path: Path | str) -> ExitTrace:
    """Load and validate a trace file; every problem raises TraceError naming what is wrong."""
    path = Path(path)
    table, raw = read_parquet_with_meta(path, TraceError, "trace")
    try:
        meta = TraceMeta.model_validate(raw)
    except ValueError as exc:
        raise TraceError(f"{path}: invalid metadata: {exc}") from exc
    if meta.schema_version != SCHEMA_VERSION:
        raise TraceError(f"{path}: metadata field 'schema_version' is {meta.schema_version}, "
                         f"this eesim reads {SCHEMA_VERSION}")
    return ExitTrace(table, meta, str(path))


def validate(table: pd.DataFrame, meta: TraceMeta, where: str) -> pd.DataFrame:
    """Check columns, types and values of a trace table; return it sorted and re-indexed."""
    spec = COLUMNS[meta.kind]
    for col, (kind, required) in spec.items():
        if col not in table:
            if required:
                raise TraceError(f"{where}: missing column '{col}' (a '{meta.kind}' trace needs "
                                 f"{sorted(c for c, (_, r) in spec.items() if r)})")
            continue
        _check_type(table[col], col, kind, where)
    if table.empty:
        raise TraceError(f"{where}: the trace has no rows")
    for col in ("request_id", "position", "step", "prompt_len"):
        if col in table:
            _check_range(table, col, where, low=0)
    order = {"full": ["request_id", "position", "layer"], "exits": ["request_id", "position"],
             "accept": ["request_id", "step"]}[meta.kind]
    table = table.sort_values(order, kind="stable").reset_index(drop=True)
    getattr(_Checks, meta.kind)(table, meta, where)
    return table


class _Checks:
    """Kind-specific value checks."""

    @staticmethod
    def full(table: pd.DataFrame, meta: TraceMeta, where: str) -> None:
        _check_range(table, "layer", where, low=1, high=meta.n_layers)
        for col in ("max_prob", "margin"):
            _check_range(table, col, where, low=0.0, high=1.0)
        _check_range(table, "entropy", where, low=0.0)
        layers = sorted(int(x) for x in table["layer"].unique())
        if layers != sorted(meta.exit_layers):
            raise TraceError(f"{where}: column 'layer' holds {layers}, metadata 'exit_layers' "
                             f"says {meta.exit_layers}")
        per_token = table.groupby(["request_id", "position"]).size()
        bad = per_token[per_token != len(layers)]
        if len(bad):
            (req, pos), n = bad.index[0], int(bad.iloc[0])
            raise TraceError(f"{where}: request {req} position {pos} has {n} exit rows, "
                             f"expected one per exit layer ({len(layers)})")
        _check_contiguous(table.loc[table["layer"] == layers[-1]], "position", where)

    @staticmethod
    def exits(table: pd.DataFrame, meta: TraceMeta, where: str) -> None:
        _check_range(table, "exit_layer", where, low=1, high=meta.n_layers)
        if "confidence" in table:
            _check_range(table, "confidence", where, low=0.0, high=1.0)
        _check_contiguous(table, "position", where)

    @staticmethod
    def accept(table: pd.DataFrame, meta: TraceMeta, where: str) -> None:
        _check_range(table, "accept_length", where, low=1)
        _check_contiguous(table, "step", where)


def _check_type(series: pd.Series, col: str, kind: str, where: str) -> None:
    if kind == "S":
        if not (series.dtype == object or isinstance(series.dtype, (pd.CategoricalDtype, pd.StringDtype))):
            raise TraceError(f"{where}: column '{col}' must hold text, found {series.dtype}")
        return
    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        raise TraceError(f"{where}: column '{col}' must be numeric, found {series.dtype}")
    nan = series.isna().to_numpy()
    if nan.any():
        row = int(np.flatnonzero(nan)[0])
        raise TraceError(f"{where}: column '{col}' row {row} is NaN")
    if kind == "i" and not pd.api.types.is_integer_dtype(series):
        frac = series.to_numpy() % 1 != 0
        if frac.any():
            row = int(np.flatnonzero(frac)[0])
            raise TraceError(f"{where}: column '{col}' row {row} is {series.iloc[row]!r}, "
                             f"expected a whole number")


def _check_range(table: pd.DataFrame, col: str, where: str, low: float | None = None,
                 high: float | None = None) -> None:
    values = table[col].to_numpy()
    bad = np.zeros(len(values), dtype=bool)
    if low is not None:
        bad |= values < low
    if high is not None:
        bad |= values > high
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise TraceError(f"{where}: column '{col}' row {row} is {values[row].item()!r}, must be {bounds}")


def _check_contiguous(table: pd.DataFrame, col: str, where: str) -> None:
    """Each request's positions (or steps) must be 0, 1, 2, … with no gap or repeat."""
    values = table[col].to_numpy()
    starts = np.r_[True, table["request_id"].to_numpy()[1:] != table["request_id"].to_numpy()[:-1]]
    expected = np.arange(len(values)) - np.maximum.accumulate(np.where(starts, np.arange(len(values)), 0))
    bad = values != expected
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise TraceError(f"{where}: request {table['request_id'].iloc[row]} column '{col}' is "
                         f"{values[row]} at row {row}, expected {expected[row]} (gap or repeat)")


def _narrow(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    for col, dtype in NARROW.items():
        if col in table:
            table[col] = table[col].astype(dtype)
    for col in CATEGORICAL:
        if col in table:
            table[col] = table[col].astype("category")
    return table
