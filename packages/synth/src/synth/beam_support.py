"""Apache Beam runner options and worker packaging shared by the FLAM pipelines.

Local runs default to the in-process FnApiRunner (no Prism download, works offline). For remote runners
(Dataflow, Flink, Spark, Portable) the workspace packages the pipeline imports on workers are built as
wheels (``uv build --package NAME``) and staged with ``--extra_package``, unless the caller already says
how workers get the code (``--sdk_container_image``, ``--setup_file``, ``--extra_package``, or
``--no_workspace_wheels``).
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_LOCAL_RUNNER = "FnApiRunner"  # the DirectRunner would first try to download the Prism runner binary
LOCAL_RUNNERS = frozenset(
    {"FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner", "InteractiveRunner"}
)
# Options that already tell remote workers how to get our code: then no wheels are built.
CODE_SHIPPING_FLAGS = (
    "--sdk_container_image",
    "--worker_harness_container_image",
    "--setup_file",
    "--extra_package",
)
NO_WHEELS_FLAG = "--no_workspace_wheels"


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def unknown_options(args: Sequence[str]) -> list[str]:
    """The arguments no Apache Beam ``PipelineOptions`` class defines (parsed as Beam parses them: every
    registered options class, no abbreviations; :data:`NO_WHEELS_FLAG` is ours). Beam itself only warns
    about them and runs on with its defaults."""
    level = logging.root.manager.disable
    logging.disable(logging.WARNING)  # Beam's import-time warnings must not precede a one-line error
    try:
        from apache_beam.options import pipeline_options as po
    finally:
        logging.disable(level)
    parser_cls = getattr(po, "_BeamArgumentParser", argparse.ArgumentParser)
    parser = parser_cls(allow_abbrev=False, add_help=False)
    classes: dict[str, type] = {}
    for cls in po.PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # noqa: SLF001 - Beam's own registration hook
    parser.add_argument(NO_WHEELS_FLAG, action="store_true")
    _, unknown = parser.parse_known_args(list(args))
    return unknown


def parse_cli(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> tuple[argparse.Namespace, list[str]]:
    """Parse a pipeline command line: (the parser's own args, the rest as Beam options).

    Exits through ``parser.error`` (status 2, one line) when the rest holds anything that is neither this
    command's flag nor an Apache Beam pipeline option (a mistyped ``--shard_size 2``, a bare word).
    """
    args, beam_args = parser.parse_known_args(argv)
    if beam_args and not beam_args[0].startswith("--"):
        parser.error(f"unexpected argument {beam_args[0]!r} (Beam options are --name=value)")
    unknown = unknown_options(beam_args)
    if unknown:
        parser.error(
            f"unrecognized arguments: {' '.join(unknown)} (neither a flag of this command nor an Apache "
            "Beam pipeline option; see --help)"
        )
    return args, beam_args


def setup_logging(level: str) -> None:
    """Root logging at ``level`` (a name such as ``info``) in the pipelines' shared format."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    """Last value of ``--flag=value`` or ``--flag value`` in ``args``."""
    value = None
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
    return value


def _has_flag(args: Sequence[str], *flags: str) -> bool:
    return any(
        a == f or a.startswith(f + "=") or a.startswith(f + "s=") or a == f + "s" for a in args for f in flags
    )


def runner_name(args: Sequence[str]) -> str:
    """The runner the Beam arguments select (short class name), ``FnApiRunner`` when none is given."""
    name = _flag_value(args, "--runner") or DEFAULT_LOCAL_RUNNER
    return name.rsplit(".", 1)[-1]


def is_remote_runner(name: str) -> bool:
    """True when workers run outside this Python environment and need the workspace packages shipped."""
    return name.rsplit(".", 1)[-1] not in LOCAL_RUNNERS and name != "PrismRunner"


def with_local_defaults(args: Sequence[str], num_workers: int | None = None) -> list[str]:
    """Add ``--runner=FnApiRunner`` when no runner is given, and, for the FnApiRunner, a worker count.

    ``num_workers`` (default: all cores) applies only when ``--direct_num_workers`` is absent; with more than
    one worker the running mode defaults to ``multi_processing`` (rendering is CPU bound and holds the GIL).
    """
    out = list(args)
    if _flag_value(out, "--runner") is None:
        out.append(f"--runner={DEFAULT_LOCAL_RUNNER}")
    if (
        runner_name(out) in ("FnApiRunner", "DirectRunner")
        and _flag_value(out, "--direct_num_workers") is None
    ):
        n = num_workers if num_workers is not None else (os.cpu_count() or 1)
        out.append(f"--direct_num_workers={n}")
        if n != 1 and _flag_value(out, "--direct_running_mode") is None:
            out.append("--direct_running_mode=multi_processing")
    return out


# ---------------------------------------------------------------- workspace wheels


def find_workspace_root(start: Path | None = None) -> Path | None:
    """The nearest folder above ``start`` whose pyproject.toml declares a uv workspace (None if not found)."""
    here = Path(start or Path(__file__)).resolve()
    for folder in [here, *here.parents]:
        py = folder / "pyproject.toml"
        if py.is_file():
            try:
                data = tomllib.loads(py.read_text())
            except (OSError, tomllib.TOMLDecodeError):
                continue
            if data.get("tool", {}).get("uv", {}).get("workspace"):
                return folder
    return None


def workspace_members(root: Path) -> dict[str, Path]:
    """Project name -> folder for each member of the uv workspace at ``root``."""
    data = tomllib.loads((root / "pyproject.toml").read_text())
    members: dict[str, Path] = {}
    for pattern in data["tool"]["uv"]["workspace"].get("members", []):
        for folder in sorted(root.glob(pattern)):
            py = folder / "pyproject.toml"
            if py.is_file():
                members[tomllib.loads(py.read_text())["project"]["name"]] = folder
    return members


def build_wheels(packages: Sequence[str], out_dir: Path, root: Path | None = None) -> list[Path]:
    """Build a wheel of each workspace package into ``out_dir`` (in the given order); return their paths.

    Uses ``uv build --package NAME --wheel`` when uv is on PATH, else ``python -m build --wheel``.
    Raises ``RuntimeError`` with the build output when a build fails.
    """
    root = root or find_workspace_root()
    if root is None:
        raise RuntimeError(
            "cannot find the FLAM uv workspace (pyproject.toml with [tool.uv.workspace]) to build worker wheels; "
            "pass --sdk_container_image or --extra_package yourself, or --no_workspace_wheels"
        )
    members = workspace_members(root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    uv = shutil.which("uv")
    wheels = []
    for name in packages:
        if name not in members:
            raise ValueError(
                f"{name!r} is not a member of the workspace at {root} (members: {sorted(members)})"
            )
        before = set(out_dir.glob("*.whl"))
        if uv:
            cmd = [uv, "build", "--package", name, "--wheel", "--out-dir", str(out_dir), "--quiet"]
        else:
            cmd = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out_dir), str(members[name])]
        res = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(
                f"building a wheel of {name} failed ({' '.join(cmd)}):\n{res.stdout}\n{res.stderr}"
            )
        dist = name.replace("-", "_")
        new = sorted(p for p in set(out_dir.glob("*.whl")) - before if p.name.startswith(dist + "-"))
        found = new or sorted(out_dir.glob(f"{dist}-*.whl"))
        if not found:
            raise RuntimeError(f"building {name} produced no wheel in {out_dir}:\n{res.stdout}\n{res.stderr}")
        wheels.append(found[-1])
        log.info("built worker wheel %s", found[-1].name)
    return wheels


