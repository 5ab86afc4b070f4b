"""Corpus ingest: metadata file + audio folder -> manifest table (one row per decodable file).

Metadata: ``metadata.csv`` (the dev corpus format: id, path, source, license, filename, tags ";"-separated,
description, duration_s, sample_rate, channels, category), or CSV/TSV/JSONL/Parquet with at least ``path``.
With no metadata file in the corpus folder, the folder is scanned for audio files (sorted) instead. A remote
corpus (URI) is never listed: :func:`metadata_rows` (``pipelines/caption.py``) reads ``<corpus>/metadata.csv``,
:func:`ingest_corpus` needs its metadata passed explicitly.

Choices:
- Relative paths resolve against the corpus folder (also when the metadata file lives elsewhere); the
  manifest stores absolute local paths or the URIs as given.
- Duration, sample rate and channels are always *probed* (libsndfile header + decoding the first/last 4096
  frames); metadata values for them are ignored.
- A row without ``id`` gets the path relative to the corpus folder (posix, extension kept) as its id, which
  is stable and unique per file.
- Skips are counted, never fatal: missing file (``missing_file``), undecodable or NaN/inf samples
  (``decode_error``), cut short (``truncated``: the container promises more than the file holds, see
  synth.audio), no samples (``empty_audio``), empty path (``bad_metadata``), a path outside the corpus
  folder (``outside_corpus``, unless ``cfg.allow_outside_corpus``), the same file reached by a second path
  (``duplicate_path``, compared by real path: ``../c/x.wav`` and ``/abs/c/x.wav``, or a symlink), and a
  **duplicate id** (``duplicate_id``). The first row of an id or a file is kept, later rows are skipped
  (:func:`dedupe_rows`, also used by ``pipelines/caption.py``). Each skip is logged with its reason.
- Loudness (``cfg.measure_loudness``): the file is decoded to 48 kHz mono (as the renderer sees it, with
  :func:`synth.audio.decode_mono`, which also checks every sample) and measured with
  ``synth.loudness.measure_loudness_db``; a silent file stores null. Files whose channels cancel in the
  down-mix (one channel used instead) are counted as ``downmix_channel_fallback``.
- ``cfg.verify_full``: without loudness, decode every frame at probe time (NaN/inf and truncation checks
  on the whole file, as :func:`synth.audio.decode_mono` makes them when the file is used).
- ``probe_row`` / ``try_probe_row`` are the per-row functions a Beam pipeline can map; the split needs all
  ids of a kind, so ``probe_row`` leaves ``split`` unset and :func:`synth.split.assign_splits` fills it.
- ``cfg.workers > 1`` probes in a process pool (spawn), results in metadata order.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from synth.audio import AUDIO_EXTENSIONS, TARGET_SR, decode_mono, is_uri, local_path, probe_audio
from synth.captions import fallback_captions
from synth.errors import AudioDecodeError, MetadataError
from synth.filtering import FilterConfig, SourceTypeConfig, classify_kind, source_type_of
from synth.manifest import KINDS, SPLITS, conform_manifest
from synth.split import SplitConfig, assign_splits, split_counts
from synth.tags import parse_tags

log = logging.getLogger(__name__)

METADATA_NAMES = ("metadata.csv", "metadata.jsonl", "metadata.parquet", "metadata.tsv")
_CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
_JSON_SUFFIXES = {".jsonl", ".ndjson", ".json"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}


@dataclass(frozen=True)
class IngestConfig:
    """Ingest settings: paper filter/split rules plus speed/measurement knobs."""

    filter: FilterConfig = field(default_factory=FilterConfig)  # §4.2 event/background rule
    source_types: SourceTypeConfig = field(default_factory=SourceTypeConfig)  # §4.2 sfx share of events
    split: SplitConfig = field(default_factory=SplitConfig)  # §4.2 held-out sources
    n_captions: int = 3  # fallback captions per file
    measure_loudness: bool = False  # decode every file and store loudness_db (slower)
    verify_decode: bool = True  # probe also decodes the first/last 4096 frames
    verify_full: bool = False  # probe decodes every frame (finite, as many as the header says)
    workers: int = 1  # >1: process pool for probing/measuring
    allow_outside_corpus: bool = False  # accept metadata paths outside the corpus folder
    progress: bool = False  # tqdm progress bar


@dataclass(frozen=True)
class SkippedFile:
    """A metadata row that did not make it into the manifest."""

    path: str
    reason: str  # missing_file | decode_error | truncated | empty_audio | bad_metadata | duplicate_id | ...
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        """``{"path", "reason", "detail"}``: one line of the skipped-files list."""
        return {"path": self.path, "reason": self.reason, "detail": self.detail}


@dataclass
class IngestResult:
    """Manifest table, skipped rows and counts of one ingest run."""

    table: pa.Table
    skipped: list[SkippedFile]
    counts: dict[str, Any]
    elapsed_s: float = 0.0

    def summary(self) -> str:
        """One-screen text summary of the counts."""
        c = self.counts
        lines = [
            f"ingest: {c['files_seen']} files seen, {c['ingested']} ingested, {c['skipped']} skipped "
            f"in {self.elapsed_s:.1f} s",
            "  kinds: " + ", ".join(f"{k}={v}" for k, v in c["kinds"].items()),
            "  splits: "
            + ", ".join(
                f"{k}: {v['train']} train / {v['heldout']} heldout" for k, v in c["kind_splits"].items()
            ),
            "  source types: " + ", ".join(f"{k}={v}" for k, v in c["source_types"].items()),
        ]
        if c.get("downmix_channel_fallback"):
            lines.append(
                f"  down-mix: {c['downmix_channel_fallback']} files use one channel (their channels cancel)"
            )
        if c["skipped_by_reason"]:
            lines.append("  skipped: " + ", ".join(f"{k}={v}" for k, v in c["skipped_by_reason"].items()))
        for s in self.skipped[:10]:
            lines.append(f"    {s.reason}: {s.path} {s.detail}".rstrip())
        if len(self.skipped) > 10:
            lines.append(f"    ... {len(self.skipped) - 10} more")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- metadata


def _read_bytes(path: str) -> bytes:
    if is_uri(path):
        from apache_beam.io.filesystems import FileSystems

        try:
            with FileSystems.open(path) as fh:
                return fh.read()
        except Exception as exc:
            raise MetadataError(f"cannot read metadata {path}: {exc}") from exc
    p = Path(local_path(path))
    if not p.is_file():
        raise MetadataError(f"metadata file not found: {p}")
    return p.read_bytes()


def read_metadata(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a CSV/TSV/JSONL/Parquet metadata file; requires a ``path`` column; tags become lists."""
    path = os.fspath(path)
    suffix = PurePosixPath(path).suffix.lower()
    data = _read_bytes(path)
    try:
        if suffix in _CSV_SUFFIXES:
            reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")), delimiter=_CSV_SUFFIXES[suffix])
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{(k or "").strip(): v for k, v in r.items() if k is not None} for r in reader]
        elif suffix in _JSON_SUFFIXES:
            text = data.decode("utf-8-sig").strip()
            if suffix == ".json" and text.startswith("["):
                rows = json.loads(text)
            else:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            if not all(isinstance(r, dict) for r in rows):
                raise MetadataError(f"{path}: every JSON line must be an object")
            columns = sorted(set().union(*(r.keys() for r in rows))) if rows else []
        elif suffix in _PARQUET_SUFFIXES:
            table = pq.read_table(pa.BufferReader(data))
            columns, rows = table.column_names, table.to_pylist()
        else:
            raise MetadataError(
                f"{path}: unknown metadata format {suffix!r} (use .csv, .tsv, .jsonl or .parquet)"
            )
    except MetadataError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error, pa.ArrowInvalid) as exc:
        raise MetadataError(f"cannot parse metadata {path}: {exc}") from exc
    if "path" not in columns:
        raise MetadataError(f"{path}: metadata needs a 'path' column; found {columns}")
    for r in rows:
        if "tags" in r:
            r["tags"] = parse_tags(r["tags"])
    return rows


