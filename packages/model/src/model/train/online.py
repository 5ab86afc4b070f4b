"""SED source kind `online`: mixtures synthesised in the loader workers from a source bank — no shards.

A mixture is what `pipelines/render_mixtures.py` would write for the same spec, made by the same code:
`synth.spec.sample_spec` (placement), `synth.render.render_mixture` (mix + RMS relabel, App. C.4),
`synth.records.mixture_record` (the sample JSON) and `synth.flac.quantize_pcm16` (the 16-bit samples a FLAC
shard holds). The sources come from a `synth.bank.SourceBank` (decoded once per run and machine, memory-mapped,
shared by every loader process) instead of an `AudioCache` per process.

Determinism: mixture n of an online source in virtual worker v of rank r in data interval c is
``sample_spec(pool, recipe, spec_seed(seed, stream, i, r, v, c), n)`` — nothing else is random, so resuming
only counts the mixtures of the interval's earlier steps (no rendering). Its sample key is
``<source>/<spec_seed>-<n>``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.text_slots import normalize_text
from model.train.config import BankConfig, SourceConfig
from synth.bank import DTYPES as BANK_DTYPES
from synth.bank import BankOptions, SourceBank, bank_rows, in_part, prepare_bank
from synth.flac import quantize_pcm16
from synth.paths import is_uri, local_path
from synth.records import mixture_record
from synth.render import render_mixture
from synth.spec import MixtureConfig, SourcePool, mode_counts, sample_spec

log = logging.getLogger(__name__)

SAMPLE_RATE = 48000
# per-source counters on every metrics line of the trainer (summed over ranks, since the last line); any other
# stat of a mixture (a sampler or renderer note, e.g. split_no_source, background_silent) is added when it occurs
COUNTERS = (
    "mixtures",
    "events_placed",
    "events_labelled",
    "events_dropped_by_relabel",
    "unplaced",
    "clip_scaled",
)


@dataclass(frozen=True)
class MixtureRef:
    """Which mixture to synthesise: `sample_spec(pool, recipe, seed, index)`."""

    seed: int
    index: int

    @property
    def key(self) -> str:
        return f"{self.seed}-{self.index}"


def spec_seed(seed: int, stream: int, source: int, rank: int, vworker: int, interval: int) -> int:
    """The 64-bit spec seed of one (source, rank, virtual worker, interval)."""
    ss = np.random.SeedSequence([seed, stream, source, rank, vworker, interval, 0x0F11E])
    return int(ss.generate_state(1, np.uint64)[0])


def bank_part(rank: int, world: int, parts: int) -> int:
    """Rank r uses bank part r·parts // world: ranks are numbered node by node under torchrun, so with
    `parts` = nodes each node holds one part."""
    return rank * parts // world


def file_sha256(path: str) -> str:
    """The sha256 of a file named as `synth.manifest.read_manifest` takes it: a local path or ``file://`` (opened
    locally), or any other URI (gs://, s3://, …: opened through pyarrow's filesystems, as `read_manifest` does)."""
    if is_uri(path):
        import pyarrow.fs

        fs, inner = pyarrow.fs.FileSystem.from_uri(path)
        with fs.open_input_stream(inner) as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    with open(local_path(path), "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def bank_identity(bank: SourceBank) -> str:
    """The sha256 of a bank's index as opened (bank.json): a retry that rebuilds chunks in the same folder
    rewrites it."""
    return hashlib.sha256(json.dumps(bank.meta, sort_keys=True).encode()).hexdigest()


def read_rows(manifest: str) -> list[dict[str, Any]]:
    from synth.manifest import read_manifest

    return read_manifest(manifest).to_pylist()


class OnlineSource:
    """One `online` SED source: recipe + pool + bank. Pickles as its settings; a loader process opens the bank
    and builds the pool on first use."""

    def __init__(self, name: str, weight: float, manifest: str, split: str, mixture: MixtureConfig,
                 bank_folder: str, part: int, parts: int, manifest_sha256: str | None = None,
                 bank_sha256: str | None = None, refused: dict[str, int] | None = None) -> None:  # fmt: skip
        self.name, self.weight, self.manifest, self.split = name, float(weight), manifest, split
        self.mixture, self.bank_folder, self.part, self.parts = mixture, bank_folder, part, parts
        # what the run resolved (`file_sha256`, `bank_identity`): every loader process checks both
        self.manifest_sha256, self.bank_sha256 = manifest_sha256, bank_sha256
        # the rows bank_rows left out, by reason (`bank_refusals`): counted as the pool's skips
        self.refused = dict(refused or {})
        self._bank: SourceBank | None = None
        self._pool: SourcePool | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_bank", "_pool")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bank = self._pool = None

    def open(self) -> tuple[SourceBank, SourcePool]:
        """The bank and the pool of the manifest's sources that are in it (the same rows the shard pipeline's
        pool would hold, less those the bank could not decode)."""
        if self._bank is None:
            bank = SourceBank(self.bank_folder)
            if self.bank_sha256 is not None and bank_identity(bank) != self.bank_sha256:
                raise ValueError(
                    f"online source {self.name!r}: source bank {self.bank_folder} changed since this run resolved "
                    "it (a retry of unreadable sources?); resume the run to use it"
                )
            if self.manifest_sha256 is not None and file_sha256(self.manifest) != self.manifest_sha256:
                raise ValueError(
                    f"online source {self.name!r}: manifest {self.manifest} changed since this run resolved it, so "
                    "loader processes would sample from different pools; restore it, or resume (or start) the run "
                    "to use the new one"
                )
            rows = [r for r in bank_rows(read_rows(self.manifest), self.split, self.part, self.parts)
                    if str(r["id"]) in bank]  # fmt: skip
            rows, dropped = drop_empty_texts(rows)
            m = self.mixture  # the pool RenderMixtureShardFn builds for this recipe
            self._pool = SourcePool.from_manifest(
                rows, self.split, min_background_s=m.duration_s, min_event_s=m.min_event_s
            )
            self._pool.skipped.update(dropped)
            self._pool.skipped.update(self.refused)
            self._bank = bank
        return self._bank, self._pool

    def left_out(self) -> dict[str, int]:
        """What never reaches a mixture, by reason: ``sources_left_out/<reason>`` (sources of this bank part that
        could not be decoded, bank.json) and ``pool_skipped/<reason>`` (manifest rows of the split and part the
        pool refused: events without captions and bad durations, which `bank_rows` already leaves out of the bank;
        sources too short for the recipe; captions and tags `drop_empty_texts` removed)."""
        bank, pool = self.open()
        out = {f"sources_left_out/{r}": int(n) for r, n in bank.meta.get("failed", {}).items()}
        out.update({f"pool_skipped/{r}": int(n) for r, n in pool.skipped.items()})
        return dict(sorted(out.items()))

    def render(self, ref: MixtureRef, full_spec: bool = False) -> tuple[np.ndarray, dict[str, Any], Counter]:
        """(int16 samples as a FLAC shard would hold them, the shard's sample JSON, counters). The JSON's `spec`
        is the whole spec with `full_spec`, else only its seed and index (the loader reads the events only)."""
        bank, pool = self.open()
        spec = sample_spec(pool, self.mixture, ref.seed, ref.index)
        try:
            rendered = render_mixture(spec, bank, self.mixture)
        except Exception as e:  # a bank holds every pool source: a failure here is a bug, not bad data
            raise RuntimeError(f"online source {self.name!r}: mixture {ref.key} failed to render: {e}") from e
        rec = mixture_record(
            f"{self.name}/{ref.key}", spec if full_spec else _SpecId(spec), rendered, SAMPLE_RATE
        )
        return quantize_pcm16(rendered.audio), rec, mixture_counters(spec, rendered, len(rec["events"]))


def bank_refusals(rows: list[dict[str, Any]], split: str, part: int, parts: int) -> Counter:
    """The rows of `split` (and part) that `bank_rows` leaves out, by reason: what its pool (no length limits)
    refuses — events without captions (`event_no_caption`), bad durations (`event_bad_duration`, …)."""
    mine = [r for r in rows if r.get("split") == split and in_part(str(r["id"]), part, parts)]
    return SourcePool.from_manifest(mine, split, min_background_s=0.0, min_event_s=0.0).skipped


def drop_empty_texts(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Counter]:
    """The rows with every caption and tag that `normalize_text` turns into "" (e.g. "...") removed, and their
    counts (`caption_empty_text`, `tag_empty_text`); an event left without a caption is removed too
    (`event_empty_captions`). An online mixture is never skipped, so an event text the labels would refuse
    (`model.train.data.sed_events`) must not reach one; the shard path skips such a mixture instead."""
    dropped: Counter = Counter()
    out = []
    for row in rows:
        row = dict(row)
        for key, reason in (("captions", "caption_empty_text"), ("tags", "tag_empty_text")):
            values = row.get(key) or []
            kept = [v for v in values if isinstance(v, str) and normalize_text(v)]
            dropped[reason] += len(values) - len(kept)
            row[key] = kept
        if row.get("kind") == "event" and not row["captions"]:
            dropped["event_empty_captions"] += 1
            continue
        out.append(row)
    return out, +dropped


class _SpecId:
    """A spec as `mixture_record` sees it when only the labels are needed: `to_dict` gives its seed and index
    (the full dict is a deep copy, ~0.3 ms per mixture)."""

    def __init__(self, spec: Any) -> None:
        self.seed, self.index = spec.seed, spec.index

    def to_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "index": self.index}


def mixture_counters(spec: Any, rendered: Any, labelled: int) -> Counter:
    """The stats `RenderMixtureShardFn` records per mixture (its sidecar `stats`): sampler and renderer
    notes, placed events by mode, and the plain counters."""
    out = Counter(spec.notes) + Counter(rendered.notes) + Counter(mode_counts(spec.events))
    out.update(
        mixtures=1, events_placed=len(spec.events), events_labelled=labelled,
        events_dropped_by_relabel=int(rendered.dropped_events), clip_scaled=int(float(rendered.clip_scale) < 1.0),
    )  # fmt: skip
    return out


def resolve_online(cfg: SourceConfig, name: str, m: MixtureConfig, bank: BankConfig, bank_root: Path, rank: int,
                   world: int) -> OnlineSource:  # fmt: skip
    """Check an online source with its recipe `m` (`source_recipe`), build (or find) its bank and return it;
    ValueError names what is wrong. One mixture is made here, so a recipe that cannot make any on this pool
    stops the run before training, not in a loader worker (a failure that depends on the draw can still come
    later, in `render`)."""
    if bank.parts > world:
        raise ValueError(
            f"data.bank.parts={bank.parts} exceeds the world size {world} (each part needs a rank)"
        )
    try:
        digest = file_sha256(cfg.manifest)
        rows = read_rows(cfg.manifest)
    except (OSError, ValueError) as e:
        raise ValueError(f"online source {name!r}: cannot read manifest {cfg.manifest!r} ({e})") from None
    part = bank_part(rank, world, bank.parts)
    try:
        chosen = bank_rows(rows, cfg.split, part, bank.parts)
        refused = bank_refusals(rows, cfg.split, part, bank.parts)
    except ValueError as e:
        raise ValueError(f"online source {name!r} ({cfg.manifest}, split {cfg.split}): {e}") from None
    opts = BankOptions(dtype=bank.dtype, energy=bank.energy, sample_rate=SAMPLE_RATE, chunk_sources=bank.chunk_sources,
                       workers=bank.build_workers, part=part, parts=bank.parts)  # fmt: skip
    try:
        folder = prepare_bank(chosen, bank_root, opts)
    except OSError as e:
        raise ValueError(
            f"online source {name!r}: cannot build the source bank in {bank_root} ({e})"
        ) from None
    src = OnlineSource(name, cfg.weight, cfg.manifest, cfg.split, m, str(folder), part, bank.parts, digest,
                       refused=refused)  # fmt: skip
    try:  # fails here, before training: a damaged bank, or one that lost every event source
        b, pool = src.open()
    except (OSError, ValueError) as e:
        raise ValueError(f"online source {name!r}: source bank {folder} cannot be used ({e})") from None
    src.bank_sha256 = bank_identity(b)  # the bank as this rank uses it: its loader processes check it
    try:
        src.render(MixtureRef(0, 0))
    except Exception as e:  # noqa: BLE001 - whatever fails, it fails here, naming the source
        cause = e.__cause__ or e  # render's RuntimeError wraps the renderer's error
        raise ValueError(f"online source {name!r}: the recipe cannot make a mixture from {cfg.manifest} "
                         f"({type(cause).__name__}: {cause})") from None  # fmt: skip
    log.info("online source %r: %d events (sfx %d, general %d), %d backgrounds, bank %s (part %d of %d, %s)", name,
             len(pool.sfx) + len(pool.general), len(pool.sfx), len(pool.general), len(pool.backgrounds), folder,
             part, bank.parts, b.options.dtype)  # fmt: skip
    if pool.skipped:
        log.warning(
            "online source %r: left out of the pool (by reason): %s", name, dict(sorted(pool.skipped.items()))
        )
    return src


def main(argv: list[str] | None = None) -> int:
    """`python -m model.train.online --manifest M --bank-dir DIR [...]`: build the source bank ahead of a run
    (the trainer finds it when its `data.bank` settings, split and part are the same). Prints the bank folder."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m model.train.online", description=main.__doc__.split("\n")[0])
    p.add_argument("--manifest", required=True, help="source manifest (Parquet)")
    p.add_argument("--bank-dir", required=True, help="as data.bank.dir")
    p.add_argument("--split", default="train", choices=("train", "heldout"))
    p.add_argument("--dtype", default=BankConfig.dtype, choices=BANK_DTYPES, help="as data.bank.dtype")
    p.add_argument("--no-energy", action="store_true", help="as data.bank.energy=false")
    p.add_argument("--parts", type=int, default=1, help="as data.bank.parts")
    p.add_argument("--part", type=int, default=0, help="which part to build (node k of `parts` uses part k)")
    p.add_argument("--workers", type=int, default=0, help="as data.bank.build_workers (0: one per core)")
    p.add_argument(
        "--chunk-sources", type=int, default=BankConfig.chunk_sources, help="as data.bank.chunk_sources"
    )
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        opts = BankOptions(dtype=args.dtype, energy=not args.no_energy, sample_rate=SAMPLE_RATE, part=args.part,
                           parts=args.parts, workers=args.workers, chunk_sources=args.chunk_sources)  # fmt: skip
        try:
            rows = read_rows(args.manifest)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read manifest {args.manifest!r} ({e})") from None
        folder = prepare_bank(bank_rows(rows, args.split, args.part, args.parts), args.bank_dir, opts)
    except (ValueError, OSError) as e:
        print(f"model.train.online: error: {e}", file=sys.stderr)
        return 2
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
