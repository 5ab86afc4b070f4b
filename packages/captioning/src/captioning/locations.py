"""Output and cache locations checked before any work: a run must not caption a whole corpus and then fail on
its final write.

Local paths (and ``file://``) are checked on the real file system: the path is not a folder (output files)
or not a file (folders); no parent on the way is a file; the folder exists or is created now; a file can
really be created in it (a write probe, which also catches read-only mounts that ``os.access`` misses); an
existing output file is writable. Remote URIs (``gs://…``) are not probed here: the object store answers
at write time. Every failure is a :class:`LocationError` (a ValueError) naming the flag and the path.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from synth.paths import is_uri, local_path


class LocationError(ValueError):
    """An output or cache location that cannot be written."""


def _first_existing(path: Path) -> Path:
    """`path` or its nearest ancestor that exists."""
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def ensure_writable_folder(folder: str | os.PathLike, flag: str, shown: str | None = None) -> Path:
    """Create `folder` if needed and prove a file can be written in it; returns it as a Path.

    Raises LocationError naming `flag` (and `shown`, the value the user gave, when it differs)."""
    shown = shown if shown is not None else str(folder)
    p = Path(local_path(os.fspath(folder)))
    anc = _first_existing(p)
    if os.path.lexists(anc) and not anc.is_dir():
        where = "is a file" if anc == p else f"lies under {anc}, which is a file"
        raise LocationError(f"{flag} {shown}: {p} {where}, not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LocationError(f"{flag} {shown}: cannot create folder {p} ({exc.strerror or exc})") from None
    try:
        fd, probe = tempfile.mkstemp(dir=p, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise LocationError(f"{flag} {shown}: cannot write in folder {p} ({exc.strerror or exc})") from None
    return p


def check_output_file(path: str | os.PathLike, flag: str) -> None:
    """`path` can be (re)written as a file: not a folder, its folder writable, an existing file writable."""
    shown = os.fspath(path)
    if is_uri(shown):
        return
    p = Path(local_path(shown))
    if p.is_dir():
        raise LocationError(f"{flag} {shown} is a folder; give a file path such as {p / 'manifest.parquet'}")
    if os.path.lexists(p) and not p.is_file():
        raise LocationError(f"{flag} {shown} exists and is not a regular file")
    ensure_writable_folder(p.parent, flag, shown)
    if p.is_file() and not os.access(p, os.W_OK):
        raise LocationError(f"{flag} {shown}: the existing file is read-only")


def check_folder(path: str | os.PathLike, flag: str) -> None:
    """`path` is (or can be created as) a writable folder."""
    shown = os.fspath(path)
    if is_uri(shown):
        return
    ensure_writable_folder(shown, flag, shown)
