"""What a caption run is told (picklable settings) and where its side outputs go — no Apache Beam import, so
the command line can be checked before Beam is loaded."""

from __future__ import annotations

from dataclasses import dataclass, field

from captioning.client import API_KEY_ENV_VARS, ClientConfig

CAPTIONERS = ("template", "vllm")


@dataclass(frozen=True)
class CaptionSettings:
    """Everything a worker needs to caption (picklable; holds env var names, never the key itself)."""

    captioner: str = "template"  # template | vllm
    client: ClientConfig = field(default_factory=ClientConfig)
    cache: str | None = None  # cache folder (local path or URI); None: no cache
    cache_flush_every: int | None = None  # entries per cache write; None: 1 local, 64 remote (cache.py)
    retry_cached_failures: bool = False
    api_key_env: tuple[str, ...] = API_KEY_ENV_VARS

    def __post_init__(self) -> None:
        if self.captioner not in CAPTIONERS:
            raise ValueError(f"captioner must be one of {CAPTIONERS}, got {self.captioner!r}")


def summary_path(out: str) -> str:
    """Where the run summary goes: beside the manifest, <stem>.summary.json (skips: <stem>.skipped.jsonl)."""
    base = out[: -len(".parquet")] if out.endswith(".parquet") else out
    return base + ".summary.json"


def skipped_path(out: str) -> str:
    """Where the skipped-files list goes: beside the manifest, <stem>.skipped.jsonl."""
    return summary_path(out).removesuffix(".summary.json") + ".skipped.jsonl"
