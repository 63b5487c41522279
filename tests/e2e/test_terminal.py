"""The progress display on a real terminal of 80 columns (tmux), against the local cloud: the bar
shows a rate and an ETA through the copy, ends at 100% with the counts the run records, and
`runs` fits the width. The screen is read with ``tmux capture-pane``, polled with deadlines."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Cli

pytestmark = pytest.mark.e2e
WIDTH = 80
# rsync's --bwlimit, so that the copy lasts long enough to be seen: 12 MiB at 3 MiB/s.
DATA_FILES, FILE_BYTES, BWLIMIT = 3, 4 * 2**20, "3m"


class Terminal:
    """A tmux server of our own (its own socket) with one 80x24 pane."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30
        )

    def screen(self) -> list[str]:
        return self.tmux("capture-pane", "-p", "-t", "main").stdout.splitlines()

    def run(self, script: Path) -> None:
        started = self.tmux(
            "new-session", "-d", "-s", "main", "-x", str(WIDTH), "-y", "24", f"sh {script}"
        )
        assert started.returncode == 0, started.stderr

    def until(self, done: Any, timeout: float, seen: list[list[str]]) -> list[str]:
        """Capture the screen until ``done(lines)``; every distinct screen goes to ``seen``."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.screen()
            if not seen or seen[-1] != lines:
                seen.append(lines)
            if done(lines):
                return lines
            if time.monotonic() > deadline:
                pytest.fail("the terminal showed, last:\n" + "\n".join(lines))
            time.sleep(0.05)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    term = Terminal(f"ec2backup-test-{uuid.uuid4().hex[:12]}")
    try:
        yield term
    finally:
        term.tmux("kill-server")  # ends the pane's shell and whatever it still runs


def _script(cli: Cli, path: Path, *args: str) -> Path:
    """A shell script running ``ec2backup ARGS`` in the test's environment, then saying how it
    exited and waiting (so that the pane, and what it shows, stays)."""
    env = {**cli.env, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    lines = [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    lines += [
        "unset COLUMNS LINES",  # the terminal's own size, as a user's shell has it
        f"cd {shlex.quote(str(cli.cwd))}",
        " ".join(shlex.quote(a) for a in [sys.executable, "-m", "ec2backup", *args]),
        'echo "EXIT=$?"',
        "read never",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_bar_shows_rate_and_eta_and_ends_at_100_percent_at_80_columns(
    cli: Cli, sandbox: Any, tmp_path: Path, terminal: Terminal
) -> None:
    source = tmp_path / "home"
    source.mkdir()
    for i in range(DATA_FILES):
        (source / f"photo-{i}.raw").write_bytes(os.urandom(FILE_BYTES))
    cli("init", "--profile", "t", "--az", "us-east-1a", "--size", "1", "--source", str(source))
    config = tmp_path / "config.toml"
    config.write_text(
        config.read_text().replace(
            "[profiles.t]\n", f'[profiles.t]\nrsync_args = ["--bwlimit={BWLIMIT}"]\n'
        )
    )

    seen: list[list[str]] = []
    terminal.run(_script(cli, tmp_path / "run.sh", "run", "--profile", "t"))
    final = terminal.until(lambda lines: any(ln.startswith("EXIT=") for ln in lines), 240, seen)
    assert "EXIT=0" in final, "\n".join(final)

    everything = [line for screen in seen for line in screen]
    assert all(len(line) <= WIDTH for line in everything)
    # During the copy: a share, a measured rate and an ETA, on the bar's one line.
    during = re.compile(
        r"\s\d{1,3}%\s+[\d.]+ [kMG]?i?B/[\d.]+ [kMG]?i?B\s+[\d.]+ [kMG]?i?B/s\s+ETA \d"
    )
    moving = [line for line in everything if during.search(line)]
    assert moving, "no line with a rate and an ETA; screens:\n" + "\n---\n".join(
        "\n".join(s) for s in seen
    )
    assert not any("-- B/s" in line for line in moving)
    # At the end: 100%, the whole size, and the counts the run recorded.
    runs = cli.json("runs")
    (run,) = [r for r in runs if r["kind"] == "backup"]
    (init_id,) = [r["id"] for r in runs if r["kind"] == "init"]
    assert any(line.strip() == run["id"] for line in final)  # stdout: the run id, unbroken
    shown = cli.json("show", run["id"])
    assert shown["state"] == "done"
    (bar,) = [line for line in final if "%" in line and " in " in line]
    assert re.search(r"\s100%\s", bar), bar
    copied = shown["stats"]["files_transferred"]
    assert copied == DATA_FILES
    assert any(line.strip().startswith(f"{copied} files copied") for line in final), final
    assert any(line.startswith("state done") for line in final), final
    print("\n".join(moving[-1:] + final))  # for -s: what a user saw

    # `runs` at 80 columns: one line per run, ids whole, headers unbroken.
    terminal.tmux("kill-session", "-t", "main")
    terminal.run(_script(cli, tmp_path / "runs.sh", "runs"))
    listed = terminal.until(lambda lines: any(ln.startswith("EXIT=") for ln in lines), 60, [])
    assert "EXIT=0" in listed, "\n".join(listed)
    header = next(line for line in listed if "RUN" in line)
    assert header.split("┃")[0].strip() == "RUN" and "STATE" in header, header
    rows = [line for line in listed if line.lstrip().startswith("2")]  # ids begin with the year
    assert [r.split()[0] for r in rows] == [run["id"], init_id], "\n".join(listed)
    assert [r.split("│")[3].strip() for r in rows] == ["done", "done"], rows
    print("\n".join(listed))
