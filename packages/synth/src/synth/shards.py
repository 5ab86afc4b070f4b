"""Deterministic WebDataset shards: byte-stable tar writing, atomic publish, per-shard sidecars, index.json.

Layout of one split folder (mixtures or audio-text)::

    <split_dir>/config.json          what the shards are made from (written first; checked on re-runs)
    <split_dir>/shard-NNNNNN.json    per-shard sidecar: sample count, sha256, bytes, stats, skipped keys
                                     (written before the tar)
    <split_dir>/shard-NNNNNN.tar     samples [k*shard_size, (k+1)*shard_size); appears only when complete
    <split_dir>/index.json           counts per shard + config + seed + code version (written at the end)

Paths may be local (plain or ``file://``) or any URI Apache Beam's ``FileSystems`` understands (``gs://``,
``s3://``, ``hdfs://``); :func:`synth.paths.is_uri` decides which.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tarfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from synth.paths import is_uri, local_path

log = logging.getLogger(__name__)

TAR_MTIME = 946684800  # 2000-01-01T00:00:00Z, fixed so that tar bytes never depend on the wall clock
TAR_MODE = 0o644
TAR_UID = 0
TAR_GID = 0
TAR_UNAME = "flam"
TAR_GNAME = "flam"
KEY_DIGITS = 9
SHARD_RE = re.compile(r"^shard-(\d{6})\.tar$")
TEMP_RE = re.compile(r"^\..+\.tmp-[0-9a-f]{12}$")
INDEX_NAME = "index.json"
CONFIG_NAME = "config.json"
INDEX_VERSION = 1


class ShardConfigError(ValueError):
    """An output folder holds shards made from a different configuration."""


class OutputError(ValueError):
    """An output location cannot hold shards (a file, under a file, not writable, or full)."""


IO_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this file system or process limit",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EIO: "input/output error",
}


# ---------------------------------------------------------------- names and ranges


def sample_key(index: int) -> str:
    """WebDataset key of sample ``index`` (zero padded, no dots: WebDataset splits keys at the first dot)."""
    if index < 0:
        raise ValueError(f"sample index must be >= 0, got {index}")
    return f"{index:0{KEY_DIGITS}d}"


def shard_name(shard: int) -> str:
    return f"shard-{shard:06d}.tar"


def sidecar_name(shard: int) -> str:
    return f"shard-{shard:06d}.json"


def num_shards(num_samples: int, shard_size: int) -> int:
    if shard_size <= 0:
        raise ValueError(f"shard_size must be > 0, got {shard_size}")
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    return -(-num_samples // shard_size)


def shard_range(shard: int, shard_size: int, num_samples: int) -> range:
    """Sample indices held by ``shard``: ``[shard*shard_size, min((shard+1)*shard_size, num_samples))``."""
    n = num_shards(num_samples, shard_size)
    if not 0 <= shard < n:
        raise ValueError(
            f"shard {shard} out of range: {num_samples} samples / {shard_size} per shard = {n} shards"
        )
    return range(shard * shard_size, min((shard + 1) * shard_size, num_samples))


# ---------------------------------------------------------------- file-system helpers (local or URI)


def join(base: str, *parts: str) -> str:
    if is_uri(base):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.join(str(base), *parts)
    return os.path.join(local_path(base), *parts)


def exists(path: str) -> bool:
    if is_uri(path):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.exists(path)
    return os.path.exists(local_path(path))


def makedirs(path: str) -> None:
    if is_uri(path):
        return  # object stores have no directories
    os.makedirs(local_path(path), exist_ok=True)


def check_output_dir(out: str, probe_bytes: int = 1 << 16) -> int | None:
    """Raise :class:`OutputError` (naming the reason) unless ``out`` can hold shards; else its free bytes.

    Local: ``out`` must not be a file or lie under one, must be creatable, and a probe file of
    ``probe_bytes`` must be writable in it (catches read-only folders and full disks). A URI: a probe
    object is created and deleted (free space unknown: None)."""
    probe_name = f".flam-write-probe-{uuid.uuid4().hex[:12]}"
    if is_uri(out):
        from apache_beam.io.filesystems import FileSystems

        probe = join(out, probe_name)
        try:
            with FileSystems.create(probe) as f:
                f.write(b"\0" * 16)
            FileSystems.delete([probe])
        except Exception as e:  # noqa: BLE001 - each file system raises its own errors
            raise OutputError(f"--out {out} is not writable: {e}") from e
        return None
    folder = os.path.abspath(local_path(out))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OutputError(f"--out {out} is a file, not a folder")
    parent = folder
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutputError(f"--out {out} lies under the file {parent}")
    try:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, probe_name)
        try:
            with open(path, "wb") as f:
                f.write(b"\0" * probe_bytes)
                f.flush()
                os.fsync(f.fileno())
        finally:
            if os.path.exists(path):
                os.remove(path)
    except OSError as e:
        what = IO_ERRNOS.get(e.errno or 0, e.strerror or str(e))
        raise OutputError(f"--out {out} cannot be written: {what} ({e})") from e
    return shutil.disk_usage(folder).free


def file_size(path: str) -> int:
    if is_uri(path):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    return os.path.getsize(local_path(path))


def list_names(folder: str) -> list[str]:
    """Base names of the files directly inside ``folder`` (empty when it does not exist)."""
    if is_uri(folder):
        from apache_beam.io.filesystems import FileSystems

        pattern = FileSystems.join(folder, "*")
        try:
            found = FileSystems.match([pattern])[0].metadata_list
        except Exception:  # noqa: BLE001 - a missing prefix raises on some file systems
            return []
        return sorted(m.path.rstrip("/").rsplit("/", 1)[-1] for m in found)
    folder = local_path(folder)
    if not os.path.isdir(folder):
        return []
    return sorted(os.listdir(folder))


def delete(path: str) -> None:
    if is_uri(path):
        from apache_beam.io.filesystems import FileSystems

        FileSystems.delete([path])
    else:
        os.remove(local_path(path))


def read_bytes(path: str) -> bytes:
    if is_uri(path):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as f:
            return f.read()
    with open(local_path(path), "rb") as f:
        return f.read()


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (local path or URI)."""
    h = hashlib.sha256()
    if is_uri(path):
        from apache_beam.io.filesystems import FileSystems

        f = FileSystems.open(path)
    else:
        f = open(local_path(path), "rb")  # noqa: SIM115 - closed below
    with f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_json(path: str) -> Any:
    try:
        return json.loads(read_bytes(path).decode("utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def json_bytes(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, 2-space indent, trailing newline)."""
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


class _AtomicFile:
    """A binary file that is written under a temporary name and renamed into place on ``commit()``."""

    def __init__(self, path: str) -> None:
        self.remote = is_uri(path)
        self.path = str(path) if self.remote else local_path(path)
        folder, name = self.path.rsplit("/", 1) if "/" in self.path else (".", self.path)
        self.tmp_path = f"{folder}/.{name}.tmp-{uuid.uuid4().hex[:12]}"
        if self.remote:
            from apache_beam.io.filesystems import FileSystems

            self._f: BinaryIO = FileSystems.create(self.tmp_path)
        else:
            makedirs(folder)
            self._f = open(self.tmp_path, "wb")  # noqa: SIM115 - closed in commit/abort
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.aborted = False

    def write(self, data: bytes) -> int:
        if self.aborted:  # a tar stream flushing from __del__ after abort()
            return len(data)
        self._f.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._f.flush()

    def commit(self) -> None:
        if self.remote:
            from apache_beam.io.filesystems import FileSystems

            self._f.close()
            if FileSystems.exists(self.path):
                FileSystems.delete([self.path])
            FileSystems.rename([self.tmp_path], [self.path])
        else:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            os.replace(self.tmp_path, self.path)

    def abort(self) -> None:
        self.aborted = True
        try:
            self._f.close()
        finally:
            try:
                delete(self.tmp_path)
            except (OSError, FileNotFoundError):
                pass


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either nothing or the complete file."""
    f = _AtomicFile(path)
    try:
        f.write(data)
        f.commit()
    except BaseException:
        f.abort()
        raise


def write_json_atomic(path: str, obj: Any) -> None:
    write_bytes_atomic(path, json_bytes(obj))


# ---------------------------------------------------------------- deterministic tar writing


def tar_info(name: str, size: int) -> tarfile.TarInfo:
    """A tar header with every varying field pinned (mtime, owner, mode), so equal content gives equal bytes."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = TAR_MTIME
    info.mode = TAR_MODE
    info.uid, info.gid = TAR_UID, TAR_GID
    info.uname, info.gname = TAR_UNAME, TAR_GNAME
    info.type = tarfile.REGTYPE
    return info


class ShardWriter:
    """Streams samples into a deterministic tar under a temporary name; ``close()`` publishes it atomically.

    Samples must come in strictly increasing key order; inside a sample, files are written sorted by
    extension. Use as a context manager: an exception discards the temporary file, so a shard never
    appears half written. ``sidecar`` (a JSON-able dict) is written atomically *before* the tar is renamed.
    """

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self._file = _AtomicFile(self.path)
        self._tar = tarfile.open(fileobj=self._file, mode="w|", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        self._last_key: str | None = None
        self.count = 0
        self.closed = False

    def write(self, key: str, files: Mapping[str, bytes]) -> None:
        if not key or "." in key or "/" in key:
            raise ValueError(f"{self.path}: invalid sample key {key!r} (no dots or slashes allowed)")
        if self._last_key is not None and key <= self._last_key:
            raise ValueError(f"{self.path}: sample keys must increase; {key!r} after {self._last_key!r}")
        if not files:
            raise ValueError(f"{self.path}: sample {key!r} has no files")
        for ext in sorted(files):
            data = files[ext]
            if not isinstance(data, bytes | bytearray):
                raise TypeError(f"{self.path}: {key}.{ext} must be bytes, got {type(data).__name__}")
            self._tar.addfile(tar_info(f"{key}.{ext}", len(data)), io.BytesIO(data))
        self._last_key = key
        self.count += 1

    def close(
        self, sidecar: Mapping[str, Any] | None = None, sidecar_path: str | None = None
    ) -> dict[str, Any]:
        """Finish the tar, write the sidecar (with sha256/bytes/count filled in), then rename the tar."""
        self._tar.close()
        info = {"sha256": self._file.sha256.hexdigest(), "bytes": self._file.size, "count": self.count}
        if sidecar is not None:
            if sidecar_path is None:
                raise ValueError("sidecar_path is required with sidecar")
            write_json_atomic(sidecar_path, {**sidecar, **info})
        self._file.commit()
        self.closed = True
        return info

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self._file.abort()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None or not self.closed:
            self.abort()


def tar_bytes(samples: Mapping[str, Mapping[str, bytes]]) -> bytes:
    """The deterministic tar bytes of ``{key: {ext: bytes}}`` (entries sorted by key, then extension)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for key in sorted(samples):
            for ext in sorted(samples[key]):
                data = samples[key][ext]
                tar.addfile(tar_info(f"{key}.{ext}", len(data)), io.BytesIO(data))
    return buf.getvalue()


# ---------------------------------------------------------------- split folders: config, resume, index


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``config`` (what decides the shard bytes)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _diff_keys(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += _diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(
                f"{prefix}{k}: {va!r} -> {vb!r}" if len(repr(va)) + len(repr(vb)) < 120 else f"{prefix}{k}"
            )
    return out


def prepare_split_dir(split_dir: str, config: Mapping[str, Any]) -> str:
    """Create ``split_dir`` and record ``config`` in config.json, or check it matches the one already there.

    Returns the config fingerprint. Raises ``ShardConfigError`` naming the differing fields when the folder
    was written with a different configuration (a re-run with other arguments into the same folder).
    Stale temporary files from a killed run are removed.
    """
    makedirs(split_dir)
    fp = config_fingerprint(config)
    path = join(split_dir, CONFIG_NAME)
    record = {"fingerprint": fp, "config": dict(config)}
    if exists(path):
        old = read_json(path)
        if old.get("fingerprint") != fp:
            diff = _diff_keys(old.get("config", {}), json.loads(json.dumps(dict(config))))
            raise ShardConfigError(
                f"{split_dir} already holds shards made with a different configuration "
                f"(differs in: {', '.join(diff) or 'fingerprint'}). Use another --out folder, or delete "
                f"{split_dir} to start over."
            )
    else:
        write_json_atomic(path, record)
    for name in list_names(split_dir):
        if TEMP_RE.match(name):
            delete(join(split_dir, name))
    return fp


@dataclass
class ShardState:
    """Which shards of a split folder are complete (tar + matching sidecar) and which must be (re)written."""

    complete: dict[int, dict[str, Any]] = field(default_factory=dict)
    todo: list[int] = field(default_factory=list)


def _complete_meta(
    split_dir: str, shard: int, fingerprint: str, expected_count: int, verify: bool = True
) -> dict[str, Any] | None:
    tar = join(split_dir, shard_name(shard))
    try:
        meta = read_json(join(split_dir, sidecar_name(shard)))
        size = file_size(tar)
    except (OSError, ValueError, IndexError):
        return None
    count, skipped = meta.get("count"), meta.get("skipped_keys", [])
    ok = (
        meta.get("fingerprint") == fingerprint
        and isinstance(count, int)
        and isinstance(skipped, list)
        and count + len(skipped) == expected_count
        and meta.get("bytes") == size
    )
    if ok and verify:
        try:
            ok = file_sha256(tar) == meta.get("sha256")
        except OSError:
            ok = False
        if not ok:
            log.warning("%s: sha256 differs from its sidecar (damaged); it will be written again", tar)
    return meta if ok else None


def is_shard_complete(
    split_dir: str, shard: int, fingerprint: str, expected_count: int, verify: bool = True
) -> bool:
    """True when the shard's tar exists and its sidecar matches (fingerprint, samples written + skipped
    = ``expected_count``, byte size and, with ``verify``, the sha256 of the tar's bytes)."""
    return (
        exists(join(split_dir, shard_name(shard)))
        and _complete_meta(split_dir, shard, fingerprint, expected_count, verify) is not None
    )


def scan_split_dir(
    split_dir: str,
    fingerprint: str,
    n_shards: int,
    shard_size: int,
    num_samples: int,
    verify: bool = True,
) -> ShardState:
    """Find complete shards: the tar exists, its sidecar has this fingerprint, the right count and size,
    and (``verify``) the tar's sha256 is the one the sidecar recorded when it was written. Verifying reads
    every complete shard once."""
    names = set(list_names(split_dir))
    state = ShardState()
    for k in range(n_shards):
        if shard_name(k) in names and sidecar_name(k) in names:
            expected = len(shard_range(k, shard_size, num_samples))
            meta = _complete_meta(split_dir, k, fingerprint, expected, verify)
            if meta is not None:
                state.complete[k] = meta
                continue
        state.todo.append(k)
    extra = sorted(int(m.group(1)) for n in names if (m := SHARD_RE.match(n)) and int(m.group(1)) >= n_shards)
    if extra:
        raise ShardConfigError(f"{split_dir} holds shards beyond the {n_shards} expected: {extra[:5]}")
    return state


def build_index(
    split_dir: str,
    config: Mapping[str, Any],
    fingerprint: str,
    sidecars: Iterable[Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """index.json content from all sidecars: shard list with counts/sha256/skipped keys, totals of numeric
    stats (notes by reason included), config."""
    shards = sorted(sidecars, key=lambda m: m["shard"])
    totals: dict[str, float] = {}
    for m in shards:
        for k, v in (m.get("stats") or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                totals[k] = totals.get(k, 0) + v
    return {
        "version": INDEX_VERSION,
        "num_samples": sum(m["count"] for m in shards),
        "num_skipped": sum(len(m.get("skipped_keys", [])) for m in shards),
        "num_shards": len(shards),
        "shards": [
            {
                "name": m["name"],
                "count": m["count"],
                "first_index": m["first_index"],
                "bytes": m["bytes"],
                "sha256": m["sha256"],
                "stats": m.get("stats", {}),
                "skipped_keys": list(m.get("skipped_keys", [])),
                "code_version": m.get("code_version", ""),
            }
            for m in shards
        ],
        "totals": totals,
        "fingerprint": fingerprint,
        "config": dict(config),
        **dict(extra or {}),
    }


def write_index(split_dir: str, index: Mapping[str, Any]) -> str:
    path = join(split_dir, INDEX_NAME)
    write_json_atomic(path, index)
    return path


def read_sidecars(split_dir: str, shards: Iterable[int]) -> list[dict[str, Any]]:
    return [read_json(join(split_dir, sidecar_name(k))) for k in shards]
