"""Fixtures of this folder."""

from tests.loop.stand_in import stand_in  # noqa: F401 - a fixture
