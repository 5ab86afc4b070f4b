"""Strong-label readers for SED evaluation: one ``Event`` record, readers for the published formats, and the
ground-truth / durations TSVs that ``eval.sed_metrics`` and ``sed_scores_eval`` read.

Every label goes through ``model.text_slots.normalize_text`` (the one text rule of training and inference),
so ground-truth labels compare equal to the model's texts and to the score-file columns. The published
class names use underscores for spaces (DESED ``Alarm_bell_ringing``, URBAN-SED ``car_horn``); those are
read as spaces first, as ``pipelines/convert_sed_dataset.py`` does when it turns the same files into
training shards. Our own ground-truth TSV (``read_ground_truth_tsv``) keeps underscores: its labels are
already texts.

Readers never raise on a bad row: they skip it and count it by reason in ``ReadResult.skipped``. They do
raise ``FileNotFoundError`` for a missing path and ``ValueError`` (one line) for a file that is not of the
format at all (no usable header, undecodable bytes).

Formats (tab-separated unless said otherwise; a header row is recognised when it names the columns):

* DESED: ``filename onset offset event_label``; a row with empty onset/offset/label is a clip without
  events (kept in ``clips``); a row with a label but no times is a weak label: the clip is left out
  (``weak_label`` rows, ``weak_clip`` clips), as its strong labels are incomplete.
* AudioSet-strong: ``segment_id start_time_seconds end_time_seconds label [present]``; ``label`` is a MID
  mapped through ``read_audioset_label_names`` (or already a display name); ``NOT_PRESENT`` rows of the
  posneg files are negatives, not events (``not_present``).
* URBAN-SED: one ``<stem>.txt`` per soundscape with rows ``onset offset label`` (no header).
* MAESTRO Real (soft labels): the DCASE-prepared TSV ``filename onset offset event_label confidence``
  (``soft_label`` accepted for ``confidence``), or a folder of the original per-recording annotation
  files ``<stem>.txt`` with rows ``onset offset event_label confidence`` (1-s segments, the confidence is
  the fraction of annotators). ``SoftLabels.hard_events(0.5)`` gives the binary ground truth of the DCASE
  MPAUC evaluation (confidence > 0.5, contiguous segments merged); ``SoftLabels.segment_targets`` the soft
  per-segment targets.
* Mixture records (our shards): ``{key, duration, events: [{text, segments: [[on, off], ...]}], ...}``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eval.scores import atomic_write_text
from model.text_slots import normalize_text
from synth.relabel import merge_segments

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".opus", ".m4a")
MID_RE = re.compile(r"^/[a-z]/[0-9a-z_]+$")


@dataclass(frozen=True)
class Event:
    """One strong-label event: clip id (file name without audio extension), times in seconds, label text."""

    filename: str
    onset: float
    offset: float
    label: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Event:
        return cls(str(d["filename"]), float(d["onset"]), float(d["offset"]), str(d["label"]))

    def as_tuple(self) -> tuple[float, float, str]:
        """``(onset, offset, label)``, the ground-truth event tuple of ``sed_scores_eval``."""
        return (self.onset, self.offset, self.label)


@dataclass
class ReadResult:
    """What a reader found: events, every clip named (also those without events, in order of first
    appearance), durations where the format gives them, and skipped rows counted by reason."""

    events: list[Event] = field(default_factory=list)
    clips: list[str] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)

    def ground_truth(self) -> dict[str, list[tuple[float, float, str]]]:
        """clip -> [(onset, offset, label), ...] for every clip in ``clips`` (empty list: no events)."""
        return ground_truth_dict(self.events, self.clips)


def ground_truth_dict(
    events: Iterable[Event], clips: Iterable[str] = ()
) -> dict[str, list[tuple[float, float, str]]]:
    out: dict[str, list[tuple[float, float, str]]] = {c: [] for c in clips}
    for ev in events:
        out.setdefault(ev.filename, []).append(ev.as_tuple())
    return out


class _Clips:
    """Ordered set of clip ids."""

    def __init__(self) -> None:
        self._seen: dict[str, None] = {}

    def add(self, clip: str) -> None:
        self._seen.setdefault(clip, None)

    def discard(self, clip: str) -> None:
        self._seen.pop(clip, None)

    def __contains__(self, clip: str) -> bool:
        return clip in self._seen

    def to_list(self) -> list[str]:
        return list(self._seen)


# ---------------------------------------------------------------- small parsing helpers


def clip_id(filename: str) -> str:
    """Clip id of a file name in a label file: directories and a known audio extension removed
    (``a/b.wav`` -> ``b``; ``Y_x_1.000_2.000`` stays whole)."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    stem, dot, ext = base.rpartition(".")
    return stem if dot and stem and f".{ext.lower()}" in AUDIO_EXTENSIONS else base


