"""The trainer's two data streams (§5.1): global (audio-text shards → L_CLIP) and SED (mixture shards → L_SED).

Determinism and exact resume
----------------------------
Every random choice derives from ``(seed, stream, rank, virtual worker, interval)``:

* The batch of training step ``t`` (0-based: the batch that produces step ``t + 1``) is built by virtual
  worker ``v = t mod n_workers`` of its rank, whichever loader process runs it, in data interval
  ``c = t // interval_steps``. A virtual worker's state (shard order, source mix, shuffle buffers) is
  re-seeded at the start of every interval.
* Per-sample choices (text, tag swap, augmentation) use ``default_rng([seed, stream, rank, v, c, n])`` where
  ``n`` counts the samples the virtual worker has accepted in the interval.
* Resuming at step ``s`` rebuilds each virtual worker's interval state and fast-forwards it over the batches
  of ``[c·interval, s)``: it walks tar headers and decodes (to reproduce skips of undecodable samples) but
  never augments or labels. So ``--steps 3`` then ``--resume --steps 6`` equals ``--steps 6`` exactly.

Sources and weights
-------------------
A source's weight is the probability that a sample of its stream comes from it (weights are normalised over
the stream's sources). Within an interval each virtual worker walks its share of the source's shards
(shards are permuted per epoch with a seed shared by all workers; worker ``g`` of ``G = world × workers``
takes every G-th shard; with fewer shards than workers, workers share a shard and take every k-th sample)
and shuffles samples through a buffer of references.

Online sources
--------------
A SED source of kind ``online`` (``model.train.online``) has no shards: each of its samples is a mixture
synthesised in the worker from a memory-mapped source bank, exactly what the shard pipeline would render for the
same spec, and goes through the same label code as a shard sample. Its spec seeds derive from
``(seed, stream, source, rank, v, c)`` and its n-th mixture of the interval is spec index n, so fast-forwarding
only counts mixtures. Per-source counters of the renderer (events placed, unplaceable, dropped by relabeling,
clip scaling, …) travel with the batch (``online``: ``source/counter`` → count).

Bad data
--------
A sample whose JSON or audio cannot be read, or whose labels are malformed, is skipped, logged with its
source, shard and key, and counted in the batch (``skipped``: source → reason → count); a damaged shard is
skipped from the damage on. A source none of whose shards yields a sample is an error.
"""

from __future__ import annotations

import io
import json
import logging
import signal
import tarfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from model.text_slots import build_text_slots, normalize_text
from model.train.config import BankConfig, DataConfig, SourceConfig, source_recipe
from model.train.online import MixtureRef, OnlineSource, resolve_online, spec_seed
from model.train.shards import SampleRef, expand_shards, iter_refs, open_shard, read_member
from synth.audio import resample
from synth.spec import MixtureConfig

log = logging.getLogger(__name__)

SAMPLE_RATE = 48000
CLIP_SAMPLES = 480000
CLIP_SECONDS = 10.0
_STREAM_ID = {"global": 1, "sed": 2}


class DataError(ValueError):
    """A data source cannot be used at all (raised before training or when a source yields nothing)."""


@dataclass(frozen=True)
class Source:
    name: str
    shards: tuple[str, ...]
    weight: float


@dataclass(frozen=True)
class BankPlace:
    """Where and for which rank online sources build their source bank."""

    root: Path
    bank: BankConfig
    rank: int = 0
    world: int = 1


def resolve_sources(sources: Sequence[SourceConfig], stream: str, bank: BankPlace | None = None,
                    mixture: MixtureConfig | None = None) -> list[Source | OnlineSource]:  # fmt: skip
    """Expand every source's shard pattern (a source that matches no file raises DataError naming it); online
    sources get their recipe (`mixture`, i.e. data.mixture — default the paper's — under the source's own fields)
    and their source bank (built under `bank.root` when missing)."""
    out: list[Source | OnlineSource] = []
    for i, s in enumerate(sources):
        name = s.name or f"{stream}{i}"
        if s.kind == "online":
            if bank is None:
                raise DataError(f"data source {name!r} ({stream} stream): online sources need a bank folder")
            try:
                recipe = source_recipe(mixture or MixtureConfig(), s, f"data.{stream}_sources[{i}] ({name})")
                out.append(resolve_online(s, name, recipe, bank.bank, bank.root, bank.rank, bank.world))
            except ValueError as e:
                raise DataError(str(e)) from None
            continue
        files = expand_shards(s.shards)
        if not files:
            raise DataError(f"data source {name!r} ({stream} stream): no shard file matches {s.shards!r}")
        out.append(Source(name, tuple(files), float(s.weight)))
    return out


