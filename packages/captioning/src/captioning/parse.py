"""Defensive parsing of an LLM reply: the HTTP body into the answer text, the answer text into captions.

Nothing a server sends can raise anything but the two errors below: a body that is not JSON, an HTML page,
JSON without `choices`, wrong types, JSON nested deeper than Python's decoder recurses, or an answer longer
than any caption answer can be, all become a :class:`MalformedReplyError` or :class:`CaptionParseError` with
a short reason (counted by the client, then retried, then a fallback).
"""

from __future__ import annotations

import json
import re

_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
MAX_ANSWER_CHARS = 16_384  # an answer of N <= 13-word captions is a few hundred characters
MAX_DECODE_STARTS = 32  # positions at which a JSON value is tried per candidate text (bounds the work)


class CaptionParseError(ValueError):
    """The answer holds no JSON object/array of captions."""


class _TooDeepError(CaptionParseError):
    """JSON nested deeper than the decoder recurses: no later start position can do better."""


class MalformedReplyError(ValueError):
    """The HTTP 200 body is not a chat completion (not JSON, no `choices`, wrong types, nested too deep)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason  # short code: not_json | too_deep | no_choices | no_message | content_type


def _json_loads(text: str | bytes) -> object:
    """json.loads that reports deep nesting as a value error (the C decoder raises RecursionError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise MalformedReplyError("too_deep", "JSON nested deeper than the decoder allows") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedReplyError("not_json", str(exc)[:80]) from None


def completion_content(body: bytes) -> str | None:
    """The first choice's `message.content` of a chat-completion body (None: the model said nothing).

    Raises MalformedReplyError when the body is not a chat completion."""
    data = _json_loads(body)
    if not isinstance(data, dict):
        raise MalformedReplyError("not_a_completion", f"top-level JSON {type(data).__name__}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedReplyError("no_choices", f"choices is {type(choices).__name__}")
    first = choices[0]
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        raise MalformedReplyError("no_message", f"choices[0].message is {type(message).__name__}")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise MalformedReplyError("content_type", f"message.content is {type(content).__name__}")
    return content


def _candidates(text: str) -> list[str]:
    """Texts to try in order: fenced blocks first, then the whole answer."""
    return [m.group(1) for m in _FENCE.finditer(text)] + [text]


def _decode_first(text: str) -> object:
    """Decode the first JSON value starting at one of the first '{' or '[' (ignores text before/after)."""
    decoder = json.JSONDecoder()
    starts = 0
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                value, _ = decoder.raw_decode(text, i)
                return value
            except json.JSONDecodeError:
                starts += 1
                if starts >= MAX_DECODE_STARTS:
                    break
                continue
            except RecursionError:  # '[[[[…': every later start is as deep; stop here
                raise _TooDeepError("JSON nested too deeply") from None
    raise CaptionParseError("no JSON value found")


def _captions_of(value: object) -> list[str] | None:
    while isinstance(value, dict):  # a loop, not recursion: {"captions": {"captions": …}} may be deep
        key = next((k for k in ("captions", "caption", "descriptions") if k in value), None)
        if key is None:
            return None
        value = value[key]
    if isinstance(value, list):
        out = [v for v in value if isinstance(v, str)]
        return out or None
    if isinstance(value, str):
        return [value]
    return None


def parse_captions(text: str | None) -> list[str]:
    """Captions from an answer such as '{"captions": [...]}', a bare JSON list, either inside a code fence,
    with text before or after. Raises CaptionParseError when none are found (also for an answer longer than
    MAX_ANSWER_CHARS or nested too deeply)."""
    if not text or not text.strip():
        raise CaptionParseError("empty answer")
    if len(text) > MAX_ANSWER_CHARS:
        raise CaptionParseError(f"answer of {len(text)} characters (> {MAX_ANSWER_CHARS})")
    for cand in _candidates(text):
        try:
            caps = _captions_of(_decode_first(cand))
        except _TooDeepError:
            raise
        except CaptionParseError:
            continue
        if caps:
            return caps
    raise CaptionParseError(f"no captions in answer: {text[:80]!r}")
