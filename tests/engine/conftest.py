"""Fixtures for engine tests: real models (``hash`` for plumbing, the built-in one where
pixels must really be decoded) and real photos from scikit-image."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from skimage import data as skimage_data

from clipserve.engine import Metrics
from clipserve.models.base import EmbeddingModel
from tests.engine.helpers import WrappedModel, png_bytes


@pytest.fixture
def wrapped(hash_model: EmbeddingModel) -> WrappedModel:
    return WrappedModel(hash_model)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture(scope="session")
def cat_png() -> bytes:
    return png_bytes(skimage_data.chelsea())


@pytest.fixture(scope="session")
def coffee_png() -> bytes:
    return png_bytes(skimage_data.coffee())
