"""A real Beam filesystem kept in memory, registered under its own scheme: stands in for gs:// in tests.

Registering a FileSystem subclass is all Beam needs (FileSystems finds it by scheme); `STORE` maps full URIs
to file bytes.
"""

from __future__ import annotations

import io

from apache_beam.io.filesystem import FileSystem

SCHEME = "flamtestmem"
STORE: dict[str, bytes] = {}


class MemoryFileSystem(FileSystem):
    @classmethod
    def scheme(cls):
        return SCHEME

    def open(self, path, mime_type="application/octet-stream", compression_type="auto"):
        if path not in STORE:
            raise FileNotFoundError(path)
        return io.BytesIO(STORE[path])

    def exists(self, path):
        return path in STORE

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *paths])

    def split(self, path):
        return path.rsplit("/", 1)

    def _not_used(self, *a, **k):
        raise NotImplementedError

    _list = copy = create = delete = has_dirs = last_updated = metadata = mkdirs = rename = size = _not_used
