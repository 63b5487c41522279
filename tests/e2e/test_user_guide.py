"""docs/user-guide.md, followed start to finish: its `sh` blocks run in order in one bash
session, against a local cloud of their own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "user-guide.md"


def sh_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", markdown, flags=re.S | re.M)


def test_the_guide_has_the_sections_a_user_needs() -> None:
    text = GUIDE.read_text()
    for heading in (
        "Install",
        "first backup",
        "Restore",
        "retention",
        "Scheduling",
        "crash",
        "Reaping",
        "Hooks and monitoring",
        "Growing the volume",
    ):
        assert re.search(rf"^## .*{heading}", text, flags=re.M | re.I), heading
    assert len(sh_blocks(text)) >= 8


def test_following_the_guide_works(tmp_path: Path, sandbox: object) -> None:
    del sandbox  # only for its skip conditions: the guide starts a local cloud of its own
    script = "set -euo pipefail\n" + "\n".join(sh_blocks(GUIDE.read_text()))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "WORK": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "EC2BACKUP_CONFIG": str(tmp_path / "config.toml"),
        "EC2BACKUP_DB": f"sqlite:///{tmp_path / 'ec2backup.db'}",
        "EC2BACKUP_DATA_DIR": str(tmp_path / "data"),
    }
    try:
        result = subprocess.run(
            ["bash", "-c", script],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "ec2backup",
                "sandbox",
                "stop",
                "--dir",
                str(tmp_path / "cloud"),
            ],
            env=env,
            capture_output=True,
        )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    out = result.stdout
    assert out.count("Dear grandma,") == 2 and "P.S. the milk" in out
    assert "differences found (exit 1)" in out
    assert "crashed (exit 137)" in out
    assert "OnCalendar" in out
    assert re.search(r"^ec2backup \d", out, flags=re.M)  # --version
    # Hooks and the metrics file; grow, then the filesystem grown by the next run.
    assert re.search(r"^backup done: \d+ bytes sent$", out, flags=re.M)
    assert 'ec2backup_last_run_success{profile="laptop"} 1' in out
    assert "filesystem grown from 1.00 GiB to 2.00 GiB" in out
    assert "abandoned (attaching)" in out
    # The sandbox stopped keeps the volume and its snapshots, and they come back with it.
    assert "volumes kept for the next `ec2backup sandbox start`: 1" in out
    assert "no sandbox runs (exit 1)" in out
