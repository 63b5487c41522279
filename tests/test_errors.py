"""The error hierarchy is the one drawn in errors.py's docstring."""

from __future__ import annotations

import re

import pytest

from ec2backup import errors
from ec2backup.errors import Terminated


def drawn_tree() -> dict[str, str | None]:
    """Class name -> parent name, read from the drawing in the module docstring."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []  # (depth, name) of the open branches
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^ {4}((?:[│ ] {3})*)(?:[├└]── )?([A-Z]\w+)(?:\s|$)", line)
        if not match:
            continue
        depth = len(match.group(1)) // 4 + (1 if "──" in line else 0)
        stack = [(d, n) for d, n in stack if d < depth]
        parents[match.group(2)] = stack[-1][1] if stack else None
        stack.append((depth, match.group(2)))
    return parents


def test_every_error_class_is_drawn_under_its_real_parent() -> None:
    tree = drawn_tree()
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, errors.Ec2BackupError)
    }
    assert tree.pop("Interrupted") is None  # drawn apart: a BaseException, like Ctrl-C
    assert not issubclass(errors.Interrupted, Exception)
    assert tree.pop("Terminated") is None  # drawn apart: what SIGTERM's handler raises
    assert issubclass(errors.Terminated, KeyboardInterrupt)
    assert set(tree) == set(classes)
    for name, parent in tree.items():
        assert classes[name].__bases__ == ((classes[parent],) if parent else (Exception,)), name


def test_an_abandoned_run_error_names_the_run_and_the_reaped_instance() -> None:
    error = errors.AbandonedRunError("20261128T000000Z-aaaaaa", "i-0123", "no process holds it")
    assert isinstance(error, errors.Ec2BackupError) and error.resumable
    assert (error.run_id, error.resources, error.instance_id) == (
        "20261128T000000Z-aaaaaa",
        {"instance": "i-0123"},
        "i-0123",
    )
    line = error.one_line()
    assert "i-0123" in line and "no process holds it" in line
    assert "ec2backup resume 20261128T000000Z-aaaaaa" in line


def test_an_interrupt_raised_inside_an_event_loop_callback_leaves_the_loop() -> None:
    # SIGTERM's handler raises Terminated wherever the main thread is, also inside one of
    # asyncio's callbacks (asyncssh reading from its socket). asyncio lets only SystemExit and
    # KeyboardInterrupt out of a callback; any other exception goes to the loop's exception
    # handler, the run carries on and the signal is lost.
    import asyncio

    def interrupt() -> None:
        raise Terminated()

    async def wait() -> None:
        asyncio.get_running_loop().call_soon(interrupt)
        await asyncio.sleep(1)

    with asyncio.Runner() as runner, pytest.raises(Terminated, match="SIGTERM"):
        runner.run(wait())
