"""A preallocated key/value cache: one tensor per kind, indexed (layer, row, position)."""

from __future__ import annotations

import torch
from torch import Tensor

from eesim.model.config import ModelConfig


class KVCache:
    """Keys and values for every layer, `rows` sequences and `length` positions, allocated once.

    Rows are slots: a scheduler assigns a request to a row and the engine passes the row indices
    of the sequences it runs. Writes go to explicit positions, so a layer that was skipped for a
    token can be filled later (or never) without disturbing the others.
    """

    def __init__(
        self, cfg: ModelConfig, rows: int, length: int, *,
        dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
    ) -> None:
        if rows < 1 or length < 1:
            raise ValueError(f"cache needs rows >= 1 and length >= 1, got rows={rows} length={length}")
        shape = (cfg.n_layers, rows, length, cfg.n_kv_heads, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.rows, self.length = rows, length

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

    def write(self, layer: int, rows: Tensor | None, positions: Tensor, k: Tensor, v: Tensor) -> None:
        """Store k, v (R, Q, G, D) at (rows, positions (R, Q)) of one layer."""
        if int(positions.max()) >= self.length:
            raise ValueError(f"position {int(positions.max())} beyond cache length {self.length}")
        row_idx = self._rows(rows, k.shape[0], k.device)[:, None]
        self.k[layer][row_idx, positions] = k.to(self.k.dtype)
        self.v[layer][row_idx, positions] = v.to(self.v.dtype)

    def read(self, layer: int, rows: Tensor | None, length: int, count: int) -> tuple[Tensor, Tensor]:
        """Keys and values of positions 0..length-1 for rows, each (R, length, G, D).

        rows None means the first `count` rows, read as a view without copying.
        """
        if rows is None:
            return self.k[layer, :count, :length], self.v[layer, :count, :length]
        return self.k[layer][rows, :length], self.v[layer][rows, :length]

    def _rows(self, rows: Tensor | None, count: int, device: torch.device) -> Tensor:
        if rows is None:
            return torch.arange(count, device=device)
        return rows
