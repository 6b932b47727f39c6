"""Prompts for trace recording, cut deterministically from the model's held-out split.

prose and code: a window of `prompt_tokens` tokens starting at a seeded offset inside a held-out
document. json: the first lines of a held-out record (its opening brace and first field or two),
so that the model has to finish the record and the result can be parsed. Prompts never end in
a newline: byte-level BPE merges a newline with the indentation after it, so a prompt cut after
"\n" ends on a token the model only ever saw before a closing brace.
"""

from __future__ import annotations

import random
from pathlib import Path

from eesim.model.corpus import Document, read_heldout
from eesim.model.tokenizer import TASK_TOKENS
from eesim.trace.record import Request


def heldout_prompts(heldout: Path, tokenizer, tasks: list[str], per_task: int,
                    prompt_tokens: int = 64, seed: int = 0) -> list[Request]:
    """`per_task` requests for each task, numbered in task order, from held-out documents."""
    docs = read_heldout(heldout)
    unknown = sorted(set(tasks) - set(TASK_TOKENS))
    if unknown:
        raise ValueError(f"unknown task classes {unknown}; known: {sorted(TASK_TOKENS)}")
    rng = random.Random(seed)
    requests: list[Request] = []
    for task in tasks:
        pool = [d for d in docs if d.task == task]
        if not pool:
            raise ValueError(f"{heldout}: no held-out documents of task '{task}'")
        picks = rng.sample(pool, per_task) if per_task <= len(pool) else \
            [rng.choice(pool) for _ in range(per_task)]
        for doc in picks:
            text = _prompt_text(doc, tokenizer, prompt_tokens, rng)
            ids = [tokenizer.token_to_id(TASK_TOKENS[task]), *tokenizer.encode(text).ids]
            requests.append(Request(len(requests), task, ids, TASK_TOKENS[task] + text))
    return requests


def _prompt_text(doc: Document, tokenizer, prompt_tokens: int, rng: random.Random) -> str:
    if doc.task == "json":  # the opening brace and a field or two; no trailing newline, since
        lines = doc.text.splitlines(keepends=True)  # BPE merges "\n" with the next indent
        return "".join(lines[: 1 + rng.randint(1, 2)]).rstrip("\n")
    ids = tokenizer.encode(doc.text).ids
    start = rng.randrange(0, max(1, len(ids) - prompt_tokens))
    text = tokenizer.decode(ids[start : start + prompt_tokens])
    return text
