"""Beam pipeline that renders mixtures and audio-text clips into deterministic WebDataset shards.

One Beam element = one shard index. A worker samples the specs of its index range from ``(seed, index)``,
renders and encodes them, and streams them into the shard (see :mod:`synth.shards`), so audio never travels
through Beam and the bytes do not depend on the runner, the worker count or the order shards finish in.
Complete shards are skipped, which makes a killed run resumable.

Output layout under ``out``::

    mixtures/<split>/shard-NNNNNN.tar    <key>.flac + <key>.json (DESIGN.md mixture sample), + index.json
    audio_text/<split>/shard-NNNNNN.tar  <key>.flac + <key>.json {"text": [...], "tag": [...]}, + index.json
    manifest.parquet                     the ingested manifest (only with --corpus)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

import synth
from synth import shards
from synth.errors import AudioDecodeError
from synth.flac import encode_flac
from synth.render import render_mixture
from synth.source_cache import AudioCache
from synth.spec import MixtureConfig, MixtureSpec, SourcePool, sample_spec

log = logging.getLogger(__name__)

SAMPLE_RATE = 48000  # §4.2: 48 kHz
CLIP_S = 10.0  # §4.2: 10-s clips (mixtures and audio-text clips alike)
AUDIO_TEXT_KINDS = ("event", "background", "none")  # every captioned source file of the split
CACHE_BYTES = 1 << 30  # per-worker decoded-source cache bound
PARALLEL_MIN_MIXTURES = 1000  # local default: below this many mixtures, one in-process worker
SOURCES_NAME = "sources.parquet"  # the split's manifest rows, beside the mixture shards

# Output-format version, part of every split folder's config fingerprint (so a re-run with another value into
# the same folder is refused, and complete shards from other code are never mixed with new ones).
# BUMP RULE: increment it in the same commit as any change that alters a shard byte for the same arguments:
# spec sampling (synth.spec), decoding/resampling (synth.audio), mixing, gains, fades, clip guard
# (synth.render, synth.loudness, synth.source_cache), RMS relabel (synth.relabel), FLAC encoding
# (synth.flac), tar writing (synth.shards), the sample JSON records or the skip policy below.
RENDER_FORMAT_VERSION = 1
# Sample-stat keys that are plain counters; every other key of a shard's stats is a note (a reason something
# was dropped, changed or skipped), reported by reason in index.json totals and the end-of-run summary.
MIXTURE_COUNTERS = ("mixtures", "events_placed", "events_dropped_by_relabel", "events_labelled")
AUDIO_TEXT_COUNTERS = ("clips", "cropped", "padded")
LOAD_ERRORS = (AudioDecodeError, OSError)  # a source that cannot be read on a worker: counted, logged skip


# ---------------------------------------------------------------- records


def json_record_bytes(obj: Any) -> bytes:
    """Compact canonical JSON bytes of a sample record."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def mixture_record(key: str, spec: Any, rendered: Any, sr: int) -> dict[str, Any]:
    """DESIGN.md's mixture sample JSON: ``{key, sample_rate, duration, events, spec}``."""
    events = [
        {
            "text": str(e["text"]),
            "tags": [str(t) for t in e.get("tags", [])],
            "source_id": str(e["source_id"]),
            "segments": [[float(a), float(b)] for a, b in e["segments"]],
            **({"source_ids": [str(s) for s in e["source_ids"]]} if e.get("source_ids") else {}),
        }
        for e in rendered.event_labels
    ]
    events.sort(key=lambda e: (e["segments"][0][0] if e["segments"] else 0.0, e["text"]))
    return {
        "key": key,
        "sample_rate": int(sr),
        "duration": len(rendered.audio) / sr,
        "events": events,
        "spec": spec.to_dict(),
    }


