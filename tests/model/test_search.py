"""model.search on constructed recordings of real demo audio: hits equal brute-force frame_probabilities,
incremental updates (add / change / remove), checkpoint change, kills mid-index, locks, the CLI."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import model.search.build as build_mod
from model.detect.outputs import scored_segments
from model.search.__main__ import main
from model.search.build import update_index
from model.search.index import SEGMENTS, SearchIndexError, open_index, read_manifest, writer_lock
from model.search.query import search
from synth.audio import read_audio
from tests.model.detect_audio import (
    BURP,
    CHICKENS,
    ROOSTER,
    corrupt_files,
    place,
)
from tests.model.small_flam import small_flam

TEXT = "a rooster crowing"


def make_folder(root):
    """Constructed recordings (real clips at known onsets over faint noise), several formats and rates."""
    (root / "farm").mkdir(parents=True)
    (root / "ü").mkdir()
    sf.write(root / "farm" / "chickens_at_3s.wav", place([(CHICKENS, 3.0)], 11.0, 22050, seed=1), 22050)
    sf.write(root / "farm" / "rooster_at_8s.flac", place([(ROOSTER, 8.0)], 10.5, seed=2), 48000)
    sf.write(root / "mix.ogg", place([(CHICKENS, 1.0), (ROOSTER, 7.0)], 10.0, 44100, seed=3), 44100)
    sf.write(root / "short.wav", place([(ROOSTER, 0.0)], 0.4, 16000, seed=4), 16000)
    sf.write(root / "ü" / "日本_burp.wav", place([(BURP, 0.5)], 3.0, seed=5), 48000)
    return root


def audio_files(folder):
    return sorted(p for p in folder.rglob("*") if p.suffix in (".wav", ".flac", ".ogg"))


TEXTS = [TEXT, "chickens clucking"]  # every text the tests query, computed together
_CACHE = {}


def brute_probs(model, path, text, method="approximate", median_filter=3):
    """FLAM.frame_probabilities of one file (memoised per model, file content and settings)."""
    st = path.stat()
    key = (id(model), str(path), st.st_size, st.st_mtime_ns, method, median_filter)
    if key not in _CACHE:
        x, sr = read_audio(path)
        _CACHE[key] = (model.frame_probabilities(x.T, sr, TEXTS, method, median_filter), x.shape[0] / sr)
    probs, duration = _CACHE[key]
    return probs[TEXTS.index(text)], duration


def brute_force(model, folder, text, threshold, method="approximate", median_filter=3):
    """Every file through FLAM.frame_probabilities, segmented by the detection rule, ranked by score."""
    hits = []
    for p in audio_files(folder):
        try:
            probs, duration = brute_probs(model, p, text, method, median_filter)
        except ValueError:
            continue
        for on, off, score in scored_segments(probs, threshold, 0.3125, duration):
            hits.append((str(p), on, off, score))
    return sorted(hits, key=lambda h: (-h[3], h[0], h[1]))


def query(model, index, text, threshold, method="approximate", median_filter=3, top=0):
    from model.inference import text_embeddings

    emb, alpha, beta = (t.numpy() for t in text_embeddings(model, [text]))
    return search(open_index(index), emb, alpha, beta, method=method, median_filter=median_filter,
                  threshold=threshold, top=top)[0]  # fmt: skip


def assert_same(hits, expect):
    """Same segments, same scores (float32 rounding), ranked the same way (ties aside)."""
    assert len(hits) == len(expect) > 0
    got = sorted((h.path, h.start_s, h.end_s) for h in hits)
    assert got == sorted((e[0], e[1], e[2]) for e in expect)
    np.testing.assert_allclose([h.score for h in hits], [e[3] for e in expect], atol=1e-5)
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))


def live_segments(index):
    m = read_manifest(index)
    on_disk = {int(p.stem[4:]) for p in (index / SEGMENTS).glob("seg-*.npy")}
    return set(m.segment_rows()), on_disk


@pytest.fixture(scope="module")
def built(tmp_path_factory, model, ckpt):
    folder = make_folder(tmp_path_factory.mktemp("audio") / "recordings")
    index = tmp_path_factory.mktemp("idx") / "index"
    rep = update_index(index, folder, model, ckpt, progress=False)
    return folder, index, rep


def _threshold(model, folder, q=0.7):
    """A threshold that the untrained model's probabilities cross in places (hits exist, not every frame)."""
    return float(np.quantile(brute_probs(model, folder / "mix.ogg", TEXT)[0], q))


