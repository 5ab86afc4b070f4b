"""Fallback captions built from a file's own metadata (no LLM): description, tags, file name.

Used by ``render_mixtures --corpus`` and as the captioning fallback when no LLM caption exists.

Rules (deterministic, no randomness): every caption is lower case, free of quotes and markup (HTML tags,
markdown symbols, brackets), keeps only letters/digits/spaces and in-word ``-``/``'`` plus commas, and has
at most 13 words (longer text is cut). One-word captions get `` sound`` appended so that captions have 2-13
words where possible. Candidates, in order, de-duplicated:

1. the cleaned description;
2. the content tags in their given order (generic tags like ``sfx``/``ui``/``loop`` and inflections of an
   earlier tag - burn after burning, doors after door - dropped), up to 6 tags;
3. the file name stem split into words (camelCase, ``_``, ``-``, ``.``; numbers and trailing digits
   dropped) - only when it has at least two words of 3+ letters, or when 1-2 gave nothing.

The list is never empty: with no usable metadata it is ``["an unidentified sound"]``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath

from synth.tags import parse_tags

MAX_WORDS = 13  # captions hold 2-13 words where possible
MAX_TAGS = 6  # tags joined into the tag caption
UNKNOWN_CAPTION = "an unidentified sound"
GENERIC_TAGS = frozenset(
    {"sfx", "ui", "interface", "misc", "sound", "sounds", "effect", "effects", "background", "loop", "audio"}
)

_MARKUP_RE = re.compile(r"<[^>]*>|&[a-z]+;|&#\d+;")
_CAMEL_RE = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _clean_chars(text: str) -> str:
    out = []
    for i, ch in enumerate(text):
        if ch.isalnum() or ch == ",":
            out.append(ch)
        elif ch in "-'\u2019" and 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum():
            out.append("'" if ch == "\u2019" else ch)  # in-word hyphen/apostrophe: double-barrel, dog's
        else:
            out.append(" ")
    return "".join(out)


def clean_caption(text: str, max_words: int = MAX_WORDS) -> str:
    """Lower-cased, markup/quote-free, whitespace-collapsed text cut to ``max_words`` words ('' if none)."""
    s = _MARKUP_RE.sub(" ", str(text or ""))
    s = _clean_chars(s.lower())
    s = re.sub(r"\s*,\s*", ", ", s)  # "a ,b" -> "a, b"
    s = re.sub(r"(,\s*)+", ", ", s)
    word_list = s.split()
    s = " ".join(word_list[:max_words]).strip(" ,")
    return s if any(c.isalnum() for c in s) else ""


def _pad(caption: str) -> str:
    return f"{caption} sound" if len(caption.split()) == 1 else caption


def _tags_list(tags: str | Iterable[str] | None) -> list[str]:
    """Cleaned tags (``synth.tags.parse_tags``: ";"-string, JSON-list string or list), empties dropped."""
    return [t for t in (clean_caption(t).replace(",", "") for t in parse_tags(tags)) if t]


_SUFFIXES = ("s", "es", "ing", "ings", "ed", "er", "ers")


def _same_lemma(a: str, b: str) -> bool:
    """True when one word is an inflection of the other (burn/burning, close/closing, door/doors)."""
    if a == b:
        return True
    short, long_ = sorted((a, b), key=len)
    if len(short) < 3:
        return False
    stems = {short, short[:-1]} if short.endswith("e") else {short}
    return any(long_.startswith(s) and long_[len(s) :] in _SUFFIXES for s in stems)


def tag_caption(tags: str | Iterable[str] | None, max_tags: int = MAX_TAGS) -> str:
    """Content tags joined by spaces (generic tags and plural/singular repeats dropped)."""
    chosen: list[str] = []
    for t in _tags_list(tags):
        if t in GENERIC_TAGS or any(_same_lemma(t, c) for c in chosen):
            continue
        chosen.append(t)
        if len(chosen) == max_tags:
            break
    return clean_caption(" ".join(chosen))


def file_stem(filename: str | None) -> str:
    """The base name without folders and without its last extension: ``a/b/Dog_Bark-01.wav`` -> ``Dog_Bark-01``."""
    if not filename:
        return ""
    stem = PurePosixPath(str(filename).replace("\\", "/")).name
    return stem.rsplit(".", 1)[0] if "." in stem else stem


def name_words(text: str) -> list[str]:
    """Lower-case words of a name (or any text): camelCase and non-alphanumerics split, numbers and trailing
    digits dropped. ``OxygenSysWarning-02`` -> ``[oxygen, sys, warning]``. The one tokenizer for file names
    (here and in captioning's file-name-copy check)."""
    text = _CAMEL_RE.sub(" ", str(text or ""))
    parts = [re.sub(r"(?<=[A-Za-z])\d+$", "", p) for p in re.split(r"[^A-Za-z0-9]+", text)]
    return [p.lower() for p in parts if p and not p.isdigit()]


def filename_caption(filename: str | None) -> str:
    """Words of a file name stem: ``Item_Drop_Sound_0.ogg`` -> ``item drop sound``."""
    return clean_caption(" ".join(name_words(file_stem(filename))))


def fallback_captions(
    tags: str | Iterable[str] | None,
    description: str | None,
    filename: str | None,
    n: int = 3,
) -> list[str]:
    """Up to ``n`` distinct captions from description, tags and file name (never empty, deterministic)."""
    if n < 1:
        raise ValueError(f"fallback_captions: n must be >= 1, got {n}")
    desc, tagc, namec = clean_caption(description or ""), tag_caption(tags), filename_caption(filename)
    candidates = [desc, tagc]
    long_words = [w for w in namec.split() if sum(c.isalpha() for c in w) >= 3]
    if len(long_words) >= 2 or not (desc or tagc):
        candidates.append(namec)
    out: list[str] = []
    for c in candidates:
        c = _pad(c) if c else ""
        if c and c not in out:
            out.append(c)
    return out[:n] or [UNKNOWN_CAPTION]
