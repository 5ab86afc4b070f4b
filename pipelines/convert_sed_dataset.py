"""Convert strong-label SED data sets (AudioSet-strong, DESED, URBAN-SED) into FLAM mixture shards.

    uv run python pipelines/convert_sed_dataset.py --format desed \\
        --labels DESED/metadata/validation/validation.tsv --audio DESED/audio/validation --out data/sed/desed
    uv run python pipelines/convert_sed_dataset.py --format audioset-strong \\
        --labels audioset_eval_strong.tsv --label-names mid_to_display_name.tsv --audio AS/eval --out data/sed/as
    uv run python pipelines/convert_sed_dataset.py --format urbansed \\
        --labels URBAN-SED/annotations --audio URBAN-SED/audio --out data/sed/urbansed

The output folder has the layout of a render_mixtures split folder (``shard-NNNNNN.tar`` + sidecars +
``config.json`` + ``index.json``, see synth.shards); each sample is a 10-s, 48 kHz mono 16-bit FLAC crop
of one labelled file plus its JSON ``{key, sample_rate, duration, events, spec}``. See
docs/convert_sed_dataset.md.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import multiprocessing
import os
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import synth
from synth import records, shards
from synth.audio import AUDIO_EXTENSIONS, load_audio, probe_audio
from synth.errors import AudioDecodeError
from synth.flac import encode_flac
from synth.records import json_record_bytes
from synth.relabel import merge_labels_by_text

log = logging.getLogger("convert_sed_dataset")

FORMATS = ("audioset-strong", "desed", "urbansed")
SAMPLE_RATE = records.SAMPLE_RATE  # 48 kHz, like the rendered mixtures
# Output-format version of the converted samples: part of config.json's fingerprint, so complete shards
# written by a converter that made other bytes are never mixed with new ones. Bump it with any change to
# the crop policy, label parsing, the records or the audio chain (synth.audio / synth.flac).
CONVERT_FORMAT_VERSION = 1
CODE_VERSION = f"flam-synth {synth.__version__}; convert_sed_dataset v{CONVERT_FORMAT_VERSION}"
TIME_DECIMALS = 6  # segment times are rounded to the microsecond (no 3.2999999999 from 13.3 - 10)
EXAMPLES_PER_REASON = 3
LOAD_ERRORS = (AudioDecodeError, OSError, RuntimeError, ValueError)  # an audio file we cannot use
MID_RE = re.compile(r"^/[a-z]/[0-9a-z_]+$")

# Why input was left out, and what the count counts.
SKIP_UNITS = {
    "bad_label_file": "label files",
    "bad_label_row": "label rows",
    "unknown_label": "label rows",
    "zero_length_event": "label rows",
    "weak_labels": "clips",
    "no_audio": "clips",
    "missing_file": "clips",
    "decode_error": "clips",
    "empty_audio": "clips",
}
NOTE_UNITS = {
    "not_present_row": "label rows",  # AudioSet posneg files: NOT_PRESENT rows are negatives, not events
    "event_beyond_audio": "events",  # onset at or after the end of the audio
    "duplicate_audio_stem": "audio files",  # same stem twice under --audio: the first (sorted) is used
    "tail_dropped": "clips",  # the last piece after the full crops was shorter than --min-tail-seconds
    "audio_without_labels": "audio files",
}


class InputError(ValueError):
    """Bad command-line input (a missing path, an unreadable --label-names file): exit code 2."""


@dataclass
class Tally:
    """Counts by reason, with a few examples each."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, reason: str, example: str = "", n: int = 1) -> None:
        self.counts[reason] += n
        if example and len(self.examples[reason]) < EXAMPLES_PER_REASON:
            self.examples[reason].append(example)


@dataclass
class ClipLabels:
    """Everything the label files say about one clip (file stem / segment id)."""

    clip_id: str
    events: list[tuple[str, float, float]] = field(default_factory=list)  # (text, onset_s, offset_s)
    weak: bool = False  # a row with a label but no onset/offset: the clip's labels are incomplete
    where: str = ""  # first label row/file that named it, for messages


# ---------------------------------------------------------------- label parsing


def label_text(raw: str) -> str:
    """Event text of a label: lower case, underscores as spaces, whitespace runs collapsed."""
    return " ".join(raw.replace("_", " ").lower().split())


