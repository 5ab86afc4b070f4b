"""AudioCache: decoded 48 kHz mono sources by id, LRU-bounded by bytes, with memoised loudness."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from synth.loudness import a_weight, measure_loudness_db, source_block_energies

LoadFn = Callable[[str, int], np.ndarray]


def _default_load(path: str, sr: int) -> np.ndarray:
    from synth.audio import load_audio  # owned by the sources module; imported lazily

    return load_audio(path, target_sr=sr)


class AudioCache:
    """`cache(id) -> float32 mono array` (read-only) for render_mixture's source_loader.

    paths: id -> path/URI. Decoded arrays are kept until their total size exceeds max_bytes, then the
    least recently used ones are evicted. `loudness_db(id)` measures once per id (fallback for manifests
    without a loudness_db column). `weighted_energy(id)` is the cumulative A-weighted energy of the source
    (computed once, evicted with it), which lets render_mixture relabel long pieces without per-sample work;
    `block_energy(id)` the A-weighted energy per 600-sample block, from which render_mixture measures the
    loudness of any background window (also evicted with its source).
    """

    def __init__(
        self,
        paths: Mapping[str, str],
        max_bytes: int = 2 << 30,
        sr: int = 48000,
        load_fn: LoadFn | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"AudioCache: max_bytes must be positive, got {max_bytes}")
        self.paths = dict(paths)
        self.max_bytes = int(max_bytes)
        self.sr = int(sr)
        self.load_fn = load_fn or _default_load
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._loudness: dict[str, float] = {}
        self._energy: dict[str, np.ndarray] = {}
        self._blocks: dict[tuple[str, int, int], np.ndarray] = {}
        self.nbytes = 0
        self.hits = self.misses = self.evictions = 0
        self.decode_s = 0.0

    @classmethod
    def from_manifest(cls, table: Any, **kwargs: Any) -> AudioCache:
        rows = table.to_pylist() if hasattr(table, "to_pylist") else list(table)
        return cls({str(r["id"]): str(r["path"]) for r in rows}, **kwargs)

    def __call__(self, source_id: str) -> np.ndarray:
        x = self._items.get(source_id)
        if x is not None:
            self.hits += 1
            self._items.move_to_end(source_id)
            return x
        path = self.paths.get(source_id)
        if path is None:
            raise KeyError(f"AudioCache: unknown source id {source_id!r} (not in the manifest given)")
        t0 = time.perf_counter()
        x = np.ascontiguousarray(self.load_fn(path, self.sr), dtype=np.float32)
        self.decode_s += time.perf_counter() - t0
        self.misses += 1
        if x.ndim != 1:
            raise ValueError(f"AudioCache: loader returned shape {x.shape} for {path}, expected mono 1-D")
        x.setflags(write=False)
        self._items[source_id] = x
        self.nbytes += x.nbytes
        self._evict()
        return x

    def _evict(self) -> None:
        while self.nbytes > self.max_bytes and len(self._items) > 1:
            old_id, old = self._items.popitem(last=False)
            self.nbytes -= old.nbytes
            w = self._energy.pop(old_id, None)
            if w is not None:
                self.nbytes -= w.nbytes
            for key in [k for k in self._blocks if k[0] == old_id]:
                self.nbytes -= self._blocks.pop(key).nbytes
            self.evictions += 1

    def weighted_energy(self, source_id: str) -> np.ndarray:
        """Cumulative A-weighted energy of a source (float64, len + 1, read-only): csum[k] = sum of
        A(x)[:k] ** 2; computed once and evicted with its source."""
        c = self._energy.get(source_id)
        if c is None:
            w = a_weight(self(source_id), self.sr)
            c = np.empty(len(w) + 1, dtype=np.float64)
            c[0] = 0.0
            np.cumsum(np.square(w, out=w), out=c[1:])
            c.setflags(write=False)
            self._energy[source_id] = c
            self.nbytes += c.nbytes
            self._evict()
        return c

    def block_energy(self, source_id: str, win: int = 2400, hop: int = 1200) -> np.ndarray:
        """synth.loudness.source_block_energies of a source (read-only); computed once, evicted with it."""
        key = (source_id, win, hop)
        e = self._blocks.get(key)
        if e is None:
            e = source_block_energies(self(source_id), self.sr, win, hop)
            self._blocks[key] = e
            self.nbytes += e.nbytes
            self._evict()
        return e

    def loudness_db(self, source_id: str) -> float:
        if source_id not in self._loudness:
            self._loudness[source_id] = measure_loudness_db(self(source_id), self.sr)
        return self._loudness[source_id]

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict:
        return {
            "items": len(self._items),
            "bytes": self.nbytes,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "decode_s": round(self.decode_s, 4),
        }
