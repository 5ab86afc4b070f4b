"""render_mixtures end to end with real Beam (FnApiRunner), real audio and WebDataset read-back.

Most tests use a subset of the in-repo demo corpus (corpus/demo), so they run without ../shared: one clean
run (24 mixtures, 3 shards) is shared by the module; other tests render again into fresh folders with other
worker counts, after damaging shards, with failing sources, or from the command line, and compare bytes.
One end-to-end run over a dev-corpus subset needs ../shared (skipped when it is absent).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf
import webdataset as wds

import synth.records
from synth import shards
from synth.filtering import classify_kind
from synth.ingest import IngestConfig, ingest_corpus
from synth.manifest import read_manifest, write_manifest
from synth.render_job import RenderOptions, local_worker_count, run_render
from synth.render_summary import MIXTURE_COUNTERS, RenderSummary, notes_of
from tests.pipeline_scripts import import_pipeline_script
from tests.synth.test_shards import FakeRemoteFileSystem

N, SHARD, SEED = 24, 8, 7
ONE_WORKER = ["--runner=FnApiRunner", "--direct_num_workers=1"]
REPO = Path(__file__).resolve().parents[2]


def _subset_manifest(corpus: Path, out: Path, n_events: int, n_bgs: int) -> Path:
    """Manifest of a corpus subset: every 4th event (up to n_events), the shortest backgrounds, 1 other."""
    rows = list(csv.DictReader(open(corpus / "metadata.csv", newline="")))
    kinds = {r["id"]: classify_kind(r) for r in rows}
    events = [r for r in rows if kinds[r["id"]] == "event"][::4][:n_events]
    by_len = sorted(rows, key=lambda r: float(r["duration_s"]))
    bgs = [r for r in by_len if kinds[r["id"]] == "background"][:n_bgs]
    other = [r for r in by_len if kinds[r["id"]] == "none"][:1]
    result = ingest_corpus(corpus, metadata=events + bgs + other, cfg=IngestConfig(measure_loudness=False))
    assert result.skipped == []
    return Path(write_manifest(result.table, out / "manifest.parquet"))


@pytest.fixture(scope="module")
def demo_manifest(demo_corpus, tmp_path_factory) -> Path:
    """18 events, the 3 shortest backgrounds and 1 other file of the in-repo demo corpus."""
    return _subset_manifest(demo_corpus, tmp_path_factory.mktemp("manifest"), 18, 3)


def _opts(out: Path | str, manifest: Path, **kw) -> RenderOptions:
    return RenderOptions(
        out=str(out), manifest=str(manifest), num_mixtures=N, shard_size=SHARD, seed=SEED, **kw
    )


@pytest.fixture(scope="module")
def clean_run(demo_manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    summary = run_render(_opts(out, demo_manifest), ONE_WORKER)
    return out, summary


def _without_code_version(obj):
    """index.json minus the git commit that wrote it (other commits land between the runs of a test)."""
    if isinstance(obj, dict):
        return {k: _without_code_version(v) for k, v in obj.items() if k != "code_version"}
    if isinstance(obj, list):
        return [_without_code_version(v) for v in obj]
    return obj


def _digests(out: Path) -> dict[str, str]:
    """sha256 of every shard, and of every index.json without its code_version fields."""
    found = {}
    for p in sorted(out.rglob("*")):
        if p.suffix == ".tar":
            found[str(p.relative_to(out))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.name == "index.json":
            canon = json.dumps(_without_code_version(json.loads(p.read_text())), sort_keys=True)
            found[str(p.relative_to(out))] = hashlib.sha256(canon.encode()).hexdigest()
    return found


def _n_audio_text_shards(out: Path) -> int:
    return json.loads((out / "audio_text" / "train" / "index.json").read_text())["num_shards"]


def _check_segments(segments: list, duration: float) -> None:
    assert segments, "an event label without segments"
    for a, b in segments:
        assert 0.0 <= a < b <= duration + 1e-9
    for (_, b0), (a1, _) in zip(segments, segments[1:], strict=False):
        assert b0 < a1, f"segments overlap or touch: {segments}"


def _read_mixtures(split_dir: Path) -> list[dict]:
    index = json.loads((split_dir / "index.json").read_text())
    urls = [str(split_dir / e["name"]) for e in index["shards"]]
    return list(wds.WebDataset(urls, shardshuffle=False))


def _check_mixture_shards(split_dir: Path, manifest: Path, n: int, seed: int) -> int:
    """Read the split back with WebDataset and check every record; returns the events placed."""
    rows = read_manifest(manifest).to_pylist()
    train_events = {r["id"] for r in rows if r["split"] == "train" and r["kind"] == "event"}
    captions = {r["id"]: set(r["captions"]) for r in rows}
    samples = _read_mixtures(split_dir)
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(n)]
    placed = 0
    for i, s in enumerate(samples):
        rec = json.loads(s["json"])
        assert set(rec) == {"key", "sample_rate", "duration", "events", "spec"}
        assert rec["key"] == s["__key__"] and rec["sample_rate"] == 48000 and rec["duration"] == 10.0
        assert rec["spec"]["index"] == i and rec["spec"]["seed"] == seed
        audio, sr = sf.read(io.BytesIO(s["flac"]), dtype="float32")
        assert sr == 48000 and audio.shape == (480000,) and float(abs(audio).max()) > 0
        texts = [e["text"] for e in rec["events"]]
        assert len(texts) == len(set(texts)), "one label per text"
        for e in rec["events"]:
            assert e["source_id"] in train_events and e["text"] in captions[e["source_id"]]
            assert isinstance(e["tags"], list)
            _check_segments(e["segments"], rec["duration"])
        placed += len(rec["spec"]["events"])
    return placed


def test_mixture_shards_read_back_with_webdataset(clean_run, demo_manifest):
    out, summary = clean_run
    split_dir = out / "mixtures" / "train"
    assert sorted(p.name for p in split_dir.glob("shard-*.tar")) == [shards.shard_name(k) for k in range(3)]
    placed = _check_mixture_shards(split_dir, demo_manifest, N, SEED)

    assert summary.mixtures_written == N and summary.mixture_shards_written == 3
    assert summary.mixture_shards_skipped == 0 and summary.events_placed == placed
    index = json.loads((split_dir / "index.json").read_text())
    assert index["num_samples"] == N and index["seed"] == SEED and index["split"] == "train"
    assert index["num_skipped"] == 0 and all(e["skipped_keys"] == [] for e in index["shards"])
    assert index["code_version"].startswith("flam-synth ")
    assert index["format_version"] == index["config"]["format_version"] == synth.records.RENDER_FORMAT_VERSION
    assert index["config"]["num_samples"] == N and index["config"]["shard_size"] == SHARD
    assert [s["count"] for s in index["shards"]] == [8, 8, 8]
    for entry in index["shards"]:
        data = (split_dir / entry["name"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    assert index["totals"]["events_placed"] == placed and index["totals"]["mixtures"] == N
    text = summary.format()
    assert f"mixtures written:       {N} of {N}" in text and "events dropped" in text


def test_notes_are_counted_by_reason(clean_run):
    """Spec notes, render notes and clip_scaled: per shard, in index.json totals and in the summary."""
    out, summary = clean_run
    split_dir = out / "mixtures" / "train"
    expected: Counter = Counter()
    for s in _read_mixtures(split_dir):
        expected.update(json.loads(s["json"])["spec"]["notes"])
    index = json.loads((split_dir / "index.json").read_text())
    totals = index["totals"]
    for reason, n in expected.items():
        assert totals[reason] == n, reason
    assert "clip_scaled" in totals
    per_shard: Counter = Counter()
    for e in index["shards"]:
        per_shard.update(e["stats"])
    assert dict(per_shard) == totals
    assert summary.mixture_notes == notes_of(totals, MIXTURE_COUNTERS)
    assert set(expected) <= set(summary.mixture_notes) or not expected
    text = summary.format()
    assert f"mixture notes (this run): {sum(summary.mixture_notes.values())}" in text
    for reason, n in summary.mixture_notes.items():
        assert f"  {reason}: {n}" in text


def test_summary_lists_every_reason():
    summary = RenderSummary(
        out="o",
        split="train",
        mixture_notes={"unplaced": 2, "clip_scaled": 1, "event_source_failed": 3},
        audio_text_notes={"clip_source_failed": 1},
        pool_skipped={"event_no_caption": 4},
        mixtures_skipped=5,
    )
    text = summary.format()
    for line in (
        "mixture notes (this run): 6",
        "  unplaced: 2",
        "  event_source_failed: 3",
        "audio-text notes (this run): 1",
        "  clip_source_failed: 1",
        "sources left out of the pool: 4",
        "  event_no_caption: 4",
        "mixtures skipped (background failed to load): 5",
    ):
        assert line in text, line


def test_end_to_end_dev_corpus_subset(dev_corpus, tmp_path):
    """The one run over real ../shared dev-corpus files (skipped without ../shared)."""
    manifest = _subset_manifest(dev_corpus, tmp_path, 10, 2)
    out = tmp_path / "out"
    summary = run_render(
        RenderOptions(out=str(out), manifest=str(manifest), num_mixtures=8, shard_size=4, seed=SEED),
        ONE_WORKER,
    )
    assert summary.mixtures_written == 8 and summary.mixture_shards_written == 2
    assert summary.events_placed == _check_mixture_shards(out / "mixtures" / "train", manifest, 8, SEED)
    at_urls = sorted(str(p) for p in (out / "audio_text" / "train").glob("*.tar"))
    clips = list(wds.WebDataset(at_urls, shardshuffle=False))
    assert len(clips) == summary.audio_text_written > 0


def test_audio_text_shards(clean_run, demo_manifest):
    out, summary = clean_run
    rows = read_manifest(demo_manifest).to_pylist()
    expected = sorted(r["id"] for r in rows if r["split"] == "train" and r["captions"])
    split_dir = out / "audio_text" / "train"
    index = json.loads((split_dir / "index.json").read_text())
    urls = [str(split_dir / e["name"]) for e in index["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert [json.loads(s["json"])["source_id"] for s in samples] == expected
    by_id = {r["id"]: r for r in rows}
    for s in samples:
        rec = json.loads(s["json"])
        row = by_id[rec["source_id"]]
        assert rec["text"] == row["captions"] and rec["tag"] == row["tags"]
        audio, sr = sf.read(io.BytesIO(s["flac"]), dtype="float32")
        assert sr == 48000 and audio.shape == (480000,)
        valid = int(round(rec["valid_duration"] * sr))
        assert (
            valid == min(480000, int(round(row["duration_s"] * sr)))
            or abs(valid - row["duration_s"] * sr) < 50
        )
        if valid < 480000:
            assert not audio[valid + 1 :].any(), "short clips are zero padded at the end"
        assert 0 <= rec["offset"] <= max(0.0, row["duration_s"] - 10.0) + 1e-6
    assert summary.audio_text_written == len(expected) == index["num_samples"]


def test_byte_identical_across_worker_counts(clean_run, demo_manifest, tmp_path):
    out, _ = clean_run
    args = ["--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_threading"]
    summary = run_render(_opts(tmp_path, demo_manifest), args)
    assert summary.mixture_shards_written == 3
    assert _digests(tmp_path) == _digests(out)
    n_at = json.loads((out / "audio_text" / "train" / "index.json").read_text())["num_shards"]
    assert len(_digests(out)) == 3 + n_at + 2  # mixture + audio-text shards and the two index.json files


def test_resume_redoes_only_damaged_shards(clean_run, demo_manifest, tmp_path):
    out, _ = clean_run
    shutil.copytree(out, tmp_path, dirs_exist_ok=True)
    mix = tmp_path / "mixtures" / "train"
    (mix / "shard-000001.tar").unlink()  # killed before the rename
    with open(mix / "shard-000002.tar", "r+b") as f:  # damaged after the fact: size no longer matches
        f.truncate(10240)
    (mix / ".shard-000001.tar.tmp-0123456789ab").write_bytes(b"half a shard")  # stale temp file
    (mix / "index.json").unlink()
    summary = run_render(_opts(tmp_path, demo_manifest), ONE_WORKER)
    assert (summary.mixture_shards_skipped, summary.mixture_shards_written) == (1, 2)
    assert summary.mixtures_written == 16 and summary.audio_text_shards_written == 0
    assert summary.audio_text_shards_skipped == _n_audio_text_shards(out)
    assert "2 shards written, 1 already complete" in summary.format()
    assert _digests(tmp_path) == _digests(out)
    assert not [p for p in mix.iterdir() if p.name.startswith(".")]

    again = run_render(_opts(tmp_path, demo_manifest), ONE_WORKER)  # nothing left to do: no Beam job
    assert again.mixture_shards_written == 0 and again.mixture_shards_skipped == 3
    assert _digests(tmp_path) == _digests(out)


def test_resume_verifies_the_sha256_of_complete_shards(clean_run, demo_manifest, tmp_path, caplog):
    """A shard damaged without changing its size (one byte flipped in the middle of a FLAC) is not taken as
    complete: its sha256 no longer matches the sidecar, so it is rendered again, byte-identical."""
    out, _ = clean_run
    shutil.copytree(out, tmp_path, dirs_exist_ok=True)
    mix = tmp_path / "mixtures" / "train"
    tar = mix / "shard-000001.tar"
    size = tar.stat().st_size
    with open(tar, "r+b") as f:
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert tar.stat().st_size == size
    (mix / "index.json").unlink()
    with caplog.at_level("WARNING"):
        summary = run_render(_opts(tmp_path, demo_manifest), ONE_WORKER)
    assert (summary.mixture_shards_skipped, summary.mixture_shards_written) == (2, 1)
    assert "shard-000001.tar: sha256 differs from its sidecar" in caplog.text
    assert _digests(tmp_path) == _digests(out)


def test_rerun_with_other_arguments_is_a_clear_error(clean_run, demo_manifest, tmp_path):
    out, _ = clean_run
    shutil.copytree(out, tmp_path, dirs_exist_ok=True)
    before = _digests(tmp_path)
    with pytest.raises(shards.ShardConfigError, match=r"seed: 7 -> 8"):
        run_render(RenderOptions(**{**_opts(tmp_path, demo_manifest).__dict__, "seed": 8}), ONE_WORKER)
    with pytest.raises(shards.ShardConfigError, match=r"num_samples: 24 -> 25"):
        run_render(
            RenderOptions(**{**_opts(tmp_path, demo_manifest).__dict__, "num_mixtures": 25}), ONE_WORKER
        )
    assert _digests(tmp_path) == before


def test_other_format_version_is_refused(clean_run, demo_manifest, tmp_path, monkeypatch):
    """Shards from another RENDER_FORMAT_VERSION are never mixed with new ones: the re-run is refused."""
    out, _ = clean_run
    shutil.copytree(out, tmp_path, dirs_exist_ok=True)
    before = _digests(tmp_path)
    old = synth.records.RENDER_FORMAT_VERSION
    monkeypatch.setattr(synth.records, "RENDER_FORMAT_VERSION", old + 1)
    with pytest.raises(shards.ShardConfigError, match=rf"differs in: format_version: {old} -> {old + 1}"):
        run_render(_opts(tmp_path, demo_manifest), ONE_WORKER)
    assert _digests(tmp_path) == before


def test_shards_from_another_commit_are_kept_with_a_warning(clean_run, demo_manifest, tmp_path, caplog):
    out, _ = clean_run
    shutil.copytree(out, tmp_path, dirs_exist_ok=True)
    side = tmp_path / "mixtures" / "train" / shards.sidecar_name(1)
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "code_version": "flam-synth 0.0.1 (git 0ld0ld0)"}))
    with caplog.at_level(logging.WARNING, logger="synth"):
        again = run_render(_opts(tmp_path, demo_manifest), ONE_WORKER)  # nothing to do: no Beam job
    assert again.mixture_shards_skipped == 3 and again.mixture_shards_written == 0
    assert "1 complete shards were written by another code version (flam-synth 0.0.1 (git 0ld0ld0) x1" in (
        caplog.text
    )
    assert _digests(tmp_path) == _digests(out)


def test_local_worker_count():
    assert local_worker_count(999, 8, cores=4) == 1  # small jobs: no worker processes to start
    assert local_worker_count(1000, 8, cores=4) == 4
    assert local_worker_count(5000, 2, cores=4) == 2  # never more workers than shards


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="exactly one"):
        RenderOptions(out="x")
    with pytest.raises(ValueError, match="train or heldout"):
        RenderOptions(out="x", manifest="m", split="test")


def _cli(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "pipelines" / "render_mixtures.py"), *args]


def test_cli_defaults_to_the_demo_corpus(demo_corpus, tmp_path, caplog):
    """No source flag: ingests corpus/demo; prints the summary; Beam flags pass through."""
    out = tmp_path / "data"
    args = ["--out", str(out), "--num-mixtures", "4", "--shard-size", "2", "--no-audio-text"]
    res = subprocess.run(
        _cli(*args, "--no-measure-loudness"),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (
        "render_mixtures summary (train, runner FnApiRunner, 1 worker," in res.stdout
    )  # small job: in-process
    assert "mixtures written:       4 of 4 (2 shards written, 0 already complete" in res.stdout
    assert "files skipped (ingest): 0" in res.stdout
    assert sorted(p.name for p in (out / "mixtures" / "train").glob("*.tar")) == [
        "shard-000000.tar",
        "shard-000001.tar",
    ]
    assert (out / "manifest.parquet").is_file()
    assert (
        read_manifest(out / "manifest.parquet").num_rows
        == sum(1 for _ in open(demo_corpus / "metadata.csv")) - 1
    )

    # same folder, other seed: refused with exit status 2 and a message naming the difference
    render_mixtures = _import_cli()
    with caplog.at_level("ERROR"):
        assert render_mixtures.main([*args, "--seed", "1", "--direct_num_workers=1"]) == 2
    assert "seed: 0 -> 1" in caplog.text


def _import_cli():
    return import_pipeline_script("render_mixtures")


def test_cli_bad_input_exits_2_with_a_message(tmp_path, caplog):
    render_mixtures = _import_cli()
    with caplog.at_level("ERROR"):
        code = render_mixtures.main(["--manifest", str(tmp_path / "nope.parquet"), "--out", str(tmp_path)])
    assert code == 2 and "manifest not found" in caplog.text
    with pytest.raises(SystemExit):
        render_mixtures.parse_args(["--split", "test"])


def test_cli_parses_defaults():
    render_mixtures = _import_cli()
    opts, beam_args = render_mixtures.parse_args([])
    assert opts.corpus == str(render_mixtures.DEMO_CORPUS) and opts.manifest is None
    assert (opts.out, opts.split, opts.seed, opts.audio_text) == ("data", "train", 0, True)
    assert beam_args == []
    opts, beam_args = render_mixtures.parse_args(
        ["--manifest", "m.parquet", "--runner=DataflowRunner", "--project=p"]
    )
    assert opts.manifest == "m.parquet" and opts.corpus is None
    assert beam_args == ["--runner=DataflowRunner", "--project=p"]


@pytest.mark.slow
def test_killed_run_resumes_to_identical_bytes(clean_run, demo_manifest, tmp_path):
    """A real kill (SIGKILL) after the first mixture shard appears; re-running completes it byte for byte."""
    out, _ = clean_run
    args = ["--manifest", str(demo_manifest), "--out", str(tmp_path), "--num-mixtures", str(N)]
    args += ["--shard-size", str(SHARD), "--seed", str(SEED), *ONE_WORKER]
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mix = tmp_path / "mixtures" / "train"
    deadline = time.monotonic() + 240
    while not list(mix.glob("shard-*.tar")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = sorted(p.name for p in mix.glob("shard-*.tar"))
    assert 1 <= len(done_at_kill) < 3, f"kill came too late or too early: {done_at_kill}"
    assert not (mix / "index.json").exists()
    summary = run_render(_opts(tmp_path, demo_manifest), ONE_WORKER)
    assert summary.mixture_shards_skipped == len(done_at_kill)
    assert _digests(tmp_path) == _digests(out)


def test_ingest_skips_are_counted_and_reported(demo_corpus, tmp_path):
    """--corpus with an undecodable, a missing, a truncated, an anti-phase stereo and a 1-sample file: each
    skipped or noted with its reason, the rest renders, and the summary says so."""
    import numpy as np

    corpus = tmp_path / "corpus"
    rows = list(csv.DictReader(open(demo_corpus / "metadata.csv", newline="")))
    kinds = {r["id"]: classify_kind(r) for r in rows}
    keep = [r for r in rows if kinds[r["id"]] == "event"][:8]
    keep += [r for r in rows if kinds[r["id"]] == "background"][:2]
    for r in keep:
        (corpus / r["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(demo_corpus / r["path"], corpus / r["path"])
    audio = corpus / "audio"
    (audio / "broken.wav").write_bytes(b"RIFF not really a wave file")
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(24000) / 48000)
    sf.write(audio / "whole.wav", tone, 48000, subtype="PCM_16")
    (audio / "cut.wav").write_bytes((audio / "whole.wav").read_bytes()[:30000])  # header says 48 044 bytes
    sf.write(audio / "anti.wav", np.stack([tone, -tone], axis=1), 48000, subtype="PCM_16")
    sf.write(audio / "one.wav", np.array([0.5]), 48000, subtype="PCM_16")
    extra = [
        {**keep[0], "id": f"x/{name}", "path": f"audio/{name}.wav", "filename": f"{name}.wav"}
        for name in ("broken", "missing", "cut", "anti", "one")
    ]
    with open(corpus / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep + extra)
    out = tmp_path / "out"
    opts = RenderOptions(out=str(out), corpus=str(corpus), num_mixtures=2, shard_size=2, audio_text=False)
    summary = run_render(opts, ONE_WORKER)
    assert summary.files_skipped == {"decode_error": 1, "missing_file": 1, "truncated": 1}
    assert summary.ingest_notes == {"downmix_channel_fallback": 1}
    text = summary.format()
    assert "files skipped (ingest): 3" in text and "decode_error: 1" in text and "missing_file: 1" in text
    assert "truncated: 1" in text and "cut.wav" in text and "downmix_channel_fallback: 1" in text
    assert "broken.wav" in text and "missing.wav" in text
    assert summary.mixtures_written == 2 and not (out / "audio_text").exists()
    manifest = read_manifest(out / "manifest.parquet").to_pylist()
    assert len(manifest) == len(keep) + 2  # anti.wav and one.wav are decodable files
    anti = next(r for r in manifest if r["id"] == "x/anti")
    assert anti["loudness_db"] is not None  # one channel, not the silence of the mean
    one = next(r for r in manifest if r["id"] == "x/one")
    assert (one["split"], one["kind"]) == ("train", "event")  # its id hashes to 0.38: never held out
    assert summary.pool_skipped.get("event_too_short") == 1
    assert "event modes (realised): split" in text


def test_heldout_counts_from_the_command_line(demo_corpus, tmp_path, caplog):
    """--heldout-events / --heldout-backgrounds: a count holds out exactly that many, a fraction a share."""
    render_mixtures = _import_cli()
    out = tmp_path / "data"
    base = ["--out", str(out), "--num-mixtures", "0", "--no-audio-text", "--no-measure-loudness"]
    assert render_mixtures.main([*base, "--heldout-events", "5", "--heldout-backgrounds", "1"]) == 0
    rows = read_manifest(out / "manifest.parquet").to_pylist()
    held = Counter(r["kind"] for r in rows if r["split"] == "heldout")
    assert held["event"] == 5 and held["background"] == 1 and held["none"] == 0
    opts, _ = render_mixtures.parse_args(["--heldout-events", "0.25", "--heldout-backgrounds", "5000"])
    assert (opts.heldout_events, opts.heldout_backgrounds) == (0.25, 5000)
    assert opts.split_config().heldout_events == 0.25
    for bad in (["--heldout-events", "1.5"], ["--heldout-events", "ten"], ["--heldout-backgrounds", "-1"]):
        with pytest.raises(SystemExit) as ei:
            render_mixtures.parse_args(bad)
        assert ei.value.code == 2
    with pytest.raises(SystemExit):
        render_mixtures.parse_args(["--manifest", "m.parquet", "--heldout-events", "10"])


@pytest.mark.slow
def test_byte_identical_with_worker_processes(clean_run, demo_manifest, tmp_path):
    """Two SDK worker processes (the local default on multi-core machines) give the same shards."""
    out, _ = clean_run
    args = ["--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    summary = run_render(_opts(tmp_path, demo_manifest), args)
    assert summary.mixture_shards_written == 3
    assert _digests(tmp_path) == _digests(out)


def test_sources_failing_on_the_worker_are_counted_skips(clean_run, demo_manifest, tmp_path, caplog):
    """A source that passed ingest but cannot be decoded on the worker: its events are left out, mixtures
    with it as background are skipped (key absent, listed in index.json), every other mixture is
    byte-identical to a clean run's; all counted by reason and logged with the source id."""
    out, _ = clean_run
    clean = {s["__key__"]: s for s in _read_mixtures(out / "mixtures" / "train")}
    specs = {k: json.loads(s["json"])["spec"] for k, s in clean.items()}
    bg_use = Counter(sp["background"]["id"] for sp in specs.values())
    bad_bg = min(bg_use, key=lambda b: (bg_use[b], b))  # used by some mixtures, not all
    assert 0 < bg_use[bad_bg] < N
    ev_use = Counter(
        e["id"] for sp in specs.values() if sp["background"]["id"] != bad_bg for e in sp["events"]
    )
    bad_ev = max(sorted(ev_use), key=lambda e: ev_use[e])
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not audio at all")
    rows = [
        {**r, "path": str(garbage)} if r["id"] in (bad_bg, bad_ev) else r
        for r in read_manifest(demo_manifest).to_pylist()
    ]
    manifest = write_manifest(rows, tmp_path / "bad.parquet")
    with caplog.at_level(logging.WARNING, logger="synth"):
        summary = run_render(_opts(tmp_path / "out", manifest), ONE_WORKER)

    skipped = sorted(k for k, sp in specs.items() if sp["background"]["id"] == bad_bg)
    hit = {k: sum(e["id"] == bad_ev for e in sp["events"]) for k, sp in specs.items() if k not in skipped}
    split_dir = tmp_path / "out" / "mixtures" / "train"
    got = {s["__key__"]: s for s in _read_mixtures(split_dir)}
    assert sorted(got) == sorted(set(clean) - set(skipped))
    assert 0 < sum(1 for k in got if not hit[k]) < len(got)  # some untouched, some with a left-out event
    for key, sample in got.items():
        if hit[key]:
            spec = json.loads(sample["json"])["spec"]
            assert spec["notes"]["event_source_failed"] == hit[key]
            assert [e for e in specs[key]["events"] if e["id"] != bad_ev] == spec["events"]
        else:
            assert (sample["flac"], sample["json"]) == (clean[key]["flac"], clean[key]["json"]), key
    index = json.loads((split_dir / "index.json").read_text())
    assert sorted(k for e in index["shards"] for k in e["skipped_keys"]) == skipped
    assert index["num_skipped"] == len(skipped) and index["num_samples"] == N - len(skipped)
    assert index["totals"]["mixture_skipped_background_failed"] == len(skipped)
    assert index["totals"]["event_source_failed"] == sum(hit.values()) > 0
    assert summary.mixtures_skipped == len(skipped) and summary.mixtures_written == N - len(skipped)
    assert summary.mixture_notes["event_source_failed"] == sum(hit.values())
    assert summary.audio_text_notes["clip_source_failed"] == 2  # the two clips of the broken files
    text = summary.format()
    assert f"mixtures skipped (background failed to load): {len(skipped)}" in text
    assert f"  event_source_failed: {sum(hit.values())}" in text
    assert bad_bg in caplog.text and bad_ev in caplog.text and "garbage.wav" in caplog.text

    again = run_render(_opts(tmp_path / "out", manifest), ONE_WORKER)  # complete = written + skipped
    assert again.mixture_shards_skipped == 3 and again.mixture_shards_written == 0


