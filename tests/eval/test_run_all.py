"""`python -m eval.run_all` on the demo corpus's held-out mixtures and audio-text clips with a small randomly
initialised checkpoint: numbers near chance, but every table, score file and plot present."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from eval.run_all import main
from tests.conftest import DEMO_CORPUS
from tests.model.small_flam import small_flam
from tests.pipeline_scripts import import_pipeline_script


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> Path:
    if not (DEMO_CORPUS / "metadata.csv").exists():
        pytest.skip(f"demo corpus missing at {DEMO_CORPUS}")
    out = tmp_path_factory.mktemp("heldout")
    rc = import_pipeline_script("render_mixtures").main([
        "--corpus", str(DEMO_CORPUS), "--out", str(out), "--split", "heldout", "--num-mixtures", "6",
        "--shard-size", "4", "--no-measure-loudness", "--log-level", "WARNING",
    ])  # fmt: skip
    assert rc in (0, None)
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "small"
    small_flam(seed=3).save_pretrained(path)
    return path


def test_run_all_writes_report_scores_and_plots(heldout, checkpoint, tmp_path, capsys):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        "datasets:\n"
        f"  mix: {{kind: mixtures, path: {heldout / 'mixtures' / 'heldout'}}}\n"
        f"  at: {{kind: audio-text, path: {heldout / 'audio_text' / 'heldout'}}}\n"
        "  desed_missing: {kind: desed, labels: /nonexistent/desed.tsv, audio: /nonexistent/audio}\n"
        "settings: {detection_plots: 2}\n"
    )
    out = tmp_path / "eval"
    assert (
        main(["--checkpoint", str(checkpoint), "--config", str(cfg), "--out", str(out), "--batch-size", "4"])
        == 0
    )
    err = capsys.readouterr().err
    assert "skipping desed_missing (desed): labels /nonexistent/desed.tsv not found" in err
    report = json.loads((out / "report.json").read_text())
    assert report["skipped_datasets"] == {"desed_missing": "labels /nonexistent/desed.tsv not found"}
    mix = report["datasets"]["mix"]
    assert mix["task"] == "sed" and mix["n_clips"] == 6
    m = mix["metrics"]
    assert "psds1" not in m and "mpauc" not in m  # open vocabulary: class-based metrics are not defined
    for key in ("auroc", "spearman"):
        assert key in m
    assert 0.0 <= m["auroc"] <= 1.0
    assert set(m["f1_curve"]) == {"approximate", "unbiased"}
    at = report["datasets"]["at"]
    assert at["task"] == "retrieval"
    for key in ("r1_t2a", "r5_t2a", "r1_a2t", "r5_a2t"):
        assert 0.0 <= at["metrics"][key] <= 1.0
    md = (out / "report.md").read_text()
    assert "mix" in md and "at" in md and "desed_missing" in md
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert (
        "calibration_mix.png" in plots and "detection_mix_0.png" in plots and "detection_mix_1.png" in plots
    )
    scores = out / "scores" / "mix"
    gt = pd.read_csv(scores / "ground_truth.tsv", sep="\t")
    assert list(gt.columns) == ["filename", "onset", "offset", "event_label"]
    durations = pd.read_csv(scores / "durations.tsv", sep="\t")
    assert len(durations) == 6
    assert len(list(scores.glob("*.tsv"))) == 6 + 2


def test_recomputed_from_score_files_matches_report(heldout, checkpoint, tmp_path, capsys):
    from eval.sed_metrics import main as sed_main

    out = tmp_path / "eval"
    assert main(["--checkpoint", str(checkpoint), "--mixtures", str(heldout / "mixtures" / "heldout"),
                 "--out", str(out), "--plots", "0"]) == 0  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    (name,) = report["datasets"]
    scores = out / "scores" / name
    capsys.readouterr()
    assert sed_main(["--scores", str(scores), "--ground-truth", str(scores / "ground_truth.tsv"),
                     "--durations", str(scores / "durations.tsv"), "--open-vocab"]) == 0  # fmt: skip
    again = json.loads(capsys.readouterr().out)
    for key in ("auroc", "spearman"):
        assert again[key] == pytest.approx(report["datasets"][name]["metrics"][key], abs=1e-6)


def test_bad_checkpoint_exits_2(tmp_path, capsys):
    assert (
        main(
            [
                "--checkpoint",
                str(tmp_path / "nope"),
                "--mixtures",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "eval.run_all: error:" in capsys.readouterr().err


def test_closed_set_desed_fixture_and_missing_audio(heldout, checkpoint, tmp_path):
    """A DESED-format set (TSV + WAVs cut from the held-out mixtures): closed-set metrics incl. PSDS1 and
    MPAUC; a label row without audio is counted, not fatal."""
    import soundfile as sf

    from tests.train.test_data import _read_samples

    audio = tmp_path / "audio"
    audio.mkdir()
    rows = ["filename\tonset\toffset\tevent_label"]
    for i, (wave, rec) in enumerate(_read_samples(heldout / "mixtures" / "heldout")[:4]):
        sf.write(audio / f"clip{i}.wav", wave, 48000)
        for j, ev in enumerate(rec["events"][:2]):
            label = ("Dog_bark", "Alarm_bell_ringing")[j % 2]
            for on, off in ev["segments"]:
                rows.append(f"clip{i}.wav\t{on}\t{off}\t{label}")
    rows.append("ghost.wav\t1.0\t2.0\tDog_bark")
    (tmp_path / "desed.tsv").write_text("\n".join(rows) + "\n")
    # the same clips as a zero-shot set (ESC-50 layout) and a retrieval set (Clotho layout)
    esc = ["filename,fold,target,category,esc10,src_file,take"]
    clotho = ["file_name,caption_1,caption_2,caption_3,caption_4,caption_5"]
    for i in range(4):
        esc.append(f"clip{i}.wav,1,{i % 2},{('dog', 'rain')[i % 2]},False,x,A")
        clotho.append(f"clip{i}.wav," + ",".join(f"caption {i} number {k}" for k in range(5)))
    esc.append("missing.wav,1,0,dog,False,x,A")
    (tmp_path / "esc50.csv").write_text("\n".join(esc) + "\n")
    (tmp_path / "clotho.csv").write_text("\n".join(clotho) + "\n")
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        "datasets:\n"
        f"  desed: {{kind: desed, labels: {tmp_path / 'desed.tsv'}, audio: {audio}}}\n"
        f"  esc: {{kind: esc50, csv: {tmp_path / 'esc50.csv'}, audio: {audio}, template: 'the sound of {{}}'}}\n"
        f"  clotho: {{kind: clotho, csv: {tmp_path / 'clotho.csv'}, audio: {audio}}}\n"
    )
    out = tmp_path / "eval"
    assert (
        main(["--checkpoint", str(checkpoint), "--config", str(cfg), "--out", str(out), "--plots", "1"]) == 0
    )
    d = json.loads((out / "report.json").read_text())["datasets"]["desed"]
    assert d["n_clips"] == 4 and d["skipped"] == {"missing_audio": 1}
    m = d["metrics"]
    assert 0.0 <= m["psds1"] <= 1.0 and 0.0 <= m["mpauc"] <= 1.0 and 0.0 <= m["auroc"] <= 1.0
    assert set(m["per_class"]["auroc"]) == {"dog bark", "alarm bell ringing"}
    assert "PSDS" in (out / "report.md").read_text()
    report = json.loads((out / "report.json").read_text())["datasets"]
    esc = report["esc"]
    assert esc["task"] == "zeroshot" and esc["n_clips"] == 4 and esc["skipped"] == {"missing_audio": 1}
    assert 0.0 <= esc["metrics"]["top1"] <= 1.0
    clo = report["clotho"]
    assert clo["task"] == "retrieval" and clo["n_clips"] == 4 and clo["metrics"]["n_texts"] == 20
    assert clo["metrics"]["r5_t2a"] == 1.0  # 4 clips: every caption's clip is in the top 5
