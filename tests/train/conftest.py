"""Small real shards for the trainer tests: mixtures + audio-text clips rendered from the in-repo demo corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import DEMO_CORPUS
from tests.pipeline_scripts import import_pipeline_script


@pytest.fixture(scope="session")
def train_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`OUT/mixtures/train` (32 mixtures, 4 shards of 8) and `OUT/audio_text/train` (8 clips per shard)."""
    if not (DEMO_CORPUS / "metadata.csv").exists():
        pytest.skip(f"demo corpus missing at {DEMO_CORPUS}")
    out = tmp_path_factory.mktemp("train_shards")
    render = import_pipeline_script("render_mixtures")
    rc = render.main(["--corpus", str(DEMO_CORPUS), "--out", str(out), "--num-mixtures", "32",
                      "--shard-size", "8", "--no-measure-loudness", "--log-level", "WARNING"])  # fmt: skip
    assert rc in (0, None)
    assert len(list((out / "mixtures" / "train").glob("shard-*.tar"))) == 4
    assert list((out / "audio_text" / "train").glob("shard-*.tar"))
    return out
