"""Count the bulks and pricings one 1,000-request what-if answer takes, per strategy (counted,
not timed: this VM's speed swings do not touch it). `eesim.sim.replica.Replica.decode` and
`_price` are wrapped to count their calls. Same arguments as bench_whatif_low_load.py, and
optionally the bulk sizes and pricings per bulk to try (`eesim.sim.replica.BULK:GUESSES`,
comma-separated; default the module's own):

    python scripts/count_bulks.py [STRATEGIES] [RATE] [PROFILE] [BULK:GUESSES,...]
"""

from __future__ import annotations

import sys
from collections import Counter

from bench_whatif_low_load import questions

import eesim.sim.replica as replica
from eesim.whatif import answer


def main() -> None:
    cost, trace, qs = questions(sys.argv[1:4])
    settings = [tuple(int(v) for v in s.split(":")) for s in sys.argv[4].split(",")] \
        if len(sys.argv) > 4 else [(replica.BULK, replica.GUESSES)]
    calls: Counter[str] = Counter()
    for name in ("decode", "_price"):
        original = getattr(replica.Replica, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)
        setattr(replica.Replica, name, counted)
    print("| strategy | " + " | ".join(f"BULK {b}, GUESSES {g}: bulks / pricings" for b, g in settings)
          + " |\n|---|" + "---|" * len(settings))
    for q in qs:
        cells = []
        for replica.BULK, replica.GUESSES in settings:
            calls.clear()
            answer(cost, trace, q, depths=False)
            cells.append(f"{calls['decode']:,} / {calls['_price']:,}")
        print(f"| {q.strategy} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