def pipeline_args(
    beam_args: Sequence[str],
    packages: Sequence[str] = ("flam-synth",),
    num_workers: int | None = None,
    wheel_dir: str | os.PathLike | None = None,
) -> list[str]:
    """Beam arguments ready to run: local defaults, plus ``--extra_package`` wheels for remote runners.

    ``packages`` are the workspace packages the workers import, dependencies first (Beam installs extra
    packages in the order given, so a package's workspace dependency must precede it).
    """
    args = [a for a in beam_args if a != NO_WHEELS_FLAG]
    no_wheels = len(args) != len(beam_args)
    args = with_local_defaults(args, num_workers)
    name = runner_name(args)
    if not is_remote_runner(name) or no_wheels or _has_flag(args, *CODE_SHIPPING_FLAGS):
        return args
    if wheel_dir is None:
        wheel_dir = Path(tempfile.mkdtemp(prefix="flam-wheels-"))
        atexit.register(shutil.rmtree, wheel_dir, True)
    wheels = build_wheels(packages, Path(wheel_dir))
    log.info("%s: staging workspace wheels for workers: %s", name, ", ".join(w.name for w in wheels))
    return args + [f"--extra_package={w}" for w in wheels]


def pipeline_options(
    beam_args: Sequence[str],
    packages: Sequence[str] = ("flam-synth",),
    num_workers: int | None = None,
    wheel_dir: str | os.PathLike | None = None,
) -> object:
    """``PipelineOptions`` from ``pipeline_args`` (Beam is imported here, not at module import)."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(pipeline_args(beam_args, packages, num_workers, wheel_dir))
    FileSystems.set_options(options)  # so the driver can read/write gs:// etc. with the same credentials
    return options
