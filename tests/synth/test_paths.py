"""synth.paths: one URI rule for audio, manifests, shard folders and the render driver; file:// is local."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from synth import shards
from synth.errors import ManifestError
from synth.manifest import read_manifest, write_manifest
from synth.paths import is_uri, local_path
from synth.render_job import RenderOptions, load_sources


def test_is_uri_and_local_path():
    assert is_uri("gs://b/x.wav") and is_uri("s3://b/x") and is_uri("fakefs://out/train")
    assert not is_uri("/data/x.wav") and not is_uri("file:///data/x.wav") and not is_uri("rel/x.wav")
    assert not is_uri("/data/odd://name.wav")  # a scheme only counts at the start
    assert local_path("file:///data/x.wav") == "/data/x.wav" and local_path("gs://b/x") == "gs://b/x"


def _row(i: int, path: str) -> dict:
    return {"id": f"src/f{i}", "path": path, "source": "src", "filename": f"f{i}.wav", "duration_s": 1.0,
            "sample_rate": 48000, "channels": 1, "kind": "event", "split": "train"}  # fmt: skip


def test_file_uri_manifest_round_trip_and_missing(tmp_path):
    uri = f"file://{tmp_path}/sub/m.parquet"
    assert write_manifest([_row(0, "/x.wav")], uri) == str(tmp_path / "sub" / "m.parquet")
    assert read_manifest(uri).column("id").to_pylist() == ["src/f0"]
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(f"file://{tmp_path}/none.parquet")


def test_file_uri_rows_get_the_missing_file_check(tmp_path):
    sf.write(tmp_path / "here.wav", np.zeros(4800, dtype=np.float32), 48000)
    rows = [_row(0, f"file://{tmp_path}/here.wav"), _row(1, f"file://{tmp_path}/gone.wav")]
    write_manifest(rows, tmp_path / "m.parquet")
    table, skipped, examples = load_sources(
        RenderOptions(out=str(tmp_path / "r"), manifest=str(tmp_path / "m.parquet"))
    )
    assert table.column("id").to_pylist() == ["src/f0"]
    assert skipped == {"missing_file": 1} and "gone.wav" in examples[0]


def test_file_uri_split_dir_is_a_local_folder(tmp_path):
    split = f"file://{tmp_path}/out/train"
    fp = shards.prepare_split_dir(split, {"seed": 1})
    data = {shards.sample_key(0): {"json": b"{}"}}
    with shards.ShardWriter(shards.join(split, shards.shard_name(0))) as w:
        w.write(shards.sample_key(0), data[shards.sample_key(0)])
        w.close({"shard": 0, "fingerprint": fp}, shards.join(split, shards.sidecar_name(0)))
    local = tmp_path / "out" / "train"
    assert (local / shards.shard_name(0)).read_bytes() == shards.tar_bytes(data)
    assert shards.list_names(split) == ["config.json", "shard-000000.json", "shard-000000.tar"]
    assert sorted(shards.scan_split_dir(split, fp, 1, 1, 1).complete) == [0]
