"""synth.bank hardening: transient read failures are retried, the fingerprint covers what is stored, the lock
holds across processes — on real audio files written to tmp_path."""

from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from synth import bank as bank_mod
from synth.bank import BankOptions, SourceBank, bank_rows, prepare_bank
from synth.errors import AudioDecodeError

SR = 48000
OPTS = BankOptions(workers=1, chunk_sources=2)


def make_rows(folder: Path, n_events: int = 5, n_backgrounds: int = 1) -> list[dict]:
    """Manifest rows of real 16-bit WAV files: noise bursts (events) and a longer noise bed (backgrounds)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_events + n_backgrounds):
        kind = "event" if i < n_events else "background"
        n = int(SR * (0.3 + 0.1 * i)) if kind == "event" else 2 * SR
        path = folder / f"{kind}{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(n)).astype(np.float32), SR, subtype="PCM_16")
        rows.append({"id": f"{kind}{i}", "path": str(path), "split": "train", "kind": kind,
                     "duration_s": n / SR, "sample_rate": SR, "channels": 1, "loudness_db": None,
                     "source_type": "sfx", "captions": [f"sound {i}"], "tags": []})  # fmt: skip
    return rows


def build_log(monkeypatch) -> list[int]:
    """The chunks `prepare_bank` builds from now on (in-process builds: workers=1)."""
    built: list[int] = []
    real = bank_mod.build_chunk
    monkeypatch.setattr(bank_mod, "build_chunk", lambda *a: built.append(a[1]) or real(*a))
    return built


# ------------------------------------------------------------------------------------------ 1. transient failures


def test_a_source_missing_at_build_time_is_retried_once_it_is_back(tmp_path, monkeypatch):
    rows = bank_rows(make_rows(tmp_path / "audio"), "train")
    away = tmp_path / "away.wav"
    shutil.move(rows[2]["path"], away)  # e.g. its mount is missing during the first build
    built = build_log(monkeypatch)
    folder = prepare_bank(rows, tmp_path / "bank", OPTS)
    bank = SourceBank(folder)
    assert rows[2]["id"] not in bank and len(bank) == len(rows) - 1
    assert bank.meta["failed"] == {"missing_file": 1} and bank.meta["retry_chunks"] == [1]
    assert sorted(built) == [0, 1, 2]
    # still missing: the bank is used as it is, nothing is rebuilt
    built.clear()
    assert prepare_bank(rows, tmp_path / "bank", OPTS) == folder and built == []
    # back: the next build rebuilds the chunk that missed it, and only that one
    shutil.move(away, rows[2]["path"])
    kept = (folder / "chunk-000000.audio").stat().st_mtime_ns
    assert prepare_bank(rows, tmp_path / "bank", OPTS) == folder
    assert built == [1] and (folder / "chunk-000000.audio").stat().st_mtime_ns == kept
    again = SourceBank(folder)
    assert rows[2]["id"] in again and len(again) == len(rows)
    assert again.meta["failed"] == {} and again.meta["retry_chunks"] == []
    x, _ = sf.read(rows[2]["path"], dtype="float32")
    np.testing.assert_array_equal(np.asarray(again(rows[2]["id"])), x)
    # a reader opened before the retry keeps the files it indexed (chunk 1 now starts with another source)
    np.testing.assert_array_equal(
        np.asarray(bank(rows[3]["id"])), sf.read(rows[3]["path"], dtype="float32")[0]
    )


def test_a_bank_whose_sources_were_all_unreadable_is_built_once_they_are_back(tmp_path):
    rows = bank_rows(make_rows(tmp_path / "audio", n_events=3, n_backgrounds=0), "train")
    shutil.move(tmp_path / "audio", tmp_path / "unmounted")
    with pytest.raises(ValueError, match=r"source bank .*bank/\w+: none of the 3 sources could be decoded "
                       r"\(\{'missing_file': 3\}.*check that their storage is mounted and readable; "
                       r"the next build retries them"):  # fmt: skip
        prepare_bank(rows, tmp_path / "bank", OPTS)
    shutil.move(tmp_path / "unmounted", tmp_path / "audio")
    bank = SourceBank(prepare_bank(rows, tmp_path / "bank", OPTS))
    assert len(bank) == 3 and bank.meta["failed"] == {}


def test_a_corrupt_file_is_final_and_the_refusal_says_what_to_do(tmp_path, monkeypatch):
    rows = bank_rows(make_rows(tmp_path / "audio", n_events=2, n_backgrounds=0), "train")
    for r in rows:
        Path(r["path"]).write_bytes(b"RIFF not really a wave file")
    with pytest.raises(ValueError, match=r"none of the 2 sources could be decoded \(\{'decode_error': 2\}.*"
                       r"fix or drop them in the manifest \(a file fixed at the same path needs `rm -r .*bank/"):  # fmt: skip
        prepare_bank(rows, tmp_path / "bank", OPTS)
    rows = bank_rows(make_rows(tmp_path / "audio2", n_events=3, n_backgrounds=0), "train")
    Path(rows[0]["path"]).write_bytes(b"RIFF not really a wave file")
    built = build_log(monkeypatch)
    folder = prepare_bank(rows, tmp_path / "bank", OPTS)
    assert SourceBank(folder).meta["failed"] == {"decode_error": 1}
    assert SourceBank(folder).meta["retry_chunks"] == []
    built.clear()
    assert prepare_bank(rows, tmp_path / "bank", OPTS) == folder and built == []


def test_an_unreadable_file_is_a_transient_read_error(tmp_path):
    bad = AudioDecodeError(str(tmp_path), "libsndfile cannot decode it", "decode_error")
    assert bank_mod._failure_reason(str(tmp_path), bad) == "read_error"  # open() fails: not the content
    corrupt = tmp_path / "x.wav"
    corrupt.write_bytes(b"RIFF junk")
    assert bank_mod._failure_reason(str(corrupt), bad) == "decode_error"
    assert bank_mod._failure_reason(str(corrupt), PermissionError("denied")) == "read_error"


def test_refusals_name_the_folder_and_what_to_do(tmp_path):
    folder = prepare_bank(bank_rows(make_rows(tmp_path / "audio", 2, 0), "train"), tmp_path / "bank", OPTS)
    with pytest.raises(ValueError, match=r"not a complete source bank .*prepare_bank"):
        SourceBank(tmp_path)
    meta = json.loads((folder / "bank.json").read_text())
    (folder / "bank.json").write_text(json.dumps({**meta, "version": 0}))
    with pytest.raises(ValueError, match=rf"bank version 0, expected .*delete {folder} to rebuild it"):
        SourceBank(folder)
    (folder / "bank.json").write_text(json.dumps(meta))
    (folder / "chunk-000000.json").unlink()
    with pytest.raises(ValueError, match=rf"chunk-000000\.json: missing \(a damaged bank: delete {folder}"):
        SourceBank(folder)


# ------------------------------------------------------------------------------------------ 2. fingerprint


@pytest.mark.parametrize(
    ("key", "value", "changes"),
    [
        ("path", "/elsewhere/event1.wav", True),
        ("duration_s", 0.41, True),
        ("kind", "background", True),
        ("loudness_db", -23.0, True),
        ("captions", ["another caption"], False),  # captions are not stored
        ("tags", ["t"], False),
        ("captions", [], True),  # ... but a caption-less event is not in the bank
    ],
)
def test_fingerprint_follows_what_is_stored(tmp_path, key, value, changes):
    rows = make_rows(tmp_path / "audio", 3, 1)
    edited = [dict(r, **{key: value}) if r["id"] == "event1" else r for r in rows]
    fps = [bank_mod.bank_fingerprint(bank_rows(r, "train"), OPTS) for r in (rows, edited)]
    assert (fps[0] != fps[1]) is changes


def test_flipping_a_background_to_an_event_builds_a_new_bank(tmp_path):
    rows = make_rows(tmp_path / "audio", 2, 1)
    bank = SourceBank(prepare_bank(bank_rows(rows, "train"), tmp_path / "bank", OPTS))
    with pytest.raises(KeyError, match="no energy stored"):
        bank.weighted_energy("background2")
    flipped = [dict(r, kind="event") for r in rows]
    again = SourceBank(prepare_bank(bank_rows(flipped, "train"), tmp_path / "bank", OPTS))
    assert again.folder != bank.folder
    assert len(again.weighted_energy("background2")) == len(again("background2")) + 1


# ------------------------------------------------------------------------------------------ 3. the lock


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _build_in_child(rows: list[dict], root: str, queue) -> None:
    """A spawned builder: says it is ready, builds (or finds) the bank, returns its folder and log lines."""
    handler = _Messages()
    logger = logging.getLogger("synth.bank")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    queue.put("ready")
    folder = prepare_bank(rows, root, OPTS)
    queue.put((str(folder), handler.messages))


@contextmanager
def held(lock: Path):
    """The bank's lock held by this process (as another builder would)."""
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def test_two_processes_build_one_bank_once(tmp_path):
    rows = bank_rows(make_rows(tmp_path / "audio"), "train")
    root = tmp_path / "bank"
    root.mkdir()
    lock = bank_mod._lock_path(root / bank_mod.bank_fingerprint(rows, OPTS)[:16])
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_in_child, args=(rows, str(root), queue)) for _ in range(2)]
    with held(lock):  # both builders start while the lock is taken: both wait, then one builds
        for p in procs:
            p.start()
        assert [queue.get(timeout=120) for _ in procs] == ["ready", "ready"]
        time.sleep(1.0)
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    folders = {folder for folder, _ in results}
    assert len(folders) == 1
    for _, messages in results:  # one line per wait (shorter than LOCK_LOG_EVERY_S)
        assert messages.count(f"waiting for the source bank lock at {lock} held by another process") == 1
    built = [
        m.split(" (")[0] for _, messages in results for m in messages if m.startswith("source bank: chunk")
    ]
    assert sorted(built) == [f"source bank: chunk {k} of 3" for k in (1, 2, 3)]  # each chunk built once
    alone = prepare_bank(rows, tmp_path / "alone", OPTS)
    folder = Path(folders.pop())
    assert folder.name == alone.name
    for k in range(3):
        for ext in ("audio", "energy", "blocks"):
            name = f"chunk-{k:06d}.{ext}"
            assert (folder / name).read_bytes() == (alone / name).read_bytes()
        info = [json.loads((d / f"chunk-{k:06d}.json").read_text()) for d in (folder, alone)]
        assert [{key: v for key, v in i.items() if key != "seconds"} for i in info] == [
            {key: v for key, v in i.items() if key != "seconds"} for i in info[::-1]
        ]


