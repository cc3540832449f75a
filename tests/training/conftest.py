"""Fixtures of the model side: a digit vocabulary and mosaic items with final labels."""

from __future__ import annotations

import pytest

from tests.annotate.export_pool import pool  # noqa: F401 - a fixture
from tests.training.builders import Mosaic, write_mosaic_items


@pytest.fixture
def mosaic_items(db) -> Mosaic:
    return write_mosaic_items(40)