def stable_int(text: str) -> int:
    """A 64-bit integer from ``text`` that is the same on every machine and Python (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def audio_text_clip(
    audio: np.ndarray, sr: int, seed: int, source_id: str, clip_s: float = CLIP_S
) -> tuple[np.ndarray, float, float]:
    """Fixed-length audio-text clip: returns ``(clip, offset_s, valid_s)``.

    Files up to ``clip_s`` are kept whole and zero padded at the end; longer files are cropped to a
    ``clip_s`` window whose start is drawn uniformly from ``default_rng([seed, stable_int(id)])``.
    """
    n = int(round(clip_s * sr))
    if len(audio) <= n:
        clip = np.zeros(n, dtype=np.float32)
        clip[: len(audio)] = audio
        return clip, 0.0, len(audio) / sr
    start = int(np.random.default_rng([seed, stable_int(source_id)]).integers(0, len(audio) - n + 1))
    return np.ascontiguousarray(audio[start : start + n], dtype=np.float32), start / sr, n / sr


def audio_text_record(
    key: str, row: Mapping[str, Any], offset_s: float, valid_s: float, sr: int
) -> dict[str, Any]:
    """LAION-CLAP style JSON (``text`` captions, ``tag`` list) plus provenance of the clip."""
    return {
        "key": key,
        "text": [str(c) for c in row["captions"]],
        "tag": [str(t) for t in (row.get("tags") or [])],
        "source_id": str(row["id"]),
        "source": str(row.get("source") or ""),
        "license": str(row.get("license") or ""),
        "kind": str(row.get("kind") or ""),
        "caption_source": str(row.get("caption_source") or ""),
        "sample_rate": int(sr),
        "duration": CLIP_S,
        "offset": float(offset_s),
        "valid_duration": float(valid_s),
        "source_duration": float(row["duration_s"]),
    }


def drop_sources_that_fail(spec: MixtureSpec, fails: Any) -> int:
    """Leave out (in place) the events whose source ``fails(id)``; note them as ``event_source_failed``.

    The spec stored with the mixture is then exactly what was rendered. Returns the number left out.
    """
    keep = [e for e in spec.events if not fails(e.id)]
    n = len(spec.events) - len(keep)
    if n:
        spec.events = keep
        notes = Counter(spec.notes)
        notes["event_source_failed"] += n
        spec.notes = dict(sorted(notes.items()))
    return n


# ---------------------------------------------------------------- DoFns


class _ShardFn(beam.DoFn):
    """Common part: skip complete shards, write a shard atomically with its sidecar, count."""

    kind = "shards"

    def __init__(
        self, split_dir: str, fingerprint: str, num_samples: int, shard_size: int, code_version: str = ""
    ) -> None:
        self.split_dir = split_dir
        self.code_version = code_version
        self.fingerprint = fingerprint
        self.num_samples = num_samples
        self.shard_size = shard_size
        self.written = Metrics.counter("flam", f"{self.kind}_shards_written")
        self.skipped = Metrics.counter("flam", f"{self.kind}_shards_skipped")
        self.failed_sources: dict[str, str] = {}

    def source_error(self, source_id: str, load: Any) -> str | None:
        """None when ``load(source_id)`` works, else its error (remembered, logged once per source)."""
        if source_id in self.failed_sources:
            return self.failed_sources[source_id]
        try:
            load(source_id)
        except LOAD_ERRORS as e:
            self.failed_sources[source_id] = str(e)
            log.warning(
                "%s: source %r failed to load on this worker, skipping it: %s", self.kind, source_id, e
            )
            return str(e)
        return None

    def samples(self, indices: range) -> Any:  # yields (key, files or None when skipped, stats)
        raise NotImplementedError

    def process(self, shard: int) -> Any:
        expected = len(shards.shard_range(shard, self.shard_size, self.num_samples))
        if shards.is_shard_complete(self.split_dir, shard, self.fingerprint, expected):
            self.skipped.inc()
            yield {"shard": shard, "kind": self.kind, "status": "skipped"}
            return
        t0 = time.perf_counter()
        indices = shards.shard_range(shard, self.shard_size, self.num_samples)
        stats: Counter = Counter()
        skipped_keys: list[str] = []
        path = shards.join(self.split_dir, shards.shard_name(shard))
        with shards.ShardWriter(path) as writer:
            for key, files, sample_stats in self.samples(indices):
                if files is None:
                    skipped_keys.append(key)
                else:
                    writer.write(key, files)
                stats.update(sample_stats)
            sidecar = {
                "shard": shard,
                "name": shards.shard_name(shard),
                "first_index": indices.start,
                "fingerprint": self.fingerprint,
                "code_version": self.code_version,
                "stats": dict(sorted(stats.items())),
                "skipped_keys": skipped_keys,
            }
            writer.close(sidecar, shards.join(self.split_dir, shards.sidecar_name(shard)))
        self.written.inc()
        dt = time.perf_counter() - t0
        log.info(
            "%s %s: %d samples (%d skipped) in %.1f s",
            self.kind,
            path,
            len(indices) - len(skipped_keys),
            len(skipped_keys),
            dt,
        )
        yield {"shard": shard, "kind": self.kind, "status": "written", "seconds": dt}


class RenderMixtureShardFn(_ShardFn):
    """Renders mixtures ``[k*shard_size, (k+1)*shard_size)`` of one split into shard ``k``.

    The source pool and the per-worker :class:`AudioCache` are built once in ``setup()``.
    """

    kind = "mixtures"

    def __init__(
        self,
        split_dir: str,
        fingerprint: str,
        num_samples: int,
        shard_size: int,
        sources_path: str,
        split: str,
        seed: int,
        cfg: MixtureConfig,
        cache_bytes: int = CACHE_BYTES,
        code_version: str = "",
    ) -> None:
        super().__init__(split_dir, fingerprint, num_samples, shard_size, code_version)
        self.sources_path, self.split, self.seed, self.cfg = sources_path, split, seed, cfg
        self.cache_bytes = cache_bytes
        self.mixtures = Metrics.counter("flam", "mixtures_rendered")
        self.events = Metrics.counter("flam", "events_placed")
        self.dropped = Metrics.counter("flam", "events_dropped_by_relabel")
        self.skipped_mixtures = Metrics.counter("flam", "mixtures_skipped_background_failed")

    def setup(self) -> None:
        sources = read_sources(self.sources_path)
        self.pool = SourcePool.from_manifest(sources, self.split)
        self.cache = AudioCache.from_manifest(sources, max_bytes=self.cache_bytes, sr=self.cfg.sample_rate)

    def samples(self, indices: range) -> Any:
        sr = self.cfg.sample_rate
        for i in indices:
            key = shards.sample_key(i)
            spec = sample_spec(self.pool, self.cfg, self.seed, i)
            bg = spec.background
            if bg is not None and self.source_error(bg.id, self.cache) is not None:
                log.warning("mixture %s skipped: its background %r failed to load", key, bg.id)
                self.skipped_mixtures.inc()
                yield key, None, {"mixture_skipped_background_failed": 1}
                continue
            drop_sources_that_fail(spec, lambda sid: self.source_error(sid, self.cache) is not None)
            try:
                rendered = render_mixture(spec, self.cache, self.cfg)
            except Exception as e:
                raise RuntimeError(f"{self.split_dir}: mixture {i} (seed {self.seed}) failed: {e}") from e
            record = mixture_record(key, spec, rendered, sr)
            placed = len(spec.events)
            self.mixtures.inc()
            self.events.inc(placed)
            self.dropped.inc(int(rendered.dropped_events))
            stats = Counter(spec.notes) + Counter(rendered.notes)
            stats.update(
                {
                    "mixtures": 1,
                    "events_placed": placed,
                    "events_dropped_by_relabel": int(rendered.dropped_events),
                    "events_labelled": len(record["events"]),
                    "clip_scaled": int(float(rendered.clip_scale) < 1.0),
                }
            )
            yield key, {"flac": encode_flac(rendered.audio, sr), "json": json_record_bytes(record)}, stats


class AudioTextShardFn(_ShardFn):
    """Writes audio-text clips ``rows[k*shard_size : (k+1)*shard_size]`` (rows sorted by id) into shard ``k``."""

    kind = "audio_text"

    def __init__(
        self,
        split_dir: str,
        fingerprint: str,
        num_samples: int,
        shard_size: int,
        sources_path: str,
        seed: int,
        sr: int = SAMPLE_RATE,
        code_version: str = "",
    ) -> None:
        super().__init__(split_dir, fingerprint, num_samples, shard_size, code_version)
        self.sources_path, self.seed, self.sr = sources_path, seed, sr
        self.clips = Metrics.counter("flam", "audio_text_clips")

    def setup(self) -> None:
        self.rows = audio_text_rows(read_sources(self.sources_path).to_pylist())
        if len(self.rows) != self.num_samples:
            raise ValueError(
                f"{self.sources_path}: {len(self.rows)} audio-text rows, expected {self.num_samples}"
            )

    def samples(self, indices: range) -> Any:
        from synth.audio import load_audio

        for i in indices:
            row = self.rows[i]
            key = shards.sample_key(i)
            try:
                audio = load_audio(row["path"], target_sr=self.sr)
            except LOAD_ERRORS as e:
                log.warning("audio-text clip %s skipped: source %r failed to load: %s", key, row["id"], e)
                yield key, None, {"clip_source_failed": 1}
                continue
            clip, offset, valid = audio_text_clip(audio, self.sr, self.seed, str(row["id"]))
            record = audio_text_record(key, row, offset, valid, self.sr)
            self.clips.inc()
            stats = {
                "clips": 1,
                "cropped": int(len(audio) > len(clip)),
                "padded": int(len(audio) < len(clip)),
            }
            yield key, {"flac": encode_flac(clip, self.sr), "json": json_record_bytes(record)}, stats


# ---------------------------------------------------------------- driver


@dataclass
class RenderOptions:
    """Arguments of pipelines/render_mixtures.py (one split per run)."""

    out: str
    corpus: str | None = None
    manifest: str | None = None
    num_mixtures: int = 256
    split: str = "train"
    seed: int = 0
    shard_size: int = 128
    audio_text: bool = True
    audio_text_shard_size: int | None = None  # default: shard_size
    measure_loudness: bool = True
    ingest_workers: int = 1  # >1: ingest probes files in a process pool (large corpora)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)

    def __post_init__(self) -> None:
        if (self.corpus is None) == (self.manifest is None):
            raise ValueError("give exactly one of --corpus DIR or --manifest FILE")
        if self.split not in ("train", "heldout"):
            raise ValueError(f"--split must be train or heldout, got {self.split!r}")
        if self.num_mixtures < 0 or self.shard_size < 1:
            raise ValueError(
                f"--num-mixtures must be >= 0 and --shard-size >= 1 (got {self.num_mixtures}, {self.shard_size})"
            )


@dataclass
class RenderSummary:
    """What a run did, for the one-screen summary and for tests."""

    out: str
    split: str
    mixtures_total: int = 0
    mixtures_written: int = 0
    mixture_shards_written: int = 0
    mixture_shards_skipped: int = 0
    mixtures_skipped: int = 0  # background failed to load
    events_placed: int = 0
    events_dropped_by_relabel: int = 0
    mixture_notes: dict[str, int] = field(default_factory=dict)  # by reason, mixtures of this run
    audio_text_total: int = 0
    audio_text_written: int = 0
    audio_text_shards_written: int = 0
    audio_text_shards_skipped: int = 0
    audio_text_notes: dict[str, int] = field(default_factory=dict)  # by reason, clips of this run
    sources: dict[str, int] = field(default_factory=dict)
    pool_skipped: dict[str, int] = field(default_factory=dict)  # split rows the source pool left out
    files_skipped: dict[str, int] = field(default_factory=dict)
    skipped_examples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    runner: str = ""

    def format(self) -> str:
        rate = self.mixtures_written / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"== render_mixtures summary ({self.split}, runner {self.runner}, {self.seconds:.1f} s) ==",
            f"output:                 {self.out}",
            f"sources in split:       {', '.join(f'{k} {v}' for k, v in self.sources.items()) or '-'}",
            f"mixtures written:       {self.mixtures_written} of {self.mixtures_total} "
            f"({self.mixture_shards_written} shards written, {self.mixture_shards_skipped} already complete; "
            f"{rate:.2f} mixtures/s overall)",
            f"mixtures skipped (background failed to load): {self.mixtures_skipped}",
            f"events placed:          {self.events_placed} (in the mixtures written this run)",
            f"events dropped (relabel, no active frames): {self.events_dropped_by_relabel}",
        ]
        lines += _by_reason("mixture notes (this run)", self.mixture_notes)
        lines.append(
            f"audio-text clips:       {self.audio_text_written} of {self.audio_text_total} "
            f"({self.audio_text_shards_written} shards written, {self.audio_text_shards_skipped} already complete)"
        )
        lines += _by_reason("audio-text notes (this run)", self.audio_text_notes)
        lines += _by_reason("sources left out of the pool", self.pool_skipped)
        total_skipped = sum(self.files_skipped.values())
        lines.append(f"files skipped (ingest): {total_skipped}")
        for reason, n in sorted(self.files_skipped.items()):
            lines.append(f"  {reason}: {n}")
        for ex in self.skipped_examples[:5]:
            lines.append(f"    e.g. {ex}")
        return "\n".join(lines)


def _by_reason(title: str, counts: Mapping[str, int]) -> list[str]:
    lines = [f"{title}: {sum(counts.values())}"]
    lines += [f"  {reason}: {n}" for reason, n in sorted(counts.items()) if n]
    return lines


def notes_of(stats: Mapping[str, Any], counters: Sequence[str]) -> dict[str, int]:
    """The note counts of a stats dict (every numeric key that is not a plain counter), zeros left out."""
    return {
        k: int(v)
        for k, v in sorted(stats.items())
        if k not in counters and isinstance(v, int | float) and not isinstance(v, bool) and v
    }


def _sum_stats(sidecars: Sequence[Mapping[str, Any]]) -> Counter:
    total: Counter = Counter()
    for m in sidecars:
        total.update({k: v for k, v in (m.get("stats") or {}).items() if isinstance(v, int | float)})
    return total


def warn_other_code_versions(split_dir: str, complete: Mapping[int, Mapping[str, Any]], version: str) -> None:
    """Log when complete shards were written by another commit (same format version, so they are kept)."""
    other = Counter(str(m.get("code_version", "")) for m in complete.values())
    other.pop(version, None)
    if other:
        log.warning(
            "%s: %d complete shards were written by another code version (%s; now %s). They are kept "
            "because the config and RENDER_FORMAT_VERSION match; delete them to re-render with this code.",
            split_dir,
            sum(other.values()),
            ", ".join(f"{v or '?'} x{n}" for v, n in sorted(other.items())),
            version,
        )


def code_version() -> str:
    """``flam-synth <version>`` plus the git commit of the workspace when it is a git checkout."""
    version = f"flam-synth {synth.__version__}"
    try:
        root = Path(__file__).resolve().parents[4]
        rev = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if rev.returncode == 0 and rev.stdout.strip():
            version += f" (git {rev.stdout.strip()})"
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def sources_fingerprint(rows: Sequence[Mapping[str, Any]]) -> str:
    """sha256 over the rows that feed a split (paths excluded: moving the corpus changes nothing)."""
    h = hashlib.sha256()
    for row in sorted(rows, key=lambda r: str(r["id"])):
        h.update(json_record_bytes({k: v for k, v in row.items() if k != "path"}))
    return h.hexdigest()


def load_sources(opts: RenderOptions) -> tuple[pa.Table, dict[str, int], list[str]]:
    """The manifest table (ingested from ``--corpus`` or read from ``--manifest``) + skip counts/examples."""
    from synth.manifest import read_manifest

    skipped: Counter = Counter()
    examples: list[str] = []
    if opts.corpus is not None:
        from synth.ingest import IngestConfig, ingest_corpus

        cfg = IngestConfig(measure_loudness=opts.measure_loudness, workers=opts.ingest_workers, progress=True)
        result = ingest_corpus(opts.corpus, cfg=cfg)
        for s in result.skipped:
            skipped[s.reason] += 1
            examples.append(f"{s.path}: {s.reason} {s.detail}".rstrip())
        return result.table, dict(skipped), examples
    table = read_manifest(opts.manifest)
    keep = []
    for i, path in enumerate(table.column("path").to_pylist()):
        if "://" not in path and not Path(path).is_file():
            skipped["missing_file"] += 1
            examples.append(f"{path}: listed in {opts.manifest} but not found")
        else:
            keep.append(i)
    if len(keep) != table.num_rows:
        table = table.take(pa.array(keep, type=pa.int64()))
    return table, dict(skipped), examples


def _split_rows(table: pa.Table, split: str) -> list[dict[str, Any]]:
    return sorted((r for r in table.to_pylist() if r["split"] == split), key=lambda r: str(r["id"]))


def audio_text_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows that become audio-text clips, in key order: captioned files of :data:`AUDIO_TEXT_KINDS`, by id."""
    keep = [r for r in rows if r["kind"] in AUDIO_TEXT_KINDS and r.get("captions")]
    return sorted(keep, key=lambda r: str(r["id"]))


