"""Product-level quality: do generated JSON records still parse, with the same keys, under a policy?

Token agreement can look fine while a product breaks: punctuation exits early with confidence,
a quoted identifier does not, and the record stops validating. For each `json` request, the
prompt text plus the generated text is cut at the end of the first complete JSON object; the
full-depth version and the policy's version (exit tokens substituted, teacher-forced) are parsed.
"""

from __future__ import annotations

import json

import numpy as np

from eesim.model.tokenizer import TASK_TOKENS

_DECODER = json.JSONDecoder()


def first_record(text: str) -> dict | None:
    """The first complete JSON object in `text`, or None when there is none."""
    start = text.find("{")
    if start == -1:
        return None
    try:
        value, _ = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def json_validity(trace, result, mask: np.ndarray, task: str = "json") -> dict:
    """Share of records that parse at full depth, and of those, the share that still parse
    and keep the same top-level keys under the replayed policy."""
    tokens = result.tokens
    is_task = (tokens["task"].astype(str).to_numpy() == task) & mask
    if not is_task.any():
        return {"records": 0}
    top1_text = trace.matrix("top1_text")
    layers = np.asarray(trace.meta.exit_layers)
    exit_col = np.searchsorted(layers, result.exit_layer)
    exit_text = top1_text[np.arange(len(exit_col)), exit_col]
    full_text = top1_text[:, -1]
    ok_full = kept = 0
    ids = tokens["request_id"].to_numpy()
    for rid in np.unique(ids[is_task]):
        sel = np.flatnonzero((ids == rid) & is_task)
        prompt = str(tokens["prompt_text"].iloc[sel[0]]).replace(TASK_TOKENS[task], "")
        full = first_record(prompt + "".join(full_text[sel]))
        if full is None:
            continue
        ok_full += 1
        exited = first_record(prompt + "".join(exit_text[sel]))
        kept += exited is not None and exited.keys() == full.keys()
    records = int(len(np.unique(ids[is_task])))
    return {"records": records, "parse_at_full_depth": round(ok_full / records, 4),
            "kept_under_policy": round(kept / ok_full, 4) if ok_full else None}
