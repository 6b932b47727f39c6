"""Start-up time of the simulator's side: a fresh interpreter importing what `eesim simulate`,
sweeps and the what-if page load, timed in-process (best of N), and whether torch came with it.
With `--against DIR` (another checkout, e.g. a `git worktree` of an older commit) both trees
are timed alternately in one run, so their ratio is side by side.

    python scripts/bench_startup.py [--repeats 7] [--against /tmp/wt-before]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

MODULES = ("eesim.sim.run", "eesim.whatif", "eesim.sweep", "eesim.cli")
PROBE = ("import json, sys, time; t = time.perf_counter(); import {m}; "
         "print(json.dumps([time.perf_counter() - t, 'torch' in sys.modules]))")


def once(tree: Path, module: str) -> tuple[float, bool]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", PROBE.format(m=module)], env=env, cwd=tree,
                         capture_output=True, text=True, check=True)
    seconds, torch = json.loads(out.stdout)
    return seconds, torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--against", type=Path, default=None, help="another checkout to time beside")
    args = ap.parse_args()
    trees = {"this": Path(__file__).resolve().parent.parent}
    if args.against:
        trees["against"] = args.against.resolve()
    best: dict[tuple[str, str], float] = {}
    torch: dict[tuple[str, str], bool] = {}
    for _ in range(args.repeats):
        for module in MODULES:
            for name, tree in trees.items():
                seconds, loaded = once(tree, module)
                key = (name, module)
                best[key] = min(best.get(key, seconds), seconds)
                torch[key] = loaded
    print("| import | " + " | ".join(f"{n} (s, torch?)" for n in trees) + " |"
          + (" ratio |" if args.against else ""))
    print("|---" * (len(trees) + 1 + bool(args.against)) + "|")
    for module in MODULES:
        cells = [f"{best[(n, module)]:.3f} ({'torch' if torch[(n, module)] else 'no torch'})"
                 for n in trees]
        ratio = f" {best[('this', module)] / best[('against', module)]:.2f} |" if args.against else ""
        print(f"| `{module}` | " + " | ".join(cells) + " |" + ratio)


if __name__ == "__main__":
    main()