def test_ranking_equals_brute_force_frame_probabilities(built, model):
    folder, index, rep = built
    assert rep.added == 5 and rep.files == 5 and not rep.skipped
    thr = _threshold(model, folder)
    assert_same(query(model, index, TEXT, thr), brute_force(model, folder, TEXT, thr))
    # other method / filter / threshold: the same rule applies
    assert_same(query(model, index, TEXT, thr, method="unbiased", median_filter=5),
                brute_force(model, folder, TEXT, thr, "unbiased", 5))  # fmt: skip
    whole = query(model, index, "Chickens Clucking!", 0.0)  # threshold 0: one hit per file, the whole file
    assert len(whole) == 5 and all(h.start_s == 0.0 for h in whole)
    assert_same(whole, brute_force(model, folder, "chickens clucking", 0.0))  # same text normalisation
    top = query(model, index, TEXT, thr, top=3)
    assert [(h.path, h.start_s) for h in top] == [
        (h.path, h.start_s) for h in query(model, index, TEXT, thr)[:3]
    ]


def test_incremental_add_change_remove(tmp_path, model, ckpt):
    folder = make_folder(tmp_path / "rec")
    index = tmp_path / "idx"
    thr = _threshold(model, folder)
    assert update_index(index, folder, model, ckpt, progress=False).added == 5
    sf.write(folder / "farm" / "new_rooster.wav", place([(ROOSTER, 2.0)], 6.0, seed=9), 48000)
    rep = update_index(index, folder, model, ckpt, progress=False)
    assert (rep.added, rep.updated, rep.removed, rep.unchanged) == (1, 0, 0, 5)
    assert_same(query(model, index, TEXT, thr), brute_force(model, folder, TEXT, thr))
    target = folder / "farm" / "chickens_at_3s.wav"
    before = [h for h in query(model, index, TEXT, 0.0) if h.path == str(target)]
    sf.write(target, place([(ROOSTER, 1.0), (ROOSTER, 5.0)], 9.0, seed=11), 48000)  # new content, new length
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    rep = update_index(index, folder, model, ckpt, progress=False)
    assert (rep.added, rep.updated, rep.removed, rep.unchanged) == (0, 1, 0, 5)
    after = [h for h in query(model, index, TEXT, 0.0) if h.path == str(target)]
    assert after[0].end_s == 9.0 and before[0].end_s == 11.0
    assert_same(query(model, index, TEXT, thr), brute_force(model, folder, TEXT, thr))
    (folder / "mix.ogg").unlink()
    rep = update_index(index, folder, model, ckpt, progress=False)
    assert (rep.added, rep.updated, rep.removed, rep.unchanged) == (0, 0, 1, 5)
    hits = query(model, index, TEXT, 0.0)
    assert len(hits) == 5 and not any(h.path.endswith("mix.ogg") for h in hits)
    assert_same(query(model, index, TEXT, thr), brute_force(model, folder, TEXT, thr))
    live, on_disk = live_segments(index)
    assert live == on_disk and len(on_disk) == 1  # small segments merged, dead rows and orphans gone


