"""Caption validation: 2–13 words, lower case, no quotes/markup, not a refusal, not a copy of the file name,
no control / bidi / zero-width characters, not an instruction or a command (a reply that is one of these is
an injection or a broken model, never a description: the client rejects the whole reply)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from synth.captions import file_stem, name_words

_REFUSAL = re.compile(
    r"\b(i'm sorry|i am sorry|sorry,|i cannot|i can't|i can not|i am unable|i'm unable|unable to (help|comply)"
    r"|as an ai|language model|i apologi[sz]e|i won't|i will not|cannot (help|assist|comply))\b"
)
# Characters that reorder or hide text (Trojan-Source style): bidi embeddings/overrides/isolates/marks ...
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
# ... and invisible characters that join or split words without showing.
_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u180e\u00ad")
# Replies that address the model or the reader instead of describing a sound.
_INSTRUCTION = re.compile(
    r"\b(ignore|disregard|forget|override|bypass)\b[^.]{0,40}\b(instructions?|prompts?|rules|guidelines"
    r"|directions|context|everything)\b"
    r"|\b(ignore|disregard|forget)\s+(all|any|the|your|previous|prior|above)\b"
    r"|(^|\s)(system|assistant|user|developer|human)\s*:"
    r"|\byou are (now|no longer|an? (ai|assistant|language model|chatbot|helpful))\b"
    r"|\byou (must|should|will) (now|always|never|only|ignore|obey|follow|respond|reply|answer|output)\b"
    r"|\byour (task|instructions|job|role|goal|prompt|rules)\b"
    r"|\b(from now on|new instructions?|system prompt|jailbreak|developer mode|prompt injection)\b"
    r"|\b(act|behave|pretend|roleplay) as\b"
    r"|\b(respond|reply|answer|output)\s+(only\s+)?(with|in)\s+(json|yes|no|the following|english|one word)\b"
)
# Shell / SQL / script payloads.
_COMMAND = re.compile(
    r"\b(sudo|rm|curl|wget|chmod|chown|bash|sh|zsh|powershell|cmd|python3?|perl|ruby|nc|netcat|ssh|scp|eval"
    r"|exec|mkfs|dd|kill|pkill|killall|apt|apt-get|pip|npm|cat|ls|echo)\s+(-{1,2}[a-z]|/\w|\$|~/|\./|https?:)"
    r"|\$\(|\$\{|&&|\|\||`"
    r"|(^|\s)~?/(etc|bin|usr|dev|tmp|home|root|var|proc|sys)\b"
    r"|\b(drop|truncate)\s+table\b|\bselect\s+\*\s+from\b|\bunion\s+select\b"
    r"|<\s*script|\bjavascript:"
    r"|;\s*(rm|curl|wget|sudo|cat|ls|echo|bash|sh)\b"
)
# Problems that make the whole reply untrustworthy (the client rejects it and asks again / falls back).
UNSAFE_PROBLEMS = frozenset(
    {"control_chars", "bidi_control", "zero_width", "instruction_like", "command_like"}
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


def char_problem(text: str) -> str | None:
    """bidi_control / zero_width / control_chars for a caption holding such characters (after stripping
    surrounding whitespace), else None. control_chars: any other Unicode "C*" character (control, format,
    private use, surrogate, unassigned) and line/paragraph separators — tabs and newlines included."""
    text = str(text).strip()
    if any(c in _BIDI for c in text):
        return "bidi_control"
    if any(c in _ZERO_WIDTH for c in text):
        return "zero_width"
    if any(unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp") for c in text):
        return "control_chars"
    return None


def is_instruction(caption: str) -> bool:
    """True when the (normalised) caption addresses a model or a reader instead of describing a sound."""
    return _INSTRUCTION.search(caption) is not None


def is_command(caption: str) -> bool:
    """True when the (normalised) caption holds a shell, SQL or script payload."""
    return _COMMAND.search(caption) is not None


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
    bad_chars = char_problem(caption)
    if bad_chars:
        return bad_chars
    if is_instruction(caption):
        return "instruction_like"
    if is_command(caption):
        return "command_like"
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
        # characters are checked on the raw text: normalising collapses some control characters as whitespace
        why = char_problem(raw) or caption_problem(cap, filename, cfg)
        if why is None and cap in valid:
            why = "duplicate"
        if why is not None:
            problems[why] = problems.get(why, 0) + 1
            continue
        valid.append(cap)
    if n is not None:
        valid = valid[:n]
    return valid, problems