def strip_audio_ext(name: str) -> str:
    """The stem of a file name in a label file (``a.wav`` -> ``a``; ``Y_x_1.000_2.000`` stays whole)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = base.rpartition(".")
    return stem if dot and f".{ext.lower()}" in AUDIO_EXTENSIONS else base


def parse_time(value: str, what: str) -> float:
    try:
        t = float(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a number") from None
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"{what} {value!r} is not a finite time >= 0")
    return t


def parse_interval(onset: str, offset: str) -> tuple[float, float]:
    on, off = parse_time(onset, "onset"), parse_time(offset, "offset")
    if off < on:
        raise ValueError(f"offset {off} is before onset {on}")
    return on, off


def read_text(path: Path) -> str:
    """A label file's text (UTF-8, BOM tolerated); raises OSError/UnicodeDecodeError."""
    return path.read_text(encoding="utf-8-sig")


def label_files(labels: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """``labels`` itself when it is a file, else the files under it with one of ``suffixes`` (sorted)."""
    if labels.is_file():
        return [labels]
    return sorted(
        p
        for p in labels.rglob("*")
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
    )


def table_rows(
    path: Path, columns: Sequence[str], optional: Sequence[str], skips: Tally
) -> Iterator[tuple[str, dict]]:
    """Rows of a tab-separated label table as ``(where, {column: value})``.

    The first line is a header when it names every required column (any order, extra columns allowed);
    otherwise the columns are positional in ``columns`` order. Blank lines and ``#`` comments are skipped;
    missing trailing fields read as empty strings.
    """
    try:
        lines = read_text(path).splitlines()
    except (OSError, UnicodeDecodeError) as e:
        skips.add("bad_label_file", f"{path}: {e}")
        return
    body = [
        (i + 1, line) for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")
    ]
    if not body:
        return
    first = [f.strip().lower() for f in body[0][1].split("\t")]
    if set(columns) <= set(first):
        pos = {c: first.index(c) for c in (*columns, *optional) if c in first}
        body = body[1:]
    elif any(f in first for f in columns):
        skips.add("bad_label_file", f"{path}: header {first} lacks the columns {list(columns)}")
        return
    else:
        pos = {c: i for i, c in enumerate(columns)}
    for lineno, line in body:
        fields = [f.strip() for f in line.split("\t")]
        yield f"{path.name}:{lineno}", {c: fields[i] if i < len(fields) else "" for c, i in pos.items()}


def _clip(clips: dict[str, ClipLabels], clip_id: str, where: str) -> ClipLabels:
    if clip_id not in clips:
        clips[clip_id] = ClipLabels(clip_id, where=where)
    return clips[clip_id]


def _add_event(clip: ClipLabels, text: str, on: float, off: float, where: str, skips: Tally) -> None:
    if off == on:
        skips.add("zero_length_event", f"{where}: {text!r} has onset = offset = {on}")
    else:
        clip.events.append((text, on, off))


def parse_audioset_strong(
    labels: Path, names: dict[str, str] | None, skips: Tally, notes: Tally
) -> dict[str, ClipLabels]:
    """AudioSet-strong TSV(s): ``segment_id  start_time_seconds  end_time_seconds  label [present]``."""
    clips: dict[str, ClipLabels] = {}
    cols = ("segment_id", "start_time_seconds", "end_time_seconds", "label")
    for path in label_files(labels, (".tsv", ".txt", ".csv")):
        for where, row in table_rows(path, cols, ("present",), skips):
            seg, label = row["segment_id"], row["label"]
            if not seg or not label:
                skips.add("bad_label_row", f"{where}: empty segment_id or label")
                continue
            try:
                on, off = parse_interval(row["start_time_seconds"], row["end_time_seconds"])
            except ValueError as e:
                skips.add("bad_label_row", f"{where}: {e}")
                continue
            if row.get("present", "PRESENT").upper() not in ("PRESENT", ""):
                notes.add("not_present_row", f"{where}: {label} is {row['present']}")
                continue
            if MID_RE.match(label):
                name = (names or {}).get(label)
                if name is None:
                    hint = "" if names else " (give --label-names)"
                    skips.add("unknown_label", f"{where}: no display name for {label}{hint}")
                    continue
                label = name
            text = label_text(label)
            if not text:
                skips.add("bad_label_row", f"{where}: label {row['label']!r} is empty as text")
                continue
            _add_event(_clip(clips, seg, where), text, on, off, where, skips)
    return clips


def parse_desed(labels: Path, skips: Tally) -> dict[str, ClipLabels]:
    """DESED strong TSV(s): ``filename  onset  offset  event_label``; a row with empty onset/offset/label is a
    clip with no events, a row with a label but no times a weak label (the clip is skipped)."""
    clips: dict[str, ClipLabels] = {}
    cols = ("filename", "onset", "offset", "event_label")
    for path in label_files(labels, (".tsv", ".txt", ".csv")):
        for where, row in table_rows(path, cols, (), skips):
            name, onset, offset, label = (row[c] for c in cols)
            if not name:
                skips.add("bad_label_row", f"{where}: empty filename")
                continue
            clip = _clip(clips, strip_audio_ext(name), where)
            if not onset and not offset:
                if label:
                    clip.weak = True
                continue
            try:
                on, off = parse_interval(onset, offset)
            except ValueError as e:
                skips.add("bad_label_row", f"{where}: {e}")
                continue
            text = label_text(label)
            if not text:
                skips.add("bad_label_row", f"{where}: times without an event label")
                continue
            _add_event(clip, text, on, off, where, skips)
    return clips


def parse_urbansed(labels: Path, skips: Tally) -> dict[str, ClipLabels]:
    """URBAN-SED: one ``<stem>.txt`` per soundscape, rows ``onset  offset  label`` (no header)."""
    clips: dict[str, ClipLabels] = {}
    for path in label_files(labels, (".txt",)):
        try:
            lines = read_text(path).splitlines()
        except (OSError, UnicodeDecodeError) as e:
            skips.add("bad_label_file", f"{path}: {e}")
            continue
        clip = _clip(clips, path.stem, path.name)
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            where = f"{path.name}:{i + 1}"
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) != 3:
                skips.add(
                    "bad_label_row", f"{where}: expected onset, offset, label; got {len(fields)} fields"
                )
                continue
            try:
                on, off = parse_interval(fields[0].strip(), fields[1].strip())
            except ValueError as e:
                skips.add("bad_label_row", f"{where}: {e}")
                continue
            text = label_text(fields[2])
            if not text:
                skips.add("bad_label_row", f"{where}: empty label")
                continue
            _add_event(clip, text, on, off, where, skips)
    return clips


