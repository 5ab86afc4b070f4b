"""SourceBank: every source of a split decoded once at 48 kHz into memory-mapped files that processes share.

`render_mixture` needs each source as float32, plus what `AudioCache` memoises for it: the cumulative
A-weighted energy of events (relabeling long pieces without per-sample work, `synth.render.event_block_energies`),
the A-weighted block energies of backgrounds (the loudness of the window used) and a loudness for sources the
manifest gives none. An `AudioCache` holds those per process; a bank holds them once per machine: raw
little-endian arrays in files that every reader maps read-only, so N processes share one copy in the page cache.

Layout of a bank folder ``ROOT/<fingerprint>/``::

    chunk-NNNNNN.audio    int16 (or float32) samples of up to `chunk_sources` sources, back to back
    chunk-NNNNNN.energy   float64 cumulative A-weighted energy of the chunk's event sources (optional)
    chunk-NNNNNN.blocks   float64 A-weighted block energies of the chunk's backgrounds (2400/1200 frames)
    chunk-NNNNNN.json     per source: id, offset, length, scale, loudness_db, energy/blocks offsets; failures
    bank.json             options, counts, decode failures by reason, chunks to retry — written last: complete

Choices:
- **Sources**: every row of the split a `SourcePool` could use under any recipe (captioned events and
  backgrounds of any length: the recipe's `min_event_s` / clip length filter when the pool is built), optionally
  one part of ``parts`` (``stable_int(id) % parts``), sorted by id; chunk k holds sources [k·C, (k+1)·C).
- **int16 with a per-source scale** (default): a source whose float32 decoding is exactly k / 32768 (16-bit
  PCM at 48 kHz) is stored as those k and comes back bit-exact; any other source (resampled, 24-bit, lossy) is
  scaled so its peak maps to 32767 and rounded: error <= peak / 65534, i.e. ~96 dB below the source's own
  peak whatever its level. ``float32`` stores the decoding itself (twice the bytes, renders bit-identical to an
  `AudioCache`).
- **Measurements** come from the exact float32 decoding through `AudioCache` itself (`loudness_db` when the
  manifest lacks it, `weighted_energy` of events, `block_energy` of backgrounds): the same code and numbers
  as the shard pipeline, so gains and labels do not depend on the storage type; only the mixed samples carry
  the int16 rounding. Energy costs 8 bytes per event sample (without it a renderer filters each piece
  whole, ~2× slower relabeling); block energies 8 bytes per 600 background samples.
- **Build**: chunks decoded in a process pool, each written under a temporary name and renamed; the chunk's
  JSON, which vouches for its data files, is removed before they are replaced and written last (a build or
  retry killed in between leaves the chunk missing, not mismatched). A killed build resumes at the missing
  chunks; a file lock makes concurrent builders of one bank (ranks of a node) wait for the first. A source
  that cannot be decoded is left out, counted by reason and logged with its path; `SourceBank.ids` are the
  sources that made it. A corrupt or truncated file is final; a missing or unreadable one
  (`TRANSIENT_REASONS`: a mount, a permission, network storage) is not: bank.json lists its chunk, and a
  later `prepare_bank` that finds the file readable rebuilds that chunk (readers take a shared lock to open
  a bank and map every chunk file then, so a retry never mixes files).
- **Fingerprint**: sha256 over the options, the block frames and, per source, id, path, duration, rate,
  channels, loudness and kind: a manifest change that touches what is stored makes a new bank. Captions are
  not stored, but they decide which events are: an edit that leaves an event without captions (or gives a
  caption-less one captions) changes the rows and so the bank; any other caption edit keeps it (the pool's
  captions are read from the manifest). `BANK_VERSION` is in it too: a new bank's build names (WARNING) the
  banks under the same root another version built, which are never reused.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import mmap
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synth.errors import AudioDecodeError
from synth.loudness import frame_block
from synth.paths import is_uri, local_path
from synth.records import json_record_bytes, stable_int

log = logging.getLogger(__name__)

BANK_VERSION = 3  # 2: bank.json records the chunks to retry; 3: the fingerprint covers kind and block frames
BANK_NAME = "bank.json"
DTYPES = ("int16", "float32")
EXACT_SCALE = 2.0**-15  # 16-bit PCM: libsndfile decodes sample k as k / 32768
# what a row decides about its stored bytes: the audio (path, header), the loudness (stored when given, else
# measured) and the kind (events store energy, backgrounds block energies)
_FINGERPRINT_KEYS = ("id", "path", "duration_s", "sample_rate", "channels", "loudness_db", "kind")
# decode failures that may pass (the file is missing or unreadable now: a mount, a permission, network storage):
# not final, a later build retries them once the file is readable; any other reason (corrupt, truncated) is final
TRANSIENT_REASONS = frozenset({"missing_file", "read_error"})
LOCK_LOG_EVERY_S = 60.0  # ours: a process waiting for another's bank lock says so, then again this often


@dataclass(frozen=True)
class BankOptions:
    dtype: str = "int16"  # ours: "int16" (per-source scale, see module doc) | "float32" (exact)
    energy: bool = True  # ours: store event sources' cumulative A-weighted energy (8 B per event sample)
    sample_rate: int = 48000  # §4.2: mixtures are rendered at 48 kHz
    chunk_sources: int = 256  # ours: sources per chunk file (the unit of parallel and resumed building)
    workers: int = 0  # build processes; 0 = one per available core
    part: int = 0  # this bank holds sources with stable_int(id) % parts == part
    parts: int = 1

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"BankOptions: dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.chunk_sources < 1 or self.workers < 0 or self.sample_rate <= 0:
            raise ValueError("BankOptions: chunk_sources >= 1, workers >= 0 and sample_rate > 0 are required")
        if not 0 <= self.part < self.parts:
            raise ValueError(f"BankOptions: need 0 <= part < parts, got part {self.part} of {self.parts}")


# ------------------------------------------------------------------------------------------ choosing sources


def in_part(source_id: str, part: int, parts: int) -> bool:
    """Whether a source belongs to bank part `part` of `parts` (stable across machines and Pythons)."""
    return parts == 1 or stable_int(str(source_id)) % parts == part


def bank_rows(
    rows: Sequence[Mapping[str, Any]], split: str | None, part: int = 0, parts: int = 1
) -> list[dict]:
    """The rows of `split` (and part) a `SourcePool` could use under any recipe, sorted by id."""
    from synth.spec import SourcePool

    mine = [
        dict(r) for r in rows if (split is None or r.get("split") == split) and in_part(r["id"], part, parts)
    ]
    pool = SourcePool.from_manifest(mine, split, min_background_s=0.0, min_event_s=0.0)
    keep = {s.id for s in (*pool.sfx, *pool.general, *pool.backgrounds)}
    return sorted((r for r in mine if str(r["id"]) in keep), key=lambda r: str(r["id"]))


def _blocks_win_hop() -> tuple[int, int]:
    """The loudness frames backgrounds' block energies are stored at (the relabel frames)."""
    from synth.relabel import RelabelConfig

    return RelabelConfig().win, RelabelConfig().hop


