"""pipelines/caption.py as a hostile user meets it: invalid arguments, outputs that cannot be written, an LLM
server that fails most requests, and audio the renderer would refuse. Real file systems, a real HTTP server
(captioning.testing.fake_server on 127.0.0.1), real recordings (the shared dev corpus, else corpus/demo)."""

import contextlib
import csv
import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from captioning.testing.fake_server import FakeChatServer
from synth.manifest import read_manifest
from tests.pipeline_scripts import import_pipeline_script

BEAM = ["--runner=FnApiRunner", "--direct_num_workers=1"]


@pytest.fixture(scope="module")
def caption_cli():
    return import_pipeline_script("caption")


def _subset(sound_corpus, tmp_path, n, max_s=3.0):
    """A metadata CSV of the first n files of at most max_s seconds (ingest decodes every file whole)."""
    with open(sound_corpus / "metadata.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        short = (r for r in reader if float(r.get("duration_s") or 0) <= max_s)
        rows = [r for _, r in zip(range(n), short, strict=False)]
        fields = reader.fieldnames
    assert len(rows) == n, f"fewer than {n} files of <= {max_s} s in {sound_corpus}"
    path = tmp_path / "subset.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path, rows


def _one_error_line(capsys_or_fd):
    err = capsys_or_fd.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ---- arguments: checked up front, exit 2 with one line


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--timeout-s", "-1"], "--timeout-s must be a finite number > 0"),
        (["--timeout-s", "nan"], "--timeout-s must be a finite number > 0"),
        (["--endpoint", "notaurl"], "--endpoint must be an http(s) URL"),
        (["--endpoint", "http://127.0.0.1:99999/v1"], "--endpoint must be an http(s) URL"),
        (["--temperature", "-7"], "--temperature must be a number in [0, 2]"),
        (["--model", ""], "--model must be a non-empty"),
        (["--captions-per-file", "0"], "--captions-per-file must be an integer >= 1"),
        (["--max-attempts", "0"], "--max-attempts must be an integer >= 1"),
        (["--max-concurrency", "0"], "--max-concurrency must be an integer >= 1"),
        (["--cache-flush-every", "0"], "--cache-flush-every must be >= 1"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--max-fallback-share", "1.5"], "--max-fallback-share must be a share in [0, 1]"),
        (["--max-fallback-share", "nan"], "--max-fallback-share must be a share in [0, 1]"),
        (["--api-key-env", " , "], "--api-key-env must name at least one"),
        (["--log-level", "LOUD"], "--log-level must be a logging level"),
        (["--timeout-s", "soon"], "invalid float value"),
    ],
)
def test_invalid_arguments_exit_2_with_one_line(caption_cli, tmp_path, capsys, flags, message):
    out = tmp_path / "out" / "manifest.parquet"
    args = ["--corpus", str(tmp_path), "--out", str(out), "--captioner", "vllm", *flags]
    with pytest.raises(SystemExit) as exc:
        caption_cli.main(args + BEAM)
    assert exc.value.code == 2
    line = _one_error_line(capsys)
    assert message in line and "Traceback" not in line
    assert not out.parent.exists()  # nothing was started


def test_the_command_itself_prints_one_line(repo_root, tmp_path):
    """As a user runs it (a fresh process: nothing imported yet may log to stderr either)."""
    folder = tmp_path / "manifest.parquet"
    folder.mkdir()
    script = str(repo_root / "pipelines" / "caption.py")
    for flags, message in (
        (
            ["--out", str(tmp_path / "o.parquet"), "--endpoint", "notaurl"],
            "--endpoint must be an http(s) URL",
        ),
        (["--out", str(folder)], "is a folder"),
    ):
        proc = subprocess.run(
            [sys.executable, script, "--corpus", str(tmp_path), *flags], capture_output=True, text=True, timeout=120
        )  # fmt: skip
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0].startswith("caption: error: ") and message in lines[0]


# ---- output and cache locations: checked before any work


def _run_to_location_error(caption_cli, sound_corpus, tmp_path, capsys, out, extra=()):
    meta, _ = _subset(sound_corpus, tmp_path, 4)
    with FakeChatServer() as srv:
        args = ["--corpus", str(sound_corpus), "--metadata", str(meta), "--out", str(out), "--captioner",
                "vllm", "--endpoint", srv.base_url, "--model", "m", *extra]  # fmt: skip
        code = caption_cli.main(args + BEAM)
    assert code == 2 and srv.log.requests == []  # no request was sent: the check came first
    return _one_error_line(capsys)


