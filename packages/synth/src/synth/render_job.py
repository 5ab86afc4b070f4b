"""The render_mixtures driver: read or ingest sources, run Beam over the missing shards, write index.json.

Output layout under ``out``::

    mixtures/<split>/shard-NNNNNN.tar    <key>.flac + <key>.json (mixture sample, see README "Data formats"), + index.json
    audio_text/<split>/shard-NNNNNN.tar  <key>.flac + <key>.json {"text": [...], "tag": [...]}, + index.json
    manifest.parquet                     the ingested manifest (only with --corpus)
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa

import synth
from synth import records, shards
from synth.paths import is_uri, local_path
from synth.progress import ShardProgress
from synth.records import AUDIO_TEXT_KINDS, CLIP_S, SAMPLE_RATE, audio_text_rows, json_record_bytes
from synth.render_summary import AUDIO_TEXT_COUNTERS, MIXTURE_COUNTERS, RenderSummary, notes_of, sum_stats
from synth.shard_fns import SOURCES_NAME, AudioTextShardFn, RenderMixtureShardFn, write_sources
from synth.spec import MODES, MixtureConfig, SourcePool
from synth.split import SplitConfig

log = logging.getLogger(__name__)

PARALLEL_MIN_MIXTURES = 1000  # local default: below this many mixtures, one in-process worker
MAX_SAMPLES = 10**shards.KEY_DIGITS - 1  # sample keys have 9 digits
MAX_SHARDS = 10**6  # shard names have 6 digits; the driver lists the shard indices it hands to Beam


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
    heldout_events: float | int | None = None  # with --corpus: SplitConfig default (10 %) when None
    heldout_backgrounds: float | int | None = None
    allow_outside_corpus: bool = False  # with --corpus: accept metadata paths outside the corpus folder
    verify_shards: bool = True  # on resume, a complete shard's sha256 must match its sidecar
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
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0 (mixture i uses default_rng([seed, i])), got {self.seed}")
        if self.num_mixtures > MAX_SAMPLES:
            raise ValueError(
                f"--num-mixtures {self.num_mixtures} is above {MAX_SAMPLES:,} (sample keys have "
                f"{shards.KEY_DIGITS} digits); render more with another --seed into another --out"
            )
        if self.audio_text_shard_size is not None and self.audio_text_shard_size < 1:  # --shard-size: above
            raise ValueError(f"--audio-text-shard-size must be >= 1, got {self.audio_text_shard_size}")
        if shards.num_shards(self.num_mixtures, self.shard_size) > MAX_SHARDS:
            raise ValueError(
                f"--num-mixtures {self.num_mixtures} / --shard-size {self.shard_size} makes more than "
                f"{MAX_SHARDS:,} shards (shard names have 6 digits); raise --shard-size"
            )
        if self.ingest_workers < 1:
            raise ValueError(f"--ingest-workers must be >= 1, got {self.ingest_workers}")
        if self.manifest is not None and (self.heldout_events, self.heldout_backgrounds) != (None, None):
            raise ValueError(
                "--heldout-events/--heldout-backgrounds apply to --corpus ingest; a --manifest already has "
                "its split"
            )
        self.split_config()  # validates the amounts

    def split_config(self) -> SplitConfig:
        """The held-out split of a --corpus ingest (defaults of SplitConfig where not given)."""
        given = {
            k: v
            for k, v in (
                ("heldout_events", self.heldout_events),
                ("heldout_backgrounds", self.heldout_backgrounds),
            )
            if v is not None
        }
        return SplitConfig(**given)


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
    return load_sources_and_notes(opts)[:3]


def load_sources_and_notes(
    opts: RenderOptions,
) -> tuple[pa.Table, dict[str, int], list[str], dict[str, int]]:
    """:func:`load_sources` + ingest notes (files that use one channel because theirs cancel)."""
    from synth.manifest import read_manifest

    skipped: Counter = Counter()
    examples: list[str] = []
    if opts.corpus is not None:
        from synth.ingest import IngestConfig, ingest_corpus

        cfg = IngestConfig(
            measure_loudness=opts.measure_loudness,
            workers=opts.ingest_workers,
            progress=True,
            split=opts.split_config(),
            allow_outside_corpus=opts.allow_outside_corpus,
        )
        result = ingest_corpus(opts.corpus, cfg=cfg)
        for s in result.skipped:
            skipped[s.reason] += 1
            examples.append(f"{s.path}: {s.reason} {s.detail}".rstrip())
        notes = {"downmix_channel_fallback": int(result.counts.get("downmix_channel_fallback", 0))}
        return result.table, dict(skipped), examples, notes
    table = read_manifest(opts.manifest)
    keep = []
    for i, path in enumerate(table.column("path").to_pylist()):
        if not is_uri(path) and not Path(local_path(path)).is_file():
            skipped["missing_file"] += 1
            examples.append(f"{path}: listed in {opts.manifest} but not found")
        else:
            keep.append(i)
    if len(keep) != table.num_rows:
        table = table.take(pa.array(keep, type=pa.int64()))
    return table, dict(skipped), examples, {}


def _split_rows(table: pa.Table, split: str) -> list[dict[str, Any]]:
    return sorted((r for r in table.to_pylist() if r["split"] == split), key=lambda r: str(r["id"]))


def mixture_split_config(opts: RenderOptions, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What decides the mixture shards' bytes (recorded in config.json; its sha256 is the fingerprint)."""
    return {
        "kind": "mixtures",
        "split": opts.split,
        "seed": opts.seed,
        "num_samples": opts.num_mixtures,
        "shard_size": opts.shard_size,
        "mixture": json.loads(json.dumps(asdict(opts.mixture))),
        "sources_sha256": sources_fingerprint(rows),
        "num_sources": len(rows),
        "synth_version": synth.__version__,
        "format_version": records.RENDER_FORMAT_VERSION,
    }