def bank_fingerprint(rows: Sequence[Mapping[str, Any]], opts: BankOptions) -> str:
    """sha256 over what decides the stored bytes: options, block frames and each row's `_FINGERPRINT_KEYS`."""
    h = hashlib.sha256()
    o = asdict(opts)
    o.pop("workers")  # how many processes built it changes no byte
    h.update(json_record_bytes({"version": BANK_VERSION, "options": o, "blocks_win_hop": _blocks_win_hop()}))
    for r in rows:
        h.update(json_record_bytes({k: r.get(k) for k in _FINGERPRINT_KEYS}))
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ building


def quantize_source(x: np.ndarray, dtype: str) -> tuple[np.ndarray, float]:
    """(stored samples, scale): float32 = stored · scale (see module doc)."""
    x = np.asarray(x, dtype=np.float32)
    if dtype == "float32":
        return x, 1.0
    k = x * np.float32(32768.0)
    if np.array_equal(k, np.rint(k)) and (len(k) == 0 or (k.min() >= -32768 and k.max() <= 32767)):
        return k.astype(np.int16), EXACT_SCALE
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    scale = peak / 32767.0 if peak > 0 else EXACT_SCALE
    q = np.rint(x / np.float32(scale))
    np.clip(q, -32768, 32767, out=q)
    return q.astype(np.int16), scale