def test_changed_checkpoint_rebuilds(tmp_path, model, ckpt, capsys):
    folder = make_folder(tmp_path / "rec")
    for name in ("mix.ogg", "farm/chickens_at_3s.wav", "farm/rooster_at_8s.flac"):
        (folder / name).unlink()  # two files are enough here
    c = tmp_path / "ckpt"
    shutil.copytree(ckpt, c)
    index = tmp_path / "idx"
    update_index(index, folder, model, c, progress=False)
    other = small_flam(seed=1)
    other.save_pretrained(c)  # same folder, new weights
    assert main(["query", TEXT, "--index", str(index)]) == 2
    err = capsys.readouterr().err
    assert "not the one" in err and "model.search index" in err
    rep = update_index(index, folder, other, c, progress=False)
    assert rep.rebuilt and "checkpoint changed" in rep.rebuilt
    assert rep.added == 2 and rep.unchanged == 0
    assert_same(query(other, index, TEXT, 0.0), brute_force(other, folder, TEXT, 0.0))
    live, on_disk = live_segments(index)
    assert live == on_disk


class Killed(BaseException):
    pass


def test_kill_mid_index_leaves_a_usable_index_and_a_rerun_finishes(tmp_path, model, ckpt, monkeypatch):
    folder = make_folder(tmp_path / "rec")
    index = tmp_path / "idx"
    real = build_mod.write_manifest
    calls = {"n": 0}

    def dying(idx, m):
        calls["n"] += 1
        if calls["n"] == 4:  # start + 2 groups committed; killed after the 3rd group's segment is on disk
            raise Killed
        real(idx, m)

    monkeypatch.setattr(build_mod, "write_manifest", dying)
    with pytest.raises(Killed):
        update_index(index, folder, model, ckpt, progress=False, group_seconds=1.0)  # one file per group
    monkeypatch.setattr(build_mod, "write_manifest", real)
    m = read_manifest(index)
    assert 0 < len(m.files) < 5  # groups in walk order: [mix], [short, farm/chickens], [farm/rooster] ✝, …
    live, on_disk = live_segments(index)
    assert len(on_disk - live) == 1  # the orphan of the killed group
    done = {f"{m.root}/{rel}" for rel in m.files}
    partial = query(model, index, TEXT, 0.0)  # usable as it is
    assert {h.path for h in partial} == done
    assert_same(partial, [h for h in brute_force(model, folder, TEXT, 0.0) if h[0] in done])
    rep = update_index(index, folder, model, ckpt, progress=False)
    assert (rep.added, rep.unchanged) == (5 - len(m.files), len(m.files))
    assert_same(query(model, index, TEXT, 0.0), brute_force(model, folder, TEXT, 0.0))
    live, on_disk = live_segments(index)
    assert live == on_disk


def test_undecodable_files_are_skipped_once_and_retried_when_changed(tmp_path, model, ckpt):
    folder = make_folder(tmp_path / "rec")
    bad = corrupt_files(folder / "bad")
    index = tmp_path / "idx"
    rep = update_index(index, folder, model, ckpt, progress=False)
    assert sorted(s["filename"] for s in rep.skipped) == [f"bad/{b}" for b in sorted(bad)]
    assert rep.added == 5
    rep = update_index(index, folder, model, ckpt, progress=False)
    assert not rep.skipped and rep.still_failed == 2 and rep.unchanged == 5
    shutil.copy(
        BURP, folder / "bad" / "truncated.ogg"
    )  # repaired (a FLAC under an .ogg name: content decides)
    rep = update_index(index, folder, model, ckpt, progress=False)
    assert rep.added == 1 and rep.still_failed == 1


