"""render_mixtures under hostile use: bad arguments, unusable or full output folders, damaged shards, audio
above full scale. Each case ends in a clear message and an exit status that says what happened, with nothing
lost: what was written before a fault is kept, and a re-run finishes the rest byte for byte.

Real file systems throughout: a file where a folder should be, a process file-size limit (RLIMIT_FSIZE, real
EFBIG writes), and - where the machine lets an unprivileged user namespace mount one - a read-only and a
small full tmpfs (real EROFS / ENOSPC); otherwise those tests skip and say why.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from synth.render_job import RenderOptions, run_render
from synth.render_summary import RenderSummary
from synth.spec import MixtureConfig
from tests.pipeline_scripts import import_pipeline_script
from tests.synth.test_render_pipeline import _digests, _subset_manifest

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, str(REPO / "pipelines" / "render_mixtures.py")]
ONE_WORKER = ["--runner=FnApiRunner", "--direct_num_workers=1"]
N, SHARD, SEED = 12, 4, 3


@pytest.fixture(scope="module")
def manifest(demo_corpus, tmp_path_factory) -> Path:
    return _subset_manifest(demo_corpus, tmp_path_factory.mktemp("manifest"), 10, 2)


def _args(manifest: Path, out: Path) -> list[str]:
    return [
        "--manifest",
        str(manifest),
        "--out",
        str(out),
        "--num-mixtures",
        str(N),
        "--shard-size",
        str(SHARD),
    ]


@pytest.fixture(scope="module")
def clean(manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean")
    opts = RenderOptions(out=str(out), manifest=str(manifest), num_mixtures=N, shard_size=SHARD, seed=0)
    run_render(opts, ONE_WORKER)
    return out


def _run_cli(args: list[str], preexec=None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [*CLI, *args, *ONE_WORKER],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        preexec_fn=preexec,
    )


def _no_partial_files(out: Path) -> None:
    """Every tar left has its sidecar, with the tar's sha256; no temporary files anywhere."""
    import hashlib

    for split_dir in (out / "mixtures" / "train", out / "audio_text" / "train"):
        if not split_dir.exists():
            continue
        assert not [p.name for p in split_dir.iterdir() if p.name.startswith(".")], "temporary files left"
        for tar in split_dir.glob("shard-*.tar"):
            meta = json.loads(tar.with_suffix(".json").read_text())
            assert meta["sha256"] == hashlib.sha256(tar.read_bytes()).hexdigest(), f"partial shard {tar}"


