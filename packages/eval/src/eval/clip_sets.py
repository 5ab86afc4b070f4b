"""Readers for the published retrieval and zero-shot clip lists.

Each reader returns simple records plus a ``Counter`` of skipped rows; a row whose audio file is not found is
skipped and counted (``"missing_audio"``), never raised. A file-level problem (CSV missing, required columns
absent) raises ``FileNotFoundError`` / ``ValueError``. Rows left out by a ``fold`` / ``split`` filter are not
"skipped" — they are simply not part of the selection.

Retrieval (``RetrievalSet.items``: ``(audio_path, [captions])``, one item per clip):

* Clotho: ``file_name,caption_1,...,caption_5``; audio ``audio_dir/file_name``.
* AudioCaps: ``audiocap_id,youtube_id,start_time,caption``; rows grouped by (youtube_id, start_time), one
  clip each; the audio file is looked up by stem (see ``audiocaps_stems``) with any of ``AUDIO_EXTENSIONS``
  anywhere under ``audio_dir``.

Zero-shot (``ZeroShotSet.items``: ``(audio_path, class_index)``, ``class_names`` indexed by class):

* ESC-50: ``filename,fold,target,category,esc10,src_file,take``; class index = ``target`` (``esc10=True``
  keeps the ESC-10 subset, re-indexed 0..9 in target order); audio ``audio_dir/filename``.
* UrbanSound8K: ``slice_file_name,fsID,start,end,salience,fold,classID,class``; class index = ``classID``;
  audio ``audio_dir/fold<k>/slice_file_name`` (or anywhere under ``audio_dir``).
* VGGSound: no header, ``youtube_id,start_seconds,label,split``; classes = sorted unique labels of the whole
  file; audio by stem ``<id>_<start:06d>``, ``<id>_<start>``, ``<id>_<start>_<start+10>``, ``<id>``, ...
* Generic: a CSV with header columns ``path,label`` (optional ``fold`` / ``split``); relative paths are taken
  from ``audio_dir`` (default: the CSV's folder); classes = sorted unique labels unless ``class_names`` is given.

Skip reasons: ``missing_audio`` (no file), ``unsupported_format`` (only a non-audio file such as .mp4 has the
stem), ``bad_row`` (unparsable fields), ``no_captions`` (all captions empty), ``unknown_class`` (generic CSV
label not in the given ``class_names``).
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
OTHER_MEDIA_EXTENSIONS = (".mp4", ".m4a", ".webm", ".mkv", ".aac", ".opus")


@dataclass
class RetrievalSet:
    items: list[tuple[Path, list[str]]]
    skipped: Counter = field(default_factory=Counter)
    n_rows: int = 0

    def flatten(self) -> tuple[list[Path], list[str], np.ndarray]:
        """(audio paths [N], captions [M], caption → clip index int [M]) for ``retrieval_metrics``."""
        paths = [p for p, _ in self.items]
        texts = [c for _, caps in self.items for c in caps]
        index = np.array([i for i, (_, caps) in enumerate(self.items) for _ in caps], dtype=np.int64)
        return paths, texts, index


@dataclass
class ZeroShotSet:
    items: list[tuple[Path, int]]
    class_names: list[str]
    skipped: Counter = field(default_factory=Counter)
    n_rows: int = 0

    @property
    def labels(self) -> np.ndarray:
        return np.array([c for _, c in self.items], dtype=np.int64)


class AudioIndex:
    """Lazy index of the files under ``root`` (recursive): exact relative paths, names and stems."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._by_stem: dict[str, dict[str, Path]] | None = None

    def _build(self) -> dict[str, dict[str, Path]]:
        if self._by_stem is None:
            self._by_stem = {}
            if self.root.is_dir():
                for dirpath, dirnames, filenames in os.walk(self.root):
                    dirnames.sort()
                    for name in sorted(filenames):
                        stem, ext = os.path.splitext(name)
                        self._by_stem.setdefault(stem, {}).setdefault(ext.lower(), Path(dirpath) / name)
        return self._by_stem

    def find(self, stems: Iterable[str]) -> tuple[Path | None, str | None]:
        """First audio file with one of ``stems`` (in order); else ``(None, skip_reason)``."""
        index = self._build()
        other = False
        for stem in stems:
            by_ext = index.get(stem)
            if not by_ext:
                continue
            for ext in AUDIO_EXTENSIONS:
                if ext in by_ext:
                    return by_ext[ext], None
            other = other or any(e in by_ext for e in OTHER_MEDIA_EXTENSIONS)
        return None, ("unsupported_format" if other else "missing_audio")

    def resolve(self, relpath: str, *candidate_dirs: Path) -> tuple[Path | None, str | None]:
        """``relpath`` under one of ``candidate_dirs`` (or the root), else a file with its name anywhere."""
        for d in (*candidate_dirs, self.root):
            p = d / relpath
            if p.is_file():
                return (p, None) if p.suffix.lower() in AUDIO_EXTENSIONS else (None, "unsupported_format")
        name = Path(relpath).name
        by_ext = self._build().get(os.path.splitext(name)[0], {})
        ext = os.path.splitext(name)[1].lower()
        if ext in by_ext and ext in AUDIO_EXTENSIONS:
            return by_ext[ext], None
        return None, "missing_audio"


