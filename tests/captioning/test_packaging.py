"""Remote runners: the documented Dataflow command line stages installable wheels of the workspace packages."""

import subprocess
import sys
import zipfile

import pytest

from tests.pipeline_scripts import import_pipeline_script


@pytest.fixture(scope="module")
def caption_cli():
    return import_pipeline_script("caption")


def test_dataflow_args_stage_workspace_wheels(caption_cli, tmp_path):
    wheel_dir = tmp_path / "wheels"
    job = caption_cli.parse_args(
        [
            "--corpus",
            "gs://bucket/corpus",
            "--out",
            "gs://bucket/manifest.parquet",
            "--captioner",
            "vllm",
            "--endpoint",
            "http://10.0.0.5:8000/v1",
            "--wheel-dir",
            str(wheel_dir),
            "--runner=DataflowRunner",
            "--project",
            "proj",
            "--region",
            "europe-west4",
            "--temp_location",
            "gs://bucket/tmp",
        ]  # fmt: skip
    )
    assert job.cache == "gs://bucket/caption_cache"  # remote cache beside the output
    args = caption_cli.beam_pipeline_args(job)
    assert "--runner=DataflowRunner" in args and "--project" in args and "gs://bucket/tmp" in args
    extra = [a.split("=", 1)[1] for a in args if a.startswith("--extra_package=")]
    assert [p.rsplit("/", 1)[-1].split("-")[0] for p in extra] == [
        "flam_synth",
        "flam_captioning",
    ]  # deps first
    for p in extra:
        assert p.startswith(str(wheel_dir)) and p.endswith(".whl")
    cap_whl = zipfile.ZipFile(extra[1])
    names = cap_whl.namelist()
    for mod in ("client", "cache", "beam_fns", "prompt", "captioner", "template", "validate", "parse"):
        assert f"captioning/{mod}.py" in names
    meta = next(n for n in names if n.endswith("METADATA"))
    requires = [x for x in cap_whl.read(meta).decode().splitlines() if x.startswith("Requires-Dist")]
    assert any("flam-synth" in r for r in requires) and any("openai" in r for r in requires)
    # the wheels are importable on their own (no workspace on sys.path, no site-packages: -S)
    code = (
        "import captioning.prompt, captioning.validate, synth.errors; "
        "print(captioning.prompt.__file__); print(captioning.prompt.PROMPT_VERSION)"
    )
    res = subprocess.run(
        [sys.executable, "-S", "-c", code],
        env={"PYTHONPATH": ":".join(extra)},
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert extra[1] in res.stdout.splitlines()[0]


def test_local_runner_builds_nothing(caption_cli, tmp_path):
    job = caption_cli.parse_args(["--corpus", str(tmp_path), "--out", str(tmp_path / "m.parquet")])
    args = caption_cli.beam_pipeline_args(job)
    assert "--runner=FnApiRunner" in args and not any(a.startswith("--extra_package") for a in args)
    assert job.settings.captioner == "template" and job.cache is None


def test_cache_flush_every_flag(caption_cli, tmp_path):
    base = ["--corpus", str(tmp_path), "--out", "gs://b/m.parquet", "--captioner", "vllm"]
    assert caption_cli.parse_args(base).settings.cache_flush_every is None  # 64 on gs://, 1 locally
    job = caption_cli.parse_args([*base, "--cache-flush-every", "1"])
    assert job.settings.cache_flush_every == 1 and job.cache == "gs://b/caption_cache"
    with pytest.raises(SystemExit):
        caption_cli.parse_args([*base, "--cache-flush-every", "0"])


@pytest.mark.parametrize("runner", [["--runner=DataflowRunner"], ["--runner", "DataflowRunner"]])
def test_api_key_warning_for_dataflow_either_flag_form(caption_cli, tmp_path, monkeypatch, runner):
    base = ["--corpus", "gs://b/corpus", "--out", "gs://b/m.parquet", "--captioner", "vllm"]
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("FLAM_LLM_API_KEY", raising=False)
    assert caption_cli.api_key_warning(caption_cli.parse_args([*base, *runner])) is None  # no key set here
    monkeypatch.setenv("FLAM_LLM_API_KEY", "sk-x")
    warning = caption_cli.api_key_warning(caption_cli.parse_args([*base, *runner]))
    assert warning is not None and "not shipped to workers" in warning and "FLAM_LLM_API_KEY" in warning
    assert caption_cli.api_key_warning(caption_cli.parse_args(base)) is None  # local runner: same environment


def test_default_cache_beside_the_output(caption_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert caption_cli._default_cache("gs://b/run/m.parquet") == "gs://b/run/caption_cache"
    assert caption_cli._default_cache("out/m.parquet") == str(tmp_path / "out" / "caption_cache")
    assert caption_cli._default_cache(f"file://{tmp_path}/x/m.parquet") == str(
        tmp_path / "x" / "caption_cache"
    )
