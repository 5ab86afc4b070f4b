"""The built-in `template` captioner (no LLM, the offline default) and the LLM fallback: one composer.

Both compose captions with `synth.captions.fallback_captions` (description, content tags, file-name words) and
validate them with `captioning.validate`; they differ only in how the rows are labelled (caption_source
`template` vs `fallback`). A caption that merely repeats the file name is dropped when the description or
tags gave something else, and kept when the file name is all there is (better than no information).
"""

from __future__ import annotations

from captioning.prompt import CaptionInput
from captioning.validate import ValidationConfig, select_valid
from synth.captions import UNKNOWN_CAPTION, fallback_captions

TEMPLATE_VERSION = "template-v2"
LAST_RESORT = UNKNOWN_CAPTION
_ALL_CANDIDATES = 3  # fallback_captions has at most three candidates: description, tags, file name


def template_captions(inp: CaptionInput, n: int, cfg: ValidationConfig | None = None) -> list[str]:
    """Up to n valid captions from description/tags/file name; never empty."""
    cfg = cfg or ValidationConfig()
    caps = fallback_captions(list(inp.tags), inp.description, inp.filename, n=max(n, _ALL_CANDIDATES))
    valid, _ = select_valid(caps, inp.filename, n, cfg)
    if not valid:  # only file-name words survived: keep them rather than say nothing
        valid, _ = select_valid(caps, "", n, cfg)
    return valid or [LAST_RESORT]