def audio_text_split_config(
    opts: RenderOptions, at_rows: Sequence[Mapping[str, Any]], shard_size: int
) -> dict[str, Any]:
    """What decides the audio-text shards' bytes."""
    return {
        "kind": "audio_text",
        "split": opts.split,
        "seed": opts.seed,
        "num_samples": len(at_rows),
        "shard_size": shard_size,
        "clip_s": CLIP_S,
        "sample_rate": SAMPLE_RATE,
        "kinds": list(AUDIO_TEXT_KINDS),
        "policy": "<= clip_s: whole file, zero padded at the end; longer: seeded random clip_s window; "
        "a clip above max_peak is scaled down to it",
        "sources_sha256": sources_fingerprint(at_rows),
        "synth_version": synth.__version__,
        "format_version": records.RENDER_FORMAT_VERSION,
    }


class RenderStopped(RuntimeError):
    """The run stopped on an I/O error (disk full, quota, read-only): complete shards are kept, re-run."""


EST_BYTES_PER_MIXTURE = 300_000  # ~0.27 MB of FLAC + JSON per mixture on the dev corpus (docs)


def io_error_line(exc: BaseException) -> tuple[int, str] | None:
    """(errno, message) when ``exc`` (or its cause, or the text Beam re-raises a worker's error as) is an
    I/O error of :data:`synth.shards.IO_ERRNOS`; None otherwise."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in shards.IO_ERRNOS:
            return e.errno, str(e)
        m = re.search(r"\[Errno (\d+)\][^\n\[]*", str(e))
        if m and int(m.group(1)) in shards.IO_ERRNOS:
            return int(m.group(1)), m.group(0).strip()
        e = e.__cause__ or e.__context__
    return None


def stopped_message(opts: RenderOptions, code: int, line: str) -> str:
    """One line: what stopped the run, what is kept, what to do."""
    done = [
        sum(
            1
            for n in shards.list_names(shards.join(str(opts.out), kind, opts.split))
            if shards.SHARD_RE.match(n)
        )
        for kind in ("mixtures", "audio_text")
    ]
    todo = (
        f"free space in {opts.out} (or choose another --out)"
        if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        else f"make {opts.out} writable"
    )
    return (
        f"render stopped: {shards.IO_ERRNOS[code]} ({line}). {done[0]} mixture and {done[1]} audio-text "
        f"shards are complete and kept; no partial shard is left. {todo[0].upper()}{todo[1:]}, then run the "
        "same command again: it renders only the missing shards."
    )


def run_render(opts: RenderOptions, beam_args: Sequence[str] = ()) -> RenderSummary:
    """Ingest/read sources, render the missing shards with Beam, write index.json files; return a summary.

    Raises ``shards.OutputError`` before any work when ``--out`` cannot be written, and
    :class:`RenderStopped` when an I/O error (disk full, ...) stops the run midway."""
    _set_filesystem_options(beam_args)
    free = shards.check_output_dir(str(opts.out))
    need = opts.num_mixtures * EST_BYTES_PER_MIXTURE
    if free is not None and free < need:
        log.warning(
            "--out %s has %.1f GB free; %d mixtures take about %.1f GB (the run stops when the disk is "
            "full and resumes after)",
            opts.out,
            free / 1e9,
            opts.num_mixtures,
            need / 1e9,
        )
    try:
        return _render(opts, beam_args)
    except Exception as e:
        found = io_error_line(e)
        if found is None:
            raise
        raise RenderStopped(stopped_message(opts, *found)) from e


def _render(opts: RenderOptions, beam_args: Sequence[str]) -> RenderSummary:
    from synth.beam_support import is_remote_runner, pipeline_options, runner_name, with_local_defaults

    t0 = time.perf_counter()
    summary = RenderSummary(
        out=str(opts.out),
        split=opts.split,
        runner=runner_name(with_local_defaults(beam_args)),
        audio_text=opts.audio_text,
    )
    table, skipped, examples, ingest_notes = load_sources_and_notes(opts)
    summary.files_skipped, summary.skipped_examples = skipped, examples
    summary.ingest_notes = {k: v for k, v in ingest_notes.items() if v}
    rows = _split_rows(table, opts.split)
    if is_remote_runner(summary.runner):
        _warn_local_paths(summary.runner, str(opts.out), rows)
    kinds = Counter(r["kind"] for r in rows)
    summary.sources = {k: kinds.get(k, 0) for k in ("event", "background", "none")}
    cfg = opts.mixture
    sources = pa.Table.from_pylist(rows, schema=table.schema) if rows else table.slice(0, 0)  # for workers
    pool = SourcePool.from_manifest(  # fail fast on the driver (no events, ...)
        rows, opts.split, min_background_s=cfg.duration_s, min_event_s=cfg.min_event_s
    )
    summary.pool_skipped = dict(sorted(pool.skipped.items()))
    if pool.skipped:
        log.warning("source pool %s skipped: %s", opts.split, summary.pool_skipped)
    version = code_version()

    # mixtures
    mix_dir = shards.join(str(opts.out), "mixtures", opts.split)
    mix_cfg = mixture_split_config(opts, rows)
    mix_fp = shards.prepare_split_dir(mix_dir, mix_cfg)
    n_mix = shards.num_shards(opts.num_mixtures, opts.shard_size)
    mix_state = shards.scan_split_dir(
        mix_dir, mix_fp, n_mix, opts.shard_size, opts.num_mixtures, verify=opts.verify_shards
    )
    warn_other_code_versions(mix_dir, mix_state.complete, version)

    # audio-text
    at_rows = audio_text_rows(rows)
    at_size = opts.audio_text_shard_size or opts.shard_size
    at_dir = shards.join(str(opts.out), "audio_text", opts.split)
    at_state, n_at, at_fp, at_cfg = shards.ShardState(), 0, "", {}
    if opts.audio_text:
        at_cfg = audio_text_split_config(opts, at_rows, at_size)
        at_fp = shards.prepare_split_dir(at_dir, at_cfg)
        n_at = shards.num_shards(len(at_rows), at_size)
        if n_at > MAX_SHARDS:
            raise ValueError(
                f"{len(at_rows)} audio-text clips make more than {MAX_SHARDS:,} shards; raise --audio-text-shard-size"
            )
        at_state = shards.scan_split_dir(
            at_dir, at_fp, n_at, at_size, len(at_rows), verify=opts.verify_shards
        )
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
        with ShardProgress(
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
        "format_version": records.RENDER_FORMAT_VERSION,
        "pool_skipped": summary.pool_skipped,
    }
    mix_side = _complete_sidecars(mix_dir, mix_fp, n_mix, opts.shard_size, opts.num_mixtures)
    shards.write_index(mix_dir, shards.build_index(mix_dir, mix_cfg, mix_fp, mix_side, extra))
    mix_new = set(mix_state.todo)
    new = [m for m in mix_side if m["shard"] in mix_new]
    summary.mixture_shards_written = len(new)
    summary.mixtures_written = sum(m["count"] for m in new)
    new_stats = sum_stats(new)
    summary.events_placed = new_stats["events_placed"]
    summary.events_dropped_by_relabel = new_stats["events_dropped_by_relabel"]
    summary.mixtures_skipped = new_stats["mixture_skipped_background_failed"]
    summary.mixture_notes = notes_of(new_stats, MIXTURE_COUNTERS)
    summary.event_modes = {m: int(new_stats.get(f"events_{m}", 0)) for m in MODES}
    summary.configured_modes = {"split": cfg.split_prob, "repeat": cfg.repeat_prob}
    if opts.audio_text:
        at_side = _complete_sidecars(at_dir, at_fp, n_at, at_size, len(at_rows))
        shards.write_index(at_dir, shards.build_index(at_dir, at_cfg, at_fp, at_side, extra))
        at_new = set(at_state.todo)
        new_at = [m for m in at_side if m["shard"] in at_new]
        summary.audio_text_shards_written = len(new_at)
        summary.audio_text_written = sum(m["count"] for m in new_at)
        summary.audio_text_notes = notes_of(sum_stats(new_at), AUDIO_TEXT_COUNTERS)
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
    local = [r["path"] for r in rows if not is_uri(r["path"])]
    if not is_uri(out):
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


def _complete_sidecars(
    split_dir: str, fp: str, n: int, shard_size: int, num_samples: int
) -> list[dict[str, Any]]:
    """Sidecars of shards 0..n-1 (read once, by the completeness scan); raises if any shard is missing.

    No second sha256 pass: every shard was verified by the scan at the start or written (and hashed) now."""
    state = shards.scan_split_dir(split_dir, fp, n, shard_size, num_samples, verify=False)
    if state.todo:
        raise RuntimeError(f"{split_dir}: shards {state.todo[:10]} are missing after the pipeline finished")
    return [state.complete[k] for k in range(n)]
