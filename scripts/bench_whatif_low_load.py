"""Best of 3 what-if answers (1,000 requests; the measured CPU profile or another) per strategy at one load,
for before/after comparisons: run it from two checkouts alternately (a `git worktree` of the
old commit with PYTHONPATH pointing at it, then this one).

    python scripts/bench_whatif_low_load.py [STRATEGIES] [RATE] [PROFILE]
    # default: all strategies, 5 req/s, profiles/cpu/ref.parquet (analytic: the H100 one)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from eesim.costmodel import CostModel
from eesim.plan.strategies import STRATEGIES
from eesim.trace import REFERENCE_TRACE, read_trace
from eesim.whatif import WhatIf, answer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    names = sys.argv[1].split(",") if len(sys.argv) > 1 and sys.argv[1] != "all" else list(STRATEGIES)
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    profile = sys.argv[3] if len(sys.argv) > 3 else "profiles/cpu/ref.parquet"
    if profile == "analytic":
        profile = "profiles/analytic/h100-sxm-llama-3-8b.parquet"
    cost = CostModel.load(ROOT / profile)
    trace = read_trace(REFERENCE_TRACE)
    cells = []
    for name in names:
        q = WhatIf(strategy=name, requests=1000, rate=rate, threshold=0.85,
                   draft_layer=4 if cost.meta.model.n_layers <= 8 else 8)
        answer(cost, trace, q, depths=False)  # warm
        times = []
        for _ in range(3):
            start = time.perf_counter()
            answer(cost, trace, q, depths=False)
            times.append(time.perf_counter() - start)
        cells.append(f"{name} {min(times):.2f} s")
    print(" | ".join(cells))


if __name__ == "__main__":
    main()
