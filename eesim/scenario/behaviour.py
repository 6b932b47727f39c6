"""Exit behaviour for simulated requests: per token, which exit checks pass and which exits
agree with full depth, taken from a trace under a policy and mapped to the served model's depth.

Requests are bound to trace requests of their task class (seeded, by the task mix). A request
longer than its trace request wraps around: token t reads trace token t mod length. A trace of
another depth than the served model is refused unless `map_depth`: trace exit layer l of Lt
becomes layer round(l * L / Lt) of L, and the outputs say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from eesim.policy.policy import ExitPolicy, never_exit
from eesim.policy.replay import policy_passes
from eesim.policy.selfspec import runs_from
from eesim.trace.schema import ExitTrace, TraceError


@dataclass
class Behaviour:
    """Per-token bits over the served model's layers (bit l-1 is layer l)."""

    n_layers: int
    offsets: np.ndarray       # (M + 1,) token offsets of the trace requests
    tasks: np.ndarray         # (M,) task class of each trace request
    pass_bits: np.ndarray     # (N,) uint64: the exit check at layer l passes
    agree_bits: np.ndarray    # (N,) uint64: the exit at layer l equals the full-depth token
    mapped_from: int | None   # the trace's depth when exits were mapped by relative depth
    _runs: dict = field(default_factory=dict, repr=False)
    _next_depths: dict = field(default_factory=dict, repr=False)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def bind(self, tasks_wanted: np.ndarray, seed: int) -> np.ndarray:
        """A trace request for each simulated request, drawn from those of its task class."""
        rng = np.random.default_rng(seed)
        chosen = np.empty(len(tasks_wanted), dtype=np.int64)
        for task in np.unique(tasks_wanted):
            pool = np.flatnonzero(self.tasks == task)
            if not len(pool):
                raise TraceError(f"the trace has no requests of task '{task}' "
                                 f"(it has {sorted(set(self.tasks.tolist()))})")
            where = tasks_wanted == task
            chosen[where] = rng.choice(pool, where.sum())
        return chosen

    def draft_runs(self, draft_layer: int, k: int) -> np.ndarray:
        """(N,) how many drafts in a row, at most k, agree with full depth from each token on
        (following the request's wrap-around; tabled once per draft layer and k)."""
        key = (draft_layer, k)
        if key not in self._runs:
            self._runs[key] = runs_from(bit(self.agree_bits, draft_layer), self.offsets, k)
        return self._runs[key]

    def next_depths(self, min_layer: int, every: int, enabled: bool = True) -> np.ndarray:
        """Regroup's predictor as a flat table over tokens and depths (tabled once): entry
        t * n + d - 1 is the depth expected of the token after token t when t starts checking at
        depth d, max(min_layer, e - 1) at most n, e its first passing check at a layer >= d
        (checks: layers < n divisible by `every`; none when not `enabled`), else the last
        layer. The extra row t = N keeps d (an absent step)."""
        key = (min_layer, every, enabled)
        if key not in self._next_depths:
            n = self.n_layers
            bits = self.pass_bits if enabled else np.zeros_like(self.pass_bits)
            table = np.empty((len(bits) + 1, n), np.int16)
            table[-1] = np.arange(1, n + 1)
            exit_at = np.full(len(bits), n, np.int16)  # first passing check >= d, from the top
            table[:-1, n - 1] = n
            for d in range(n - 1, 0, -1):
                if d % every == 0:
                    exit_at = np.where(bit(bits, d), np.int16(d), exit_at)
                table[:-1, d - 1] = exit_at
            table[:-1] = np.clip(table[:-1] - 1, min_layer, n)
            self._next_depths[key] = table.reshape(-1)
        return self._next_depths[key]

    def token_index(self, trace_request: np.ndarray, position: np.ndarray) -> np.ndarray:
        """Global token index of position(s) of trace request(s), wrapping around."""
        start = self.offsets[trace_request]
        return start + position % (self.offsets[trace_request + 1] - start)


def layer_map(trace_layers: int, n_layers: int) -> np.ndarray:
    """Served-model layer of each trace exit layer 1..Lt (relative depth)."""
    lt = np.arange(1, trace_layers + 1)
    return np.clip(np.rint(lt * n_layers / trace_layers).astype(int), 1, n_layers)