def dequantize(stored: np.ndarray, scale: float) -> np.ndarray:
    """float32 samples of a stored source (a new array; a view for float32 banks)."""
    if stored.dtype == np.float32:
        return stored
    return np.multiply(stored, np.float32(scale), dtype=np.float32)


def _chunk_name(k: int, ext: str) -> str:
    return f"chunk-{k:06d}.{ext}"


def _write_atomic(path: Path, data: bytes | np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        if isinstance(data, np.ndarray):
            data.tofile(f)
        else:
            f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _decode(row: Mapping[str, Any], sr: int) -> np.ndarray:
    from synth.audio import load_audio  # the decoder AudioCache uses (imported lazily, as there)

    return np.ascontiguousarray(load_audio(str(row["path"]), target_sr=sr), dtype=np.float32)


def _failure_reason(path: str, e: Exception) -> str:
    """The skip reason of a failed decoding: the error's, or ``read_error`` when the file itself cannot be read
    (libsndfile reports a file it may not open or read, a permission or an I/O error, as undecodable)."""
    reason = getattr(e, "reason_code", "read_error")
    if reason in TRANSIENT_REASONS or is_uri(path):
        return reason
    try:
        with open(local_path(path), "rb") as f:
            while f.read(1 << 20):
                pass
    except OSError:
        return "read_error"
    return reason


def _readable(path: str) -> bool:
    """Whether a source that failed for a transient reason can be read now (a URI: whether it exists)."""
    if is_uri(path):
        from apache_beam.io.filesystems import FileSystems  # heavy import: only for URIs

        try:
            return bool(FileSystems.exists(path))
        except Exception:  # Beam raises BeamIOError/OSError/... depending on the filesystem
            return False
    p = local_path(path)
    return os.path.isfile(p) and os.access(p, os.R_OK)


def _retry_due(info: Mapping[str, Any]) -> bool:
    """Whether a built chunk left out a source for a transient reason whose file is readable now."""
    return any(f["reason"] in TRANSIENT_REASONS and _readable(f["path"]) for f in info["failed"])


def build_chunk(folder: str, k: int, rows: Sequence[Mapping[str, Any]], opts: BankOptions) -> dict[str, Any]:
    """Decode, store and describe chunk k; returns its JSON (also written as the chunk's completion mark)."""
    from synth.source_cache import AudioCache

    sr, root = opts.sample_rate, Path(folder)
    win, hop = _blocks_win_hop()
    parts: dict[str, list[np.ndarray]] = {"audio": [], "energy": [], "blocks": []}
    keys = ("ids", "offsets", "lengths", "scales", "loudness_db", "energy_offsets", "blocks_offsets")
    meta: dict[str, list] = {key: [] for key in keys}
    ends = {"audio": 0, "energy": 0, "blocks": 0}
    failed = []
    t0 = time.perf_counter()
    for row in rows:
        sid = str(row["id"])
        try:
            x = _decode(row, sr)
            if x.ndim != 1 or len(x) == 0:
                raise AudioDecodeError(str(row["path"]), f"decoded to shape {x.shape}", "empty_audio")
        except (AudioDecodeError, OSError) as e:
            reason = _failure_reason(str(row["path"]), e)
            failed.append({"id": sid, "path": str(row["path"]), "reason": reason, "detail": str(e)})
            continue
        exact = AudioCache(
            {sid: ""}, sr=sr, load_fn=lambda _p, _sr, x=x: x
        )  # measurements, as the pipeline's
        loud = row.get("loudness_db")
        if loud is None or not np.isfinite(float(loud)):
            loud = exact.loudness_db(sid)
        stored, scale = quantize_source(x, opts.dtype)
        extra = {
            "energy": exact.weighted_energy(sid) if opts.energy and row.get("kind") == "event" else None,
            "blocks": exact.block_energy(sid, win, hop) if row.get("kind") == "background" else None,
        }
        for name, arr in (("audio", stored), *extra.items()):
            if name != "audio":
                meta[f"{name}_offsets"].append(-1 if arr is None else ends[name])
            if arr is not None:
                parts[name].append(arr)
                ends[name] += len(arr)
        meta["ids"].append(sid)
        meta["offsets"].append(ends["audio"] - len(stored))
        meta["lengths"].append(len(stored))
        meta["scales"].append(float(scale))
        meta["loudness_db"].append(float(loud) if np.isfinite(loud) else None)
    dtypes = {"audio": "<i2" if opts.dtype == "int16" else "<f4", "energy": "<f8", "blocks": "<f8"}
    # the JSON vouches for the data files: gone while they are replaced (a kill: the chunk is missing, not mixed)
    (root / _chunk_name(k, "json")).unlink(missing_ok=True)
    for name, dtype in dtypes.items():
        if name == "energy" and not opts.energy:
            continue
        arr = np.concatenate(parts[name]) if parts[name] else np.zeros(0)
        _write_atomic(root / _chunk_name(k, name), arr.astype(dtype, copy=False))
    info = {"chunk": k, **meta, "failed": failed, "blocks_win_hop": [win, hop],
            "seconds": round(time.perf_counter() - t0, 3)}  # fmt: skip
    _write_atomic(root / _chunk_name(k, "json"), json.dumps(info).encode())
    return info


def _build_chunk_args(args: tuple) -> dict[str, Any]:
    return build_chunk(*args)


def _lock_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.lock"


@contextmanager
def _locked(path: Path, op: int) -> Iterator[None]:
    """Hold flock `op` on `path`: LOCK_EX (a builder; creates the file) or LOCK_SH (a reader; no lock when the
    file is absent or cannot be opened, e.g. a bank copied elsewhere or a read-only folder)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT if op == fcntl.LOCK_EX else os.O_RDONLY, 0o666)
    except OSError:
        if op == fcntl.LOCK_EX:
            raise
        yield
        return
    try:
        _flock_waiting(fd, op, path)
        yield
    finally:
        os.close(fd)


def _flock_waiting(fd: int, op: int, path: Path) -> None:
    """flock(fd, op), logging at INFO when it has to wait for another holder, then every LOCK_LOG_EVERY_S."""
    logged = None
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            now = time.monotonic()
            if logged is None or now - logged >= LOCK_LOG_EVERY_S:
                log.info("waiting for the source bank lock at %s held by another process", path)
                logged = now
            time.sleep(0.2)


def prepare_bank(rows: Sequence[Mapping[str, Any]], root: str | os.PathLike, opts: BankOptions) -> Path:
    """The complete bank of `rows` (already chosen, e.g. by `bank_rows`) under `root`: opened when it exists,
    else built (resuming a killed build). Concurrent callers for one bank wait for the first. Chunks that left
    out a source for a transient reason (`TRANSIENT_REASONS`) whose file is readable again are rebuilt."""
    rows = sorted(rows, key=lambda r: str(r["id"]))
    if not rows:
        raise ValueError("prepare_bank: no sources to store")
    fp = bank_fingerprint(rows, opts)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / fp[:16]
    with _locked(_lock_path(folder), fcntl.LOCK_EX):
        c = opts.chunk_sources
        chunks = [(k, rows[k * c : (k + 1) * c]) for k in range(-(-len(rows) // c))]
        meta_path = folder / BANK_NAME
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
        candidates = meta["retry_chunks"] if meta is not None else range(len(chunks))
        redo = [k for k in candidates if not (folder / _chunk_name(k, "json")).is_file()
                or _retry_due(json.loads((folder / _chunk_name(k, "json")).read_text()))]  # fmt: skip
        if meta is not None and not redo:
            if meta["unreadable"]:
                log.warning("source bank %s: %d sources left out because they could not be read are still "
                            "unreadable; a later build retries them once they are", folder, meta["unreadable"])  # fmt: skip
            return folder
        if meta is not None:  # not complete while chunks are rebuilt (readers wait on the lock meanwhile)
            meta_path.unlink()
        if not folder.exists():
            _warn_other_versions(root, folder)
        folder.mkdir(exist_ok=True)
        todo = [(str(folder), k, chunks[k][1], opts) for k in redo]
        t0 = time.perf_counter()
        log.info(
            "source bank %s: %d sources, %d of %d chunks to build", folder, len(rows), len(todo), len(chunks)
        )
        workers = min(opts.workers or len(os.sched_getaffinity(0)), len(todo))
        if workers > 1:
            with multiprocessing.get_context("forkserver").Pool(workers) as pool:
                for info in pool.imap_unordered(_build_chunk_args, todo):
                    _log_chunk(info, len(chunks))
        else:
            for args in todo:
                _log_chunk(build_chunk(*args), len(chunks))
        infos = [json.loads((folder / _chunk_name(k, "json")).read_text()) for k, _ in chunks]
        failed = [f for info in infos for f in info["failed"]]
        by_reason = Counter(f["reason"] for f in failed)
        unreadable = [f for f in failed if f["reason"] in TRANSIENT_REASONS]
        n_ok = sum(len(info["ids"]) for info in infos)
        if n_ok == 0:
            raise ValueError(f"source bank {folder}: none of the {len(rows)} sources could be decoded "
                             f"({dict(by_reason)}; e.g. {failed[0]['path']}: {failed[0]['detail']}); "
                             f"{_failure_advice(folder, unreadable, len(failed))}")  # fmt: skip
        stats = {
            "version": BANK_VERSION, "fingerprint": fp, "options": asdict(opts), "sources": n_ok,
            "failed": dict(sorted(by_reason.items())), "failed_examples": failed[:10], "chunks": len(chunks),
            "unreadable": len(unreadable),
            "retry_chunks": [info["chunk"] for info in infos
                             if any(f["reason"] in TRANSIENT_REASONS for f in info["failed"])],
            "samples": sum(sum(info["lengths"]) for info in infos),
            "audio_bytes": sum((folder / _chunk_name(k, "audio")).stat().st_size for k, _ in chunks),
            "energy_bytes": sum((folder / _chunk_name(k, "energy")).stat().st_size for k, _ in chunks)
            if opts.energy else 0,
            "blocks_bytes": sum((folder / _chunk_name(k, "blocks")).stat().st_size for k, _ in chunks),
            "build_s": round(time.perf_counter() - t0, 2), "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }  # fmt: skip
        _write_atomic(meta_path, json.dumps(stats, indent=1).encode())
        log.info("source bank %s: %d sources, %.1f MB audio + %.1f MB energy, %d failed %s, %.1f s", folder, n_ok,
                 stats["audio_bytes"] / 1e6, stats["energy_bytes"] / 1e6, len(failed), dict(by_reason),
                 stats["build_s"])  # fmt: skip
        if unreadable:
            log.warning("source bank %s: %s", folder, _failure_advice(folder, unreadable, len(unreadable)))
        return folder


def _warn_other_versions(root: Path, new: Path) -> None:
    """Name the banks under `root` another version of synth.bank built: the version is in the fingerprint, so
    such a bank (e.g. one built ahead) is never reused, and a new build can take hours. Reads only bank.json."""
    for meta_path in sorted(root.glob(f"*/{BANK_NAME}")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):  # not a bank this module wrote: not ours to judge
            continue
        version = meta.get("version") if isinstance(meta, dict) else None
        if version is not None and version != BANK_VERSION:
            log.warning("source bank %s was built by synth.bank version %s and cannot be reused (this is version "
                        "%d): building a new bank in %s; delete the old one when no run uses it",
                        meta_path.parent, version, BANK_VERSION, new)  # fmt: skip


def _failure_advice(folder: Path, unreadable: Sequence[Mapping[str, Any]], n_failed: int) -> str:
    """What to do about sources a build left out."""
    out = []
    if unreadable:
        out.append(f"{len(unreadable)} could not be read (e.g. {unreadable[0]['path']}): check that their storage "
                   "is mounted and readable; the next build retries them")  # fmt: skip
    if n_failed > len(unreadable):
        out.append(f"{n_failed - len(unreadable)} are corrupt or not audio: fix or drop them in the manifest "
                   f"(a file fixed at the same path needs `rm -r {folder}` to be read again)")  # fmt: skip
    return "; ".join(out)


def _log_chunk(info: Mapping[str, Any], total: int) -> None:
    for f in info["failed"]:
        log.warning("source bank: %s (%s) left out: %s: %s", f["id"], f["path"], f["reason"], f["detail"])
    log.info("source bank: chunk %d of %d (%d sources) in %.1f s", info["chunk"] + 1, total, len(info["ids"]),
             info["seconds"])  # fmt: skip


# ------------------------------------------------------------------------------------------ reading


class BankSource:
    """An int16 source of a bank as a read-only float32 sequence: `len`, slicing (dequantises the slice) and
    `np.asarray` (the whole source) — what `render_mixture` does with a source."""

    __slots__ = ("_q", "_scale")
    ndim = 1
    dtype = np.dtype(np.float32)

    def __init__(self, stored: np.ndarray, scale: float) -> None:
        self._q, self._scale = stored, scale

    def __len__(self) -> int:
        return len(self._q)

    @property
    def shape(self) -> tuple[int]:
        return (len(self._q),)

    def __getitem__(self, key: Any) -> Any:
        return dequantize(self._q[key], self._scale)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        x = dequantize(self._q, self._scale)
        return x if dtype is None else x.astype(dtype, copy=False)


class SourceBank:
    """A complete bank, opened read-only: a `render_mixture` source loader with `AudioCache`'s interface
    (`bank(id)` → float32, `loudness_db`, `weighted_energy` when stored, `block_energy`). Pickles as its path:
    each process maps the files itself.

    Nothing is copied per process: float32 banks return views of the map, int16 banks a `BankSource` that
    dequantises only the samples a mixture reads (a 10-s window of a long background, not the whole file).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        with _locked(_lock_path(self.folder), fcntl.LOCK_SH):  # a build or retry holds LOCK_EX: wait for it
            self._open()

    def _open(self) -> None:
        """Read the index and map every chunk file: the files indexed are the ones mapped, even when a later
        build retries a chunk (it replaces the chunk's files; the maps keep the ones read here)."""
        meta_path = self.folder / BANK_NAME
        if not meta_path.is_file():
            raise ValueError(f"{self.folder}: not a complete source bank (no {BANK_NAME}): build it with "
                             "synth.bank.prepare_bank (it resumes an interrupted build)")  # fmt: skip
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("version") != BANK_VERSION:
            raise ValueError(f"{self.folder}: bank version {self.meta.get('version')!r}, expected {BANK_VERSION} "
                             f"(built by another version of synth.bank: delete {self.folder} to rebuild it)")  # fmt: skip
        self.options = BankOptions(**self.meta["options"])
        self.sample_rate = self.options.sample_rate
        # id → (chunk, offset, length, scale, loudness_db, energy offset, blocks offset)
        self._index: dict[str, tuple[int, int, int, float, float | None, int, int]] = {}
        self.blocks_win_hop: tuple[int, int] | None = None
        sizes = []
        for k in range(int(self.meta["chunks"])):
            p = self.folder / _chunk_name(k, "json")
            if not p.is_file():
                raise ValueError(f"{p}: missing (a damaged bank: delete {self.folder} to rebuild it)")
            info = json.loads(p.read_text())
            self.blocks_win_hop = tuple(info["blocks_win_hop"])
            blk = frame_block(*self.blocks_win_hop)
            n_energy = n_blocks = 0
            for j, sid in enumerate(info["ids"]):
                n, e, b = info["lengths"][j], info["energy_offsets"][j], info["blocks_offsets"][j]
                self._index[sid] = (k, info["offsets"][j], n, info["scales"][j], info["loudness_db"][j], e, b)
                n_energy = max(n_energy, e + n + 1) if e >= 0 else n_energy
                n_blocks = max(n_blocks, b + -(-n // blk)) if b >= 0 else n_blocks
            sizes.append({"audio": sum(info["lengths"]), "energy": n_energy, "blocks": n_blocks})
        self._check_sizes(sizes)
        self._maps: dict[tuple[int, str], np.ndarray] = {}
        for k in range(len(sizes)):
            for name in ("audio", "energy", "blocks") if self.options.energy else ("audio", "blocks"):
                self._map(k, name)
        self._computed_blocks: dict[tuple[str, int, int], np.ndarray] = {}
        if not self.options.energy:
            self.weighted_energy = None  # render_mixture then filters every piece itself

    def _dtype(self, name: str) -> str:
        return {"audio": "<i2" if self.options.dtype == "int16" else "<f4"}.get(name, "<f8")

    def _check_sizes(self, sizes: list[dict[str, int]]) -> None:
        for k, want in enumerate(sizes):
            for name, n in want.items():
                if name == "energy" and not self.options.energy:
                    continue
                p = self.folder / _chunk_name(k, name)
                have = p.stat().st_size if p.is_file() else -1
                if have != n * np.dtype(self._dtype(name)).itemsize:
                    raise ValueError(f"{p}: {have} bytes, expected {n * np.dtype(self._dtype(name)).itemsize} "
                                     f"(a damaged bank: delete {self.folder} to rebuild it)")  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": str(self.folder)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["folder"])

    @property
    def ids(self) -> list[str]:
        return list(self._index)

    def __contains__(self, source_id: object) -> bool:
        return source_id in self._index

    def __len__(self) -> int:
        return len(self._index)

    def _map(self, k: int, name: str) -> np.ndarray:
        m = self._maps.get((k, name))
        if m is None:
            p = self.folder / _chunk_name(k, name)
            m = np.zeros(0, self._dtype(name))
            if p.stat().st_size:
                with open(p, "rb") as f:  # the mapping outlives the descriptor
                    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                m = np.frombuffer(mm, dtype=self._dtype(name))  # a plain read-only ndarray over the map
            self._maps[(k, name)] = m
        return m

    def _entry(self, source_id: str) -> tuple[int, int, int, float, float | None, int, int]:
        e = self._index.get(source_id)
        if e is None:
            raise KeyError(f"SourceBank {self.folder}: unknown source id {source_id!r}")
        return e

    def stored(self, source_id: str) -> tuple[np.ndarray, float]:
        """(the stored samples as a read-only view of the map, scale)."""
        k, off, n, scale = self._entry(source_id)[:4]
        return self._map(k, "audio")[off : off + n], scale

    def __call__(self, source_id: str) -> np.ndarray | BankSource:
        """The source as `render_mixture` reads it: a view of the map (float32 banks) or a `BankSource`."""
        stored, scale = self.stored(source_id)
        if self.options.dtype == "float32":
            return np.asarray(stored)
        return BankSource(stored, scale)

    def loudness_db(self, source_id: str) -> float:
        """Loudness of the exact decoding (the manifest's when it had one, else measured at build)."""
        loud = self._entry(source_id)[4]
        return float("-inf") if loud is None else float(loud)

    def weighted_energy(self, source_id: str) -> np.ndarray:  # replaced by None when the bank has none
        """`AudioCache.weighted_energy` of an event source's exact decoding (a read-only view)."""
        k, _, n, _, _, e, _ = self._entry(source_id)
        if e < 0:
            raise KeyError(f"SourceBank {self.folder}: no energy stored for {source_id!r} (not an event)")
        return np.asarray(self._map(k, "energy")[e : e + n + 1])

    def block_energy(self, source_id: str, win: int = 2400, hop: int = 1200) -> np.ndarray:
        """`AudioCache.block_energy`: stored for backgrounds at the bank's frames, else computed (and kept)."""
        k, _, n, _, _, _, b = self._entry(source_id)
        if b >= 0 and (win, hop) == self.blocks_win_hop:
            return np.asarray(self._map(k, "blocks")[b : b + -(-n // frame_block(win, hop))])
        key = (source_id, win, hop)
        if key not in self._computed_blocks:
            from synth.loudness import source_block_energies

            x = np.asarray(self(source_id))
            self._computed_blocks[key] = source_block_energies(x, self.sample_rate, win, hop)
        return self._computed_blocks[key]

    def nbytes(self) -> dict[str, int]:
        return {k: int(self.meta.get(f"{k}_bytes", 0)) for k in ("audio", "energy", "blocks")}
