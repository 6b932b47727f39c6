"""Markdown tables for docs/validation.md from a validation table.

    python scripts/validation_tables.py profiles/cpu/validation.parquet
"""

import sys
from pathlib import Path

import pandas as pd

from eesim.io import read_parquet_with_meta
from eesim.validate import METRICS, speedup_table


def main(path: str) -> None:
    table, summary = read_parquet_with_meta(Path(path), ValueError, "validation table")
    print(f"{summary['grid']} grid, {summary['scenarios']} scenarios, {summary['seconds']:.0f} s, "
          f"{summary['date']}, {summary['environment']['device_name']}, torch "
          f"{summary['environment']['torch']}, {summary['environment']['threads']} threads, "
          f"profile {summary['profile']['seconds']:.0f} s\n")
    print("| error | " + " | ".join(METRICS) + " |\n|---|" + "---|" * len(METRICS))
    for key in ("median_abs_error", "p90_abs_error"):
        print(f"| {key.split('_')[0]} | "
              + " | ".join(f"{summary[key][m]:.1%}" for m in METRICS) + " |")
    print("\nMedian TPOT error by strategy and batch cap (all loads and mixes):\n")
    table["label"] = [s.split(" b")[0] for s in table["scenario"]]
    errors = table.pivot_table(index="label", columns="max_batch", values="tpot_mean_abs_error",
                               aggfunc="median")
    print(markdown(errors.map(lambda v: f"{v:.1%}")))
    signed = table.assign(bias=table["tpot_mean_predicted"] / table["tpot_mean_measured"] - 1)
    print("\nMedian signed TPOT error (predicted / measured - 1) by batch cap: "
          + ", ".join(f"b{b}: {v:+.1%}" for b, v in signed.groupby("max_batch")["bias"].median().items()))
    print("\nRealised speedup over full (closed loop, median over mixes): measured / predicted "
          "(layer-savings bound):\n")
    sp = speedup_table(table)
    cells = sp.assign(cell=[f"{m:.2f} / {p:.2f} ({b:.2f})" for m, p, b in
                            zip(sp["speedup_measured"], sp["speedup_predicted"], sp["speedup_bound"],
                                strict=True)])
    print(markdown(cells.pivot(index="label", columns="max_batch", values="cell")))


def markdown(frame: pd.DataFrame) -> str:
    """A pivot table as Markdown: the index, then one column per batch cap."""
    head = "| | " + " | ".join(f"batch {c}" for c in frame.columns) + " |"
    lines = [head, "|---|" + "---|" * len(frame.columns)]
    lines += [f"| {i} | " + " | ".join(str(v) for v in row) + " |" for i, row in frame.iterrows()]
    return "\n".join(lines)


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main(sys.argv[1])
