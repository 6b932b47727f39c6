"""In-situ factors: what an operation costs inside a real engine pass over what it costs timed in
a step's sequence alone (eesim/profile/bench.py), per row count, and the engine's fixed costs per
pass (`step`) and per executed operation (`plan_op`).

The engine serves short closed-loop runs at full depth and with exit checks; each operation's
time there, over its own timing, is the factor the profile scales its terms by. `recalibrate`
measures them again before each scenario of `eesim validate`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from eesim.plan.strategies import StrategyConfig
from eesim.profile.format import Profile, ProfileMeta

if TYPE_CHECKING:
    from eesim.profile.bench import Rig


STEP_PASSES = 24  # decode passes per engine run (step overhead, in-situ factors)
STEP_PROMPT = 64  # prompt tokens of their requests: the context decoding runs at (a layer's
                  # in-situ factor depends on it; validate uses each scenario's prompt length)


IN_SITU_TERMS = ("embed", "layer", "layer_call", "exit_head", "host_sync", "final_head")


@dataclass(frozen=True)
class InSitu:
    """What full-depth engine passes at one row count measured: the median seconds of each of
    IN_SITU_TERMS inside the engine's own passes (a layer and a segment call's fixed cost from
    the swept pass's call of every layer and the checked pass's one-layer calls), and the mean
    context of those passes."""

    seconds: dict[str, float]
    context: float


def engine_passes(rig: Rig, row_counts: Sequence[int], on_point: Callable[[str], None] | None = None,
                  prompt: int = STEP_PROMPT) -> tuple[pd.DataFrame, dict[int, InSitu]]:
    """Terms `step` and `plan_op`, and the engine's own operation times, from engine runs.

    For each row count, two closed loops of `rows` requests at full depth: one swept (strategy
    full: three operations a pass) and one checked (compact with exits that never pass: each
    layer its own call, then an exit check and its host sync, as a live engine runs it). Every
    pass is timed whole and inside its operations (`Iteration`); over the passes that prefilled
    nothing, the median overhead (the pass beyond its operations) of each run gives two points
    of overhead = step + plan_op x operations. The second result holds the operation times of
    those passes (`InSitu`), for `in_situ`.
    """
    from eesim.engine.measure import measure as serve
    from eesim.scenario.behaviour import Behaviour
    from eesim.scenario.workload import closed_loop
    from eesim.sched import SchedulerConfig

    layers = rig.model.cfg.n_layers
    never = Behaviour(n_layers=layers, offsets=np.array([0, STEP_PASSES + 1]),
                      tasks=np.array(["any"]), pass_bits=np.zeros(STEP_PASSES + 1, np.uint64),
                      agree_bits=np.full(STEP_PASSES + 1, (1 << layers) - 1, np.uint64),
                      mapped_from=None)
    records, measured = [], {}
    for rows in row_counts:
        runs = {}
        for name in ("full", "compact"):
            timeline, log = [], []
            serve(rig, never, closed_loop(rows, rows, 0, prompt=(prompt, prompt),
                                          output=(STEP_PASSES, STEP_PASSES)),
                  StrategyConfig(name=name), SchedulerConfig(max_batch=rows, kv_capacity_bytes=2**40),
                  timeline=timeline, op_log=log)
            passes = [it for it in timeline if it.seconds is not None and it.prefill_rows == 0
                      and it.decode_rows]
            runs[name] = (passes, log)
        swept, checked = runs["full"][0], runs["compact"][0]
        over_f, over_c = (np.array([it.overhead_s for it in p]) for p in (swept, checked))
        ops_f, ops_c = (float(np.median([it.ops for it in p])) for p in (swept, checked))
        per_op = max(0.0, (np.median(over_c) - np.median(over_f)) / (ops_c - ops_f))
        step = np.maximum(over_f - per_op * ops_f, 0.0)
        records.append(("step", rows, 1, 0, float(np.median(step)),
                        float(np.subtract(*np.percentile(step, [75, 25]))), len(step)))
        records.append(("plan_op", rows, 1, 0, float(per_op),
                        float(np.subtract(*np.percentile(over_c, [75, 25]))) / ops_c, len(over_c)))
        measured[rows] = _in_situ_seconds(runs["full"][1], runs["compact"][1], layers, prompt)
        if on_point:
            on_point("step")
    table = pd.DataFrame(records, columns=["term", "rows", "query", "context", "median_s", "iqr_s",
                                           "runs"])
    return table, measured


def _in_situ_seconds(swept: list, checked: list, layers: int, prompt: int) -> InSitu:
    """IN_SITU_TERMS from the operation logs of a swept and a checked run (Executor.log):
    with C_L the call of every layer and C_1 a one-layer call, layer = (C_L - C_1) / (L - 1)
    and the call's fixed cost C_1 - layer."""
    def median(log: list, kind: str, span: int | None = None) -> float:
        values = [s for k, _, s, sp in log if k == kind and (span is None or sp == span)]
        return float(np.median(values)) if values else float("nan")

    one, every = median(checked, "Layers", 1), median(swept, "Layers", layers)
    layer = (every - one) / (layers - 1) if layers > 1 else one
    return InSitu(seconds={"embed": median(swept + checked, "Embed"), "layer": layer,
                           "layer_call": one - layer, "exit_head": median(checked, "ExitCheck"),
                           "host_sync": median(checked, "HostSync"),
                           "final_head": median(swept, "FinalHead")},  # after layers, as in any plan
                  context=prompt + STEP_PASSES / 2)