def test_out_is_a_folder(caption_cli, sound_corpus, tmp_path, capsys):
    out = tmp_path / "manifest.parquet"
    out.mkdir()
    line = _run_to_location_error(caption_cli, sound_corpus, tmp_path, capsys, out)
    assert line.startswith("caption: error: --out") and "is a folder" in line


def test_out_under_a_regular_file(caption_cli, sound_corpus, tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder\n")
    out = blocker / "sub" / "manifest.parquet"
    line = _run_to_location_error(caption_cli, sound_corpus, tmp_path, capsys, out)
    assert "--out" in line and f"lies under {blocker}, which is a file" in line


def test_summary_path_is_a_folder(caption_cli, sound_corpus, tmp_path, capsys):
    out = tmp_path / "o" / "manifest.parquet"
    (tmp_path / "o" / "manifest.summary.json").mkdir(parents=True)
    line = _run_to_location_error(caption_cli, sound_corpus, tmp_path, capsys, out)
    assert "manifest.summary.json is a folder" in line


def test_cache_is_a_file(caption_cli, sound_corpus, tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.write_text("not a folder\n")
    out = tmp_path / "o" / "manifest.parquet"
    line = _run_to_location_error(caption_cli, sound_corpus, tmp_path, capsys, out, ["--cache", str(cache)])
    assert line.startswith("caption: error: --cache") and "is a file, not a folder" in line


def test_existing_read_only_out_file(caption_cli, sound_corpus, tmp_path, capsys):
    out = tmp_path / "manifest.parquet"
    out.write_bytes(b"an earlier manifest")
    out.chmod(stat.S_IRUSR)
    if os.access(out, os.W_OK):
        pytest.skip("running as a user (root) for whom a read-only file is writable")
    line = _run_to_location_error(caption_cli, sound_corpus, tmp_path, capsys, out)
    assert "--out" in line and "the existing file is read-only" in line


@contextlib.contextmanager
def _read_only_folder(path):
    """A folder no file can be created in: mode 0o500 for an ordinary user; for root (who ignores mode bits)
    a read-only tmpfs mounted there when this machine allows it; else a skip."""
    path.mkdir()
    path.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        (path / "probe").write_text("x")
    except PermissionError:
        try:
            yield path
        finally:
            path.chmod(stat.S_IRWXU)
        return
    (path / "probe").unlink()
    path.chmod(stat.S_IRWXU)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True, check=False
    ) if shutil.which("mount") else None  # fmt: skip
    if mount is None or mount.returncode != 0:
        pytest.skip(
            "running as root (a read-only folder is writable) and a read-only tmpfs cannot be mounted"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("which", ["out", "cache"])
def test_read_only_folder(caption_cli, sound_corpus, tmp_path, capsys, which):
    with _read_only_folder(tmp_path / "ro") as ro:
        if which == "out":
            out, extra = ro / "manifest.parquet", []
        else:
            out, extra = tmp_path / "o" / "manifest.parquet", ["--cache", str(ro / "cache")]
        line = _run_to_location_error(caption_cli, sound_corpus, tmp_path, capsys, out, extra)
    assert f"--{which}" in line and ("cannot create folder" in line or "cannot write in folder" in line)
    assert "Permission denied" in line or "Read-only file system" in line


# ---- most requests failing: every output written, exit 1, a re-run finishes from the cache


def test_fallback_share_over_the_limit_exits_1_after_writing_and_a_rerun_finishes(
    caption_cli, sound_corpus, tmp_path, capfd
):
    meta, rows = _subset(sound_corpus, tmp_path, 12)
    names = [r["filename"] for r in rows]
    down = names[:7]  # 7 of 12 files: the server fails every attempt (a share of 58 % > 50 %)
    script = {n: ["503", "503"] for n in down}
    script[names[7]] = ["html", "ok"]  # one bad reply, then a good one
    script[names[8]] = ["deep_caption", "deep_caption"]  # a bad answer: a cached fallback
    script[names[9]] = ["deep_body", "ok"]  # more bad replies, each followed by a good one
    script[names[10]] = ["control", "ok"]
    script[names[11]] = ["injection", "ok"]
    out = tmp_path / "out" / "manifest.parquet"
    with FakeChatServer(script=script) as srv:
        args = ["--corpus", str(sound_corpus), "--metadata", str(meta), "--out", str(out), "--captioner", "vllm",
                "--endpoint", srv.base_url, "--model", "m", "--max-attempts", "2", "--timeout-s", "10"]  # fmt: skip
        assert caption_cli.main(args + BEAM) == 1
        line = capfd.readouterr().err.strip().splitlines()[-1]
        assert line.startswith("caption: error: 8 of 12 files (67%) got fallback captions")
        assert "--max-fallback-share 0.5" in line and "http_503 7" in line and "malformed_json 1" in line
        # what it has is written: every file, the fallbacks labelled
        got = {r["filename"]: r for r in read_manifest(out).to_pylist()}
        assert len(got) == 12 and all(r["captions"] for r in got.values())
        assert sorted(n for n, r in got.items() if r["caption_source"] == "fallback") == sorted(
            [*down, names[8]]
        )
        s = json.loads(out.with_name("manifest.summary.json").read_text())
        assert s["fallback_share"] == pytest.approx(8 / 12) and s["max_fallback_share"] == 0.5
        assert s["counts"]["failed_malformed_reply"] == 2 and s["counts"]["failed_unsafe_reply"] == 2
        assert s["counts"]["failed_malformed_json"] == 2 and s["counts"]["failed_http_503"] == 14

        # the server is healthy again (its script is used up): the re-run asks only the 7 failed files
        before = len(srv.log.requests)
        assert caption_cli.main(args + BEAM) == 0
        asked = [r["file"] for r in srv.log.requests[before:]]
        assert sorted(asked) == sorted(down)
        again = {r["filename"]: r for r in read_manifest(out).to_pylist()}
        assert [n for n, r in again.items() if r["caption_source"] == "fallback"] == [names[8]]
        c = json.loads(out.with_name("manifest.summary.json").read_text())["counts"]
        assert c["files_cache"] == 4 and c["files_llm"] == 7 and c["files_cache_fallback"] == 1

    # the limit is a flag (0: any fallback fails the run; 1: never), applied to the summary just written
    summary = json.loads(out.with_name("manifest.summary.json").read_text())
    for share, fails in (("0", True), ("0.05", True), ("0.1", False), ("1", False)):
        job = caption_cli.parse_args(args + ["--max-fallback-share", share] + BEAM)
        assert (caption_cli.too_many_fallbacks(job, summary) is not None) is fails, share


# ---- one decode check: caption.py refuses exactly the files the renderer's ingest refuses


def test_caption_and_renderer_ingest_refuse_the_same_files(caption_cli, sound_corpus, tmp_path):
    """NaN / inf samples in the middle of a file (head and tail are fine) are refused by both."""
    from synth.render_job import RenderOptions, load_sources

    with open(sound_corpus / "metadata.csv", newline="") as fh:
        src = next(
            r for r in csv.DictReader(fh) if r["path"].endswith(".wav") and float(r["duration_s"]) > 0.5
        )
    x, sr = sf.read(sound_corpus / src["path"], dtype="float32", always_2d=True)
    corpus = tmp_path / "corpus"
    (corpus / "audio").mkdir(parents=True)
    variants = {"good": None, "nan_mid": np.nan, "inf_mid": np.inf}
    for name, bad in variants.items():
        y = x.copy()
        if bad is not None:
            y[len(y) // 2, 0] = bad
        sf.write(corpus / "audio" / f"{name}.wav", y, sr, subtype="FLOAT")
    with open(corpus / "metadata.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "filename", "tags", "description"])
        w.writeheader()
        for name in variants:
            w.writerow({"path": f"audio/{name}.wav", "filename": f"{name}.wav", "tags": "test",
                        "description": src["description"]})  # fmt: skip
    out = tmp_path / "out" / "manifest.parquet"
    assert caption_cli.main(["--corpus", str(corpus), "--out", str(out)] + BEAM) == 0
    kept = [r["filename"] for r in read_manifest(out).to_pylist()]
    skipped = [json.loads(x) for x in out.with_name("manifest.skipped.jsonl").read_text().splitlines()]
    assert kept == ["good.wav"]
    assert sorted((os.path.basename(s["path"]), s["reason"]) for s in skipped) == [
        ("inf_mid.wav", "decode_error"),
        ("nan_mid.wav", "decode_error"),
    ]
    table, skips = load_sources(RenderOptions(out=str(tmp_path / "r"), corpus=str(corpus)))[:2]
    assert table.column("filename").to_pylist() == kept and skips == {"decode_error": 2}
