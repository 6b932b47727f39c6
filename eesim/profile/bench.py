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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from eesim.engine.executor import Executor
from eesim.model import EarlyExitLM, ModelConfig, PagedKVCache
from eesim.model.presets import model_shape
from eesim.plan.ops import Compact, Embed, ExitCheck, FinalHead, HostSync, KVFill, Layers, Regroup
from eesim.profile.env import environment, nvml_used_bytes, resolve_device
from eesim.profile.format import Profile, ProfileMeta
from eesim.profile.insitu import apply_in_situ, engine_passes
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
