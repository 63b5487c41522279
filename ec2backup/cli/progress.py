"""Progress on a terminal: the run's current state on a live line and, during a copy, a bar with
its share done, bytes, rate and ETA, and the file counts, read from rsync's
``--info=progress2`` lines.

Everything goes to stderr, and only when stderr is a terminal; on a pipe or a file nothing is
drawn at all (``make_progress(False)`` returns a sink that does nothing). rsync emits a line per
file, which for a tree of small files is thousands a second: lines are only remembered, and
parsed and drawn at most ``min_interval`` apart (and once more on a state change or close).

What rsync's line says, and what is shown:

* its bytes count only the files it copies, and its percent is of every file in the list, so a
  backup that copies a tenth of the tree ends at "10%". The share shown is the larger of the
  bytes copied and the entries checked (``to-chk``), and a copy that ended well is shown whole:
  100%, its exact size and counts from rsync's statistics (``transfer(TransferNote(stats=))``).
* its percent is truncated, so the total it implies moves by up to 1% on every line; the total
  shown is one all lines so far agree with (the source's size on disk if it is one), and
  changes only when a line disagrees with it (rsync found more files).
  While it still lists the tree ("ir-chk") the total is at least the source's size on disk
  when the step knew it (``expected_bytes``).
* rate and ETA are measured here, over the last ``RATE_WINDOW`` seconds.

    sink = make_progress(sys.stderr.isatty())
    sink.state("syncing")
    sink.transfer(TransferNote("docs", expected_bytes=...))
    syncer.sync(..., on_progress=sink.on_progress)
    sink.transfer(TransferNote("docs", stats=stats))
    sink.close()
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..adapters.rsync_output import Progress2, parse_progress2
from ..ports import SyncStats, TransferNote

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_MIN_INTERVAL = 0.1  # seconds between redraws: 10 per second is smooth enough
RATE_WINDOW = 10.0  # seconds of samples the rate and the ETA are measured over
_ENDED = frozenset({"done", "aborted", "failed"})


class ProgressSink(Protocol):
    def on_progress(self, line: str) -> None: ...

    def state(self, name: str) -> None: ...

    def transfer(self, note: TransferNote) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    """Not a terminal: draw nothing, keep nothing."""

    def on_progress(self, line: str) -> None:
        pass

    def state(self, name: str) -> None:
        pass

    def transfer(self, note: TransferNote) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Transfer:
    """One rsync run as the display follows it."""

    label: str
    started: float
    expected: int | None = None
    done: int = 0  # bytes of the files copied so far (rsync's count)
    checked: int | None = None  # entries of the list checked so far
    entries: int | None = None  # entries in the list (so far, while listing)
    copied: int = 0  # files copied (rsync's xfr#)
    listing: bool = False
    # The byte total every line so far agrees with: [low, high], and the one shown.
    low: float = 0.0
    high: float = float("inf")
    total: int | None = None
    samples: deque[tuple[float, int, int]] = field(default_factory=deque)  # time, bytes, checked
    stats: SyncStats | None = None
    ended: float | None = None

    def apply(self, line: Progress2, now: float) -> None:
        self.done = line.bytes_done
        if line.files_done is not None:
            self.copied = line.files_done
        if line.files_total is not None and line.to_check is not None:
            self.listing = line.listing
            self.entries, self.checked = line.files_total, line.files_total - line.to_check
        self._narrow_total(line)
        self.samples.append((now, self.done, self.checked or 0))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()

    def _narrow_total(self, line: Progress2) -> None:
        if line.percent >= 100 or line.bytes_done <= 0 or line.percent <= 0:
            if line.percent >= 100:
                self.low = self.high = float(line.bytes_done)
                self.total = line.bytes_done
            return
        # rsync truncates: the total lies in (bytes*100/(pct+1), bytes*100/pct].
        low, high = line.bytes_done * 100 / (line.percent + 1), line.bytes_done * 100 / line.percent
        if low > self.high or high < self.low:  # the list grew (or shrank): start again
            self.low, self.high = low, high
        else:
            self.low, self.high = max(self.low, low), min(self.high, high)
        if self.total is None or not self.low <= self.total <= self.high:
            # The source's size on disk, when every line agrees with it (no excludes, no
            # change meanwhile), else the middle of what they agree on.
            fits = self.expected is not None and self.low <= self.expected <= self.high
            self.total = self.expected if fits else int((self.low + self.high) / 2)

    def finish(self, stats: SyncStats, now: float) -> None:
        self.stats, self.ended = stats, now
        self.total = stats.total_size
        self.copied = stats.files_transferred
        if stats.entries:
            self.entries = self.checked = stats.entries
        self.listing = False

    # --- what is shown --------------------------------------------------------------------

    def shown_total(self) -> int | None:
        if self.listing and self.expected is not None:
            return max(self.expected, self.total or 0)
        return self.total

    def fraction(self) -> float | None:
        """The share of the copy done: bytes copied or entries checked, whichever is further
        (unchanged files are checked, not copied)."""
        if self.stats is not None:
            return 1.0
        shares = []
        total = self.shown_total()
        if total:
            shares.append(self.done / total)
        if self.entries and self.checked is not None and not self.listing:
            shares.append(self.checked / self.entries)
        return min(1.0, max(shares)) if shares else None

    def rate(self) -> float | None:
        """Bytes per second over the window (over the whole copy once it ended)."""
        if self.stats is not None and self.ended is not None:
            return self.done / max(self.ended - self.started, 1e-3)
        if len(self.samples) < 2:
            return None
        (t0, b0, _), (t1, b1, _) = self.samples[0], self.samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 - t0 >= 0.5 else None

    def eta(self) -> float | None:
        """Seconds left: what is left at the pace of the window, by whichever measure the
        share follows (bytes, or entries checked)."""
        fraction = self.fraction()
        if fraction is None or len(self.samples) < 2:
            return None
        (t0, b0, c0), (t1, b1, c1) = self.samples[0], self.samples[-1]
        if t1 - t0 < 0.5:
            return None
        total = self.shown_total()
        by_bytes = total and self.done / total >= fraction - 1e-9
        if by_bytes and total and b1 > b0:
            return max(total - self.done, 0) / ((b1 - b0) / (t1 - t0))
        if self.entries and self.checked is not None and c1 > c0:
            return max(self.entries - self.checked, 0) / ((c1 - c0) / (t1 - t0))
        return None


def _clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _size(n: float) -> str:
    from rich.filesize import decimal

    return decimal(int(n))


class TerminalProgress:
    """A live display on stderr: the state line, and a copy's bar and counts once it began."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console(stderr=True)
        self.min_interval = min_interval
        self.clock = clock
        self._state = ""
        self._state_since = clock()
        self._first_state: float | None = None
        self._pending: str | None = None  # the newest line not drawn yet
        self._last_draw = float("-inf")
        self.draws = 0  # redraws done (for tests and benchmarks)
        self.last: Progress2 | None = None
        self.current: Transfer | None = None
        self._live = Live(
            self,
            console=self.console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=True,  # log lines print above the live display, not through it
        )
        # Started by the first thing to show: a command refused before any run began leaves
        # not even an empty line before its error.
        self._started = False
        self._closed = False

    # rich renders the live display through this.
    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        line = Text.assemble(("state ", "dim"), (self._state or "-", "bold"))
        if self._state in _ENDED or not self._state:
            if self._first_state is not None:
                line.append(f"  after {self.clock() - self._first_state:.0f} s", "dim")
        else:
            line.append(f"  {self.clock() - self._state_since:.0f} s")
        transfer = self.current
        if transfer is None:
            return line
        line.append(f"  {transfer.label}", "dim")
        return Group(line, *self._transfer_lines(transfer))

    def _transfer_lines(self, t: Transfer) -> list[Any]:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        if t.stats is not None and t.stats.files_transferred == 0 and t.done == 0:
            entries = t.stats.entries or t.entries or 0
            return [Text(f"  nothing left to copy: all {entries:,} entries are up to date")]
        fraction = t.fraction()
        total = t.shown_total()
        rate = t.rate()
        parts = [f"{fraction * 100:3.0f}%" if fraction is not None else "  ?%"]
        plus = "+" if t.listing else ""
        parts.append(f"{_size(t.done)}/{_size(total)}{plus}" if total else _size(t.done))
        parts.append(f"{_size(rate)}/s" if rate is not None else "-- B/s")
        if t.stats is not None and t.ended is not None:
            parts.append(f"in {_clock_text(t.ended - t.started)}")
        else:
            eta = t.eta()
            parts.append(f"ETA {_clock_text(eta)}{plus if eta is not None else ''}")
        text = "  ".join(parts)
        width = max(10, self.console.width - len(text) - 4)
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=1)
        grid.add_column(width=width)
        grid.add_column(no_wrap=True)
        bar = ProgressBar(total=1.0, completed=fraction or 0.0, width=width)
        grid.add_row("", bar, Text(text))
        counts = f"  {t.copied:,} files copied"
        if t.entries is not None and t.checked is not None:
            counts += f", {t.checked:,}/{t.entries:,}{plus} checked"
            if t.listing:
                counts += " (still listing)"
        return [grid, Text(counts, no_wrap=True, overflow="ellipsis")]

    def state(self, name: str) -> None:
        if self._closed:
            return
        if name != self._state:
            self._state = name
            self._state_since = self.clock()
            if self._first_state is None:
                self._first_state = self._state_since
        self._flush(force=True)

    def transfer(self, note: TransferNote) -> None:
        """A copy begins (``note.stats`` None) or ended well (its statistics)."""
        if self._closed:
            return
        now = self.clock()
        if note.stats is None:
            self._pending = None
            self.last = None
            self.current = Transfer(note.label, started=now, expected=note.expected_bytes)
        else:
            self._apply_pending()
            if self.current is None or self.current.label != note.label:
                self.current = Transfer(note.label, started=now)
            self.current.finish(note.stats, now)
        self._flush(force=True)

    def on_progress(self, line: str) -> None:
        if self._closed:
            return
        self._pending = line
        if self.clock() - self._last_draw >= self.min_interval:
            self._flush(force=False)

    def _apply_pending(self) -> None:
        if self._pending is None:
            return
        parsed = parse_progress2(self._pending)
        self._pending = None
        if parsed is None:
            return
        self.last = parsed
        if self.current is None:  # lines without a transfer note: follow them all the same
            self.current = Transfer("", started=self.clock())
        self.current.apply(parsed, self.clock())

    def _flush(self, *, force: bool) -> None:
        self._apply_pending()
        now = self.clock()
        if force or now - self._last_draw >= self.min_interval:
            self._last_draw = now
            self.draws += 1
            if not self._started:
                self._started = True
                self._live.start()
            self._live.refresh()

    def close(self) -> None:
        if self._closed:
            return
        if self._state or self._pending is not None or self.current is not None:
            self._flush(force=True)
        self._closed = True
        if self._started:
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
