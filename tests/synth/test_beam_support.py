"""Runner defaults and worker packaging: real wheels built from the workspace, importable on their own."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from synth import beam_support as bs


def test_local_defaults_never_pick_prism():
    args = bs.with_local_defaults([], num_workers=2)
    assert "--runner=FnApiRunner" in args
    assert "--direct_num_workers=2" in args and "--direct_running_mode=multi_processing" in args
    assert bs.with_local_defaults(["--runner", "FnApiRunner", "--direct_num_workers=1"]) == [
        "--runner",
        "FnApiRunner",
        "--direct_num_workers=1",
    ]
    one = bs.with_local_defaults([], num_workers=1)
    assert "--direct_num_workers=1" in one and not any("running_mode" in a for a in one)
    # a user-chosen running mode is kept
    mt = bs.with_local_defaults(["--direct_running_mode=multi_threading"], num_workers=2)
    assert mt.count("--direct_running_mode=multi_threading") == 1 and len(mt) == 3


@pytest.mark.parametrize(
    "name,remote",
    [
        ("FnApiRunner", False),
        ("DirectRunner", False),
        ("PrismRunner", False),
        ("DataflowRunner", True),
        ("FlinkRunner", True),
        ("SparkRunner", True),
        ("apache_beam.runners.portability.portable_runner.PortableRunner", True),
    ],
)
def test_remote_runner_detection(name, remote):
    assert bs.is_remote_runner(name) is remote


def test_local_runner_builds_nothing():
    assert not any("extra_package" in a for a in bs.pipeline_args(["--runner=FnApiRunner"]))


def test_remote_runner_with_container_image_builds_nothing():
    args = ["--runner=DataflowRunner", "--sdk_container_image=example/flam:1"]
    assert bs.pipeline_args(args) == args + []
    assert bs.pipeline_args(["--runner=FlinkRunner", "--no_workspace_wheels"]) == ["--runner=FlinkRunner"]


def test_workspace_discovery(repo_root):
    assert bs.find_workspace_root() == repo_root
    members = bs.workspace_members(repo_root)
    assert members["flam-synth"] == repo_root / "packages" / "synth"
    with pytest.raises(ValueError, match="not a member"):
        bs.build_wheels(["no-such-package"], repo_root / "unused", repo_root)


def test_remote_runner_stages_installable_workspace_wheel(tmp_path):
    args = bs.pipeline_args(["--runner=DataflowRunner", "--project=p"], ("flam-synth",), wheel_dir=tmp_path)
    extra = [a.split("=", 1)[1] for a in args if a.startswith("--extra_package=")]
    assert len(extra) == 1 and extra[0].endswith(".whl") and "flam_synth-" in extra[0]
    whl = extra[0]
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = z.read(meta).decode()
    for module in ("synth/__init__.py", "synth/shards.py", "synth/beam_support.py"):
        assert module in names
    assert "Name: flam-synth" in metadata and "Requires-Dist: apache-beam" in metadata
    # The wheel alone provides the package: import it from the zip in a clean interpreter.
    code = f"import sys; sys.path.insert(0, {whl!r}); import synth.shards as s; print(s.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().startswith(whl)


def test_parse_cli_splits_beam_options_and_rejects_bare_words(capsys):
    import argparse

    p = argparse.ArgumentParser(prog="tool")
    p.add_argument("--out", required=True)
    args, beam = bs.parse_cli(p, ["--out", "x", "--runner", "DataflowRunner", "--project=P"])
    assert args.out == "x" and beam == ["--runner", "DataflowRunner", "--project=P"]
    assert bs.runner_name(beam) == "DataflowRunner"
    with pytest.raises(SystemExit) as exc:
        bs.parse_cli(p, ["--out", "x", "stray", "--runner=FnApiRunner"])
    assert exc.value.code == 2
    assert "unexpected argument 'stray' (Beam options are --name=value)" in capsys.readouterr().err


def test_setup_logging_sets_level_and_shared_format():
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()
    try:
        bs.setup_logging("debug")
        assert root.level == logging.DEBUG and len(root.handlers) == 1
        assert root.handlers[0].formatter._fmt == bs.LOG_FORMAT
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
