"""Validation: one scenario grid, run both ways, one table of predicted vs measured.

    eesim validate --grid quick --json

A scenario is a strategy, a batch cap, a load and a task mix. Each one is simulated with the
SimPy simulator, priced by a profile taken in the same process, and served for real on the
reference model by the engine. Both sides get the same workload, seed and request binding, so
they replay the same exit decisions and differ only in who pays for a step. For every metric m
the table holds `m_predicted`, `m_measured` and `m_abs_error` = |predicted - measured| / measured;
the summary gives the median and p90 of each error over the scenarios.

A shared machine's speed swings by tens of percent for seconds at a time, so every scenario is
run `repeats` times, each run calibrated just before it and predicted with that calibration:
`m_predicted` and `m_measured` are means over the runs. `m_repeat_noise` = (max - min) /
(max + min) of the measured runs is, for two runs, |M1 - M2| / (M1 + M2): distributed as the
error of a perfect prediction of their mean (independent noise). Its median and p90 over the
scenarios are the floor below which no model's error can be read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from eesim.costmodel import CostModel
from eesim.model import Checkpoint
from eesim.paths import OUT
from eesim.plan.strategies import StrategyConfig
from eesim.profile.format import Profile
from eesim.scenario.behaviour import Behaviour, bit
from eesim.scenario.workload import Workload, closed_loop, poisson
from eesim.sched import SchedulerConfig
from eesim.sim.simulate import simulate

# The grid's axes.
FULL, SYNC, COMPACT, REGROUP = (StrategyConfig(name=n) for n in ("full", "sync", "compact", "regroup"))
SELFSPEC_2, SELFSPEC_4 = (StrategyConfig(name="selfspec", kv="shared", draft_layer=e, drafts=4)
                          for e in (2, 4))
MONOTONE = StrategyConfig(name="monotone")
STRATEGIES = (FULL, SYNC, COMPACT, REGROUP, SELFSPEC_2, SELFSPEC_4, MONOTONE)
BATCHES = (1, 4, 16)
LOADS = ("closed", "poisson")
MIXES = {"prose": {"prose": 1.0}, "code": {"code": 1.0}, "json": {"json": 1.0},
         "mixed": {"prose": 1.0, "code": 1.0, "json": 1.0},
         "straggler": None}  # an explicit binding: see straggler_binding
# How every scenario is run.
POISSON_LOAD = 0.5       # Poisson arrivals at this share of the simulated closed-loop capacity
KV_CAPACITY = 2**30      # bytes of KV blocks: enough that nothing is preempted
BUDGET = 0.01            # the policy's calibration quality budget, as in `eesim demo`
RECALIBRATE = True       # re-measure step and in-situ factors before each scenario (drift)
METRICS = {"tpot_mean": ("tpot_s", "mean"), "tpot_p90": ("tpot_s", "p90"),
           "ttft_mean": ("ttft_s", "mean"), "throughput": ("throughput_tokens_per_s",),
           "peak_memory": ("peak_memory_bytes",)}


@dataclass(frozen=True)
class Sizes:
    """Workload sizes: prompt and output lengths (uniform in [a, b]) and requests per scenario,
    `per_row` times the batch cap but at least `min_requests`."""

    prompt: tuple[int, int]
    output: tuple[int, int]
    per_row: int
    min_requests: int

    def requests(self, max_batch: int) -> int:
        return max(self.min_requests, self.per_row * max_batch)


QUICK_SIZES = Sizes(prompt=(32, 32), output=(32, 48), per_row=3, min_requests=4)  # CI: seconds each
FULL_SIZES = Sizes(prompt=(64, 64), output=(64, 64), per_row=4, min_requests=8)


@dataclass(frozen=True)
class Scenario:
    """One cell of the grid. A closed load keeps `max_batch` users in flight (saturation); a
    Poisson load arrives at POISSON_LOAD times the simulated closed-loop capacity."""

    strategy: StrategyConfig
    max_batch: int
    load: Literal["closed", "poisson"]
    mix: str

    @property
    def label(self) -> str:
        s = self.strategy
        name = f"selfspec(E={s.draft_layer},k={s.drafts})" if s.name == "selfspec" else s.name
        return f"{name} b{self.max_batch} {self.load} {self.mix}"


@dataclass(frozen=True)
class Grid:
    name: str
    scenarios: tuple[Scenario, ...]
    sizes: Sizes
    quick_profile: bool
    repeats: int = 2  # measured runs per scenario, each calibrated just before it


def _quick_scenarios() -> tuple[Scenario, ...]:
    """Every strategy at batch 4 (closed, mixed); the batch axis, a Poisson load and a straggler
    on the baseline and the strategies they matter most to."""
    return (*(Scenario(s, 4, "closed", "mixed") for s in STRATEGIES),
            *(Scenario(s, b, "closed", "mixed") for b in (1, 16) for s in (FULL, COMPACT)),
            *(Scenario(s, 4, "poisson", "mixed") for s in (FULL, COMPACT)),
            *(Scenario(s, 4, "closed", "straggler") for s in (FULL, SYNC, COMPACT)))


GRIDS = {
    "quick": Grid("quick", _quick_scenarios(), QUICK_SIZES, quick_profile=True),
    "full": Grid("full", tuple(Scenario(s, b, load, mix) for s in STRATEGIES for b in BATCHES
                               for load in LOADS for mix in MIXES), FULL_SIZES, quick_profile=False),
}


def grid_named(name: str) -> Grid:
    if name not in GRIDS:
        raise ValueError(f"--grid {name!r} is not one of {', '.join(GRIDS)}")
    return GRIDS[name]


@dataclass
class Bench:
    """What every scenario runs on: the profile and its cost model, the exit behaviour of the
    reference trace under the calibrated policy, and the reference model."""

    profile: Profile
    cost: CostModel
    behaviour: Behaviour
    ckpt: Checkpoint

    @property
    def n_layers(self) -> int:
        return self.behaviour.n_layers

    def recalibrate(self, max_batch: int, prompt: int) -> float:
        """Measure `step` and the in-situ factors again at the profile's row counts up to
        `max_batch` (a few dozen full-depth engine passes each, on prompts of `prompt` tokens:
        a layer's factor depends on the context it decodes at), and price with them: the
        machine's speed drifts over minutes, the operations' timings do not change. The
        layer's factor at the largest of those row counts."""
        from eesim.profile.insitu import recalibrate

        counts = sorted(set(self.profile.table.loc[self.profile.table["term"] == "step", "rows"]))
        wanted = [r for r in counts if r <= max_batch] or counts[:1]
        self.profile = recalibrate(self.profile, self.ckpt.model, wanted, prompt)
        self.cost = CostModel(self.profile)
        return float(self.profile.meta.in_situ[wanted[-1]])


def prepare(quick: bool, on_start: Callable[[int], None] | None = None,
            on_point: Callable[[str], None] | None = None) -> Bench:
    """Profile the reference model on the CPU (where the engine runs), load it, calibrate the
    policy on the reference trace and warm the engine up (excluded from every timing)."""
    from eesim.model import load_checkpoint
    from eesim.policy.calibrate import calibrate
    from eesim.profile.bench import run_profile
    from eesim.scenario.behaviour import from_trace
    from eesim.trace import REFERENCE_TRACE, read_trace

    profile = run_profile("ref", "cpu", quick, on_start=on_start, on_point=on_point)
    ckpt = load_checkpoint()
    trace = read_trace(REFERENCE_TRACE)
    if trace.meta.model_sha256 != ckpt.sha256:
        raise ValueError(f"{REFERENCE_TRACE}: traced model {trace.meta.model_sha256[:12]}… is not "
                         f"the reference model {ckpt.sha256[:12]}…")
    policy, _ = calibrate(trace, BUDGET)
    bench = Bench(profile, CostModel(profile), from_trace(trace, policy, ckpt.model.cfg.n_layers), ckpt)
    _warm_up(bench)
    return bench


def _warm_up(bench: Bench) -> None:
    from eesim.engine.measure import measure

    measure(bench.ckpt, bench.behaviour, closed_loop(2, 2, 0, prompt=(8, 8), output=(4, 4)), FULL,
            SchedulerConfig(max_batch=2, kv_capacity_bytes=KV_CAPACITY))


def exit_depths(behaviour: Behaviour) -> np.ndarray:
    """(M,) mean exit layer of each trace request under the policy: per token, the first layer
    whose exit check passes (the last layer always does)."""
    first = np.full(len(behaviour.pass_bits), behaviour.n_layers)
    for layer in range(behaviour.n_layers - 1, 0, -1):
        first = np.where(bit(behaviour.pass_bits, layer), layer, first)
    return np.add.reduceat(first, behaviour.offsets[:-1]) / behaviour.lengths()


def straggler_binding(behaviour: Behaviour, n: int, seed: int) -> np.ndarray:
    """Trace requests for n requests: prose (a seeded draw) except request 0, the code request
    with the deepest mean exit under the policy. Request 0 is in the first batch under any load."""
    prose, code = (np.flatnonzero(behaviour.tasks == t) for t in ("prose", "code"))
    if not len(prose) or not len(code):
        raise ValueError("the straggler mix needs prose and code requests in the trace")
    binding = np.random.default_rng([seed, 2]).choice(prose, n)
    binding[0] = code[np.argmax(exit_depths(behaviour)[code])]
    return binding


def run_scenario(bench: Bench, scenario: Scenario, sizes: Sizes, seed: int = 0,
                 repeats: int = 1) -> dict:
    """One row of the table: the scenario simulated and measured on the same requests,
    `repeats` times (each run calibrated just before it; means over the runs, and their spread).
    A strategy the engine refuses is recorded with the reason in `unmeasured`, metrics NaN."""
    from eesim.engine.measure import measure

    n = sizes.requests(scenario.max_batch)
    sched = SchedulerConfig(max_batch=scenario.max_batch, kv_capacity_bytes=KV_CAPACITY)
    args = {"task_mix": MIXES[scenario.mix], "seed": seed,
            "binding": straggler_binding(bench.behaviour, n, seed) if scenario.mix == "straggler" else None}
    prompt = round(sum(sizes.prompt) / 2)
    runs, unmeasured, rate, workload = [], "", np.nan, None
    for _ in range(repeats):
        factor = bench.recalibrate(scenario.max_batch, prompt) if RECALIBRATE else np.nan
        if workload is None:  # every run serves the same requests at the same times
            rate, workload = _workload(bench, scenario, sizes, n, sched, args)
        predicted = simulate(bench.cost, bench.behaviour, workload, scenario.strategy, sched, **args).summary
        try:
            _, measured = measure(bench.ckpt, bench.behaviour, workload, scenario.strategy, sched, **args)
        except ValueError as exc:  # the engine refuses a strategy it does not execute (yet)
            measured, unmeasured = {}, str(exc)
        runs.append((predicted, measured, factor))
        if unmeasured:
            break
    s = scenario.strategy
    row = {"scenario": scenario.label, "strategy": s.name, "kv": s.kv,
           "draft_layer": s.draft_layer if s.name == "selfspec" else None,
           "drafts": s.drafts if s.name == "selfspec" else None,
           "max_batch": scenario.max_batch, "load": scenario.load, "mix": scenario.mix,
           "requests": n, "rate": rate}
    for metric in METRICS:
        predicted_runs, measured_runs = ([_value(r[side], metric) for r in runs] for side in (0, 1))
        row[f"{metric}_predicted"] = float(np.mean(predicted_runs))
        row[f"{metric}_measured"] = float(np.mean(measured_runs))
        row[f"{metric}_repeat_noise"] = _spread(measured_runs)
    row["layers_per_token_predicted"] = predicted["layers_per_token"]
    row["layers_per_token_measured"] = measured.get("layers_per_token", np.nan)
    row["in_situ_factor"] = float(np.mean([r[2] for r in runs]))
    row["runs"] = len(runs) if not unmeasured else 0
    row["extrapolated"] = bool(predicted["extrapolated"])
    row["unmeasured"] = unmeasured
    return row


def _workload(bench: Bench, scenario: Scenario, sizes: Sizes, n: int, sched: SchedulerConfig,
              args: dict) -> tuple[float, Workload]:
    """(Poisson rate or NaN, workload). The rate is POISSON_LOAD times the closed loop's
    simulated requests per second, so the load is the same share of every strategy's capacity."""
    lengths = {"prompt": sizes.prompt, "output": sizes.output}
    closed = closed_loop(scenario.max_batch, n, args["seed"], **lengths)
    if scenario.load == "closed":
        return np.nan, closed
    capacity = simulate(bench.cost, bench.behaviour, closed, scenario.strategy, sched,
                        **args).summary["throughput_requests_per_s"]
    rate = POISSON_LOAD * capacity
    return rate, poisson(rate, n, args["seed"], **lengths)


def _spread(values: list[float]) -> float:
    """(max - min) / (max + min): for two runs, the error of a perfect prediction of their mean
    (NaN for a single run or an unmeasured one)."""
    lo, hi = min(values), max(values)
    return float((hi - lo) / (hi + lo)) if len(values) > 1 and lo + hi > 0 else np.nan


def _value(summary: dict, metric: str) -> float:
    value = summary
    for key in METRICS[metric]:
        value = value.get(key) if isinstance(value, dict) else None
    return np.nan if value is None else float(value)


def add_errors(table: pd.DataFrame) -> pd.DataFrame:
    """Relative errors, and speedups over `full` at the same (max_batch, load, mix): measured
    and predicted throughput ratios, and the layer-savings bound: full's layers per token over
    the strategy's (the speedup if time followed layer evaluations alone). Under a Poisson
    load throughput follows the offered rate, so there the ratio mostly restates capacity."""
    table = table.copy()
    for m in METRICS:
        pred, meas = table[f"{m}_predicted"], table[f"{m}_measured"]
        table[f"{m}_abs_error"] = ((pred - meas).abs() / meas).where(meas > 0)
    key = ["max_batch", "load", "mix"]
    full = table[table["strategy"] == "full"].drop_duplicates(key).set_index(key)
    same = pd.MultiIndex.from_frame(table[key])
    for side in ("measured", "predicted"):
        baseline = full[f"throughput_{side}"].reindex(same).to_numpy()
        table[f"speedup_{side}"] = table[f"throughput_{side}"].to_numpy() / baseline
    full_lpt = full["layers_per_token_predicted"].reindex(same).to_numpy()
    table["speedup_bound"] = full_lpt / table["layers_per_token_predicted"].to_numpy()
    return table


def error_summary(table: pd.DataFrame) -> dict:
    """Median and p90 over scenarios of each metric's error, and of its repeat noise (the
    floor a perfect model would reach); unmeasured scenarios left out."""
    def stat(q: float, column: str) -> dict:
        out = {}
        for m in METRICS:
            name = f"{m}_{column}"
            value = table[name].quantile(q) if len(table) and name in table else np.nan
            out[m] = None if pd.isna(value) else float(value)
        return out

    return {"median_abs_error": stat(0.5, "abs_error"), "p90_abs_error": stat(0.9, "abs_error"),
            "median_repeat_noise": stat(0.5, "repeat_noise"), "p90_repeat_noise": stat(0.9, "repeat_noise")}


def run_grid(bench: Bench, grid: Grid, seed: int = 0,
             on_scenario: Callable[[Scenario], None] | None = None) -> pd.DataFrame:
    """Every scenario of the grid in order, with errors and speedups."""
    rows = []
    for scenario in grid.scenarios:
        rows.append(run_scenario(bench, scenario, grid.sizes, seed, grid.repeats))
        if on_scenario:
            on_scenario(scenario)
    table = pd.DataFrame(rows)
    for col in ("draft_layer", "drafts"):
        table[col] = table[col].astype("Int64")
    return add_errors(table)


def grid_summary(table: pd.DataFrame, grid: Grid, bench: Bench, seconds: float, seed: int) -> dict:
    """The validation summary: errors, the grid, the profile and the environment."""
    import torch

    from eesim.profile.env import environment

    meta = bench.profile.meta
    lpt = table["layers_per_token_measured"].notna()
    mismatched = ~np.isclose(table["layers_per_token_predicted"], table["layers_per_token_measured"])
    return {
        **error_summary(table),
        "grid": grid.name, "scenarios": len(table), "measured": int(lpt.sum()),
        "unmeasured": [{"scenario": r.scenario, "reason": r.unmeasured}
                       for r in table.itertuples() if r.unmeasured],
        "layers_per_token_mismatches": int((mismatched & lpt).sum()),
        "extrapolated_scenarios": int(table["extrapolated"].sum()),
        "sizes": {"prompt": list(grid.sizes.prompt), "output": list(grid.sizes.output),
                  "per_row": grid.sizes.per_row, "min_requests": grid.sizes.min_requests},
        "repeats": grid.repeats, "seed": seed, "poisson_load": POISSON_LOAD, "calibration_budget": BUDGET,
        "seconds": round(seconds, 1),
        "profile": {"label": bench.cost.label, "kind": meta.kind, "device": meta.device,
                    "device_type": meta.device_type, "model": meta.model_name,
                    "model_sha256": meta.model_sha256, "dtype": meta.dtype, "quick": meta.quick,
                    "seconds": meta.seconds, "points": len(bench.profile.table), "notes": meta.notes},
        "environment": environment(torch.device("cpu"), torch.float32),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def validate(grid: Grid, seed: int = 0, on_start: Callable[[int], None] | None = None,
             on_point: Callable[[str], None] | None = None,
             on_scenario: Callable[[Scenario], None] | None = None) -> tuple[pd.DataFrame, dict, Bench]:
    """Profile, then run the grid both ways: (table, summary, bench)."""
    started = time.perf_counter()
    bench = prepare(grid.quick_profile, on_start, on_point)
    table = run_grid(bench, grid, seed, on_scenario)
    return table, grid_summary(table, grid, bench, time.perf_counter() - started, seed), bench


def default_folder(bench: Bench) -> Path:
    """eesim-out/validation/<device type>/ in the current directory: a run never overwrites the
    committed evidence under profiles/ unless told to (--out)."""
    return OUT / "validation" / bench.profile.meta.device_type


def exceeding(summary: dict, limit: float) -> dict[str, float]:
    """Metrics whose median error is above `limit`."""
    return {m: e for m, e in summary["median_abs_error"].items() if e is not None and e > limit}


def write_validation(table: pd.DataFrame, summary: dict, folder: Path) -> tuple[Path, Path]:
    """validation.parquet (summary JSON as its metadata) and validation.json, written atomically."""
    import json

    from eesim.io import write_json_atomic, write_parquet_atomic

    folder = Path(folder)
    paths = folder / "validation.parquet", folder / "validation.json"
    write_parquet_atomic(table, paths[0], json.dumps(summary))
    write_json_atomic(paths[1], summary)
    return paths


def speedup_table(table: pd.DataFrame, load: str = "closed") -> pd.DataFrame:
    """Realised speedup over `full` beside the layer-savings bound, per early-exit strategy and
    batch cap: medians over the task mixes of one load (closed loop: saturation)."""
    rows = table[(table["load"] == load) & (table["strategy"] != "full")].copy()
    rows["label"] = [s.split(" b")[0] for s in rows["scenario"]]
    return (rows.groupby(["label", "max_batch"])[["speedup_measured", "speedup_predicted",
                                                  "speedup_bound"]]
            .median().reset_index())
