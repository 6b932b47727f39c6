"""The cost model: a profile's measured grid, interpolated, with honesty about extrapolation.

Each term is a grid over (rows, query, context). Values are made non-decreasing along every axis
(more rows, more query tokens or more context never cost less), then interpolated piecewise
linearly in each axis. Outside the measured range, the last segment's slope continues and the
point is counted as extrapolated; so are points that lean on grid cells the profiler skipped
(filled by scaling the nearest measured cell linearly in tokens).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from eesim.model.config import ModelConfig
from eesim.profile.format import Profile, ProfileError, read_profile

ROWS_TABLE = 8192  # row counts priced by table lookup for terms that depend on rows alone
SHAPE_FIELDS = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim")


class GridTerm:
    """One cost term: a dense (rows, query, context) grid of seconds."""

    def __init__(self, rows: np.ndarray, query: np.ndarray, context: np.ndarray,
                 seconds: np.ndarray) -> None:
        self.axes = [rows.astype(float), query.astype(float), context.astype(float)]
        filled = np.isnan(seconds)
        self.values = _monotone(_fill(seconds, self.axes))
        self.filled = filled
        self._flat, self._flat_filled = self.values.ravel(), filled.ravel()
        dims = self.values.shape
        self._strides = (dims[1] * dims[2], dims[2], 1)
        step = [s if d > 1 else 0 for s, d in zip(self._strides, dims, strict=True)]
        self._corners = np.array([a * step[0] + b * step[1] + c * step[2]
                                  for a in (0, 1) for b in (0, 1) for c in (0, 1)])
        self._by_rows = None
        self._lines: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._line_rows: dict[int, np.ndarray] = {}  # lines whose flags depend on rows alone
        if dims[1] == 1 and dims[2] == 1:
            table = self._interpolate(np.arange(ROWS_TABLE, dtype=float), 1.0, 0.0)
            self._by_rows = (table[0], table[1])

    @classmethod
    def from_points(cls, points) -> GridTerm:
        axes = [np.unique(points[c].to_numpy()) for c in ("rows", "query", "context")]
        grid = np.full([len(a) for a in axes], np.nan)
        idx = [np.searchsorted(a, points[c].to_numpy()) for a, c in
               zip(axes, ("rows", "query", "context"), strict=True)]
        grid[tuple(idx)] = points["median_s"].to_numpy()
        return cls(*axes, grid)

    def __call__(self, rows, query=1, context=0) -> tuple[np.ndarray, np.ndarray]:
        """Seconds at the given points (scalars or arrays) and whether each extrapolated."""
        r = np.asarray(rows)
        whole = np.rint(r).astype(np.int64)
        if np.array_equal(whole, r) and whole.min() >= 1 and whole.max() < ROWS_TABLE:
            if self._by_rows is not None:  # a term of rows alone: a table over whole row counts
                return self._by_rows[0][whole], self._by_rows[1][whole]
            q, ctx = np.asarray(query, float), np.asarray(context, float)
            if np.all(q == 1):  # decode: a table over (rows, context points)
                return self._line(2, 1.0, whole, np.broadcast_to(ctx, r.shape))
            if np.all(ctx == 0):  # whole prompts: a table over (rows, query points)
                return self._line(1, 0.0, whole, np.broadcast_to(q, r.shape))
        return self._interpolate(rows, query, context)

    def _line(self, axis: int, fixed: float, rows: np.ndarray,
              x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Costs exact per whole row count and linear along `axis` (1 query, 2 context)
        between grid points, the other axis held at `fixed`; tables built on first use."""
        if axis not in self._lines:
            points = []
            for value in self.axes[axis]:
                q, c = (value, fixed) if axis == 1 else (fixed, value)
                points.append(self._interpolate(np.arange(ROWS_TABLE, dtype=float), q, c))
            self._lines[axis] = (np.stack([p[0] for p in points], axis=1),
                                 np.stack([p[1] for p in points], axis=1))
            flags = self._lines[axis][1]
            if (flags == flags[:, :1]).all():  # no filled cell on the line's grid points
                self._line_rows[axis] = flags[:, 0].copy()
        values, flags = self._lines[axis]
        i, w, outside = _bracket(self.axes[axis], x)
        hi = np.minimum(i + 1, values.shape[1] - 1)
        value = values[rows, i] * (1 - w) + values[rows, hi] * w
        if axis in self._line_rows:  # flagged by row count alone: beyond the measured rows
            return np.maximum(value, 0.0), outside | self._line_rows[axis][rows]
        flag = outside | (flags[rows, i] & (w != 1)) | (flags[rows, hi] & (w != 0))
        return np.maximum(value, 0.0), flag

    def _interpolate(self, rows, query, context) -> tuple[np.ndarray, np.ndarray]:
        point = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (rows, query, context)))
        shape = point[0].shape
        base = np.zeros(point[0].size, np.int64)
        weights, outside = [], np.zeros(point[0].size, bool)
        for axis, stride, x in zip(self.axes, self._strides, point, strict=True):
            i, w, out = _bracket(axis, x.ravel())
            base += i * stride
            weights.append(np.stack([1 - w, w]))              # (2, n): lower, upper neighbour
            outside |= out
        corner_w = (weights[0][:, None, None] * weights[1][None, :, None]
                    * weights[2][None, None, :]).reshape(8, -1)
        idx = base[None, :] + self._corners[:, None]          # (8, n) flat indices
        total = (corner_w * self._flat[idx]).sum(axis=0)
        touched = ((corner_w != 0) & self._flat_filled[idx]).any(axis=0)
        return np.maximum(total, 0.0).reshape(shape), (outside | touched).reshape(shape)


