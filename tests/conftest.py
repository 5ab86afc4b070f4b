"""Shared test fixtures: offline Hugging Face, paths to the in-repo demo corpus and the shared dev corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_CORPUS = REPO_ROOT / "corpus" / "demo"
SHARED_DEV_CORPUS = REPO_ROOT.parent / "shared" / "corpus" / "dev"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def demo_corpus() -> Path:
    if not (DEMO_CORPUS / "metadata.csv").exists():
        pytest.skip(f"demo corpus missing at {DEMO_CORPUS}")
    return DEMO_CORPUS


@pytest.fixture(scope="session")
def dev_corpus() -> Path:
    """The shared developer corpus (../shared/corpus/dev); tests that need it skip when it is absent."""
    if not (SHARED_DEV_CORPUS / "metadata.csv").exists():
        pytest.skip(f"shared dev corpus not found at {SHARED_DEV_CORPUS} (outside contributors: expected)")
    return SHARED_DEV_CORPUS


@pytest.fixture(scope="session")
def sound_corpus() -> Path:
    """Real recordings for pipeline tests: the shared dev corpus when present, else the in-repo demo corpus,
    so that outside contributors still run them (same metadata format, fewer files)."""
    if (SHARED_DEV_CORPUS / "metadata.csv").exists():
        return SHARED_DEV_CORPUS
    if (DEMO_CORPUS / "metadata.csv").exists():
        return DEMO_CORPUS
    pytest.skip("neither the shared dev corpus nor corpus/demo is present")
