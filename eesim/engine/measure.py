"""Measured runs: the simulator's scheduler and strategies, executed for real with torch.

`measure()` serves a workload on a real model in wall-clock time: arrivals are waited for, each
iteration admits what the scheduler admits, prefills new prompts, and runs one decode step of
the strategy through the `Executor`. Exit decisions are replayed from the trace exactly as the
simulator takes them (`TraceController`), so a measured and a simulated run differ only in who
pays for a step. The per-request table has the simulator's columns; eesim.metrics summarises it.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from eesim.engine.executor import Executor
from eesim.metrics import summarize
from eesim.model import Checkpoint
from eesim.plan.strategies import StrategyConfig, plan
from eesim.policy.policy import HIGHER_PASSES, ExitPolicy
from eesim.sched import Row, Scheduler, SchedulerConfig
from eesim.sim.behaviour import Behaviour
from eesim.sim.simulate import bind_requests
from eesim.sim.step import TraceController
from eesim.sim.workload import Workload


class EngineController(TraceController):
    """Replayed exit decisions; the token a row emits is the model's own head answer at the
    layer it leaves."""

    def __init__(self, executor: Executor, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.executor = executor
        self.emitted = torch.full((self.tokens.shape[1],), -1, dtype=torch.long)

    def emit(self, layer: int, rows: np.ndarray) -> None:
        super().emit(layer, rows)
        idx = torch.from_numpy(np.flatnonzero(rows[0]))
        self.emitted[idx] = self.executor.head_top1[idx]


class LiveController(EngineController):
    """Exit decisions from the model's own confidences at each check, under a policy.

    It cannot know where the next exit is, so every check layer is its own segment."""

    def __init__(self, executor: Executor, policy, tasks: np.ndarray, *args, **kwargs) -> None:
        super().__init__(executor, *args, **kwargs)
        self.policy = policy
        sign = 1.0 if HIGHER_PASSES[policy.signal] else -1.0
        self.threshold = sign * np.array([policy.threshold(t) for t in tasks])
        self.sign = sign

    def next_exit(self, layer: int, rows: np.ndarray, n_layers: int, every: int = 1) -> int:
        if not self.exits_enabled:
            return n_layers
        return layer if every == 1 else -(-layer // every) * every

    def passes(self, layer: int, rows: np.ndarray) -> np.ndarray:
        if not self.exits_enabled or layer < self.policy.min_layer:
            return np.zeros_like(rows)
        column = {"max_prob": 0, "entropy": 1, "margin": 2}.get(self.policy.signal)
        if column is None:
            raise ValueError(f"policy field 'signal' is {self.policy.signal!r}: live exits in the "
                             f"engine read max_prob, entropy or margin")
        value = self.sign * self.executor.signals[column].numpy()
        return rows & (value >= self.threshold)[None, :]


class _Slot:
    """Engine-side state of a row: its cache slot and its last token."""

    def __init__(self, slot: int, last: int) -> None:
        self.slot, self.last = slot, last


def measure(ckpt: Checkpoint, behaviour: Behaviour, workload: Workload, strategy: StrategyConfig,
            sched_cfg: SchedulerConfig, *, task_mix: dict[str, float] | None = None,
            seed: int = 0, live: ExitPolicy | None = None,
            outputs: dict | None = None, binding: np.ndarray | None = None
            ) -> tuple[pd.DataFrame, dict]:
    """Serve `workload` with `strategy` on the checkpoint's model; the measured request table
    and its summary. With `live`, exits follow the model's own confidences under that policy
    instead of the trace. `outputs`, if given, receives each request's prompt and tokens."""
    if strategy.name == "selfspec":
        raise ValueError("--strategy selfspec: the engine does not execute self-speculation yet "
                         "(simulate it with eesim simulate)")
    model = ckpt.model
    n_layers = model.cfg.n_layers
    if behaviour.n_layers != n_layers:
        raise ValueError(f"behaviour has {behaviour.n_layers} layers, the model {n_layers}")
    n = len(workload)
    tasks, binding = bind_requests(behaviour, n, task_mix, seed, binding)
    length = int((workload.prompt_len + workload.output_len).max()) + 1
    cache = model.new_cache(sched_cfg.max_batch, length)
    kv_bytes = 2 * model.cfg.n_kv_heads * model.cfg.head_dim * cache.k.element_size()
    sched = Scheduler(sched_cfg, sched_cfg.block_tokens * n_layers * kv_bytes)
    rng = np.random.default_rng(seed)
    vocab = model.cfg.vocab_size
    rec = {k: np.zeros(n) for k in ("arrival_s", "first_token_s", "completion_s", "layer_evals",
                                    "exit_checks", "differs")}
    out_tokens = np.zeros(n, np.int64)
    state: dict[int, _Slot] = {}
    free = list(range(sched_cfg.max_batch))
    nxt, done = 0, 0
    closed = workload.concurrency is not None
    start = time.perf_counter()

    def submit(i: int, now: float) -> None:
        rec["arrival_s"][i] = now
        sched.waiting.append(Row(i, int(workload.prompt_len[i]), int(workload.output_len[i])))

    if closed:
        for _ in range(min(workload.concurrency, n)):
            submit(nxt, 0.0)
            nxt += 1
    while done < n:
        now = time.perf_counter() - start
        while not closed and nxt < n and workload.arrival_s[nxt] <= now:
            submit(nxt, float(workload.arrival_s[nxt]))
            nxt += 1
        if not sched.running and not sched.waiting:
            time.sleep(max(0.0, float(workload.arrival_s[nxt]) - now))
            continue
        if sched.make_room(1):
            raise RuntimeError("KV memory ran out: the engine does not preempt yet; "
                               "give the scheduler more kv_capacity_bytes")
        admitted = sched.admit(1)
        decoding = [r for r in sched.running if not r.needs_prefill]
        with torch.inference_mode():
            for row in admitted:
                slot = free.pop()
                prompt = torch.from_numpy(rng.integers(0, vocab, (1, row.prompt)))
                if outputs is not None:
                    outputs[row.request] = {"prompt": prompt[0].tolist(), "tokens": []}
                h = model.run_layers(model.embed(prompt), 0, n_layers, cache=cache,
                                     rows=torch.tensor([slot]), pos=0)
                state[row.request] = _Slot(slot, int(model.exit_logits(h[:, -1:])[0, -1].argmax()))
                if outputs is not None:
                    outputs[row.request]["tokens"].append(state[row.request].last)
            if decoding:
                ctl, ex = _decode_step(model, cache, behaviour, binding, strategy, decoding, state,
                                       live, tasks)
        end = time.perf_counter() - start
        for row in admitted:
            row.needs_prefill = False
            row.generated = 1
            row.last_depth = strategy.min_layer + 1
            rec["first_token_s"][row.request] = end
        if decoding:
            for i, row in enumerate(decoding):
                state[row.request].last = int(ctl.emitted[i])
                if outputs is not None:
                    outputs[row.request]["tokens"].append(state[row.request].last)
                row.generated += 1
                row.last_depth = int(ctl.exit_layer[0, i]) or n_layers
                rec["layer_evals"][row.request] += ex.layer_evals[i]
                rec["exit_checks"][row.request] += ex.exit_checks[i]
                rec["differs"][row.request] += int(ctl.differs()[0, i])
        for row in sched.running:
            out_tokens[row.request] = row.generated
        for row in sched.finish():
            rec["completion_s"][row.request] = end
            free.append(state.pop(row.request).slot)
            done += 1
            if closed and nxt < n:
                submit(nxt, end)
                nxt += 1
    requests = pd.DataFrame({"request_id": np.arange(n), "task": tasks, "trace_request": binding,
                             "arrival_s": rec["arrival_s"], "first_token_s": rec["first_token_s"],
                             "completion_s": rec["completion_s"],
                             "prompt_tokens": workload.prompt_len, "output_tokens": out_tokens,
                             "layer_evals": rec["layer_evals"], "exit_checks": rec["exit_checks"],
                             "drafted": 0, "accepted": 0, "differs": rec["differs"].astype(int)})
    summary = summarize(requests)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    summary["peak_memory_bytes"] = int(weights + cache.nbytes)  # allocated: weights + KV cache
    return requests, summary


def _decode_step(model, cache, behaviour, binding, strategy, rows, state, live=None, tasks=None):
    """One decode step of `rows`: the strategy's plan executed with replayed exits."""
    req = np.array([r.request for r in rows])
    generated = np.array([r.generated for r in rows])
    ex = Executor(model, cache, torch.tensor([state[i].slot for i in req]),
                  torch.tensor([state[i].last for i in req]),
                  torch.from_numpy(np.array([r.prompt for r in rows]) + generated - 1))
    tokens = behaviour.token_index(binding[req], generated)[None, :]
    expected = np.array([max(strategy.min_layer, r.last_depth - 1) for r in rows])
    if live is None:
        ctl = EngineController(ex, behaviour, tokens, expected, generated[None, :])
    else:
        ctl = LiveController(ex, live, tasks[req], behaviour, tokens, expected, generated[None, :])

    class Batch:
        pass

    batch = Batch()
    batch.rows, batch.n_layers = np.ones((1, len(rows)), bool), model.cfg.n_layers
    for op in plan(strategy, batch, ctl):
        ex.run(op)
    return ctl, ex
