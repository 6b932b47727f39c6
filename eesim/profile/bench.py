"""On-device microbenchmarks of everything a decoding step of any strategy pays.

    eesim profile --model ref --quick --out profiles/cpu/ref-quick.parquet

Each point: a step's operations run in order through the engine's executor, again and again,
each named one timed alone (CUDA synchronised around it), warm-up passes excluded; we keep the
median and the interquartile range.
Shape-only models get random non-zero weights in the profile's dtype; large ones instantiate a
few layers only (a layer's cost does not depend on how many others exist) and say so.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from eesim.engine.executor import Executor
from eesim.model import EarlyExitLM, ModelConfig, PagedKVCache
from eesim.model.presets import model_shape
from eesim.plan.ops import Compact, Embed, ExitCheck, FinalHead, HostSync, KVFill, Layers, Regroup
from eesim.plan.strategies import StrategyConfig
from eesim.profile.env import environment, nvml_used_bytes, resolve_device
from eesim.profile.format import Profile, ProfileMeta
from eesim.profile.shapes import layer_params, memory_facts_from_shape


@dataclass(frozen=True)
class Grid:
    """The shapes measured; layer points beyond `cpu_work_cap` MACs per call are skipped on CPU."""

    rows: tuple[int, ...]
    query: tuple[int, ...]      # 1 = decode, k+1 = verify, larger = prefill / catch-up chunks
    context: tuple[int, ...]
    min_run_time: float         # seconds of timing per point and round (at least)
    rounds: int = 3             # passes over all points; a point keeps its median over rounds
    cpu_work_cap: float = 6e9

    def layer_points(self, cfg: ModelConfig, on_cpu: bool) -> list[tuple[int, int, int]]:
        per_token = layer_params(cfg)
        return [(r, q, c) for r in self.rows for q in self.query for c in self.context
                if c + q <= cfg.max_seq_len and not (on_cpu and r * q * per_token > self.cpu_work_cap)]


QUICK = Grid(rows=(1, 4, 16), query=(1, 4, 64), context=(0, 128, 512), min_run_time=0.02,
             rounds=1)
DEFAULT = Grid(rows=(1, 2, 4, 8, 16, 32, 64), query=(1, 2, 4, 8, 16, 32, 128),
               context=(0, 64, 128, 256, 512, 768), min_run_time=0.05)
CUDA = Grid(rows=(1, 2, 4, 8, 16, 32, 64, 128, 256), query=(1, 2, 4, 8, 32, 128, 512),
            context=(0, 128, 512, 1024, 2048, 4096), min_run_time=0.03)
KV_FILL_CONTEXT = 128


Timing = tuple[float, float, int]  # median seconds, interquartile range, runs


def time_sequence(steps: list[tuple[str | None, Callable[[], object]]], min_run_time: float,
                  device: torch.device, warmup: int = 1, min_reps: int = 3) -> dict[str, Timing]:
    """Run the steps in order, again and again, timing each named one alone: {name: (median
    seconds, interquartile range, runs)}, warm-up passes excluded.

    Operations are timed inside a sequence like a decoding step's, not each in a tight loop of
    its own: there the same weights stay in the processor's caches and a layer or a head looks
    up to twice as fast as it is in a real pass. Unnamed steps run untimed (they set the scene).
    On CUDA each timed step is synchronised before and after, so its time is its kernels'.
    """
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    times: dict[str, list[float]] = {name: [] for name, _ in steps if name}
    reps, started = 0, time.perf_counter()
    while reps < warmup + min_reps or time.perf_counter() - started < min_run_time:
        for name, fn in steps:
            if name is None:
                fn()
                continue
            sync()
            tick = time.perf_counter()
            fn()
            sync()
            if reps >= warmup:
                times[name].append(time.perf_counter() - tick)
        reps += 1
        if reps == warmup:
            started = time.perf_counter()
    out = {}
    for name, values in times.items():
        q1, med, q3 = np.percentile(values, [25, 50, 75])
        out[name] = (float(med), float(q3 - q1), len(values))
    return out


class Rig:
    """The model pieces a profile times, built once on the device in the profile's dtype."""

    def __init__(self, name: str, device: torch.device, dtype: torch.dtype, max_layers: int) -> None:
        self.name, self.device, self.dtype = name, device, dtype
        self.cfg = model_shape(name)
        self.notes: list[str] = []
        self.sha256 = ""
        if name == "ref":
            from eesim.model import load_checkpoint

            ckpt = load_checkpoint(device=str(device), dtype=dtype)
            self.model, self.sha256 = ckpt.model, ckpt.sha256
        else:
            layers = min(max_layers, self.cfg.n_layers)
            torch.manual_seed(0)
            with torch.device(device):
                self.model = EarlyExitLM(self.cfg.model_copy(update={"n_layers": layers}))
            self.model.to(dtype).eval()
            if layers < self.cfg.n_layers:
                self.notes.append(f"instantiated {layers} of {self.cfg.n_layers} layers "
                                  f"(random weights); a layer's cost is per layer")
        self.layers = self.model.cfg.n_layers

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=self.device, dtype=self.dtype)