def label_from_class_name(raw: str) -> str:
    """Text of a published class name: underscores as spaces, then ``normalize_text``."""
    return normalize_text(raw.replace("_", " "))


def _time(value: str) -> float | None:
    try:
        t = float(value)
    except (TypeError, ValueError):
        return None
    return t if math.isfinite(t) and t >= 0 else None


def _interval(onset: str, offset: str) -> tuple[float, float] | str:
    """(on, off) or the skip reason."""
    on, off = _time(onset), _time(offset)
    if on is None or off is None:
        return "bad_time"
    if off < on:
        return "offset_before_onset"
    if off == on:
        return "zero_length"
    return on, off


def _read_text(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read it ({e.strerror or e})") from None


def _table(
    path: Path, columns: Sequence[str], optional: Sequence[str] = (), aliases: Mapping[str, str] | None = None
) -> Iterator[tuple[list[str], dict[str, int] | None]]:
    """Rows of a tab-separated table as (fields, column positions).

    The first non-blank line is a header when it names every required column (any order, extra columns
    allowed; ``aliases`` maps other header names to a column); otherwise the columns are positional in
    ``columns + optional`` order. A header that names some but not all columns is a file error. Blank
    lines and ``#`` comments are skipped. Positions are None for a positional row that has too few fields
    (the caller counts it)."""
    lines = [ln for ln in _read_text(path).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return
    aliases = aliases or {}
    first = [aliases.get(f.strip().lower(), f.strip().lower()) for f in lines[0].split("\t")]
    if set(columns) <= set(first):
        pos = {c: first.index(c) for c in (*columns, *optional) if c in first}
        lines = lines[1:]
    elif any(f in columns for f in first):
        raise ValueError(f"{path}: header {first} lacks the columns {list(columns)}")
    else:
        pos = {c: i for i, c in enumerate((*columns, *optional))}
    need = max(pos[c] for c in columns) + 1
    for line in lines:
        fields = [f.strip() for f in line.split("\t")]
        yield fields, (pos if len(fields) >= need else None)


def _field(fields: list[str], pos: dict[str, int], name: str, default: str = "") -> str:
    i = pos.get(name)
    return fields[i] if i is not None and i < len(fields) else default


def _files(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
    )


# ---------------------------------------------------------------- DESED / our ground truth


def _read_strong_tsv(path: Path, label_rule: Any) -> ReadResult:
    res = ReadResult()
    clips, weak = _Clips(), set()
    for fields, pos in _table(Path(path), ("filename", "onset", "offset", "event_label")):
        if pos is None:
            res.skipped["bad_columns"] += 1
            continue
        name = _field(fields, pos, "filename")
        if not name:
            res.skipped["empty_filename"] += 1
            continue
        clip = clip_id(name)
        clips.add(clip)
        onset, offset, raw = (_field(fields, pos, c) for c in ("onset", "offset", "event_label"))
        if not onset and not offset:
            if raw:  # a weak label: the clip's strong labels are incomplete
                res.skipped["weak_label"] += 1
                weak.add(clip)
            continue  # else: a clip without events
        iv = _interval(onset, offset)
        if isinstance(iv, str):
            res.skipped[iv] += 1
            continue
        label = label_rule(raw) if raw else ""
        if not label:
            res.skipped["empty_label"] += 1
            continue
        res.events.append(Event(clip, iv[0], iv[1], label))
    for clip in weak:
        clips.discard(clip)
    if weak:
        res.skipped["weak_clip"] += len(weak)
        res.events = [ev for ev in res.events if ev.filename not in weak]
    res.clips = clips.to_list()
    return res


def read_desed_tsv(path: str | os.PathLike) -> ReadResult:
    """DESED strong labels (``filename onset offset event_label``), class names with underscores as spaces."""
    return _read_strong_tsv(Path(path), label_from_class_name)


def read_ground_truth_tsv(path: str | os.PathLike) -> ReadResult:
    """Our ground-truth TSV (``write_ground_truth_tsv``; the DESED layout): labels through normalize_text."""
    return _read_strong_tsv(Path(path), normalize_text)


def _check_cell(value: str, what: str) -> str:
    if any(c in value for c in "\t\r\n"):
        raise ValueError(f"{what} {value!r} contains a tab or line break")
    return value


def write_ground_truth_tsv(
    events: Iterable[Event], path: str | os.PathLike, clips: Iterable[str] = ()
) -> None:
    """``filename onset offset event_label`` rows (atomic write). ``clips`` without events get a row with
    empty times and label (the DESED convention for a clip without events)."""
    events = list(events)
    with_events = {ev.filename for ev in events}
    buf = io.StringIO()
    buf.write("filename\tonset\toffset\tevent_label\n")
    for ev in events:
        _check_cell(ev.filename, "filename")
        _check_cell(ev.label, "label")
        buf.write(f"{ev.filename}\t{ev.onset!r}\t{ev.offset!r}\t{ev.label}\n")
    for clip in dict.fromkeys(clips):
        if clip not in with_events:
            buf.write(f"{_check_cell(clip, 'filename')}\t\t\t\n")
    atomic_write_text(Path(path), buf.getvalue())


def write_durations_tsv(durations: Mapping[str, float], path: str | os.PathLike) -> None:
    """``filename duration`` rows (atomic write)."""
    buf = io.StringIO()
    buf.write("filename\tduration\n")
    for clip, d in durations.items():
        d = float(d)
        if not (math.isfinite(d) and d > 0):
            raise ValueError(f"duration of {clip!r} must be a positive finite number, got {d}")
        buf.write(f"{_check_cell(clip, 'filename')}\t{d!r}\n")
    atomic_write_text(Path(path), buf.getvalue())


def read_durations_tsv(path: str | os.PathLike) -> ReadResult:
    """``filename duration`` TSV -> ``ReadResult.durations`` (clip id -> seconds) and ``clips``.

    Bad rows (no positive finite duration, empty filename) are counted; a repeated clip keeps its first
    duration (``duplicate_clip``)."""
    res = ReadResult()
    for fields, pos in _table(Path(path), ("filename", "duration")):
        if pos is None:
            res.skipped["bad_columns"] += 1
            continue
        name = _field(fields, pos, "filename")
        if not name:
            res.skipped["empty_filename"] += 1
            continue
        d = _time(_field(fields, pos, "duration"))
        if d is None or d <= 0:
            res.skipped["bad_duration"] += 1
            continue
        clip = clip_id(name)
        if clip in res.durations:
            res.skipped["duplicate_clip"] += 1
            continue
        res.durations[clip] = d
    res.clips = list(res.durations)
    return res


# ---------------------------------------------------------------- AudioSet-strong


def read_audioset_label_names(path: str | os.PathLike) -> dict[str, str]:
    """MID -> display name from a ``mid,display_name`` CSV, AudioSet's ``class_labels_indices.csv``
    (``index,mid,display_name``) or a tab-separated two-column file: in each row, the first field that
    looks like a MID and the field after it (header rows and bad rows are ignored). ValueError when no
    row has a MID."""
    path = Path(path)
    text = _read_text(path)
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    delimiter = "\t" if "\t" in first else ","
    names: dict[str, str] = {}
    for row in csv.reader(io.StringIO(text), delimiter=delimiter):
        fields = [f.strip() for f in row]
        i = next((j for j, f in enumerate(fields) if MID_RE.match(f)), None)
        if i is not None and i + 1 < len(fields) and fields[i + 1]:
            names.setdefault(fields[i], fields[i + 1])
    if not names:
        raise ValueError(f"{path}: no 'mid, display_name' rows found")
    return names


def read_audioset_strong_tsv(
    path: str | os.PathLike, label_names: Mapping[str, str] | None = None
) -> ReadResult:
    """AudioSet-strong TSV (``segment_id start_time_seconds end_time_seconds label [present]``); MIDs are
    mapped through ``label_names`` (a MID without a name: ``unknown_label``)."""
    res = ReadResult()
    clips = _Clips()
    cols = ("segment_id", "start_time_seconds", "end_time_seconds", "label")
    for fields, pos in _table(Path(path), cols, ("present",)):
        if pos is None:
            res.skipped["bad_columns"] += 1
            continue
        seg, raw = _field(fields, pos, "segment_id"), _field(fields, pos, "label")
        if not seg:
            res.skipped["empty_filename"] += 1
            continue
        if not raw:
            res.skipped["empty_label"] += 1
            continue
        present = _field(fields, pos, "present", "PRESENT").upper()
        if present not in ("PRESENT", ""):
            clips.add(seg)  # the clip was annotated; this row is a negative
            res.skipped["not_present"] += 1
            continue
        iv = _interval(_field(fields, pos, "start_time_seconds"), _field(fields, pos, "end_time_seconds"))
        if isinstance(iv, str):
            res.skipped[iv] += 1
            continue
        if MID_RE.match(raw):
            name = (label_names or {}).get(raw)
            if name is None:
                res.skipped["unknown_label"] += 1
                continue
            raw = name
        label = label_from_class_name(raw)
        if not label:
            res.skipped["empty_label"] += 1
            continue
        clips.add(seg)
        res.events.append(Event(seg, iv[0], iv[1], label))
    res.clips = clips.to_list()
    return res


# ---------------------------------------------------------------- URBAN-SED


def read_urbansed_dir(path: str | os.PathLike) -> ReadResult:
    """URBAN-SED annotations: one ``<stem>.txt`` per soundscape (a folder, searched recursively, or one
    file), rows ``onset offset label`` without header; an empty file is a clip without events."""
    res = ReadResult()
    clips = _Clips()
    for f in _files(Path(path), (".txt",)):
        try:
            text = _read_text(f)
        except ValueError:
            res.skipped["bad_file"] += 1
            continue
        clips.add(f.stem)
        for line in text.splitlines():
            if not line.strip():
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) != 3:
                res.skipped["bad_columns"] += 1
                continue
            iv = _interval(fields[0].strip(), fields[1].strip())
            if isinstance(iv, str):
                res.skipped[iv] += 1
                continue
            label = label_from_class_name(fields[2])
            if not label:
                res.skipped["empty_label"] += 1
                continue
            res.events.append(Event(f.stem, iv[0], iv[1], label))
    res.clips = clips.to_list()
    return res


# ---------------------------------------------------------------- MAESTRO Real soft labels


@dataclass(frozen=True)
class SoftEvent:
    """One soft-labelled segment: the fraction of annotators (0..1) that heard ``label`` in it."""

    filename: str
    onset: float
    offset: float
    label: str
    prob: float


@dataclass
class SoftLabels:
    """MAESTRO-style soft labels. ``durations``: the last segment offset per clip (give the real audio
    durations to ``sed_metrics`` when known)."""

    segments: list[SoftEvent] = field(default_factory=list)
    clips: list[str] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)

    @property
    def labels(self) -> list[str]:
        return sorted({s.label for s in self.segments})

    def hard_events(self, threshold: float = 0.5) -> list[Event]:
        """Binary ground truth: segments with prob > ``threshold`` (DCASE: 0.5), merged per (clip, label)
        where they overlap or touch."""
        by_key: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for s in self.segments:
            if s.prob > threshold:
                by_key.setdefault((s.filename, s.label), []).append((s.onset, s.offset))
        out = []
        for (clip, label), segs in by_key.items():
            out.extend(Event(clip, a, b, label) for a, b in merge_segments(segs))
        out.sort(key=lambda e: (e.filename, e.onset, e.label))
        return out

    def to_result(self, threshold: float = 0.5) -> ReadResult:
        """Hard labels as a ``ReadResult`` (events, all clips, durations, skips)."""
        return ReadResult(
            self.hard_events(threshold), list(self.clips), dict(self.durations), Counter(self.skipped)
        )

    def segment_targets(
        self, segment_length: float = 1.0, labels: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """clip -> float [n_segments, len(labels)] soft targets on the ``segment_length`` grid
        (n_segments = ceil(duration / segment_length)); a segment takes the largest probability of the
        soft segments that overlap it; column order = ``labels`` (default ``self.labels``)."""
        labels = list(self.labels if labels is None else labels)
        col = {lab: i for i, lab in enumerate(labels)}
        out = {
            c: np.zeros((max(1, math.ceil(round(d / segment_length, 6))), len(labels)))
            for c, d in self.durations.items()
        }
        for s in self.segments:
            if s.label not in col or s.filename not in out:
                continue
            t = out[s.filename]
            a = int(math.floor(round(s.onset / segment_length, 6)))
            b = min(len(t), int(math.ceil(round(s.offset / segment_length, 6))))
            if b > a:
                t[a:b, col[s.label]] = np.maximum(t[a:b, col[s.label]], s.prob)
        return out


def _soft_row(
    res: SoftLabels, clips: _Clips, clip: str, onset: str, offset: str, raw: str, prob: str
) -> None:
    clips.add(clip)
    iv = _interval(onset, offset)
    if isinstance(iv, str):
        res.skipped[iv] += 1
        return
    p = _time(prob)
    if p is None or p > 1:
        res.skipped["bad_prob"] += 1
        return
    label = label_from_class_name(raw) if raw else ""
    if not label:
        res.skipped["empty_label"] += 1
        return
    res.segments.append(SoftEvent(clip, iv[0], iv[1], label, p))
    res.durations[clip] = max(res.durations.get(clip, 0.0), iv[1])


def _is_per_recording_file(path: Path) -> bool:
    """A single file in the original annotation layout: its first row has 4 fields and no file name."""
    first = next((ln for ln in _read_text(path).splitlines() if ln.strip() and not ln.startswith("#")), "")
    fields = [f.strip().lower() for f in first.split("\t")]
    return len(fields) == 4 and "filename" not in fields


def read_maestro_soft(path: str | os.PathLike) -> SoftLabels:
    """MAESTRO Real soft labels: a TSV ``filename onset offset event_label confidence`` (header optional;
    ``soft_label`` or ``prob`` name the confidence column too), or a folder (or one file) of the original
    per-recording annotations ``<stem>.txt`` with rows ``onset offset event_label confidence``."""
    path = Path(path)
    res = SoftLabels()
    clips = _Clips()
    if path.is_dir() or (path.is_file() and _is_per_recording_file(path)):
        for f in _files(path, (".txt",)):
            try:
                lines = _read_text(f).splitlines()
            except ValueError:
                res.skipped["bad_file"] += 1
                continue
            clips.add(f.stem)
            for line in lines:
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                fields = [x.strip() for x in line.split("\t")]
                if fields[:3] == ["onset", "offset", "event_label"]:
                    continue  # a header
                if len(fields) != 4:
                    res.skipped["bad_columns"] += 1
                    continue
                _soft_row(res, clips, f.stem, *fields)
    else:
        aliases = {"soft_label": "confidence", "prob": "confidence"}
        cols = ("filename", "onset", "offset", "event_label", "confidence")
        for fields, pos in _table(path, cols, (), aliases):
            if pos is None:
                res.skipped["bad_columns"] += 1
                continue
            name = _field(fields, pos, "filename")
            if not name:
                res.skipped["empty_filename"] += 1
                continue
            _soft_row(res, clips, clip_id(name), *(_field(fields, pos, c) for c in cols[1:]))
    res.clips = clips.to_list()
    return res


# ---------------------------------------------------------------- mixture records


def events_from_mixture_record(key: str, rec: Mapping[str, Any]) -> list[Event]:
    """One Event per segment of a mixture record, label = normalize_text(event text); segments are cut
    at the record's duration (audio past it is padding) and empty ones dropped. ValueError for a
    malformed record."""
    try:
        duration = float(rec.get("duration", math.inf))
        events = rec["events"]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"record {key!r}: no events/duration ({e})") from None
    if not duration > 0:
        raise ValueError(f"record {key!r}: duration {duration!r} is not positive")
    out = []
    for ev in events:
        if not isinstance(ev, Mapping) or not isinstance(ev.get("text"), str):
            raise ValueError(f"record {key!r}: event {ev!r} has no text")
        label = normalize_text(ev["text"])
        if not label:
            raise ValueError(f"record {key!r}: event text {ev['text']!r} is empty after normalisation")
        for seg in ev.get("segments", []):
            if not isinstance(seg, list | tuple) or len(seg) != 2:
                raise ValueError(f"record {key!r}: segment {seg!r} is not [onset, offset]")
            on, off = float(seg[0]), float(seg[1])
            if not (math.isfinite(on) and math.isfinite(off)) or off < on:
                raise ValueError(f"record {key!r}: invalid segment [{on}, {off}]")
            on, off = max(on, 0.0), min(off, duration)
            if off > on:
                out.append(Event(key, on, off, label))
    return out


def read_mixture_records(records: Iterable[Mapping[str, Any]]) -> ReadResult:
    """Events and durations of mixture records (``key`` and ``duration`` from each); a malformed record is
    counted (``bad_record``) and left out."""
    res = ReadResult()
    clips = _Clips()
    for rec in records:
        try:
            key = str(rec["key"])
            duration = float(rec["duration"])
            events = events_from_mixture_record(key, rec)
        except (KeyError, TypeError, ValueError):
            res.skipped["bad_record"] += 1
            continue
        if not (math.isfinite(duration) and duration > 0):
            res.skipped["bad_record"] += 1
            continue
        clips.add(key)
        res.durations[key] = duration
        res.events.extend(events)
    res.clips = clips.to_list()
    return res
