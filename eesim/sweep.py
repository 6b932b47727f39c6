"""Sweeps: thousands of what-if simulations over a grid, resumable, local or on Ray.

    eesim sweep --grid grid.toml --out sweep/ [--workers N] [--ray [ADDRESS]]

A grid file (TOML) has a `[base]` table of what-if fields (eesim.whatif.WhatIf) shared by every
point, and an `[axes]` table of lists: any what-if field, plus `profile`, `trace` and `policy`
(paths, relative to the grid file). The points are the Cartesian product of the axes, in file
order. Each point's result is its own JSON file under `OUT/points/`, named by a hash of the
point, written atomically: an interrupted sweep resumes where it stopped, and a point that
fails is recorded with its error (and not retried unless asked) instead of stopping the sweep.
`OUT/results.parquet` gathers the grid's points, one row each.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
import tomllib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from eesim.io import write_json_atomic, write_parquet_atomic
from eesim.whatif import WhatIf

FILE_AXES = ("profile", "trace", "policy")
METRICS = {"ttft_mean_s": ("ttft_s", "mean"), "ttft_p99_s": ("ttft_s", "p99"),
           "tpot_mean_s": ("tpot_s", "mean"), "tpot_p99_s": ("tpot_s", "p99"),
           "throughput_tokens_per_s": ("throughput_tokens_per_s",),
           "throughput_requests_per_s": ("throughput_requests_per_s",),
           "peak_memory_bytes": ("peak_memory_bytes",), "layers_per_token": ("layers_per_token",),
           "quality_delta": ("quality_delta",), "acceptance_rate": ("acceptance_rate",),
           "extrapolated": ("extrapolated",)}


class GridError(ValueError):
    """A grid file that cannot be swept; the message names the file, field and value."""


def point_id(point: dict) -> str:
    """A point's name: the first 16 hex digits of the SHA-256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(point, sort_keys=True).encode()).hexdigest()[:16]


def load_grid(path: Path | str) -> list[dict]:
    """Every point of a grid file, validated before any simulation runs."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise GridError(f"{path}: no such grid file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise GridError(f"{path}: not valid TOML ({exc})") from exc
    unknown = sorted(set(doc) - {"base", "axes"})
    if unknown:
        raise GridError(f"{path}: unknown table(s) {unknown}; a grid has [base] and [axes]")
    base, axes = doc.get("base", {}), doc.get("axes", {})
    fields = set(WhatIf.model_fields)
    for table, keys in (("base", base), ("axes", axes)):
        for key in keys:
            if key not in fields and key not in FILE_AXES:
                raise GridError(f"{path}: [{table}] field {key!r} is not a what-if field "
                                f"({', '.join(sorted(fields | set(FILE_AXES)))})")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise GridError(f"{path}: [axes] field {key!r} must be a non-empty list, got {values!r}")
    for key in ("profile", "trace"):
        if key not in axes and key not in base:
            raise GridError(f"{path}: field {key!r} missing (give it in [base] or [axes])")
    names = list(axes)
    points = []
    for values in itertools.product(*(axes[n] for n in names)):
        point = {**base, **dict(zip(names, values, strict=True))}
        for key in FILE_AXES:
            if point.get(key) is not None:
                point[key] = _resolve(path, key, point[key])
        question = {k: v for k, v in point.items() if k not in FILE_AXES}
        try:
            WhatIf(**question)
        except ValidationError as exc:
            e = exc.errors()[0]
            where = ".".join(str(x) for x in e["loc"]) or "point"
            raise GridError(f"{path}: field {where!r} = {e.get('input')!r}: "
                            f"{e['msg'].removeprefix('Value error, ')}") from exc
        points.append(point)
    return points


def _resolve(grid: Path, key: str, value) -> str:
    """A file named in a grid: absolute, or relative to the grid file's folder."""
    if not isinstance(value, str):
        raise GridError(f"{grid}: field {key!r} must be a path, got {value!r}")
    candidate = Path(value) if Path(value).is_absolute() else grid.parent / value
    if not candidate.exists():
        raise GridError(f"{grid}: field {key!r} = {value!r}: no such file (paths are relative to "
                        f"the grid file's folder)")
    return str(candidate.resolve())