def _read_rows(csv_path: Path | str, header: bool = True) -> tuple[list[str] | None, list[list[str]]]:
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"clip list not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not header:
        return None, rows
    if not rows:
        raise ValueError(f"{path}: empty CSV (no header)")
    return [c.strip() for c in rows[0]], rows[1:]


def _columns(head: list[str], required: Sequence[str], path: Path | str) -> dict[str, int]:
    pos = {name: i for i, name in enumerate(head)}
    missing = [c for c in required if c not in pos]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (header: {head})")
    return pos


def _as_set(value: int | str | Iterable | None, cast: type) -> set | None:
    if value is None:
        return None
    if isinstance(value, int | str):
        return {cast(value)}
    return {cast(v) for v in value}


def _int(text: str) -> int:
    return int(float(text))


def read_clotho(csv_path: Path | str, audio_dir: Path | str) -> RetrievalSet:
    """Clotho captions CSV (``file_name,caption_1..caption_5``); rows of the same file are merged."""
    head, rows = _read_rows(csv_path)
    pos = _columns(head, ["file_name"], csv_path)
    cap_cols = [i for i, name in enumerate(head) if name.startswith("caption")]
    if not cap_cols:
        raise ValueError(f"{csv_path}: no caption_* columns (header: {head})")
    audio = Path(audio_dir)
    index = AudioIndex(audio)
    skipped: Counter = Counter()
    clips: dict[str, list[str]] = {}
    for row in rows:
        if len(row) <= max([pos["file_name"], *cap_cols]) or not row[pos["file_name"]].strip():
            skipped["bad_row"] += 1
            continue
        name = row[pos["file_name"]].strip()
        caps = [row[i].strip() for i in cap_cols if row[i].strip()]
        if not caps:
            skipped["no_captions"] += 1
            continue
        clips.setdefault(name, []).extend(caps)
    items = []
    for name, caps in clips.items():
        path, reason = index.resolve(name)
        if path is None:
            skipped[reason] += 1
        else:
            items.append((path, caps))
    return RetrievalSet(items=items, skipped=skipped, n_rows=len(rows))


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def audiocaps_stems(youtube_id: str, start: float, audiocap_ids: Sequence[str] = (), length: float = 10.0) -> list[str]:  # fmt: skip
    """File stems tried for an AudioCaps / VGGSound clip, in order (common download-tool namings)."""
    s = float(start)
    n = _fmt_num(s)
    stems = [f"{youtube_id}_{n}"]
    if s.is_integer():
        stems += [f"{youtube_id}_{int(s):06d}", f"{youtube_id}_{int(s) * 1000}"]
    stems += [
        f"{youtube_id}_{s:.1f}",
        f"{youtube_id}_{s:.3f}",
        f"{youtube_id}_{n}_{_fmt_num(s + length)}",
        f"{youtube_id}_{s:.3f}_{s + length:.3f}",
        f"Y{youtube_id}_{s:.3f}_{s + length:.3f}",
        f"Y{youtube_id}_{n}",
        f"Y{youtube_id}",
        youtube_id,
    ]
    stems += [str(a) for a in audiocap_ids]
    return list(dict.fromkeys(stems))