def _bracket(axis: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower index and weight of the upper neighbour (may leave [0, 1] when extrapolating).
    A term measured at a single value of an axis does not depend on it: held constant."""
    if len(axis) == 1:
        return np.zeros(x.shape, int), np.zeros(x.shape), np.zeros(x.shape, bool)
    i = np.minimum(np.maximum(np.searchsorted(axis, x, side="right") - 1, 0), len(axis) - 2)
    lower = axis[i]
    below = x < axis[0]
    w = np.where(below, 0.0, (x - lower) / (axis[i + 1] - lower))  # below: hold the first value
    return i, w, below | (x > axis[-1])


def _fill(grid: np.ndarray, axes: list[np.ndarray]) -> np.ndarray:
    """Fill skipped cells by scaling the largest measured cell of the same (query, context)
    linearly in rows, or failing that of the same (rows, context) linearly in query."""
    out = grid.copy()
    for qi in range(grid.shape[1]):
        for ci in range(grid.shape[2]):
            col = out[:, qi, ci]
            known = np.flatnonzero(~np.isnan(col))
            if len(known):
                last = known[-1]
                for ri in np.flatnonzero(np.isnan(col)):
                    col[ri] = col[last] * axes[0][ri] / axes[0][last]
    for ri in range(grid.shape[0]):
        for ci in range(grid.shape[2]):
            row = out[ri, :, ci]
            known = np.flatnonzero(~np.isnan(row))
            if len(known):
                last = known[-1]
                for qi in np.flatnonzero(np.isnan(row)):
                    row[qi] = row[last] * axes[1][qi] / axes[1][last]
    if np.isnan(out).any():
        out = np.where(np.isnan(out), np.nanmax(out), out)
    return out


def _monotone(grid: np.ndarray) -> np.ndarray:
    for axis in range(3):
        grid = np.maximum.accumulate(grid, axis=axis)
    return grid


class CostModel:
    """Seconds for every term a step plan can contain, read from one profile."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.meta = profile.meta
        self.terms = {term: GridTerm.from_points(rows)
                      for term, rows in profile.table.groupby("term")}
        self.extrapolations: Counter[str] = Counter()
        self.host_sync_s = float(self.terms["host_sync"](1)[0]) if "host_sync" in self.terms else 0.0
        # terms of rows alone, stacked: one gather prices any mix of them (simulator hot path)
        self.row_terms = [t for t, g in self.terms.items() if g._by_rows is not None]
        self.row_index = {t: i for i, t in enumerate(self.row_terms)}
        self.row_values = np.stack([self.terms[t]._by_rows[0] for t in self.row_terms]) \
            if self.row_terms else np.zeros((0, ROWS_TABLE))
        self.row_flags = np.stack([self.terms[t]._by_rows[1] for t in self.row_terms]) \
            if self.row_terms else np.zeros((0, ROWS_TABLE), bool)

    @classmethod
    def load(cls, path: Path | str) -> CostModel:
        return cls(read_profile(path))

    @property
    def label(self) -> str:
        """How to name this profile wherever it is shown (analytic ones say so)."""
        kind = "ANALYTIC (datasheet roofline)" if self.meta.kind == "analytic" else "measured"
        return f"{self.meta.model_name} on {self.meta.device} [{kind}]"

    def check_shape(self, cfg: ModelConfig, what: str = "model") -> None:
        """Refuse to price a model whose shape differs from the profiled one."""
        ours = self.meta.model
        diff = [f"{f}: profile {getattr(ours, f)} vs {what} {getattr(cfg, f)}"
                for f in SHAPE_FIELDS if getattr(ours, f) != getattr(cfg, f)]
        if diff:
            raise ProfileError(f"{self.profile.where}: made for model '{self.meta.model_name}' of "
                               f"another shape than the {what} ({'; '.join(diff)})")

    def cost(self, term: str, rows, query=1, context=0):
        """Seconds for `term` at the point(s); extrapolated points are counted per term."""
        if term not in self.terms:
            raise ProfileError(f"{self.profile.where}: has no term '{term}' "
                               f"(it holds {sorted(self.terms)})")
        seconds, extrapolated = self.terms[term](rows, query, context)
        if extrapolated.any():
            self.extrapolations[term] += int(extrapolated.sum())
        return float(seconds) if seconds.ndim == 0 else seconds

    def price_layers(self, n: np.ndarray, query: np.ndarray, context: np.ndarray,
                     one_token: bool) -> np.ndarray:
        """Seconds of one layer for whole row counts n (0 costs nothing): one token per row
        (`one_token`, read along context) or prompt chunks at context 0 (read along query)
        from tables, anything else interpolated; extrapolated points are counted."""
        grid = self.terms["layer"]
        safe = np.maximum(n, 1)
        if safe.max() >= ROWS_TABLE:
            values, flags = grid._interpolate(safe, query, context)
        elif one_token:
            values, flags = grid._line(2, 1.0, safe, context)
        elif not context.any():
            values, flags = grid._line(1, 0.0, safe, query)
        else:
            values, flags = grid._interpolate(safe, query, context)
        flags = flags & (n > 0)
        if flags.any():
            self.extrapolations["layer"] += int(flags.sum())
        return np.where(n > 0, values, 0.0)

    def price_row_terms(self, term_index: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Seconds of rows-only terms (`row_terms[term_index]`) at whole row counts n (0 costs
        nothing), all in one lookup; extrapolated points are counted per term."""
        big = n >= ROWS_TABLE
        if big.any():
            out = np.empty(len(n))
            for i in np.flatnonzero(big):
                out[i] = self.cost(self.row_terms[term_index[i]], n[i])
            small = ~big
            out[small] = self.price_row_terms(term_index[small], n[small])
            return out
        live = np.flatnonzero(n)  # rows of 0 cost nothing: look up the others only
        term_index, rows = term_index[live], n[live]
        flags = self.row_flags[term_index, rows]
        if flags.any():
            for t, c in zip(*np.unique(term_index[flags], return_counts=True), strict=True):
                self.extrapolations[self.row_terms[t]] += int(c)
        out = np.zeros(len(n))
        out[live] = self.row_values[term_index, rows]
        return out

    @property
    def extrapolated(self) -> bool:
        return bool(self.extrapolations)
