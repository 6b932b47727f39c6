"""Hugging Face causal LMs as `ExitModel`s: every layer read through the model's own exit head.

An exit at layer e (1-based) is `lm_head(final_norm(hidden state after layer e))`, the shared
head that LayerSkip checkpoints (Llama) are trained to exit through; the last exit is the
model's own logits. `transformers` is an optional extra (`pip install 'eesim[hf]'`) and is
imported only when needed. Nothing here touches the network: loading is local files only.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

# Where decoder-only models keep their final norm, on the base model (`model.model` for Llama).
NORM_NAMES = ("norm", "final_layernorm", "ln_f", "final_layer_norm")


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise ImportError("Hugging Face models need transformers: pip install 'eesim[hf]'") from exc
    return transformers


class HFExitModel:
    """ExitModel over a Hugging Face causal LM (Llama, Mistral, Qwen2 and similar).

    Rows decode together: `start` left-pads the prompts, masks the padding and gives each row
    explicit position ids, so a padded row sees exactly what it would see alone; the KV cache
    (a `DynamicCache`) grows by one position per `advance`. Exits 1..n-1 apply the final norm
    and `lm_head` to the hidden state after that layer; exit n is the model's logits, so any
    final logit scaling or soft-capping a model has applies to the last exit only.

    Identity (`sha256`) is the argument when given, otherwise a hash of the state dict's tensor
    bytes in name order (`load_hf_exit_model` passes the hash of the checkpoint files instead).
    Raises ValueError, naming the model class, when no final norm or `lm_head` can be found.
    """

    def __init__(self, model: Any, tokenizer: Any = None, name: str = "hf",
                 sha256: str | None = None) -> None:
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.norm, self.head = _exit_head(model)
        self.sha256 = sha256 or state_dict_sha256(model)
        self.n_layers = int(model.config.num_hidden_layers)
        self.exit_layers = list(range(1, self.n_layers + 1))
        params = inspect.signature(model.forward).parameters
        # transformers 5.x renamed `past_key_values` to `cache`; an unknown name would be ignored.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keep_last = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self.cache = None
        self.mask: Tensor | None = None  # (R, positions so far): 0 on left padding
        self.lengths: Tensor | None = None  # (R,) real tokens per row so far

    def start(self, prompts: list[list[int]], max_new_tokens: int) -> Tensor:
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError(f"every prompt needs at least one token, got lengths "
                             f"{[len(p) for p in prompts]}")
        width = max(len(p) for p in prompts)
        tokens = torch.zeros(len(prompts), width, dtype=torch.long)  # pad id is masked out
        self.mask = torch.zeros(len(prompts), width, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            tokens[row, width - len(prompt):] = torch.tensor(prompt)
            self.mask[row, width - len(prompt):] = 1
        self.lengths = self.mask.sum(1)
        positions = (self.mask.cumsum(1) - 1).clamp_min(0)  # (R, T); padding sits at 0
        self.cache = _transformers().DynamicCache(config=self.model.config)
        return self._all_exits(tokens, positions)

    def advance(self, tokens: Tensor) -> Tensor:
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        logits = self._all_exits(tokens.long()[:, None], self.lengths[:, None])
        self.lengths = self.lengths + 1
        return logits

    def token_text(self, token_id: int) -> str:
        if self.tokenizer is None:
            return f"<{token_id}>"
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    @torch.no_grad()
    def _all_exits(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """(R, L, V) float exit logits at the chunk's last position, on the CPU."""
        device = self.model.device
        out = self.model(input_ids=tokens.to(device), attention_mask=self.mask.to(device),
                         position_ids=positions.to(device), use_cache=True,
                         output_hidden_states=True, **{self._cache_arg: self.cache},
                         **self._keep_last)
        # hidden_states: embeddings first, then one per layer; the last is already normed.
        inner = torch.stack([h[:, -1] for h in out.hidden_states[1:-1]], dim=1)  # (R, L-1, H)
        early = self.head(self.norm(inner))  # (R, L-1, V)
        final = out.logits[:, -1:]  # (R, 1, V)
        return torch.cat([early, final.to(early.dtype)], dim=1).float().cpu()


def _exit_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The model's final norm and lm_head, which together make its shared exit head."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    norms = [getattr(base, n) for n in NORM_NAMES if isinstance(getattr(base, n, None), nn.Module)]
    if head is None or not norms:
        raise ValueError(f"{type(model).__name__}: cannot find a final norm (looked for "
                         f"{', '.join(NORM_NAMES)} on the base model) and an lm_head to use as "
                         f"the exit head; HFExitModel supports decoder-only LMs like Llama")
    return norms[0], head


def state_dict_sha256(model: nn.Module) -> str:
    """sha256 over the state dict's tensor bytes, in name order."""
    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        flat = state[name].detach().cpu().contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def safetensors_sha256(folder: Path) -> str:
    """sha256 over a folder's `*.safetensors` files, sorted by name and hashed in order."""
    h = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.safetensors")):
        with open(path, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def load_hf_exit_model(name_or_path: str, dtype: torch.dtype = torch.float32,
                       device: str = "cpu") -> HFExitModel:
    """Load a local safetensors checkpoint (and its tokenizer, if it has one) as an ExitModel.

    Only local files are read: a folder, or a hub id already in the local Hugging Face cache.
    Pickle (`.bin`) checkpoints are refused. Any failure raises ValueError naming the path.
    """
    transformers = _transformers()
    is_folder = Path(name_or_path).is_dir()
    # transformers 5 renamed `torch_dtype` to `dtype`.
    dtype_arg = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            name_or_path, local_files_only=True, use_safetensors=True, **{dtype_arg: dtype})
    except (OSError, ValueError) as exc:
        where = "" if is_folder else "; it is not a local folder and the hub is not reachable here"
        raise ValueError(f"cannot load a safetensors causal LM from {name_or_path!r}{where} "
                         f"({exc})") from exc
    sha = safetensors_sha256(Path(name_or_path)) if is_folder else None
    return HFExitModel(model.to(device), _load_tokenizer(name_or_path), name=name_or_path,
                       sha256=sha)


def _load_tokenizer(name_or_path: str) -> Any:
    """The checkpoint's tokenizer, or None when it has none (token text is then `<id>`)."""
    try:
        return _transformers().AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
    except (OSError, ValueError):
        return None
