"""Deterministic tar shards: fixed headers, sorted entries, atomic publish, config checks, WebDataset read-back."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile

import numpy as np
import pytest
import webdataset as wds
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem

from synth import shards


def _samples(n: int, seed: int = 0) -> dict[str, dict[str, bytes]]:
    rng = np.random.default_rng(seed)
    return {
        shards.sample_key(i): {
            "json": json.dumps({"key": shards.sample_key(i), "v": i}).encode(),
            "flac": rng.integers(0, 256, size=100 + i, dtype=np.uint8).tobytes(),
        }
        for i in range(n)
    }


def test_names_and_ranges():
    assert shards.sample_key(7) == "000000007"
    assert shards.shard_name(3) == "shard-000003.tar"
    assert shards.num_shards(10, 4) == 3
    assert list(shards.shard_range(2, 4, 10)) == [8, 9]
    with pytest.raises(ValueError, match="out of range"):
        shards.shard_range(3, 4, 10)
    with pytest.raises(ValueError, match="shard_size"):
        shards.num_shards(10, 0)


def test_tar_headers_are_pinned_and_sorted(tmp_path):
    data = _samples(3)
    raw = shards.tar_bytes(dict(reversed(list(data.items()))))  # given in reverse: still sorted
    path = tmp_path / "a.tar"
    path.write_bytes(raw)
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [f"{k}.{e}" for k in sorted(data) for e in ("flac", "json")]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (
            shards.TAR_MTIME,
            0,
            0,
            shards.TAR_UNAME,
            shards.TAR_GNAME,
            0o644,
        )
    assert len(raw) % tarfile.RECORDSIZE == 0
    assert shards.tar_bytes(data) == raw  # same content -> same bytes


def test_shard_writer_streams_same_bytes_as_tar_bytes_and_reads_back_with_webdataset(tmp_path):
    data = _samples(5)
    path = str(tmp_path / shards.shard_name(0))
    side = str(tmp_path / shards.sidecar_name(0))
    with shards.ShardWriter(path) as w:
        for key in sorted(data):
            w.write(key, data[key])
        info = w.close({"shard": 0, "name": shards.shard_name(0), "first_index": 0}, side)
    raw = open(path, "rb").read()
    assert raw == shards.tar_bytes(data)
    assert info == {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw), "count": 5}
    assert json.load(open(side))["sha256"] == info["sha256"]
    got = list(wds.WebDataset(path, shardshuffle=False))
    assert [s["__key__"] for s in got] == sorted(data)
    for s in got:
        assert s["flac"] == data[s["__key__"]]["flac"]
        assert json.loads(s["json"])["key"] == s["__key__"]
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []  # no temp files left


def test_shard_writer_failure_leaves_no_shard(tmp_path):
    path = str(tmp_path / shards.shard_name(0))
    with pytest.raises(RuntimeError, match="boom"):
        with shards.ShardWriter(path) as w:
            w.write("000000000", {"json": b"{}"})
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_shard_writer_rejects_bad_keys(tmp_path):
    with shards.ShardWriter(str(tmp_path / "x.tar")) as w:
        w.write("000000001", {"json": b"{}"})
        with pytest.raises(ValueError, match="must increase"):
            w.write("000000000", {"json": b"{}"})
        with pytest.raises(ValueError, match="invalid sample key"):
            w.write("a.b", {"json": b"{}"})
        with pytest.raises(TypeError, match="must be bytes"):
            w.write("000000002", {"json": "text"})
        w.close()


def test_prepare_scan_and_index(tmp_path):
    split = str(tmp_path / "train")
    cfg = {"seed": 1, "num_samples": 5, "shard_size": 2}
    fp = shards.prepare_split_dir(split, cfg)
    assert shards.prepare_split_dir(split, cfg) == fp  # same config: fine
    with pytest.raises(shards.ShardConfigError, match="seed: 1 -> 2"):
        shards.prepare_split_dir(split, {**cfg, "seed": 2})

    data = _samples(5)
    n = shards.num_shards(5, 2)
    for k in range(n):
        keys = [shards.sample_key(i) for i in shards.shard_range(k, 2, 5)]
        with shards.ShardWriter(os.path.join(split, shards.shard_name(k))) as w:
            for key in keys:
                w.write(key, data[key])
            w.close(
                {
                    "shard": k,
                    "name": shards.shard_name(k),
                    "first_index": k * 2,
                    "fingerprint": fp,
                    "stats": {"events": len(keys)},
                },
                os.path.join(split, shards.sidecar_name(k)),
            )
    state = shards.scan_split_dir(split, fp, n, 2, 5)
    assert sorted(state.complete) == [0, 1, 2] and state.todo == []

    # a missing tar, a truncated tar and a stale temp file: those shards are redone, the temp file removed
    os.remove(os.path.join(split, shards.shard_name(1)))
    with open(os.path.join(split, shards.shard_name(2)), "r+b") as f:
        f.truncate(512)
    stale = os.path.join(split, ".shard-000001.tar.tmp-0123456789ab")
    open(stale, "wb").write(b"partial")
    shards.prepare_split_dir(split, cfg)
    assert not os.path.exists(stale)
    state = shards.scan_split_dir(split, fp, n, 2, 5)
    assert sorted(state.complete) == [0] and state.todo == [1, 2]
    assert shards.scan_split_dir(split, "other", n, 2, 5).todo == [0, 1, 2]

    index = shards.build_index(split, cfg, fp, shards.read_sidecars(split, [0]), extra={"seed": 1})
    assert index["num_samples"] == 2 and index["totals"] == {"events": 2} and index["seed"] == 1
    path = shards.write_index(split, index)
    assert json.load(open(path)) == index


def test_skipped_keys_count_toward_a_complete_shard(tmp_path):
    """A shard with skipped samples is complete when written + skipped = its index range, and is indexed."""
    split = str(tmp_path)
    fp = shards.prepare_split_dir(split, {"seed": 0})
    data = _samples(3)
    side = os.path.join(split, shards.sidecar_name(0))
    with shards.ShardWriter(os.path.join(split, shards.shard_name(0))) as w:
        for key in ("000000000", "000000002"):
            w.write(key, data[key])
        w.close(
            {
                "shard": 0,
                "name": shards.shard_name(0),
                "first_index": 0,
                "fingerprint": fp,
                "stats": {"mixtures": 2, "skipped_bg": 1},
                "skipped_keys": ["000000001"],
            },
            side,
        )
    assert shards.is_shard_complete(split, 0, fp, 3) and not shards.is_shard_complete(split, 0, fp, 2)
    assert shards.scan_split_dir(split, fp, 1, 3, 3).todo == []
    index = shards.build_index(split, {}, fp, shards.read_sidecars(split, [0]))
    assert (index["num_samples"], index["num_skipped"]) == (2, 1)
    assert index["shards"][0]["skipped_keys"] == ["000000001"] and index["totals"]["skipped_bg"] == 1
    meta = json.load(open(side))
    json.dump({**meta, "skipped_keys": "000000001"}, open(side, "w"))  # malformed: not complete
    assert not shards.is_shard_complete(split, 0, fp, 3)


def test_scan_rejects_extra_shards(tmp_path):
    split = str(tmp_path)
    open(os.path.join(split, shards.shard_name(9)), "wb").write(b"")
    with pytest.raises(shards.ShardConfigError, match="beyond"):
        shards.scan_split_dir(split, "fp", 2, 2, 4)


class FakeRemoteFileSystem(LocalFileSystem):
    """``fakefs://`` URIs backed by a local folder: drives the URI (Beam FileSystems) code paths."""

    root = ""

    @classmethod
    def scheme(cls):
        return "fakefs"

    def _local(self, path):
        return os.path.join(self.root, path[len("fakefs://") :]) if path.startswith("fakefs://") else path

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path):
        head, _, tail = path.rpartition("/")
        return head, tail

    def mkdirs(self, path):
        super().mkdirs(self._local(path))

    def _list(self, prefix):
        for m in super()._list(self._local(prefix)):
            uri = "fakefs://" + os.path.relpath(m.path, self.root)
            yield FileMetadata(uri, m.size_in_bytes, m.last_updated_in_seconds)

    def metadata(self, path):
        m = super().metadata(self._local(path))
        return FileMetadata(path, m.size_in_bytes, m.last_updated_in_seconds)

    def create(self, path, *args, **kwargs):
        return super().create(self._local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return super().open(self._local(path), *args, **kwargs)

    def rename(self, src, dst):
        super().rename([self._local(s) for s in src], [self._local(d) for d in dst])

    def copy(self, src, dst):
        super().copy([self._local(s) for s in src], [self._local(d) for d in dst])

    def exists(self, path):
        return super().exists(self._local(path))

    def size(self, path):
        return super().size(self._local(path))

    def delete(self, paths):
        super().delete([self._local(p) for p in paths])


@pytest.fixture
def fakefs(tmp_path, monkeypatch):
    monkeypatch.setattr(FakeRemoteFileSystem, "root", str(tmp_path))
    return tmp_path


def test_uri_paths_go_through_beam_filesystems(fakefs):
    split = "fakefs://out/train"
    assert shards.is_uri(split) and shards.list_names(split) == []
    cfg = {"seed": 1}
    fp = shards.prepare_split_dir(split, cfg)
    data = _samples(3)
    with shards.ShardWriter(shards.join(split, shards.shard_name(0))) as w:
        for key in sorted(data):
            w.write(key, data[key])
        w.close(
            {"shard": 0, "name": shards.shard_name(0), "first_index": 0, "fingerprint": fp},
            shards.join(split, shards.sidecar_name(0)),
        )
    local = fakefs / "out" / "train"
    assert (local / "shard-000000.tar").read_bytes() == shards.tar_bytes(data)
    assert shards.list_names(split) == ["config.json", "shard-000000.json", "shard-000000.tar"]
    assert sorted(shards.scan_split_dir(split, fp, 1, 3, 3).complete) == [0]
    assert shards.is_shard_complete(split, 0, fp, 3) and not shards.is_shard_complete(split, 0, "x", 3)
    (local / ".shard-000001.tar.tmp-0123456789ab").write_bytes(b"x")
    shards.prepare_split_dir(split, cfg)  # removes the stale temp file through the URI
    assert sorted(os.listdir(local)) == ["config.json", "shard-000000.json", "shard-000000.tar"]
    with pytest.raises(shards.ShardConfigError):
        shards.prepare_split_dir(split, {"seed": 2})
