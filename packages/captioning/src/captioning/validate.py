"""Caption validation: 2–13 words, lower case, no quotes/markup, not a refusal, not a copy of the file name."""

from __future__ import annotations

import re
from dataclasses import dataclass

from synth.captions import file_stem, name_words

_REFUSAL = re.compile(
    r"\b(i'm sorry|i am sorry|sorry,|i cannot|i can't|i can not|i am unable|i'm unable|unable to (help|comply)"
    r"|as an ai|language model|i apologi[sz]e|i won't|i will not|cannot (help|assist|comply))\b"
)
_QUOTES = set('"“”‘’«»`')
_MARKUP = re.compile(r"[<>{}\[\]*#|\\_=~^]|https?://|www\.|\.(wav|flac|mp3|ogg|aiff?|m4a|opus)\b")


@dataclass(frozen=True)
class ValidationConfig:
    """Caption rules (paper §4.1: captions of 2–13 words)."""

    min_words: int = 2
    max_words: int = 13
    max_chars: int = 120


def normalize_caption(text: str) -> str:
    """Lower-case, collapse whitespace, drop surrounding spaces and one trailing period."""
    text = " ".join(str(text).split()).lower()
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    return text


def is_filename_copy(caption: str, filename: str) -> bool:
    """True when the caption is the file name (same words under `synth.captions.name_words`, the tokenizer
    the caption composer uses for file names), or contains its stem verbatim."""
    if not filename:
        return False
    name = name_words(file_stem(filename))
    if not name:
        return False
    if name_words(caption) == name:
        return True
    stem = file_stem(filename.strip()).lower()
    return len(stem) >= 4 and re.search(r"[^a-z ]", stem) is not None and stem in caption


def caption_problem(
    caption: str, filename: str = "", cfg: ValidationConfig = ValidationConfig()
) -> str | None:
    """Why a (normalised) caption is invalid, or None when it is fine."""
    if not caption:
        return "empty"
    if len(caption) > cfg.max_chars:
        return "too_long"
    words = caption.split()
    if len(words) < cfg.min_words:
        return "too_few_words"
    if len(words) > cfg.max_words:
        return "too_many_words"
    if caption != caption.lower():
        return "not_lower_case"
    if any(c in _QUOTES for c in caption) or caption.startswith("'") or caption.endswith("'"):
        return "quotes"
    if _MARKUP.search(caption):
        return "markup"
    if not re.search(r"[a-z]", caption):
        return "no_letters"
    if _REFUSAL.search(caption):
        return "refusal"
    if is_filename_copy(caption, filename):
        return "filename_copy"
    return None


def select_valid(
    captions: list[str], filename: str = "", n: int | None = None, cfg: ValidationConfig = ValidationConfig()
) -> tuple[list[str], dict[str, int]]:
    """Normalise, validate and de-duplicate; return (valid captions, at most n) and problem counts."""
    valid: list[str] = []
    problems: dict[str, int] = {}
    for raw in captions:
        cap = normalize_caption(raw)
        why = caption_problem(cap, filename, cfg)
        if why is None and cap in valid:
            why = "duplicate"
        if why is not None:
            problems[why] = problems.get(why, 0) + 1
            continue
        valid.append(cap)
    if n is not None:
        valid = valid[:n]
    return valid, problems