def read_label_names(path: Path) -> dict[str, str]:
    """MID -> display name (the evaluation's parser, `eval.readers.read_audioset_label_names`: ``mid,display_name``
    CSV, AudioSet's ``class_labels_indices.csv`` or a two-column TSV). Raises InputError."""
    from eval.readers import read_audioset_label_names

    try:
        return read_audioset_label_names(path)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"--label-names {path}: {e}") from None


def parse_labels(
    fmt: str, labels: Path, names: dict[str, str] | None, skips: Tally, notes: Tally
) -> dict[str, ClipLabels]:
    if fmt == "audioset-strong":
        return parse_audioset_strong(labels, names, skips, notes)
    if fmt == "desed":
        return parse_desed(labels, skips)
    if fmt == "urbansed":
        return parse_urbansed(labels, skips)
    raise ValueError(f"unknown format {fmt!r}")


# ---------------------------------------------------------------- audio matching and the crop plan


def index_audio(audio_dir: Path, notes: Tally) -> dict[str, str]:
    """stem -> path relative to ``audio_dir`` (posix) of every audio file under it; the first in sorted
    path order wins when a stem repeats (counted as ``duplicate_audio_stem``)."""
    found: dict[str, str] = {}
    for root, dirs, files in os.walk(audio_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in AUDIO_EXTENSIONS:
                continue
            rel = Path(root, name).relative_to(audio_dir).as_posix()
            stem = os.path.splitext(name)[0]
            if stem in found:
                notes.add("duplicate_audio_stem", f"{rel} (using {found[stem]})")
            else:
                found[stem] = rel
    return found


def find_audio(clip_id: str, audio: dict[str, str]) -> str | None:
    """The audio file of a clip: same stem, or the stem with a leading ``Y`` added or removed (AudioSet
    segment ids are written both ways)."""
    alt = clip_id[1:] if clip_id.startswith("Y") else f"Y{clip_id}"
    return audio.get(clip_id) or audio.get(alt)


def crop_starts(duration_s: float, clip_s: float, min_tail_s: float) -> tuple[list[float], bool]:
    """Start times of the consecutive ``clip_s`` crops of a file, and whether a short tail was dropped.

    A file of at most ``clip_s`` is one (zero-padded) crop; a longer one gives one crop per full
    ``clip_s`` plus one for the rest when the rest is at least ``min_tail_s`` long.
    """
    tol = 1e-6
    n_full = int((duration_s + tol) // clip_s)
    rest = duration_s - n_full * clip_s
    n = n_full
    dropped = False
    if rest > tol:
        if n_full == 0 or rest >= min_tail_s - tol:
            n += 1
        else:
            dropped = True
    return [round(i * clip_s, TIME_DECIMALS) for i in range(max(n, 1))], dropped


def crop_events(
    clip_id: str, events: Sequence[tuple[str, float, float]], start: float, end: float
) -> list[dict[str, Any]]:
    """The clip's events inside ``[start, end)``, shifted to crop time, one per text with merged segments
    (sorted, never overlapping or touching), ordered like the renderer's (first onset, text)."""
    labels = []
    for text, on, off in events:
        a = round(max(on, start) - start, TIME_DECIMALS)
        b = round(min(off, end) - start, TIME_DECIMALS)
        if b > a:
            labels.append({"text": text, "tags": [text], "source_id": clip_id, "segments": [[a, b]]})
    merged = merge_labels_by_text(labels)
    merged.sort(key=lambda e: (e["segments"][0][0], e["text"]))
    return merged


@dataclass(frozen=True)
class Crop:
    """One output sample: which file, which window, and its record (without the key)."""

    path: str  # absolute path of the audio file
    start_s: float
    record: dict[str, Any]  # {sample_rate, duration, events, spec}


@dataclass
class Plan:
    crops: list[Crop] = field(default_factory=list)
    clips_labelled: int = 0
    clips_converted: int = 0
    audio_files: int = 0


def build_plan(
    fmt: str,
    clips: dict[str, ClipLabels],
    audio_dir: Path,
    clip_s: float,
    min_tail_s: float,
    skips: Tally,
    notes: Tally,
) -> Plan:
    """Match labels to audio, probe each file, cut it into crops (in clip-id order)."""
    audio = index_audio(audio_dir, notes)
    plan = Plan(clips_labelled=len(clips), audio_files=len(audio))
    used: set[str] = set()
    for clip_id in sorted(clips):
        clip = clips[clip_id]
        rel = find_audio(clip_id, audio)
        if clip.weak:
            skips.add("weak_labels", f"{clip.where}: {clip_id} has labels without onset/offset")
            if rel:
                used.add(rel)
            continue
        if rel is None:
            skips.add("no_audio", f"{clip.where}: no audio file for {clip_id} under {audio_dir}")
            continue
        used.add(rel)
        path = str(audio_dir / rel)
        try:
            info = probe_audio(path)
        except LOAD_ERRORS as e:
            reason = getattr(e, "reason_code", "decode_error")
            skips.add(reason, f"{rel}: {getattr(e, 'reason', e)}")
            continue
        duration = info.frames / info.sample_rate
        starts, tail_dropped = crop_starts(duration, clip_s, min_tail_s)
        if tail_dropped:
            notes.add(
                "tail_dropped", f"{rel}: {duration - len(starts) * clip_s:.3f} s after {len(starts)} crops"
            )
        for text, on, _ in clip.events:
            if on >= duration:
                notes.add("event_beyond_audio", f"{clip_id}: {text!r} at {on} s, audio is {duration:.3f} s")
        for i, start in enumerate(starts):
            valid = round(min(clip_s, duration - start), TIME_DECIMALS)
            spec: dict[str, Any] = {
                "converted_from": fmt,
                "clip_id": clip_id,
                "file": rel,
                "crop_index": i,
                "num_crops": len(starts),
                "crop_start_s": start,
                "valid_duration": valid,
                "source_duration": round(duration, TIME_DECIMALS),
                "source_sample_rate": info.sample_rate,
                "notes": {"zero_padded": 1} if valid < clip_s else {},
            }
            record = {
                "sample_rate": SAMPLE_RATE,
                "duration": float(clip_s),
                "events": crop_events(clip_id, clip.events, start, start + valid),
                "spec": spec,
            }
            plan.crops.append(Crop(path, start, record))
        plan.clips_converted += 1
    unused = sorted(set(audio.values()) - used)
    if unused:
        notes.add("audio_without_labels", unused[0], n=len(unused))
        for rel in unused[1:EXAMPLES_PER_REASON]:
            notes.examples["audio_without_labels"].append(rel)
    return plan


def plan_sha256(plan: Plan) -> str:
    """sha256 over every crop record (file paths relative to --audio, so moving the data changes nothing)."""
    h = hashlib.sha256()
    for crop in plan.crops:
        h.update(json_record_bytes(crop.record))
        h.update(b"\n")
    return h.hexdigest()


# ---------------------------------------------------------------- shard writing


@dataclass(frozen=True)
class ShardTask:
    out: str
    shard: int
    first_index: int
    fingerprint: str
    clip_s: float
    crops: tuple[Crop, ...]


def crop_audio(audio: np.ndarray, start_s: float, clip_s: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``clip_s`` seconds of ``audio`` from ``start_s``, zero padded at the end."""
    n = int(round(clip_s * sr))
    a = int(round(start_s * sr))
    out = np.zeros(n, dtype=np.float32)
    piece = audio[a : a + n]
    out[: len(piece)] = piece
    return out


def write_shard(task: ShardTask) -> dict[str, Any]:
    """Decode, crop, encode and write one shard (+ sidecar); audio that fails to decode is a skipped key."""
    t0 = time.perf_counter()
    stats: Counter = Counter()
    skipped_keys: list[str] = []
    cached_path, cached, cached_error = None, None, None
    path = shards.join(task.out, shards.shard_name(task.shard))
    with shards.ShardWriter(path) as writer:
        for i, crop in enumerate(task.crops):
            key = shards.sample_key(task.first_index + i)
            if crop.path != cached_path:
                cached_path, cached, cached_error = crop.path, None, None
                try:
                    cached = load_audio(crop.path, target_sr=SAMPLE_RATE)
                except LOAD_ERRORS as e:
                    cached_error = getattr(e, "reason_code", "decode_error")
                    log.warning("crop %s skipped: %s", key, e)
            if cached is None:
                skipped_keys.append(key)
                stats[f"skipped_{cached_error}"] += 1
                continue
            record = {"key": key, **crop.record}
            audio = crop_audio(cached, crop.start_s, task.clip_s)
            writer.write(key, {"flac": encode_flac(audio, SAMPLE_RATE), "json": json_record_bytes(record)})
            stats.update(
                {
                    "crops": 1,
                    "events": len(record["events"]),
                    "crops_without_events": int(not record["events"]),
                    "zero_padded": int(bool(record["spec"]["notes"])),
                }
            )
        sidecar = {
            "shard": task.shard,
            "name": shards.shard_name(task.shard),
            "first_index": task.first_index,
            "fingerprint": task.fingerprint,
            "code_version": CODE_VERSION,
            "stats": dict(sorted(stats.items())),
            "skipped_keys": skipped_keys,
        }
        writer.close(sidecar, shards.join(task.out, shards.sidecar_name(task.shard)))
    dt = time.perf_counter() - t0
    log.info(
        "%s: %d crops (%d skipped) in %.1f s",
        path,
        len(task.crops) - len(skipped_keys),
        len(skipped_keys),
        dt,
    )
    return {"shard": task.shard, "stats": dict(stats), "skipped": len(skipped_keys)}


def run_tasks(tasks: list[ShardTask], workers: int) -> list[dict[str, Any]]:
    if workers <= 1 or len(tasks) <= 1:
        return [write_shard(t) for t in tasks]
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
        return list(pool.map(write_shard, tasks))


# ---------------------------------------------------------------- driver


@dataclass
class Summary:
    fmt: str
    out: str
    clips_labelled: int = 0
    clips_converted: int = 0
    audio_files: int = 0
    crops_total: int = 0
    crops_written: int = 0
    shards_written: int = 0
    shards_complete: int = 0
    crop_stats: Counter = field(default_factory=Counter)  # this run's shards
    skips: Tally = field(default_factory=Tally)
    notes: Tally = field(default_factory=Tally)
    seconds: float = 0.0

    def format(self) -> str:
        s = self.crop_stats
        failed = {k.removeprefix("skipped_"): v for k, v in sorted(s.items()) if k.startswith("skipped_")}
        lines = [
            f"== convert_sed_dataset summary ({self.fmt}, {self.seconds:.1f} s) ==",
            f"output:                 {self.out}",
            f"labelled clips:         {self.clips_labelled} ({self.clips_converted} converted; "
            f"{self.audio_files} audio files found)",
            f"crops written:          {self.crops_written} of {self.crops_total} "
            f"({self.shards_written} shards written, {self.shards_complete} already complete)",
            f"events written:         {s.get('events', 0)} (crops without events: "
            f"{s.get('crops_without_events', 0)}, zero padded: {s.get('zero_padded', 0)})",
            f"crops skipped (audio failed to decode): {sum(failed.values())}"
            + (f" ({', '.join(f'{k} {v}' for k, v in failed.items())})" if failed else ""),
        ]
        lines += _tally_lines("input skipped", self.skips, SKIP_UNITS)
        lines += _tally_lines("notes", self.notes, NOTE_UNITS)
        return "\n".join(lines)


def _tally_lines(title: str, tally: Tally, units: dict[str, str]) -> list[str]:
    lines = [f"{title}: {sum(tally.counts.values())}"]
    for reason, n in sorted(tally.counts.items()):
        lines.append(f"  {reason}: {n} {units.get(reason, '')}".rstrip())
        lines += [f"    e.g. {ex}" for ex in tally.examples.get(reason, [])[:EXAMPLES_PER_REASON]]
    return lines


@dataclass
class ConvertOptions:
    fmt: str
    labels: str
    audio: str
    out: str
    label_names: str | None = None
    shard_size: int = 128
    clip_s: float = records.CLIP_S
    min_tail_s: float = 1.0
    workers: int = 1

    def check(self) -> None:
        """Raise InputError for arguments that cannot work (missing paths, bad numbers)."""
        if self.fmt not in FORMATS:
            raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if not Path(self.labels).exists():
            raise InputError(f"--labels {self.labels} does not exist")
        if not Path(self.audio).is_dir():
            raise InputError(f"--audio {self.audio} is not a folder")
        if self.label_names is not None and self.fmt != "audioset-strong":
            raise InputError("--label-names is only used with --format audioset-strong")
        if self.label_names is not None and not Path(self.label_names).is_file():
            raise InputError(f"--label-names {self.label_names} does not exist")
        if self.shard_size < 1:
            raise InputError(f"--shard-size must be >= 1, got {self.shard_size}")
        if not (math.isfinite(self.clip_s) and self.clip_s > 0):
            raise InputError(f"--clip-seconds must be > 0, got {self.clip_s}")
        if not 0 <= self.min_tail_s <= self.clip_s:
            raise InputError(f"--min-tail-seconds must be in [0, --clip-seconds], got {self.min_tail_s}")


def split_config(opts: ConvertOptions, plan: Plan) -> dict[str, Any]:
    """What decides the shard bytes (config.json; its sha256 is the fingerprint the sidecars carry)."""
    return {
        "kind": "sed_converted",
        "format": opts.fmt,
        "num_samples": len(plan.crops),
        "shard_size": opts.shard_size,
        "clip_s": float(opts.clip_s),
        "min_tail_s": float(opts.min_tail_s),
        "sample_rate": SAMPLE_RATE,
        "plan_sha256": plan_sha256(plan),
        "synth_version": synth.__version__,
        "format_version": CONVERT_FORMAT_VERSION,
        "render_format_version": records.RENDER_FORMAT_VERSION,
    }


def run_convert(opts: ConvertOptions) -> Summary:
    """Parse labels, plan crops, write the missing shards, write index.json. Raises InputError and
    synth.shards.ShardConfigError for bad input; every per-file problem is a counted skip instead."""
    t0 = time.perf_counter()
    opts.check()
    summary = Summary(fmt=opts.fmt, out=str(opts.out))
    names = read_label_names(Path(opts.label_names)) if opts.label_names else None
    clips = parse_labels(opts.fmt, Path(opts.labels), names, summary.skips, summary.notes)
    plan = build_plan(
        opts.fmt,
        clips,
        Path(opts.audio).resolve(),
        opts.clip_s,
        opts.min_tail_s,
        summary.skips,
        summary.notes,
    )
    summary.clips_labelled, summary.clips_converted = plan.clips_labelled, plan.clips_converted
    summary.audio_files, summary.crops_total = plan.audio_files, len(plan.crops)
    if not plan.crops:
        summary.seconds = time.perf_counter() - t0
        return summary

    out = str(opts.out)
    config = split_config(opts, plan)
    fp = shards.prepare_split_dir(out, config)
    n = len(plan.crops)
    n_shards = shards.num_shards(n, opts.shard_size)
    state = shards.scan_split_dir(out, fp, n_shards, opts.shard_size, n)
    summary.shards_complete = len(state.complete)
    tasks = []
    for k in state.todo:
        r = shards.shard_range(k, opts.shard_size, n)
        tasks.append(ShardTask(out, k, r.start, fp, float(opts.clip_s), tuple(plan.crops[r.start : r.stop])))
    log.info("%s: %d shards to write (%d already complete)", out, len(tasks), len(state.complete))
    for result in run_tasks(tasks, opts.workers):
        summary.crop_stats.update(result["stats"])
        summary.shards_written += 1
    summary.crops_written = summary.crop_stats.get("crops", 0)

    final = shards.scan_split_dir(out, fp, n_shards, opts.shard_size, n)
    if final.todo:
        raise RuntimeError(f"{out}: shards {final.todo[:10]} are incomplete after writing")
    extra = {
        "kind": "sed_converted",
        "converted_from": opts.fmt,
        "code_version": CODE_VERSION,
        "format_version": CONVERT_FORMAT_VERSION,
        "input_skipped": dict(sorted(summary.skips.counts.items())),
        "input_notes": dict(sorted(summary.notes.counts.items())),
    }
    sidecars = [final.complete[k] for k in range(n_shards)]
    shards.write_index(out, shards.build_index(out, config, fp, sidecars, extra))
    summary.seconds = time.perf_counter() - t0
    return summary


def parse_args(argv: Sequence[str] | None = None) -> ConvertOptions:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--format", required=True, choices=FORMATS, help="label format of --labels")
    p.add_argument(
        "--labels",
        required=True,
        help="label file or folder: AudioSet-strong / DESED TSV (a folder: every .tsv/.txt/.csv under it), "
        "URBAN-SED annotation folder (every .txt under it) or one .txt",
    )
    p.add_argument("--label-names", help="audioset-strong: MID -> display name (CSV or two-column TSV)")
    p.add_argument("--audio", required=True, help="audio folder, searched recursively; files match by stem")
    p.add_argument("--out", required=True, help="output split folder (shards, sidecars, index.json)")
    p.add_argument("--shard-size", type=int, default=128, help="crops per shard (default 128)")
    p.add_argument("--clip-seconds", type=float, default=records.CLIP_S, help="crop length (default 10)")
    p.add_argument(
        "--min-tail-seconds",
        type=float,
        default=1.0,
        help="a file longer than one crop gets a last, zero-padded crop only when the rest is at least "
        "this long (default 1.0)",
    )
    p.add_argument("--workers", type=int, default=1, help="processes writing shards (default 1)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return ConvertOptions(
        fmt=args.format,
        labels=args.labels,
        audio=args.audio,
        out=args.out,
        label_names=args.label_names,
        shard_size=args.shard_size,
        clip_s=args.clip_seconds,
        min_tail_s=args.min_tail_seconds,
        workers=args.workers,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """0: converted (skips are counted in the summary); 1: nothing to convert; 2: bad arguments/output folder."""
    opts = parse_args(argv)
    try:
        summary = run_convert(opts)
    except (InputError, shards.ShardConfigError) as e:
        print(f"convert_sed_dataset: error: {e}", file=sys.stderr)
        return 2
    print(summary.format())
    if not summary.crops_total:
        print(
            "convert_sed_dataset: nothing to convert (no labelled clip with readable audio)", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
