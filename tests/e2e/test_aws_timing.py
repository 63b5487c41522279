"""A backup and a restore with the local cloud at AWS's timing (`timing=aws`): boot, SSH ready
when cloud-final has printed the host keys (logins refused until then), attach, detach,
terminate and the snapshot all take their typical time, scaled down by TIMING_SCALE (the same
order, ten times faster: docs/aws.md) to keep CI's budget."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli, make_sample_tree, tree_digest

pytestmark = pytest.mark.e2e
TIMING_SCALE = 0.1


def test_a_backup_and_a_restore_at_awss_timing(
    cli: Cli, sandbox_faults: Any, tmp_path: Path
) -> None:
    source = tmp_path / "home"
    source.mkdir()
    make_sample_tree(source)
    sandbox_faults.configure_faults(timing="aws", timing_scale=TIMING_SCALE)
    started = time.monotonic()
    cli("init", "--profile", "t", "--az", "us-east-1a", "--size", "1", "--source", str(source))
    backup = cli("run", "--profile", "t").stdout.strip()
    shown = cli.json("show", backup)
    assert shown["state"] == "done"
    # The snapshot is still pending (60 s here): the restore waits for it, then proceeds.
    restored = cli("restore", "--run", backup, "--to", str(tmp_path / "back"))
    assert "is pending" in restored.stderr
    assert tree_digest(tmp_path / "back" / "home") == tree_digest(source)
    # Nothing here finished faster than the delays it went through (boot + SSH + attach at
    # least, for each of the three runs).
    assert time.monotonic() - started > 3 * (12 + 20 + 5) * TIMING_SCALE
