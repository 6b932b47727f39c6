"""Checkpoints and tokenizers survive a round trip; damaged ones fail naming what is wrong."""

import json

import pytest
import torch

from eesim.model import CheckpointError, EarlyExitLM, ModelConfig, load_checkpoint, save_checkpoint
from eesim.model.tokenizer import load_tokenizer, save_tokenizer


@pytest.fixture
def saved(tmp_path, tiny_model, tiny_tokenizer):
    folder = tmp_path / "ckpt"
    sha = save_checkpoint(tiny_model, tiny_tokenizer, folder, {"note": "tiny"}, dtype=torch.float32)
    return folder, sha


def test_safetensors_round_trip_gives_identical_logits(saved, tiny_model):
    folder, sha = saved
    ckpt = load_checkpoint(folder)
    tokens = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(ckpt.model(tokens), tiny_model(tokens), rtol=0, atol=0)
    assert ckpt.sha256 == sha and ckpt.metadata == {"note": "tiny"}
    assert ckpt.model.lm_head.weight.data_ptr() == ckpt.model.tok_emb.weight.data_ptr()


def test_half_precision_storage_stays_close(tmp_path, tiny_model, tiny_tokenizer):
    save_checkpoint(tiny_model, tiny_tokenizer, tmp_path / "half")
    assert (tmp_path / "half" / "model.safetensors").stat().st_size < 0.6 * sum(
        p.numel() * 4 for p in tiny_model.parameters())
    tokens = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(tmp_path / "half").model(tokens),
                                   tiny_model(tokens), rtol=0.02, atol=0.02)


def test_tokenizer_round_trip(tmp_path, tiny_tokenizer):
    text = 'def add(a, b):\n    return {"sum": a + b}  # To be.\n'
    ids = tiny_tokenizer.encode(text).ids
    assert tiny_tokenizer.decode(ids) == text
    save_tokenizer(tiny_tokenizer, tmp_path / "tok.json")
    assert load_tokenizer(tmp_path / "tok.json").encode(text).ids == ids


def test_corrupted_weights_fail_the_hash_check(saved):
    folder, _ = saved
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model.safetensors: sha256 .* does not match"):
        load_checkpoint(folder)


def test_weights_of_another_shape_are_refused_naming_the_tensor(saved, tiny_tokenizer, tmp_path):
    folder, _ = saved
    other = EarlyExitLM(ModelConfig(vocab_size=300, dim=32, n_layers=4, n_heads=4, n_kv_heads=2,
                                    ffn_dim=128, max_seq_len=64))
    save_checkpoint(other, tiny_tokenizer, tmp_path / "other", dtype=torch.float32)
    config = json.loads((folder / "config.json").read_text())
    other_config = json.loads((tmp_path / "other" / "config.json").read_text())
    config["sha256"] = other_config["sha256"]  # a weights file swapped in with its hash
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=r"tensor 'tok_emb.weight' has shape \(300, 32\)"):
        load_checkpoint(folder)


def test_missing_or_malformed_config_is_named(saved):
    folder, _ = saved
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        load_checkpoint(folder)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json: missing"):
        load_checkpoint(folder)


def test_invalid_shape_in_config_is_refused():
    with pytest.raises(ValueError, match="n_heads=3 is not divisible by n_kv_heads=2"):
        ModelConfig(n_heads=3, n_kv_heads=2, dim=96)
