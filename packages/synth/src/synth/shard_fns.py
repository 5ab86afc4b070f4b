"""Beam DoFns that write one shard per element: rendered mixtures, or audio-text clips.

A worker samples the specs of its shard's index range from ``(seed, index)``, renders and encodes them and
streams them into the shard (:mod:`synth.shards`), so audio never travels through Beam. Sources that fail to
load on the worker are counted, logged skips (see :func:`drop_sources_that_fail` and the DoFns).
"""

from __future__ import annotations

import io
import logging
import time
from collections import Counter
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from synth import shards
from synth.errors import AudioDecodeError
from synth.flac import encode_flac
from synth.records import (
    SAMPLE_RATE,
    audio_text_clip,
    audio_text_record,
    audio_text_rows,
    json_record_bytes,
    mixture_record,
)
from synth.render import render_mixture, scale_to_peak
from synth.source_cache import AudioCache
from synth.spec import MixtureConfig, MixtureSpec, SourcePool, mode_counts, sample_spec

log = logging.getLogger(__name__)

CACHE_BYTES = 1 << 30  # per-worker decoded-source cache bound
SOURCES_NAME = "sources.parquet"  # the split's manifest rows, beside the mixture shards
LOAD_ERRORS = (AudioDecodeError, OSError)  # a source that cannot be read on a worker: counted, logged skip


def write_sources(table: pa.Table, path: str) -> None:
    """The split's source rows as Parquet next to the shards; workers read it in ``setup()``."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    shards.write_bytes_atomic(path, buf.getvalue())


def read_sources(path: str) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(shards.read_bytes(path)))


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
        indices = shards.shard_range(shard, self.shard_size, self.num_samples)
        if shards.is_shard_complete(self.split_dir, shard, self.fingerprint, len(indices)):
            self.skipped.inc()
            yield {"shard": shard, "kind": self.kind, "status": "skipped"}
            return
        t0 = time.perf_counter()
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
        rows = read_sources(self.sources_path).to_pylist()  # both builders take rows: convert once
        self.pool = SourcePool.from_manifest(
            rows, self.split, min_background_s=self.cfg.duration_s, min_event_s=self.cfg.min_event_s
        )
        self.cache = AudioCache.from_manifest(rows, max_bytes=self.cache_bytes, sr=self.cfg.sample_rate)

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
            stats = Counter(spec.notes) + Counter(rendered.notes) + Counter(mode_counts(spec.events))
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
        self.max_peak = MixtureConfig.max_peak  # the mixtures' clip guard
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
            clip = np.array(clip, dtype=np.float32)  # writable: the clip guard scales in place
            scale = scale_to_peak(clip, self.max_peak)  # sources above full scale: as mixtures, not clipped
            record = audio_text_record(key, row, offset, valid, self.sr, clip_scale=scale)
            self.clips.inc()
            stats = {
                "clips": 1,
                "cropped": int(len(audio) > len(clip)),
                "padded": int(len(audio) < len(clip)),
                "clip_scaled": int(scale < 1.0),
            }
            yield key, {"flac": encode_flac(clip, self.sr), "json": json_record_bytes(record)}, stats
