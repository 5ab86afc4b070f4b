"""The detection run behind `python -m model.detect`: files → batched frame probabilities → per-file outputs.

Per input file, in the output folder (mirroring the inputs' relative paths, see `model.detect.files`):
`<name>.tsv` (DCASE: filename, onset, offset, event_label, score), `<name>.png` (the detection figure) and
`<name>.json` (everything, written last: it marks the file as done). Run level: `detections.tsv` (all files'
rows, input order) and `summary.json`.

Throughput: decoding runs in threads ahead of the model (`model.detect.pipeline`), the windows of a group of
files go through `FLAM.frame_probabilities_batch` together, and the figures are drawn by worker processes while
the model goes on (a thread, or worker processes with `plot_workers` > 1). Resume: a file whose JSON records the same settings (checkpoint files, queries, method,
threshold, median filter, window hop) and the same input size/mtime is not processed again; a killed run,
started again, does only what is missing, and `detections.tsv` is rebuilt from the per-file TSVs.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.detect.files import AudioInput, checkpoint_stat, file_signature
from model.detect.outputs import (
    TSV_HEADER,
    atomic_write_bytes,
    read_json,
    render_png,
    scored_segments,
    write_json,
    write_tsv,
)
from model.detect.pipeline import Decoded, decode_ahead, group_files
from model.inference import frame_hop_samples

log = logging.getLogger("model.detect")

RESERVED = ("detections", "summary")  # run-level output stems
JSON_VERSION = 1


@dataclass(frozen=True)
class DetectOptions:
    queries: tuple[str, ...]
    method: str = "approximate"  # Eq. 8 form
    threshold: float = 0.5  # on the calibrated frame probability
    median_filter: int = 3  # App. C.7
    plot: bool = True
    plot_workers: int = 1
    decode_workers: int = 2
    group_seconds: float = 600.0  # audio per frame_probabilities_batch call
    max_ahead_bytes: int = 1 << 30  # decoded audio waiting for the model
    force: bool = False  # recompute files whose outputs are up to date


@dataclass
class DetectSummary:
    files: int = 0
    processed: int = 0
    already_done: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    audio_s: float = 0.0
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        minutes = self.wall_s / 60
        return {
            "files": self.files,
            "processed": self.processed,
            "already_done": self.already_done,
            "skipped": self.skipped,
            "audio_hours": self.audio_s / 3600,
            "wall_s": self.wall_s,
            "hours_per_minute": self.audio_s / 3600 / minutes if minutes > 0 else None,
        }


def _plot_pool(workers: int) -> Executor:
    """1: one thread beside the model (pyplot is not thread-safe, so never more than one; no start-up cost);
    N > 1: N spawned processes (each imports the toolkit once), for many short files on spare cores."""
    if workers <= 1:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="plot")
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that runs torch and decoding threads
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx)


class Detector:
    def __init__(self, model: Any, out: Path, opts: DetectOptions, checkpoint: str, progress: bool | None = None) -> None:  # fmt: skip
        self.model, self.out, self.opts, self.progress = model, out, opts, progress
        cfg = model.config
        self.sr = cfg.frontend.sample_rate
        self.hop_s = frame_hop_samples(cfg) / self.sr
        self.settings = {
            "checkpoint": checkpoint,
            "checkpoint_files": checkpoint_stat(checkpoint),
            "queries": list(opts.queries),
            "method": opts.method,
            "threshold": opts.threshold,
            "median_filter": opts.median_filter,
            "hop_frames": int(model.inference_hop_frames),
        }
        self.summary = DetectSummary()
        self._finished: set = set()  # out stems whose outputs are complete
        self._plots: deque[tuple[Future, AudioInput, dict[str, Any]]] = deque()
        self._pool: Executor | None = None

    # ------------------------------------------------------------------ paths / resume
    def path(self, item: AudioInput, suffix: str) -> Path:
        return self.out / f"{item.out_stem}{suffix}"

    def is_done(self, item: AudioInput) -> bool:
        rec = read_json(self.path(item, ".json"))
        if rec is None or rec.get("settings") != self.settings:
            return False
        try:
            if rec.get("input") != file_signature(item.path):
                return False
        except OSError:
            return False
        return self.path(item, ".tsv").is_file() and (not self.opts.plot or self.path(item, ".png").is_file())

    # ------------------------------------------------------------------ run
    def run(self, items: list[AudioInput]) -> DetectSummary:
        from tqdm import tqdm

        t0 = time.perf_counter()
        s = self.summary
        s.files = len(items)
        todo = [it for it in items if self.opts.force or not self.is_done(it)]
        self._finished = {it.out_stem for it in items} - {it.out_stem for it in todo}
        s.already_done = len(items) - len(todo)
        if s.already_done:
            log.info("%d of %d files already done (same settings and inputs): not processed again",
                     s.already_done, len(items))  # fmt: skip
        if self.opts.plot and todo:
            self._pool = _plot_pool(self.opts.plot_workers)
        disable = None if self.progress is None else not self.progress  # None: shown on a terminal only
        bar = tqdm(total=len(items), initial=s.already_done, unit="file", desc="detect", disable=disable)
        try:
            decoded = decode_ahead(todo, self.sr, self.opts.decode_workers, self.opts.max_ahead_bytes)
            for group in group_files(decoded, int(self.opts.group_seconds * self.sr)):
                self._group(group)
                bar.update(len(group))
                bar.set_postfix_str(f"{s.audio_s / 3600:.3f} h audio, {len(s.skipped)} skipped")
                self._collect_plots(block=False)
            self._collect_plots(block=True)
        finally:
            bar.close()
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
        self._write_run_files(items)
        s.wall_s = time.perf_counter() - t0
        write_json(self.out / "summary.json", s.to_dict())
        return s

    def _skip(self, item: AudioInput, reason: str) -> None:
        log.warning("skipped %s: %s", item.path, reason)
        self.summary.skipped.append({"filename": item.rel.as_posix(), "reason": reason})

    def _group(self, group: list[Decoded]) -> None:
        ok = []
        for d in group:
            if d.error is not None:
                self._skip(d.item, d.error)
            else:
                ok.append(d)
        if not ok:
            return
        o = self.opts
        texts = list(o.queries)
        try:
            probs = self.model.frame_probabilities_batch([d.signal for d in ok], self.sr, texts, o.method, o.median_filter)  # fmt: skip
        except ValueError:  # isolate the file the batch refused; the others go on
            probs = []
            for d in ok:
                try:
                    probs.append(self.model.frame_probabilities_batch([d.signal], self.sr, texts, o.method, o.median_filter)[0])  # fmt: skip
                except ValueError as e:
                    self._skip(d.item, str(e))
                    probs.append(None)
        for d, p in zip(ok, probs, strict=True):
            if p is not None:
                d.signal = None  # free the audio before the next group is decoded
                self._finish(d, p)

    def _finish(self, d: Decoded, probs: np.ndarray) -> None:
        o, item = self.opts, d.item
        detections = []
        for q, row in zip(o.queries, probs, strict=True):
            for onset, offset, score in scored_segments(row, o.threshold, self.hop_s, d.duration_s):
                detections.append({"onset": onset, "offset": offset, "event_label": q, "score": score})
        detections.sort(key=lambda r: (r["onset"], r["offset"], r["event_label"]))
        write_tsv(self.path(item, ".tsv"), item.rel.as_posix(), detections)
        record = {
            "version": JSON_VERSION,
            "filename": item.rel.as_posix(),
            "path": str(item.path),
            "input": file_signature(item.path),
            "duration_s": d.duration_s,
            "sample_rate": d.sample_rate,
            "channels": d.channels,
            "frame_hop_s": self.hop_s,
            "n_frames": int(probs.shape[1]),
            "settings": self.settings,
            "detections": detections,
            "probabilities": {
                q: np.round(row.astype(np.float64), 6).tolist()
                for q, row in zip(o.queries, probs, strict=True)
            },  # fmt: skip
        }
        self.summary.audio_s += d.duration_s
        if self._pool is None:
            self._done(item, record)
            return
        title = f"{item.rel.as_posix()} — shaded: p ≥ {o.threshold:g} ({o.method})"
        spans = [(r["onset"], r["offset"], r["event_label"]) for r in detections]
        fut = self._pool.submit(render_png, str(item.path), str(self.path(item, ".png")), probs,
                                list(o.queries), spans, self.hop_s, o.threshold, title)  # fmt: skip
        self._plots.append((fut, item, record))
        while len(self._plots) > 4 * max(1, o.plot_workers):  # back-pressure: figures may not pile up
            self._collect_one()

    def _done(self, item: AudioInput, record: dict[str, Any]) -> None:
        write_json(self.path(item, ".json"), record)
        self._finished.add(item.out_stem)
        self.summary.processed += 1

    def _collect_one(self) -> None:
        fut, item, record = self._plots.popleft()
        try:
            fut.result()
        except Exception as e:  # noqa: BLE001 - a figure that fails is a counted skip; the run goes on
            self._skip(item, f"figure failed: {type(e).__name__}: {e}")
            return
        self._done(item, record)

    def _collect_plots(self, block: bool) -> None:
        while self._plots and (block or self._plots[0][0].done()):
            self._collect_one()

    def _write_run_files(self, items: list[AudioInput]) -> None:
        """detections.tsv from the per-file TSVs of every finished file (this run's and earlier runs')."""
        parts = [TSV_HEADER]
        for it in items:
            if it.out_stem not in self._finished:
                continue
            try:
                text = self.path(it, ".tsv").read_text(encoding="utf-8")
            except OSError:
                continue
            parts.append(text[len(TSV_HEADER) :] if text.startswith(TSV_HEADER) else "")
        atomic_write_bytes(self.out / "detections.tsv", "".join(parts).encode("utf-8"))