def in_situ(profile: Profile, layers: int, measured: dict[int, InSitu]
            ) -> tuple[dict[int, float], dict[str, dict[int, float]]]:
    """How much slower the engine's operations ran inside its own passes than the profile
    (its own timings) prices them: per row count, a factor for each of IN_SITU_TERMS, each its
    own time in those passes over its profiled time (a layer at the passes' context), and the
    layer's factor for every other operation (KV fill, compaction: layer-like work between
    Python). In a real pass operations are separated by the engine's Python, which lets the
    worker threads sleep and the caches cool; back to back they are faster or slower by term.
    One factor per term, not one solved from a pass's total: a term timed high in the profile
    cannot make the others look cheap. Measured on fixed full-depth workloads, never on a
    validation scenario."""
    from eesim.costmodel import CostModel

    cost = CostModel(profile)
    factors: dict[int, float] = {}
    terms: dict[str, dict[int, float]] = {t: {} for t in IN_SITU_TERMS if t != "layer"}
    for rows, m in measured.items():
        for term in IN_SITU_TERMS:
            own = cost.cost(term, rows, 1, m.context if term == "layer" else 0)
            value = m.seconds[term]
            factor = _factor(max(value, 0.0), own) if np.isfinite(value) else 1.0
            if term == "layer":
                factors[rows] = factor
            else:
                terms[term][rows] = factor
    return factors, terms


MIN_FACTOR = 1e-3  # a factor stays invertible (own timings are recovered by dividing)


def _factor(in_situ_s: float, own_s: float) -> float:
    """In-situ time over own time, at least MIN_FACTOR (1 for a term timed at zero)."""
    return round(max(float(in_situ_s / own_s), MIN_FACTOR), 4) if own_s > 0 else 1.0


IN_SITU_QUERY = 8  # layer calls up to this many tokens per row are short enough to feel the gaps
MEASURED_IN_SITU = ("step", "plan_op")  # timed inside the engine's passes: never scaled


def scale_in_situ(table: pd.DataFrame, factors: dict[int, float],
                  terms: dict[str, dict[int, float]] | None = None, invert: bool = False) -> pd.DataFrame:
    """Every operation term at a measured row count times its in-situ factor (the term's own,
    else the row count's), except prompt-sized layer calls (more than IN_SITU_QUERY tokens per
    row: long, compute-bound calls that the gaps between operations do not slow) and the terms
    measured in the engine's passes. `invert` divides instead: the operations' own timings."""
    table = table.copy()
    ops = ~table["term"].isin(MEASURED_IN_SITU) & ~((table["term"] == "layer")
                                                    & (table["query"] > IN_SITU_QUERY))
    scale = table.loc[ops, "rows"].map(factors).fillna(1.0)
    for term, by_rows in (terms or {}).items():
        own = table.loc[ops, "term"] == term
        scale[own] = table.loc[ops][own]["rows"].map(by_rows).fillna(scale[own])
    scale = scale.to_numpy()
    if invert:
        scale = 1.0 / scale
    table.loc[ops, "median_s"] *= scale
    table.loc[ops, "iqr_s"] *= scale
    return table


def own_timings(profile: Profile) -> pd.DataFrame:
    """The profile's table with its in-situ factors taken off: the operations' own timings."""
    return scale_in_situ(profile.table, profile.meta.in_situ, profile.meta.in_situ_terms, invert=True)


def apply_in_situ(table: pd.DataFrame, meta: ProfileMeta, layers: int,
                  measured: dict[int, InSitu]) -> pd.DataFrame:
    """`table` (own timings) scaled by factors measured now at `measured`'s row counts; the
    factors of other row counts are kept. Sets meta's in_situ and in_situ_terms."""
    factors, terms = in_situ(Profile(table, meta), layers, measured)
    meta.in_situ = {**meta.in_situ, **factors}
    meta.in_situ_terms = {t: {**meta.in_situ_terms.get(t, {}), **v} for t, v in terms.items()}
    return scale_in_situ(table, meta.in_situ, meta.in_situ_terms)


def recalibrate(profile: Profile, model, row_counts: Sequence[int], prompt: int = STEP_PROMPT
                ) -> Profile:
    """The profile with `step`, `plan_op` and the in-situ factors measured again now, at
    `row_counts` and requests of `prompt` tokens (the context to be decoded at), on `model`
    (the engine's): a shared machine's speed drifts over minutes, so a measurement about to be
    made is predicted with the factors of the moment. The operations' own timings are kept."""
    if profile.meta.device_type != "cpu":
        return profile
    table = own_timings(profile)
    rig = _EngineRig(model)
    steps, measured = engine_passes(rig, row_counts, prompt=prompt)
    redone = table["term"].isin(MEASURED_IN_SITU) & table["rows"].isin(set(steps["rows"]))
    table = pd.concat([table[~redone], steps], ignore_index=True)
    meta = profile.meta.model_copy(deep=True)
    return Profile(apply_in_situ(table, meta, rig.layers, measured), meta, profile.where)


class _EngineRig:
    """What `engine_passes` needs of a rig: the model the engine runs and its layer count."""

    def __init__(self, model) -> None:
        self.model, self.layers = model, model.cfg.n_layers
