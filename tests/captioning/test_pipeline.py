"""pipelines/caption.py end to end on --runner=FnApiRunner over a 30-file subset of the shared dev corpus
(the in-repo demo corpus where ../shared is absent).

The LLM is captioning.testing.fake_server (a real HTTP server on 127.0.0.1) started by the tests.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from captioning.prompt import prompt_version
from captioning.template import TEMPLATE_VERSION
from captioning.testing.fake_server import FakeChatServer
from captioning.validate import caption_problem
from synth.manifest import read_manifest
from tests.pipeline_scripts import import_pipeline_script

BEAM = ["--runner=FnApiRunner", "--direct_num_workers=1"]
SECRET = "sk-test-never-print-4242"


@pytest.fixture(scope="module")
def caption_cli():
    return import_pipeline_script("caption")


def _subset(sound_corpus, tmp_path, n, extra_rows=()):
    """A metadata CSV holding the first n rows of the dev corpus (+ extra rows)."""
    with open(sound_corpus / "metadata.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [r for _, r in zip(range(n), reader, strict=False)]
        fields = reader.fieldnames
    path = tmp_path / "subset.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
        w.writerows(extra_rows)
    return path, rows


def _summary(out):
    return json.loads(out.with_name(out.stem + ".summary.json").read_text())


def test_template_captioner_pipeline(caption_cli, sound_corpus, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really audio")
    extra = [
        {"id": "x/broken", "path": str(bad), "filename": "broken.wav", "tags": "noise"},
        {"id": "x/missing", "path": "audio/nope/missing.wav", "filename": "missing.wav"},
        {"id": "boswars-data/artil.die", "path": "audio/boswars-data/artil.die.wav"},  # duplicate id
    ]
    meta, rows = _subset(sound_corpus, tmp_path, 30, extra)
    out = tmp_path / "out" / "manifest.parquet"
    args = [
        "--corpus",
        str(sound_corpus),
        "--metadata",
        str(meta),
        "--out",
        str(out),
        "--captioner",
        "template",
        "--allow-outside-corpus",  # broken.wav lives outside the corpus folder (test_outside_corpus_rule)
    ]
    assert caption_cli.main(args + BEAM) == 0
    table = read_manifest(out)
    got = table.to_pylist()
    assert [r["id"] for r in got] == sorted(r["id"] for r in rows)  # every good file, none of the bad ones
    for r in got:
        assert r["caption_source"] == "template" and r["prompt_version"] == TEMPLATE_VERSION
        assert r["caption_model"] is None and 1 <= len(r["captions"]) <= 3
        # every rule holds; the file-name-copy rule is waived only when the description and tags are the
        # name's own words (e.g. card_flip.wav, tags card;flip, "card flip"): the composer keeps them then
        assert all(caption_problem(c, "") is None for c in r["captions"])
        assert r["kind"] in ("event", "background", "none") and r["split"] in ("train", "heldout")
    assert {r["kind"] for r in got} >= {"event"} and any(r["split"] == "heldout" for r in got)
    s = _summary(out)
    assert s["counts"]["files_template"] == 30 and s["counts"].get("requests_sent", 0) == 0
    assert s["ingest"]["ingested"] == 30 and s["ingest"]["skipped_decode_error"] == 1
    assert s["ingest"]["skipped_missing_file"] == 1 and s["ingest"]["skipped_before_probe"] == {
        "duplicate_id": 1
    }
    skipped = [json.loads(x) for x in out.with_name("manifest.skipped.jsonl").read_text().splitlines()]
    assert sorted(x["reason"] for x in skipped) == ["decode_error", "duplicate_id", "missing_file"]

    # the renderer reads it (pipelines/render_mixtures.py --manifest goes through load_sources/SourcePool)
    from synth.render_job import RenderOptions, load_sources
    from synth.spec import SourcePool

    loaded, skips = load_sources(RenderOptions(out=str(tmp_path / "r"), manifest=str(out)))[:2]
    assert loaded.num_rows == 30 and not skips
    SourcePool.from_manifest(loaded, "train")

    # an existing manifest can be re-captioned: ingest and splits are kept, captions replaced
    out2 = tmp_path / "out2" / "manifest.parquet"
    with FakeChatServer() as srv:
        args2 = ["--manifest", str(out), "--out", str(out2), "--captioner", "vllm", "--endpoint", srv.base_url,
                 "--model", "m", "--captions-per-file", "2"]  # fmt: skip
        assert caption_cli.main(args2 + BEAM) == 0
        assert len(srv.log.requests) == 30
    again = read_manifest(out2).to_pylist()
    assert [(r["id"], r["split"], r["kind"]) for r in again] == [
        (r["id"], r["split"], r["kind"]) for r in got
    ]
    assert all(r["caption_source"] == "llm" and len(r["captions"]) == 2 for r in again)


def test_llm_pipeline_counts_cache_and_secret(caption_cli, sound_corpus, tmp_path, monkeypatch, capfd):
    meta, rows = _subset(sound_corpus, tmp_path, 30)
    names = [r["filename"] for r in rows]
    script = {names[1]: ["429", "ok"], names[2]: ["500", "ok"], names[3]: ["malformed", "fenced"]}
    script[names[4]] = ["invalid"] * 4
    monkeypatch.setenv("FLAM_LLM_API_KEY", SECRET)
    out = tmp_path / "out" / "manifest.parquet"
    # the server rejects system messages like Mixtral's chat template: the default (merged) layout works
    with FakeChatServer(script=script, latency_s=0.02, reject_system_role=True) as srv:
        args = ["--corpus", str(sound_corpus), "--metadata", str(meta), "--out", str(out), "--captioner", "vllm",
                "--endpoint", srv.base_url, "--model", "test-model", "--captions-per-file", "4",
                "--max-concurrency", "3", "--max-attempts", "4"]  # fmt: skip
        assert caption_cli.main(args + BEAM) == 0
        first = len(srv.log.requests)
        assert first == 30 + 1 + 1 + 1 + 3 and srv.log.max_in_flight <= 3
        assert all(r["auth"] == f"Bearer {SECRET}" for r in srv.log.requests)
        c = _summary(out)["counts"]
        assert (c["files_total"], c["files_llm"], c["files_fallback"]) == (30, 29, 1)
        assert c["requests_sent"] == first and c["retries"] == 6
        assert c["failed_rate_limited"] == 1 and c["failed_http_500"] == 1 and c["failed_malformed_json"] == 1
        assert c["failed_invalid_captions"] == 4 and c["fallback_reason_invalid_captions"] == 1
        table = {r["filename"]: r for r in read_manifest(out).to_pylist()}
        assert table[names[4]]["caption_source"] == "fallback" and table[names[4]]["captions"]
        for name, r in table.items():
            assert r["prompt_version"] == prompt_version() and r["caption_model"] == "test-model"
            if name != names[4]:
                assert r["caption_source"] == "llm" and len(r["captions"]) == 4

        # re-run: everything comes from the cache, the server sees no request
        assert caption_cli.main(args + BEAM) == 0
        assert len(srv.log.requests) == first
        c2 = _summary(out)["counts"]
        assert c2["files_cache"] == 29 and c2["files_cache_fallback"] == 1 and c2.get("requests_sent", 0) == 0
        assert {r["filename"]: r["captions"] for r in read_manifest(out).to_pylist()} == {
            k: v["captions"] for k, v in table.items()
        }
    # the key is in no output, cache entry or log line
    text = capfd.readouterr()
    assert SECRET not in text.out + text.err
    for p in out.parent.rglob("*"):
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p


def test_system_layout_rejected_by_template_stops_with_flag_hint(caption_cli, sound_corpus, tmp_path, capfd):
    meta, _ = _subset(sound_corpus, tmp_path, 8)
    out = tmp_path / "out" / "manifest.parquet"
    with FakeChatServer(reject_system_role=True) as srv:
        args = ["--corpus", str(sound_corpus), "--metadata", str(meta), "--out", str(out), "--captioner", "vllm",
                "--endpoint", srv.base_url, "--model", "m", "--max-concurrency", "2", "--system-prompt", "system"]  # fmt: skip
        assert caption_cli.main(args + BEAM) == 2
    err = capfd.readouterr().err
    assert "--system-prompt merged" in err and "roles must alternate" in err
    assert 1 <= len(srv.log.requests) <= 2 and not out.exists()  # stopped at once, no fallback manifest


def test_killed_run_resumes_without_duplicate_requests(caption_cli, sound_corpus, tmp_path, repo_root):
    """SIGKILL mid-run, then re-run: every file in the cache at restart is not asked again, every other file
    is asked exactly once. Counted against the cache file itself (read before the re-run), not timestamps."""
    from captioning.cache import CaptionCache
    from captioning.captioner import request_key
    from captioning.client import ClientConfig
    from captioning.prompt import CaptionInput

    meta, rows = _subset(sound_corpus, tmp_path, 24)
    out = tmp_path / "out" / "manifest.parquet"
    with FakeChatServer(latency_s=0.3) as srv:
        args = ["--corpus", str(sound_corpus), "--metadata", str(meta), "--out", str(out), "--captioner", "vllm",
                "--endpoint", srv.base_url, "--model", "test-model", "--max-concurrency", "2"]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, str(repo_root / "pipelines" / "caption.py"), *args, *BEAM],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.time() + 90
            while sum(r["completed"] for r in srv.log.requests) < 6:
                assert proc.poll() is None, "pipeline ended before it could be killed"
                assert time.time() < deadline, "no requests reached the server"
                time.sleep(0.05)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the process group this test started
            proc.wait(30)
        assert not out.exists()
        # what the killed run left in the cache: a request is sent only after the previous answers (2 in
        # flight at most) were recorded, so 6 completed requests imply >= 4 entries
        cached_keys = CaptionCache(out.parent / "caption_cache").keys()
        n_first = len(srv.log.requests)
        assert 4 <= len(cached_keys) < 24

        assert caption_cli.main(args + BEAM) == 0
        got = read_manifest(out).to_pylist()
        assert len(got) == 24 and all(r["caption_source"] == "llm" for r in got)
        cfg = ClientConfig(endpoint=srv.base_url, model="test-model")
        key_of = {r["filename"]: request_key(cfg, CaptionInput.from_row(r)) for r in got}
        assert len(set(key_of.values())) == 24
        cached = {f for f, k in key_of.items() if k in cached_keys}
        assert len(cached) == len(cached_keys)  # the keys the test computes are the pipeline's keys
        again = [r["file"] for r in srv.log.requests[n_first:]]
        assert not cached & set(again), "a file in the cache at restart was requested again"
        assert sorted(again) == sorted(set(key_of) - cached)  # every other file exactly once
        c = _summary(out)["counts"]
        assert c["files_cache"] == len(cached) and c["files_llm"] == 24 - len(cached)


def test_outside_corpus_rule(caption_cli, tmp_path):
    """caption.py skips metadata paths outside the corpus folder (outside_corpus), as the renderer's ingest
    does, unless --allow-outside-corpus; the same file reached by two paths is kept once."""
    import shutil

    demo = Path(__file__).resolve().parents[2] / "corpus" / "demo" / "audio" / "gamine-data" / "drip.wav"
    corpus = tmp_path / "corpus"
    (corpus / "audio").mkdir(parents=True)
    shutil.copy(demo, corpus / "audio" / "drip.wav")
    shutil.copy(demo, tmp_path / "elsewhere.wav")
    (corpus / "metadata.csv").write_text(
        "id,path,tags\n"
        "in/drip,audio/drip.wav,drip\n"
        f"in/again,{corpus / 'audio' / 'drip.wav'},drip\n"
        "out/else,../elsewhere.wav,drip\n"
    )
    base = ["--corpus", str(corpus), "--out", str(tmp_path / "m" / "manifest.parquet")]
    kept, skipped = caption_cli.metadata_rows(caption_cli.parse_args(base))
    assert [r["id"] for r in kept] == ["in/drip"]
    assert sorted(s["reason"] for s in skipped) == ["duplicate_path", "outside_corpus"]
    kept, skipped = caption_cli.metadata_rows(caption_cli.parse_args([*base, "--allow-outside-corpus"]))
    assert [r["id"] for r in kept] == ["in/drip", "out/else"]
    assert [s["reason"] for s in skipped] == ["duplicate_path"]
