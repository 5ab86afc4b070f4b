"""The source manifest: one row per corpus file, one pyarrow schema (:data:`MANIFEST_SCHEMA`) defined here.

Columns (in order): id, path (absolute local path or URI), source, license, filename, tags, description,
duration_s, sample_rate, channels, category, kind (event|background|none), split (train|heldout),
source_type (sfx|general), captions, caption_source (llm|template|fallback|none), caption_model,
prompt_version, loudness_db.

Reading/writing always goes through :func:`conform_manifest`, which orders and casts the columns, fills
optional columns with defaults, and rejects (``ManifestError``) missing required columns, nulls where a
value is required, unknown ``kind``/``split``/``source_type``/``caption_source`` values and duplicate ids.
Only ``caption_model``, ``prompt_version`` and ``loudness_db`` may be null.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synth.errors import ManifestError
from synth.paths import is_uri, local_path

KINDS = ("event", "background", "none")
SPLITS = ("train", "heldout")
SOURCE_TYPES = ("sfx", "general")
CAPTION_SOURCES = ("llm", "template", "fallback", "none")

MANIFEST_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("path", pa.string()),
        pa.field("source", pa.string()),
        pa.field("license", pa.string()),
        pa.field("filename", pa.string()),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("description", pa.string()),
        pa.field("duration_s", pa.float64()),
        pa.field("sample_rate", pa.int32()),
        pa.field("channels", pa.int32()),
        pa.field("category", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("split", pa.string()),
        pa.field("source_type", pa.string()),
        pa.field("captions", pa.list_(pa.string())),
        pa.field("caption_source", pa.string()),
        pa.field("caption_model", pa.string()),
        pa.field("prompt_version", pa.string()),
        pa.field("loudness_db", pa.float64()),
    ],
    metadata={"flam.manifest_version": "1"},
)

MANIFEST_COLUMNS: tuple[str, ...] = tuple(MANIFEST_SCHEMA.names)
REQUIRED_COLUMNS: tuple[str, ...] = ("id", "path", "duration_s", "sample_rate", "channels", "kind", "split")
NULLABLE_COLUMNS: tuple[str, ...] = ("caption_model", "prompt_version", "loudness_db")
# Defaults for optional columns absent from an input table (nullable columns default to null).
COLUMN_DEFAULTS: dict[str, Any] = {
    "source": "",
    "license": "",
    "filename": "",
    "tags": [],
    "description": "",
    "category": "",
    "source_type": "general",
    "captions": [],
    "caption_source": "none",
}
_ALLOWED = {"kind": KINDS, "split": SPLITS, "source_type": SOURCE_TYPES, "caption_source": CAPTION_SOURCES}


def _from_rows(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    rows = list(rows)
    present = set().union(*(r.keys() for r in rows)) if rows else set(MANIFEST_COLUMNS)
    missing = [c for c in REQUIRED_COLUMNS if c not in present]
    if missing:
        raise ManifestError(f"manifest rows lack required column(s) {missing}")
    cols = {}
    for field in MANIFEST_SCHEMA:
        if field.name not in present:
            continue
        values = [r.get(field.name) for r in rows]
        try:
            cols[field.name] = pa.array(values, type=field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise ManifestError(
                f"manifest column {field.name!r} cannot be cast to {field.type}: {exc}"
            ) from exc
    return (
        pa.table(cols)
        if cols
        else pa.table({c: pa.array([], type=MANIFEST_SCHEMA.field(c).type) for c in MANIFEST_COLUMNS})
    )


def _row_label(table: pa.Table, i: int) -> str:
    ids = table.column("id") if "id" in table.column_names else None
    return f"row {i}" + (f" (id {ids[i].as_py()!r})" if ids is not None and ids[i].is_valid else "")


def conform_manifest(table_or_rows: pa.Table | Iterable[Mapping[str, Any]]) -> pa.Table:
    """Return a table with exactly :data:`MANIFEST_SCHEMA` (order, types), validated; raises ManifestError."""
    table = table_or_rows if isinstance(table_or_rows, pa.Table) else _from_rows(table_or_rows)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ManifestError(f"manifest lacks required column(s) {missing}; has {table.column_names}")
    n = table.num_rows
    arrays = []
    for field in MANIFEST_SCHEMA:
        if field.name in table.column_names:
            col = table.column(field.name)
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise ManifestError(
                    f"manifest column {field.name!r} ({col.type}) cannot be cast to {field.type}: {exc}"
                ) from exc
        elif field.name in NULLABLE_COLUMNS:
            col = pa.nulls(n, type=field.type)
        else:
            col = pa.array([COLUMN_DEFAULTS[field.name]] * n, type=field.type)
        if field.name not in NULLABLE_COLUMNS and col.null_count:
            first = pc.index(pc.is_null(col), True).as_py()
            raise ManifestError(f"manifest column {field.name!r} is null at {_row_label(table, first)}")
        if field.name in _ALLOWED:
            bad = pc.invert(pc.is_in(col, value_set=pa.array(_ALLOWED[field.name])))
            if pc.any(bad).as_py():
                i = pc.index(bad, True).as_py()
                raise ManifestError(
                    f"manifest column {field.name!r} has {col[i].as_py()!r} at {_row_label(table, i)}; "
                    f"allowed: {list(_ALLOWED[field.name])}"
                )
        arrays.append(col)
    out = pa.Table.from_arrays(arrays, schema=MANIFEST_SCHEMA)
    counts = pc.value_counts(out.column("id").combine_chunks())
    dup = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    if len(dup):
        raise ManifestError(
            f"manifest has duplicate id(s): {dup[:5].to_pylist()}{' ...' if len(dup) > 5 else ''}"
        )
    return out


def write_manifest(table_or_rows: pa.Table | Iterable[Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Validate and write a manifest as Parquet (atomic for local paths: temp file + rename); returns path."""
    table = conform_manifest(table_or_rows)
    target = str(path)
    if is_uri(target):
        pq.write_table(table, target)  # pyarrow resolves the remote filesystem
        return target
    local = Path(local_path(target))
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, local)
    finally:
        tmp.unlink(missing_ok=True)
    return str(local)


def read_manifest(path: str | os.PathLike) -> pa.Table:
    """Read a Parquet manifest and conform it to :data:`MANIFEST_SCHEMA` (raises ManifestError)."""
    target = str(path)
    if not is_uri(target):
        local = Path(local_path(target))
        if not local.is_file():
            raise ManifestError(f"manifest not found: {local}")
        target = str(local)
    try:
        table = pq.read_table(target)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"cannot read manifest {target}: {exc}") from exc
    return conform_manifest(table)


def manifest_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The manifest as a list of plain dicts (columns in schema order)."""
    return conform_manifest(table).to_pylist()
