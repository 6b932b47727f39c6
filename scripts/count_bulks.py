"""Count the bulks and pricings one 1,000-request what-if answer takes, per strategy (counted,
not timed: this VM's speed swings do not touch it). `eesim.sim.replica.Replica.decode` and
`_price` are wrapped to count their calls. Same arguments as bench_whatif_low_load.py:

    python scripts/count_bulks.py [STRATEGIES] [RATE] [PROFILE]
"""

from __future__ import annotations

import sys
from collections import Counter

from bench_whatif_low_load import questions

import eesim.sim.replica as replica
from eesim.whatif import answer


def main() -> None:
    cost, trace, qs = questions(sys.argv[1:])
    calls: Counter[str] = Counter()
    for name in ("decode", "_price"):
        original = getattr(replica.Replica, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)
        setattr(replica.Replica, name, counted)
    print("| strategy | bulks | pricings |\n|---|---|---|")
    for q in qs:
        calls.clear()
        answer(cost, trace, q, depths=False)
        print(f"| {q.strategy} | {calls['decode']:,} | {calls['_price']:,} |")


if __name__ == "__main__":
    main()