# ------------------------------------------------------------------------------------------ references


def _count_skip(skipped: Counter, source: str, where: str, reason: str, err: Exception) -> None:
    """Count a skipped sample or shard under (source, reason) and log it with its place."""
    skipped[(source, reason)] += 1
    log.warning("skipped %s %s (%s): %s", source, where, reason, err)


class _Files:
    """Open shard files shared by the header walkers and the buffered references (reference counted)."""

    def __init__(self) -> None:
        self.open: dict[str, list[Any]] = {}

    def acquire(self, path: str) -> Any:
        if path not in self.open:
            self.open[path] = [open_shard(path), 0]
        self.open[path][1] += 1
        return self.open[path][0]

    def release(self, path: str) -> None:
        entry = self.open.get(path)
        if entry is None:  # already closed by close() (a walker finalised after its sampler)
            return
        entry[1] -= 1
        if entry[1] == 0:
            entry[0].close()
            del self.open[path]

    def close(self) -> None:
        for f, _ in self.open.values():
            f.close()
        self.open.clear()


def _assignment(perm: np.ndarray, g: int, n_workers: int) -> list[tuple[int, int, int]]:
    """(shard index, offset, stride) tasks of global worker g among n_workers for one shard permutation."""
    n = len(perm)
    if n >= n_workers:
        return [(int(perm[p]), 0, 1) for p in range(g, n, n_workers)]
    sharing = [w for w in range(n_workers) if w % n == g % n]  # workers reading the same shard
    return [(int(perm[g % n]), sharing.index(g), len(sharing))]


class _SourceWalker:
    """Infinite sample references of one source for one global worker in one interval."""

    def __init__(self, source: Source, key: list[int], g: int, n_workers: int, files: _Files,
                 skipped: Counter) -> None:  # fmt: skip
        self.source, self.key, self.g, self.n_workers = source, key, g, n_workers
        self.files, self.skipped = files, skipped
        self.it = self._walk()

    def _walk(self) -> Iterator[SampleRef]:
        epoch, share = 0, True
        while True:
            perm = np.random.default_rng([*self.key, epoch]).permutation(len(self.source.shards))
            tasks = _assignment(perm, self.g, self.n_workers) if share else [(int(i), 0, 1) for i in perm]
            got = 0
            for idx, offset, stride in tasks:
                path = self.source.shards[idx]
                try:
                    f = self.files.acquire(path)
                except OSError as e:
                    _count_skip(self.skipped, self.source.name, path, "shard_unreadable", e)
                    continue
                try:
                    for i, ref in enumerate(iter_refs(path, f)):
                        if i % stride == offset:
                            got += 1
                            yield ref
                except (tarfile.TarError, OSError, EOFError) as e:
                    _count_skip(self.skipped, self.source.name, path, "shard_damaged", e)
                finally:
                    self.files.release(path)
            if got == 0:
                if not share:
                    raise DataError(f"data source {self.source.name!r}: none of its {len(self.source.shards)} "
                                    "shard(s) holds a readable sample")  # fmt: skip
                share = False  # fewer samples than workers: this worker reads whole shards from now on
            epoch += 1