@lru_cache(maxsize=16)
def _cost(path: str):
    from eesim.costmodel import CostModel

    return CostModel.load(path)


@lru_cache(maxsize=16)
def _trace(path: str):
    from eesim.trace import read_trace

    return read_trace(path)


@lru_cache(maxsize=16)
def _policy(path: str):
    from eesim.policy.policy import load_policy

    return load_policy(path)


def run_point(point: dict) -> dict:
    """Simulate one point (in whichever process runs it): its record, ok or failed."""
    from eesim.whatif import answer

    started = time.perf_counter()
    record = {"id": point_id(point), "point": point}
    try:
        question = WhatIf(**{k: v for k, v in point.items() if k not in FILE_AXES})
        policy = _policy(point["policy"]) if point.get("policy") else None
        summary = answer(_cost(point["profile"]), _trace(point["trace"]), question, policy,
                         depths=False).summary
        record.update(status="ok", summary=summary)
    except Exception as exc:  # noqa: BLE001  (recorded with the point; the sweep goes on)
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    record["seconds"] = round(time.perf_counter() - started, 4)
    return record


def _path(out: Path, pid: str) -> Path:
    return out / "points" / f"{pid}.json"


def pending(points: list[dict], out: Path, retry_failed: bool = False) -> list[dict]:
    """Points without a result file (or with a failed one, if `retry_failed`)."""
    todo = []
    for point in points:
        path = _path(out, point_id(point))
        if path.exists():
            if not retry_failed:
                continue
            try:
                if json.loads(path.read_text()).get("status") == "ok":
                    continue
            except json.JSONDecodeError:
                pass
        todo.append(point)
    return todo


def sweep(points: list[dict], out: Path | str, workers: int = 2, ray_address: str | None = None,
          use_ray: bool = False, retry_failed: bool = False,
          on_result: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """Run every point not done yet, writing each result as it arrives; then gather the grid's
    results into OUT/results.parquet (and return them). Local: a process pool of `workers`
    (1: in this process). `use_ray`: the same points as Ray tasks, on the cluster at
    `ray_address`, or a local Ray instance started for the sweep when it is None."""
    out = Path(out)
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    (out / "points").mkdir(parents=True, exist_ok=True)
    todo = pending(points, out, retry_failed)

    def done(record: dict) -> None:
        write_json_atomic(_path(out, record["id"]), record)
        if on_result:
            on_result(record)

    if use_ray:
        _ray(todo, ray_address, done)
    elif workers == 1 or len(todo) <= 1:
        for point in todo:
            done(run_point(point))
    else:
        _pool(todo, workers, done)
    table = collect(points, out)
    write_parquet_atomic(table, out / "results.parquet", json.dumps({"points": len(points)}))
    return table


def _pool(todo: list[dict], workers: int, done: Callable[[dict], None]) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in as_completed([pool.submit(run_point, p) for p in todo]):
            done(future.result())


def _ray(todo: list[dict], address: str | None, done: Callable[[dict], None]) -> None:
    try:
        import ray
    except ImportError as exc:
        raise ValueError("--ray needs Ray: pip install -e '.[ray]'") from exc
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True)
    try:
        remote = ray.remote(run_point)
        waiting = [remote.remote(p) for p in todo]
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            done(ray.get(ready[0]))
    finally:
        if started:
            ray.shutdown()


def collect(points: list[dict], out: Path) -> pd.DataFrame:
    """One row per point of the grid that has a result: its id, status, error, axes and metrics."""
    rows = []
    for point in points:
        path = _path(out, point_id(point))
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        row = {"id": record["id"], "status": record["status"], "error": record.get("error", ""),
               "seconds": record.get("seconds")}
        row.update({k: (Path(v).name if k in FILE_AXES and v else v) for k, v in point.items()})
        summary = record.get("summary") or {}
        for name, keys in METRICS.items():
            value = summary
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            row[name] = value
        rows.append(row)
    return pd.DataFrame(rows)
