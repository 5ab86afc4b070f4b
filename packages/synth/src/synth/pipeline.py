"""Beam pipeline that renders mixtures and audio-text clips into deterministic WebDataset shards.

One Beam element = one shard index, so the bytes do not depend on the runner, the worker count or the order
shards finish in; complete shards are skipped, which makes a killed run resumable. The code lives in:

- :mod:`synth.records`: sample JSON records, audio-text clip policy, ``RENDER_FORMAT_VERSION``;
- :mod:`synth.shard_fns`: the DoFns that render/write one shard (and the worker-side skip policy);
- :mod:`synth.render_job`: the driver (``RenderOptions``, ``run_render``), config fingerprints, sources;
- :mod:`synth.render_summary`: the end-of-run summary; :mod:`synth.progress`: the shard progress bar.

This module re-exports their public names, so ``from synth.pipeline import run_render`` keeps working.
"""

from __future__ import annotations

from synth.records import (
    AUDIO_TEXT_KINDS,
    CLIP_S,
    RENDER_FORMAT_VERSION,
    SAMPLE_RATE,
    audio_text_clip,
    audio_text_record,
    audio_text_rows,
    json_record_bytes,
    mixture_record,
    stable_int,
)
from synth.render_job import (
    PARALLEL_MIN_MIXTURES,
    RenderOptions,
    code_version,
    load_sources,
    local_worker_count,
    run_render,
    sources_fingerprint,
    warn_other_code_versions,
)
from synth.render_summary import AUDIO_TEXT_COUNTERS, MIXTURE_COUNTERS, RenderSummary, notes_of, sum_stats
from synth.shard_fns import (
    CACHE_BYTES,
    LOAD_ERRORS,
    SOURCES_NAME,
    AudioTextShardFn,
    RenderMixtureShardFn,
    drop_sources_that_fail,
    read_sources,
    write_sources,
)

__all__ = [
    "AUDIO_TEXT_COUNTERS",
    "AUDIO_TEXT_KINDS",
    "CACHE_BYTES",
    "CLIP_S",
    "LOAD_ERRORS",
    "MIXTURE_COUNTERS",
    "PARALLEL_MIN_MIXTURES",
    "RENDER_FORMAT_VERSION",
    "SAMPLE_RATE",
    "SOURCES_NAME",
    "AudioTextShardFn",
    "RenderMixtureShardFn",
    "RenderOptions",
    "RenderSummary",
    "audio_text_clip",
    "audio_text_record",
    "audio_text_rows",
    "code_version",
    "drop_sources_that_fail",
    "json_record_bytes",
    "load_sources",
    "local_worker_count",
    "mixture_record",
    "notes_of",
    "read_sources",
    "run_render",
    "sources_fingerprint",
    "stable_int",
    "sum_stats",
    "warn_other_code_versions",
    "write_sources",
]