def test_a_waiting_builder_says_so_once_then_every_interval(tmp_path, monkeypatch, caplog):
    rows = bank_rows(make_rows(tmp_path / "audio", 2, 0), "train")
    root = tmp_path / "bank"
    root.mkdir()
    lock = bank_mod._lock_path(root / bank_mod.bank_fingerprint(rows, OPTS)[:16])
    line = f"waiting for the source bank lock at {lock} held by another process"
    caplog.set_level(logging.INFO, logger="synth.bank")
    for every, waits in ((60.0, {1}), (0.5, {2, 3, 4})):  # held 1.5 s: at 0 s, then every 0.5 s
        caplog.clear()
        monkeypatch.setattr(bank_mod, "LOCK_LOG_EVERY_S", every)
        with held(lock):
            th = threading.Thread(target=prepare_bank, args=(rows, root, OPTS))
            th.start()
            time.sleep(1.5)
        th.join()
        assert [r.getMessage() for r in caplog.records].count(line) in waits
        assert all(r.levelno == logging.INFO for r in caplog.records if r.getMessage() == line)


# ------------------------------------------------------------------------------------------ 4. a killed retry


def test_a_retry_killed_between_a_chunks_data_and_its_json_leaves_the_chunk_to_rebuild(tmp_path, monkeypatch):
    rows = bank_rows(make_rows(tmp_path / "audio"), "train")
    away = tmp_path / "away.wav"
    shutil.move(rows[2]["path"], away)
    folder = prepare_bank(rows, tmp_path / "bank", OPTS)
    assert SourceBank(folder).meta["retry_chunks"] == [1]
    shutil.move(away, rows[2]["path"])  # back: the next call rebuilds chunk 1 ...
    real = bank_mod._write_atomic

    def killed_at_the_json(path, data):
        if path.name == "chunk-000001.json":
            raise KeyboardInterrupt("killed")  # ... and is killed once its new data files are written
        real(path, data)

    monkeypatch.setattr(bank_mod, "_write_atomic", killed_at_the_json)
    with pytest.raises(KeyboardInterrupt):
        prepare_bank(rows, tmp_path / "bank", OPTS)
    monkeypatch.setattr(bank_mod, "_write_atomic", real)
    shutil.move(rows[2]["path"], away)  # unreadable again at the next call: the bank opens without it
    assert prepare_bank(rows, tmp_path / "bank", OPTS) == folder
    bank = SourceBank(folder)
    assert rows[2]["id"] not in bank and len(bank) == len(rows) - 1
    np.testing.assert_array_equal(
        np.asarray(bank(rows[3]["id"])), sf.read(rows[3]["path"], dtype="float32")[0]
    )
    shutil.move(away, rows[2]["path"])  # readable: it is in
    bank = SourceBank(prepare_bank(rows, tmp_path / "bank", OPTS))
    assert rows[2]["id"] in bank and len(bank) == len(rows) and bank.meta["retry_chunks"] == []