def test_pool_skips_are_reported(demo_manifest, tmp_path):
    """Split rows the source pool cannot use (no caption, short background) are counted, not dropped."""
    rows = read_manifest(demo_manifest).to_pylist()
    ev = next(r for r in rows if r["kind"] == "event" and r["split"] == "train")
    bg = next(r for r in rows if r["kind"] == "background" and r["split"] == "train")
    rows += [
        {**ev, "id": "x/uncaptioned", "captions": []},
        {**bg, "id": "x/short-bg", "duration_s": 4.0},
    ]
    manifest = write_manifest(rows, tmp_path / "m.parquet")
    opts = RenderOptions(
        out=str(tmp_path / "out"), manifest=manifest, num_mixtures=2, shard_size=2, audio_text=False
    )
    summary = run_render(opts, ONE_WORKER)
    assert summary.pool_skipped == {"background_too_short": 1, "event_no_caption": 1}
    assert "sources left out of the pool: 2" in summary.format()
    index = json.loads((tmp_path / "out" / "mixtures" / "train" / "index.json").read_text())
    assert index["pool_skipped"] == summary.pool_skipped


def test_output_to_a_uri(clean_run, demo_manifest, tmp_path, monkeypatch):
    """--out as a URI (Beam FileSystems, like gs://): same shards, same index, resumable."""
    out, _ = clean_run
    monkeypatch.setattr(FakeRemoteFileSystem, "root", str(tmp_path))
    fakefs = tmp_path
    summary = run_render(_opts("fakefs://flam/data", demo_manifest), ONE_WORKER)
    assert summary.mixture_shards_written == 3
    assert _digests(fakefs / "flam" / "data") == _digests(out)
    again = run_render(_opts("fakefs://flam/data", demo_manifest), ONE_WORKER)
    assert again.mixture_shards_skipped == 3 and again.audio_text_shards_skipped == _n_audio_text_shards(out)
