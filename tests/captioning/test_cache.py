"""The JSONL-segment caption cache: keys, durability, concurrent writers, torn lines, segment mode."""

import multiprocessing as mp

from captioning.cache import CaptionCache, cache_key
from captioning.prompt import CaptionInput


def test_key_depends_on_model_prompt_version_n_and_inputs():
    a = CaptionInput("dog.wav", ("dog",), "a dog", "src")
    k = cache_key("m", "v1", 3, a)
    assert k == cache_key("m", "v1", 3, CaptionInput("dog.wav", ("dog",), "a dog", "src"))
    others = {
        cache_key("m2", "v1", 3, a),
        cache_key("m", "v2", 3, a),
        cache_key("m", "v1", 4, a),
        cache_key("m", "v1", 3, CaptionInput("dog.wav", ("dog", "bark"), "a dog", "src")),
        cache_key("m", "v1", 3, CaptionInput("dog.wav", ("dog",), "a cat", "src")),
    }
    assert k not in others and len(others) == 5


def test_put_is_durable_and_torn_lines_skipped(tmp_path):
    c = CaptionCache(tmp_path)
    c.put("k1", {"status": "ok", "captions": ["a b"]})
    # without close(): the line is already on disk
    seg = next(tmp_path.glob("seg-*.jsonl"))
    assert '"k1"' in seg.read_text()
    with open(seg, "a") as fh:
        fh.write('{"key": "k2", "status": "ok", "capt')  # a writer killed mid-line
    c2 = CaptionCache(tmp_path)
    assert c2.get("k1")["captions"] == ["a b"] and c2.get("k2") is None and c2.corrupt_lines == 1
    c.close()


def _writer(root, worker, n):
    c = CaptionCache(root)
    for i in range(n):
        c.put(f"k{i}", {"status": "ok", "captions": [f"w{worker} item {i}"]})  # overlapping keys on purpose
        c.put(f"w{worker}-{i}", {"status": "ok", "captions": ["x y"]})
    c.close()


def test_concurrent_writer_processes(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    c = CaptionCache(tmp_path)
    assert len(list(tmp_path.glob("seg-*.jsonl"))) == 4 and c.corrupt_lines == 0
    assert len(c) == 40 + 4 * 40
    assert all(c.get(f"w{w}-{i}") for w in range(4) for i in range(40))


def test_segment_mode_through_beam_filesystems(tmp_path):
    c = CaptionCache(tmp_path, segments=True, flush_every=3)
    for i in range(7):
        c.put(f"k{i}", {"status": "ok", "captions": ["a b"]})
    assert len(list(tmp_path.glob("seg-*.jsonl"))) == 2  # two full buffers written as objects
    c.close()
    assert len(list(tmp_path.glob("seg-*.jsonl"))) == 3
    r = CaptionCache(tmp_path, segments=True)
    assert len(r) == 7 and r.get("k6")["key"] == "k6"


def test_refresh_reads_other_writers_entries(tmp_path):
    """A reader opened earlier sees what another writer added since (a retried bundle sees a dead worker's
    answers); a line still being written is read once it is complete."""
    reader = CaptionCache(tmp_path)
    writer = CaptionCache(tmp_path)
    writer.put("k1", {"status": "ok", "captions": ["a b"]})
    assert reader.get("k1") is None and reader.refresh() == 1 and reader.get("k1")["captions"] == ["a b"]
    assert reader.refresh() == 0  # nothing new
    seg = next(tmp_path.glob("seg-*.jsonl"))
    line = '{"key": "k2", "status": "ok", "captions": ["c d"]}\n'
    with open(seg, "a") as fh:
        fh.write(line[:20])
        fh.flush()
        assert reader.refresh() == 0 and reader.get("k2") is None  # half a line: not consumed
        fh.write(line[20:])
    assert reader.refresh() == 1 and reader.get("k2")["captions"] == ["c d"]
    writer.close()
    reader.close()


def test_remote_segments_flush_every_and_refresh(tmp_path):
    reader = CaptionCache(tmp_path, segments=True)
    writer = CaptionCache(tmp_path, segments=True, flush_every=2)
    for i in range(3):
        writer.put(f"k{i}", {"status": "ok", "captions": ["a b"]})
    # one object of 2 entries written; the 3rd is buffered: a killed writer would lose it (flush_every - 1)
    assert reader.refresh() == 2 and reader.get("k2") is None
    writer.flush()  # the pipeline flushes at every bundle end
    assert reader.refresh() == 1 and len(reader) == 3
    assert writer.refresh() == 0  # its own objects are not read back


def test_file_uri_location_is_a_local_cache(tmp_path):
    """file:// is local (synth.paths.is_uri): appended, fsync'ed lines, the same folder as the plain path."""
    c = CaptionCache(f"file://{tmp_path}")
    assert not c.remote and c.flush_every == 1
    c.put("k", {"status": "ok", "captions": ["a dog barks"]})
    assert len(list(tmp_path.glob("seg-*.jsonl"))) == 1  # written at once, no buffering
    c.close()
    assert CaptionCache(tmp_path).get("k")["captions"] == ["a dog barks"]
