"""synth.manifest: one schema, Parquet round trip, defaults, validation errors."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth.errors import ManifestError
from synth.manifest import (
    MANIFEST_COLUMNS,
    MANIFEST_SCHEMA,
    conform_manifest,
    manifest_rows,
    read_manifest,
    write_manifest,
)

EXPECTED_COLUMNS = [
    "id", "path", "source", "license", "filename", "tags", "description", "duration_s", "sample_rate",
    "channels", "category", "kind", "split", "source_type", "captions", "caption_source", "caption_model",
    "prompt_version", "loudness_db",
]  # fmt: skip


def _row(i: int, **kw) -> dict:
    row = {
        "id": f"src/file{i}",
        "path": f"/data/src/file{i}.wav",
        "source": "src",
        "license": "CC0",
        "filename": f"file{i}.wav",
        "tags": ["dog", "bark"],
        "description": "dog barking",
        "duration_s": 1.5 + i,
        "sample_rate": 44100,
        "channels": 2,
        "category": "sfx",
        "kind": "event",
        "split": "train",
        "source_type": "sfx",
        "captions": ["dog barking", "a dog barks"],
        "caption_source": "llm",
        "caption_model": "some-llm",
        "prompt_version": "v1",
        "loudness_db": -20.5,
    }
    row.update(kw)
    return row


def test_schema_columns_and_types():
    assert list(MANIFEST_COLUMNS) == EXPECTED_COLUMNS
    assert MANIFEST_SCHEMA.field("tags").type == pa.list_(pa.string())
    assert MANIFEST_SCHEMA.field("sample_rate").type == pa.int32()
    assert MANIFEST_SCHEMA.field("loudness_db").type == pa.float64()


def test_round_trip(tmp_path):
    rows = [_row(0), _row(1, kind="background", split="heldout", caption_model=None, loudness_db=None)]
    out = write_manifest(rows, tmp_path / "sub" / "manifest.parquet")
    assert out == str(tmp_path / "sub" / "manifest.parquet")
    table = read_manifest(out)
    assert table.schema.equals(MANIFEST_SCHEMA)
    assert manifest_rows(table) == rows
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["manifest.parquet"]  # no temp files left
    # a table (not rows) also works, and column order in the input does not matter
    shuffled = pa.Table.from_pylist(rows).select(list(reversed(EXPECTED_COLUMNS)))
    assert conform_manifest(shuffled).equals(table)


def test_optional_columns_get_defaults(tmp_path):
    minimal = [{"id": "a", "path": "/a.wav", "duration_s": 2.0, "sample_rate": 16000, "channels": 1,
                "kind": "none", "split": "train"}]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(minimal), tmp_path / "m.parquet")
    (row,) = manifest_rows(read_manifest(tmp_path / "m.parquet"))
    assert row["tags"] == [] and row["captions"] == [] and row["description"] == ""
    assert row["source_type"] == "general" and row["caption_source"] == "none"
    assert row["loudness_db"] is None and row["caption_model"] is None


def test_missing_required_column_is_clear(tmp_path):
    table = pa.Table.from_pylist([_row(0)]).drop_columns(["kind"])
    pq.write_table(table, tmp_path / "m.parquet")
    with pytest.raises(ManifestError, match="required column.*kind"):
        read_manifest(tmp_path / "m.parquet")
    with pytest.raises(ManifestError, match="split"):
        conform_manifest([{k: v for k, v in _row(0).items() if k != "split"}])


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"kind": "ambience"}, "kind.*'ambience'.*src/file1"),
        ({"split": "test"}, "split.*'test'"),
        ({"source_type": "music"}, "source_type"),
        ({"caption_source": "human"}, "caption_source"),
        ({"duration_s": None}, "duration_s.*null.*src/file1"),
        ({"id": "src/file0"}, "duplicate id"),
        ({"sample_rate": "fast"}, "sample_rate"),
    ],
)
def test_bad_values_rejected(tmp_path, bad, match):
    with pytest.raises(ManifestError, match=match):
        write_manifest([_row(0), _row(1, **bad)], tmp_path / "m.parquet")
    assert not (tmp_path / "m.parquet").exists()


def test_read_missing_file(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "none.parquet")


def test_empty_manifest(tmp_path):
    write_manifest([], tmp_path / "e.parquet")
    table = read_manifest(tmp_path / "e.parquet")
    assert table.num_rows == 0 and table.schema.equals(MANIFEST_SCHEMA)