# ------------------------------------------------------------------------------------------ 5. another version


def test_a_bank_of_another_version_under_the_root_is_named_when_a_new_one_is_built(tmp_path, caplog):
    rows = bank_rows(make_rows(tmp_path / "audio", 2, 0), "train")
    root = tmp_path / "bank"
    old = root / "0123456789abcdef"
    old.mkdir(parents=True)
    (old / "bank.json").write_text(json.dumps({"version": 1, "sources": 2}))
    (root / "not-a-bank").mkdir()
    (root / "not-a-bank" / "bank.json").write_text("[1, 2")  # unreadable: not ours to judge, skipped
    caplog.set_level(logging.INFO, logger="synth.bank")
    folder = prepare_bank(rows, root, OPTS)
    warned = [r for r in caplog.records if "cannot be reused" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in warned] == [
        (logging.WARNING, f"source bank {old} was built by synth.bank version 1 and cannot be reused (this is "
         f"version {bank_mod.BANK_VERSION}): building a new bank in {folder}; delete the old one when no run "
         "uses it")
    ]  # fmt: skip
    caplog.clear()  # the new bank is found: nothing is built, nothing said
    assert prepare_bank(rows, root, OPTS) == folder
    assert not [r for r in caplog.records if "cannot be reused" in r.getMessage()]
    caplog.clear()  # no bank of another version: nothing said
    prepare_bank(rows, tmp_path / "alone", OPTS)
    assert not [r for r in caplog.records if "cannot be reused" in r.getMessage()]
