"""Measured runs: the simulator's scheduler and strategies, executed for real with torch.

`measure()` serves a workload on a real model in wall-clock time: arrivals are waited for, each
iteration preempts and admits what the scheduler says, prefills prompt chunks, and runs one
decode step of the strategy through the `Executor`. Exit decisions are replayed from the trace
exactly as the simulator takes them (`TraceController`), or taken live from the model's own
confidences; either way the run returns the decisions it took (a realised trace), so a
prediction can be made from the same decisions. The per-request table has the simulator's
columns; eesim.metrics summarises it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from eesim.engine.executor import Executor
from eesim.metrics import summarize
from eesim.model import Checkpoint, PagedKVCache
from eesim.plan.strategies import StrategyConfig, plan
from eesim.policy.policy import HIGHER_PASSES, ExitPolicy
from eesim.policy.selfspec import timeline
from eesim.profile.env import peak_rss, reset_peak_rss
from eesim.scenario.behaviour import Behaviour, bind_requests, draft_trace_layer
from eesim.scenario.controller import TraceController
from eesim.scenario.workload import Workload
from eesim.sched import Row, Scheduler, SchedulerConfig
from eesim.serve import decoded, prefilled, schedule


class EngineController(TraceController):
    """Replayed exit decisions; the tokens a row emits are the model's own head answers."""

    def __init__(self, executor: Executor, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.executor = executor
        self.emitted: list[list[int]] = []

    def next_exit(self, layer: int, rows: np.ndarray, n_layers: int, every: int = 1) -> int:
        """The next check layer: an engine cannot know where the next exit is, so it stops at
        every check to read it, even when the decisions are replayed."""
        if not self.exits_enabled:
            return n_layers
        return layer if every == 1 else -(-layer // every) * every

    def emitted_tokens(self, row: int) -> list[int]:
        """The tokens row `row` emits this step: its head answer where it exited, or the
        verified tokens and the full model's own next one (self-speculation)."""
        n = int(self.accepted[0, row]) + 1
        return self.executor.head_top1[row, :n].tolist()


class LiveController(EngineController):
    """Exit decisions from the model's own confidences at each check, under a policy; drafts
    accepted where they equal the full model's greedy tokens.

    """

    def __init__(self, executor: Executor, policy: ExitPolicy | None, tasks: np.ndarray,
                 remaining: np.ndarray, *args, **kwargs) -> None:
        super().__init__(executor, *args, **kwargs)
        self.policy, self.remaining = policy, remaining
        if policy is not None:
            self.sign = 1.0 if HIGHER_PASSES[policy.signal] else -1.0
            self.threshold = self.sign * np.array([policy.threshold(t) for t in tasks])

    def passes(self, layer: int, rows: np.ndarray) -> np.ndarray:
        if not self.exits_enabled or self.policy is None or layer < self.policy.min_layer:
            return np.zeros_like(rows)
        column = {"max_prob": 0, "entropy": 1, "margin": 2}[self.policy.signal]
        value = self.sign * self.executor.signals[column].numpy()
        return rows & (value >= self.threshold)[None, :]

    def drafts(self, rows: np.ndarray, k: int) -> np.ndarray:
        self.drafted = np.where(rows, np.clip(self.remaining - 1, 0, k), 0)
        return self.drafted

    def verify(self, rows: np.ndarray, drafted: np.ndarray) -> np.ndarray:
        ex = self.executor
        k = ex.seq.shape[1] - 1
        agree = (ex.seq[:, 1:] == ex.head_top1[:, :k]).numpy()
        agree &= np.arange(k)[None, :] < drafted[0][:, None]
        self.accepted = np.where(rows, np.cumprod(agree, axis=1).sum(axis=1)[None, :], 0)
        return self.accepted


@dataclass
class Iteration:
    """One pass of the engine's loop: when it started, the rows it decoded and prefilled, the
    plan operations it executed, the seconds spent executing them and prefilling, and its whole
    length (start to the next pass's start: scheduling, planning and bookkeeping included)."""

    start: float
    decode_rows: int
    prefill_rows: int
    ops: int = 0
    ops_s: float = 0.0
    prefill_s: float = 0.0
    seconds: float | None = None

    @property
    def overhead_s(self) -> float:
        """What the pass cost beyond its operations and prefill."""
        return (self.seconds or 0.0) - self.ops_s - self.prefill_s


@dataclass
class _Request:
    """Engine-side state of a request: its cache slot and every token it holds."""

    slot: int
    tokens: list[int]                       # prompt, then emitted tokens
    exits: list[tuple[int, int, int]] = field(default_factory=list)  # (position, layer, differs)
    steps: list[int] = field(default_factory=list)  # self-speculation: tokens per step


def _refuse_unsupported(strategy: StrategyConfig, live: ExitPolicy | None) -> None:
    """Refuse what the engine does not execute, naming the flag."""
    if strategy.kv == "defer" and strategy.name != "selfspec":
        raise ValueError("--kv defer: the engine does not recompute deferred KV (EE-LLM catch-up) "
                         "yet; measure with --kv propagate, or simulate it with eesim simulate")
    if live is not None and live.signal not in ("max_prob", "entropy", "margin"):
        raise ValueError(f"policy field 'signal' is {live.signal!r}: live exits in the engine read "
                         f"max_prob, entropy or margin")


def measure(ckpt: Checkpoint, behaviour: Behaviour, workload: Workload, strategy: StrategyConfig,
            sched_cfg: SchedulerConfig, *, task_mix: dict[str, float] | None = None,
            seed: int = 0, live: ExitPolicy | None = None, live_exits: bool = False,
            outputs: dict | None = None, binding: np.ndarray | None = None,
            realised: dict | None = None, timeline: list | None = None,
            op_log: list | None = None) -> tuple[pd.DataFrame, dict]:
    """Serve `workload` with `strategy` on the checkpoint's model; the measured request table
    and its summary. With `live` (or `live_exits` and no policy: never exit early), decisions
    follow the model's own confidences and its own drafts instead of the trace. `outputs`, if
    given, receives each request's prompt and tokens; `realised` receives the decisions taken:
    `exits` (request, position, exit layer, differs) or `steps` (request, step, tokens);
    `timeline` receives one `Iteration` per pass of the loop, `op_log` one entry per executed
    operation (Executor.log)."""
    _refuse_unsupported(strategy, live)
    model = ckpt.model
    n_layers = model.cfg.n_layers
    if behaviour.n_layers != n_layers:
        raise ValueError(f"behaviour has {behaviour.n_layers} layers, the model {n_layers}")
    live_exits = live_exits or live is not None
    n = len(workload)
    tasks, binding = bind_requests(behaviour, n, task_mix, seed, binding)
    selfspec = strategy.name == "selfspec"
    ahead = strategy.tokens_per_step
    length = int((workload.prompt_len + workload.output_len).max()) + ahead
    if length > model.cfg.max_seq_len:
        raise ValueError(f"prompt + output tokens reach {length}, beyond the model's max_seq_len "
                         f"{model.cfg.max_seq_len}")
    kv_bytes = 2 * model.cfg.n_kv_heads * model.cfg.head_dim * model.tok_emb.weight.element_size()
    sched = Scheduler(sched_cfg, sched_cfg.block_tokens * n_layers * kv_bytes)
    per_slot = -(-length // sched_cfg.block_tokens)
    cache = PagedKVCache(model.cfg, min(sched.capacity_blocks, sched_cfg.max_batch * per_slot),
                         sched_cfg.block_tokens, sched_cfg.max_batch, length,
                         dtype=model.tok_emb.weight.dtype, device=model.rope_cos.device)
    draft_layer = draft_trace_layer(behaviour, strategy.draft_layer)
    rng = np.random.default_rng(seed)
    vocab = model.cfg.vocab_size
    rec = {k: np.zeros(n) for k in ("arrival_s", "first_token_s", "completion_s", "layer_evals",
                                    "exit_checks", "differs", "drafted", "accepted")}
    out_tokens = np.zeros(n, np.int64)
    state: dict[int, _Request] = {}
    held: dict[int, _Request] = {}  # preempted requests: their tokens, to recompute
    free = list(range(sched_cfg.max_batch - 1, -1, -1))
    nxt, done = 0, 0
    closed = workload.concurrency is not None
    cuda = model.rope_cos.device.type == "cuda"
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_start = reset_peak_rss()
    start = time.perf_counter()

    def clock() -> float:
        if cuda:
            torch.cuda.synchronize()  # times are real: the step's kernels have finished
        return time.perf_counter() - start

    def submit(i: int, now: float) -> None:
        rec["arrival_s"][i] = now
        sched.waiting.append(Row(i, int(workload.prompt_len[i]), int(workload.output_len[i])))

    if closed:
        for _ in range(min(workload.concurrency, n)):
            submit(nxt, 0.0)
            nxt += 1
    while done < n:
        now = clock()
        if timeline and timeline[-1].seconds is None:
            timeline[-1].seconds = now - timeline[-1].start
        while not closed and nxt < n and workload.arrival_s[nxt] <= now:
            submit(nxt, float(workload.arrival_s[nxt]))
            nxt += 1
        if not sched.running and not sched.waiting:
            time.sleep(max(0.0, float(workload.arrival_s[nxt]) - now))
            continue
        step = schedule(sched, strategy)
        for row in step.preempted:  # recomputed when admitted again
            req = state.pop(row.request)
            cache.release(req.slot)
            free.append(req.slot)
            held[row.request] = req
        for row in step.admitted:
            req = held.pop(row.request, None)
            if req is None:
                prompt = rng.integers(0, vocab, row.prompt).tolist()
                req = _Request(0, list(prompt))
                if outputs is not None:
                    outputs[row.request] = {"prompt": prompt, "tokens": []}
            req.slot = free.pop()
            state[row.request] = req
        decoding, chunks = step.decoding, step.chunks
        for row in decoding:
            cache.reserve(state[row.request].slot, row.context + ahead - 1)
        it = Iteration(now, len(decoding), len(chunks))
        with torch.inference_mode():
            tick = time.perf_counter()
            first = _prefill(model, cache, chunks, state) if chunks else {}
            it.prefill_s = time.perf_counter() - tick
            if decoding:
                ctl, ex = _decode_step(model, cache, behaviour, binding, strategy, decoding, state,
                                       live, live_exits, tasks, draft_layer, op_log)
                it.ops, it.ops_s = ex.ops, ex.seconds
        end = clock()
        if timeline is not None:
            timeline.append(it)
        for row in prefilled(step, strategy):
            req = state[row.request]
            req.tokens.append(first[row.request])
            req.exits.append((row.generated - 1, n_layers, 0))
            if selfspec:
                req.steps.append(1)
            if row.generated == 1:  # a fresh request's first token (not a recompute's)
                rec["first_token_s"][row.request] = end
        for i, row in enumerate(decoding):
            req = state[row.request]
            tokens = ctl.emitted_tokens(i)[:row.remaining]
            layer = int(ctl.exit_layer[0, i])
            if selfspec:
                req.steps.append(len(tokens))
                rec["drafted"][row.request] += ctl.drafted[0, i]
                rec["accepted"][row.request] += ctl.accepted[0, i]
            else:
                differs = int(ctl.differs()[0, i]) if not live_exits else 0
                req.exits.append((row.generated, layer or n_layers, differs))
                rec["differs"][row.request] += differs
            req.tokens.extend(tokens)
            decoded(row, len(tokens), layer, strategy, n_layers)
            rec["layer_evals"][row.request] += ex.layer_evals[i]
            rec["exit_checks"][row.request] += ex.exit_checks[i]
        for row in sched.running:
            out_tokens[row.request] = row.generated
        for row in sched.finish():
            rec["completion_s"][row.request] = end
            req = state.pop(row.request)
            cache.release(req.slot)
            free.append(req.slot)
            _finish(req, row, outputs, realised)
            done += 1
            if closed and nxt < n:
                submit(nxt, end)
                nxt += 1
    requests = pd.DataFrame({"request_id": np.arange(n), "task": tasks, "trace_request": binding,
                             "arrival_s": rec["arrival_s"], "first_token_s": rec["first_token_s"],
                             "completion_s": rec["completion_s"],
                             "prompt_tokens": workload.prompt_len, "output_tokens": out_tokens,
                             "layer_evals": rec["layer_evals"], "exit_checks": rec["exit_checks"],
                             "drafted": rec["drafted"].astype(int),
                             "accepted": rec["accepted"].astype(int),
                             "differs": rec["differs"].astype(int)})
    summary = summarize(requests)
    summary["preemptions"] = sched.preemptions
    summary["peak_memory_bytes"] = _peak_memory(cuda, weights, rss_start)
    summary["memory_measured_by"] = ("cuda allocator peak" if cuda else
                                     "weights + process resident high-water mark over its start"
                                     if rss_start is not None else None)
    return requests, summary


def _peak_memory(cuda: bool, weights: int, rss_start: int | None) -> int | None:
    """Weights, KV blocks, activations and scratch at their highest during the run."""
    if cuda:
        return int(torch.cuda.max_memory_allocated())
    peak = peak_rss()
    if rss_start is None or peak is None:
        return None
    return int(weights + max(0, peak - rss_start))


def _finish(req: _Request, row: Row, outputs: dict | None, realised: dict | None) -> None:
    if outputs is not None:
        outputs[row.request]["tokens"] = req.tokens[row.prompt:]
    if realised is not None:
        if req.steps:
            realised.setdefault("steps", []).extend(
                (row.request, s, t) for s, t in enumerate(req.steps))
        else:
            realised.setdefault("exits", []).extend((row.request, *e) for e in req.exits)


def _prefill(model, cache: PagedKVCache, chunks: list[tuple[Row, int]],
             state: dict[int, _Request]) -> dict[int, int]:
    """Prompt chunks of every prefilling row in one call, padded to the longest; the first
    token of each row whose prompt (or recomputed context) is now complete."""
    q = max(c for _, c in chunks)
    tokens = torch.zeros(len(chunks), q, dtype=torch.long)
    for i, (row, c) in enumerate(chunks):
        tokens[i, :c] = torch.tensor(state[row.request].tokens[row.prefilled:row.prefilled + c])
        cache.reserve(state[row.request].slot, row.prefilled + c)
    slots = torch.tensor([state[r.request].slot for r, _ in chunks])
    pos = torch.tensor([r.prefilled for r, _ in chunks])
    h = model.run_layers(model.embed(tokens), 0, model.cfg.n_layers, cache=cache, rows=slots, pos=pos)
    ends = [(i, row, c) for i, (row, c) in enumerate(chunks) if row.prefilled + c == row.context]
    if not ends:
        return {}
    last = h[[i for i, _, _ in ends], [c - 1 for _, _, c in ends]]
    top1 = model.exit_logits(last[:, None])[:, 0].argmax(-1).tolist()
    return {row.request: t for (_, row, _), t in zip(ends, top1, strict=True)}


def _decode_step(model, cache, behaviour, binding, strategy, rows, state, live, live_exits, tasks,
                 draft_layer, op_log=None):
    """One decode step of `rows`: the strategy's plan executed with replayed or live exits."""
    req = np.array([r.request for r in rows])
    generated = np.array([r.generated for r in rows])
    remaining = np.array([r.remaining for r in rows])
    selfspec = strategy.name == "selfspec"
    ex = Executor(model, cache, torch.tensor([state[i].slot for i in req]),
                  torch.tensor([state[i].tokens[-1] for i in req]),
                  torch.from_numpy(np.array([r.prompt for r in rows]) + generated - 1),
                  strategy.drafts if selfspec else 0)
    ex.log = op_log
    tokens = behaviour.token_index(binding[req], generated)[None, :]
    expected = np.array([strategy.expected_depth(r.last_depth) for r in rows])
    if live_exits:
        ctl = LiveController(ex, live, tasks[req], remaining, behaviour, tokens, expected,
                             generated[None, :])
    else:
        ctl = EngineController(ex, behaviour, tokens, expected, generated[None, :])
        if selfspec:
            ctl.drafted, ctl.accepted, _ = timeline(
                behaviour.draft_runs(draft_layer, strategy.drafts), behaviour.offsets, binding[req],
                generated, remaining, strategy.drafts, 1)

    class Batch:
        pass

    batch = Batch()
    batch.rows, batch.n_layers = np.ones((1, len(rows)), bool), model.cfg.n_layers
    for op in plan(strategy, batch, ctl):
        ex.run(op)
    return ctl, ex


def realised_trace(realised: dict, requests: pd.DataFrame, model_sha256: str, n_layers: int,
                   strategy: StrategyConfig):
    """The decisions a measured run took as a trace: `exits` (one row per emitted token, with
    the layer it left at) or, for self-speculation, `accept` (tokens emitted per step)."""
    from eesim.trace import ExitTrace, TraceMeta

    task = requests.set_index("request_id")["task"]
    prompt = requests.set_index("request_id")["prompt_tokens"]
    if "steps" in realised:
        table = pd.DataFrame(realised["steps"], columns=["request_id", "step", "accept_length"])
        kind = "accept"
    else:
        table = pd.DataFrame(realised.get("exits", []),
                             columns=["request_id", "position", "exit_layer", "differs"])
        kind = "exits"
    table["task"] = task.loc[table["request_id"]].to_numpy()
    table["prompt_len"] = prompt.loc[table["request_id"]].to_numpy()
    meta = TraceMeta(kind=kind, model_sha256=model_sha256, n_layers=n_layers,
                     exit_layers=list(range(1, n_layers + 1)), source="eesim measure",
                     decoding={"strategy": strategy.model_dump()})
    return ExitTrace(table, meta, "realised trace")