def read_audiocaps(csv_path: Path | str, audio_dir: Path | str) -> RetrievalSet:
    """AudioCaps CSV (``audiocap_id,youtube_id,start_time,caption``), one item per (youtube_id, start_time)."""
    head, rows = _read_rows(csv_path)
    pos = _columns(head, ["youtube_id", "start_time", "caption"], csv_path)
    has_id = "audiocap_id" in pos
    width = max(pos[c] for c in ("youtube_id", "start_time", "caption")) + 1
    index = AudioIndex(audio_dir)
    skipped: Counter = Counter()
    clips: dict[tuple[str, float], tuple[list[str], list[str]]] = {}
    for row in rows:
        try:
            if len(row) < width:
                raise ValueError
            yid = row[pos["youtube_id"]].strip()
            start = float(row[pos["start_time"]])
            if not yid or not np.isfinite(start):
                raise ValueError
        except ValueError:
            skipped["bad_row"] += 1
            continue
        caption = row[pos["caption"]].strip()
        caps, ids = clips.setdefault((yid, start), ([], []))
        if caption:
            caps.append(caption)
        if has_id and len(row) > pos["audiocap_id"] and row[pos["audiocap_id"]].strip():
            ids.append(row[pos["audiocap_id"]].strip())
    items = []
    for (yid, start), (caps, ids) in clips.items():
        if not caps:
            skipped["no_captions"] += 1
            continue
        path, reason = index.find(audiocaps_stems(yid, start, ids))
        if path is None:
            skipped[reason] += 1
        else:
            items.append((path, caps))
    return RetrievalSet(items=items, skipped=skipped, n_rows=len(rows))


def _indexed_classes(pairs: Iterable[tuple[int, str]], where: Path | str) -> list[str]:
    names: dict[int, str] = {}
    for idx, name in pairs:
        if names.setdefault(idx, name) != name:
            raise ValueError(f"{where}: class index {idx} has two names, {names[idx]!r} and {name!r}")
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{where}: class indices are not 0..{len(names) - 1}: {sorted(names)}")
    return [names[i] for i in range(len(names))]


def read_esc50(
    csv_path: Path | str, audio_dir: Path | str, folds: int | Iterable[int] | None = None, esc10: bool = False
) -> ZeroShotSet:
    """ESC-50 ``meta/esc50.csv``; ``audio_dir`` is the ``audio/`` folder."""
    head, rows = _read_rows(csv_path)
    pos = _columns(head, ["filename", "fold", "target", "category"], csv_path)
    fold_set = _as_set(folds, int)
    skipped: Counter = Counter()
    parsed = []
    for row in rows:
        try:
            rec = (
                row[pos["filename"]].strip(),
                _int(row[pos["fold"]]),
                _int(row[pos["target"]]),
                row[pos["category"]].strip(),
                row[pos["esc10"]].strip().lower() in ("true", "1") if "esc10" in pos else False,
            )
            if not rec[0] or not rec[3]:
                raise ValueError
        except (ValueError, IndexError):
            skipped["bad_row"] += 1
            continue
        parsed.append(rec)
    if esc10:
        parsed = [r for r in parsed if r[4]]
    targets = sorted({r[2] for r in parsed})
    remap = {t: i for i, t in enumerate(targets)}
    class_names = _indexed_classes(((remap[r[2]], r[3]) for r in parsed), csv_path)
    index = AudioIndex(audio_dir)
    items = []
    for name, fold, target, _, _ in parsed:
        if fold_set is not None and fold not in fold_set:
            continue
        path, reason = index.resolve(name)
        if path is None:
            skipped[reason] += 1
        else:
            items.append((path, remap[target]))
    return ZeroShotSet(items=items, class_names=class_names, skipped=skipped, n_rows=len(rows))


def read_urbansound8k(
    csv_path: Path | str, audio_dir: Path | str, folds: int | Iterable[int] | None = None
) -> ZeroShotSet:
    """UrbanSound8K ``metadata/UrbanSound8K.csv``; ``audio_dir`` holds ``fold1/`` ... ``fold10/``."""
    head, rows = _read_rows(csv_path)
    pos = _columns(head, ["slice_file_name", "fold", "classID", "class"], csv_path)
    fold_set = _as_set(folds, int)
    skipped: Counter = Counter()
    parsed = []
    for row in rows:
        try:
            rec = (row[pos["slice_file_name"]].strip(), _int(row[pos["fold"]]), _int(row[pos["classID"]]),
                   row[pos["class"]].strip())  # fmt: skip
            if not rec[0] or not rec[3]:
                raise ValueError
        except (ValueError, IndexError):
            skipped["bad_row"] += 1
            continue
        parsed.append(rec)
    class_names = _indexed_classes(((r[2], r[3]) for r in parsed), csv_path)
    audio = Path(audio_dir)
    index = AudioIndex(audio)
    items = []
    for name, fold, class_id, _ in parsed:
        if fold_set is not None and fold not in fold_set:
            continue
        path, reason = index.resolve(name, audio / f"fold{fold}")
        if path is None:
            skipped[reason] += 1
        else:
            items.append((path, class_id))
    return ZeroShotSet(items=items, class_names=class_names, skipped=skipped, n_rows=len(rows))


