"""The fakes' world of tests/run/test_engine.py, for the commands' tests."""

from tests.run.test_engine import world  # noqa: F401 (a fixture)