def test_one_writer_and_one_root_per_index(built, model, ckpt, tmp_path):
    folder, index, _ = built
    with writer_lock(index), pytest.raises(SearchIndexError, match="another"):
        update_index(index, folder, model, ckpt, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(SearchIndexError, match="another --index"):
        update_index(index, other, model, ckpt, progress=False)


def test_cli_index_and_query(tmp_path, built, ckpt, model, capsys):
    folder, _, _ = built
    index = tmp_path / "idx"
    assert main(["index", str(folder), "--checkpoint", str(ckpt), "--index", str(index), "--quiet", "--device", "cpu"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "5 files indexed" in out and "5 added" in out
    thr = _threshold(model, folder)
    assert main(["query", TEXT, "--index", str(index), "--top", "3", "--threshold", f"{thr:.6f}"]) == 0
    cap = capsys.readouterr()
    lines = cap.out.strip().splitlines()
    expect = [h for h in brute_force(model, folder, TEXT, float(f"{thr:.6f}"))][:3]
    assert len(lines) == 3
    for line, e in zip(lines, expect, strict=True):
        path, start, end, score = line.split("\t")
        assert os.path.isfile(path)
        assert float(score) == pytest.approx(e[3], abs=2e-6)
        assert (float(start), float(end)) == pytest.approx((e[1], e[2]), abs=1e-4)
    assert "search" in cap.err and "ms" in cap.err
    assert main(["query", TEXT, "--index", str(tmp_path / "nothing")]) == 2
    assert main(["query", TEXT, "--index", str(index), "--top", "-1"]) == 2
    assert main(["index", str(tmp_path / "nope"), "--checkpoint", str(ckpt), "--index", str(index)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("error:") for e in err)
    manifest = json.loads((index / "index.json").read_text())
    assert manifest["root"] == str(folder) and len(manifest["files"]) == 5


@pytest.mark.slow  # fresh interpreters import torch + transformers (~30 s each on the 2-core VM)
def test_sigkill_mid_index_then_rerun(tmp_path, ckpt, model):
    """A real process killed with SIGKILL while indexing; the index stays usable and a re-run finishes."""
    folder = tmp_path / "rec"
    folder.mkdir()
    n_files = 60  # 20 min of audio: two groups of 10 min, so the first is committed while the second runs
    for i in range(n_files):
        sf.write(folder / f"f{i:02d}.wav", place([(ROOSTER, i % 7)], 20.0, seed=i), 48000)
    index = tmp_path / "idx"
    cmd = [sys.executable, "-m", "model.search", "index", str(folder), "--checkpoint", str(ckpt), "--index",
           str(index), "--quiet", "--device", "cpu", "--batch-size", "2"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        m = read_manifest(index) if (index / "index.json").is_file() else None
        if m is not None and 0 < len(m.files) < n_files:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "indexing finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n = len(read_manifest(index).files)
    assert 0 < n < n_files
    assert len(query(model, index, TEXT, 0.0)) == n  # usable as it is
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"{n_files - n} added" in r.stdout and f"{n} unchanged" in r.stdout
    hits = query(model, index, TEXT, 0.0)
    assert sorted(h.path for h in hits) == [str(p) for p in audio_files(folder)]  # every file, once
    some = {str(folder / f"f{i:02d}.wav") for i in (0, n - 1, n, n_files - 1)}  # both sides of the kill
    for h in (h for h in hits if h.path in some):
        probs, _ = brute_probs(model, Path(h.path), TEXT)
        assert h.score == pytest.approx(float(probs.max()), abs=1e-5)


@pytest.mark.parametrize("size", [1, 3, 5])
def test_median_filtered_is_the_per_file_median_filter(size):
    """The one-call filter of many files equals `median_filter_frames` file by file (edges per file)."""
    from model.inference import median_filter_frames
    from model.search.query import median_filtered

    rng = np.random.default_rng(size)
    counts = np.array([1, 2, 7, 3, 40, 5], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    row = rng.random(int(counts.sum())).astype(np.float32)
    files = np.array([0, 1, 2, 4, 5])
    filt, fstarts = median_filtered(row, starts, counts, files, size)
    for f, a in zip(files.tolist(), fstarts.tolist(), strict=True):
        want = median_filter_frames(row[starts[f] : starts[f] + counts[f]], size)
        np.testing.assert_array_equal(filt[a : a + counts[f]], want)
    assert filt.size == counts[files].sum()
