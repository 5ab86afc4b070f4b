"""The README's quickstart, end to end: the `bash` block under "## Quickstart" in README.md is run line by line
in a fresh folder (the repository's corpus/, configs/ and pipelines/ linked in), and each command's real
outcome is checked: the manifest rows, the mixture counts, the SED loss falling, a finite held-out AUROC and the
detection outputs. The test reads every path, count and query from the README's own commands, so what the docs
promise is what runs.

Slow (the training command alone takes minutes on 2 cores): `uv run pytest -m slow tests/test_quickstart.py -s`
(`-s` prints the wall time of each command).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synth.audio import AUDIO_EXTENSIONS
from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
LINKED = ("corpus", "configs", "pipelines")  # what the commands read from the repository
DETECT_VALUED = {"--query", "--checkpoint", "--out", "--method", "--threshold", "--median-filter", "--device",
                 "--batch-size", "--decode-workers", "--plot-workers"}  # fmt: skip
DCASE_HEADER = ["filename", "onset", "offset", "event_label", "score"]
# The four used-by commands in the quickstart's order (render twice: the training and the held-out mixtures).
EXPECTED_ORDER = ["pipelines/caption.py", "pipelines/render_mixtures.py", "pipelines/render_mixtures.py",
                  "model.train", "eval.run_all", "model.detect"]  # fmt: skip


def quickstart_commands(readme: str) -> list[str]:
    """The commands of the first ```bash block under the "## Quickstart" heading: backslash continuations
    joined, blank and comment lines dropped. Raises ValueError when the section or the block is missing."""
    section = re.search(r"^## Quickstart\b[^\n]*\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    if section is None:
        raise ValueError("README.md: no '## Quickstart' section")
    block = re.search(r"^```bash\n(.*?)^```", section.group(1), re.M | re.S)
    if block is None:
        raise ValueError("README.md: the Quickstart section has no ```bash block")
    commands, pending = [], ""
    for line in block.group(1).splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1].strip() + " "
            continue
        line = pending + line.strip()
        pending = ""
        if line.strip() and not line.lstrip().startswith("#"):
            commands.append(line.strip())
    if pending:
        raise ValueError("README.md: the Quickstart block ends inside a continued line")
    return commands


def _program(argv: list[str]) -> str:
    """`pipelines/x.py` or the `-m` module a `uv run python …` command runs."""
    assert argv[:3] == ["uv", "run", "python"], argv
    return argv[4] if argv[3] == "-m" else argv[3]


def _opt(argv: list[str], flag: str, default: str | None = None) -> str | None:
    """The value after the last `flag` in argv (or `default`)."""
    idx = [i for i, a in enumerate(argv) if a == flag]
    return argv[idx[-1] + 1] if idx else default


def _opts(argv: list[str], flag: str) -> list[str]:
    """Every value given to a repeatable `flag`."""
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def _nargs(argv: list[str], flag: str) -> list[str]:
    """The values of an nargs='+' option: everything after `flag` up to the next option."""
    if flag not in argv:
        return []
    out = []
    for a in argv[argv.index(flag) + 1 :]:
        if a.startswith("--"):
            break
        out.append(a)
    return out


def _positionals(argv: list[str], valued: set[str]) -> list[str]:
    """Positional arguments after the module name (options in `valued` take one value)."""
    out, rest = [], argv[5:]
    i = 0
    while i < len(rest):
        if rest[i] in valued:
            i += 2
            continue
        if not rest[i].startswith("--"):
            out.append(rest[i])
        i += 1
    return out


