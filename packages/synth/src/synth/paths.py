"""One rule for "is this a URI?": ``scheme://...`` other than ``file://`` goes through Apache Beam's
``FileSystems`` (gs://, s3://, hdfs://, ...); plain paths and ``file://`` paths are local files."""

from __future__ import annotations

import os
import re

_URI_RE = re.compile(r"^[a-zA-Z][-a-zA-Z0-9+.]*://")
_FILE_PREFIX = "file://"


def is_uri(path: str | os.PathLike) -> bool:
    """True for ``scheme://...`` strings other than ``file://`` (those are read through Beam FileSystems)."""
    s = os.fspath(path)
    return bool(_URI_RE.match(s)) and not s.startswith(_FILE_PREFIX)


def local_path(path: str | os.PathLike) -> str:
    """Strip a ``file://`` prefix; other strings are returned unchanged."""
    s = os.fspath(path)
    return s[len(_FILE_PREFIX) :] if s.startswith(_FILE_PREFIX) else s
