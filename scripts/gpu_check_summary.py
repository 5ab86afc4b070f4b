"""The summary table of `scripts/gpu_check.sh`: one row per stage from WORK/stages.tsv and the stage outputs.

    python scripts/gpu_check_summary.py WORK [--smoke 0|1] [--corpus DIR] [--out DIR]

Reads `WORK/stages.tsv` (name, exit status or "skipped", seconds, limit[, reason]), the render log and the
`index.json` of the rendered splits, `WORK/train_step.json` (benchmarks/train_step.py), `WORK/tiny/metrics.jsonl`
(the trainer's log) and `WORK/eval/report.json` (eval.run_all). Prints the table; with --out also writes
`OUT/gpu_check.json` (everything below) and `OUT/gpu_check.txt` (the table). Exit status 0 when every stage that
ran is ok, else 1. Standard library only, so it runs under any Python.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

TIMEOUT_CODES = {"124", "137"}  # timeout(1): limit reached (SIGTERM sent); killed 30 s later


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def last_line(path: Path) -> str:
    try:
        lines = [x.strip() for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:200] if lines else "(empty log)"


def render_result(work: Path) -> tuple[dict, str]:
    out: dict = {}
    log = work / "render.log"
    text = log.read_text(errors="replace") if log.is_file() else ""
    heads = re.findall(
        r"== render_mixtures summary \((\w+), runner (\w+), (\d+) workers?, ([\d.]+) s\) ==", text
    )
    rates = re.findall(r"mixtures written:\s+(\d+) of (\d+) .*?([\d.]+) mixtures/s overall", text)
    for (split, runner, workers, secs), (done, wanted, rate) in zip(heads, rates, strict=False):
        index = read_json(work / "data" / "mixtures" / split / "index.json") or {}
        out[split] = {
            "mixtures": int(done), "wanted": int(wanted), "mixtures_per_s": float(rate), "seconds": float(secs),
            "runner": runner, "workers": int(workers), "in_index": index.get("num_samples"),
        }  # fmt: skip
    parts = [
        f"{v['mixtures']}/{v['wanted']} {k} ({v['mixtures_per_s']:.1f}/s, {v['workers']} worker{'s' * (v['workers'] > 1)})"
        for k, v in out.items()
    ]
    return out, "; ".join(parts) or "no render summary in render.log"


def bench_result(work: Path) -> tuple[dict, str]:
    res = read_json(work / "train_step.json")
    if res is None:
        return {}, "no train_step.json"
    keep = ("device", "audio", "text_encoder", "text_note", "batch_per_stream", "dtype", "samples_per_s",
            "step_ms_mean", "mfu", "achieved_tflops", "peak_gib", "grad_checkpointing", "error")  # fmt: skip
    out = {k: res[k] for k in keep if k in res}
    peer = res.get("peer") or {}
    vs = res.get("vs_peer") or {}
    if "error" in res:
        return out, f"error: {res['error'][:150]}"
    text = (
        f"ours {res.get('audio')} B={res.get('batch_per_stream')}/stream: {res.get('samples_per_s')} clips/s"
    )
    if res.get("mfu") is not None:
        text += f", MFU {100 * res['mfu']:.1f} %"
    primary = vs.get("primary")
    if primary:
        row = vs[primary]
        out["peer"] = {"row": primary, **row}
        text += f"; peer (LAION-CLAP step, {primary}) {row['peer_samples_per_s']} clips/s → ours/peer {row['ours_over_peer']}×"
    else:
        reason = peer.get("error") if isinstance(peer, dict) else None
        out["peer"] = {"error": reason or "no peer rows"}
        text += f"; peer unavailable: {(reason or 'no peer rows')[:120]}"
    return out, text


def train_result(work: Path) -> tuple[dict, str]:
    rows = []
    path = work / "tiny" / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    final = (work / "tiny" / "final" / "model.safetensors").is_file()
    if not rows:
        return {"final": final}, "no metrics.jsonl lines"
    first, last = rows[0], rows[-1]
    sps = [r["samples_per_s"] for r in rows[1:] if isinstance(r.get("samples_per_s"), int | float)]
    out = {
        "final": final, "steps": last.get("step"), "loss_first": first.get("loss"), "loss_last": last.get("loss"),
        "l_sed_first": first.get("l_sed"), "l_sed_last": last.get("l_sed"),
        "samples_per_s": round(sum(sps) / len(sps) if sps else float(first.get("samples_per_s") or 0), 2),
        "log_lines": len(rows),
        "skipped_samples": sum(int(r.get("skipped_samples") or 0) for r in rows),
    }  # fmt: skip
    text = (
        f"{out['steps']} steps, loss {out['loss_first']:.3g} → {out['loss_last']:.3g}, "
        f"{out['samples_per_s']} clips/s" + ("" if final else ", NO final checkpoint")
    )
    return out, text


METRICS = ("psds1", "mpauc", "auroc", "spearman", "r1_t2a", "r1_a2t", "r5_t2a", "r5_a2t", "top1")


def eval_result(work: Path) -> tuple[dict, str]:
    rep = read_json(work / "eval" / "report.json")
    if rep is None:
        return {}, "no report.json"
    out, parts = {}, []
    for name, d in (rep.get("datasets") or {}).items():
        m = {k: v for k, v in (d.get("metrics") or {}).items() if k in METRICS and isinstance(v, int | float)}
        out[name] = {"task": d.get("task"), "n_clips": d.get("n_clips"), **m}
        shown = ", ".join(f"{k} {v:.3f}" for k, v in m.items())
        parts.append(f"{name} ({d.get('n_clips')} clips): {shown or 'no metrics'}")
    for name, why in (rep.get("skipped_datasets") or {}).items():
        out[name] = {"skipped": why}
        parts.append(f"{name}: skipped ({str(why)[:80]})")
    return out, "; ".join(parts) or "no datasets in report.json"


RESULTS = {"render": render_result, "bench": bench_result, "train": train_result, "eval": eval_result}


def summarise(work: Path) -> tuple[list[dict], bool]:
    rows, ok = [], True
    try:
        lines = (work / "stages.tsv").read_text().splitlines()
    except OSError:
        return [{"stage": "-", "status": "FAILED", "result": f"no {work / 'stages.tsv'}"}], False
    for line in lines:
        name, rc, secs, limit, *why = line.split("\t")
        row: dict = {"stage": name, "seconds": float(secs), "limit_s": int(limit)}
        if rc == "skipped":
            row.update(status="skipped", result=why[0] if why else "")
            ok = False
            rows.append(row)
            continue
        details, text = RESULTS[name](work) if name in RESULTS else ({}, "")
        row["details"] = details
        if rc == "0":
            row["status"] = "ok"
        elif rc in TIMEOUT_CODES and name == "train" and details.get("final"):
            row["status"] = "ok (time limit: stopped cleanly)"
        elif rc in TIMEOUT_CODES:
            row["status"] = f"TIMEOUT (exit {rc})"
        else:
            row["status"] = f"FAILED (exit {rc})"
        if not row["status"].startswith("ok"):
            ok = False
            text = (
                f"{text} | log: {last_line(work / f'{name}.log')}"
                if text
                else f"log: {last_line(work / f'{name}.log')}"
            )
        row["result"] = text
        rows.append(row)
    return rows, ok


def table(rows: list[dict]) -> str:
    out = ["| stage | status | seconds (limit) | result |", "| --- | --- | --- | --- |"]
    for r in rows:
        t = f"{r['seconds']:.0f} ({r['limit_s']})" if r.get("limit_s") else "-"
        out.append(f"| {r['stage']} | {r['status']} | {t} | {r['result']} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--smoke", default="0")
    ap.add_argument("--corpus", default="")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows, ok = summarise(args.work)
    text = table(rows)
    total = sum(r.get("seconds", 0.0) for r in rows)
    head = f"== gpu_check summary ({'CPU smoke' if args.smoke == '1' else 'GPU'}; stages {total:.0f} s; {args.work}) =="
    print(head)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        doc = {"date": time.strftime("%F %T %Z"), "smoke": args.smoke == "1", "corpus": args.corpus,
               "work": str(args.work), "ok": ok, "stages_s": round(total, 1), "stages": rows}  # fmt: skip
        (args.out / "gpu_check.json").write_text(json.dumps(doc, indent=1))
        (args.out / "gpu_check.txt").write_text(head + "\n" + text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
