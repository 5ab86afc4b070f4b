"""Deterministic train/held-out split of the source files, per kind (paper §4.2).

The paper holds out 5k backgrounds and 10k events so that held-out mixtures are built only from held-out
sources. Here every kind (event, background, none) is split on its own: files are ranked by
``sha256(salt + "\\0" + id)`` (ties broken by id) and the first ``k`` of the ranking are held out.

``k`` comes from the config: an ``int`` is a count, a ``float`` in [0, 1) a fraction (rounded to nearest).
When something is asked for (k > 0 requested) and the kind has >= 2 files, ``k`` is clamped to
``[1, n - 1]`` so each kind keeps at least one held-out and one training file. The defaults are fractions
(10 % of events and backgrounds) because the paper's counts would hold out everything in a small corpus;
pass ``heldout_events=10_000, heldout_backgrounds=5_000`` to reproduce the paper on a full-size corpus.

Properties: the split of a file depends only on ids (not on file order, paths, or machine); a file's
hash key never changes, so growing a corpus only moves files near the cut; changing ``salt`` gives an
independent split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from synth.manifest import KINDS


@dataclass(frozen=True)
class SplitConfig:
    """How many files of each kind are held out (§4.2: 10k events, 5k backgrounds; see module doc)."""

    heldout_events: float | int = 0.1  # §4.2 holds out 10_000 events; fraction default fits any corpus
    heldout_backgrounds: float | int = 0.1  # §4.2 holds out 5_000 backgrounds
    heldout_none: float | int = 0  # files of kind "none" are never mixed; all train by default
    salt: str = "flam-split-v1"

    def __post_init__(self) -> None:
        for name in ("heldout_events", "heldout_backgrounds", "heldout_none"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ValueError(f"SplitConfig.{name} must be an int count or a float fraction, got {v!r}")
            if isinstance(v, float) and not 0.0 <= v < 1.0:
                raise ValueError(f"SplitConfig.{name}: a fraction must be in [0, 1), got {v}")
            if isinstance(v, int) and v < 0:
                raise ValueError(f"SplitConfig.{name}: a count must be >= 0, got {v}")

    def requested(self, kind: str) -> float | int:
        """The configured held-out amount for a kind."""
        return {
            "event": self.heldout_events,
            "background": self.heldout_backgrounds,
            "none": self.heldout_none,
        }[kind]


def split_key(file_id: str, salt: str = SplitConfig.salt) -> str:
    """The hash rank key of a file id (hex sha256 of ``salt + NUL + id``)."""
    return hashlib.sha256(f"{salt}\0{file_id}".encode()).hexdigest()


def heldout_count(n: int, requested: float | int) -> int:
    """Number held out of ``n`` files for a count or fraction (>= 1 and <= n - 1 when asked and n >= 2)."""
    k = min(int(requested), n) if isinstance(requested, int) else int(round(requested * n))
    if requested > 0 and n >= 2:
        k = max(1, min(k, n - 1))
    return max(0, min(k, n))


def heldout_ids(ids: Sequence[str], requested: float | int, salt: str = SplitConfig.salt) -> set[str]:
    """The held-out subset of ``ids`` (distinct ids) by hash rank."""
    if len(set(ids)) != len(ids):
        raise ValueError("heldout_ids: ids must be distinct")
    ranked = sorted(ids, key=lambda i: (split_key(i, salt), i))
    return set(ranked[: heldout_count(len(ranked), requested)])


def assign_splits(
    rows: Sequence[MutableMapping[str, Any]], cfg: SplitConfig = SplitConfig()
) -> list[MutableMapping[str, Any]]:
    """Set ``row["split"]`` to ``train``/``heldout`` for rows with ``id`` and ``kind``; returns the rows."""
    by_kind: dict[str, list[str]] = {k: [] for k in KINDS}
    for r in rows:
        kind = r.get("kind")
        if kind not in by_kind:
            raise ValueError(f"assign_splits: row {r.get('id')!r} has kind {kind!r}; allowed {list(KINDS)}")
        if not r.get("id"):
            raise ValueError(f"assign_splits: row without id (path {r.get('path')!r})")
        by_kind[kind].append(str(r["id"]))
    held: set[str] = set()
    for kind, ids in by_kind.items():
        held |= heldout_ids(ids, cfg.requested(kind), cfg.salt)
    for r in rows:
        r["split"] = "heldout" if str(r["id"]) in held else "train"
    return list(rows)


def split_counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """``{kind: {"train": n, "heldout": m}}`` for reporting."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        d = out.setdefault(r["kind"], {"train": 0, "heldout": 0})
        d[r["split"]] += 1
    return out
