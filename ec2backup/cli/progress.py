"""Progress on a terminal: the run's current state on a live line and, during the sync, a bar
with bytes, rate and ETA read from rsync's ``--info=progress2`` lines.

Everything goes to stderr, and only when stderr is a terminal; on a pipe or a file nothing is
drawn at all (``make_progress(False)`` returns a sink that does nothing). rsync emits a line per
file, which for a tree of small files is thousands a second: lines are only remembered, and
parsed and drawn at most ``min_interval`` apart (and once more on a state change or close).
While rsync is still listing the tree (incremental recursion, "ir-chk"), its totals grow as it
finds files: the bar then shows bytes and rate without a percent or ETA, and the file counts
say "still listing".

    sink = make_progress(sys.stderr.isatty())
    sink.state("syncing")
    syncer.sync(..., on_progress=sink.on_progress)
    sink.close()
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..adapters.rsync_output import Progress2, parse_progress2

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_MIN_INTERVAL = 0.1  # seconds between redraws: 10 per second is smooth enough


class ProgressSink(Protocol):
    def on_progress(self, line: str) -> None: ...

    def state(self, name: str) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    """Not a terminal: draw nothing, keep nothing."""

    def on_progress(self, line: str) -> None:
        pass

    def state(self, name: str) -> None:
        pass

    def close(self) -> None:
        pass


class TerminalProgress:
    """A live display on stderr: the state line, and the transfer bar once rsync reports."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = console or Console(stderr=True)
        self.min_interval = min_interval
        self.clock = clock
        self._state = ""
        self._state_since = clock()
        self._pending: str | None = None  # the newest line not drawn yet
        self._last_draw = float("-inf")
        self.draws = 0  # redraws done (for tests and benchmarks)
        self.last: Progress2 | None = None
        self._files = ""  # the file counts, kept across the mid-file lines that have none
        # rsync is still listing the tree: its percent and total cover only what it has found
        # so far (88% when a quarter is done), so the bar shows no total until the list is
        # complete. Lines without counts (mid-file) keep the last answer; before any, a total
        # is shown, which for one large file is right from the start.
        self._listing = False
        self._bar = Progress(
            TextColumn("  rsync"),
            BarColumn(),
            TextColumn("{task.fields[percent]}"),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[files]}"),
            console=self.console,
            get_time=clock,
            auto_refresh=False,
        )
        self._task = self._bar.add_task(
            "sync", total=None, start=True, files="", percent="", visible=False
        )
        self._live = Live(
            self,
            console=self.console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=True,  # log lines print above the live display, not through it
        )
        self._live.start()
        self._closed = False

    # rich renders the live display through this.
    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        elapsed = self.clock() - self._state_since
        line = Text.assemble(("state ", "dim"), (self._state or "-", "bold"), f"  {elapsed:.0f} s")
        if self.last is None:
            return line
        return Group(line, self._bar)

    def state(self, name: str) -> None:
        if self._closed:
            return
        if name != self._state:
            self._state = name
            self._state_since = self.clock()
        self._flush(force=True)

    def on_progress(self, line: str) -> None:
        if self._closed:
            return
        self._pending = line
        if self.clock() - self._last_draw >= self.min_interval:
            self._flush(force=False)

    def _apply(self, line: str) -> None:
        parsed = parse_progress2(line)
        if parsed is None:
            return
        self.last = parsed
        if parsed.files_total is not None and parsed.to_check is not None:
            self._listing = parsed.listing
            done, known = parsed.files_total - parsed.to_check, parsed.files_total
            self._files = (
                f"{done:,}/{known:,}+ files, still listing"
                if self._listing
                else f"{done:,}/{known:,} files"
            )
        self._bar.update(
            self._task,
            completed=parsed.bytes_done,
            total=None if self._listing else parsed.total_estimate,
            percent="" if self._listing else f"{parsed.percent:>3}%",
            files=self._files,
            visible=True,
        )

    def _flush(self, *, force: bool) -> None:
        if self._pending is not None:
            self._apply(self._pending)
            self._pending = None
        now = self.clock()
        if force or now - self._last_draw >= self.min_interval:
            self._last_draw = now
            self.draws += 1
            self._live.refresh()

    def close(self) -> None:
        if self._closed:
            return
        self._flush(force=True)
        self._closed = True
        self._live.stop()


def make_progress(
    console_is_tty: bool,
    *,
    console: Console | None = None,
    min_interval: float = DEFAULT_MIN_INTERVAL,
    clock: Callable[[], float] = time.monotonic,
) -> ProgressSink:
    """A terminal display if ``console_is_tty`` (pass ``sys.stderr.isatty()``), else a sink
    that does nothing. ``console`` (default: rich's on stderr), ``min_interval`` and ``clock``
    are for tests."""
    if not console_is_tty:
        return NullProgress()
    return TerminalProgress(console, min_interval=min_interval, clock=clock)
