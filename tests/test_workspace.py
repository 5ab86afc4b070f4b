"""The workspace packages exist and import under the names the CLIs use."""

import importlib

import pytest


@pytest.mark.parametrize("name", ["synth", "captioning", "model", "eval"])
def test_package_imports(name):
    mod = importlib.import_module(name)
    assert mod.__version__ == "0.1.0"
    assert mod.__file__ and f"packages/{name}/src/{name}" in mod.__file__.replace("\\", "/")
