"""Shard lists and tar reading for the trainer's sources (local paths, `file://`, and Beam URIs such as gs://).

A source's `shards` is a folder (its `*.tar` files), a glob (`data/*/shard-*.tar`), a brace pattern
(`data/shard-{000000..000099}.tar`) or one file; several may be joined with `::`. A source that matches no
file is an error raised before training starts.

Samples are WebDataset groups: consecutive tar members sharing a key (the name up to the first dot).
`iter_refs` walks the tar headers only (the data of skipped members is never read), so a reader can shuffle
and skip references cheaply and fetch the bytes of the samples it keeps (`read_member`).
"""

from __future__ import annotations

import glob
import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from braceexpand import braceexpand

from synth.paths import is_uri, local_path


@dataclass(frozen=True)
class SampleRef:
    """One sample of a shard: its key and, per extension, (data offset, size) inside the tar."""

    shard: str
    key: str
    members: tuple[tuple[str, int, int], ...]  # (extension, offset, size)

    def member(self, ext: str) -> tuple[int, int] | None:
        for e, off, size in self.members:
            if e == ext:
                return off, size
        return None


def _match_uri(pattern: str) -> list[str]:
    from apache_beam.io.filesystems import FileSystems

    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except Exception:  # noqa: BLE001 - a missing prefix raises on some file systems
        return []
    return sorted(m.path for m in found)


def expand_shards(spec: str) -> list[str]:
    """All shard files named by `spec` (see module docstring), sorted within each part, duplicates removed."""
    out: list[str] = []
    for part in (p.strip() for p in spec.split("::")):
        if not part:
            continue
        for item in braceexpand(part):
            if is_uri(item):
                if any(c in item for c in "*?["):
                    out.extend(_match_uri(item))
                elif item.endswith(".tar"):
                    out.extend(_match_uri(item))
                else:
                    out.extend(p for p in _match_uri(item.rstrip("/") + "/*.tar"))
                continue
            path = local_path(item)
            if os.path.isdir(path):
                out.extend(sorted(glob.glob(os.path.join(path, "*.tar"))))
            elif any(c in path for c in "*?["):
                out.extend(sorted(p for p in glob.glob(path) if os.path.isfile(p)))
            elif os.path.isfile(path):
                out.append(path)
    seen: set[str] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def open_shard(path: str) -> BinaryIO:
    """A seekable binary stream: the local file, or the whole object read into memory for URIs."""
    if is_uri(path):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as f:
            return io.BytesIO(f.read())
    return open(local_path(path), "rb")


def _split_name(name: str) -> tuple[str, str]:
    base = name.rsplit("/", 1)[-1]
    if "." not in base:
        return name, ""
    head, _, _ = name.rpartition("/")
    key, ext = base.split(".", 1)
    return (f"{head}/{key}" if head else key), ext.lower()


def iter_refs(path: str, f: BinaryIO) -> Iterator[SampleRef]:
    """Sample references of an open shard, in tar order (headers only; raises tarfile.TarError if damaged)."""
    f.seek(0)  # the file may be shared with readers of buffered samples: tarfile starts at the position
    with tarfile.open(fileobj=f, mode="r:") as tar:
        key: str | None = None
        members: list[tuple[str, int, int]] = []
        for info in tar:
            if not info.isfile():
                continue
            k, ext = _split_name(info.name)
            if k != key and key is not None:
                yield SampleRef(path, key, tuple(members))
                members = []
            key = k
            members.append((ext, info.offset_data, info.size))
        if key is not None:
            yield SampleRef(path, key, tuple(members))


def read_member(f: BinaryIO, offset: int, size: int) -> bytes:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise OSError(f"short read: {len(data)} of {size} bytes")
    return data
