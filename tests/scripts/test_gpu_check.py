"""scripts/gpu_check.sh: argument errors, a failing stage reported in the table while a stage without input says
why it did not run, the refusal without CUDA, and (slow) the --cpu-smoke run of render → train → eval on
corpus/demo end to end."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def run(args, tmp_path, timeout=300):
    env = dict(os.environ, PY=sys.executable, OUT=str(tmp_path / "out"), HF_HUB_OFFLINE="1")
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_bad_arguments_are_one_line_and_exit_2(tmp_path):
    for args, msg in (
        (["--bogus"], "gpu_check: unknown argument --bogus (see --help)"),
        (["--stages", "render,fly"], "gpu_check: unknown stage fly (render, bench, train, eval)"),
        (["--corpus", str(tmp_path / "absent")], f"gpu_check: corpus folder {tmp_path / 'absent'} not found"),
        (["--work"], "gpu_check: --work needs a folder"),
    ):
        p = run(args, tmp_path)
        assert (p.returncode, p.stderr, p.stdout) == (2, msg + "\n", "")


def test_a_failed_stage_is_a_row_and_a_stage_without_input_says_why_it_did_not_run(tmp_path):
    """No training shards: train is skipped with the reason; eval runs on a damaged checkpoint and fails with
    eval.run_all's one-line error in the table; exit status 1; the JSON and the table land in $OUT."""
    work = tmp_path / "work"
    (work / "tiny" / "final").mkdir(parents=True)
    (work / "data" / "mixtures" / "heldout").mkdir(parents=True)
    (work / "data" / "mixtures" / "heldout" / "shard-000000.tar").write_bytes(b"")
    (work / "tiny" / "final" / "model.safetensors").write_bytes(b"\x00" * 64)  # a damaged checkpoint
    (work / "tiny" / "final" / "config.json").write_text("{}")
    p = run(["--cpu-smoke", "--work", str(work), "--stages", "train,eval"], tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    rows = {r["stage"]: r for r in json.loads((tmp_path / "out" / "gpu_check.json").read_text())["stages"]}
    assert list(rows) == ["train", "eval"]
    assert rows["train"]["status"] == "skipped" and "no training shards" in rows["train"]["result"]
    assert rows["eval"]["status"] == "FAILED (exit 2)"
    assert "log: eval.run_all:" in rows["eval"]["result"] and "config.json" in rows["eval"]["result"]
    table = (tmp_path / "out" / "gpu_check.txt").read_text()
    assert "| train | skipped |" in table and "| eval | FAILED (exit 2) |" in table
    assert table.strip() in p.stdout


def test_without_cuda_the_full_run_is_refused(tmp_path):
    if shutil.which("nvidia-smi"):
        pytest.skip("nvidia-smi is present: the full run may start")
    p = run([], tmp_path)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("gpu_check: no CUDA device visible to ") and p.stderr.strip().endswith(
        "--cpu-smoke"
    )


@pytest.mark.slow
def test_cpu_smoke_renders_trains_and_evaluates(tmp_path):
    work = tmp_path / "work"
    p = run(["--cpu-smoke", "--work", str(work), "--stages", "render,train,eval"], tmp_path, timeout=1500)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    rows = {r["stage"]: r for r in doc["stages"]}
    assert doc["ok"] and doc["smoke"] and list(rows) == ["render", "train", "eval"]
    render = rows["render"]["details"]
    assert render["train"]["mixtures"] == render["train"]["in_index"] == 64
    assert render["heldout"]["mixtures"] == render["heldout"]["in_index"] == 32
    assert rows["train"]["details"]["final"] and rows["train"]["details"]["steps"] == 3
    sed = rows["eval"]["details"]["mixtures_heldout"]
    assert sed["task"] == "sed" and sed["n_clips"] == 16 and 0.0 <= sed["auroc"] <= 1.0
    assert (work / "tiny" / "final" / "model.safetensors").is_file()
