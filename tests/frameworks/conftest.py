"""The ``framework`` fixture (tests/framework_fixtures.py) for the tests of this folder."""

from tests.framework_fixtures import framework

__all__ = ["framework"]