def from_trace(trace: ExitTrace, policy: ExitPolicy | None, n_layers: int,
               map_depth: bool = False) -> Behaviour:
    """Behaviour of every token of a `full` trace under `policy` (None: never exit early), or
    of an `exits` trace's fixed decisions (a realised trace of a measured run)."""
    if trace.kind not in ("full", "exits"):
        raise TraceError(f"{trace.where}: the simulator needs a 'full' or 'exits' trace, this one "
                         f"is '{trace.kind}'")
    trace_layers = trace.meta.n_layers
    if trace_layers != n_layers and not map_depth:
        raise TraceError(f"{trace.where}: recorded on a model of {trace_layers} layers, the "
                         f"profile's model has {n_layers}; pass --map-depth to map exits by "
                         f"relative depth")
    if trace.kind == "exits":
        return _from_exits(trace, policy, n_layers)
    policy = policy or never_exit(trace.meta.model_sha256, trace_layers)
    passes = policy_passes(policy, trace)
    top1 = trace.matrix("top1")
    agree = top1 == top1[:, -1:]
    target = layer_map(trace_layers, n_layers)[np.asarray(trace.meta.exit_layers) - 1]
    weights = np.left_shift(np.uint64(1), (target - 1).astype(np.uint64))
    tokens = trace.tokens()
    ids = tokens["request_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    return Behaviour(
        n_layers=n_layers,
        offsets=np.r_[starts, len(ids)].astype(np.int64),
        tasks=_strings(tokens["task"].to_numpy()[starts]),
        pass_bits=(passes * weights).sum(axis=1, dtype=np.uint64),
        agree_bits=(agree * weights).sum(axis=1, dtype=np.uint64),
        mapped_from=trace_layers if trace_layers != n_layers else None,
    )


def _from_exits(trace: ExitTrace, policy: ExitPolicy | None, n_layers: int) -> Behaviour:
    """Fixed exits: a token's check passes at its exit layer and every later one (the first
    pass is the exit); it agrees with full depth everywhere unless marked `differs`."""
    if policy is not None:
        raise TraceError(f"{trace.where}: an 'exits' trace fixes its exit decisions; no policy "
                         f"can be replayed on it (drop --policy)")
    tokens = trace.tokens()
    depth = trace.meta.n_layers
    layer = layer_map(depth, n_layers)[tokens["exit_layer"].to_numpy().astype(np.int64) - 1]
    below = np.left_shift(np.uint64(1), (layer - 1).astype(np.uint64)) - np.uint64(1)
    checks = np.uint64((1 << (n_layers - 1)) - 1)  # a check after every layer but the last
    every = np.uint64((1 << n_layers) - 1)
    differs = (tokens["differs"].to_numpy() > 0) if "differs" in tokens else np.zeros(len(layer), bool)
    own = np.left_shift(np.uint64(1), (layer - 1).astype(np.uint64))
    ids = tokens["request_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    tasks = _strings(tokens["task"].to_numpy()[starts]) if "task" in tokens \
        else np.full(len(starts), "unknown")
    return Behaviour(
        n_layers=n_layers,
        offsets=np.r_[starts, len(ids)].astype(np.int64),
        tasks=tasks,
        pass_bits=~below & checks,
        agree_bits=np.where(differs, every & ~own, every),
        mapped_from=depth if depth != n_layers else None,
    )


def _strings(values: np.ndarray) -> np.ndarray:
    """Values as an object array of str, as pandas' astype(str) writes them (missing: 'nan')."""
    return np.array([str(v) for v in values], dtype=object)


def bit(bits: np.ndarray, layer) -> np.ndarray:
    """Whether bit `layer` (1-based; scalar or array) is set."""
    shift = (np.asarray(layer, dtype=np.int64) - 1).astype(np.uint64)
    return (np.right_shift(bits, shift) & np.uint64(1)).astype(bool)


def draft_trace_layer(behaviour: Behaviour, draft_layer: int) -> int:
    """The trace layer whose exits stand for drafting with layers 1..draft_layer (by relative
    depth when the trace was recorded on a model of another depth)."""
    trace_layers = behaviour.mapped_from or behaviour.n_layers
    return int(layer_map(trace_layers, behaviour.n_layers)[
        max(0, min(trace_layers, round(draft_layer * trace_layers / behaviour.n_layers)) - 1)])


def bind_requests(behaviour: Behaviour, n: int, task_mix: dict[str, float] | None, seed: int,
                  binding: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each request's task and trace request: drawn by the mix (even over the trace's tasks by
    default), or given outright as `binding`."""
    if binding is not None:
        binding = np.asarray(binding, np.int64)
        if len(binding) != n or binding.min() < 0 or binding.max() >= len(behaviour.tasks):
            raise ValueError(f"binding must name one of the trace's {len(behaviour.tasks)} requests "
                             f"for each of {n} requests")
        return behaviour.tasks[binding], binding
    tasks = assign_tasks(n, task_mix or {t: 1.0 for t in sorted(set(behaviour.tasks))}, seed)
    return tasks, behaviour.bind(tasks, seed)


def assign_tasks(n: int, mix: dict[str, float], seed: int) -> np.ndarray:
    """A task class per request, drawn by the mix's shares (seeded)."""
    if not mix or any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"task mix must have non-negative shares summing above 0, got {mix}")
    names = sorted(mix)
    p = np.array([mix[t] for t in names], float)
    rng = np.random.default_rng([seed, 1])
    return np.array(names)[rng.choice(len(names), n, p=p / p.sum())]
