"""Fixtures of the model side: a digit vocabulary and mosaic items with final labels."""

from __future__ import annotations

import pytest

from tests.training.builders import Mosaic, write_mosaic_items


@pytest.fixture
def mosaic_items(db) -> Mosaic:
    return write_mosaic_items(40)