def test_readme_quickstart_runs_the_four_commands_in_order():
    """Fast guard on the docs: the block parses, and it is caption → render (train, held-out) → train → evaluate
    → detect, each step reading what the one before wrote."""
    cmds = [shlex.split(c) for c in quickstart_commands(README.read_text(encoding="utf-8"))]
    assert [_program(a) for a in cmds] == EXPECTED_ORDER
    caption, render, heldout, train, evaluate, detect = cmds
    manifest = _opt(caption, "--out")
    assert _opt(caption, "--captioner") == "template" and _opt(caption, "--corpus") == "corpus/demo"
    assert _opt(render, "--manifest") == manifest == _opt(heldout, "--manifest")
    assert _opt(render, "--split", "train") == "train" and _opt(heldout, "--split") == "heldout"
    assert 100 <= int(_opt(render, "--num-mixtures")) <= 1000  # "a few hundred mixtures"
    root = _opt(render, "--out")
    assert _opt(heldout, "--out") == root
    assert _opt(train, "--config") == "configs/train/tiny-cpu.yaml"
    assert _nargs(train, "--mixtures") == [f"{root}/mixtures/train"]
    ckpt = f"{_opt(train, '--out')}/final"
    assert _opt(evaluate, "--checkpoint") == ckpt == _opt(detect, "--checkpoint")
    assert _nargs(evaluate, "--mixtures") == [f"{root}/mixtures/heldout"]
    recordings = _positionals(detect, DETECT_VALUED)
    assert recordings and all((REPO_ROOT / r).is_file() for r in recordings), recordings
    for r in recordings:  # each recording is named for exactly one query: the check of what the plot shows
        assert _own_query(Path(r), _opts(detect, "--query")), r


def _own_query(recording: Path, queries: list[str]) -> str | None:
    """The one query sharing a word with the recording's file name (`rooster.mp3` → "rooster crowing")."""
    words = set(re.split(r"[^a-z]+", recording.stem.lower())) - {""}
    own = [q for q in queries if words & set(q.lower().split())]
    return own[0] if len(own) == 1 else None


def _link_workdir(work: Path) -> None:
    for name in LINKED:
        (work / name).symlink_to(REPO_ROOT / name, target_is_directory=True)


def _env() -> dict[str, str]:
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        pytest.skip("uv is not on PATH (the quickstart's commands are `uv run …`)")
    env = dict(os.environ)
    env["PATH"] = f"{Path(uv).parent}{os.pathsep}{env.get('PATH', '')}"
    env["UV_PROJECT"] = str(REPO_ROOT)  # `uv run` from the scratch folder uses this workspace and its .venv
    env["UV_FROZEN"] = "1"  # never rewrite the repository's uv.lock from a test
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _run(command: str, work: Path, env: dict[str, str], log: Path) -> float:
    t0 = time.monotonic()
    with log.open("w", encoding="utf-8") as fh:
        proc = subprocess.run(command, shell=True, executable="/bin/bash", cwd=work, env=env,
                              stdout=fh, stderr=subprocess.STDOUT, timeout=3 * 3600)  # fmt: skip
    wall = time.monotonic() - t0
    tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
    assert proc.returncode == 0, f"`{command}` exited {proc.returncode}:\n{tail}"
    return wall


def _check_caption(argv: list[str], work: Path) -> None:
    with (work / _opt(argv, "--corpus") / "metadata.csv").open(newline="", encoding="utf-8") as fh:
        n_files = sum(1 for _ in csv.DictReader(fh))
    table = pq.read_table(work / _opt(argv, "--out")).to_pylist()
    assert len(table) == n_files, (len(table), n_files)  # every demo file ingested and captioned
    assert {r["caption_source"] for r in table} == {"template"}
    assert all(r["captions"] and all(c.strip() for c in r["captions"]) for r in table)
    assert {r["split"] for r in table} == {"train", "heldout"}


def _check_render(argv: list[str], work: Path) -> None:
    split = _opt(argv, "--split", "train")
    index = json.loads((work / _opt(argv, "--out") / "mixtures" / split / "index.json").read_text())
    n = int(_opt(argv, "--num-mixtures"))
    assert index["split"] == split and index["num_samples"] == n
    assert sum(s["count"] for s in index["shards"]) == n and index["num_skipped"] == 0
    at_index = json.loads((work / _opt(argv, "--out") / "audio_text" / split / "index.json").read_text())
    assert at_index["num_samples"] > 0


