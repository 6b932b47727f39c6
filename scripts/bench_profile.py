"""Benchmark the profiler: wall time of quick and default CPU profiles, and repeatability.

    python scripts/bench_profile.py --model ref --out-dir profiles/cpu

Runs a quick profile, then two default profiles back to back, and prints a markdown block for
docs/benchmarks.md: wall times, and how far the two default profiles differ at the median grid
point and over all layer points. The second default profile is kept as the committed one.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from eesim.profile.bench import run_profile
from eesim.profile.env import cpu_name
from eesim.profile.format import write_profile


def timed(**kwargs):
    start = time.perf_counter()
    prof = run_profile(**kwargs)
    return prof, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ref")
    ap.add_argument("--out-dir", type=Path, default=Path("profiles/cpu"))
    args = ap.parse_args()
    quick, t_quick = timed(name=args.model, device="cpu", quick=True)
    first, t_first = timed(name=args.model, device="cpu")
    second, t_second = timed(name=args.model, device="cpu")
    write_profile(quick, args.out_dir / f"{args.model}-quick.parquet")
    write_profile(second, args.out_dir / f"{args.model}.parquet")
    a = first.table.set_index(["term", "rows", "query", "context"])["median_s"]
    b = second.table.set_index(["term", "rows", "query", "context"])["median_s"]
    rel = ((b - a).abs() / a).dropna()
    layer = rel.xs("layer", level="term")
    keys = layer.index.to_frame(index=False)
    mid = tuple(int(np.sort(keys[c].unique())[len(keys[c].unique()) // 2]) for c in keys.columns)
    print(f"### Profiler, model `{args.model}` ({datetime.now(UTC):%Y-%m-%d}, {cpu_name()}, "
          f"{platform.machine()}, torch threads {first.meta.env['threads']})\n")
    print(f"Command: `python scripts/bench_profile.py --model {args.model}`\n")
    print("| measure | value |\n|---|---|")
    print(f"| quick profile wall time | {t_quick:.1f} s ({len(quick.table)} points) |")
    print(f"| default profile wall time, run 1 / run 2 | {t_first:.1f} s / {t_second:.1f} s "
          f"({len(first.table)} points) |")
    print(f"| run 1 vs run 2 at the median layer point (rows, query, context) = {mid} | "
          f"{layer.loc[mid]:.1%} |")
    print(f"| run 1 vs run 2 over all layer points: median / p90 / max | {layer.median():.1%} / "
          f"{layer.quantile(0.9):.1%} / {layer.max():.1%} |")
    print(f"| run 1 vs run 2 over all points of all terms: median / p90 | {rel.median():.1%} / "
          f"{rel.quantile(0.9):.1%} |")
    own_a = _own(first)
    own_b = _own(second)
    own = ((own_b - own_a).abs() / own_a).dropna()
    own_layer = own.xs("layer", level="term")
    print(f"| the same without the in-situ factors (operations' own timings): median layer point / "
          f"all layer points median / p90 | {own_layer.loc[mid]:.1%} / {own_layer.median():.1%} / "
          f"{own_layer.quantile(0.9):.1%} |")
    print("| in-situ factor per row count, run 1 / run 2 | "
          + ", ".join(f"{r}: {first.meta.in_situ[r]:.2f} / {second.meta.in_situ[r]:.2f}"
                      for r in first.meta.in_situ) + " |")


def _own(profile):
    """Median seconds per point with the in-situ factor taken off (the operations' timings)."""
    from eesim.profile.insitu import own_timings

    table = own_timings(profile)
    return table.set_index(["term", "rows", "query", "context"])["median_s"]


if __name__ == "__main__":
    main()
