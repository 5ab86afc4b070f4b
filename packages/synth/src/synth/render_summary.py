"""The end-of-run summary of render_mixtures: counts, and every skip or note by reason."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Sample-stat keys that are plain counters; every other key of a shard's stats is a note (a reason something
# was dropped, changed or skipped), reported by reason in index.json totals and the end-of-run summary.
MIXTURE_COUNTERS = (
    "mixtures",
    "events_placed",
    "events_dropped_by_relabel",
    "events_labelled",
    "events_single",
    "events_split",
    "events_repeat",
)
AUDIO_TEXT_COUNTERS = ("clips", "cropped", "padded")


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
    event_modes: dict[str, int] = field(default_factory=dict)  # placed events by mode, this run
    configured_modes: dict[str, float] = field(default_factory=dict)  # split_prob, repeat_prob
    audio_text: bool = True  # False with --no-audio-text
    audio_text_total: int = 0
    audio_text_written: int = 0
    audio_text_shards_written: int = 0
    audio_text_shards_skipped: int = 0
    audio_text_notes: dict[str, int] = field(default_factory=dict)  # by reason, clips of this run
    sources: dict[str, int] = field(default_factory=dict)
    pool_skipped: dict[str, int] = field(default_factory=dict)  # split rows the source pool left out
    files_skipped: dict[str, int] = field(default_factory=dict)
    ingest_notes: dict[str, int] = field(default_factory=dict)  # e.g. downmix_channel_fallback
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
        ]
        if self.events_placed:
            shares = ", ".join(
                f"{m} {100 * self.event_modes.get(m, 0) / self.events_placed:.1f} %"
                + (
                    f" (configured {100 * self.configured_modes[m]:g} %)"
                    if m in self.configured_modes
                    else ""
                )
                for m in ("split", "repeat", "single")
            )
            lines.append(f"event modes (realised): {shares}")
        lines.append(f"events dropped (relabel, no active frames): {self.events_dropped_by_relabel}")
        lines += _by_reason("mixture notes (this run)", self.mixture_notes)
        if self.audio_text:
            lines.append(
                f"audio-text clips:       {self.audio_text_written} of {self.audio_text_total} "
                f"({self.audio_text_shards_written} shards written, {self.audio_text_shards_skipped} already "
                "complete)"
            )
            lines += _by_reason("audio-text notes (this run)", self.audio_text_notes)
        else:
            lines.append("audio-text clips:       not written (--no-audio-text)")
        lines += _by_reason("sources left out of the pool", self.pool_skipped)
        lines += _by_reason("ingest notes", self.ingest_notes) if self.ingest_notes else []
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


def sum_stats(sidecars: Sequence[Mapping[str, Any]]) -> Counter:
    """Sum of the numeric stats of shard sidecars."""
    total: Counter = Counter()
    for m in sidecars:
        total.update({k: v for k, v in (m.get("stats") or {}).items() if isinstance(v, int | float)})
    return total
