"""The reference model's tokenizer: byte-level BPE trained locally with `tokenizers`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS = "<|eos|>"
TASK_TOKENS = {"prose": "<|prose|>", "code": "<|code|>", "json": "<|json|>"}
SPECIAL_TOKENS = [EOS, *TASK_TOKENS.values()]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> Tokenizer:
    """Byte-level BPE over `texts`; every byte is in the alphabet, so nothing is unknown."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load_tokenizer(path: Path) -> Tokenizer:
    """A tokenizer saved by `save_tokenizer`; a broken file fails naming the path."""
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises plain Exception subclasses
        raise ValueError(f"{path}: not a valid tokenizer file ({exc})") from exc


def save_tokenizer(tok: Tokenizer, path: Path) -> None:
    """Write atomically: a temporary file renamed into place."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tok.save(str(tmp))
    tmp.replace(path)
