"""The on-disk index of `model.search`: the frame embeddings of every audio file under one folder.

Layout of an index folder:
- `index.json` — the manifest: format version, root folder, checkpoint (path, SHA-256 of all its files, and
  their sizes/mtimes for a cheap check), frame hop, embedding size, and per file (path relative to the root)
  its size, mtime, frame count, duration and where its rows are; files that failed to decode are listed
  with the reason (retried when they change).
- `segments/seg-NNNNNN.npy` — float32 [rows, D] arrays of L2-normalised frame embeddings
  (`FLAM.frame_embeddings_batch`, normalised once more with `model.heads.l2_normalize`: exactly the frames
  `frame_similarity` multiplies in `frame_probabilities`); one file's frames are consecutive rows of one segment.

Updates are incremental: new files are embedded, files whose size or mtime changed are embedded again, files
that are gone are dropped; a checkpoint whose bytes changed (SHA-256) rebuilds the index from scratch.

Crash safety: every batch of embedded files is written as a new segment (temp file + fsync + rename) *before*
the manifest that refers to it (same way), so the manifest on disk always describes complete segments; a
segment that no manifest refers to (a kill between the two writes) is deleted by the next run, which then
embeds what is missing. Segments are only deleted after a manifest without them is on disk. Small segments
are merged, and segments less than half live rewritten, at the end of a run (`compact`).

Locks: one writer at a time (`.write.lock`, flock); readers hold `.read.lock` shared while they read the
manifest and map the segments, and a writer holds it exclusively only to delete segment files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.detect.outputs import atomic_write_bytes

log = logging.getLogger("model.search")

FORMAT_VERSION = 1
MANIFEST = "index.json"
SEGMENTS = "segments"
SEGMENT_TARGET_BYTES = 64 << 20  # merged segments grow to about this size


class SearchIndexError(ValueError):
    """An index folder that cannot be used as asked (wrong root, unknown format, locked, damaged)."""


@dataclass
class FileEntry:
    size: int
    mtime_ns: int
    segment: int
    row: int
    n_frames: int
    duration_s: float


@dataclass
class Manifest:
    root: str
    checkpoint: str
    checkpoint_sha256: str
    checkpoint_files: list
    frame_hop_s: float
    hop_frames: int
    dim: int
    next_segment: int = 1
    files: dict[str, FileEntry] = field(default_factory=dict)
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        d = asdict(self)
        return json.dumps(d, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, source: str) -> Manifest:
        try:
            d = json.loads(data)
            if d.get("format_version") != FORMAT_VERSION:
                raise SearchIndexError(f"{source}: index format {d.get('format_version')!r}, this version reads {FORMAT_VERSION}")  # fmt: skip
            d["files"] = {k: FileEntry(**v) for k, v in d["files"].items()}
            return cls(**d)
        except SearchIndexError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise SearchIndexError(
                f"{source} is not a model.search index manifest ({type(e).__name__}: {e})"
            ) from None

    def segment_rows(self) -> dict[int, int]:
        """Live rows per segment."""
        out: dict[int, int] = {}
        for e in self.files.values():
            out[e.segment] = out.get(e.segment, 0) + e.n_frames
        return out


def segment_path(index: Path, seg: int) -> Path:
    return index / SEGMENTS / f"seg-{seg:06d}.npy"


def read_manifest(index: Path) -> Manifest | None:
    p = index / MANIFEST
    if not p.is_file():
        return None
    return Manifest.from_json(p.read_bytes(), str(p))


def write_manifest(index: Path, m: Manifest) -> None:
    atomic_write_bytes(index / MANIFEST, m.to_json(), fsync=True)


def write_segment(index: Path, seg: int, rows: np.ndarray) -> None:
    """A complete .npy segment on disk (fsync'd) before anything refers to it."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(rows, dtype=np.float32))
    atomic_write_bytes(segment_path(index, seg), buf.getvalue(), fsync=True)


@contextlib.contextmanager
def _flock(path: Path, mode: int, what: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            raise SearchIndexError(what) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def writer_lock(index: Path) -> contextlib.AbstractContextManager[None]:
    return _flock(index / ".write.lock", fcntl.LOCK_EX | fcntl.LOCK_NB,
                  f"another `model.search index` run is updating {index}; wait for it to finish")  # fmt: skip


def read_lock(index: Path, exclusive: bool = False) -> contextlib.AbstractContextManager[None]:
    return _flock(index / ".read.lock", fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, "")


def delete_segments(index: Path, segs: list[int]) -> None:
    """Delete segment files no manifest on disk refers to (waits for readers that are mapping segments)."""
    if not segs:
        return
    with read_lock(index, exclusive=True):
        for s in segs:
            segment_path(index, s).unlink(missing_ok=True)


def orphan_segments(index: Path, m: Manifest | None) -> list[int]:
    """Segment files (and temp files) on disk that the manifest does not refer to."""
    folder = index / SEGMENTS
    if not folder.is_dir():
        return []
    live = set(m.segment_rows()) if m is not None else set()
    out = []
    for p in folder.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)  # a write killed before its rename
        elif p.name.startswith("seg-") and p.suffix == ".npy":
            try:
                n = int(p.stem[4:])
            except ValueError:
                continue
            if n not in live:
                out.append(n)
    return sorted(out)


def compact(index: Path, m: Manifest, target_bytes: int = SEGMENT_TARGET_BYTES) -> int:
    """Merge small segments and rewrite those less than half live; returns the number of segments rewritten.

    New segments are written first, then the manifest pointing at them, then the old files are deleted."""
    live = m.segment_rows()
    row_bytes = 4 * m.dim
    total_rows: dict[int, int] = {}
    for s in live:
        arr = np.load(segment_path(index, s), mmap_mode="r")
        total_rows[s] = int(arr.shape[0])
    small = [s for s in sorted(live) if total_rows[s] * row_bytes < target_bytes // 2]
    sparse = [s for s in sorted(live) if live[s] < total_rows[s] / 2]
    redo = sorted(set(sparse) | (set(small) if len(small) > 1 else set()))
    if not redo:
        return 0
    by_seg: dict[int, list[tuple[str, FileEntry]]] = {}
    for rel, e in m.files.items():
        if e.segment in redo:
            by_seg.setdefault(e.segment, []).append((rel, e))
    pending: list[tuple[str, np.ndarray]] = []
    pending_bytes = 0

    def flush() -> None:
        nonlocal pending, pending_bytes
        if not pending:
            return
        seg = m.next_segment
        m.next_segment += 1
        write_segment(index, seg, np.concatenate([a for _, a in pending]))
        row = 0
        for rel, a in pending:
            e = m.files[rel]
            e.segment, e.row = seg, row
            row += a.shape[0]
        pending, pending_bytes = [], 0

    for s in redo:
        arr = np.load(segment_path(index, s), mmap_mode="r")
        for rel, e in sorted(by_seg.get(s, []), key=lambda t: t[1].row):
            pending.append((rel, np.array(arr[e.row : e.row + e.n_frames])))
            pending_bytes += e.n_frames * row_bytes
            if pending_bytes >= target_bytes:
                flush()
    flush()
    write_manifest(index, m)
    delete_segments(index, [s for s in redo if s not in m.segment_rows()])
    return len(redo)


@dataclass
class IndexView:
    """A consistent read-only view: the manifest and memory maps of its segments."""

    index: Path
    manifest: Manifest
    segments: dict[int, np.ndarray]


def open_index(index: str | os.PathLike) -> IndexView:
    """Manifest + memory-mapped segments (SearchIndexError when missing or damaged)."""
    p = Path(index)
    if not (p / MANIFEST).is_file():
        raise SearchIndexError(f"{p} is not a model.search index (no {MANIFEST}); build it with `python -m model.search index`")  # fmt: skip
    with read_lock(p):
        m = read_manifest(p)
        assert m is not None
        segs = {}
        for s in sorted(m.segment_rows()):
            try:
                segs[s] = np.load(segment_path(p, s), mmap_mode="r")
            except (OSError, ValueError) as e:
                raise SearchIndexError(f"{p}: segment {s} is missing or damaged ({e}); run `python -m model.search index` again") from None  # fmt: skip
    for rel, e in m.files.items():
        a = segs[e.segment]
        if a.ndim != 2 or a.shape[1] != m.dim or e.row + e.n_frames > a.shape[0]:
            raise SearchIndexError(f"{p}: rows of {rel} are outside segment {e.segment}; run `python -m model.search index` again")  # fmt: skip
    return IndexView(p, m, segs)