def _check_train(argv: list[str], work: Path) -> None:
    out = work / _opt(argv, "--out")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == int(_opt(argv, "--steps"))
    sed = [r["l_sed"] for r in rows]
    assert all(math.isfinite(v) for v in sed)
    n = max(1, min(5, len(sed) // 4))  # mean of the first and of the last n logged steps: batches differ
    first, last = sum(sed[:n]) / n, sum(sed[-n:]) / n
    assert last < first, f"L_SED did not fall: first {n} logged steps {first:.4f}, last {n} {last:.4f}: {sed}"
    assert (out / "final" / "model.safetensors").is_file() and (out / "final" / "config.json").is_file()


def _check_eval(argv: list[str], work: Path, heldout_n: int) -> dict:
    out = work / _opt(argv, "--out")
    report = json.loads((out / "report.json").read_text())
    mixtures = {k: v for k, v in report["datasets"].items() if v["kind"] == "mixtures"}
    assert len(mixtures) == 1, report["datasets"].keys()
    ((name, ds),) = mixtures.items()
    assert ds["n_clips"] == heldout_n, ds
    auroc = ds["metrics"]["auroc"]
    assert isinstance(auroc, float) and math.isfinite(auroc) and 0.0 <= auroc <= 1.0, auroc
    assert (out / "report.md").is_file() and list((out / "plots").glob(f"detection_{name}_*.png"))
    return {"dataset": name, "auroc": auroc, "spearman": ds["metrics"].get("spearman")}


def _check_detect(argv: list[str], work: Path) -> dict:
    out = work / _opt(argv, "--out", "detections")
    queries = _opts(argv, "--query")
    inputs = [work / p for p in _positionals(argv, DETECT_VALUED)]
    files = sorted(p for i in inputs for p in ([i] if i.is_file() else i.rglob("*"))
                   if p.is_file() and p.name.lower().endswith(AUDIO_EXTENSIONS))  # fmt: skip
    assert files
    common = Path(os.path.commonpath([i if i.is_dir() else i.parent for i in inputs]))
    records = {}
    for f in files:
        stem = f.relative_to(common).with_suffix("").as_posix()  # outputs mirror the inputs' relative paths
        for ext in (".png", ".tsv", ".json"):
            assert (out / f"{stem}{ext}").is_file(), (
                f"no {stem}{ext} in {sorted(p.name for p in out.iterdir())}"
            )
        assert (out / f"{stem}.png").stat().st_size > 10_000  # a real figure, not an empty canvas
        rec = json.loads((out / f"{stem}.json").read_text())
        assert sorted(rec["probabilities"]) == sorted(queries)
        assert all(
            len(v) == rec["n_frames"] and all(0.0 <= p <= 1.0 for p in v)
            for v in rec["probabilities"].values()
        )
        tsv = (out / f"{stem}.tsv").read_text().splitlines()
        assert tsv[0].split("\t") == DCASE_HEADER
        # What the README's figure shows: each recording scores its own query above the other one.
        own = _own_query(f, queries)
        assert own is not None, f"{f.name}: no query is named for it"
        means = {q: sum(p) / len(p) for q, p in rec["probabilities"].items()}
        assert means[own] > max(m for q, m in means.items() if q != own), (
            f"{f.name}: mean probabilities {means}"
        )
        records[f.name] = rec
    lines = (out / "detections.tsv").read_text().splitlines()
    assert lines[0].split("\t") == DCASE_HEADER
    assert len(lines) - 1 == sum(len(r["detections"]) for r in records.values())
    return {
        name: {q: round(sum(p) / len(p), 3) for q, p in r["probabilities"].items()}
        for name, r in records.items()
    }


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)
def test_readme_quickstart_end_to_end(tmp_path):
    commands = quickstart_commands(README.read_text(encoding="utf-8"))
    argvs = [shlex.split(c) for c in commands]
    assert [_program(a) for a in argvs] == EXPECTED_ORDER
    work = tmp_path / "quickstart"
    work.mkdir()
    _link_workdir(work)
    env = _env()
    walls = []
    for i, (command, argv) in enumerate(zip(commands, argvs, strict=True)):
        walls.append(_run(command, work, env, tmp_path / f"step{i}.log"))
        program = _program(argv)
        if program == "pipelines/caption.py":
            _check_caption(argv, work)
        elif program == "pipelines/render_mixtures.py":
            _check_render(argv, work)
        elif program == "model.train":
            _check_train(argv, work)
        elif program == "eval.run_all":
            heldout = next(a for a in argvs if _opt(a, "--split") == "heldout")
            measured = _check_eval(argv, work, int(_opt(heldout, "--num-mixtures")))
        else:
            means = _check_detect(argv, work)
    print("\nquickstart wall time per command:")
    for command, wall in zip(commands, walls, strict=True):
        print(f"  {wall:8.1f} s  {command}")
    print(f"  {sum(walls):8.1f} s  in all; held-out {measured}; detect mean probabilities {means}")
