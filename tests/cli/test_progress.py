"""The terminal progress display: parsing rsync's progress2 lines, throttled redraws, and
silence when stderr is not a terminal."""

from __future__ import annotations

import io
import re
import sys

import pytest
from rich.console import Console

from ec2backup.cli.progress import (
    NullProgress,
    TerminalProgress,
    make_progress,
)
from ec2backup.ports import SyncStats, TransferNote
from tests.adapters.test_rsync_output import END_FILE, IR_CHK, LAST, MID  # real rsync lines


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _tty_sink(clock: FakeClock, interval: float = 0.1) -> tuple[TerminalProgress, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    sink = make_progress(True, console=console, clock=clock, min_interval=interval)
    assert isinstance(sink, TerminalProgress)
    return sink, out


def test_redraws_are_throttled() -> None:
    clock = FakeClock()
    sink, _out = _tty_sink(clock)
    sink.state("syncing")
    base = sink.draws
    # 10,000 lines within 0.05 s: one line per file of a tree of small files.
    for i in range(10_000):
        sink.on_progress(
            f"{i * 100:>15,} {i // 100:>3}%   1.00MB/s    0:00:00 (xfr#{i}, to-chk=1/2)"
        )
    clock.now += 0.05
    sink.on_progress(LAST)
    assert sink.draws - base <= 1
    # A second later, the next line is drawn, and what it says is what is shown.
    clock.now += 1.0
    sink.on_progress(END_FILE)
    assert sink.draws - base <= 2
    assert sink.last is not None and sink.last.bytes_done == 30_000_000
    sink.close()


def test_close_draws_the_last_line_even_inside_the_interval() -> None:
    clock = FakeClock()
    sink, out = _tty_sink(clock)
    sink.state("syncing")
    sink.on_progress(MID)
    sink.on_progress(LAST)  # same instant: not drawn yet
    sink.close()
    assert sink.last is not None and sink.last.bytes_done == 40_005_000
    text = out.getvalue()
    assert "syncing" in text
    assert "40.0 MB/40.0 MB" in text
    assert "7 files copied, 9/9 checked" in text


def _line(done: int, total: int, files: int, left: int, entries: int, chk: str = "to") -> str:
    """A progress2 line as rsync prints it: the percent truncated."""
    return (
        f"{done:>15,} {done * 100 // total:>3}%   10.00MB/s    0:00:05 "
        f"(xfr#{files}, {chk}-chk={left}/{entries})"
    )


def _frames(out: io.StringIO) -> list[str]:
    return [f for f in out.getvalue().split("\x1b[2K") if "rsync" in f or "%" in f]


def test_rate_and_eta_show_through_the_copy_and_the_total_stays_put() -> None:
    clock = FakeClock()
    sink, out = _tty_sink(clock)
    sink.state("syncing")
    sink.transfer(TransferNote("home", expected_bytes=100_000_000))
    total = 99_999_999  # rsync's percent of it moves by up to 1% of the total between lines
    for second in range(1, 9):
        clock.now += 1.0
        done = second * 10_000_000 + 123_457 * second
        sink.on_progress(_line(done, total, second, 100 - second * 10, 100))
    sink.state("syncing")
    text = out.getvalue()
    last = text[text.rfind("state syncing") :]
    assert "10.1 MB/s" in last, last  # measured here (rsync says 10.00MB/s: 10.5 MB/s)
    assert re.search(r"ETA 0:00:0\d", last), last
    shown = set(re.findall(r"/(\d+\.\d MB)", text))
    assert shown == {"100.0 MB"}, shown  # one total, whatever the percent said
    sink.close()


def test_a_copy_that_ended_well_is_shown_whole_with_rsyncs_counts() -> None:
    clock = FakeClock()
    sink, out = _tty_sink(clock)
    sink.state("syncing")
    sink.transfer(TransferNote("home", expected_bytes=435_100_000))
    clock.now += 2.0
    # An incremental backup: rsync copies 176 MB of 435 MB and ends on "40%".
    sink.on_progress(_line(176_200_000, 435_100_000, 3, 0, 300))
    clock.now += 0.01
    stats = SyncStats(3, 176_300_000, 435_100_000, 0, entries=300)
    sink.transfer(TransferNote("home", stats=stats))
    sink.state("unmounting")
    sink.close()
    text = out.getvalue()
    end = text[text.rfind("unmounting") :]
    assert "100%" in end and "176.2 MB/435.1 MB" in end, end
    assert "40%" not in end
    assert "3 files copied, 300/300 checked" in end  # what the log's synced line says


def test_a_copy_with_nothing_left_says_so() -> None:
    clock = FakeClock()
    sink, out = _tty_sink(clock)
    sink.state("syncing")
    sink.transfer(TransferNote("home", expected_bytes=90_000_000))
    sink.on_progress("              0   0%    0.00kB/s    0:00:00 (xfr#0, to-chk=0/304)")
    sink.transfer(TransferNote("home", stats=SyncStats(0, 9_000, 90_000_000, 0, entries=304)))
    sink.close()
    text = out.getvalue()
    assert "nothing left to copy: all 304 entries are up to date" in text
    assert "0/?" not in text and "0%" not in text[text.rfind("nothing left") :]


def test_a_command_that_never_began_a_run_draws_nothing() -> None:
    clock = FakeClock()
    sink, out = _tty_sink(clock)
    sink.close()  # e.g. bad input found before any state
    assert "state" not in out.getvalue() and "\n" not in out.getvalue()


def test_counts_say_when_rsync_is_still_listing_the_tree() -> None:
    clock = FakeClock()
    sink, out = _tty_sink(clock)
    sink.state("syncing")
    sink.transfer(TransferNote("home", expected_bytes=40_005_000))
    sink.on_progress(IR_CHK)
    sink.state("syncing")  # drawn at once
    assert "160 files copied, 191/1,191+ checked (still listing)" in out.getvalue()
    # rsync's 13% covers only the files found so far: the total is the source's size.
    assert "13%" not in out.getvalue() and "/40.0 MB+" in out.getvalue()
    clock.now += 1.0
    sink.on_progress(MID)  # mid-file lines carry no counts: the last ones stay
    sink.state("syncing")
    assert out.getvalue().count("still listing") >= 2
    clock.now += 1.0
    sink.on_progress(LAST)  # to-chk: the list is complete
    sink.close()
    text = out.getvalue()
    assert text.rfind("9/9 checked") > text.rfind("still listing")
    assert "100%" in text[text.rfind("still listing") :]


def test_one_large_file_shows_its_percent_before_any_counts() -> None:
    clock = FakeClock()
    sink, out = _tty_sink(clock)
    sink.on_progress(MID)  # mid-file, no counts yet: the list is not known to be partial
    sink.state("syncing")
    assert " 53%" in out.getvalue()
    sink.close()


def test_state_changes_are_drawn_at_once() -> None:
    clock = FakeClock()
    sink, out = _tty_sink(clock, interval=10.0)
    sink.state("launching")
    sink.state("attaching")
    assert "attaching" in out.getvalue()
    sink.close()
    sink.close()  # idempotent
    sink.on_progress(LAST)  # after close: ignored, no error


def test_nothing_is_written_when_not_a_tty(capsys: pytest.CaptureFixture[str]) -> None:
    sink = make_progress(False)
    assert isinstance(sink, NullProgress)
    sink.state("syncing")
    for _ in range(100):
        sink.on_progress(LAST)
    sink.close()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_pipe_caller_passes_isatty(capsys: pytest.CaptureFixture[str]) -> None:
    # Under pytest stderr is captured (not a terminal): the CLI's call gives the null sink.
    sink = make_progress(sys.stderr.isatty())
    sink.state("syncing")
    sink.on_progress(END_FILE)
    sink.close()
    assert capsys.readouterr().err == ""
