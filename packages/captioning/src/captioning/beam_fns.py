"""Beam transforms of the caption pipeline: a DoFn that captions batches of manifest rows.

One DoFn instance owns, from setup() to teardown(): a private asyncio event loop, the captioner (its
AsyncOpenAI client) and its own cache segment. Each element is a batch of rows (beam.BatchElements); the
batch is captioned concurrently under the client's semaphore in that one loop — no event loop per element.
Counts are published as Beam counters in the "captioning" namespace (read back by the driver for the
end-of-run summary). The API key is read on the worker from an environment variable, never pickled.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from captioning.cache import CaptionCache
from captioning.captioner import LLMCaptioner, TemplateCaptioner
from captioning.client import api_key_from_env
from captioning.prompt import CaptionInput
from captioning.settings import CaptionSettings, skipped_path
from synth.ingest import DOWNMIX_KEY, IngestConfig, try_probe_row

log = logging.getLogger(__name__)

METRICS_NAMESPACE = "captioning"


class CaptionBatchDoFn(beam.DoFn):
    """list[row] -> rows with captions, caption_source, caption_model and prompt_version set."""

    def __init__(self, settings: CaptionSettings) -> None:
        self.settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._captioner: LLMCaptioner | TemplateCaptioner | None = None
        self._cache: CaptionCache | None = None
        self._reported: Counter[str] = Counter()

    def setup(self) -> None:
        s = self.settings
        if s.captioner == "template":
            self._captioner = TemplateCaptioner(s.client.captions_per_file)
            return
        self._loop = asyncio.new_event_loop()
        self._cache = CaptionCache(s.cache, flush_every=s.cache_flush_every) if s.cache else None
        self._captioner = LLMCaptioner(
            s.client,
            cache=self._cache,
            retry_cached_failures=s.retry_cached_failures,
            api_key=api_key_from_env(s.api_key_env),
        )

    def _counts(self) -> Counter[str]:
        c = self._captioner
        return c.all_counts() if isinstance(c, LLMCaptioner) else Counter(c.counts)

    def _publish(self) -> None:
        now = self._counts()
        for k, v in now.items():
            delta = v - self._reported.get(k, 0)
            if delta:
                Metrics.counter(METRICS_NAMESPACE, k).inc(delta)
        self._reported = now

    def process(self, batch: Iterable[dict]) -> Iterator[dict]:
        rows = list(batch)
        inputs = [CaptionInput.from_row(r) for r in rows]
        if isinstance(self._captioner, TemplateCaptioner):
            results = self._captioner.caption_inputs(inputs)
        else:
            assert self._loop is not None and self._captioner is not None
            results = self._loop.run_until_complete(self._captioner.caption_inputs(inputs))
        self._publish()
        c = self._reported
        log.info(
            "captioned %d files (this worker so far: llm %d, cache %d, fallback %d, template %d, requests %d)",
            len(rows), c["files_llm"], c["files_cache"], c["files_fallback"], c["files_template"],
            c["requests_sent"],
        )  # fmt: skip
        for row, res in zip(rows, results, strict=True):
            yield {**row, **res.columns()}

    def start_bundle(self) -> None:
        if self._cache is not None:
            self._cache.refresh()  # answers other workers wrote since setup (e.g. a dead worker's, on retry)

    def finish_bundle(self) -> None:
        if self._cache is not None:
            self._cache.flush()  # remote caches: this bundle's entries become a segment object

    def teardown(self) -> None:
        if self._cache is not None:
            self._cache.close()
        if self._loop is not None:
            if isinstance(self._captioner, LLMCaptioner):
                self._loop.run_until_complete(self._captioner.aclose())
            self._loop.close()
            self._loop = None


def probe_or_skip(row: dict, corpus: str, cfg: IngestConfig) -> dict | beam.pvalue.TaggedOutput:
    """Beam map: metadata row -> TaggedOutput 'skipped' or the probed manifest row."""
    good, bad = try_probe_row(row, corpus, cfg)
    if good is None:
        Metrics.counter("ingest", f"skipped_{bad.reason}").inc()
        log.warning("ingest: skipping %s (%s): %s", bad.path, bad.reason, bad.detail)
        return beam.pvalue.TaggedOutput("skipped", bad.as_dict())
    Metrics.counter("ingest", "ingested").inc()
    if good.get(DOWNMIX_KEY) is not None:  # channels cancel in the mean: one channel is used (synth.audio)
        Metrics.counter("ingest", "downmix_channel_fallback").inc()
    return good


def write_outputs(
    _: object, rows: list[dict], skipped: list[dict], out: str, assign: bool, cfg: IngestConfig
) -> int:
    """Final step (one worker): splits over all rows, manifest sorted by id, skipped list beside it."""
    from apache_beam.io.filesystems import FileSystems

    from synth.manifest import write_manifest
    from synth.split import assign_splits

    rows = sorted((dict(r) for r in rows), key=lambda r: str(r["id"]))
    if assign:
        assign_splits(rows, cfg.split)
    write_manifest(rows, out)
    with FileSystems.create(skipped_path(out)) as fh:
        for s in sorted(skipped, key=lambda s: (s["path"], s["reason"])):
            fh.write((json.dumps(s, sort_keys=True) + "\n").encode())
    return len(rows)


def metrics_counts(result: object, namespace: str = METRICS_NAMESPACE) -> dict[str, int]:
    """The pipeline's counters in `namespace` (committed where the runner has them)."""
    from apache_beam.metrics.metric import MetricsFilter

    out: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(namespace))  # type: ignore[attr-defined]
    for c in query["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value or 0)
    return out
