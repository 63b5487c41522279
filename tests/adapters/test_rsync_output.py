"""rsync's output parsed: the --stats lines and the --info=progress2 lines, one number rule."""

from __future__ import annotations

import pytest

from ec2backup.adapters.rsync_output import (
    Progress2,
    deleted_non_directories,
    is_problem_line,
    is_progress_line,
    itemized_difference,
    parse_progress2,
    parse_stats_line,
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


def test_parse_stats_lines_with_thousands_separators() -> None:
    assert parse_stats_line("Number of regular files transferred: 12,345") == (
        "files_transferred",
        12345,
    )
    assert parse_stats_line("Total file size: 1,234,567,890 bytes") == ("total_size", 1234567890)
    assert parse_stats_line("Total bytes sent: 98,765") == ("bytes_sent", 98765)
    assert parse_stats_line("Total bytes sent: 7") == ("bytes_sent", 7)
    assert parse_stats_line("Total bytes sent: 1.50M") == ("bytes_sent", 1_500_000)
    assert parse_stats_line("Total transferred file size: 5 bytes") is None
    assert parse_stats_line("Number of files: 4 (reg: 1, dir: 2, link: 1)") is None
    assert parse_stats_line("   1,024 100%  0.00kB/s  0:00:00 (xfr#1, to-chk=0/4)") is None


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


def test_every_progress2_line_is_recognised_cheaply_and_nothing_else() -> None:
    for line in (MID_FIRST, MID, END_FILE, LAST, HUMAN, IR_CHK, MANY):
        assert is_progress_line(line) and parse_progress2(line) is not None
    assert not is_progress_line("Total bytes sent: 40,015,229")


# --- itemized changes, in words ------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (">f+++++++++ docs/new.txt", ("docs/new.txt", ("missing on the volume",))),
        ("cd+++++++++ empty dir/", ("empty dir/", ("missing on the volume",))),
        ("cL+++++++++ link", ("link", ("missing on the volume",))),
        ("cS+++++++++ fifo", ("fifo", ("missing on the volume",))),
        ("*deleting   old.txt", ("old.txt", ("only on the volume (not in the source)",))),
        (">fc.t...... a.txt", ("a.txt", ("contents differ", "modification time differs"))),
        (">fcs....... b.txt", ("b.txt", ("contents differ",))),
        (".f.s....... c.txt", ("c.txt", ("size differs",))),
        (".f...p..... mode", ("mode", ("permissions differ",))),
        (".f....o.... own", ("own", ("owner differs",))),
        (".f.....g... grp", ("grp", ("group differs",))),
        (".f.......a. acl", ("acl", ("ACL differs",))),
        (".d.......a. dir/", ("dir/", ("ACL differs",))),
        (".f........x xattr", ("xattr", ("extended attributes differ",))),
        (".L..t...... sym", ("sym", ("modification time differs",))),
        (".d..T...... ./", ("./", ("modification time differs",))),
        ("cLc.t...... sym", ("sym", ("symlink target differs", "modification time differs"))),
        ("cDc........ dev", ("dev", ("device differs",))),
        (
            "hf          b",
            ("b", ("hard link split (one file in the source, separate on the volume)",)),
        ),
        (
            "hf.......a. b",
            (
                "b",
                ("hard link split (one file in the source, separate on the volume)", "ACL differs"),
            ),
        ),
        (
            ".f...po...x caf\\#303\\#251 x",
            (
                "caf\\#303\\#251 x",
                ("permissions differ", "owner differs", "extended attributes differ"),
            ),
        ),
    ],
)
def test_itemized_lines_in_words(line: str, expected: tuple[str, tuple[str, ...]]) -> None:
    assert itemized_difference(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        ".d          ./",  # nothing changed
        "created directory /mnt/x",
        "Number of files: 3",
        "sending incremental file list",
        "",
    ],
)
def test_other_lines_are_not_differences(line: str) -> None:
    assert itemized_difference(line) is None


def test_the_problem_lines_of_stderr() -> None:
    assert is_problem_line('rsync: [sender] send_files failed to open "/x": Permission denied (13)')
    assert is_problem_line('file has vanished: "/data/tmp/x"')
    assert is_problem_line("rsync warning: some files vanished before they could be transferred")
    assert not is_problem_line("rsync error: some files/attrs were not transferred (code 23)")
    assert not is_problem_line("rsync: connection unexpectedly closed (0 bytes received so far)")


def test_deleted_files_from_the_stats() -> None:
    assert deleted_non_directories("Number of deleted files: 5 (reg: 3, dir: 1, link: 1)") == 4
    assert deleted_non_directories("Number of deleted files: 1,234 (reg: 1,234)") == 1234
    assert deleted_non_directories("Number of deleted files: 2 (dir: 2)") == 0
    assert deleted_non_directories("Number of deleted files: 0") == 0
    assert deleted_non_directories("Number of files: 3 (reg: 3)") is None
