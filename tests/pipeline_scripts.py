"""Import the Beam entry points in pipelines/ (scripts, not a package) as modules for in-process tests."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def import_pipeline_script(name: str) -> ModuleType:
    """pipelines/<name>.py imported as a module (the pipelines are scripts, not a package)."""
    module_name = f"pipelines_{name}"
    spec = importlib.util.spec_from_file_location(module_name, PIPELINES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # Beam pickles the DoFns defined in the script by module name
    spec.loader.exec_module(module)
    return module
