"""The fakes' world of tests/run/test_engine.py, for the steps' tests of whole runs."""

from tests.run.test_engine import world  # noqa: F401 (a fixture)
