"""Fixtures shared by the model.detect and model.search tests: the small test model, saved and loaded once per
test process (`tests.model.detect_audio`)."""

from __future__ import annotations

import pytest

from tests.model.detect_audio import small_checkpoint, small_model


@pytest.fixture(scope="module")
def ckpt():
    return small_checkpoint()


@pytest.fixture(scope="module")
def model(ckpt):
    return small_model()
