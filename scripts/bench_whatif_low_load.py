"""Best of 3 what-if answers (1,000 requests; the measured CPU profile or another) per strategy
at one load, for before/after comparisons: run it from two checkouts alternately (a `git
worktree` of the old commit with PYTHONPATH pointing at it, then this one).

    python scripts/bench_whatif_low_load.py [STRATEGIES] [RATE] [PROFILE]
    # default: all strategies, 5 req/s, profiles/cpu/ref.parquet (analytic: the H100 one)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from eesim.costmodel import CostModel
from eesim.plan.strategies import STRATEGIES
from eesim.trace import REFERENCE_TRACE, ExitTrace, read_trace
from eesim.whatif import WhatIf, answer

ROOT = Path(__file__).resolve().parents[1]


def questions(argv: list[str]) -> tuple[CostModel, ExitTrace, list[WhatIf]]:
    """The profile, the reference trace and one question per strategy named by the arguments
    [STRATEGIES] [RATE] [PROFILE] (also read by scripts/count_bulks.py)."""
    names = argv[0].split(",") if argv and argv[0] != "all" else list(STRATEGIES)
    rate = float(argv[1]) if len(argv) > 1 else 5.0
    profile = argv[2] if len(argv) > 2 else "profiles/cpu/ref.parquet"
    if profile == "analytic":
        profile = "profiles/analytic/h100-sxm-llama-3-8b.parquet"
    cost = CostModel.load(ROOT / profile)
    draft_layer = 4 if cost.meta.model.n_layers <= 8 else 8
    return cost, read_trace(REFERENCE_TRACE), [
        WhatIf(strategy=name, requests=1000, rate=rate, threshold=0.85, draft_layer=draft_layer)
        for name in names]


def main() -> None:
    cost, trace, qs = questions(sys.argv[1:])
    cells = []
    for q in qs:
        answer(cost, trace, q, depths=False)  # warm
        times = []
        for _ in range(3):
            start = time.perf_counter()
            answer(cost, trace, q, depths=False)
            times.append(time.perf_counter() - start)
        cells.append(f"{q.strategy} {min(times):.2f} s")
    print(" | ".join(cells))


if __name__ == "__main__":
    main()
