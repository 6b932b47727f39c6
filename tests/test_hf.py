"""HFExitModel over a tiny random Llama built in-process (no download, no network)."""

from __future__ import annotations

import hashlib

import pytest
import torch

transformers = pytest.importorskip("transformers")

from eesim.model.hf import HFExitModel, load_hf_exit_model, safetensors_sha256  # noqa: E402
from eesim.trace.record import Request, record  # noqa: E402

PROMPTS = [[5, 6, 7, 8, 9, 10], [11, 12], [3]]


@pytest.fixture
def llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=3, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(cfg).eval()


def own_logits(model, prompt: list[int]) -> torch.Tensor:
    """The model's last-position logits for one unpadded prompt, with no cache."""
    with torch.no_grad():
        return model(torch.tensor([prompt])).logits[0, -1]


def test_last_exit_is_the_models_own_logits(llama):
    exits = HFExitModel(llama).start([PROMPTS[0]], max_new_tokens=1)
    assert exits.shape == (1, 3, 128)
    torch.testing.assert_close(exits[0, -1], own_logits(llama, PROMPTS[0]), atol=1e-5, rtol=0)


def test_early_exit_is_lm_head_over_final_norm(llama):
    exits = HFExitModel(llama).start([PROMPTS[0]], max_new_tokens=1)
    with torch.no_grad():
        hidden = llama(torch.tensor([PROMPTS[0]]), output_hidden_states=True).hidden_states
        for layer in (1, 2):
            by_hand = llama.lm_head(llama.model.norm(hidden[layer][0, -1]))
            torch.testing.assert_close(exits[0, layer - 1], by_hand, atol=1e-5, rtol=0)


def test_padded_batch_matches_each_prompt_alone(llama):
    batch = HFExitModel(llama)
    first, second = batch.start(PROMPTS, 2), batch.advance(torch.tensor([1, 2, 4]))
    for row, (prompt, token) in enumerate(zip(PROMPTS, [1, 2, 4], strict=True)):
        alone = HFExitModel(llama)
        torch.testing.assert_close(first[row], alone.start([prompt], 2)[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(second[row], alone.advance(torch.tensor([token]))[0],
                                   atol=1e-5, rtol=0)


def test_greedy_record_matches_a_plain_greedy_loop(llama):
    requests = [Request(i, "chat", p) for i, p in enumerate(PROMPTS)]
    trace = record(HFExitModel(llama), requests, max_new_tokens=5)
    assert trace.meta.exit_layers == [1, 2, 3] and trace.meta.model_name == "hf"
    tokens = trace.tokens()
    for req in requests:
        ids = list(req.prompt)
        for _ in range(5):
            ids.append(int(own_logits(llama, ids).argmax()))
        recorded = tokens.loc[tokens["request_id"] == req.request_id, "token"].tolist()
        assert recorded == ids[len(req.prompt):]
    assert tokens["token_text"].iloc[0] == f"<{tokens['token'].iloc[0]}>"


def test_load_a_saved_folder(llama, tmp_path, tiny_tokenizer):
    llama.save_pretrained(tmp_path)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tiny_tokenizer)
    fast.save_pretrained(tmp_path)
    files = sorted(tmp_path.glob("*.safetensors"))
    assert files
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()

    loaded = load_hf_exit_model(str(tmp_path))
    assert loaded.sha256 == digest and loaded.name == str(tmp_path)
    torch.testing.assert_close(loaded.start(PROMPTS, 1), HFExitModel(llama).start(PROMPTS, 1),
                               atol=1e-5, rtol=0)
    assert loaded.token_text(70) == tiny_tokenizer.decode([70], skip_special_tokens=False)


def test_identity_without_files_is_the_state_dict_hash(llama):
    before = HFExitModel(llama).sha256
    assert HFExitModel(llama).sha256 == before
    assert HFExitModel(llama, sha256="abc").sha256 == "abc"
    with torch.no_grad():
        llama.model.norm.weight.add_(1.0)
    assert HFExitModel(llama).sha256 != before


def test_a_missing_path_names_it_and_the_hub(tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ValueError, match="no-such-model.*hub is not reachable"):
        load_hf_exit_model(missing)


def test_pickle_checkpoints_are_refused(llama, tmp_path):
    llama.config.save_pretrained(tmp_path)
    torch.save(llama.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=str(tmp_path)):
        load_hf_exit_model(str(tmp_path))


def test_a_model_without_a_final_norm_is_named(llama):
    del llama.model.norm
    with pytest.raises(ValueError, match="LlamaForCausalLM"):
        HFExitModel(llama)


def test_trace_cli_records_from_a_local_hf_folder(tmp_path, tiny_tokenizer):
    """`eesim trace --hf PATH` on a saved tiny Llama whose vocabulary matches its tokenizer."""
    import json

    from typer.testing import CliRunner

    from eesim.cli import app
    from eesim.trace import read_trace

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=tiny_tokenizer.get_vocab_size(), hidden_size=32,
                                      intermediate_size=64, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=2)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
    transformers.PreTrainedTokenizerFast(tokenizer_object=tiny_tokenizer).save_pretrained(
        tmp_path / "hf")
    out = CliRunner().invoke(app, ["trace", "--hf", str(tmp_path / "hf"), "--requests", "2",
                                   "--max-new-tokens", "3", "--prompt-tokens", "8",
                                   "--out", str(tmp_path / "t.parquet")])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout.splitlines()[-1])["requests_by_task"] == {
        "code": 2, "json": 2, "prose": 2}
    trace = read_trace(tmp_path / "t.parquet")
    assert trace.meta.n_layers == 3 and trace.meta.exit_layers == [1, 2, 3]
    assert trace.meta.model_sha256 == safetensors_sha256(tmp_path / "hf")
