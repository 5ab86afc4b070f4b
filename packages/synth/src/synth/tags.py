"""Tags of a metadata row: the one parser for ";"-separated strings, JSON-list strings and lists.

A module of its own so that ``synth.ingest``, ``synth.captions`` and ``captioning.prompt`` share it without
an import cycle (``synth.ingest`` imports ``synth.captions``); ``synth.ingest.parse_tags`` still works.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from synth.errors import MetadataError


def parse_tags(value: Any) -> list[str]:
    """Tags from a ";"-separated string, a JSON list string, or a list; stripped, empties dropped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                parsed = json.loads(s)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                return parse_tags(parsed)
        return [t.strip() for t in s.split(";") if t.strip()]
    if isinstance(value, Iterable):
        return [str(t).strip() for t in value if t is not None and str(t).strip()]
    raise MetadataError(f"tags must be a ';'-separated string or a list, got {type(value).__name__}")
