"""Small file helpers shared by every stage: atomic writes, so nothing is left half-written."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """JSON, indented, written atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


META_KEY = b"eesim"


def write_parquet_atomic(table, path: Path, meta_json: str) -> None:
    """A DataFrame as zstd Parquet with eesim's JSON metadata, written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata(
        {**(arrow.schema.metadata or {}), META_KEY: meta_json.encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(arrow, tmp, compression="zstd")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_parquet_with_meta(path: Path, error: type[Exception], what: str):
    """(DataFrame, metadata dict) of an eesim Parquet file; problems raise `error` naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise error(f"{path}: no such {what} file")
    try:
        arrow = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise error(f"{path}: not a readable Parquet file ({exc})") from exc
    raw = (arrow.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise error(f"{path}: no eesim {what} metadata (was it written by eesim?)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: invalid {what} metadata ({exc})") from exc
    return arrow.to_pandas(), meta
