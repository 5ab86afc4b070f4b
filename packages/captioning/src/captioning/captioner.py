"""Captioners: `template` (no LLM) and `vllm` (LLM through CaptionClient, with cache and fallback).

Every file ends with at least one caption and a caption_source: llm (fresh or cached LLM answer), template
(built-in captioner), or fallback (the LLM answer failed after all retries: the same composer as template,
`captioning.template.template_captions` over `synth.captions`, the reason counted). Nothing is dropped
silently.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from captioning.cache import CaptionCache, cache_key
from captioning.client import CaptionClient, ClientConfig, LLMOutcome
from captioning.prompt import CaptionInput, prompt_version
from captioning.template import TEMPLATE_VERSION, template_captions


@dataclass
class CaptionResult:
    """Captions for one file plus the provenance columns of the manifest."""

    captions: list[str]
    caption_source: str  # llm | template | fallback
    caption_model: str | None
    prompt_version: str | None
    reason: str | None = None  # fallback reason
    from_cache: bool = False

    def columns(self) -> dict:
        """The manifest columns this result sets."""
        return {
            "captions": list(self.captions),
            "caption_source": self.caption_source,
            "caption_model": self.caption_model,
            "prompt_version": self.prompt_version,
        }


def request_key(cfg: ClientConfig, inp: CaptionInput) -> str:
    """Cache key of one file's request: model, prompt version (with layout), N and the sanitised inputs."""
    return cache_key(cfg.model, prompt_version(cfg.prompt), cfg.captions_per_file, inp, cfg.prompt)


class TemplateCaptioner:
    """No-LLM captioner; output labelled caption_source=template."""

    name = "template"

    def __init__(self, captions_per_file: int = 3) -> None:
        self.n = captions_per_file
        self.counts: Counter[str] = Counter()

    def caption_inputs(self, inputs: list[CaptionInput]) -> list[CaptionResult]:
        self.counts["files_total"] += len(inputs)
        self.counts["files_template"] += len(inputs)
        return [
            CaptionResult(template_captions(i, self.n), "template", None, TEMPLATE_VERSION) for i in inputs
        ]


class LLMCaptioner:
    """LLM captions with a persistent cache; failures become counted fallbacks.

    Cache entries: status "ok" (valid captions) and status "invalid" (the model's answers failed validation
    or parsing after every attempt; re-runs use the fallback without asking again unless
    retry_cached_failures). Transport failures (429/5xx/timeouts exhausted) are not cached: a re-run retries.
    """

    name = "vllm"

    def __init__(
        self,
        cfg: ClientConfig,
        cache: CaptionCache | None = None,
        retry_cached_failures: bool = False,
        api_key: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.cache = cache
        self.retry_cached_failures = retry_cached_failures
        self.client = CaptionClient(cfg, api_key=api_key, seed=seed)
        self.version = prompt_version(cfg.prompt)
        self.counts: Counter[str] = Counter()

    def _key(self, inp: CaptionInput) -> str:
        return request_key(self.cfg, inp)

    def _fallback(self, inp: CaptionInput, reason: str, from_cache: bool = False) -> CaptionResult:
        self.counts["files_fallback"] += 1
        self.counts[f"fallback_reason_{reason}"] += 1
        caps = template_captions(inp, self.cfg.captions_per_file)  # the template composer's; never empty
        return CaptionResult(caps, "fallback", self.cfg.model, self.version, reason, from_cache)

    def _from_cache(self, inp: CaptionInput, entry: dict) -> CaptionResult | None:
        if entry.get("status") == "ok" and entry.get("captions"):
            self.counts["files_cache"] += 1
            return CaptionResult(list(entry["captions"]), "llm", self.cfg.model, self.version, None, True)
        if entry.get("status") == "invalid" and not self.retry_cached_failures:
            self.counts["files_cache_fallback"] += 1
            return self._fallback(inp, str(entry.get("reason") or "invalid"), from_cache=True)
        return None

    def _record(self, inp: CaptionInput, key: str, out: LLMOutcome) -> CaptionResult:
        if out.captions:
            if self.cache is not None:
                self.cache.put(
                    key,
                    {
                        "status": "ok",
                        "captions": out.captions,
                        "model": self.cfg.model,
                        "prompt_version": self.version,
                        "t": time.time(),
                    },
                )
            self.counts["files_llm"] += 1
            return CaptionResult(out.captions, "llm", self.cfg.model, self.version)
        reason = out.reason or "unknown"
        if self.cache is not None and not out.transient:
            self.cache.put(
                key,
                {
                    "status": "invalid",
                    "reason": reason,
                    "model": self.cfg.model,
                    "prompt_version": self.version,
                    "t": time.time(),
                },
            )
        return self._fallback(inp, reason)

    async def caption_inputs(self, inputs: list[CaptionInput]) -> list[CaptionResult]:
        """Caption a batch: cache hits first, the rest concurrently through the client."""
        import asyncio

        self.counts["files_total"] += len(inputs)
        results: list[CaptionResult | None] = [None] * len(inputs)
        todo: list[tuple[int, str]] = []
        for i, inp in enumerate(inputs):
            key = self._key(inp)
            entry = self.cache.get(key) if self.cache is not None else None
            hit = self._from_cache(inp, entry) if entry is not None else None
            if hit is not None:
                results[i] = hit
            else:
                todo.append((i, key))

        async def one(i: int, key: str) -> None:
            out = await self.client.caption(inputs[i])
            results[i] = self._record(inputs[i], key, out)  # cached as soon as it is known

        tasks = [asyncio.ensure_future(one(i, k)) for i, k in todo]
        try:
            await asyncio.gather(*tasks)
        except BaseException:  # e.g. LLMConfigError: stop the rest of the batch before re-raising
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [r for r in results if r is not None]

    def all_counts(self) -> Counter[str]:
        """File-level counts plus the client's request counts."""
        return self.counts + self.client.counts

    async def aclose(self) -> None:
        await self.client.aclose()


SUMMARY_ORDER = (
    "files_total",
    "files_llm",
    "files_cache",
    "files_fallback",
    "files_cache_fallback",
    "files_template",
    "requests_sent",
    "retries",
)


def format_summary(counts: dict[str, int]) -> str:
    """One-screen end-of-run summary."""
    lines = ["caption summary:"]
    for k in SUMMARY_ORDER:
        lines.append(f"  {k:<28}{int(counts.get(k, 0))}")
    failed = {k: v for k, v in counts.items() if k.startswith("failed_") and v}
    lines.append(f"  {'failed_requests':<28}{sum(failed.values())}")
    for k in sorted(failed):
        lines.append(f"    {k.removeprefix('failed_'):<26}{failed[k]}")
    for prefix, title in (("fallback_reason_", "fallback reasons"), ("invalid_caption_", "invalid captions")):
        items = {k: v for k, v in counts.items() if k.startswith(prefix) and v}
        if items:
            lines.append(f"  {title}:")
            lines.extend(f"    {k.removeprefix(prefix):<26}{v}" for k, v in sorted(items.items()))
    return "\n".join(lines)
