"""Token classes: what kind of text a token is, so policies can forbid risky classes from exiting."""

from __future__ import annotations

import keyword
import re

TOKEN_CLASSES = ("whitespace", "punctuation", "number", "keyword", "identifier", "string",
                 "word", "other")

_NUMBER = re.compile(r"^[+-]?(\d[\d_]*\.?\d*([eE][+-]?\d+)?|\.\d+)$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WORD = re.compile(r"^[^\W\d_]+(['’][^\W\d_]+)?$")
_QUOTES = "\"'`“”‘’"
_PROSE_KEYWORDS = {"True", "False", "None"}


def token_class(text: str) -> str:
    """Class of a token's text, judged on the text stripped of surrounding whitespace.

    "string" covers quotes and quoted fragments (the part of a JSON record that breaks when it
    exits early); "identifier" covers names with an underscore, a digit or mixed case that are
    not plain words; "keyword" is a Python keyword. Everything else falls to "other".
    """
    core = text.strip()
    if not core:
        return "whitespace"
    if any(q in core for q in _QUOTES) and not _WORD.match(core):
        return "string"
    if _NUMBER.match(core):
        return "number"
    if all(not c.isalnum() for c in core):
        return "punctuation"
    if keyword.iskeyword(core) or core in _PROSE_KEYWORDS:
        return "keyword"
    if _WORD.match(core) and not ("_" in core or (core[1:] != core[1:].lower() and not core.isupper())):
        return "word"
    if _IDENT.match(core):
        return "identifier"
    return "other"