def find_metadata(corpus_dir: str | os.PathLike) -> str | None:
    """The first of ``metadata.{csv,jsonl,parquet,tsv}`` in a local corpus folder, else None."""
    for name in METADATA_NAMES:
        p = Path(local_path(corpus_dir)) / name
        if p.is_file():
            return str(p)
    return None


def scan_audio_files(corpus_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows ``{"path": relative}`` for every audio file under a local folder (sorted, hidden files skipped)."""
    root = Path(local_path(corpus_dir))
    files = [
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in AUDIO_EXTENSIONS
        and not any(s.startswith(".") for s in p.parts)
    ]
    return [{"path": p.relative_to(root).as_posix()} for p in sorted(files)]


# ----------------------------------------------------------------------------------------------- per row


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def resolve_path(path_value: str, corpus_dir: str | os.PathLike) -> str:
    """Absolute local path or URI of a metadata ``path`` value (relative paths join the corpus folder)."""
    p = _text(path_value)
    if not p:
        raise MetadataError("metadata row has an empty 'path'")
    if is_uri(p):
        return p
    p = local_path(p)
    base = os.fspath(corpus_dir)
    if os.path.isabs(p):
        return os.path.normpath(p)
    if is_uri(base):
        rel = PurePosixPath(p.replace("\\", "/")).as_posix()
        while rel.startswith("./"):
            rel = rel[2:]
        return base.rstrip("/") + "/" + rel
    return os.path.normpath(os.path.join(os.path.abspath(local_path(base)), p))


def relative_id(path_value: str, corpus_dir: str | os.PathLike) -> str:
    """Stable id from a path: its posix path relative to the corpus folder (extension kept)."""
    full = resolve_path(path_value, corpus_dir)
    base = os.fspath(corpus_dir)
    if is_uri(full) or is_uri(base):
        prefix = base.rstrip("/") + "/"
        return full[len(prefix) :] if full.startswith(prefix) else full
    rel = os.path.relpath(full, os.path.abspath(local_path(base)))
    return (
        PurePosixPath(Path(rel).as_posix()).as_posix() if not rel.startswith("..") else Path(full).as_posix()
    )


def row_id(row: Mapping[str, Any], corpus_dir: str | os.PathLike) -> str:
    """The row's ``id`` if given, else :func:`relative_id` of its path."""
    rid = _text(row.get("id"))
    return rid or relative_id(_text(row.get("path")), corpus_dir)


def _default_source(path_value: str) -> str:
    parts = PurePosixPath(_text(path_value).replace("\\", "/")).parts
    return parts[-2] if len(parts) >= 2 and not is_uri(path_value) else ""


DOWNMIX_KEY = "downmix_channel"  # transient key of probe_row (not a manifest column)


def probe_row(
    row: Mapping[str, Any], corpus_dir: str | os.PathLike, cfg: IngestConfig = IngestConfig()
) -> dict:
    """One metadata row -> one manifest row (``split`` left None). Raises AudioDecodeError / MetadataError.

    With ``cfg.measure_loudness`` the row also carries :data:`DOWNMIX_KEY` (the channel used when the
    channels cancel, else None), which the manifest schema drops."""
    path_value = _text(row.get("path"))
    full = resolve_path(path_value, corpus_dir)
    # measuring loudness decodes the whole file anyway, which verifies it better than head/tail reads
    info = probe_audio(
        full,
        verify=cfg.verify_decode and not cfg.measure_loudness,
        full=cfg.verify_full and not cfg.measure_loudness,
    )
    filename = _text(row.get("filename")) or PurePosixPath(full.replace("\\", "/")).name
    out: dict[str, Any] = {
        "id": row_id(row, corpus_dir),
        "path": full,
        "source": _text(row.get("source")) or _default_source(path_value),
        "license": _text(row.get("license")),
        "filename": filename,
        "tags": parse_tags(row.get("tags")),
        "description": _text(row.get("description")),
        "duration_s": float(info.duration_s),
        "sample_rate": info.sample_rate,
        "channels": info.channels,
        "category": _text(row.get("category")),
    }
    out["kind"] = classify_kind(out, cfg.filter)
    out["split"] = None
    out["source_type"] = source_type_of(out, cfg.source_types)
    out["captions"] = fallback_captions(out["tags"], out["description"], filename, n=cfg.n_captions)
    out["caption_source"] = "fallback"
    out["caption_model"] = None
    out["prompt_version"] = None
    out["loudness_db"] = None
    if cfg.measure_loudness:
        from synth.loudness import measure_loudness_db

        mono = decode_mono(full, TARGET_SR)
        loud = float(measure_loudness_db(mono.audio, TARGET_SR))
        out["loudness_db"] = loud if math.isfinite(loud) else None
        out[DOWNMIX_KEY] = mono.channel
    return out


def try_probe_row(
    row: Mapping[str, Any], corpus_dir: str | os.PathLike, cfg: IngestConfig = IngestConfig()
) -> tuple[dict | None, SkippedFile | None]:
    """:func:`probe_row` that turns bad input into a :class:`SkippedFile` (for pools and Beam maps)."""
    try:
        return probe_row(row, corpus_dir, cfg), None
    except AudioDecodeError as exc:
        return None, SkippedFile(exc.path, exc.reason_code, exc.reason)
    except MetadataError as exc:
        return None, SkippedFile(_text(row.get("path")), "bad_metadata", str(exc))


def _probe_task(args: tuple[Mapping[str, Any], str, IngestConfig]) -> tuple[dict | None, SkippedFile | None]:
    return try_probe_row(*args)


# ----------------------------------------------------------------------------------------------- corpus


def metadata_rows(
    corpus_dir: str | os.PathLike,
    metadata: str | os.PathLike | pa.Table | Iterable[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The metadata rows of a corpus: ``metadata`` (a file, table or rows) when given, else the corpus's own.

    Without ``metadata``: a remote corpus (URI) reads ``<corpus>/metadata.csv`` (remote folders are not
    listed); a local folder its first ``metadata.*`` file, or, with none, a scan for audio files.
    """
    corpus_dir = os.fspath(corpus_dir)
    if metadata is None:
        if is_uri(corpus_dir):
            return read_metadata(corpus_dir.rstrip("/") + "/metadata.csv")
        found = find_metadata(corpus_dir)
        if found is None:
            if not Path(local_path(corpus_dir)).is_dir():
                raise MetadataError(f"no metadata file and no local corpus folder at {corpus_dir}")
            log.info("no metadata file in %s: scanning for audio files", corpus_dir)
            return scan_audio_files(corpus_dir)
        return read_metadata(found)
    if isinstance(metadata, str | os.PathLike):
        return read_metadata(metadata)
    if isinstance(metadata, pa.Table):
        metadata = metadata.to_pylist()
    rows = [dict(r) for r in metadata]
    if rows and not any("path" in r for r in rows):
        raise MetadataError("metadata rows need a 'path' key")
    return rows


def _resolved_key(full: str) -> str:
    """What identifies a file: the real path of a local file (symlinks and ``..`` resolved), a URI as given."""
    return full if is_uri(full) else os.path.realpath(full)


def is_inside(full: str, corpus_dir: str | os.PathLike) -> bool:
    """True when the resolved path or URI ``full`` lies under the corpus folder (lexically: ``..`` leaving
    the folder is outside; a symlink inside the folder is inside)."""
    base = os.fspath(corpus_dir)
    if is_uri(base) or is_uri(full):
        return is_uri(base) and is_uri(full) and full.startswith(base.rstrip("/") + "/")
    root = os.path.abspath(local_path(base))
    return os.path.commonpath([root, os.path.abspath(full)]) == root


def dedupe_rows(
    rows: Iterable[Mapping[str, Any]], corpus_dir: str | os.PathLike, allow_outside: bool = True
) -> tuple[list[dict[str, Any]], list[SkippedFile]]:
    """Give every metadata row its id (:func:`row_id`); keep the first row of each id and of each file.

    Returns (kept rows with ``id`` set, in order; skipped rows: ``bad_metadata`` when no id can be made,
    ``duplicate_id`` for later rows of an id, ``duplicate_path`` for later rows reaching the same file by
    another path (``../x.wav`` and ``/abs/x.wav``, a symlink), ``outside_corpus`` for paths outside the
    corpus folder when ``allow_outside`` is False - :func:`ingest_corpus` passes
    ``IngestConfig.allow_outside_corpus``, False by default)."""
    kept: list[dict[str, Any]] = []
    skipped: list[SkippedFile] = []
    first_path: dict[str, str] = {}
    first_file: dict[str, str] = {}
    for row in rows:
        path_value = _text(row.get("path"))
        try:
            rid = row_id(row, corpus_dir)
            full = resolve_path(path_value, corpus_dir)
        except MetadataError as exc:
            skipped.append(SkippedFile(path_value, "bad_metadata", str(exc)))
            continue
        if rid in first_path:
            skipped.append(
                SkippedFile(path_value, "duplicate_id", f"id {rid!r} already used by {first_path[rid]}")
            )
            continue
        if not allow_outside and not is_inside(full, corpus_dir):
            skipped.append(
                SkippedFile(
                    path_value,
                    "outside_corpus",
                    f"{full} is outside the corpus folder {os.fspath(corpus_dir)} (allow with "
                    "--allow-outside-corpus)",
                )
            )
            continue
        key = _resolved_key(full)
        if key in first_file:
            skipped.append(
                SkippedFile(path_value, "duplicate_path", f"the same file as {first_file[key]} ({key})")
            )
            continue
        first_path[rid] = path_value
        first_file[key] = path_value
        kept.append({**row, "id": rid})
    return kept, skipped


def ingest_counts(
    files_seen: int, rows: Sequence[Mapping[str, Any]], skipped: Sequence[SkippedFile]
) -> dict[str, Any]:
    """Counts of an ingest: files seen, ingested, skipped (by reason), kinds, splits, source types."""
    kinds = Counter(r["kind"] for r in rows)
    splits = Counter(r["split"] for r in rows)
    per_kind = split_counts(rows)
    return {
        "files_seen": files_seen,
        "ingested": len(rows),
        "skipped": len(skipped),
        "skipped_by_reason": dict(sorted(Counter(s.reason for s in skipped).items())),
        "kinds": {k: kinds.get(k, 0) for k in KINDS},
        "splits": {s: splits.get(s, 0) for s in SPLITS},
        "kind_splits": {k: per_kind.get(k, {"train": 0, "heldout": 0}) for k in KINDS},
        "source_types": dict(sorted(Counter(r["source_type"] for r in rows).items())),
        "event_source_types": dict(
            sorted(Counter(r["source_type"] for r in rows if r["kind"] == "event").items())
        ),
        "loudness_measured": sum(r.get("loudness_db") is not None for r in rows),
        "downmix_channel_fallback": sum(r.get(DOWNMIX_KEY) is not None for r in rows),
    }


def ingest_corpus(
    corpus_dir: str | os.PathLike,
    metadata: str | os.PathLike | pa.Table | Iterable[Mapping[str, Any]] | None = None,
    cfg: IngestConfig = IngestConfig(),
) -> IngestResult:
    """Probe, filter, split and caption every file of a corpus into a manifest table (skips are counted)."""
    t0 = time.perf_counter()
    corpus = os.fspath(corpus_dir)
    if metadata is None and is_uri(corpus):  # unlike metadata_rows, no implied <corpus>/metadata.csv here
        raise MetadataError(f"no metadata file and no local corpus folder at {corpus} (pass metadata)")
    rows = metadata_rows(corpus, metadata)
    todo, skipped = dedupe_rows(rows, corpus, cfg.allow_outside_corpus)

    tasks = [(r, corpus, cfg) for r in todo]
    bar = dict(total=len(tasks), desc="ingest", unit="file", disable=not cfg.progress)
    if cfg.workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=get_context("spawn")) as pool:
            results = list(tqdm(pool.map(_probe_task, tasks, chunksize=8), **bar))
    else:
        results = [_probe_task(t) for t in tqdm(tasks, **bar)]

    out: list[dict[str, Any]] = []
    for good, bad in results:
        if good is not None:
            out.append(good)
        else:
            skipped.append(bad)
    for s in skipped:
        log.warning("ingest: skipping %s (%s): %s", s.path, s.reason, s.detail)
    for r in out:
        if r.get(DOWNMIX_KEY) is not None:
            log.info(
                "ingest: %s: its channels cancel in the mean; channel %d is used", r["path"], r[DOWNMIX_KEY]
            )
    assign_splits(out, cfg.split)
    table = conform_manifest(out)
    counts = ingest_counts(len(rows), out, skipped)
    result = IngestResult(table=table, skipped=skipped, counts=counts, elapsed_s=time.perf_counter() - t0)
    log.info("%s", result.summary())
    return result
