"""Count the bulks and pricings one 1,000-request what-if answer takes, per strategy (counted,
not timed: this VM's speed swings do not touch it). `eesim.sim.replica.Replica.decode` and
`_price` are wrapped to count their calls.

    python scripts/count_bulks.py [STRATEGIES] [RATE] [PROFILE]
    # default: all strategies, 5 req/s, profiles/cpu/ref.parquet (analytic: the H100 one)
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import eesim.sim.replica as replica
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
    calls: Counter[str] = Counter()
    for name in ("decode", "_price"):
        original = getattr(replica.Replica, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)
        setattr(replica.Replica, name, counted)
    print("| strategy | bulks | pricings |\n|---|---|---|")
    for name in names:
        calls.clear()
        answer(cost, trace, WhatIf(strategy=name, requests=1000, rate=rate, threshold=0.85,
                                   draft_layer=4 if cost.meta.model.n_layers <= 8 else 8),
               depths=False)
        print(f"| {name} | {calls['decode']:,} | {calls['_price']:,} |")


if __name__ == "__main__":
    main()