# ---------------------------------------------------------------- arguments (issue 10, item 11)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--num-mixtures", str(10**12)], "above 999,999,999"),
        (["--num-mixtures", str(10**8), "--shard-size", "1"], "more than 1,000,000 shards"),
        (["--shard_size", "2"], "unrecognized arguments: --shard_size 2"),
        (["--num_mixtures=3"], "unrecognized arguments: --num_mixtures=3"),
        (["--audio-text-shard-size", "0"], "--audio-text-shard-size must be >= 1"),
        (["--ingest-workers", "0"], "--ingest-workers must be >= 1"),
        (["extra"], "unexpected argument 'extra'"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(argv, message, capsys):
    cli = import_pipeline_script("render_mixtures")
    with pytest.raises(SystemExit) as ei:
        cli.parse_args(argv)
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_beam_options_still_pass_through_and_our_flags_reach_the_options():
    cli = import_pipeline_script("render_mixtures")
    opts, _ = cli.parse_args(["--allow-outside-corpus", "--no-verify-shards"])
    assert opts.allow_outside_corpus and not opts.verify_shards
    opts, _ = cli.parse_args([])
    assert not opts.allow_outside_corpus and opts.verify_shards
    _, beam = cli.parse_args(
        ["--runner=DataflowRunner", "--project=p", "--region", "r", "--no_workspace_wheels"]
    )
    assert beam == ["--runner=DataflowRunner", "--project=p", "--region", "r", "--no_workspace_wheels"]


# ---------------------------------------------------------------- --out (item 9)


def test_out_that_is_a_file_or_under_a_file_is_refused_before_ingest(demo_corpus, tmp_path, caplog):
    cli = import_pipeline_script("render_mixtures")
    a_file = tmp_path / "data.txt"
    a_file.write_text("not a folder")
    for out, message in ((a_file, "is a file, not a folder"), (a_file / "sub", "lies under the file")):
        caplog.clear()
        with caplog.at_level("INFO"):
            code = cli.main(
                ["--corpus", str(demo_corpus), "--out", str(out), "--num-mixtures", "2", *ONE_WORKER]
            )
        assert code == 2 and message in caplog.text
        assert "ingest:" not in caplog.text  # refused before any file was probed
    assert a_file.read_text() == "not a folder"


def test_file_size_limit_mid_run_leaves_complete_shards_and_resumes(manifest, clean, tmp_path, capfd):
    """RLIMIT_FSIZE between the smallest and the largest shard: smaller shards can be written, the others
    fail with a real EFBIG midway through the run. Exit 3, one line naming the cause and what to
    do, no partial shard; the same command without the limit finishes with the bytes of a clean run.
    (A forked child runs the command line's main() under the limit: the limit stays out of pytest.)"""
    cli = import_pipeline_script("render_mixtures")
    sizes = sorted(p.stat().st_size for p in (clean / "mixtures" / "train").glob("shard-*.tar"))
    limit = (sizes[0] + sizes[-1]) // 2 if sizes[0] < sizes[-1] else sizes[0] // 2
    out = tmp_path / "out"
    argv = [*_args(manifest, out), "--seed", "0", "--no-audio-text", *ONE_WORKER]

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        logging.getLogger().addHandler(logging.StreamHandler(sys.stderr))  # pytest holds the root logger
        os._exit(cli.main(argv))

    capfd.readouterr()
    child = multiprocessing.get_context("fork").Process(target=limited)
    child.start()
    child.join(timeout=300)
    err = capfd.readouterr().err
    assert child.exitcode == 3, err[-2000:]
    err_lines = [ln for ln in err.splitlines() if "render stopped" in ln]
    assert len(err_lines) == 1 and "File too large" in err_lines[0], err[-2000:]
    assert "run the same command again" in err_lines[0] and "no partial shard is left" in err_lines[0]
    assert "Traceback" not in err_lines[0]
    _no_partial_files(out)
    kept = list((out / "mixtures" / "train").glob("shard-*.tar"))
    assert len(kept) < N // SHARD and all(p.stat().st_size <= limit for p in kept)  # those that fit, only
    assert cli.main(argv) == 0
    assert _digests(out / "mixtures") == _digests(clean / "mixtures")


def _namespace_tmpfs_available() -> str | None:
    """None when `unshare -rm` can mount a tmpfs here, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare(1) on this machine"
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=1m none $d && umount $d"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"this machine does not allow an unprivileged tmpfs mount ({probe.stderr.strip()[:200]})"
    return None


@pytest.mark.slow
def test_read_only_and_full_tmpfs(manifest, clean, tmp_path):
    """A read-only folder is refused before any work (exit 2); a small tmpfs fills up midway (exit 3, real
    ENOSPC); after growing it, the same command finishes with the bytes of an uninterrupted run."""
    why = _namespace_tmpfs_available()
    if why:
        pytest.skip(why)
    shard_bytes = max(p.stat().st_size for p in (clean / "mixtures" / "train").glob("shard-*.tar"))
    size_kib = (shard_bytes * 3 // 2) // 1024 + 64  # one shard and the small files fit, two do not
    ro, full, copy = tmp_path / "ro", tmp_path / "full", tmp_path / "copy"
    for d in (ro, full):
        d.mkdir()
    cmd = " ".join(CLI + _args(manifest, Path("OUT")) + ["--seed", "0", "--no-audio-text", *ONE_WORKER])
    script = textwrap.dedent(
        f"""
        set -u
        mount -t tmpfs -o ro,size=1m none {ro}
        {cmd.replace("OUT", str(ro))} > {tmp_path}/ro.out 2> {tmp_path}/ro.err; echo $? > {tmp_path}/ro.rc
        mount -t tmpfs -o size={size_kib}k none {full}
        {cmd.replace("OUT", str(full))} > {tmp_path}/full.out 2> {tmp_path}/full.err; echo $? > {tmp_path}/full.rc
        ls -a {full}/mixtures/train > {tmp_path}/full.ls
        cp -r {full} {tmp_path}/at_fault
        mount -o remount,size=64m {full}
        {cmd.replace("OUT", str(full))} > {tmp_path}/again.out 2> {tmp_path}/again.err; echo $? > {tmp_path}/again.rc
        cp -r {full}/. {copy}
        """
    )
    subprocess.run(["unshare", "-rm", "sh", "-c", script], check=True, timeout=900, env={**os.environ})
    ro_err = (tmp_path / "ro.err").read_text()
    assert (tmp_path / "ro.rc").read_text().strip() == "2", ro_err[-2000:]
    assert "read-only file system" in ro_err and "ingest" not in ro_err
    full_err = (tmp_path / "full.err").read_text()
    assert (tmp_path / "full.rc").read_text().strip() == "3", full_err[-2000:]
    line = next(ln for ln in full_err.splitlines() if "render stopped" in ln)
    assert "no space left on the device" in line and "free space in" in line.lower()
    _no_partial_files(tmp_path / "at_fault")
    assert 1 <= len(list((tmp_path / "at_fault" / "mixtures" / "train").glob("shard-*.tar"))) < N // SHARD
    assert (tmp_path / "again.rc").read_text().strip() == "0", (tmp_path / "again.err").read_text()[-2000:]
    assert _digests(copy / "mixtures") == _digests(clean / "mixtures")


# ---------------------------------------------------------------- audio-text clips (item 10) and wording


def test_audio_text_clips_above_full_scale_are_scaled_and_counted(demo_corpus, tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "audio").mkdir(parents=True)
    t = np.arange(48000) / 48000
    hot = (2.0 * np.sin(2 * np.pi * 330 * t) * np.hanning(48000)).astype(np.float32)  # float WAV, peak 2.0
    sf.write(corpus / "audio" / "hot.wav", hot, 48000, subtype="FLOAT")
    sf.write(corpus / "audio" / "ok.wav", 0.5 * hot, 48000, subtype="FLOAT")
    bg = (np.random.default_rng(0).standard_normal(12 * 48000) * 0.05).astype(np.float32)
    sf.write(corpus / "audio" / "amb.wav", bg, 48000, subtype="FLOAT")
    (corpus / "metadata.csv").write_text(
        "id,path,tags,description\n"
        "hot,audio/hot.wav,tone,a loud tone\n"
        "ok,audio/ok.wav,tone,a tone\n"
        "amb,audio/amb.wav,ambiance,room ambiance\n"
    )
    out = tmp_path / "out"
    opts = RenderOptions(
        out=str(out),
        corpus=str(corpus),
        num_mixtures=1,
        shard_size=1,
        heldout_events=0,
        heldout_backgrounds=0,
    )
    summary = run_render(opts, ONE_WORKER)
    assert summary.audio_text_notes == {"clip_scaled": 1}
    at = out / "audio_text" / "train"
    urls = [str(at / s["name"]) for s in json.loads((at / "index.json").read_text())["shards"]]
    clips = {json.loads(s["json"])["source_id"]: s for s in wds.WebDataset(urls, shardshuffle=False)}
    for sid, x in (("hot", hot), ("ok", 0.5 * hot)):
        rec = json.loads(clips[sid]["json"])
        audio, _ = sf.read(io.BytesIO(clips[sid]["flac"]), dtype="float64")
        peak = float(np.abs(x).max())
        expect_scale = MixtureConfig.max_peak / peak if peak > MixtureConfig.max_peak else 1.0
        assert rec["clip_scale"] == pytest.approx(expect_scale, rel=1e-6)
        # scaled, not clipped: the decoded clip is the source times the scale, to 16-bit precision
        np.testing.assert_allclose(audio[:48000], x.astype(np.float64) * rec["clip_scale"], atol=1.0 / 32768)
    assert "audio-text notes (this run): 1" in summary.format() and "clip_scaled: 1" in summary.format()


def test_no_audio_text_summary_does_not_read_as_lost_data():
    text = RenderSummary(out="x", split="train", audio_text=False, audio_text_total=0).format()
    line = next(ln for ln in text.splitlines() if ln.startswith("audio-text clips:"))
    assert line == "audio-text clips:       not written (--no-audio-text)"
    assert "of 5 (" in RenderSummary(out="x", split="train", audio_text_total=5).format()