def write_sources(table: pa.Table, path: str) -> None:
    """The split's source rows as Parquet next to the shards; workers read it in ``setup()``."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    shards.write_bytes_atomic(path, buf.getvalue())


def read_sources(path: str) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(shards.read_bytes(path)))


class _ShardProgress:
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

    def __enter__(self) -> _ShardProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run_render(opts: RenderOptions, beam_args: Sequence[str] = ()) -> RenderSummary:
    """Ingest/read sources, render the missing shards with Beam, write index.json files; return a summary."""
    from synth.beam_support import is_remote_runner, pipeline_options, runner_name, with_local_defaults

    t0 = time.perf_counter()
    _set_filesystem_options(beam_args)
    summary = RenderSummary(
        out=str(opts.out), split=opts.split, runner=runner_name(with_local_defaults(beam_args))
    )
    table, skipped, examples = load_sources(opts)
    summary.files_skipped, summary.skipped_examples = skipped, examples
    rows = _split_rows(table, opts.split)
    if is_remote_runner(summary.runner):
        _warn_local_paths(summary.runner, str(opts.out), rows)
    kinds = Counter(r["kind"] for r in rows)
    summary.sources = {k: kinds.get(k, 0) for k in ("event", "background", "none")}
    cfg = opts.mixture
    sources = pa.Table.from_pylist(rows, schema=table.schema) if rows else table.slice(0, 0)
    pool = SourcePool.from_manifest(sources, opts.split)  # fail fast on the driver (no events, ...)
    summary.pool_skipped = dict(sorted(pool.skipped.items()))
    if pool.skipped:
        log.warning("source pool %s skipped: %s", opts.split, summary.pool_skipped)
    version = code_version()

    # mixtures
    mix_dir = shards.join(str(opts.out), "mixtures", opts.split)
    mix_cfg = {
        "kind": "mixtures",
        "split": opts.split,
        "seed": opts.seed,
        "num_samples": opts.num_mixtures,
        "shard_size": opts.shard_size,
        "mixture": json.loads(json.dumps(asdict(cfg))),
        "sources_sha256": sources_fingerprint(rows),
        "num_sources": len(rows),
        "synth_version": synth.__version__,
        "format_version": RENDER_FORMAT_VERSION,
    }
    mix_fp = shards.prepare_split_dir(mix_dir, mix_cfg)
    n_mix = shards.num_shards(opts.num_mixtures, opts.shard_size)
    mix_state = shards.scan_split_dir(mix_dir, mix_fp, n_mix, opts.shard_size, opts.num_mixtures)
    warn_other_code_versions(mix_dir, mix_state.complete, version)

    # audio-text
    at_rows = audio_text_rows(rows)
    at_size = opts.audio_text_shard_size or opts.shard_size
    at_dir = shards.join(str(opts.out), "audio_text", opts.split)
    at_state, n_at, at_fp, at_cfg = shards.ShardState(), 0, "", {}
    if opts.audio_text:
        at_cfg = {
            "kind": "audio_text",
            "split": opts.split,
            "seed": opts.seed,
            "num_samples": len(at_rows),
            "shard_size": at_size,
            "clip_s": CLIP_S,
            "sample_rate": SAMPLE_RATE,
            "kinds": list(AUDIO_TEXT_KINDS),
            "policy": "<= clip_s: whole file, zero padded at the end; longer: seeded random clip_s window",
            "sources_sha256": sources_fingerprint(at_rows),
            "synth_version": synth.__version__,
            "format_version": RENDER_FORMAT_VERSION,
        }
        at_fp = shards.prepare_split_dir(at_dir, at_cfg)
        n_at = shards.num_shards(len(at_rows), at_size)
        at_state = shards.scan_split_dir(at_dir, at_fp, n_at, at_size, len(at_rows))
        warn_other_code_versions(at_dir, at_state.complete, version)

    sources_path = shards.join(mix_dir, SOURCES_NAME)
    write_sources(sources, sources_path)
    if opts.corpus is not None:
        from synth.manifest import write_manifest

        write_manifest(table, shards.join(str(opts.out), "manifest.parquet"))

    summary.mixtures_total, summary.audio_text_total = opts.num_mixtures, len(at_rows)
    summary.mixture_shards_skipped = len(mix_state.complete)
    summary.audio_text_shards_skipped = len(at_state.complete)
    todo = len(mix_state.todo) + len(at_state.todo)
    log.info(
        "%s: %d mixture shards to render (%d complete), %d audio-text shards to write (%d complete)",
        opts.split,
        len(mix_state.todo),
        len(mix_state.complete),
        len(at_state.todo),
        len(at_state.complete),
    )
    if todo:
        with _ShardProgress(
            [mix_dir, at_dir], 0, todo + len(mix_state.complete) + len(at_state.complete)
        ) as _:
            workers = local_worker_count(len(mix_state.todo) * opts.shard_size, todo)
            options = pipeline_options(beam_args, num_workers=workers)
            summary.runner = _describe_runner(options)
            with beam.Pipeline(options=options) as p:
                if mix_state.todo:
                    _ = (
                        p
                        | "MixtureShards" >> beam.Create(mix_state.todo)
                        | "SpreadMixtures" >> beam.Reshuffle()
                        | "RenderMixtures"
                        >> beam.ParDo(
                            RenderMixtureShardFn(
                                mix_dir,
                                mix_fp,
                                opts.num_mixtures,
                                opts.shard_size,
                                sources_path,
                                opts.split,
                                opts.seed,
                                cfg,
                                code_version=version,
                            )
                        )
                    )
                if at_state.todo:
                    _ = (
                        p
                        | "AudioTextShards" >> beam.Create(at_state.todo)
                        | "SpreadAudioText" >> beam.Reshuffle()
                        | "WriteAudioText"
                        >> beam.ParDo(
                            AudioTextShardFn(
                                at_dir,
                                at_fp,
                                len(at_rows),
                                at_size,
                                sources_path,
                                opts.seed,
                                code_version=version,
                            )
                        )
                    )

    # index.json from every shard's sidecar (including shards from earlier runs)
    extra = {
        "split": opts.split,
        "seed": opts.seed,
        "code_version": version,
        "format_version": RENDER_FORMAT_VERSION,
        "pool_skipped": summary.pool_skipped,
    }
    _check_all_complete(mix_dir, mix_fp, n_mix, opts.shard_size, opts.num_mixtures)
    mix_side = shards.read_sidecars(mix_dir, range(n_mix))
    shards.write_index(mix_dir, shards.build_index(mix_dir, mix_cfg, mix_fp, mix_side, extra))
    new = [m for m in mix_side if m["shard"] in set(mix_state.todo)]
    summary.mixture_shards_written = len(new)
    summary.mixtures_written = sum(m["count"] for m in new)
    new_stats = _sum_stats(new)
    summary.events_placed = new_stats["events_placed"]
    summary.events_dropped_by_relabel = new_stats["events_dropped_by_relabel"]
    summary.mixtures_skipped = new_stats["mixture_skipped_background_failed"]
    summary.mixture_notes = notes_of(new_stats, MIXTURE_COUNTERS)
    if opts.audio_text:
        _check_all_complete(at_dir, at_fp, n_at, at_size, len(at_rows))
        at_side = shards.read_sidecars(at_dir, range(n_at))
        shards.write_index(at_dir, shards.build_index(at_dir, at_cfg, at_fp, at_side, extra))
        new_at = [m for m in at_side if m["shard"] in set(at_state.todo)]
        summary.audio_text_shards_written = len(new_at)
        summary.audio_text_written = sum(m["count"] for m in new_at)
        summary.audio_text_notes = notes_of(_sum_stats(new_at), AUDIO_TEXT_COUNTERS)
    summary.seconds = time.perf_counter() - t0
    return summary


def local_worker_count(mixtures_todo: int, shards_todo: int, cores: int | None = None) -> int:
    """Workers for the local FnApiRunner when --direct_num_workers is not given.

    Worker processes cost seconds each to start (importing Beam, numpy, scipy), so small jobs run in one
    in-process worker; from :data:`PARALLEL_MIN_MIXTURES` mixtures on, one process per core (at most one
    per shard).
    """
    cores = cores or os.cpu_count() or 1
    if mixtures_todo < PARALLEL_MIN_MIXTURES:
        return 1
    return max(1, min(cores, shards_todo))


def _describe_runner(options: Any) -> str:
    """e.g. ``FnApiRunner, 2 workers (multi_processing)`` or ``DataflowRunner``."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    name = str(options.view_as(StandardOptions).runner or "").rsplit(".", 1)[-1]
    if name in ("FnApiRunner", "DirectRunner"):
        direct = options.view_as(DirectOptions)
        n = direct.direct_num_workers
        return f"{name}, {n} worker{'s' if n != 1 else ''}" + (
            f" ({direct.direct_running_mode})" if n != 1 else ""
        )
    return name


def _set_filesystem_options(beam_args: Sequence[str]) -> None:
    """Let the driver read/write gs:// etc. with the pipeline's credentials before the pipeline exists."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions(list(beam_args)))


def _warn_local_paths(runner: str, out: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Remote workers usually cannot see this machine's files: say so before the job starts."""
    local = [r["path"] for r in rows if not shards.is_remote(r["path"])]
    if not shards.is_remote(out):
        log.warning(
            "%s: --out %s is a local path; remote workers need a shared URI (gs://, s3://, ...)", runner, out
        )
    if local:
        log.warning(
            "%s: %d source paths are local (e.g. %s); remote workers need URIs or a shared file system",
            runner,
            len(local),
            local[0],
        )


def _check_all_complete(split_dir: str, fp: str, n: int, shard_size: int, num_samples: int) -> None:
    state = shards.scan_split_dir(split_dir, fp, n, shard_size, num_samples)
    if state.todo:
        raise RuntimeError(f"{split_dir}: shards {state.todo[:10]} are missing after the pipeline finished")
