"""Benchmark `eesim sweep`: the 1,000-point grid of 1,000-request simulations
(scripts/grids/bench-1000.toml) with 2 local workers, from an empty folder.

    python scripts/bench_sweep.py [--workers 2] [--grid scripts/grids/bench-1000.toml]

Prints a markdown row for docs/benchmarks.md: points, failures, wall time, points per second.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from eesim.profile.env import cpu_name
from eesim.sweep import load_grid, sweep

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--grid", type=Path, default=ROOT / "scripts" / "grids" / "bench-1000.toml")
    args = ap.parse_args()
    points = load_grid(args.grid)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        table = sweep(points, out, workers=args.workers)
        wall = time.perf_counter() - start
    failed = int((table["status"] != "ok").sum())
    print(f"### Sweep, {args.grid.name} ({datetime.now(UTC):%Y-%m-%d}, {cpu_name()}, "
          f"{platform.python_version()}, {args.workers} workers)\n")
    print("| points | failed | wall time | points/s | median seconds per point (in a worker) |")
    print("|---|---|---|---|---|")
    print(f"| {len(table)} | {failed} | {wall:.0f} s | {len(table) / wall:.2f} | "
          f"{table['seconds'].median():.2f} |")


if __name__ == "__main__":
    main()
