"""Which corpus files are events, which are backgrounds (paper §4.2), and which are sfx vs general sources.

Rule (§4.2): an **event** is shorter than ``event_max_s`` (10 s) and carries no ambiance keyword; a
**background** is at least ``background_min_s`` (10 s) long and carries one; every other file is ``none``
(e.g. a 4 s ambience loop, or 60 s of music without the keyword). Exactly 10.0 s is therefore never an
event and can be a background.

Keyword matching: case-insensitive, on whole words of the tags, the description and the file name (split on
anything that is not a letter or digit, so ``forest_ambiance.ogg`` matches), singular or plural (``-s``). The
default keyword is the paper's ``ambiance`` only; the British/US spelling ``ambience`` is *not* matched by
default (the dev corpus never uses it outside its ambiance rows) - add it to ``ambiance_keywords`` for corpora
that spell it that way. Multi-word keywords ("room tone") match consecutive words. Categories listed in
``background_categories`` count as carrying the keyword (opt-in for e.g. ``music`` beds; paper: none).

Source type: ``sfx`` or ``general`` per file, looked up by source name, then by category, then the default
(the paper draws 80 % of the events from sfx libraries).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from synth.manifest import SOURCE_TYPES

_WORD_RE = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class FilterConfig:
    """Event/background selection (§4.2)."""

    event_max_s: float = 10.0  # §4.2: events are shorter than 10 s
    background_min_s: float = 10.0  # §4.2: backgrounds are at least 10 s
    ambiance_keywords: tuple[str, ...] = ("ambiance",)  # §4.2: "ambiance" marks backgrounds
    match_fields: tuple[str, ...] = ("tags", "description", "filename")  # where keywords are searched
    background_categories: tuple[str, ...] = ()  # opt-in categories treated as keyword-bearing (not paper)

    def __post_init__(self) -> None:
        if not (self.event_max_s > 0 and self.background_min_s > 0):
            raise ValueError(f"FilterConfig: durations must be positive, got {self}")
        if isinstance(self.ambiance_keywords, str):
            raise ValueError("FilterConfig.ambiance_keywords must be a tuple of strings, not one string")
        if not all(words(k) for k in self.ambiance_keywords):
            raise ValueError(f"FilterConfig: empty keyword in {self.ambiance_keywords!r}")


@dataclass(frozen=True)
class SourceTypeConfig:
    """Mapping of files to sfx|general sources (§4.2: 80 % of events come from sfx sources)."""

    by_source: Mapping[str, str] = field(default_factory=dict)
    by_category: Mapping[str, str] = field(default_factory=lambda: {"sfx": "sfx", "ui": "sfx"})
    default: str = "general"

    def __post_init__(self) -> None:
        for name, value in [*self.by_source.items(), *self.by_category.items(), ("default", self.default)]:
            if value not in SOURCE_TYPES:
                raise ValueError(f"SourceTypeConfig: {name!r} -> {value!r}; allowed {list(SOURCE_TYPES)}")


def words(text: str) -> list[str]:
    """Lower-case alphanumeric words of ``text`` (underscores, dashes, dots and spaces all separate)."""
    return _WORD_RE.findall(str(text).lower())


def _field_texts(value: Any) -> Iterable[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def _contains_phrase(tokens: list[str], phrase: list[str]) -> bool:
    """Whole-word match of ``phrase`` in ``tokens``; the last phrase word may carry a plural ``s``."""
    n = len(phrase)
    last = {phrase[-1], phrase[-1] + "s"}
    for i in range(len(tokens) - n + 1):
        if tokens[i : i + n - 1] == phrase[:-1] and tokens[i + n - 1] in last:
            return True
    return False


def has_ambiance_keyword(row: Mapping[str, Any], cfg: FilterConfig = FilterConfig()) -> bool:
    """True if any keyword occurs as a whole word in the row's match fields, or its category is opted in."""
    if cfg.background_categories and str(row.get("category") or "").lower() in {
        c.lower() for c in cfg.background_categories
    }:
        return True
    phrases = [words(k) for k in cfg.ambiance_keywords]
    for name in cfg.match_fields:
        for text in _field_texts(row.get(name)):
            tokens = words(text)
            if any(_contains_phrase(tokens, p) for p in phrases):
                return True
    return False


def classify_kind(row: Mapping[str, Any], cfg: FilterConfig = FilterConfig()) -> str:
    """``event`` | ``background`` | ``none`` for a row with ``duration_s`` (and tags/description/filename)."""
    try:
        duration = float(row["duration_s"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"classify_kind: row {row.get('id', row.get('path'))!r} has no valid duration_s"
        ) from exc
    if not math.isfinite(duration) or duration < 0:
        raise ValueError(f"classify_kind: row {row.get('id', row.get('path'))!r} has duration_s={duration}")
    keyword = has_ambiance_keyword(row, cfg)
    if duration < cfg.event_max_s and not keyword:
        return "event"
    if duration >= cfg.background_min_s and keyword:
        return "background"
    return "none"


def source_type_of(row: Mapping[str, Any], cfg: SourceTypeConfig = SourceTypeConfig()) -> str:
    """``sfx`` | ``general``: by source name first, then by category, else ``cfg.default``."""
    source = str(row.get("source") or "")
    if source in cfg.by_source:
        return cfg.by_source[source]
    category = str(row.get("category") or "")
    if category in cfg.by_category:
        return cfg.by_category[category]
    return cfg.default
