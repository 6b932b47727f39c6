"""The controller that reveals exits from a trace: the answers a strategy's plan asks for
(which rows pass an exit check, where the next exit can be, drafts and acceptances), for K steps
of R rows, read from the bound exit behaviour. The simulator prices the plan it drives; the
engine executes it (replayed exits). Self-speculation's drafts and acceptances come from the
one replay, `eesim.policy.selfspec.timeline`.
"""

from __future__ import annotations

import numpy as np

from eesim.scenario.behaviour import Behaviour, bit


class TraceController:
    """Exit decisions for K steps of R rows whose tokens are `tokens` (K, R) global indices.

    For self-speculation the positions move by accepted + 1 per step, so the controller works
    them out step by step from each row's draft agreement (`draft_agree` per global token).
    """

    def __init__(self, behaviour: Behaviour, tokens: np.ndarray, last_depth: np.ndarray,
                 positions: np.ndarray | None = None, exits_enabled: bool = True,
                 shadow: np.ndarray | None = None) -> None:
        self.exits_enabled = exits_enabled
        self.shadow_mask = np.zeros(tokens.shape, bool) if shadow is None else shadow
        self.shadowed = np.zeros(tokens.shape, bool)
        self.any_shadow = bool(self.shadow_mask.any())
        self.b = behaviour
        self.tokens = tokens
        self.pass_bits = behaviour.pass_bits[tokens]
        self.agree_bits = behaviour.agree_bits[tokens]
        self.exit_layer = np.zeros(tokens.shape, dtype=np.int64)
        self.last_depth = last_depth          # (R,) depth of each row's previous token
        self.positions = positions            # (K, R) output positions (monotone schedule)
        self.accepted = np.zeros(tokens.shape, dtype=np.int64)
        self.drafted = np.zeros(tokens.shape, dtype=np.int64)
        self._passing: dict[int, np.ndarray] = {}

    def passes(self, layer: int, rows: np.ndarray) -> np.ndarray:
        if not self.exits_enabled:
            return np.zeros_like(rows)
        if layer not in self._passing:  # regroup's groups ask again at the same layers
            self._passing[layer] = bit(self.pass_bits, layer)
        return rows & self._passing[layer]

    def shadow(self, rows: np.ndarray) -> np.ndarray:
        if not self.any_shadow:
            return self.shadow_mask  # all False: nothing to copy
        chosen = rows & self.shadow_mask
        self.shadowed = self.shadowed | chosen
        return chosen

    def next_exit(self, layer: int, rows: np.ndarray, n_layers: int, every: int = 1) -> int:
        if not self.exits_enabled:
            return n_layers
        bits = int(np.bitwise_or.reduce(self.pass_bits[rows], initial=np.uint64(0)))
        bits &= ~((1 << (layer - 1)) - 1)  # only layers >= `layer`
        if every > 1:  # only check layers: bit l-1 for l divisible by `every`
            bits &= sum(1 << (m - 1) for m in range(every, n_layers + 1, every))
        return (bits & -bits).bit_length() if bits else n_layers

    def emit(self, layer, rows: np.ndarray) -> None:
        if isinstance(layer, np.ndarray):  # a layer per step
            np.copyto(self.exit_layer, layer[:, None], where=rows)
        else:
            self.exit_layer[rows] = layer

    def expected_depth(self, rows: np.ndarray, min_layer: int = 1, every: int = 1) -> np.ndarray:
        """Each step's expected depth is one less than the layer its row's previous token left
        at (regroup's predictor, at least min_layer and at most the last layer), followed step
        by step through the bulk: from a depth d, a present token's next depth is
        max(min_layer, e - 1), e its first passing check at a layer >= d (the last layer if
        none). The behaviour tables those next depths per token and depth; the walk through the
        steps is one lookup per step."""
        n = self.b.n_layers
        table = self.b.next_depths(min_layer, every, self.exits_enabled)
        at = np.where(rows, self.tokens, len(self.b.pass_bits)) * n - 1  # + d: entry (t, d)
        current = np.clip(np.asarray(self.last_depth, np.int64), min_layer, n)
        expected = np.empty(rows.shape, np.int64)
        for k in range(rows.shape[0]):
            expected[k] = current
            current = table[at[k] + current]
        return expected

    def scheduled_depth(self, rows: np.ndarray, min_layer: int, horizon: int) -> np.ndarray:
        n = self.b.n_layers
        if not self.exits_enabled:
            return np.full(rows.shape[0], n)
        pos = np.where(rows, self.positions, np.iinfo(np.int64).max).min(axis=1)
        pos = np.where(rows.any(axis=1), pos, 0)
        return np.maximum(min_layer, n - (n - min_layer) * np.minimum(pos, horizon) // horizon)

    def drafts(self, rows: np.ndarray, k: int) -> np.ndarray:
        return np.where(rows, self.drafted, 0)

    def verify(self, rows: np.ndarray, drafted: np.ndarray) -> np.ndarray:
        return np.where(rows, self.accepted, 0)

    def differs(self) -> np.ndarray:
        """(K, R) emitted token differs from full depth (self-speculation never differs)."""
        emitted = self.exit_layer > 0
        return emitted & ~bit(self.agree_bits, np.maximum(self.exit_layer, 1))
