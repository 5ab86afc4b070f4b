"""The trainer's data streams on real shards: determinism, exact fast-forward, weights, bad data, texts."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from model.text_slots import normalize_text
from model.train.config import DataConfig, SourceConfig
from model.train.data import (
    BankPlace,
    DataError,
    TrainStream,
    collate,
    global_text,
    make_loader,
    resolve_sources,
    sed_events,
)
from model.train.shards import expand_shards


def data_cfg(root: Path, **kw) -> DataConfig:
    base = DataConfig(
        global_sources=(SourceConfig("at", str(root / "audio_text" / "train"), 1.0),),
        sed_sources=(SourceConfig("mix", str(root / "mixtures" / "train"), 1.0),),
        global_batch=2,
        sed_batch=2,
        num_workers=0,
        shuffle_buffer=4,
        interval_steps=5,
    )
    return replace(base, **kw)


def stream(cfg: DataConfig, start: int = 0, end: int = 12, rank: int = 0, world: int = 1, seed: int = 0,
           bank: BankPlace | None = None):  # fmt: skip
    """A stream as the trainer builds it (`bank`: where online sources find their source bank)."""
    sources = {
        "global": resolve_sources(cfg.global_sources, "global") if cfg.global_batch else [],
        "sed": resolve_sources(cfg.sed_sources, "sed", bank) if cfg.sed_batch else [],
    }
    return TrainStream(cfg, sources, seed, 32, rank, world, start, end)


def batches(cfg: DataConfig, start: int, end: int, **kw) -> dict[int, dict]:
    """Oracle without loader processes: one stream object per virtual worker, steps in order."""
    nv = max(cfg.num_workers, 1)
    per_worker = {}
    for w in range(nv):
        s = stream(cfg, start, end, **kw)
        s._vworker = (start + w) % nv
        per_worker[w] = s
    out = {}
    for t in range(start, end):
        out[t] = per_worker[(t - start) % nv].batch_for(t)
    return out


def same(a: dict, b: dict) -> bool:
    return (
        a["keys"] == b["keys"]
        and a["global_texts"] == b["global_texts"]
        and torch.equal(a["wave"], b["wave"])
        and a.get("slot_texts") == b.get("slot_texts")
        and torch.equal(a["event_frames"], b["event_frames"])
    )


def test_batches_are_deterministic_and_seeded(train_shards):
    cfg = data_cfg(train_shards)
    a, b = batches(cfg, 0, 4), batches(cfg, 0, 4)
    assert all(same(a[t], b[t]) for t in a)
    c = batches(cfg, 0, 4, seed=1)
    assert not all(a[t]["keys"] == c[t]["keys"] for t in a)
    batch = a[0]
    assert batch["wave"].shape == (4, 480000) and batch["wave"].dtype == torch.int16  # 16-bit shards
    assert batch["n_global"] == 2 and len(batch["global_texts"]) == 2
    assert batch["text_ids"].shape == (10,)  # 5 slots × 2 SED clips
    assert batch["event_frames"].shape[0] == 2 and batch["event_frames"].shape[2] == 32


@pytest.mark.parametrize("workers,start", [(0, 7), (2, 7), (3, 4)])
def test_resume_mid_interval_continues_exactly(train_shards, workers, start):
    """Steps [start, 12) built from a fresh stream equal the same steps of a stream started at 0."""
    cfg = data_cfg(train_shards, num_workers=workers)
    straight = batches(cfg, 0, 12)
    resumed = batches(cfg, start, 12)
    for t in range(start, 12):
        assert same(straight[t], resumed[t]), f"step {t} differs after resuming at {start}"


def test_loader_processes_match_the_oracle(train_shards):
    """Two real forkserver workers deliver the oracle's batches in step order, also when resumed at an odd step."""
    cfg = data_cfg(train_shards, num_workers=2)
    oracle = batches(cfg, 3, 9)
    got = list(make_loader(stream(cfg, 3, 9)))
    assert [b["step"] for b in got] == list(range(3, 9))
    for b in got:
        assert same(b, oracle[b["step"]])


def test_source_weights_are_per_sample_probabilities(train_shards, tmp_path):
    shards = sorted((train_shards / "mixtures" / "train").glob("shard-*.tar"))
    for i, name in enumerate(("a", "b")):
        (tmp_path / name).mkdir()
        for s in shards[2 * i : 2 * i + 2]:
            shutil.copy(s, tmp_path / name / s.name)
    cfg = data_cfg(
        train_shards,
        sed_sources=(
            SourceConfig("a", str(tmp_path / "a"), 0.8),
            SourceConfig("b", str(tmp_path / "b"), 0.2),
        ),
        global_batch=0,
        sed_batch=20,
        resample_prob=0.0,
        interval_steps=100,
    )
    s = stream(cfg, 0, 30)
    counts = Counter(k.split("/")[0] for t in range(30) for k in s.batch_for(t)["keys"])
    n = sum(counts.values())
    share = counts["a"] / n
    # binomial: sd = sqrt(.8·.2/600) ≈ 0.016; 4 sd
    assert abs(share - 0.8) < 0.065, counts


