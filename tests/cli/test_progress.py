"""The terminal progress display: parsing rsync's progress2 lines, throttled redraws, and
silence when stderr is not a terminal."""

from __future__ import annotations

import io
import sys

import pytest
from rich.console import Console

from ec2backup.cli.progress import (
    NullProgress,
    Progress2,
    TerminalProgress,
    make_progress,
    parse_progress2,
)

# Real lines from rsync 3.5.0 (`--info=progress2 --no-inc-recursive`, LC_ALL=C), with and
# without -h, mid-file and at a file's end, and with incremental recursion (ir-chk).
MID_FIRST = "         32,768   0%    0.00kB/s    0:00:00  "
MID = "     21,331,968  53%   19.55MB/s    0:00:00  "
END_FILE = "     30,000,000  74%   19.64MB/s    0:00:01 (xfr#1, to-chk=7/9)"
LAST = "     40,005,000 100%   20.33MB/s    0:00:01 (xfr#7, to-chk=0/9)"
HUMAN = "         30.00M  74%  772.40MB/s    0:00:00 (xfr#1, to-chk=7/9)"
IR_CHK = "            444  13%  215.82kB/s    0:00:00 (xfr#160, ir-chk=1000/1191)"
MANY = "    536,547,878  49%  379.01MB/s    0:00:01 (xfr#4997, to-chk=5053/10101)"


def test_parse_mid_file_line() -> None:
    p = parse_progress2(MID)
    assert p == Progress2(bytes_done=21_331_968, percent=53, rate=19.55 * 1024**2, seconds=0)
    assert parse_progress2(MID_FIRST) == Progress2(32_768, 0, 0.0, 0)


def test_parse_end_of_file_line_with_counts() -> None:
    p = parse_progress2(END_FILE)
    assert p is not None
    assert (p.bytes_done, p.percent, p.seconds) == (30_000_000, 74, 1)
    assert (p.files_done, p.to_check, p.files_total) == (1, 7, 9)
    assert p.rate == pytest.approx(19.64 * 1024**2)


def test_parse_human_readable_and_ir_chk() -> None:
    p = parse_progress2(HUMAN)
    assert p is not None and p.bytes_done == 30_000_000 and p.percent == 74
    q = parse_progress2(IR_CHK)
    assert q is not None
    assert (q.bytes_done, q.percent, q.seconds) == (444, 13, 0)
    assert (q.files_done, q.to_check, q.files_total) == (160, 1000, 1191)
    assert q.listing and not p.listing
    assert q.rate == pytest.approx(215.82 * 1024)
    r = parse_progress2(MANY)
    assert r is not None and r.bytes_done == 536_547_878 and r.files_done == 4997
    assert parse_progress2("  1,234,567  45%   12.34MB/s    1:02:03  ").seconds == 3723  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "line",
    [
        "",
        "sending incremental file list",
        "Number of files: 9 (reg: 7, dir: 2)",
        "Total bytes sent: 40,015,229",
        "sent 40,015,229 bytes  received 155 bytes  16,006,153.60 bytes/sec",
        'rsync: [sender] link_stat "/nope" failed: No such file or directory (2)',
    ],
)
def test_parse_rejects_other_rsync_output(line: str) -> None:
    assert parse_progress2(line) is None


def test_total_estimate_brackets_the_truncated_percent() -> None:
    # 30,000,000 of 40,005,000 is 74.99%, printed as 74%.
    p = parse_progress2(END_FILE)
    assert p is not None and p.total_estimate is not None
    assert abs(p.total_estimate - 40_005_000) / 40_005_000 < 0.01
    assert parse_progress2(LAST).total_estimate == 40_005_000  # type: ignore[union-attr]
    assert parse_progress2(MID_FIRST).total_estimate is None  # type: ignore[union-attr]


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
