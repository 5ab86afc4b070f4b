"""The built-in `template` captioner: captions composed from tags/description, no LLM (offline default)."""

from __future__ import annotations

import re

from captioning.prompt import CaptionInput
from captioning.validate import ValidationConfig, select_valid

TEMPLATE_VERSION = "template-v1"
# Tags that say nothing about what is heard.
GENERIC_TAGS = frozenset(
    {"sfx", "sound", "sounds", "audio", "effect", "effects", "fx", "wav", "ogg", "misc", "other"}
)
LAST_RESORT = "an unidentified sound"


def _plain(text: str) -> str:
    """Lower-case words only: letters, digits, apostrophes and hyphens inside words."""
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", str(text)).lower()
    text = re.sub(r"[^0-9a-z'\- ]+", " ", text.replace("_", " "))
    words = [w.strip("'-") for w in text.split()]
    return " ".join(w for w in words if w)


def _words(text: str, limit: int) -> str:
    return " ".join(text.split()[:limit])


def template_candidates(inp: CaptionInput, max_words: int = 13) -> list[str]:
    """Caption candidates in order of preference (not yet validated)."""
    out: list[str] = []
    desc = _plain(inp.description)
    tags = []
    for t in inp.tags:
        p = _plain(t)
        if p and p not in GENERIC_TAGS and p not in tags:
            tags.append(p)
    if desc:
        d = _words(desc, max_words)
        out.append(d if len(d.split()) >= 2 else f"sound of {d}")
    if tags:
        out.append(_words(f"sound of {' and '.join(tags[:2])}", max_words))
        out.append(_words(" ".join(tags[:4]) + " sound", max_words))
        if len(tags) > 2:
            out.append(_words(f"{tags[0]} with {tags[2]}", max_words))
        out.append(_words(f"a {tags[0]} sound effect", max_words))
    if desc and tags and tags[0] not in desc.split():
        out.append(_words(f"{tags[0]}: {desc}", max_words).replace(":", ""))
    name = _plain(re.sub(r"\.[A-Za-z0-9]{2,5}$", "", inp.filename))
    if name:
        out.append(_words(f"sound of {name}", max_words))
    return out


def template_captions(inp: CaptionInput, n: int, cfg: ValidationConfig | None = None) -> list[str]:
    """Up to n valid captions from tags/description; never empty."""
    cfg = cfg or ValidationConfig()
    valid, _ = select_valid(template_candidates(inp, cfg.max_words), inp.filename, n, cfg)
    return valid or [LAST_RESORT]
