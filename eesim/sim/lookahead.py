"""What a replica's bulk plans in (eesim/sim/replica.py): the arrivals due during the bulk and the
queued requests that completions let in, each at the step it would be admitted at, and the
guesses of those steps before the bulk is priced.

Speed only: with `Stepping(lookahead=False)` every arrival and admission ends a bulk instead,
and the results are the same (tests/test_sim.py holds them equal). What it buys: at low load a
bulk ends near each arrival without it, about one bulk per request.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

import numpy as np

from eesim.sched import Row
from eesim.sim.pricer import Pricer

if TYPE_CHECKING:
    from eesim.sim.replica import _Priced


class PlansAhead:
    """The look-ahead half of a `Replica`: which requests a bulk plans in, when each is admitted
    (the rows free for it, the prefill budget, memory), and the guessed admission steps."""

    def _plans_ahead(self) -> bool:
        """Whether admissions can be planned into a bulk: one replica, open loop, continuous
        whole-prompt batching, no kill switch (nothing else can change the batch unseen)."""
        sim, cfg = self.sim, self.sched.cfg
        return (sim.stepping.lookahead and sim.workload.concurrency is None and len(sim.replicas) == 1
                and cfg.batching == "continuous" and cfg.prefill == "whole" and sim.kill_at is None)

    def _fit_in_memory(self, requests: list[tuple[int, int]]) -> bool:
        """Whether (prompt, output) requests fit whole beside the running rows' next bulk."""
        sched = self.sched
        reserve = sum(sched.blocks(prompt + output) for prompt, output in requests)
        ahead = self.sim.stepping.bulk * self.tokens_per_step
        return sched.used_blocks(ahead) + reserve <= sched.capacity_blocks

    def _queued(self, rows: list[Row]) -> list[Row]:
        """Waiting requests to plan into the bulk, at most one per running row: a full batch
        (no other room frees up), one replica, open loop, continuous whole-prompt batching,
        fresh requests at the head of the queue (a preempted one is recomputed as the scheduler
        says), and memory for all of them."""
        sched = self.sched
        if not sched.waiting or len(sched.running) < sched.cfg.max_batch or not self._plans_ahead():
            return []
        queued = []
        for row in sched.waiting:
            if row.generated or row.prefilled or len(queued) == len(rows):
                break
            queued.append(row)
        return queued if self._fit_in_memory([(r.prompt, r.output) for r in queued]) else []

    def _queue_slots(self, queued: list[Row], finish: np.ndarray, k_steps: int):
        """(requests planned, the step each is admitted at, the first completion step no planned
        request takes over): a row completing at step f frees its place for the head of the
        queue at step f + 1 (FIFO, rows completing together in row order), within the prefill
        budget of a step (the first request of a step always fits)."""
        frees = np.sort(finish)
        frees = frees[frees < k_steps]
        slots = self._slots(finish, len(queued), k_steps)  # no row is free now: the batch is full
        slots = slots[slots < k_steps]
        count = self._admissible(slots, [r.prompt for r in queued[: len(slots)]], k_steps)
        uncovered = int(frees[count]) if len(frees) > count else k_steps
        return queued[:count], slots[:count], uncovered

    def _future(self, rows: list[Row], k_steps: int):
        """Requests that will arrive during the next k_steps, to plan in: open loop, one
        replica, continuous whole-prompt batching, nobody waiting, and a row free for each now
        or freed by a completion before it is admitted (`_slots`)."""
        sim = self.sim
        none = ([], np.zeros(0), np.zeros(0, np.int64))
        if self.step_s <= 0 or self.sched.waiting or not self._plans_ahead():
            return none
        horizon = sim.env.now + self.step_s * k_steps
        # rows decoding now free theirs a step after their last token (a guess for
        # self-speculation, which may emit several a step; the pricing gives the exact ones)
        finish = np.array([r.remaining - 1 for r in rows], np.int64)
        picked = sim.upcoming(horizon, self._room() + int((finish < k_steps).sum()))
        w = sim.workload
        if not picked or not self._fit_in_memory([(int(w.prompt_len[i]), int(w.output_len[i]))
                                                  for i in picked]):
            return none
        at = np.array([sim.arrival[i] for i in picked])
        prompts = [int(sim.workload.prompt_len[i]) for i in picked]
        guess = np.maximum(self._guess(rows, at, prompts, k_steps),
                           self._slots(finish, len(picked), k_steps))
        count = self._admissible(guess, prompts, k_steps)
        rows_f = [Row(i, prompts[n], int(sim.workload.output_len[i]))
                  for n, i in enumerate(picked[:count])]
        return rows_f, at[:count], guess[:count]

    def _room(self) -> int:
        """Rows free in the batch now."""
        return max(0, self.sched.cfg.max_batch - len(self.sched.running))

    def _slots(self, finish: np.ndarray, count: int, k_steps: int,
               planned: np.ndarray | None = None) -> np.ndarray:
        """For `count` arrivals in order, the first step a row is free for each: the rows free
        now, then a step after each completion (`finish`: the running rows' last steps; and
        `planned`, those of the arrivals themselves as planned), each taken by the next
        arrival in turn (FIFO); k_steps where none frees within the bulk (not admissible)."""
        free = [0] * self._room() + [int(f) + 1 for f in finish if f < k_steps]
        heapq.heapify(free)
        slot = np.full(count, k_steps, np.int64)
        for j in range(count):
            if not free or free[0] >= k_steps:
                break
            slot[j] = heapq.heappop(free)
            if planned is not None and planned[j] < k_steps:
                heapq.heappush(free, int(planned[j]) + 1)
        return slot

    def _guess(self, rows: list[Row], at: np.ndarray, prompts: list[int], k_steps: int) -> np.ndarray:
        """The step each arrival is likely admitted at, before any pricing: decode seconds
        learned per batch size (`_learn`) for the rows decoding in each step."""
        remaining = np.sort([r.remaining for r in rows])
        # rows decoding in step k >= 1: those with tokens left (a joining row decodes from 1)
        present = len(rows) - np.searchsorted(remaining, np.arange(k_steps), side="right")
        first = self._decode_guess(sum(not r.needs_prefill for r in rows)) \
            + self._prefill_s([r.prompt for r in rows if r.needs_prefill])
        seconds = self._decode_table(len(rows) + len(at))
        return self._walk(at, prompts, k_steps, first, lambda ks, joined: seconds[present[ks] + joined])

    def _reguess(self, p: _Priced, at: np.ndarray, prompts: list[int]) -> np.ndarray:
        """The admission steps again after a pricing `p` whose guesses were wrong: its steps
        without the planned prefills, and a row's decode cost (the learned difference between
        batch sizes) for each step an arrival now decodes in that it did not, or the reverse."""
        planned = p.admit_at[: len(at)]
        prefill = np.zeros(p.k_steps)
        for step in np.unique(planned[planned < p.k_steps]):
            prefill[step] = self._prefill_s([q for q, a in zip(prompts, planned, strict=True) if a == step])
        base = p.steps - prefill
        rows = np.add.reduce(p.present, axis=1, dtype=np.int64)
        before = np.searchsorted(np.sort(planned), np.arange(p.k_steps), side="left")
        seconds = self._decode_table(int(rows.max(initial=0)) + 1)
        row_s = seconds[np.minimum(rows + 1, len(seconds) - 1)] - seconds[rows]  # a row more

        def decode(ks: np.ndarray, joined: int) -> np.ndarray:
            # arrivals decoding in each step now, less than before, each a row's cost
            return base[ks] + (joined - before[ks]) * row_s[ks]
        return self._walk(at, prompts, p.k_steps, float(base[0]), decode)

    def _walk(self, at: np.ndarray, prompts: list[int], k_steps: int, first: float,
              decode) -> np.ndarray:
        """Admission steps for arrivals at `at` (in order): each is admitted at the first step
        from 1 that starts at or after it; steps `ks` last `decode(ks, arrivals decoding in
        them)` plus the prefill of those admitted in each (`first`: step 0's length). k_steps:
        not in the bulk. Walked from one admission step to the next: the steps between are
        summed in one cumulative sum, in the same order as one at a time."""
        guess = np.full(len(at), k_steps, np.int64)
        clock = self.sim.env.now + first  # when step k starts
        k, j = 1, 0
        while k < k_steps and j < len(at):
            lengths = decode(np.arange(k, k_steps), j)  # nobody admitted in them yet
            starts = np.cumsum(np.concatenate(([clock], lengths[:-1])))
            reached = starts >= at[j]
            i = int(reached.argmax())
            if not reached[i]:
                break  # the next arrival falls after the bulk
            clock, start = starts[i], j
            while j < len(at) and at[j] <= clock:
                j += 1
            guess[start:j] = k + i
            if j == len(at):
                break
            clock = clock + (lengths[i] + self._prefill_s(prompts[start:j]))
            k += i + 1
        return guess

    def _decode_table(self, most: int) -> np.ndarray:
        """`_decode_guess(n)` for n = 0..most."""
        return np.array([self._decode_guess(n) for n in range(most + 1)])

    def _decode_guess(self, n: int) -> float:
        """Seconds of a decode step of n rows: as last seen at n rows, else interpolated between
        (or extended from) the batch sizes seen, else the last step's length."""
        table = self._decode_s
        if n in table:
            return table[n]
        if n <= 0:
            return 0.0
        if len(table) < 2:
            return next(iter(table.values()), self.step_s)
        sizes = sorted(table)
        if sizes[0] < n < sizes[-1]:
            return float(np.interp(n, sizes, [table[m] for m in sizes]))
        a, b = (sizes[0], sizes[1]) if n < sizes[0] else (sizes[-2], sizes[-1])
        slope = max(0.0, (table[b] - table[a]) / (b - a))
        return max(0.0, table[b if n > b else a] + slope * (n - (b if n > b else a)))

    def _prefill_s(self, prompts: list[int]) -> float:
        """Seconds the prefill of these whole prompts adds to a step, as the pricer prices it
        (`Pricer.admit`); a guess is no priced point, so no extrapolation is counted for it."""
        if not prompts:
            return 0.0
        key = tuple(sorted(prompts))
        if key not in self._prefill_cache:
            cost = self.sim.cost
            counted = cost.extrapolations.copy()
            pricer = Pricer(cost, np.zeros((1, 1)))
            pricer.admit(np.zeros(len(key), np.int64), np.array(key), self.sim.n_layers)
            self._prefill_cache[key] = float(pricer.seconds[0])
            cost.extrapolations.clear()
            cost.extrapolations.update(counted)
        return self._prefill_cache[key]

    def _learn(self, steps: np.ndarray, present: np.ndarray, prefilling: np.ndarray) -> None:
        """Remember the decode seconds per batch size of the steps without prefill."""
        pure = ~prefilling
        if not pure.any():
            return
        n = present[pure]
        sums = np.bincount(n, weights=steps[pure])
        counts = np.bincount(n)
        for size in np.flatnonzero(counts):
            self._decode_s[int(size)] = float(sums[size] / counts[size])

    def _admissible(self, admit_at: np.ndarray, prompts: list[int], k_steps: int) -> int:
        """How many of these arrivals (in arrival order) a bulk of k_steps can plan in when
        they are admitted at `admit_at`: from step 1 and before the last step, within admit's
        prefill budget per step (the first of a step always fits). FIFO: nobody behind the first
        that cannot is planned in either."""
        budget = self.sched.cfg.max_batched_tokens
        tokens: dict[int, int] = {}
        for j, (at, prompt) in enumerate(zip(admit_at.tolist(), prompts, strict=True)):
            if not 1 <= at < k_steps - 1 or (at in tokens and tokens[at] + prompt > budget):
                return j
            tokens[at] = tokens.get(at, 0) + prompt
        return len(prompts)
