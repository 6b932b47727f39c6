"""Checkpoints: safetensors weights, a JSON config and the tokenizer, in one folder.

The sha256 of `model.safetensors` is the model's identity: traces, policies and profiles record
it, and `config.json` records it too so that a corrupted or swapped weights file is caught on load.
Nothing here unpickles: safetensors and JSON only.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from eesim.model.config import ModelConfig
from eesim.model.tokenizer import load_tokenizer, save_tokenizer
from eesim.model.transformer import EarlyExitLM

WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.json"
FORMAT_VERSION = 1
REFERENCE_DIR = Path(__file__).parent / "assets" / "ref"


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded as it is; the message names file and field."""


@dataclass
class Checkpoint:
    """A loaded model with its tokenizer, identity and the metadata it was saved with."""

    model: EarlyExitLM
    tokenizer: Any
    sha256: str
    metadata: dict
    path: Path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(
    model: EarlyExitLM, tokenizer: Any, folder: Path, metadata: dict | None = None,
    dtype: torch.dtype = torch.float16,
) -> str:
    """Write weights (in `dtype`), config and tokenizer into `folder`; return the sha256.

    Each file is written to a temporary name and renamed, weights first and config last, so a
    folder interrupted mid-save never passes the hash check.
    """
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()
             if not (model.cfg.tie_embeddings and k == "lm_head.weight")}
    tmp = folder / (WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format": "eesim", "format_version": str(FORMAT_VERSION)})
    os.chmod(tmp, 0o644)
    os.replace(tmp, folder / WEIGHTS)
    save_tokenizer(tokenizer, folder / TOKENIZER)
    sha = file_sha256(folder / WEIGHTS)
    doc = {"format_version": FORMAT_VERSION, "model": model.cfg.model_dump(),
           "storage_dtype": str(dtype).removeprefix("torch."), "sha256": sha,
           "tokenizer_sha256": file_sha256(folder / TOKENIZER), "metadata": metadata or {}}
    tmp = folder / (CONFIG + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, folder / CONFIG)
    return sha


def load_checkpoint(folder: Path | str = REFERENCE_DIR, device: str = "cpu",
                    dtype: torch.dtype = torch.float32) -> Checkpoint:
    """Load and verify a checkpoint folder; any mismatch raises CheckpointError naming it."""
    folder = Path(folder)
    doc = _read_config(folder / CONFIG)
    weights = folder / WEIGHTS
    if not weights.exists():
        raise CheckpointError(f"{weights}: missing")
    sha = file_sha256(weights)
    if sha != doc.get("sha256"):
        raise CheckpointError(
            f"{weights}: sha256 {sha[:16]}… does not match {folder / CONFIG} field "
            f"'sha256' {str(doc.get('sha256'))[:16]}… (corrupted or swapped weights)")
    try:
        cfg = ModelConfig(**doc["model"])
    except (KeyError, TypeError, ValidationError) as exc:
        raise CheckpointError(f"{folder / CONFIG}: field 'model' is invalid: {exc}") from exc
    try:
        state = load_file(str(weights), device=device)
    except SafetensorError as exc:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({exc})") from exc
    model = EarlyExitLM(cfg).to(device)
    _check_state(model, state, weights)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)
    model.to(dtype).eval()
    tokenizer = load_tokenizer(folder / TOKENIZER)
    if tokenizer.get_vocab_size() != cfg.vocab_size:
        raise CheckpointError(
            f"{folder / TOKENIZER}: vocabulary {tokenizer.get_vocab_size()} does not match "
            f"{folder / CONFIG} field 'model.vocab_size' {cfg.vocab_size}")
    return Checkpoint(model, tokenizer, sha, doc.get("metadata", {}), folder)


def _read_config(path: Path) -> dict:
    if not path.exists():
        raise CheckpointError(f"{path}: missing")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc
    version = doc.get("format_version") if isinstance(doc, dict) else doc
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: field 'format_version' is {version!r}, expected {FORMAT_VERSION}")
    return doc


def _check_state(model: EarlyExitLM, state: dict, weights: Path) -> None:
    expected = {k: v.shape for k, v in model.state_dict().items()
                if not (model.cfg.tie_embeddings and k == "lm_head.weight")}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{weights}: tensors missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, shape in expected.items():
        if tuple(state[name].shape) != tuple(shape):
            raise CheckpointError(
                f"{weights}: tensor '{name}' has shape {tuple(state[name].shape)}, "
                f"config expects {tuple(shape)}")