# Timed per row count; the sweep splits into layer_call and a layer, a fill of every layer into
# kv_fill_call and kv_fill.
ROW_TERMS = ("embed", "sweep", "exit_head", "final_head", "kv_fill", "kv_fill_call", "layer_call",
             "host_sync", "compact", "regroup", "sample", "mask")


def executor(rig: Rig, rows: int, query: int = 1, context: int = 0) -> Executor:
    """The engine's interpreter on `rows` rows of a paged cache, each holding `context` tokens
    and room for `query` more: profiled operations run exactly as the engine runs them."""
    block = 16
    length = context + query
    per_slot = -(-length // block)
    cache = PagedKVCache(rig.model.cfg, rows * per_slot, block, rows, length, dtype=rig.dtype,
                         device=rig.device)
    for slot in range(rows):
        cache.reserve(slot, length)
    v = rig.cfg.vocab_size
    ex = Executor(rig.model, cache, torch.arange(rows, device=rig.device),
                  torch.randint(0, v, (rows,), device=rig.device),
                  torch.full((rows,), context, device=rig.device), drafts=query - 1)
    ex.h.normal_()
    return ex


def row_sequence(rig: Rig, rows: int) -> list[tuple[str | None, Callable[[], object]]]:
    """A decoding step's operations on `rows` rows, in a step's order, each through the
    engine's executor: embedding, the sweep of every layer, the final head, a KV fill of every
    layer and one of a single layer (their split: the fill's call and per-layer cost), every
    layer again as its own segment followed by an exit check and its host sync (compact's
    pattern; the one-layer calls give the call cost), compaction (half the rows of twice as
    many), regrouping; plus sampling and masking, which the engine does not run but a plan may
    price."""
    v = rig.cfg.vocab_size
    ex = executor(rig, rows, 1, KV_FILL_CONTEXT)
    ex2 = executor(rig, 2 * rows)
    every = np.ones((1, rows), bool)
    half = (np.arange(2 * rows) % 2 == 0)[None, :]
    h = rig.randn(rows, 1, rig.cfg.dim)
    logits = rig.randn(rows, v).float()
    keep = torch.rand(rows, device=rig.device) > 0.5
    checked = []  # layer by layer, each followed by its exit check and decision, as compact runs
    for layer in range(rig.layers):
        checked += [("layer_call", lambda i=layer: ex.run(Layers(i, i + 1, every))),  # less a layer
                    ("exit_head", lambda: ex.run(ExitCheck(1, every))),
                    ("host_sync", lambda: ex.run(HostSync(np.ones(1, bool))))]
    return [
        ("embed", lambda: ex.run(Embed(every))),
        ("sweep", lambda: ex.run(Layers(0, rig.layers, every))),
        ("final_head", lambda: ex.run(FinalHead(every))),
        ("kv_fill", lambda: ex.run(KVFill(0, rig.layers, every))),  # every layer: per layer below
        ("kv_fill_call", lambda: ex.run(KVFill(0, 1, every))),        # one layer: less a layer
        *checked,
        ("compact", lambda: ex2.run(Compact(half))),
        ("regroup", lambda: ex.run(Regroup(every))),
        ("sample", lambda: torch.multinomial(torch.softmax(logits, -1), 1)),
        ("mask", lambda: torch.where(keep[:, None, None], h, h)),
    ]


def layer_sequence(rig: Rig, rows: int, query: int, context: int) -> list[tuple[str | None, Callable]]:
    """Every instantiated layer in turn on `rows` rows of `query` tokens each, after `context`
    cached tokens, through the engine's executor and paged cache, then the head (untimed) as a
    step would: each layer's weights come from memory as in a real pass."""
    ex = executor(rig, rows, query, context)
    every = np.ones((1, rows), bool)
    sweep = Layers(0, rig.layers, every, query=query)
    return [("layer", lambda: ex.run(sweep)), (None, lambda: ex.run(FinalHead(every)))]


def measure(rig: Rig, grid: Grid, on_point: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Time every term over the grid, in `grid.rounds` passes over all points.

    Each point's value is the median over rounds of its in-sequence median, so a slow spell of
    the machine (another tenant, a clock change) touches one round, not one point's every
    sample. Inputs are built before each timing and dropped after it.
    """
    points = [("layer", r, q, c) for r, q, c in grid.layer_points(rig.cfg, rig.device.type == "cpu")]
    samples: dict[tuple, list[tuple[float, float, int]]] = {}
    with torch.inference_mode():
        for _ in range(grid.rounds):
            for _, rows, query, context in points:
                timed = time_sequence(layer_sequence(rig, rows, query, context), grid.min_run_time,
                                      rig.device)
                samples.setdefault(("layer", rows, query, context), []).append(timed["layer"])
                if on_point:
                    on_point("layer")
            for rows in grid.rows:
                timed = time_sequence(row_sequence(rig, rows), grid.min_run_time * len(ROW_TERMS),
                                      rig.device)
                for term, value in timed.items():
                    context = KV_FILL_CONTEXT if term == "kv_fill" else 0
                    samples.setdefault((term, rows, 1, context), []).append(value)
                if on_point:
                    on_point("terms")
    records = []
    for point, runs in samples.items():
        medians = np.array([m for m, _, _ in runs])
        records.append((*point, float(np.median(medians)), float(np.median([i for _, i, _ in runs])),
                        sum(n for _, _, n in runs)))
    table = pd.DataFrame(records, columns=["term", "rows", "query", "context", "median_s",
                                           "iqr_s", "runs"])
    return per_layer(table, rig.layers)


def point_count(rig_cfg: ModelConfig, grid: Grid, on_cpu: bool) -> int:
    """Timings a profile will take (points x rounds, plus the step term), for the progress bar."""
    return (len(grid.layer_points(rig_cfg, on_cpu)) + len(grid.rows)) * grid.rounds + len(grid.rows)


def per_layer(table: pd.DataFrame, layers: int) -> pd.DataFrame:
    """Split sweep timings into a segment call and its layers, and KV fills into a fill's call
    and its layers.

    A segment of s layers on r rows costs call(r) + s x layer(r, q, c). Timed in the same
    sequence of a step's operations: one layer, T1 = call + layer, and the sweep of all L
    layers, T_L = call + L x layer; so layer = (T_L - T1) / (L - 1) and call = T1 - layer
    (never below zero). Every grid point's sweep then gives layer = (T_L - call(r)) / L. A KV
    fill of s layers splits the same way, from a fill of every layer and one of a single layer.
    """
    table = table.copy()
    for whole, one in (("sweep", "layer_call"), ("kv_fill", "kv_fill_call")):
        _split(table, whole, one, layers)
    calls = table[table["term"] == "layer_call"].set_index("rows")["median_s"]
    lay = table["term"] == "layer"
    overhead = table.loc[lay, "rows"].map(calls).fillna(0.0).to_numpy()
    table.loc[lay, "median_s"] = np.maximum(table.loc[lay, "median_s"].to_numpy() - overhead, 0) / layers
    table.loc[lay, "iqr_s"] = table.loc[lay, "iqr_s"] / layers
    return table[table["term"] != "sweep"].reset_index(drop=True)


def _split(table: pd.DataFrame, whole: str, one: str, layers: int) -> None:
    """In place: `one` (a call of one layer) becomes the call's fixed cost, T1 - layer; `whole`
    (a call of every layer) becomes the per-layer cost (T_L - call) / L, if not a sweep."""
    first = table["term"] == one
    every = table[table["term"] == whole].set_index("rows")["median_s"]
    single = table[first].set_index("rows")["median_s"]
    if single.empty:
        return
    share = (every.reindex(single.index) - single) / (layers - 1) if layers > 1 else single
    table.loc[first, "median_s"] = np.maximum(0.0, single - share).to_numpy()
    if whole != "sweep":  # the sweep's grid points are split by the caller
        rows = table["term"] == whole
        call = table.loc[rows, "rows"].map(table[first].set_index("rows")["median_s"]).fillna(0.0)
        table.loc[rows, "median_s"] = np.maximum(table.loc[rows, "median_s"] - call.to_numpy(), 0) / layers
        table.loc[rows, "iqr_s"] /= layers


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


def memory_facts(rig: Rig, baseline_rss: int) -> dict:
    """Byte counts from the shape, the device's capacity and this process's measured peak."""
    facts = memory_facts_from_shape(rig.cfg, torch.finfo(rig.dtype).bits // 8)
    if rig.device.type == "cuda":
        facts["device_memory_bytes"] = int(torch.cuda.get_device_properties(rig.device).total_memory)
        facts["peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated(rig.device))
        facts["nvml_used_bytes"] = nvml_used_bytes(rig.device.index or 0)
    else:  # ru_maxrss is in KiB on Linux
        facts["device_memory_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        facts["peak_rss_over_baseline_bytes"] = max(0, _rss_peak() - baseline_rss)
    return facts


def _rss_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_profile(name: str, device: str = "auto", quick: bool = False, dtype: str | None = None,
                max_layers: int = 2, on_start: Callable[[int], None] | None = None,
                on_point: Callable[[str], None] | None = None) -> Profile:
    """Profile model `name` on `device`; the result carries its environment."""
    started = time.time()
    dev = resolve_device(device)
    default_dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    torch_dtype = getattr(torch, dtype) if dtype else default_dtype
    baseline = _rss_peak()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    rig = Rig(name, dev, torch_dtype, max_layers)
    grid = QUICK if quick else CUDA if dev.type == "cuda" else DEFAULT
    if on_start:
        on_start(point_count(rig.cfg, grid, dev.type == "cpu"))
    table = measure(rig, grid, on_point)
    steps, ops = engine_passes(rig, grid.rows, on_point)
    table = pd.concat([table, steps], ignore_index=True)
    skipped = len(DEFAULT.layer_points(rig.cfg, False)) - len(grid.layer_points(rig.cfg, dev.type == "cpu"))
    notes = list(rig.notes)
    if dev.type == "cpu" and skipped and not quick:
        notes.append(f"{skipped} layer points above {grid.cpu_work_cap:.0e} MACs per call skipped on CPU "
                     "(the cost model extrapolates there and says so)")
    meta = ProfileMeta(kind="measured", device=environment(dev, torch_dtype)["device_name"],
                       device_type=dev.type, model_name=name, model=rig.cfg,
                       model_sha256=rig.sha256, dtype=str(torch_dtype).removeprefix("torch."),
                       layers_measured=rig.layers, memory=memory_facts(rig, baseline),
                       env=environment(dev, torch_dtype), notes=notes, quick=quick)
    if dev.type == "cpu":  # on CUDA an operation's host-side time is not its kernels' time
        table = apply_in_situ(table, meta, rig.layers, ops)
        meta.notes.append("operation terms scaled by the engine's in-situ factors (meta in_situ "
                          "per row count: " + ", ".join(f"{r}: {f:.2f}" for r, f in meta.in_situ.items())
                          + "; in_situ_terms for the segment call and the exit head)")
    meta.seconds = round(time.time() - started, 1)
    return Profile(table, meta, f"profile of {name}")
