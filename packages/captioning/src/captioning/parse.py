"""Defensive parsing of an LLM answer into a list of caption strings."""

from __future__ import annotations

import json
import re

_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)


class CaptionParseError(ValueError):
    """The answer holds no JSON object/array of captions."""


def _candidates(text: str) -> list[str]:
    """Texts to try in order: fenced blocks first, then the whole answer."""
    return [m.group(1) for m in _FENCE.finditer(text)] + [text]


def _decode_first(text: str) -> object:
    """Decode the first JSON value starting at the first '{' or '[' (ignores text before and after)."""
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                value, _ = decoder.raw_decode(text, i)
                return value
            except json.JSONDecodeError:
                continue
    raise CaptionParseError("no JSON value found")


def _captions_of(value: object) -> list[str] | None:
    if isinstance(value, dict):
        for key in ("captions", "caption", "descriptions"):
            if key in value:
                return _captions_of(value[key])
        return None
    if isinstance(value, list):
        out = [v for v in value if isinstance(v, str)]
        return out or None
    if isinstance(value, str):
        return [value]
    return None


def parse_captions(text: str | None) -> list[str]:
    """Captions from an answer such as '{"captions": [...]}', a bare JSON list, either inside a code fence,
    with text before or after. Raises CaptionParseError when none are found."""
    if not text or not text.strip():
        raise CaptionParseError("empty answer")
    for cand in _candidates(text):
        try:
            caps = _captions_of(_decode_first(cand))
        except CaptionParseError:
            continue
        if caps:
            return caps
    raise CaptionParseError(f"no captions in answer: {text[:80]!r}")