def test_fewer_shards_than_workers_still_works(train_shards):
    """1 shard, 2 ranks × 2 workers: everybody gets samples, and within an epoch the shares are disjoint."""
    one = str(sorted((train_shards / "mixtures" / "train").glob("shard-*.tar"))[0])
    cfg = data_cfg(train_shards, sed_sources=(SourceConfig("one", one, 1.0),), global_batch=0, sed_batch=4,
                   num_workers=2, shuffle_buffer=1)  # fmt: skip
    seen = {}
    for rank in range(2):
        for w in range(2):
            s = stream(cfg, 0, 2, rank=rank, world=2)
            s._vworker = w
            seen[(rank, w)] = s.batch_for(w)["keys"]  # first batch of virtual worker w
    assert all(len(k) == 2 for k in seen.values())
    flat = [k for keys in seen.values() for k in keys]
    assert len(set(flat)) == len(flat)  # 8 samples in the shard, 4 readers × 2: no sample twice


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"'nowhere'.*no shard file matches"):
        resolve_sources([SourceConfig("nowhere", str(tmp_path / "missing"), 1.0)], "sed")


def test_shard_patterns(train_shards):
    folder = train_shards / "mixtures" / "train"
    all4 = expand_shards(str(folder))
    assert len(all4) == 4
    assert expand_shards(str(folder / "shard-*.tar")) == all4
    assert expand_shards(str(folder / "shard-{000001..000002}.tar")) == all4[1:3]
    assert expand_shards(f"file://{folder}/shard-000000.tar::{folder}/shard-000003.tar") == [all4[0], all4[3]]


