"""Golden simulator answers: a fixed set of questions, every option given explicitly, and the
numbers the simulator gave for them. A refactor that must not change predictions is checked by
comparing against the committed file (equal to 1e-9 relative).

    python scripts/golden_answers.py --check          # compare with tests/data/golden-answers.json
    python scripts/golden_answers.py --write          # rewrite it (only when a change is meant)
    python scripts/golden_answers.py --check --only 8 # the first 8 questions

The questions: every strategy with each KV option it accepts, batch cap 1/4/16, Poisson and
closed-loop arrivals, on the measured CPU profile of the reference model and the analytic H100
llama-3-8b profile (exits mapped by relative depth), one max-prob policy.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "golden-answers.json"
PROFILES = ("profiles/cpu/ref.parquet", "profiles/analytic/h100-sxm-llama-3-8b.parquet")
KV = {"full": ("propagate", "defer"), "sync": ("propagate", "defer"),
      "compact": ("propagate", "defer"), "regroup": ("propagate", "defer"),
      "monotone": ("propagate", "defer"), "selfspec": ("propagate", "defer", "shared")}
POLICY = {"signal": "max_prob", "threshold": 0.75}
RTOL = 1e-9


def questions() -> list[dict]:
    """Every option of `eesim simulate` stated, so a changed default cannot change a question."""
    out = []
    for profile in PROFILES:
        rate = 20.0 if "cpu" in profile else 40.0
        for strategy, kvs in KV.items():
            for kv in kvs:
                for max_batch in (1, 4, 16):
                    for load in ("poisson", "closed"):
                        out.append({
                            "profile": profile, "trace": "traces/reference-greedy.parquet",
                            "strategy": strategy, "kv": kv, "draft_layer": 4, "drafts": 3,
                            "min_layer": 2, "check_every": 1, "horizon": 128,
                            "rate": rate if load == "poisson" else None,
                            "concurrency": 2 * max_batch if load == "closed" else None,
                            "requests": 60, "prompt_len": 48, "output_len": 40,
                            "task_mix": "prose=1,code=1,json=1", "max_batch": max_batch,
                            "batching": "continuous", "prefill": "whole",
                            "max_batched_tokens": 8192, "kv_memory_gib": 1.0, "replicas": 1,
                            "router": "round-robin", "map_depth": "analytic" in profile,
                            "seed": 7, "shadow_rate": 0.0, "policy": POLICY,
                        })
    return out


def answer(q: dict) -> dict:
    """The simulator's numbers for one question (flattened summary, per-request sums)."""
    from eesim.plan.strategies import StrategyConfig
    from eesim.policy.policy import ExitPolicy
    from eesim.scenario.options import LoadOptions, ServingOptions
    from eesim.scenario.request import SimulationRequest
    from eesim.sched import SchedulerConfig
    from eesim.sim.run import run_simulation
    from eesim.trace import read_trace

    spec = q["policy"]
    trace = read_trace(ROOT / q["trace"])
    policy = ExitPolicy(signal=spec["signal"], thresholds={"*": spec["threshold"]},
                        min_layer=1, model_sha256=trace.meta.model_sha256,
                        n_layers=trace.meta.n_layers)
    given = dict(q, name=q["strategy"])

    def pick(model):
        return {f: given[f] for f in model.model_fields if f in given}

    models = (StrategyConfig, LoadOptions, SchedulerConfig, ServingOptions)
    unused = set(q) - {"profile", "trace", "policy", "strategy"} - {
        f for m in models for f in m.model_fields}
    if unused:
        raise ValueError(f"question options that no concern takes: {sorted(unused)}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.json"
        path.write_text(policy.model_dump_json())
        req = SimulationRequest(profile=ROOT / q["profile"], trace=ROOT / q["trace"], policy=path,
                                strategy=pick(StrategyConfig), load=pick(LoadOptions),
                                scheduler=pick(SchedulerConfig), serving=pick(ServingOptions))
        result = run_simulation(req)
    numbers = _flatten(result.summary, ("request", "strategy", "environment", "profile",
                                        "workload", "extrapolated_points"))
    table = result.requests
    for column in ("arrival_s", "first_token_s", "completion_s", "output_tokens", "layer_evals",
                   "exit_checks", "differs", "drafted", "accepted"):
        if column in table:
            numbers[f"requests.{column}.sum"] = float(table[column].astype(float).sum())
    return numbers


def _flatten(doc: dict, skip: tuple[str, ...], prefix: str = "") -> dict:
    out = {}
    for key, value in doc.items():
        if key in skip:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, (), name + "."))
        elif isinstance(value, bool) or value is None:
            out[name] = value
        elif isinstance(value, int | float):
            out[name] = float(value)
    return out


def differences(expected: dict, got: dict) -> list[str]:
    """Fields that differ by more than RTOL relative (or appear on one side only)."""
    bad = []
    for key in sorted(set(expected) | set(got)):
        a, b = expected.get(key, "missing"), got.get(key, "missing")
        if isinstance(a, float) and isinstance(b, float):
            if math.isnan(a) and math.isnan(b):
                continue
            if abs(a - b) <= RTOL * max(abs(a), abs(b)):
                continue
        elif a == b:
            continue
        bad.append(f"{key}: {a} -> {b}")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    ap.add_argument("--only", type=int, default=None, help="the first N questions")
    args = ap.parse_args()
    qs = questions()[: args.only]
    if args.write:
        doc = [{"question": q, "answer": answer(q)} for q in qs]
        GOLDEN.write_text(json.dumps(doc, indent=1, allow_nan=True) + "\n")
        print(f"wrote {len(doc)} answers to {GOLDEN}")
        return 0
    golden = json.loads(GOLDEN.read_text())
    failed = 0
    for entry in golden[: args.only]:
        bad = differences(entry["answer"], answer(entry["question"]))
        if bad:
            failed += 1
            q = entry["question"]
            print(f"{q['profile']} {q['strategy']}/{q['kv']} batch {q['max_batch']} "
                  f"{'rate' if q['rate'] else 'closed'}: " + "; ".join(bad[:4]))
    print(f"{len(golden[: args.only]) - failed} equal, {failed} differ")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
