"""SED source kind `online`: mixtures synthesised in the loader from a source bank (model.train.online,
synth.bank) — equal to the shard pipeline's, deterministic, resumable, counted; the bank's build and sharing."""

from __future__ import annotations

import copy
import io
import json
import pickle
import shutil
import tarfile
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from model.train.config import (
    BankConfig,
    DataConfig,
    SourceConfig,
    TrainConfig,
    load,
    source_recipe,
    to_yaml,
)
from model.train.data import BankPlace, DataError, make_loader, resolve_sources
from model.train.online import MixtureRef, OnlineSource, bank_part
from synth import bank as bank_mod
from synth.bank import BankOptions, BankSource, SourceBank, bank_rows, prepare_bank, quantize_source
from synth.manifest import read_manifest, write_manifest
from synth.render import render_mixture
from synth.shard_fns import RenderMixtureShardFn
from synth.spec import MixtureConfig, sample_spec
from tests.conftest import REPO_ROOT
from tests.train.test_data import batches, data_cfg, same, stream

N_SHARD_MIXTURES = 32  # what the train_shards fixture renders (seed 0)
N_COMPARED = 16  # of those, compared with the online ones


def online_cfg(shards: Path, **kw) -> SourceConfig:
    return SourceConfig("gen", kind="online", manifest=str(shards / "manifest.parquet"), **kw)


@pytest.fixture(scope="session")
def banks(train_shards, tmp_path_factory) -> dict[str, Path]:
    """The train split's source bank of the fixture's manifest, int16 and float32, and int16 without the events'
    energy (`data.bank.energy=false`) (built once, in-process)."""
    root = tmp_path_factory.mktemp("banks")
    rows = bank_rows(read_manifest(train_shards / "manifest.parquet").to_pylist(), "train")
    out = {
        dt: prepare_bank(rows, root, BankOptions(dtype=dt, workers=1, chunk_sources=32))
        for dt in ("int16", "float32")
    }
    opts = BankOptions(dtype="int16", energy=False, workers=1, chunk_sources=32)
    return {**out, "int16-no-energy": prepare_bank(rows, root, opts)}


@pytest.fixture
def place(banks) -> BankPlace:
    """Where the trainer finds the session's int16 bank (same options: found, not rebuilt)."""
    return BankPlace(banks["int16"].parent, BankConfig(build_workers=1, chunk_sources=32))


def source(train_shards: Path, folder: Path, mixture: MixtureConfig | None = None) -> OnlineSource:
    return OnlineSource("gen", 1.0, str(train_shards / "manifest.parquet"), "train", mixture or MixtureConfig(),
                        str(folder), 0, 1)  # fmt: skip


