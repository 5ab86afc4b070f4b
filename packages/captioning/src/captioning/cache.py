"""Persistent caption cache: a folder of append-only JSONL segments, one segment per writer.

Key = sha256 of (model, prompt version, captions per file, sanitised prompt inputs). Every writer (a Beam
DoFn instance, a process) appends to its own segment file, so concurrent writers never share a file and need
no lock. Readers load every segment when the cache is opened, and `refresh()` (called at every bundle start
in the pipeline) reads what other writers added since, so a retried bundle sees a dead worker's answers.

Local or shared file system (NFS/Filestore): each entry is written, flushed and fsync'ed before the caption
is used (`flush_every=1`), so a killed run or worker loses at most the requests that were in flight.
Remote object stores (gs://…, any URI Beam's FileSystems knows) cannot append: entries are buffered and
written as a new immutable segment object every `flush_every` entries (default 64) and when the writer
flushes/closes (at the end of every bundle in the pipeline), so a killed writer also loses up to
`flush_every - 1` answered-but-unwritten entries. Only complete lines are consumed; a torn last line (a
process killed mid-write) is counted and skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import uuid
from pathlib import Path

from captioning.prompt import CaptionInput, PromptConfig, prompt_data
from synth.paths import is_uri, local_path

log = logging.getLogger(__name__)

SEGMENT_GLOB = "seg-*.jsonl"


def cache_key(
    model: str, prompt_version: str, n: int, inp: CaptionInput, cfg: PromptConfig | None = None
) -> str:
    """Stable hex key of one request: the model, the prompt version, N and the (sanitised) inputs."""
    blob = json.dumps(
        [model, prompt_version, n, prompt_data(inp, cfg or PromptConfig())], sort_keys=True, ensure_ascii=True
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CaptionCache:
    """Read all segments at open; append new entries to this writer's own segment."""

    def __init__(
        self,
        location: str | os.PathLike,
        flush_every: int | None = None,
        fsync: bool = True,
        segments: bool | None = None,
    ) -> None:
        """`segments`: write whole segment objects through Beam's FileSystems (default: for remote URIs)."""
        self.location = str(location)
        self.remote = is_uri(self.location) if segments is None else segments
        self.flush_every = flush_every if flush_every is not None else (64 if self.remote else 1)
        self.fsync = fsync
        self.writer_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._entries: dict[str, dict] = {}
        self._consumed: dict[str, int] = {}  # bytes of complete lines read, per segment path
        self._own_path: str | None = None
        self._tails_seen: set[tuple[str, int]] = set()
        self._buffer: list[dict] = []
        self._fh = None
        self._segments_written = 0
        self.corrupt_lines = 0
        self._load()

    # ---- reading
    def _segment_paths(self) -> list[str]:
        if self.remote:
            from apache_beam.io.filesystems import FileSystems

            pattern = FileSystems.join(self.location, SEGMENT_GLOB)
            return sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)
        root = Path(local_path(self.location))
        root.mkdir(parents=True, exist_ok=True)
        return sorted(str(p) for p in root.glob(SEGMENT_GLOB))

    def _read_new_bytes(self, path: str) -> bytes:
        """Bytes of `path` past what was consumed (remote segment objects are immutable: read once)."""
        start = self._consumed.get(path, 0)
        if self.remote:
            if path in self._consumed:
                return b""
            from apache_beam.io.filesystems import FileSystems

            with FileSystems.open(path) as fh:
                return fh.read()
        with open(path, "rb") as fh:
            fh.seek(start)
            return fh.read()

    def _read_segment(self, path: str) -> int:
        """Load the complete new lines of one segment; returns how many entries were read."""
        data = self._read_new_bytes(path)
        if self.remote:
            end = len(data)  # written whole
        else:
            end = data.rfind(b"\n") + 1  # a line still being written is read next time
        self._consumed[path] = self._consumed.get(path, 0) + end
        n = 0
        pieces = data[:end].decode("utf-8", errors="replace").splitlines()
        tail = (path, self._consumed[path])
        if end < len(data) and tail not in self._tails_seen:  # torn (or still being written): counted once
            self._tails_seen.add(tail)
            pieces.append(data[end:].decode("utf-8", errors="replace"))
        for line in pieces:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                self._entries[entry["key"]] = entry
                n += 1
            except (json.JSONDecodeError, KeyError, TypeError):
                self.corrupt_lines += 1
        return n

    def _load(self) -> None:
        for path in self._segment_paths():
            self._read_segment(path)
        if self.corrupt_lines:
            log.warning("caption cache %s: skipped %d torn/corrupt lines", self.location, self.corrupt_lines)

    def refresh(self) -> int:
        """Read entries other writers added since this cache was opened; returns how many were read."""
        return sum(self._read_segment(p) for p in self._segment_paths() if p != self._own_path)

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> set[str]:
        """Every key held (loaded at open or put since)."""
        return set(self._entries)

    def get(self, key: str) -> dict | None:
        """The entry stored under `key`, or None."""
        return self._entries.get(key)

    # ---- writing
    def put(self, key: str, entry: dict) -> None:
        """Store an entry (a JSON-serialisable dict); durable on local disk when this returns."""
        entry = {**entry, "key": key}
        self._entries[key] = entry
        self._buffer.append(entry)
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write buffered entries (local: append + fsync; remote: one new segment object)."""
        if not self._buffer:
            return
        text = "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in self._buffer)
        if self.remote:
            from apache_beam.io.filesystems import FileSystems

            name = f"seg-{self.writer_id}-{self._segments_written:06d}.jsonl"
            path = FileSystems.join(self.location, name)
            with FileSystems.create(path) as fh:
                fh.write(text.encode("utf-8"))
            self._consumed[path] = len(text.encode("utf-8"))  # our own object: never re-read
            self._segments_written += 1
        else:
            if self._fh is None:
                root = Path(local_path(self.location))
                self._own_path = str(root / f"seg-{self.writer_id}.jsonl")
                self._fh = open(self._own_path, "a", encoding="utf-8")  # noqa: SIM115
            self._fh.write(text)
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())
        self._buffer.clear()

    def close(self) -> None:
        """Flush and release the segment file."""
        self.flush()
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> CaptionCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
