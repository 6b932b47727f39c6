"""Model shapes by name: the reference model, Llama presets, or any Hugging Face config.json.

Shape-only models carry random weights and serve for timing: a layer of Llama-3-8B costs what it
costs whatever its weights are.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from eesim.model.config import ModelConfig

PRESETS: dict[str, ModelConfig] = {
    "llama-3.2-1b": ModelConfig(vocab_size=128256, dim=2048, n_layers=16, n_heads=32,
                                n_kv_heads=8, ffn_dim=8192, max_seq_len=131072,
                                rope_theta=500000.0, tie_embeddings=True),
    "llama-3-8b": ModelConfig(vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                              ffn_dim=14336, max_seq_len=8192, rope_theta=500000.0,
                              tie_embeddings=False),
    "llama-2-7b": ModelConfig(vocab_size=32000, dim=4096, n_layers=32, n_heads=32, n_kv_heads=32,
                              ffn_dim=11008, max_seq_len=4096, tie_embeddings=False),
}
MODEL_NAMES = ("ref", *PRESETS, "hf:CONFIG.json")


def model_shape(name: str) -> ModelConfig:
    """The shape for a model name: 'ref', a preset, or 'hf:path/to/config.json'."""
    if name == "ref":
        from eesim.model.checkpoint import CONFIG, REFERENCE_DIR

        doc = json.loads((REFERENCE_DIR / CONFIG).read_text())
        return ModelConfig(**doc["model"])
    if name in PRESETS:
        return PRESETS[name]
    if name.startswith("hf:"):
        return from_hf_config(Path(name[3:]))
    raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")


def from_hf_config(path: Path) -> ModelConfig:
    """Translate a Llama-family Hugging Face config.json into a ModelConfig."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: no such config file") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    fields = {"vocab_size": "vocab_size", "dim": "hidden_size", "n_layers": "num_hidden_layers",
              "n_heads": "num_attention_heads", "ffn_dim": "intermediate_size"}
    missing = [hf for hf in fields.values() if hf not in doc]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing} (a Llama-style config is needed)")
    kwargs = {ours: doc[hf] for ours, hf in fields.items()}
    kwargs["n_kv_heads"] = doc.get("num_key_value_heads", doc["num_attention_heads"])
    kwargs["max_seq_len"] = doc.get("max_position_embeddings", 4096)
    kwargs["rope_theta"] = doc.get("rope_theta", 10000.0)
    kwargs["norm_eps"] = doc.get("rms_norm_eps", 1e-5)
    kwargs["tie_embeddings"] = doc.get("tie_word_embeddings", False)
    try:
        return ModelConfig(**kwargs)
    except ValidationError as exc:
        raise ValueError(f"{path}: {exc.errors()[0]['msg']}") from exc
