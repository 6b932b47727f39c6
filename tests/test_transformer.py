"""The decoder's contracts the engine relies on: stop and continue, caching, row subsets."""

import pytest
import torch

from eesim.model import KVCache


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, 300, (3, 20), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def test_stop_at_layer_and_continue_equals_full_pass(tiny_model, tokens):
    full = tiny_model(tokens)
    for e in range(tiny_model.cfg.n_layers + 1):
        h = tiny_model.run_layers(tiny_model.embed(tokens), 0, e)
        h = tiny_model.run_layers(h, e, tiny_model.cfg.n_layers)
        torch.testing.assert_close(tiny_model.exit_logits(h), full, rtol=0, atol=0)


@torch.no_grad()
def test_cached_decoding_equals_uncached_forward(tiny_model, tokens):
    full = tiny_model(tokens)
    n = tiny_model.cfg.n_layers
    cache = tiny_model.new_cache(rows=3, length=32)
    h = tiny_model.run_layers(tiny_model.embed(tokens[:, :12]), 0, n, cache=cache, pos=0)
    steps = [tiny_model.exit_logits(h)]
    for t in range(12, 20):  # one token at a time, attending to the cache
        h = tiny_model.run_layers(tiny_model.embed(tokens[:, t : t + 1]), 0, n, cache=cache, pos=t)
        steps.append(tiny_model.exit_logits(h))
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_cached_stop_and_continue_across_calls(tiny_model, tokens):
    """Layers 0..e now and e..L in a later call give the same token as one pass."""
    full = tiny_model(tokens)
    n = tiny_model.cfg.n_layers
    cache = tiny_model.new_cache(rows=3, length=32)
    tiny_model.run_layers(tiny_model.embed(tokens[:, :19]), 0, n, cache=cache, pos=0)
    h = tiny_model.run_layers(tiny_model.embed(tokens[:, 19:]), 0, 2, cache=cache, pos=19)
    h = tiny_model.run_layers(h, 2, n, cache=cache, pos=19)
    torch.testing.assert_close(tiny_model.exit_logits(h), full[:, 19:], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_subset_of_rows_equals_full_forward_on_those_rows(tiny_model, tokens):
    full = tiny_model(tokens)
    n = tiny_model.cfg.n_layers
    torch.testing.assert_close(tiny_model(tokens[[2, 0]]), full[[2, 0]], rtol=1e-5, atol=1e-5)
    cache = tiny_model.new_cache(rows=5, length=32)
    rows = torch.tensor([4, 1])  # cache slots need not match batch order
    tiny_model.run_layers(tiny_model.embed(tokens[[0, 2], :10]), 0, n, cache=cache, rows=rows)
    h = tiny_model.run_layers(tiny_model.embed(tokens[[0, 2], 10:13]), 0, n, cache=cache,
                              rows=rows, pos=torch.tensor([10, 10]))
    torch.testing.assert_close(tiny_model.exit_logits(h), full[[0, 2], 10:13], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_rows_at_different_positions_decode_together(tiny_model, tokens):
    full = tiny_model(tokens)
    n = tiny_model.cfg.n_layers
    cache = tiny_model.new_cache(rows=2, length=32)
    tiny_model.run_layers(tiny_model.embed(tokens[:1, :8]), 0, n, cache=cache, rows=torch.tensor([0]))
    tiny_model.run_layers(tiny_model.embed(tokens[1:2, :15]), 0, n, cache=cache, rows=torch.tensor([1]))
    step = torch.stack([tokens[0, 8:9], tokens[1, 15:16]])
    h = tiny_model.run_layers(tiny_model.embed(step), 0, n, cache=cache, pos=torch.tensor([8, 15]))
    logits = tiny_model.exit_logits(h)
    torch.testing.assert_close(logits[0, 0], full[0, 8], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits[1, 0], full[1, 15], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_fill_kv_writes_only_keys_and_values_of_skipped_layers(tiny_model, tokens):
    n = tiny_model.cfg.n_layers
    cache = tiny_model.new_cache(rows=3, length=32)
    h = tiny_model.run_layers(tiny_model.embed(tokens[:, :1]), 0, 2, cache=cache)
    assert cache.k[2:, :, 0].abs().sum() == 0
    tiny_model.fill_kv(h, 2, n, cache)
    block = tiny_model.layers[2]
    pos = tiny_model.positions(3, 1)
    k, _ = block.attn.keys_values(block.attn_norm(h), tiny_model.rope_cos[pos], tiny_model.rope_sin[pos])
    torch.testing.assert_close(cache.k[2, :, 0], k[:, 0])
    assert cache.k[2:, :, 1:].abs().sum() == 0


def test_out_of_range_layers_and_positions_are_refused(tiny_model, tokens):
    with pytest.raises(ValueError, match="layer range 0..9"):
        tiny_model.run_layers(tiny_model.embed(tokens), 0, 9)
    cache = tiny_model.new_cache(rows=3, length=8)
    with pytest.raises(ValueError, match="beyond cache length 8"):
        tiny_model.run_layers(tiny_model.embed(tokens), 0, 1, cache=cache)
    with pytest.raises(ValueError, match="rows >= 1"):
        KVCache(tiny_model.cfg, 0, 8)
