"""Key/value caches: preallocated per row (KVCache), or in blocks from a pool (PagedKVCache)."""

from __future__ import annotations

import math
import mmap

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


class PagedKVCache:
    """A KV cache in fixed-size blocks, as a serving engine keeps it (vLLM's paged attention).

    Storage is a pool of `blocks` blocks of `block_tokens` positions for every layer; a slot
    (one running sequence) owns the blocks its block table lists, taken from the pool as it
    grows and returned when it ends, so memory in use follows the tokens held, the quantity
    the scheduler admits by. Reads gather a slot's blocks. On CPU the pool is an anonymous
    mapping: a page becomes resident when first written, so the process's high-water mark
    measures the blocks actually used. Same `write`/`read` as `KVCache`.
    """

    def __init__(self, cfg: ModelConfig, blocks: int, block_tokens: int, slots: int, length: int, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        if blocks < 1 or block_tokens < 1 or slots < 1 or length < 1:
            raise ValueError(f"paged cache needs blocks, block_tokens, slots and length >= 1, got "
                             f"{blocks}, {block_tokens}, {slots}, {length}")
        self.block_tokens, self.length, self.rows = block_tokens, length, slots
        # one block more: the sink that positions no slot owns point at (a padded row's
        # writes past its own tokens land there; reads of it are masked)
        shape = (cfg.n_layers, blocks + 1, block_tokens, cfg.n_kv_heads, cfg.head_dim)
        self.sink = blocks
        self._maps: list[mmap.mmap] = []
        self.k, self.v = (self._pool(shape, dtype, torch.device(device)) for _ in range(2))
        per_slot = -(-length // block_tokens)
        self.table = torch.full((slots, per_slot), blocks, dtype=torch.long, device=device)
        self.owned = [0] * slots
        self.free = list(range(blocks - 1, -1, -1))  # pop() hands out the lowest block first

    def _pool(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        if device.type != "cpu":
            return torch.zeros(shape, dtype=dtype, device=device)
        size = math.prod(shape) * torch.finfo(dtype).bits // 8
        mapping = mmap.mmap(-1, size)  # zero pages, resident only once written
        self._maps.append(mapping)
        return torch.frombuffer(mapping, dtype=dtype).view(shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the whole pool, sink included (reserved; `used_bytes` is what slots hold)."""
        return self.k.numel() * self.k.element_size() * 2

    @property
    def block_bytes(self) -> int:
        return self.k[:, 0].numel() * self.k.element_size() * 2

    @property
    def used_bytes(self) -> int:
        return sum(self.owned) * self.block_bytes

    def reserve(self, slot: int, tokens: int) -> None:
        """Give `slot` blocks for positions 0..tokens-1."""
        need = -(-min(tokens, self.length) // self.block_tokens)
        if need - self.owned[slot] > len(self.free):
            raise MemoryError(f"KV pool exhausted: slot {slot} needs {need - self.owned[slot]} more "
                              f"blocks, {len(self.free)} free")
        for i in range(self.owned[slot], need):
            self.table[slot, i] = self.free.pop()
        self.owned[slot] = max(self.owned[slot], need)

    def release(self, slot: int) -> None:
        """Return the slot's blocks to the pool."""
        self.free.extend(self.table[slot, :self.owned[slot]].flip(0).tolist())
        self.table[slot] = self.sink
        self.owned[slot] = 0

    def write(self, layer: int, rows: Tensor | None, positions: Tensor, k: Tensor, v: Tensor) -> None:
        """Store k, v (R, Q, G, D) at (slots `rows`, positions (R, Q)) of one layer."""
        if int(positions.max()) >= self.length:
            raise ValueError(f"position {int(positions.max())} beyond cache length {self.length}")
        slots = torch.arange(k.shape[0], device=k.device) if rows is None else rows
        block = self.table[slots[:, None], positions // self.block_tokens]
        offset = positions % self.block_tokens
        self.k[layer][block, offset] = k.to(self.k.dtype)
        self.v[layer][block, offset] = v.to(self.v.dtype)

    def read(self, layer: int, rows: Tensor | None, length: int, count: int) -> tuple[Tensor, Tensor]:
        """Keys and values of positions 0..length-1 of each slot, each (R, length, G, D): the
        slots' blocks gathered (positions a slot does not hold are masked by the caller)."""
        slots = torch.arange(count, device=self.table.device) if rows is None else rows
        blocks = self.table[slots, :-(-length // self.block_tokens)]
        r, nb = blocks.shape
        k = self.k[layer][blocks].reshape(r, nb * self.block_tokens, *self.k.shape[3:])
        v = self.v[layer][blocks].reshape(r, nb * self.block_tokens, *self.v.shape[3:])
        return k[:, :length], v[:, :length]
