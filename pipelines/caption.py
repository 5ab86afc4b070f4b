"""Caption every corpus file with an LLM (or the built-in template captioner) into a source manifest.

    uv run python pipelines/caption.py --corpus corpus/demo --out data/manifest.parquet
    uv run python pipelines/caption.py --corpus gs://b/corpus --out gs://b/manifest.parquet \\
        --captioner vllm --endpoint http://10.0.0.5:8000/v1 --model mistralai/Mixtral-8x7B-Instruct-v0.1 \\
        --runner=DataflowRunner --project P --region R --temp_location gs://b/tmp

corpus folder (or --manifest) -> ingest + event/background filter (synth) -> captions -> manifest Parquet for
`pipelines/render_mixtures.py --manifest`. Flags not listed below are Apache Beam pipeline options. The LLM
API key is read from $FLAM_LLM_API_KEY (or $OPENAI_API_KEY). See docs/captioning.md.

Exit codes: 0 done; 1 done and every output written, but more files than --max-fallback-share got fallback
captions (a re-run asks the LLM again for them; answered files come from the cache); 2 bad arguments, an
output/cache location that cannot be written (checked before any work), bad input or an endpoint that
rejects every request.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import typing
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("caption")

WORKER_PACKAGES = ("flam-synth", "flam-captioning")  # dependencies first: Beam installs them in order
ERROR_PREFIX = "caption: error:"  # every error line of this command starts with it
# ClientConfig field -> the flag that sets it (config errors name the flag)
_FLAG_OF = {
    "endpoint": "--endpoint",
    "model": "--model",
    "captions_per_file": "--captions-per-file",
    "max_concurrency": "--max-concurrency",
    "timeout_s": "--timeout-s",
    "max_attempts": "--max-attempts",
    "temperature": "--temperature",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr (no usage block) and exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{ERROR_PREFIX} {message} (see --help)\n")


@dataclass
class CaptionJob:
    """Parsed command line of one caption run."""

    out: str
    corpus: str | None = None
    metadata: str | None = None
    manifest: str | None = None
    batch_size: int = 64
    max_fallback_share: float = 0.5
    allow_outside_corpus: bool = False  # metadata paths outside the corpus folder are skipped (outside_corpus)
    wheel_dir: str | None = None
    settings: Any = None  # captioning.settings.CaptionSettings
    beam_args: list[str] = field(default_factory=list)

    @property
    def cache(self) -> str | None:
        """The caption cache folder (None: template captioner or --no-cache); it lives in ``settings``."""
        return self.settings.cache if self.settings is not None else None


def _default_cache(out: str) -> str:
    """<folder of --out>/caption_cache (works for local paths, file:// paths and URIs)."""
    from synth.paths import is_uri, local_path

    if is_uri(out):
        return out.rsplit("/", 1)[0] + "/caption_cache"
    return str(Path(local_path(out)).resolve().parent / "caption_cache")


def parse_args(argv: Sequence[str] | None = None) -> CaptionJob:
    from captioning.client import API_KEY_ENV_VARS, STRUCTURED_MODES, ClientConfig
    from captioning.prompt import SYSTEM_PROMPT_LAYOUTS, PromptConfig
    from captioning.settings import CaptionSettings
    from synth.beam_support import parse_cli, setup_logging

    d = ClientConfig()
    p = OneLineParser(
        description=__doc__.split("\n\n")[0],
        epilog="Any other --flag is an Apache Beam pipeline option (--runner, --project, --temp_location, ...).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--corpus", help="corpus folder (metadata.csv + audio), local path or URI")
    src.add_argument("--manifest", help="existing manifest Parquet to (re)caption; ingest is skipped")
    p.add_argument("--metadata", help="metadata file to use instead of <corpus>/metadata.csv (e.g. a subset)")
    p.add_argument("--out", required=True, help="output manifest Parquet (local path or URI)")
    p.add_argument(
        "--captioner",
        choices=("template", "vllm"),
        default="template",
        help="template: no LLM, captions from tags/description (default); vllm: LLM endpoint",
    )
    p.add_argument(
        "--endpoint", default=d.endpoint, help=f"OpenAI-compatible base URL (default {d.endpoint})"
    )
    p.add_argument("--model", default=d.model, help=f"served model name (default {d.model})")
    p.add_argument("--captions-per-file", type=int, default=d.captions_per_file)
    p.add_argument(
        "--max-concurrency",
        type=int,
        default=d.max_concurrency,
        help="requests in flight per worker (DoFn instance)",
    )
    p.add_argument(
        "--timeout-s",
        type=float,
        default=d.timeout_s,
        help="wall-clock limit of one request in seconds (connect, wait and the whole reply)",
    )
    p.add_argument("--max-attempts", type=int, default=d.max_attempts, help="requests per file at most")
    p.add_argument("--temperature", type=float, default=d.temperature, help="sampling temperature, 0-2")
    p.add_argument(
        "--structured-output",
        choices=STRUCTURED_MODES,
        default=d.structured_output,
        help="how JSON output is requested (vLLM: response_format json_schema or guided_json)",
    )
    p.add_argument(
        "--system-prompt",
        choices=SYSTEM_PROMPT_LAYOUTS,
        default=PromptConfig().system_prompt,
        help="merged (default): instructions at the top of the single user turn (Mixtral's chat template "
        "rejects a system role); system: a system message, for chat templates that accept one",
    )
    p.add_argument(
        "--api-key-env",
        default=",".join(API_KEY_ENV_VARS),
        help="comma-separated env vars holding the API key (read on each worker)",
    )
    p.add_argument("--cache", help="caption cache folder (default: <folder of --out>/caption_cache)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the caption cache")
    p.add_argument(
        "--cache-flush-every",
        type=int,
        help="cache entries per write: default 1 for local/shared-filesystem caches (each answer fsync'ed), "
        "64 for gs:// and other object stores (one segment object per write; a killed worker re-sends at most "
        "N-1 buffered answers plus its requests in flight)",
    )
    p.add_argument(
        "--retry-cached-failures",
        action="store_true",
        help="ask again for files whose cached LLM answers were invalid",
    )
    p.add_argument("--batch-size", type=int, default=64, help="rows per captioning batch (max)")
    p.add_argument(
        "--max-fallback-share",
        type=float,
        default=0.5,
        help="with --captioner vllm: exit 1 (after writing every output) when more than this share of the "
        "files got fallback captions (default 0.5; 1 never fails)",
    )
    p.add_argument(
        "--measure-loudness",
        action="store_true",
        help="kept for compatibility: every file is decoded whole and its loudness_db stored anyway (the "
        "renderer's ingest check)",
    )
    p.add_argument(
        "--allow-outside-corpus",
        action="store_true",
        help="accept metadata paths that resolve outside the corpus folder (skipped as outside_corpus by default, "
        "the renderer's rule)",
    )
    p.add_argument("--wheel-dir", help="remote runners: keep the built worker wheels here")
    p.add_argument("--log-level", default="INFO")
    args, beam_args = parse_cli(p, argv)
    if args.metadata and not args.corpus:
        p.error("--metadata needs --corpus (relative paths resolve against the corpus folder)")
    for name in ("batch_size", "cache_flush_every"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not (math.isfinite(args.max_fallback_share) and 0.0 <= args.max_fallback_share <= 1.0):
        p.error(f"--max-fallback-share must be a share in [0, 1], got {args.max_fallback_share}")
    if not args.out.strip():
        p.error("--out must be a file path")
    if args.cache is not None and not args.cache.strip():
        p.error("--cache must be a folder path")
    api_key_env = tuple(n.strip() for n in args.api_key_env.split(",") if n.strip())
    if not api_key_env:
        p.error("--api-key-env must name at least one environment variable")
    try:
        level = logging.getLevelName(args.log_level.upper())
        if not isinstance(level, int):
            raise ValueError(args.log_level)
    except ValueError:
        p.error(f"--log-level must be a logging level such as INFO or DEBUG, got {args.log_level!r}")
    try:
        client = ClientConfig(
            endpoint=args.endpoint,
            model=args.model,
            captions_per_file=args.captions_per_file,
            max_concurrency=args.max_concurrency,
            timeout_s=args.timeout_s,
            max_attempts=args.max_attempts,
            temperature=args.temperature,
            structured_output=args.structured_output,
            prompt=PromptConfig(system_prompt=args.system_prompt),
        )
    except ValueError as exc:  # "<field> must be …": named by its flag
        field_name, _, rest = str(exc).partition(" ")
        p.error(f"{_FLAG_OF.get(field_name, field_name)} {rest}")
    setup_logging(args.log_level)
    cache = None if args.no_cache else (args.cache or _default_cache(args.out))
    settings = CaptionSettings(
        captioner=args.captioner,
        client=client,
        cache=cache if args.captioner == "vllm" else None,
        cache_flush_every=args.cache_flush_every,
        retry_cached_failures=args.retry_cached_failures,
        api_key_env=api_key_env,
    )
    return CaptionJob(
        out=args.out,
        corpus=args.corpus,
        metadata=args.metadata,
        manifest=args.manifest,
        batch_size=args.batch_size,
        max_fallback_share=args.max_fallback_share,
        allow_outside_corpus=args.allow_outside_corpus,
        wheel_dir=args.wheel_dir,
        settings=settings,
        beam_args=beam_args,
    )


def beam_pipeline_args(job: CaptionJob) -> list[str]:
    """Beam args with local defaults; for remote runners + --extra_package wheels of WORKER_PACKAGES."""
    from synth.beam_support import pipeline_args

    return pipeline_args(job.beam_args, packages=WORKER_PACKAGES, wheel_dir=job.wheel_dir)


def api_key_warning(job: CaptionJob) -> str | None:
    """The warning for a Dataflow run started with the API key set here: workers do not get it."""
    from synth.beam_support import runner_name

    if "Dataflow" not in runner_name(job.beam_args) or not any(
        os.environ.get(n) for n in job.settings.api_key_env
    ):
        return None
    return (
        f"the API key is not shipped to workers: workers read {'/'.join(job.settings.api_key_env)} from their "
        "own environment (see docs/captioning.md)"
    )


def metadata_rows(job: CaptionJob) -> tuple[list[dict], list[dict]]:
    """Metadata rows with ids (first of each id and of each resolved path kept) and the skipped duplicates, bad
    rows and paths outside the corpus folder (synth.ingest.dedupe_rows: the renderer's ingest rule)."""
    from synth import ingest

    assert job.corpus is not None
    rows = ingest.metadata_rows(job.corpus, job.metadata)
    kept, skipped = ingest.dedupe_rows(rows, job.corpus, allow_outside=job.allow_outside_corpus)
    return kept, [s.as_dict() for s in skipped]


def ingest_config(job: CaptionJob) -> Any:
    """The synth.ingest settings of a caption run: the renderer's default ingest check (every file decoded
    whole through synth.audio.load_audio, so NaN/inf samples are a decode_error here exactly as in
    pipelines/render_mixtures.py; its loudness_db is stored as a by-product)."""
    from synth.ingest import IngestConfig

    return IngestConfig(n_captions=job.settings.client.captions_per_file, measure_loudness=True)


def check_locations(job: CaptionJob) -> None:
    """Every output and the cache folder can be written; raises captioning.locations.LocationError (before
    any work: a run must not caption everything and then fail on its final write)."""
    from captioning.locations import check_folder, check_output_file
    from captioning.settings import skipped_path, summary_path

    check_output_file(job.out, "--out")
    for path in (summary_path(job.out), skipped_path(job.out)):
        check_output_file(path, "--out")
    if job.cache is not None:
        check_folder(job.cache, "--cache" if job.cache != _default_cache(job.out) else "--cache (default)")


def fallback_share(counts: dict[str, int]) -> float:
    """Share of the captioned files whose captions are fallbacks (0 when nothing was captioned)."""
    total = int(counts.get("files_total", 0))
    return int(counts.get("files_fallback", 0)) / total if total else 0.0


def run(job: CaptionJob) -> dict:
    """Build and run the pipeline; returns the summary dict (also printed and written as JSON)."""
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems

    from captioning.beam_fns import CaptionBatchDoFn, metrics_counts, probe_or_skip, write_outputs
    from captioning.captioner import format_summary
    from captioning.client import redact_url
    from captioning.settings import summary_path
    from synth.beam_support import pipeline_options
    from synth.manifest import manifest_rows, read_manifest

    options = pipeline_options(job.beam_args, packages=WORKER_PACKAGES, wheel_dir=job.wheel_dir)
    warning = api_key_warning(job)
    if warning:
        log.warning("%s", warning)
    cfg = ingest_config(job)
    pre_skipped: list[dict] = []
    if job.manifest:
        rows = manifest_rows(read_manifest(job.manifest))
        log.info("manifest %s: %d rows to caption", job.manifest, len(rows))
    else:
        rows, pre_skipped = metadata_rows(job)
        log.info(
            "corpus %s: %d metadata rows (%d skipped before probing)", job.corpus, len(rows), len(pre_skipped)
        )

    with beam.Pipeline(options=options) as p:
        src = p | "Rows" >> beam.Create(rows, reshuffle=False)
        if job.manifest:
            probed, skipped = src, p | "NoSkips" >> beam.Create(pre_skipped)
        else:
            res = src | "Probe" >> beam.Map(probe_or_skip, job.corpus, cfg).with_outputs(
                "skipped", main="rows"
            )
            probed = res.rows
            skipped = (
                res.skipped,
                p | "PreSkipped" >> beam.Create(pre_skipped),
            ) | "AllSkipped" >> beam.Flatten()
        captioned = (
            probed
            | "Spread" >> beam.Reshuffle()
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=job.batch_size)
            | "Caption" >> beam.ParDo(CaptionBatchDoFn(job.settings))
        )
        _ = (
            p
            | "Once" >> beam.Create([None])
            | "Write"
            >> beam.Map(
                write_outputs,
                rows=beam.pvalue.AsList(captioned),
                skipped=beam.pvalue.AsList(skipped),
                out=job.out,
                assign=not job.manifest,
                cfg=cfg,
            )
        )
    result = p.result
    counts = metrics_counts(result)
    ingest: dict[str, Any] = metrics_counts(result, "ingest")
    ingest["skipped_before_probe"] = dict(Counter(s["reason"] for s in pre_skipped))
    summary = {
        "out": job.out,
        "captioner": job.settings.captioner,
        "model": job.settings.client.model if job.settings.captioner == "vllm" else None,
        "endpoint": redact_url(job.settings.client.endpoint) if job.settings.captioner == "vllm" else None,
        "cache": job.cache,
        "counts": counts,
        "ingest": ingest,
        "fallback_share": round(fallback_share(counts), 6),
        "max_fallback_share": job.max_fallback_share,
    }
    print(format_summary(counts))
    print("ingest: " + json.dumps(ingest, sort_keys=True))
    with FileSystems.create(summary_path(job.out)) as fh:
        fh.write(json.dumps(summary, indent=2, sort_keys=True).encode())
    return summary


def too_many_fallbacks(job: CaptionJob, summary: dict) -> str | None:
    """The message for a run whose fallback share exceeds --max-fallback-share, or None."""
    counts = summary["counts"]
    share = fallback_share(counts)
    if job.settings.captioner != "vllm" or share <= job.max_fallback_share:
        return None
    reasons = {
        k.removeprefix("fallback_reason_"): v
        for k, v in counts.items()
        if k.startswith("fallback_reason_") and v
    }
    return (
        f"{counts.get('files_fallback', 0)} of {counts.get('files_total', 0)} files ({share:.0%}) got fallback "
        f"captions, more than --max-fallback-share {job.max_fallback_share:g} (reasons: "
        f"{', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))}). The manifest was written with them; "
        "fix the endpoint and re-run: answered files come from the cache, the others are asked again "
        "(--retry-cached-failures also re-asks files whose answers were invalid)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """0: done; 1: done, outputs written, but too many fallbacks; 2: bad arguments/locations/input."""
    from captioning.client import LLMConfigError
    from synth.errors import ManifestError, MetadataError

    job = parse_args(argv)
    try:
        check_locations(job)
        summary = run(job)
    except (MetadataError, ManifestError, LLMConfigError, ValueError) as exc:
        print(f"{ERROR_PREFIX} {exc}", file=sys.stderr)
        return 2
    message = too_many_fallbacks(job, summary)
    if message:
        print(f"{ERROR_PREFIX} {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