def read_vggsound(
    csv_path: Path | str, audio_dir: Path | str, split: str | Iterable[str] | None = None
) -> ZeroShotSet:
    """VGGSound ``vggsound.csv`` (no header: ``youtube_id,start_seconds,label,split``)."""
    _, rows = _read_rows(csv_path, header=False)
    split_set = _as_set(split, str)
    skipped: Counter = Counter()
    parsed = []
    for i, row in enumerate(rows):
        try:
            if len(row) < 3:
                raise ValueError
            rec = (row[0].strip(), float(row[1]), row[2].strip(), row[3].strip() if len(row) > 3 else "")
            if not rec[0] or not rec[2] or not np.isfinite(rec[1]):
                raise ValueError
        except ValueError:
            if i > 0:  # an optional header line is not a bad row
                skipped["bad_row"] += 1
            continue
        parsed.append(rec)
    class_names = sorted({r[2] for r in parsed})
    class_of = {n: i for i, n in enumerate(class_names)}
    index = AudioIndex(audio_dir)
    items = []
    for yid, start, label, row_split in parsed:
        if split_set is not None and row_split not in split_set:
            continue
        path, reason = index.find(audiocaps_stems(yid, start))
        if path is None:
            skipped[reason] += 1
        else:
            items.append((path, class_of[label]))
    return ZeroShotSet(items=items, class_names=class_names, skipped=skipped, n_rows=len(rows))


def read_labelled_csv(
    csv_path: Path | str,
    audio_dir: Path | str | None = None,
    class_names: Sequence[str] | None = None,
    folds: int | Iterable[int] | None = None,
    split: str | Iterable[str] | None = None,
) -> ZeroShotSet:
    """Generic ``path,label`` CSV (optional ``fold`` / ``split`` columns for the filters)."""
    head, rows = _read_rows(csv_path)
    pos = _columns(head, ["path", "label"], csv_path)
    for col, flt in (("fold", folds), ("split", split)):
        if flt is not None and col not in pos:
            raise ValueError(f"{csv_path}: a {col} filter was given but the CSV has no {col!r} column")
    fold_set, split_set = _as_set(folds, int), _as_set(split, str)
    base = Path(audio_dir) if audio_dir is not None else Path(csv_path).parent
    skipped: Counter = Counter()
    parsed = []
    for row in rows:
        try:
            rel, label = row[pos["path"]].strip(), row[pos["label"]].strip()
            fold = _int(row[pos["fold"]]) if fold_set is not None else None
            row_split = row[pos["split"]].strip() if split_set is not None else None
            if not rel or not label:
                raise ValueError
        except (ValueError, IndexError):
            skipped["bad_row"] += 1
            continue
        parsed.append((rel, label, fold, row_split))
    names = list(class_names) if class_names is not None else sorted({r[1] for r in parsed})
    class_of = {n: i for i, n in enumerate(names)}
    index = AudioIndex(base)
    items = []
    for rel, label, fold, row_split in parsed:
        if (fold_set is not None and fold not in fold_set) or (
            split_set is not None and row_split not in split_set
        ):
            continue
        if label not in class_of:
            skipped["unknown_class"] += 1
            continue
        p = Path(rel)
        if p.is_absolute():
            path, reason = (p, None) if p.is_file() else (None, "missing_audio")
            if path is not None and p.suffix.lower() not in AUDIO_EXTENSIONS:
                path, reason = None, "unsupported_format"
        else:
            path, reason = index.resolve(rel)
        if path is None:
            skipped[reason] += 1
        else:
            items.append((path, class_of[label]))
    return ZeroShotSet(items=items, class_names=names, skipped=skipped, n_rows=len(rows))


RETRIEVAL_READERS = {"clotho": read_clotho, "audiocaps": read_audiocaps}
ZEROSHOT_READERS = {
    "esc50": read_esc50,
    "urbansound8k": read_urbansound8k,
    "vggsound": read_vggsound,
    "csv": read_labelled_csv,
}


def load_clip_set(fmt: str, csv_path: Path | str, audio_dir: Path | str | None = None, **filters) -> RetrievalSet | ZeroShotSet:  # noqa: ANN003  # fmt: skip
    """Dispatch on ``fmt`` (a key of ``RETRIEVAL_READERS`` or ``ZEROSHOT_READERS``)."""
    key = fmt.lower().replace("-", "").replace("_", "")
    readers = {**RETRIEVAL_READERS, **ZEROSHOT_READERS}
    if key not in readers:
        raise ValueError(f"unknown clip-set format {fmt!r}; known: {sorted(readers)}")
    if audio_dir is None and key != "csv":
        raise ValueError(f"{fmt}: audio_dir is required")
    return readers[key](csv_path, audio_dir, **filters)
