"""The terminal progress display: parsing rsync's progress2 lines, throttled redraws, and
silence when stderr is not a terminal."""

from __future__ import annotations

import io
import sys

import pytest
from rich.console import Console

from ec2backup.cli.progress import (
    NullProgress,
    TerminalProgress,
    make_progress,
)
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
    assert "40.0" in text  # rich's DownloadColumn: 40.0/40.0 MB
    assert "9/9 files" in text


def test_counts_say_when_rsync_is_still_listing_the_tree() -> None:
    clock = FakeClock()
    sink, out = _tty_sink(clock)
    sink.state("syncing")
    sink.on_progress(IR_CHK)
    sink.state("syncing")  # drawn at once
    assert "191/1,191+ files, still listing" in out.getvalue()
    # rsync's 13% covers only the files found so far: no percent or ETA is shown for it.
    assert "13%" not in out.getvalue()
    clock.now += 1.0
    sink.on_progress(MID)  # mid-file lines carry no counts: the last ones stay
    sink.state("syncing")
    assert out.getvalue().count("still listing") >= 2
    assert "53%" not in out.getvalue()
    clock.now += 1.0
    sink.on_progress(LAST)  # to-chk: the list is complete
    sink.close()
    text = out.getvalue()
    assert text.rfind("9/9 files") > text.rfind("still listing")
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
