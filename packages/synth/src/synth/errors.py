"""Errors raised by the synth package for bad input (audio that cannot be read, bad metadata, bad manifests).

Every error names *what* failed and *where* (path, row, column) so that a caller can log it and move on.
"""

from __future__ import annotations


class AudioDecodeError(ValueError):
    """An audio file is missing or cannot be decoded.

    ``reason_code`` is a short machine-readable key used to count skips: ``missing_file``,
    ``decode_error``, ``truncated``, ``empty_audio`` or ``bad_path``; ``reason`` is the human-readable
    detail.
    """

    def __init__(self, path: str, reason: str, reason_code: str = "decode_error") -> None:
        self.path = str(path)
        self.reason = reason
        self.reason_code = reason_code
        super().__init__(f"cannot read audio {self.path!r}: {reason}")

    def __reduce__(self) -> tuple:  # keep the attributes across process pools
        return (type(self), (self.path, self.reason, self.reason_code))


class MetadataError(ValueError):
    """A corpus metadata file is missing, unreadable or lacks a required column/value."""


class ManifestError(ValueError):
    """A manifest table lacks required columns or holds values outside the allowed sets."""
