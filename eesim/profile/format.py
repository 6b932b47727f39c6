"""Profile files: measured (or analytic) step costs of one model on one device, versioned.

A Parquet table with one row per measured point, `term` naming the cost (see TERMS), `rows`,
`query` and `context` its shape, `median_s` and `iqr_s` the time, `runs` the timed repetitions;
plus JSON metadata under the key `eesim` (ProfileMeta).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import eesim
from eesim.io import read_parquet_with_meta, write_parquet_atomic
from eesim.model.config import ModelConfig

FORMAT_VERSION = 1
TERMS = {
    "layer": "one decoder layer on (rows, query tokens each, context cached before them)",
    "exit_head": "shared exit head on rows: final norm, LM head, softmax max, entropy, top-2 margin",
    "final_head": "final norm + LM head + argmax on rows",
    "embed": "token embedding lookup for rows",
    "sample": "softmax + multinomial sampling over the vocabulary for rows",
    "host_sync": "device-to-host copy of a per-row exit decision (the stall an exit needs)",
    "compact": "gather the active rows' hidden states and index bookkeeping",
    "regroup": "sort rows by expected depth and gather them into sub-batches",
    "mask": "torch.where over rows (running a layer masked instead of on a subset)",
    "kv_fill": "K/V projections of one skipped layer written into the cache, for rows",
    "kv_fill_call": "fixed cost of one KV fill on rows, besides its layers (positions, rotary "
                    "tables, the rows' states)",
    "layer_call": "fixed cost of running a segment of layers on rows, besides the layers: "
                  "gathering the rows' states and cache slots, positions, dispatch",
    "step": "what one decoding pass of the engine costs beyond its operations (scheduling, "
            "planning, bookkeeping), by decoding rows",
    "plan_op": "what each operation of a pass's plan costs the engine beyond the operation itself "
               "(the strategy's generator, the controller, dispatch), by decoding rows",
}
COLUMNS = {"term": "string", "rows": "int32", "query": "int32", "context": "int32",
           "median_s": "float64", "iqr_s": "float64", "runs": "int32"}


class ProfileError(ValueError):
    """A profile that cannot be used as asked; the message names the file, field and value."""


class ProfileMeta(BaseModel):
    """What a profile measured, on what, and how."""

    model_config = ConfigDict(extra="allow")

    format_version: int = FORMAT_VERSION
    kind: Literal["measured", "analytic"]
    device: str = Field(description="Device name (GPU or CPU model), or the analytic hardware.")
    device_type: str = Field(description="cpu, cuda, or analytic")
    model_name: str
    model: ModelConfig
    model_sha256: str = Field("", description="Checkpoint identity; empty for shape-only models.")
    dtype: str
    layers_measured: int = Field(description="Layers instantiated; a layer's cost is per layer.")
    memory: dict = Field(default_factory=dict, description="Byte counts (see docs/formats.md).")
    env: dict = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    quick: bool = False
    batching: Literal["padded", "ragged"] = Field(
        "padded", description="How the engine it describes batches rows of unequal length: "
                              "padded (eesim's engine: the longest query and context) or ragged "
                              "(paged attention over each row's own tokens: the mean).")
    in_situ: dict[int, float] = Field(default_factory=dict, description="Per row count: a layer "
                                      "in the engine's own passes over its profiled time, already "
                                      "applied to the table for every operation without a factor "
                                      "of its own (CPU).")
    in_situ_terms: dict[str, dict[int, float]] = Field(
        default_factory=dict, description="Per term and row count, a factor measured for that "
                                          "term in the engine's own passes, applied instead of "
                                          "`in_situ` (CPU: embed, layer_call, exit_head, "
                                          "host_sync, final_head).")
    seconds: float = 0.0
    eesim_version: str = eesim.__version__
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


@dataclass
class Profile:
    table: pd.DataFrame
    meta: ProfileMeta
    where: str = "profile"

    def __post_init__(self) -> None:
        missing = [c for c in COLUMNS if c not in self.table]
        if missing:
            raise ProfileError(f"{self.where}: missing column(s) {missing}")
        unknown = sorted(set(self.table["term"]) - set(TERMS))
        if unknown:
            raise ProfileError(f"{self.where}: column 'term' has unknown terms {unknown}")
        bad = self.table[(self.table["median_s"] < 0) | self.table["median_s"].isna()]
        if len(bad):
            row = bad.index[0]
            raise ProfileError(f"{self.where}: column 'median_s' row {row} is "
                               f"{float(self.table['median_s'].iloc[row])!r}, must be a time >= 0")
        self.table = self.table.astype(COLUMNS).sort_values(
            ["term", "rows", "query", "context"], kind="stable").reset_index(drop=True)

    @property
    def terms(self) -> list[str]:
        return sorted(set(self.table["term"]))

    def summary(self) -> dict:
        """What `eesim profile show --json` prints."""
        per_term = {}
        for term, rows in self.table.groupby("term"):
            per_term[term] = {
                "points": len(rows),
                "rows": sorted(int(x) for x in rows["rows"].unique()),
                "query": sorted(int(x) for x in rows["query"].unique()),
                "context": sorted(int(x) for x in rows["context"].unique()),
                "median_s": {"min": float(rows["median_s"].min()),
                             "max": float(rows["median_s"].max())},
            }
        return {"kind": self.meta.kind, "device": self.meta.device,
                "device_type": self.meta.device_type, "model": self.meta.model_name,
                "model_shape": self.meta.model.model_dump(), "model_sha256": self.meta.model_sha256,
                "dtype": self.meta.dtype, "layers_measured": self.meta.layers_measured,
                "terms": self.terms, "by_term": per_term, "memory": self.meta.memory,
                "env": self.meta.env, "notes": self.meta.notes, "quick": self.meta.quick,
                "seconds": self.meta.seconds, "created": self.meta.created}


def write_profile(profile: Profile, path: Path) -> None:
    """Parquet (zstd) with metadata, written to a temporary file and renamed."""
    write_parquet_atomic(profile.table, Path(path), profile.meta.model_dump_json())


def read_profile(path: Path | str) -> Profile:
    """Load a profile; a missing, unreadable or foreign file raises ProfileError naming it."""
    path = Path(path)
    table, raw = read_parquet_with_meta(path, ProfileError, "profile")
    try:
        meta = ProfileMeta.model_validate(raw)
    except ValidationError as exc:
        raise ProfileError(f"{path}: invalid profile metadata: {exc}") from exc
    if meta.format_version != FORMAT_VERSION:
        raise ProfileError(f"{path}: field 'format_version' is {meta.format_version}, "
                           f"this eesim reads {FORMAT_VERSION}")
    return Profile(table, meta, str(path))