def _rewrite_shard(src: Path, dst: Path, damage: dict[str, bytes]) -> None:
    """Copy a shard, replacing the bytes of the named members."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for info in tin:
            data = tin.extractfile(info).read()
            data = damage.get(info.name, data)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))


def test_bad_samples_are_skipped_and_counted(train_shards, tmp_path):
    src = sorted((train_shards / "mixtures" / "train").glob("shard-*.tar"))[0]
    with tarfile.open(src) as t:
        keys = sorted({n.split(".")[0] for n in t.getnames()})
    bad = tmp_path / "bad"
    bad.mkdir()
    _rewrite_shard(src, bad / "shard-000000.tar", {
        f"{keys[0]}.flac": b"not audio at all",
        f"{keys[1]}.json": b"{broken json",
        f"{keys[2]}.json": json.dumps({"duration": 10.0, "events": [{"text": "x", "segments": [[5, 1]]}]}).encode(),
    })  # fmt: skip
    cfg = data_cfg(train_shards, sed_sources=(SourceConfig("bad", str(bad), 1.0),), global_batch=0, sed_batch=5,
                   shuffle_buffer=1)  # fmt: skip
    b = stream(cfg, 0, 1).batch_for(0)
    assert len(b["keys"]) == 5
    assert b["skipped"] == {"bad/decode_error": 1, "bad/bad_json": 1, "bad/bad_labels": 1}
    assert not any(k.endswith(tuple(keys[:3])) for k in b["keys"])


def test_truncated_shard_is_skipped_from_the_damage_on(train_shards, tmp_path):
    shards = sorted((train_shards / "mixtures" / "train").glob("shard-*.tar"))
    d = tmp_path / "trunc"
    d.mkdir()
    data = shards[0].read_bytes()
    (d / "shard-000000.tar").write_bytes(data[: len(data) // 2 + 100])
    cfg = data_cfg(train_shards, sed_sources=(SourceConfig("t", str(d), 1.0),), global_batch=0, sed_batch=6,
                   shuffle_buffer=1)  # fmt: skip
    b = stream(cfg, 0, 1).batch_for(0)
    assert len(b["keys"]) == 6
    assert sum(v for k, v in b["skipped"].items() if k.startswith("t/")) >= 1


def test_source_without_any_sample_is_an_error(train_shards, tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    with tarfile.open(d / "shard-000000.tar", "w"):
        pass
    cfg = data_cfg(train_shards, sed_sources=(SourceConfig("empty", str(d), 1.0),), global_batch=0)
    with pytest.raises(DataError, match="'empty'.*readable sample"):
        stream(cfg, 0, 1).batch_for(0)


def test_global_text_is_caption_comma_tag_lower_case():
    rng = np.random.default_rng(0)
    rec = {"text": ["A Dog Barks Loudly."], "tag": ["Dog", "Animal"]}
    texts = {global_text(rec, rng) for _ in range(50)}
    assert texts == {"a dog barks loudly, dog", "a dog barks loudly, animal"}
    assert global_text({"text": ["Rain"], "tag": []}, rng) == "rain"
    assert global_text({"tag": ["Rain"]}, rng) == "rain"
    assert all(t == normalize_text(t) for t in texts)


def test_realised_tag_and_resample_rates(train_shards):
    """C.6 tag swap 0.5 and C.5 resampling 0.3: measured on the rendered shards, not only configured."""
    rng = np.random.default_rng(0)
    ev = {"events": [{"text": "dog barking", "tags": ["dog", "animal"], "segments": [[0, 1]]}]}
    swaps = [sed_events(ev, rng, 0.5)[0]["tag_swapped"] for _ in range(4000)]
    assert abs(np.mean(swaps) - 0.5) < 0.03
    cfg = data_cfg(
        train_shards, global_batch=8, sed_batch=8, interval_steps=100, tag_prob=0.5, resample_prob=0.3
    )
    s = stream(cfg, 0, 12)
    got = [s.batch_for(t) for t in range(12)]
    resampled = sum(b["n_resampled"] for b in got) / sum(len(b["keys"]) for b in got)
    assert abs(resampled - 0.3) < 0.1  # 192 clips: sd ≈ 0.033
    n_events = sum(b["n_events"] for b in got)
    assert 0 < sum(b["n_tag_swaps"] for b in got) / n_events <= 0.5 + 0.1


def test_collate_builds_slots_over_sed_clips_only():
    cfg = DataConfig(slots_per_clip=5)
    g = [{"text": "rain, weather", "wave": np.zeros(480000, np.float32), "key": "a/1"}]
    s = [{"events": [{"text": "dog", "segments": [[0.0, 1.0]], "tag_swapped": False}], "duration": 10.0,
          "wave": np.ones(480000, np.float32), "key": "b/1"}]  # fmt: skip
    b = collate(g, s, cfg, 32)
    assert b["wave"][0].sum() == 0 and b["wave"][1].sum() == 480000
    assert b["slot_texts"][:1] == ["dog"] and b["text_mask"].sum() == 1 and len(b["slot_texts"]) == 5
    assert b["event_frames"][0, 0, :4].tolist() == [True, True, True, True]  # [0, 1.25) s covers frames 0..3
    assert not b["event_frames"][0, 0, 4:].any()


def test_decode_pads_short_and_resamples(tmp_path):
    from model.train.data import decode_clip

    buf = io.BytesIO()
    sf.write(buf, np.full((16000, 2), 0.25, np.float32), 16000, format="WAV")
    y = decode_clip(buf.getvalue())
    assert y.shape == (480000,) and abs(y[20000] - 0.25) < 1e-3 and y[-1] == 0.0


def _read_samples(folder: Path) -> list[tuple[np.ndarray, dict]]:
    """(audio, record) of every sample of the shards in `folder`, in shard and key order."""
    out = []
    for shard in sorted(folder.glob("shard-*.tar")):
        with tarfile.open(shard) as t:
            for name in sorted(n for n in t.getnames() if n.endswith(".json")):
                rec = json.loads(t.extractfile(name).read())
                wave, _ = sf.read(io.BytesIO(t.extractfile(name[:-5] + ".flac").read()), dtype="float32")
                out.append((wave, rec))
    return out


def test_int16_decoding_is_exactly_the_float_decoding(train_shards):
    """The loader ships 16-bit mixtures as int16; ÷ 32768 (done in the step) gives libsndfile's float32."""
    from model.train.data import decode_clip, to_float

    shard = sorted((train_shards / "mixtures" / "train").glob("shard-*.tar"))[0]
    with tarfile.open(shard) as t:
        data = t.extractfile(sorted(n for n in t.getnames() if n.endswith(".flac"))[0]).read()
    as_int = decode_clip(data, allow_int16=True)
    as_float = decode_clip(data)
    assert as_int.dtype == np.int16 and as_float.dtype == np.float32 and as_int.shape == (480000,)
    assert np.array_equal(to_float(as_int), as_float)
    assert np.array_equal((torch.from_numpy(as_int).float() / 32768.0).numpy(), as_float)
    cfg = data_cfg(train_shards, augment_in="step")
    b = stream(cfg, 0, 1).batch_for(0)
    assert b["wave"].dtype == torch.int16  # both streams' shards are 16-bit mono 48 kHz