def shard_samples(folder: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for p in sorted(folder.glob("shard-*.tar")):
        with tarfile.open(p) as tar:
            for m in tar:
                key, ext = m.name.split(".", 1)
                out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


@pytest.mark.parametrize("dtype", ["float32", "int16", "int16-no-energy"])
def test_online_mixtures_equal_the_shard_pipeline(train_shards, banks, dtype):
    """Mixture i of seed 0 made online = mixture i of `render_mixtures.py --seed 0` (the fixture's shards, and
    the pipeline's own DoFn and cache for the float audio before FLAC): same spec, same labels, same counters;
    audio bit-identical with a float32 bank, within the int16 bank's rounding otherwise — also without the
    stored energy (data.bank.energy=false: the renderer then filters every piece itself)."""
    mix = train_shards / "mixtures" / "train"
    cfg = MixtureConfig()
    fn = RenderMixtureShardFn(
        str(mix), "", N_SHARD_MIXTURES, 8, str(mix / "sources.parquet"), "train", 0, cfg
    )
    fn.setup()
    stored = shard_samples(mix)
    assert len(stored) == N_SHARD_MIXTURES
    online = source(train_shards, banks[dtype])
    bank, pool = online.open()
    assert bank.options.energy == (dtype != "int16-no-energy")
    worst = 0.0
    for i in range(N_COMPARED):
        key = f"{i:08d}" if f"{i:08d}" in stored else sorted(stored)[i]
        pipe = render_mixture(sample_spec(fn.pool, cfg, 0, i), fn.cache, cfg)  # the shard path, before FLAC
        ours = render_mixture(sample_spec(pool, cfg, 0, i), bank, cfg)
        q, rec, counters = online.render(MixtureRef(0, i), full_spec=True)
        q2, rec2, counters2 = online.render(MixtureRef(0, i))  # what the loader gets
        assert np.array_equal(q, q2) and rec2["events"] == rec["events"] and counters2 == counters
        assert rec2["spec"] == {"seed": 0, "index": i}
        shard_rec = json.loads(stored[key]["json"])
        shard_q, sr = sf.read(io.BytesIO(stored[key]["flac"]), dtype="int16")
        _, _, stats = next(iter(fn.samples(range(i, i + 1))))
        assert sr == 48000 and q.dtype == np.int16 and len(q) == len(shard_q)
        assert rec["spec"] == shard_rec["spec"], f"mixture {i}: spec differs"
        assert rec["events"] == shard_rec["events"], f"mixture {i}: labels differ"
        assert rec["duration"] == shard_rec["duration"]
        assert counters == Counter(stats), f"mixture {i}: counters {counters} != sidecar stats {stats}"
        if dtype == "float32":
            assert np.array_equal(ours.audio, pipe.audio), f"mixture {i}: audio differs"
            assert np.array_equal(q, shard_q), f"mixture {i}: 16-bit samples differ from the shard's FLAC"
        else:
            worst = max(worst, float(np.max(np.abs(ours.audio - pipe.audio))))
            assert np.max(np.abs(q.astype(int) - shard_q.astype(int))) <= 1
    assert worst <= 1e-4  # int16 with a per-source scale: ~96 dB below each source's peak (measured 1.7e-5)


def test_bank_stores_16_bit_sources_exactly_and_others_to_their_peak():
    rng = np.random.default_rng(0)
    pcm = rng.integers(-20000, 20000, 4800).astype(np.float32) / 32768  # a 16-bit file's float decoding
    q, scale = quantize_source(pcm, "int16")
    assert scale == 2.0**-15 and np.array_equal(BankSource(q, scale)[:], pcm)
    quiet = (rng.standard_normal(4800) * 1e-3).astype(np.float32)  # resampled / 24-bit: not on the grid
    q, scale = quantize_source(quiet, "int16")
    x = np.asarray(BankSource(q, scale))
    assert np.max(np.abs(x - quiet)) <= np.max(np.abs(quiet)) / 65534 * 1.001
    view = BankSource(q, scale)
    assert len(view) == 4800 and view.shape == (4800,) and np.array_equal(view[100:200], x[100:200])
    same32, one = quantize_source(quiet, "float32")
    assert one == 1.0 and np.array_equal(same32, quiet)


def test_online_stream_is_deterministic_and_seeded(train_shards, place):
    cfg = data_cfg(train_shards, sed_sources=(online_cfg(train_shards),), global_batch=0, sed_batch=3)
    a, b = batches(cfg, 0, 3, bank=place), batches(cfg, 0, 3, bank=place)
    assert all(same(a[t], b[t]) for t in a)
    c = batches(cfg, 0, 3, bank=place, seed=1)
    assert not any(torch.equal(a[t]["wave"], c[t]["wave"]) for t in a)
    keys = [k for t in a for k in a[t]["keys"]]
    assert len(set(keys)) == len(keys) and all(k.startswith("gen/") for k in keys)
    batch = a[0]
    assert batch["wave"].dtype == torch.int16 and batch["wave"].shape == (3, 480000)
    assert batch["online"]["gen/mixtures"] == 3 and batch["online"]["gen/events_placed"] >= 3
    assert batch["skipped"] == {}


@pytest.mark.parametrize("workers,start", [(0, 7), (2, 7), (3, 4)])
def test_online_and_shards_resume_mid_interval_exactly(train_shards, place, workers, start):
    """Online mixed with shard sources by weight: steps [start, 12) of a fresh stream equal those of a stream
    started at 0 (fast-forward counts mixtures without rendering them)."""
    sed = (
        SourceConfig("mix", str(train_shards / "mixtures" / "train"), 1.0),
        online_cfg(train_shards, weight=1.0),
    )
    cfg = data_cfg(train_shards, sed_sources=sed, num_workers=workers, sed_batch=3)
    straight = batches(cfg, 0, 12, bank=place)
    resumed = batches(cfg, start, 12, bank=place)
    for t in range(start, 12):
        assert same(straight[t], resumed[t]), f"step {t} differs after resuming at {start}"
        assert straight[t]["online"] == resumed[t]["online"]
    sources = Counter(k.split("/")[0] for t in straight for k in straight[t]["keys"])
    assert sources["gen"] > 0 and sources["mix"] > 0 and sources["at"] > 0


@pytest.mark.slow  # starting forkserver workers takes 15–80 s on the shared 2-core machine
def test_online_loader_processes_match_the_oracle(train_shards, place):
    """Two forkserver workers (the source pickles as its settings and maps the bank itself) give the
    oracle's batches, resumed at an odd step."""
    cfg = data_cfg(train_shards, sed_sources=(online_cfg(train_shards),), global_batch=0, num_workers=2)
    oracle = batches(cfg, 3, 7, bank=place)
    got = list(make_loader(stream(cfg, 3, 7, bank=place)))
    assert [b["step"] for b in got] == list(range(3, 7))
    for b in got:
        assert same(b, oracle[b["step"]]) and b["online"] == oracle[b["step"]]["online"]


def test_bank_build_resumes_after_a_kill_and_concurrent_builders_wait(
    train_shards, banks, tmp_path, monkeypatch
):
    rows = bank_rows(read_manifest(train_shards / "manifest.parquet").to_pylist(), "train")
    opts = BankOptions(dtype="int16", workers=1, chunk_sources=32)
    done = banks["int16"]
    # a build killed after chunks 0 and 2: bank.json and chunk 1 missing (its .json is written last)
    root = tmp_path / "root"
    part = root / done.name
    shutil.copytree(done, part)
    (part / "bank.json").unlink()
    for ext in ("json", "audio"):
        (part / f"chunk-000001.{ext}").unlink()
    built = []
    real = bank_mod.build_chunk
    monkeypatch.setattr(bank_mod, "build_chunk", lambda *a: built.append(a[1]) or real(*a))
    kept = (part / "chunk-000000.audio").stat().st_mtime_ns
    assert prepare_bank(rows, root, opts) == part
    assert built == [1] and (part / "chunk-000000.audio").stat().st_mtime_ns == kept
    for ext in ("audio", "energy", "blocks"):
        assert (part / f"chunk-000001.{ext}").read_bytes() == (done / f"chunk-000001.{ext}").read_bytes()
    info = [json.loads((d / "chunk-000001.json").read_text()) for d in (part, done)]
    assert [{k: v for k, v in i.items() if k != "seconds"} for i in info] == [
        {k: v for k, v in i.items() if k != "seconds"} for i in info[::-1]
    ]
    # two builders at once: the second waits for the first's lock, then finds the bank complete
    built.clear()
    fresh = tmp_path / "fresh"
    folders = []
    threads = [
        threading.Thread(target=lambda: folders.append(prepare_bank(rows, fresh, opts))) for _ in range(2)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(folders) == 2 and folders[0] == folders[1]
    assert sorted(built) == [0, 1, 2]  # every chunk built once
    assert SourceBank(folders[0]).meta["sources"] == SourceBank(done).meta["sources"]


def test_damaged_bank_is_a_clear_error(banks, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(banks["int16"], copy)
    data = (copy / "chunk-000000.audio").read_bytes()
    (copy / "chunk-000000.audio").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"chunk-000000\.audio: .* bytes, expected .*damaged bank"):
        SourceBank(copy)
    with pytest.raises(ValueError, match="not a complete source bank"):
        SourceBank(tmp_path)


def test_trainer_reports_a_damaged_bank_as_a_data_error(train_shards, banks, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(banks["int16"], root / banks["int16"].name)
    (root / banks["int16"].name / "chunk-000001.json").unlink()  # found by its fingerprint, then unusable
    place = BankPlace(root, BankConfig(build_workers=1, chunk_sources=32))
    with pytest.raises(DataError, match=r"online source 'gen': source bank .* cannot be used .*chunk-000001"):
        resolve_sources([online_cfg(train_shards)], "sed", place)


def test_undecodable_sources_are_left_out_and_counted(train_shards, tmp_path):
    table = read_manifest(train_shards / "manifest.parquet")
    rows = table.to_pylist()
    events = [r for r in rows if r["split"] == "train" and r["kind"] == "event"]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    events[0]["path"] = str(tmp_path / "gone.wav")
    events[1]["path"] = str(broken)
    manifest = tmp_path / "manifest.parquet"
    write_manifest(rows, manifest)
    cfg = SourceConfig("gen", kind="online", manifest=str(manifest))
    src = resolve_sources([cfg], "sed", BankPlace(tmp_path / "bank", BankConfig(build_workers=1)))[0]
    bank, pool = src.open()
    assert sum(bank.meta["failed"].values()) == 2 and bank.meta["failed"].get("missing_file") == 1
    ids = {s.id for s in (*pool.sfx, *pool.general)}
    assert events[0]["id"] not in ids and events[1]["id"] not in ids and len(ids) > 10
    for i in range(20):  # mixtures never use a left-out source
        _, rec, counters = src.render(MixtureRef(5, i), full_spec=True)
        assert counters["mixtures"] == 1
        assert not {e["id"] for e in rec["spec"]["events"]} & {events[0]["id"], events[1]["id"]}


def test_bank_parts_split_the_sources_and_map_ranks_by_node(train_shards):
    rows = read_manifest(train_shards / "manifest.parquet").to_pylist()
    whole = {r["id"] for r in bank_rows(rows, "train")}
    parts = [{r["id"] for r in bank_rows(rows, "train", p, 3)} for p in range(3)]
    assert set.union(*parts) == whole and sum(map(len, parts)) == len(whole) and all(parts)
    # 2 nodes × 4 ranks (torchrun numbers ranks node by node), 2 parts: one part per node
    assert [bank_part(r, 8, 2) for r in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [bank_part(r, 4, 1) for r in range(4)] == [0, 0, 0, 0]


ONLINE_YAML = (
    "data:\n  sed_batch: 4\n  mixture: {max_events: 4, relabel: {threshold_db: -60}}\n"
    "  sed_sources:\n"
    "    - {name: a, kind: online, manifest: m.parquet, weight: 0.5, mixture: {min_events: 2}}\n"
    "    - {name: b, shards: data/x, weight: 0.5}\n"
    "loss: {clip: 0}\nmodel: {text_path: x}\n"
)


def test_online_config_from_yaml_and_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text(ONLINE_YAML)
    cfg = load(y, ["data.mixture.snr_db=[10, 20]", "data.bank.dtype=float32"])
    a, b = cfg.data.sed_sources
    assert a.kind == "online" and b.kind == "shards" and a.split == "train"
    assert a.mixture == {"min_events": 2}  # the source's own fields; data.mixture is merged at resolution
    m = source_recipe(cfg.data.mixture, a, "a")
    assert (m.min_events, m.max_events, m.snr_db) == (2, 4, (10.0, 20.0))
    assert m.relabel.threshold_db == -60 and cfg.data.bank.dtype == "float32"


def test_saved_config_reloads_to_the_same_config_and_data_mixture_still_applies(tmp_path):
    """OUT/config.yaml keeps each source's own fields only: reloading it with the run's overrides gives the same
    config, and a later `data.mixture.X=` reaches the online source (it used to store the merged recipe)."""
    y = tmp_path / "c.yaml"
    y.write_text(ONLINE_YAML)
    overrides = ["data.mixture.snr_db=[10, 20]", "data.mixture.relabel.threshold_db=-50"]
    cfg = load(y, overrides)
    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(cfg))
    assert load(saved, overrides) == cfg
    again = load(saved, ["data.mixture.max_events=7"])
    m = source_recipe(again.data.mixture, again.data.sed_sources[0], "a")
    assert (m.min_events, m.max_events, m.snr_db, m.relabel.threshold_db) == (2, 7, (10.0, 20.0), -50.0)


def test_load_leaves_the_callers_updates_alone():
    sources = [{"name": "a", "kind": "online", "manifest": "m", "mixture": {"min_events": 2}}]
    before = copy.deepcopy(sources)
    load(None, ["data.sed_batch=4", "loss.clip=0", "data.global_batch=0", "data.mixture.max_events=5"],
         **{"data.sed_sources": sources})  # fmt: skip
    assert sources == before


def test_code_built_data_config_resolves_like_a_loaded_one(train_shards, place):
    """`DataConfig(mixture=…)` built in code: its online sources get data.mixture under their own fields, as
    when the same config is loaded from YAML."""
    own = online_cfg(train_shards, mixture={"min_events": 2})
    data = DataConfig(mixture=MixtureConfig(max_events=4), sed_sources=(own,), sed_batch=2, global_batch=0)
    loaded = load(None, ["loss.clip=0", "model.text_path=x"],
                  **{"data": data_to_dict(data)}).data  # fmt: skip
    assert loaded == data
    for d in (data, loaded):
        src = resolve_sources(d.sed_sources, "sed", place, mixture=d.mixture)[0]
        assert (src.mixture.min_events, src.mixture.max_events) == (2, 4)
        assert src.mixture == source_recipe(d.mixture, own, "gen")


def data_to_dict(d: DataConfig) -> dict:
    return TrainConfig(data=d).to_dict()["data"]


@pytest.mark.parametrize(
    "src,extra,message",
    [
        ({"name": "g", "kind": "online", "manifest": "m"}, ["data.global_batch=4", "loss.clip=1", "data.sed_batch=0",
                                                             "loss.sed=0", "loss.prior=0"], "list them in data.sed_sources"),
        ({"name": "a", "kind": "online"}, [], "online source needs a manifest"),
        ({"name": "a", "kind": "onlin", "manifest": "m"}, [], "kind must be one of"),
        ({"name": "a", "kind": "online", "manifest": "m", "mixture": {"min_events": 5, "max_events": 2}}, [],
         "data.sed_sources[0] (a).mixture: MixtureConfig: need 1 <= min_events"),
        ({"name": "a", "kind": "online", "manifest": "m", "split": "test"}, [], "split must be train or heldout"),
        ({"name": "a", "kind": "online", "manifest": "m"}, ["data.bank.dtype=float16"], "data.bank.dtype must be"),
        ({"name": "a", "kind": "online", "manifest": "m", "shards": "x"}, [],
         "data.sed_sources[0] (a): shards does not apply to an online source"),
        ({"name": "b", "shards": "x", "mixture": {"max_events": 3}, "split": "heldout"}, [],
         "data.sed_sources[0] (b): split, mixture do not apply to a shards source"),
        ({"name": "b", "shards": "x", "manifest": "m"}, [], "data.sed_sources[0] (b): manifest does not apply"),
        ({"name": "a", "kind": "online", "manifest": "m"}, ["data.sed_sources.1.weight=2"],
         "override data.sed_sources.1.weight: data.sed_sources has 1 entry"),
        ({"name": "a", "kind": "online", "manifest": "m"}, ["data.sed_sources.a.weight=2"],
         "data.sed_sources is a list: name an entry by its index"),
        ({"name": "a", "kind": "online", "manifest": "m"}, ["data.sed_sources.0.mixture.max_event=2"],
         "unknown config key: data.sed_sources.0.mixture.max_event"),
    ],
)  # fmt: skip
def test_bad_online_config_names_the_key(src, extra, message):
    stream = "global_sources" if "global_batch=4" in " ".join(extra) else "sed_sources"
    with pytest.raises(ValueError) as e:
        load(
            None,
            ["data.sed_batch=4", "loss.clip=0", "data.global_batch=0", *extra],
            **{f"data.{stream}": [src]},
        )
    assert message in str(e.value)


def test_list_entries_are_overridden_by_index(tmp_path):
    """`data.sed_sources.0.weight=…` and `data.sed_sources.0.mixture.X=…` (documented: any key by its dotted
    path) reach that source, also one the command line's --online made; the rest of it stays."""
    y = tmp_path / "c.yaml"
    y.write_text(ONLINE_YAML)
    over = ["data.sed_sources.0.weight=0.25", "data.sed_sources.0.mixture.snr_db=[6, 20]",
            "data.sed_sources.0.mixture.relabel.threshold_db=-40", "data.sed_sources.1.shards=data/y"]  # fmt: skip
    a, b = load(y, over).data.sed_sources
    assert (a.weight, a.mixture) == (
        0.25,
        {"min_events": 2, "snr_db": (6.0, 20.0), "relabel": {"threshold_db": -40}},
    )
    assert (b.shards, b.weight) == ("data/y", 0.5)
    from model.train.__main__ import parse_args

    args = ["--config", str(y), "--online", "m.parquet", "data.sed_sources.0.mixture.max_events=3"]
    cfg = load(y, parse_args(args).overrides, **{"data.sed_sources": [online_cfg(tmp_path)]})
    assert [(s.name, s.mixture) for s in cfg.data.sed_sources] == [("gen", {"max_events": 3})]


@pytest.mark.parametrize(
    "over,own,message",
    [
        (["data.mixture.snr_db=[30, 6]"], {}, "data.mixture: MixtureConfig.snr_db must be [lo, hi]"),
        ([], {"snr_db": [30, 6]}, "data.sed_sources[0] (a).mixture: MixtureConfig.snr_db must be [lo, hi]"),
        ([], {"relabel": {"threshold_db": "loud"}}, "data.sed_sources[0] (a).mixture.relabel.threshold_db: expected"),
        (["data.mixture.duration_s=20"], {}, "data.sed_sources[0] (a).mixture: duration_s=20.0"),
        ([], {"duration_s": 5}, "data.sed_sources[0] (a).mixture: duration_s=5.0, but the model sees 10-s clips"),
        ([], {"sample_rate": 44100}, "data.sed_sources[0] (a).mixture: sample_rate=44100, but the model takes 48000 Hz"),
        ([], {"duration_s": float("inf")}, "data.sed_sources[0] (a).mixture: duration_s=inf, but the model sees 10-s"),
    ],
)  # fmt: skip
def test_a_bad_recipe_fails_at_load_naming_the_source_and_key(over, own, message):
    src = {"name": "a", "kind": "online", "manifest": "m", "mixture": own}
    with pytest.raises(ValueError) as e:
        load(
            None,
            ["data.sed_batch=4", "loss.clip=0", "data.global_batch=0", *over],
            **{"data.sed_sources": [src]},
        )
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_bad_recipe_fails_when_a_code_built_source_is_resolved(train_shards, place, monkeypatch):
    """Without `load` (a config built in code) the same checks run when the source is resolved, before its bank
    is built; one mixture is rendered there, so a recipe that cannot make any stops the run before training."""
    built = []
    monkeypatch.setattr("model.train.online.prepare_bank", lambda *a: built.append(a) or None)
    with pytest.raises(
        DataError, match=r"data.sed_sources\[0\] \(gen\).mixture: duration_s=20.0, but the model"
    ):
        resolve_sources([online_cfg(train_shards, mixture={"duration_s": 20})], "sed", place)
    assert not built
    monkeypatch.undo()

    def broken(*_a, **_k):
        raise IndexError("index 3 is out of bounds")

    monkeypatch.setattr("model.train.online.render_mixture", broken)
    with pytest.raises(
        DataError, match=r"online source 'gen': the recipe cannot make a mixture .*IndexError: index 3"
    ):
        resolve_sources([online_cfg(train_shards)], "sed", place)


def test_missing_manifest_exits_2_with_one_line(tmp_path, capsys):
    from model.train.__main__ import main

    args = ["--config", str(REPO_ROOT / "configs/train/tiny-cpu.yaml"), "--out", str(tmp_path / "o"),
            "--online", str(tmp_path / "nope.parquet"), "loss.clip=0", "data.global_batch=0"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "online source 'online0': cannot read manifest" in err[-1]


def test_a_split_without_events_is_a_data_error(train_shards, tmp_path):
    rows = [{**r, "split": "train"} for r in read_manifest(train_shards / "manifest.parquet").to_pylist()]
    write_manifest(rows, tmp_path / "m.parquet")
    cfg = SourceConfig("gen", kind="online", manifest=str(tmp_path / "m.parquet"), split="heldout")
    with pytest.raises(DataError, match="online source 'gen'.*heldout"):
        resolve_sources([cfg], "sed", BankPlace(tmp_path / "bank", BankConfig(build_workers=1)))


def test_data_config_defaults_hold_the_paper_recipe():
    d = DataConfig()
    assert d.mixture == MixtureConfig() and d.bank.dtype == "int16" and d.bank.energy


TRAIN = [
    "--config", str(REPO_ROOT / "configs/train/tiny-cpu.yaml"), "loss.clip=0", "data.global_batch=0",
    "data.sed_batch=2", "data.num_workers=0", "data.interval_steps=3", "run.log_every=1", "run.progress=false",
    "optim.warmup_steps=2", "data.bank.build_workers=1", "data.bank.chunk_sources=32",
]  # fmt: skip


def run_online(train_shards: Path, banks: dict[str, Path], out: Path, *extra: str) -> int:
    from model.train.__main__ import main

    bank = "data.bank.dir=" + str(
        banks["int16"].parent
    )  # the session's bank (same options: found, not rebuilt)
    return main([*TRAIN, "--out", str(out), "--online", str(train_shards / "manifest.parquet"), bank, *extra])


@pytest.mark.slow  # three short training runs: 60–250 s on the shared 2-core machine
def test_trainer_on_online_alone_resumes_exactly(train_shards, banks, tmp_path):
    """`--online MANIFEST` alone (SED only): `--steps 2` then `--resume --steps 4` = `--steps 4` bit for bit,
    crossing a data interval (3 steps); every metrics line carries the source's mixture counters."""
    from tests.train.test_trainer import assert_same_weights, metrics

    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_online(train_shards, banks, straight, "--steps", "4") == 0
    assert run_online(train_shards, banks, split, "--steps", "2") == 0
    assert run_online(train_shards, banks, split, "--steps", "4", "--resume") == 0
    assert_same_weights(straight / "final", split / "final")
    assert [r["step"] for r in metrics(split)] == [1, 2, 3, 4]
    assert [r["loss"] for r in metrics(split)] == [r["loss"] for r in metrics(straight)]
    assert [r["online/online0/events_placed"] for r in metrics(split)] == [
        r["online/online0/events_placed"] for r in metrics(straight)
    ]
    for r in metrics(split):
        assert r["online/online0/mixtures"] == 2 and r["skipped_samples"] == 0
        assert r["online/online0/events_placed"] >= 2
        assert r["online/online0/events_labelled"] + r["online/online0/events_dropped_by_relabel"] >= 2
        assert {"online/online0/unplaced", "online/online0/clip_scaled"} <= set(r)
    assert not (split / "bank").exists()  # data.bank.dir was used


@pytest.fixture(scope="module")
def leaky_run(train_shards, tmp_path_factory) -> tuple[Path, list[str]]:
    """One training step (tiny-cpu, online alone) on a manifest with a missing file and "..." captions: (OUT, the
    run's arguments). Its bank is built in OUT/bank (the missing file changes the fingerprint)."""
    from model.train.__main__ import main

    tmp = tmp_path_factory.mktemp("leaky")
    rows = read_manifest(train_shards / "manifest.parquet").to_pylist()
    events = [r for r in rows if r["split"] == "train" and r["kind"] == "event"]
    events[0]["path"] = str(tmp / "gone.wav")
    events[1]["captions"] = ["..."]
    events[2]["captions"] = ["...", *events[2]["captions"]]
    write_manifest(rows, tmp / "m.parquet")
    out = tmp / "out"
    args = [*TRAIN, "--out", str(out), "--online", str(tmp / "m.parquet")]
    assert main([*args, "--steps", "1"]) == 0
    return out, args


def test_sources_left_out_and_pool_skips_reach_the_metrics(leaky_run):
    """What the bank could not decode and what the pool refused are on the run's first metrics line, per source."""
    from tests.train.test_trainer import metrics

    first = metrics(leaky_run[0])[0]
    got = {k: v for k, v in first.items() if "/sources_left_out/" in k or "/pool_skipped/" in k}
    assert got == {
        "online/online0/sources_left_out/missing_file": 1,
        "online/online0/pool_skipped/caption_empty_text": 2,
        "online/online0/pool_skipped/event_empty_captions": 1,
    }


def test_resume_refuses_other_bank_parts_or_dtype_before_building_a_bank(leaky_run, capsys):
    """data.bank.parts changes which sources each rank mixes, data.bank.dtype the audio: a resume with either
    changed is refused (exit 2, naming both) before any bank is built."""
    from model.train.__main__ import main

    out, args = leaky_run
    banks_before = sorted(p.name for p in (out / "bank").iterdir())
    assert main([*args, "--steps", "2", "--resume", "data.bank.dtype=float32", "data.bank.parts=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cannot resume" in err and "data.bank.parts: checkpoint 1, now 2" in err
    assert "data.bank.dtype: checkpoint 'int16', now 'float32'" in err and "--init" in err
    assert sorted(p.name for p in (out / "bank").iterdir()) == banks_before


def test_bank_built_ahead_is_the_one_the_trainer_finds(train_shards, banks, place, capsys):
    """`python -m model.train.online` with the trainer's settings prints the folder the trainer then uses."""
    from model.train.online import main

    root = str(banks["int16"].parent)
    args = ["--manifest", str(train_shards / "manifest.parquet"), "--bank-dir", root, "--workers", "1"]
    assert main([*args, "--chunk-sources", "32"]) == 0
    assert capsys.readouterr().out.strip() == str(banks["int16"])
    found = resolve_sources([online_cfg(train_shards)], "sed", place)[0]
    assert Path(found.bank_folder) == banks["int16"]
    assert main([*args[:2], "--bank-dir", root, "--split", "heldout", "--parts", "2", "--part", "2"]) == 2
    assert "need 0 <= part < parts" in capsys.readouterr().err


def _ddp_online_worker(rank: int, world: int, port: int, args: list[str]) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), HF_HUB_OFFLINE="1")  # fmt: skip
    torch.set_num_threads(1)
    from model.train.__main__ import main

    raise SystemExit(main(args))


@pytest.mark.slow  # two spawned gloo ranks with model and bank set-up: 1–4 min on the shared 2-core machine
def test_two_ranks_each_build_and_mix_their_own_bank_part(train_shards, tmp_path):
    """DDP, 2 gloo ranks, `data.bank.parts=2`: each rank builds its part (disjoint sources), mixes from it, and
    the metrics lines sum both ranks' counters (other notes gathered from every rank)."""
    import torch.multiprocessing as mp

    from tests.train.test_ddp import _free_port
    from tests.train.test_trainer import metrics

    out = tmp_path / "ddp"
    args = [*TRAIN, "--out", str(out), "--online", str(train_shards / "manifest.parquet"), "--steps", "2",
            "data.sed_batch=4", "data.bank.parts=2", "model.batchnorm=frozen"]  # fmt: skip
    ctx, port = mp.get_context("spawn"), _free_port()
    procs = [ctx.Process(target=_ddp_online_worker, args=(r, 2, port, args)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
    assert [p.exitcode for p in procs] == [0, 0]
    folders = sorted(p for p in (out / "bank").iterdir() if p.is_dir())
    assert len(folders) == 2
    ids = [set(SourceBank(f).ids) for f in folders]
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    assert {SourceBank(f).options.part for f in folders} == {0, 1}
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["online/online0/mixtures"] == 4 for r in rows)  # 2 per rank, summed


def test_captions_and_tags_empty_after_normalising_are_dropped_and_counted(
    train_shards, place, tmp_path, caplog
):
    """A caption such as "..." (non-empty, but "" after `normalize_text`) never reaches a mixture: the pool drops
    it before sampling; an event left with no caption is left out; both are counted and logged."""
    rows = read_manifest(train_shards / "manifest.parquet").to_pylist()
    events = [r for r in rows if r["split"] == "train" and r["kind"] == "event"]
    for j, r in enumerate(events):  # every event gets a "..." caption and tag; every third has no other
        r["captions"] = ["..."] if j % 3 == 0 else ["...", *r["captions"]]
        r["tags"] = [" !", *(r["tags"] or [])]
    write_manifest(rows, tmp_path / "m.parquet")
    cfg = SourceConfig("gen", kind="online", manifest=str(tmp_path / "m.parquet"))
    with caplog.at_level("INFO", logger="model.train.online"):
        src = resolve_sources([cfg], "sed", place)[0]  # audio unchanged: the session's bank is found
    _, pool = src.open()
    only_dots = len(events[::3])
    assert pool.skipped["caption_empty_text"] == len(events) and pool.skipped["tag_empty_text"] == len(events)
    assert pool.skipped["event_empty_captions"] == only_dots and pool.skipped["event_no_caption"] == 0
    assert all(c != "..." for s in (*pool.sfx, *pool.general) for c in (*s.captions, *s.tags))
    assert f"caption_empty_text': {len(events)}" in caplog.text
    data = data_cfg(train_shards, sed_sources=(cfg,), global_batch=0, sed_batch=4)
    got = batches(data, 0, 6, bank=place)  # 24 mixtures: none raises, none is skipped
    assert all(b["skipped"] == {} and b["online"]["gen/mixtures"] == 4 for b in got.values())


def _bank_wait_worker(rank: int, port: int, out: str) -> None:
    import datetime
    import os
    import time

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))  # fmt: skip
    from model.train.trainer import Trainer

    # a default group that gives up after 3 s stands for NCCL's 10 minutes (its store waits longer for the
    # other process to start: imports on a busy machine)
    store = dist.TCPStore("127.0.0.1", port, 2, rank == 0, timeout=datetime.timedelta(seconds=120))
    dist.init_process_group(
        "gloo", store=store, rank=rank, world_size=2, timeout=datetime.timedelta(seconds=3)
    )
    cfg = load(None, ["loss.clip=0", "data.global_batch=0", "data.sed_batch=2", "data.bank.wait_s=60"],
               **{"data.sed_sources": [{"name": "a", "kind": "online", "manifest": "m"}]})  # fmt: skip
    trainer = Trainer(cfg, out)
    trainer._setup_distributed()
    if rank == 1:
        time.sleep(6)  # this rank's bank part takes longer to build
    trainer._wait_for_banks()
    dist.barrier()  # the next collective of the default group: every rank is there at once
    dist.destroy_process_group()


def _spawn_two_ranks(target, tmp_path, timeout_s: int) -> list[int | None]:  # noqa: ANN001 - a worker function
    """Run target(rank, port, tmp_path) in two spawned processes; their exit codes."""
    import torch.multiprocessing as mp

    from tests.train.test_ddp import _free_port

    ctx, port = mp.get_context("spawn"), _free_port()
    procs = [ctx.Process(target=target, args=(r, port, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout_s)
    return [p.exitcode for p in procs]


@pytest.mark.slow  # two spawned processes importing the trainer: ~30 s on the shared 2-core machine
def test_ranks_wait_for_each_others_banks_longer_than_the_default_timeout(tmp_path):
    """A rank that finishes its bank part early waits in a group with data.bank.wait_s as its timeout, so a
    slower rank's build does not hit the default group's (short) timeout."""
    assert _spawn_two_ranks(_bank_wait_worker, tmp_path, timeout_s=120) == [0, 0]


def test_a_manifest_changed_after_resolve_is_refused_in_the_loader_process(train_shards, tmp_path):
    """Loader processes build their pools from the manifest: one rewritten mid-run (e.g. by a caption job) would
    give workers different pools, so a process that finds it changed refuses with a clear error."""
    manifest = tmp_path / "manifest.parquet"
    shutil.copy(train_shards / "manifest.parquet", manifest)
    cfg = SourceConfig("gen", kind="online", manifest=str(manifest))
    src = resolve_sources([cfg], "sed", BankPlace(tmp_path / "bank", BankConfig(build_workers=1)))[0]
    worker = pickle.loads(pickle.dumps(src))  # as a loader process receives it
    worker.open()  # unchanged: fine
    rows = read_manifest(manifest).to_pylist()
    next(r for r in rows if r["kind"] == "event" and r["split"] == "train")["captions"] = ["a new caption"]
    write_manifest(rows, manifest)
    with pytest.raises(ValueError, match="changed since this run resolved it"):
        pickle.loads(pickle.dumps(src)).open()


def test_a_manifest_given_as_a_file_uri_resolves_and_opens_in_a_loader_process(train_shards, place):
    """`--online file:///…/manifest.parquet` (read_manifest reads URIs): resolving hashes it through the same
    opener, and a loader process's check of that hash reads it too."""
    uri = (train_shards / "manifest.parquet").as_uri()
    assert uri.startswith("file://")
    src = resolve_sources([SourceConfig("gen", kind="online", manifest=uri)], "sed", place)[0]
    _, pool = pickle.loads(pickle.dumps(src)).open()  # as a loader process receives it
    assert pool.sfx or pool.general


def old_saved_config(tmp_path: Path) -> Path:
    """A config.yaml as versions before the sources' own-fields `mixture` wrote it: the full recipe (every
    MixtureConfig field) in every source, shards and global sources included."""
    full = TrainConfig().to_dict()["data"]["mixture"]
    d = TrainConfig().to_dict()
    d["model"]["text_path"] = "x"
    d["data"].update(global_batch=4, sed_batch=4, global_sources=[{"name": "g", "shards": "data/g", "mixture": full}],
                     sed_sources=[{"name": "a", "kind": "online", "manifest": "m.parquet", "mixture": full},
                                  {"name": "b", "shards": "data/b", "mixture": full}])  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def test_a_config_written_by_an_older_version_loads_with_warnings(tmp_path, caplog):
    """Its shards sources' full recipes are dropped (one WARNING); its online source keeps its recipe, with a
    WARNING that data.mixture overrides do not reach it."""
    with caplog.at_level("WARNING", logger="model.train.config"):
        cfg = load(old_saved_config(tmp_path), ["data.mixture.max_events=3"])
    (g,), (a, b) = cfg.data.global_sources, cfg.data.sed_sources
    assert g.mixture == {} and b.mixture == {}
    assert source_recipe(cfg.data.mixture, a, "a").max_events == 10  # its own full recipe hides the override
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings
    dropped = next(w for w in warnings if "data.global_sources[0] (g)" in w)
    assert "data.sed_sources[1] (b)" in dropped and "older version" in dropped and "ignored" in dropped
    online = next(w for w in warnings if "data.sed_sources[0] (a)" in w)
    assert "data.mixture overrides do not reach it" in online and "delete its mixture: keys" in online


def test_a_partial_mixture_on_a_shards_source_is_still_an_error(tmp_path):
    path = old_saved_config(tmp_path)
    with pytest.raises(
        ValueError, match=r"data.sed_sources\[1\] \(b\): mixture does not apply to a shards source"
    ):
        load(path, ["data.sed_sources.1.mixture={max_events: 3}"])


def test_a_bank_changed_after_resolve_is_refused_in_the_loader_process(train_shards, banks, tmp_path):
    """A retry of unreadable sources rebuilds chunks in place (bank.json rewritten, same folder): a loader process
    that opens the bank later would mix from more sources than its peers, so it refuses with a clear error."""
    root = tmp_path / "root"
    shutil.copytree(banks["int16"], root / banks["int16"].name)
    place = BankPlace(root, BankConfig(build_workers=1, chunk_sources=32))
    src = resolve_sources([online_cfg(train_shards)], "sed", place)[0]
    assert Path(src.bank_folder) == root / banks["int16"].name  # found, not rebuilt
    pickle.loads(pickle.dumps(src)).open()  # unchanged: fine
    meta_path = Path(src.bank_folder) / "bank.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "retried": 1}))
    with pytest.raises(
        ValueError, match=r"online source 'gen': source bank .* changed since this run resolved it"
    ):
        pickle.loads(pickle.dumps(src)).open()


@pytest.mark.parametrize("wait", [".inf", "1e300", "0", "-5", ".nan"])
def test_bank_wait_must_be_a_finite_positive_number_of_seconds(wait):
    with pytest.raises(ValueError) as e:
        load(None, ["data.sed_batch=4", "loss.clip=0", "data.global_batch=0", f"data.bank.wait_s={wait}"],
             **{"data.sed_sources": [{"name": "a", "kind": "online", "manifest": "m"}]})  # fmt: skip
    assert "data.bank.wait_s must be a finite number of seconds > 0" in str(e.value) and "\n" not in str(
        e.value
    )


def _failed_resolve_worker(rank: int, port: int, out: str) -> None:
    import datetime
    import os
    import time

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))  # fmt: skip
    import model.train.trainer as trainer_mod

    def resolve(sources, stream, place=None, mixture=None):  # noqa: ANN001, ANN202 - resolve_sources' signature
        if rank == 1:  # e.g. its manifest cannot be read there
            raise DataError("online source 'a': cannot read manifest 'm' (no such file)")
        return []

    trainer_mod.resolve_sources = resolve
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=120))
    cfg = load(None, ["loss.clip=0", "data.global_batch=0", "data.sed_batch=2", "data.bank.wait_s=90"],
               **{"data.sed_sources": [{"name": "a", "kind": "online", "manifest": "m"}]})  # fmt: skip
    t0 = time.perf_counter()
    try:
        trainer_mod.Trainer(cfg, out).setup()
        result = {"error": None}
    except Exception as e:  # noqa: BLE001 - what each rank raised is the test's result
        result = {"error": str(e), "type": type(e).__name__}
    result["s"] = time.perf_counter() - t0
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes importing the trainer: ~30 s on the shared 2-core machine
def test_a_rank_that_cannot_resolve_its_sources_stops_every_rank_at_once(tmp_path):
    """One rank's resolve error (a bad manifest, a failed smoke mixture) reaches every rank at the bank meeting:
    all raise a DataError naming the failing rank and its error, instead of the others waiting data.bank.wait_s."""
    assert _spawn_two_ranks(_failed_resolve_worker, tmp_path, timeout_s=240) == [0, 0]
    for r in range(2):
        got = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert got["type"] == "DataError" and got["s"] < 60, got
        assert got["error"].startswith(
            "rank 1 of 2 could not resolve its SED sources: online source 'a': cannot"
        )


def test_rows_the_bank_leaves_out_are_counted_as_pool_skips(train_shards, place, tmp_path):
    """A captionless event and a row with a bad duration never reach the bank (`bank_rows`): they are counted in
    `left_out` under the pool's reasons, as the shard renderer's pool counts them."""
    rows = read_manifest(train_shards / "manifest.parquet").to_pylist()
    event = next(r for r in rows if r["split"] == "train" and r["kind"] == "event")
    background = next(r for r in rows if r["split"] == "train" and r["kind"] == "background")
    rows += [
        {**event, "id": "no-caption", "captions": []},
        {**background, "id": "bad-duration", "duration_s": -1.0},
    ]
    write_manifest(rows, tmp_path / "m.parquet")
    cfg = SourceConfig("gen", kind="online", manifest=str(tmp_path / "m.parquet"))
    src = resolve_sources([cfg], "sed", place)[0]  # the same bank rows: the session's bank is found
    left = pickle.loads(pickle.dumps(src)).left_out()
    assert left["pool_skipped/event_no_caption"] == 1 and left["pool_skipped/background_bad_duration"] == 1