class StreamSampler:
    """Sample references of one stream for (rank, virtual worker, interval): source mix + shuffle buffers."""

    def __init__(self, sources: Sequence[Source], seed: int, stream: str, rank: int, world: int,
                 vworker: int, n_vworkers: int, interval: int, buffer: int) -> None:  # fmt: skip
        sid = _STREAM_ID[stream]
        self.sources, self.buffer = list(sources), buffer
        self.files = _Files()
        self.skipped: Counter = Counter()
        g, n_workers = rank * n_vworkers + vworker, world * n_vworkers
        self.walkers = [
            None if isinstance(s, OnlineSource)
            else _SourceWalker(s, [seed, sid, i, interval], g, n_workers, self.files, self.skipped)
            for i, s in enumerate(self.sources)
        ]  # fmt: skip
        self.spec_seeds = [spec_seed(seed, sid, i, rank, vworker, interval) for i in range(len(self.sources))]
        self.mixtures = [0] * len(self.sources)  # online sources: mixtures drawn in this interval
        w = np.array([s.weight for s in self.sources], dtype=np.float64)
        self.probs = w / w.sum()
        self.rng = np.random.default_rng([seed, sid, rank, vworker, interval, 0xB0F])
        self.buffers: list[list[SampleRef]] = [[] for _ in self.sources]

    def next_ref(self) -> tuple[int, SampleRef | MixtureRef]:
        s = int(self.rng.choice(len(self.sources), p=self.probs)) if len(self.sources) > 1 else 0
        if self.walkers[s] is None:
            self.mixtures[s] += 1
            return s, MixtureRef(self.spec_seeds[s], self.mixtures[s] - 1)
        buf = self.buffers[s]
        while len(buf) < self.buffer:
            ref = next(self.walkers[s].it)
            self.files.acquire(ref.shard)
            buf.append(ref)
        j = int(self.rng.integers(len(buf)))
        ref = buf[j]
        buf[j] = buf[-1]
        buf.pop()
        return s, ref

    def read(self, ref: SampleRef) -> dict[str, bytes]:
        """Bytes of every member of the sample; releases the buffer's hold on its shard."""
        try:
            f = self.files.open[ref.shard][0]
            return {ext: read_member(f, off, size) for ext, off, size in ref.members}
        finally:
            self.files.release(ref.shard)

    def close(self) -> None:
        self.files.close()


# ------------------------------------------------------------------------------------------ samples


