"""A progress bar over shards appearing in output folders (works for any Beam runner that writes there)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from synth import shards


class ShardProgress:
    """tqdm bar over shards appearing in the output folders (works for any runner that writes there)."""

    def __init__(self, folders: Sequence[str], done: int, total: int, interval: float = 1.0) -> None:
        self.folders, self.done, self.total, self.interval = list(folders), done, total, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _count(self) -> int:
        return sum(1 for f in self.folders for n in shards.list_names(f) if shards.SHARD_RE.match(n))

    def _run(self) -> None:
        from tqdm import tqdm

        with tqdm(
            total=self.total, initial=self.done, unit="shard", desc="shards", leave=False, disable=None
        ) as bar:
            while not self._stop.wait(self.interval):
                bar.update(max(0, self._count() - bar.n))
            bar.update(max(0, self._count() - bar.n))

    def __enter__(self) -> ShardProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
