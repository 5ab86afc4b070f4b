"""Deterministic train/held-out split of the source files, per kind (paper §5.1).

The paper holds out 5k backgrounds and 10k events so that held-out mixtures are built only from held-out
sources. Here every kind (event, background, none) is split on its own, from ``split_key(id)`` =
``sha256(salt + "\\0" + id)``. The configured amount is an ``int`` count or a ``float`` fraction in [0, 1):

- **fraction** (the default, 10 % of events and backgrounds): a per-id threshold. A file is held out when
  its hash, read as a number in [0, 1) (:func:`hash_unit`), is below the fraction. A file's split then
  depends only on its id, the salt and the fraction: adding or removing other files never moves it.
  Small-corpus guarantee: when the kind has >= 2 files and the threshold picks none, the file with the
  smallest hash is held out; when it picks all, the one with the largest hash stays in train. Only these
  two fallbacks depend on the other files (they apply to tiny kinds, where "10 %" is < 1 file).
- **count** (``heldout_events=10_000, heldout_backgrounds=5_000`` reproduces the paper on a full-size
  corpus): the ``k`` smallest hashes (ties broken by id), ``k`` clamped to ``[1, n - 1]`` when the kind
  has >= 2 files. A count is stable only for a fixed corpus: adding files with smaller hashes pushes
  existing files across the cut.

Either way the split of a file never depends on file order, paths or the machine, and another ``salt``
gives an independent split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from synth.manifest import KINDS


@dataclass(frozen=True)
class SplitConfig:
    """How many files of each kind are held out (§5.1: 10k events, 5k backgrounds; see module doc)."""

    heldout_events: float | int = 0.1  # §5.1 holds out 10_000 events; fraction default fits any corpus
    heldout_backgrounds: float | int = 0.1  # §5.1 holds out 5_000 backgrounds
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


def parse_heldout(text: str) -> float | int:
    """A held-out amount from the command line: ``"10000"`` is a count, ``"0.1"`` a fraction in [0, 1).

    Raises ValueError naming the value when it is neither (or out of range)."""
    t = str(text).strip()
    try:
        value: float | int = int(t) if t.lstrip("+").isdigit() else float(t)
    except ValueError:
        raise ValueError(f"held-out amount {text!r}: give a count (10000) or a fraction (0.1)") from None
    if not value >= 0:
        raise ValueError(f"held-out amount {text!r} must be >= 0")
    if isinstance(value, float) and not value < 1.0:
        raise ValueError(
            f"held-out amount {text!r}: a fraction must be below 1 (a count has no point: 10000)"
        )
    return value


def split_key(file_id: str, salt: str = SplitConfig.salt) -> str:
    """The hash key of a file id (hex sha256 of ``salt + NUL + id``)."""
    return hashlib.sha256(f"{salt}\0{file_id}".encode()).hexdigest()


def hash_unit(file_id: str, salt: str = SplitConfig.salt) -> float:
    """The file's hash as a number in [0, 1): the first 64 bits of :func:`split_key` / 2**64."""
    return int(split_key(file_id, salt)[:16], 16) / 2.0**64


def heldout_count(n: int, requested: int) -> int:
    """Count mode: number held out of ``n`` files (>= 1 and <= n - 1 when asked for and n >= 2)."""
    k = min(int(requested), n)
    if requested > 0 and n >= 2:
        k = max(1, min(k, n - 1))
    return max(0, k)


def heldout_ids(ids: Sequence[str], requested: float | int, salt: str = SplitConfig.salt) -> set[str]:
    """The held-out subset of ``ids`` (distinct ids): per-id threshold for a fraction, hash rank for a count."""
    if len(set(ids)) != len(ids):
        raise ValueError("heldout_ids: ids must be distinct")
    ranked = sorted(ids, key=lambda i: (split_key(i, salt), i))
    if isinstance(requested, int):
        return set(ranked[: heldout_count(len(ranked), requested)])
    held = {i for i in ids if hash_unit(i, salt) < requested}
    if requested > 0 and len(ranked) >= 2:
        if not held:  # tiny kind: the threshold picked none; hold out the smallest hash
            held = {ranked[0]}
        elif len(held) == len(ranked):  # ... or all; keep the largest hash in train
            held.discard(ranked[-1])
    return held


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