class BadSample(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


INT16_SCALE = 32768.0  # libsndfile's float decoding of 16-bit PCM is exactly sample / 32768


def decode_clip(data: bytes, allow_int16: bool = False) -> np.ndarray:
    """FLAC/WAV bytes → mono 48-kHz audio, exactly 10 s (zero-padded or cut at the end; at most 10 s is read).

    Float32 in [-1, 1] by default. With `allow_int16`, a mono 16-bit 48-kHz file (what the renderer writes) comes
    back as its int16 samples: half the bytes to move to the trainer, and `model.train.step` turns them into
    exactly the float32 values above (÷ 32768) on the device."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            sr, channels = int(f.samplerate), int(f.channels)
            frames = int(np.ceil(CLIP_SECONDS * sr))
            if allow_int16 and channels == 1 and sr == SAMPLE_RATE and f.subtype == "PCM_16":
                y = f.read(frames=frames, dtype="int16")
                if len(y) == 0:
                    raise BadSample("decode_error", "audio holds no samples")
                return fit_length(y)
            x = f.read(frames=frames, dtype="float32", always_2d=True)
    except BadSample:
        raise
    except Exception as e:  # noqa: BLE001 - libsndfile raises several types
        raise BadSample("decode_error", f"cannot decode audio ({e})") from None
    if x.shape[0] == 0:
        raise BadSample("decode_error", "audio holds no samples")
    y = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
    if sr != SAMPLE_RATE:
        y = resample(y, sr, SAMPLE_RATE)
    if not np.all(np.isfinite(y)):
        raise BadSample("decode_error", "audio contains NaN or infinity")
    return fit_length(y)


def fit_length(y: np.ndarray, n: int = CLIP_SAMPLES) -> np.ndarray:
    """`y` cut or zero-padded to n samples, contiguous, dtype kept (float32 or int16)."""
    dtype = np.int16 if y.dtype == np.int16 else np.float32
    if len(y) >= n:
        return np.ascontiguousarray(y[:n], dtype=dtype)
    return np.pad(y, (0, n - len(y))).astype(dtype, copy=False)


def to_float(y: np.ndarray) -> np.ndarray:
    return y.astype(np.float32) / np.float32(INT16_SCALE) if y.dtype == np.int16 else y


def _parse_json(files: Mapping[str, bytes]) -> dict[str, Any]:
    if "json" not in files:
        raise BadSample("missing_member", "sample has no .json member")
    try:
        rec = json.loads(files["json"].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadSample("bad_json", f"malformed JSON ({e})") from None
    if not isinstance(rec, dict):
        raise BadSample("bad_json", "JSON is not an object")
    return rec


def _audio_bytes(files: Mapping[str, bytes]) -> bytes:
    for ext in ("flac", "wav"):
        if ext in files:
            return files[ext]
    raise BadSample("missing_member", "sample has no .flac or .wav member")


def _strings(rec: Mapping[str, Any], key: str) -> list[str]:
    v = rec.get(key) or []
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list):
        return []
    return [t for t in (normalize_text(x) for x in v if isinstance(x, str)) if t]


def global_text(rec: Mapping[str, Any], rng: np.random.Generator) -> str:
    """C.5: one random caption + one random tag, "caption, tag" (either alone when the other is missing)."""
    captions, tags = _strings(rec, "text"), _strings(rec, "tag")
    if not captions and not tags:
        raise BadSample("no_text", "audio-text sample has neither captions ('text') nor tags ('tag')")
    parts = []
    if captions:
        parts.append(captions[int(rng.integers(len(captions)))])
    if tags:
        parts.append(tags[int(rng.integers(len(tags)))])
    return normalize_text(", ".join(parts))


def sed_events(rec: Mapping[str, Any], rng: np.random.Generator, tag_prob: float) -> list[dict[str, Any]]:
    """C.6: the events with their text replaced by one of their tags with probability `tag_prob`."""
    events = rec.get("events")
    if not isinstance(events, list):
        raise BadSample("bad_labels", "mixture JSON has no 'events' list")
    out = []
    for j, ev in enumerate(events):
        if (
            not isinstance(ev, dict)
            or not isinstance(ev.get("text"), str)
            or not isinstance(ev.get("segments"), list)
        ):
            raise BadSample("bad_labels", f"event {j} lacks a text or a segments list")
        text = normalize_text(ev["text"])
        tags = _strings(ev, "tags")
        swapped = bool(tags) and rng.random() < tag_prob
        if swapped:
            text = tags[int(rng.integers(len(tags)))]
        if not text:
            raise BadSample("bad_labels", f"event {j} has an empty text")
        out.append({"text": text, "segments": ev["segments"], "tag_swapped": swapped})
    return out


def sed_labels(rec: Mapping[str, Any], rng: np.random.Generator, tag_prob: float) -> dict[str, Any]:
    """A mixture record's events (C.6 tag swaps drawn from `rng`) cut at its real duration, on the 10-s grid of
    the (padded) clip the model sees. clip_segments has checked every segment, so the batch's frame labels
    cannot fail on this sample. Shard and online samples alike."""
    events = sed_events(rec, rng, tag_prob)
    duration = float(rec.get("duration", CLIP_SECONDS))
    if not duration > 0:
        raise BadSample("bad_labels", f"duration {duration!r} is not positive")
    return {"events": clip_segments(events, min(duration, CLIP_SECONDS)), "duration": CLIP_SECONDS}


def clip_segments(events: list[dict[str, Any]], duration: float) -> list[dict[str, Any]]:
    """Segments cut at the clip's real length (audio past it is zero padding, never an event)."""
    out = []
    for ev in events:
        segs = []
        for seg in ev["segments"]:
            if not isinstance(seg, list | tuple) or len(seg) != 2:
                raise BadSample("bad_labels", f"segment {seg!r} is not [onset, offset]")
            on, off = float(seg[0]), float(seg[1])
            if not (np.isfinite(on) and np.isfinite(off)) or off < on:
                raise BadSample("bad_labels", f"invalid segment [{on}, {off}]")
            if min(off, duration) > max(on, 0.0):
                segs.append([max(on, 0.0), min(off, duration)])
        out.append({**ev, "segments": segs})
    return out


def augment_rate(rng: np.random.Generator, prob: float, rates: Sequence[int]) -> int:
    """C.5: with probability `prob` a clip is down-sampled to a random rate of `rates` (0: left alone)."""
    if not rates or rng.random() >= prob:
        return 0
    return int(rates[int(rng.integers(len(rates)))])


def augment(
    y: np.ndarray, rng: np.random.Generator, prob: float, rates: Sequence[int], apply: bool = True
) -> tuple[np.ndarray, int]:
    """C.5: down-sample to the drawn rate and back to 48 kHz (soxr) when `apply`; returns (audio, rate or 0).

    With `apply=False` only the rate is drawn: the trainer resamples on its device (`model.train.step`)."""
    rate = augment_rate(rng, prob, rates)
    if rate == 0 or not apply:
        return y, rate
    return fit_length(resample(resample(y, SAMPLE_RATE, rate), rate, SAMPLE_RATE)), rate


# ------------------------------------------------------------------------------------------ batches


@dataclass
class _Interval:
    index: int
    samplers: dict[str, StreamSampler]
    accepted: dict[str, int]
    online: Counter  # (source, counter) → count since the last batch


class TrainStream(IterableDataset):
    """Per-rank batches for steps [start_step, end_step); see the module docstring for the exact rules."""

    def __init__(self, cfg: DataConfig, sources: Mapping[str, Sequence[Source]], seed: int, n_frames: int,
                 rank: int, world: int, start_step: int, end_step: int) -> None:  # fmt: skip
        super().__init__()
        self.cfg, self.sources, self.seed, self.n_frames = cfg, dict(sources), seed, n_frames
        self.rank, self.world, self.start, self.end = rank, world, start_step, end_step
        for name, total in (("global_batch", cfg.global_batch), ("sed_batch", cfg.sed_batch)):
            if total % world:
                raise ValueError(f"data.{name}={total} is not divisible by the world size {world}")
        self.batch = {"global": cfg.global_batch // world, "sed": cfg.sed_batch // world}
        self.batch = {k: v for k, v in self.batch.items() if v > 0 and self.sources.get(k)}
        self.n_vworkers = max(cfg.num_workers, 1)
        self._interval: _Interval | None = None
        self._vworker = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        w = info.id if info is not None else 0
        self._vworker = (self.start + w) % self.n_vworkers
        try:
            for t in range(self.start + w, self.end, self.n_vworkers):
                yield self.batch_for(t)
        finally:
            self._close()

    def _close(self) -> None:
        if self._interval is not None:
            for s in self._interval.samplers.values():
                s.close()
            self._interval = None

    def _enter(self, t: int) -> None:
        """Make the interval state current for step t, fast-forwarding over this worker's earlier steps."""
        c = t // self.cfg.interval_steps
        if self._interval is not None and self._interval.index == c:
            return
        self._close()
        samplers = {
            name: StreamSampler(
                self.sources[name],
                self.seed,
                name,
                self.rank,
                self.world,
                self._vworker,
                self.n_vworkers,
                c,
                self.cfg.shuffle_buffer,
            )  # fmt: skip
            for name in self.batch
        }
        self._interval = _Interval(c, samplers, dict.fromkeys(self.batch, 0), Counter())
        first = c * self.cfg.interval_steps
        first += (self._vworker - first) % self.n_vworkers
        for _ in range(first, t, self.n_vworkers):
            for name, n in self.batch.items():
                for _ in range(n):
                    self._next_sample(name, build=False)

    def _next_sample(self, stream: str, build: bool = True) -> dict[str, Any] | None:
        """Draw the stream's next good sample (skipping bad ones); None when `build` is False."""
        iv = self._interval
        sampler = iv.samplers[stream]
        while True:
            s, ref = sampler.next_ref()
            source = sampler.sources[s].name
            n = iv.accepted[stream]
            rng = np.random.default_rng(
                [self.seed, _STREAM_ID[stream], self.rank, self._vworker, iv.index, n]
            )
            if isinstance(ref, MixtureRef):  # online: never skipped, so fast-forwarding only counts
                iv.accepted[stream] = n + 1
                if not build:
                    return None
                wave, rec, counters = sampler.sources[s].render(ref)
                iv.online.update({(source, k): v for k, v in counters.items()})
                if self.cfg.augment_in != "step":
                    wave = to_float(wave)  # = the float decoding of the shard's FLAC
                out = {**sed_labels(rec, rng, self.cfg.tag_prob), "wave": fit_length(wave)}
                return self._finish(out, rng, f"{source}/{ref.key}")
            try:
                files = sampler.read(ref)
                rec = _parse_json(files)
                wave = decode_clip(_audio_bytes(files), allow_int16=self.cfg.augment_in == "step")
                if stream == "global":
                    out = {"text": global_text(rec, rng)}
                else:
                    out = sed_labels(rec, rng, self.cfg.tag_prob)
            except (BadSample, OSError, ValueError, TypeError) as e:
                if isinstance(e, BadSample):
                    reason = e.reason
                else:
                    reason = "read_error" if isinstance(e, OSError) else "bad_labels"
                _count_skip(sampler.skipped, source, f"{ref.shard} key {ref.key}", reason, e)
                continue
            iv.accepted[stream] = n + 1
            if not build:
                return None
            out["wave"] = wave
            return self._finish(out, rng, f"{source}/{ref.key}")

    def _finish(self, out: dict[str, Any], rng: np.random.Generator, key: str) -> dict[str, Any]:
        """C.5 augmentation (drawn here; applied here or in the step) and the sample's key."""
        out["wave"], out["resampled_to"] = augment(
            out["wave"], rng, self.cfg.resample_prob, self.cfg.resample_rates,
            apply=self.cfg.augment_in == "loader",
        )  # fmt: skip
        out["key"] = key
        return out

    def batch_for(self, t: int) -> dict[str, Any]:
        """The per-rank batch of step t (global clips first, then SED clips)."""
        t0 = time.perf_counter()
        self._enter(t)
        samples = {name: [self._next_sample(name) for _ in range(n)] for name, n in self.batch.items()}
        batch = collate(samples.get("global", []), samples.get("sed", []), self.cfg, self.n_frames)
        skipped: Counter = Counter()
        for sampler in self._interval.samplers.values():
            skipped.update(sampler.skipped)
            sampler.skipped.clear()
        batch["skipped"] = {f"{src}/{reason}": n for (src, reason), n in sorted(skipped.items())}
        batch["online"] = {f"{src}/{k}": n for (src, k), n in sorted(self._interval.online.items())}
        self._interval.online.clear()
        batch["step"] = t
        batch["data_time"] = time.perf_counter() - t0
        return batch


def collate(g: Sequence[Mapping[str, Any]], s: Sequence[Mapping[str, Any]], cfg: DataConfig,
            n_frames: int) -> dict[str, Any]:  # fmt: skip
    """A per-rank batch from global samples `g` and SED samples `s` (text slots built over `s`).

    Also counts what the realised augmentation and tag rates are measured from (`n_resampled`,
    `n_events`, `n_tag_swaps`)."""
    both = list(g) + list(s)
    waves = [x["wave"] for x in both]
    if any(w.dtype != np.int16 for w in waves):  # one dtype per batch: int16 only when every clip is int16
        waves = [to_float(w) for w in waves]
    wave = torch.from_numpy(np.stack(waves)) if both else torch.zeros(0, CLIP_SAMPLES)
    batch: dict[str, Any] = {
        "wave": wave,
        "global_texts": [x["text"] for x in g],
        "n_global": len(g),
        "keys": [x["key"] for x in both],
        "n_resampled": sum(1 for x in both if x.get("resampled_to")),
        # rates still to apply in the step (augment_in="step"); 0 = none or already applied in the loader
        "resample_to": torch.tensor(
            [x.get("resampled_to", 0) if cfg.augment_in == "step" else 0 for x in both], dtype=torch.int64
        ),
        "n_events": sum(len(x["events"]) for x in s),
        "n_tag_swaps": sum(ev["tag_swapped"] for x in s for ev in x["events"]),
    }
    if s:
        slots = build_text_slots(
            [x["events"] for x in s], [x["duration"] for x in s], n_frames, slots_per_clip=cfg.slots_per_clip,
            n_slots=cfg.n_slots or None, min_overlap=cfg.min_overlap, overflow=cfg.overflow,
        )  # fmt: skip
        batch.update(
            slot_texts=slots.texts, text_ids=slots.text_ids, text_mask=slots.text_mask,
            event_ids=slots.event_ids, event_frames=slots.event_frames,
            n_unique_texts=slots.n_unique_texts, n_dropped_texts=slots.n_dropped_texts,
        )  # fmt: skip
    return batch


def _worker_init(_: int) -> None:
    # Ctrl-C reaches the whole process group: the trainer handles it; workers must not die mid-batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(stream: TrainStream, pin_memory: bool = False, seed: int = 0) -> DataLoader:
    """One batch per item (batches are built inside the workers); workers start with forkserver.

    The loader draws its base seed from a generator of its own, so creating it never advances the global
    torch RNG (a resumed run would otherwise see different drop-path / SpecAugment draws)."""
    nw = stream.cfg.num_workers
    return DataLoader(
        stream,
        generator=torch.Generator().manual_seed(seed),
        batch_size=None,
        num_workers=nw,
        multiprocessing_context="forkserver" if nw > 0 else None,
        worker_init_fn=_worker_init if nw > 0 else None,
        prefetch_factor=2 if nw > 0 else None,
        pin_memory=pin_memory,
    )
