"""Input files of `model.detect` / `model.search`: walk folders, name outputs, fingerprint a checkpoint.

Rules:
- A folder is walked recursively (sorted, symbolic links to files followed, links to folders not — no loops);
  it contributes the files whose extension is an audio extension (`synth.audio.AUDIO_EXTENSIONS`, any case).
  A file named on the command line is always tried, whatever its extension. The same file reached twice
  (e.g. a folder and a file inside it) is processed once.
- Output names mirror each file's path relative to the common folder of the inputs (a folder input counts
  itself, a file input its parent), so `a/x.wav` and `b/x.wav` never overwrite each other. The output stem is
  that relative path without its extension; where two inputs would share a stem (`x.wav` and `x.flac` in one
  folder) or a stem is a reserved run-level name, those inputs keep their extension (`x.wav.tsv`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from synth.audio import AUDIO_EXTENSIONS


@dataclass(frozen=True)
class AudioInput:
    path: Path  # absolute path (not resolved: the name the user sees)
    rel: PurePosixPath  # path relative to the common input folder: the `filename` column of the outputs
    out_stem: PurePosixPath  # output name without suffix, relative to the output folder


def _walk(folder: Path, extensions: tuple[str, ...]) -> Iterable[Path]:
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            if name.lower().endswith(extensions):
                yield Path(root) / name


def find_audio_files(inputs: Sequence[str | os.PathLike], reserved: Iterable[str] = (),
                     extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> list[AudioInput]:  # fmt: skip
    """Audio files of `inputs` (files and folders) in a stable order with collision-free output stems.

    Raises ValueError naming the first input that does not exist. `reserved` are top-level stems the caller
    writes itself (e.g. "detections" for detections.tsv)."""
    found: list[Path] = []
    bases: list[str] = []
    for raw in inputs:
        p = Path(os.path.abspath(os.fspath(raw)))
        if p.is_dir():
            bases.append(str(p))
            found.extend(_walk(p, tuple(e.lower() for e in extensions)))
        elif p.exists():
            bases.append(str(p.parent))
            found.append(p)
        else:
            raise ValueError(f"input not found: {raw}")
    seen: set[str] = set()
    files = []
    for p in found:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            files.append(p)
    if not files:
        return []
    base = Path(os.path.commonpath(bases))
    rels = [PurePosixPath(*p.relative_to(base).parts) for p in files]
    stems = [r.with_suffix("") if r.suffix else r for r in rels]
    count: dict[PurePosixPath, int] = {}
    for s in stems:
        count[s] = count.get(s, 0) + 1
    reserved_stems = {PurePosixPath(r) for r in reserved}
    out = []
    for p, r, s in zip(files, rels, stems, strict=True):
        keep_ext = count[s] > 1 or s in reserved_stems
        out.append(AudioInput(p, r, r if keep_ext else s))
    return out


def file_signature(path: Path) -> dict[str, int]:
    """Size and modification time (ns): a file whose signature changed is processed again."""
    st = path.stat()
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _checkpoint_files(ckpt: Path) -> list[Path]:
    if ckpt.is_file():
        return [ckpt]
    return sorted(p for p in ckpt.rglob("*") if p.is_file() and not p.name.startswith("."))


def checkpoint_stat(ckpt: str | os.PathLike) -> list[list]:
    """[relative name, size, mtime_ns] of every file of a checkpoint folder (cheap change check)."""
    c = Path(ckpt)
    out = []
    for p in _checkpoint_files(c):
        st = p.stat()
        out.append(
            [p.relative_to(c).as_posix() if c.is_dir() else p.name, int(st.st_size), int(st.st_mtime_ns)]
        )
    return out


def checkpoint_sha256(ckpt: str | os.PathLike, block: int = 1 << 22) -> str:
    """SHA-256 over the names and bytes of every file of a checkpoint folder (weights, config, tokenizer)."""
    c = Path(ckpt)
    h = hashlib.sha256()
    for p in _checkpoint_files(c):
        h.update((p.relative_to(c).as_posix() if c.is_dir() else p.name).encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(block):
                h.update(chunk)
    return h.hexdigest()
