"""`model.search index`: bring an index up to date with a folder (incremental, resumable; see `model.search.index`)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.detect.files import (
    AudioInput,
    checkpoint_sha256,
    checkpoint_stat,
    file_signature,
    find_audio_files,
)
from model.detect.pipeline import Decoded, decode_ahead, group_files
from model.heads import l2_normalize
from model.inference import frame_hop_samples
from model.search.index import (
    FileEntry,
    Manifest,
    SearchIndexError,
    compact,
    delete_segments,
    orphan_segments,
    read_manifest,
    write_manifest,
    write_segment,
    writer_lock,
)

log = logging.getLogger("model.search")


@dataclass
class UpdateReport:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    still_failed: int = 0  # undecodable before and unchanged since: not tried again
    skipped: list[dict[str, str]] = field(default_factory=list)  # failed in this run
    rebuilt: str | None = None  # why the index was rebuilt from scratch
    audio_s: float = 0.0
    wall_s: float = 0.0
    compacted: int = 0
    files: int = 0
    frames: int = 0

    def line(self) -> str:
        return (f"{self.files} files indexed ({self.frames} frames): {self.added} added, {self.updated} updated, "
                f"{self.removed} removed, {self.unchanged} unchanged, {len(self.skipped)} skipped "
                f"(+{self.still_failed} undecodable before); {self.audio_s / 3600:.3f} h of audio embedded in "
                f"{self.wall_s:.1f} s")  # fmt: skip


def _embed_group(
    model: Any, group: list[Decoded], sr: int
) -> list[tuple[Decoded, np.ndarray | None, str | None]]:
    """(file, normalised frame embeddings or None, error) per decoded file of a group; one batched forward."""
    ok = [d for d in group if d.error is None]
    out: list[tuple[Decoded, np.ndarray | None, str | None]] = [(d, None, d.error) for d in group if d.error]
    if not ok:
        return out
    try:
        embs = model.frame_embeddings_batch([d.signal for d in ok], sr)
        out += [(d, e, None) for d, e in zip(ok, embs, strict=True)]
    except ValueError:  # isolate the file the batch refused
        for d in ok:
            try:
                out.append((d, model.frame_embeddings_batch([d.signal], sr)[0], None))
            except ValueError as e:
                out.append((d, None, str(e)))
    return out


def update_index(index: str | os.PathLike, root: str | os.PathLike, model: Any, checkpoint: str | os.PathLike, *,
                 decode_workers: int = 2, group_seconds: float = 600.0, max_ahead_bytes: int = 1 << 30,
                 progress: bool | None = None) -> UpdateReport:  # fmt: skip
    """Add, re-embed and drop files so that the index at `index` mirrors the audio files under `root`."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    idx = Path(index)
    root_p = Path(os.path.abspath(os.fspath(root)))
    ckpt = str(Path(checkpoint).resolve())
    if not root_p.is_dir():
        raise ValueError(f"{root}: not a folder")
    cfg = model.config
    sr = cfg.frontend.sample_rate
    hop_s = frame_hop_samples(cfg) / sr
    settings = {
        "frame_hop_s": hop_s,
        "hop_frames": int(model.inference_hop_frames),
        "dim": int(cfg.joint_dim),
    }
    rep = UpdateReport()
    idx.mkdir(parents=True, exist_ok=True)
    with writer_lock(idx):
        m = read_manifest(idx)
        if m is not None and m.root != str(root_p):
            raise SearchIndexError(
                f"index {idx} holds {m.root}, not {root_p}: use another --index for another folder"
            )
        sha = checkpoint_sha256(ckpt)
        next_seg = 1
        if m is not None:
            old = {"frame_hop_s": m.frame_hop_s, "hop_frames": m.hop_frames, "dim": m.dim}
            if m.checkpoint_sha256 != sha:
                rep.rebuilt = (f"the checkpoint changed ({m.checkpoint}, sha256 {m.checkpoint_sha256[:12]}… → "
                               f"{ckpt}, {sha[:12]}…): rebuilding the index from scratch")  # fmt: skip
            elif old != settings:
                rep.rebuilt = (
                    f"inference settings changed ({old} → {settings}): rebuilding the index from scratch"
                )
            if rep.rebuilt:
                log.warning("%s", rep.rebuilt)
                next_seg, m = m.next_segment, None
        if m is None:
            m = Manifest(root=str(root_p), checkpoint=ckpt, checkpoint_sha256=sha, checkpoint_files=checkpoint_stat(ckpt),
                         next_segment=next_seg, **settings)  # fmt: skip
        else:  # same bytes, maybe moved or touched
            m.checkpoint, m.checkpoint_files = ckpt, checkpoint_stat(ckpt)
        write_manifest(idx, m)
        delete_segments(idx, orphan_segments(idx, m))

        items = find_audio_files([root_p])
        sigs: dict[str, dict[str, int]] = {}
        todo: list[AudioInput] = []
        for it in items:
            rel = it.rel.as_posix()
            try:
                sig = file_signature(it.path)
            except OSError as e:
                rep.skipped.append({"filename": rel, "reason": str(e)})
                continue
            sigs[rel] = sig
            e = m.files.get(rel)
            f = m.failed.get(rel)
            if e is not None and (e.size, e.mtime_ns) == (sig["size"], sig["mtime_ns"]):
                rep.unchanged += 1
            elif e is None and f is not None and (f["size"], f["mtime_ns"]) == (sig["size"], sig["mtime_ns"]):
                rep.still_failed += 1
            else:
                todo.append(it)
        gone = [rel for rel in m.files if rel not in sigs]
        rep.removed = len(gone)
        for rel in gone:
            del m.files[rel]
        for rel in [r for r in m.failed if r not in sigs]:
            del m.failed[rel]
        if gone:
            write_manifest(idx, m)
            delete_segments(idx, orphan_segments(idx, m))

        disable = None if progress is None else not progress
        bar = tqdm(total=len(todo), unit="file", desc="index", disable=disable)
        try:
            decoded = decode_ahead(todo, sr, decode_workers, max_ahead_bytes)
            for group in group_files(decoded, int(group_seconds * sr)):
                results = _embed_group(model, group, sr)
                rows = [e for _, e, _ in results if e is not None]
                seg = m.next_segment
                if rows:
                    m.next_segment += 1
                    flat = l2_normalize(torch.from_numpy(np.concatenate(rows))).numpy()
                    write_segment(idx, seg, flat)
                row = 0
                for d, e, err in results:
                    rel = d.item.rel.as_posix()
                    sig = sigs[rel]
                    was_indexed = rel in m.files
                    if e is None:
                        rep.skipped.append({"filename": rel, "reason": err or "unknown error"})
                        log.warning("skipped %s: %s", d.item.path, err)
                        m.failed[rel] = {**sig, "reason": err}
                        m.files.pop(rel, None)
                        continue
                    m.files[rel] = FileEntry(
                        sig["size"], sig["mtime_ns"], seg, row, int(e.shape[0]), d.duration_s
                    )
                    m.failed.pop(rel, None)
                    row += int(e.shape[0])
                    rep.audio_s += d.duration_s
                    if was_indexed:
                        rep.updated += 1
                    else:
                        rep.added += 1
                write_manifest(idx, m)  # the group is committed: a kill from here on loses nothing of it
                for d in group:
                    d.signal = None  # free the audio before the next group is decoded
                bar.update(len(group))
                bar.set_postfix_str(f"{rep.audio_s / 3600:.3f} h audio, {len(rep.skipped)} skipped")
        finally:
            bar.close()
        delete_segments(idx, orphan_segments(idx, m))
        rep.compacted = compact(idx, m)
    rep.files = len(m.files)
    rep.frames = sum(e.n_frames for e in m.files.values())
    rep.wall_s = time.perf_counter() - t0
    return rep
