"""What rsync prints, parsed in one place with one rule for its numbers: the ``--stats`` lines
kept as ``SyncStats`` fields and the ``--info=progress2`` lines. rsync runs with
``LC_ALL=C``, so "," separates thousands and "." is a decimal point (``-h`` sizes such as
"1.23M", rates such as "12.34MB/s")."""

from __future__ import annotations

import re
from dataclasses import dataclass

_STATS_FIELDS = {
    "Number of regular files transferred": "files_transferred",
    "Total bytes sent": "bytes_sent",
    "Total file size": "total_size",
}
_STATS_RE = re.compile(
    r"^\s*(?P<name>[A-Za-z ]+?)\s*:\s*(?P<value>[0-9][0-9,.]*)\s*(?P<unit>[KMGTP]?)"
)
# A progress2 line, recognised cheaply (it is most of rsync's output: about one per file).
_PROGRESS_RE = re.compile(r"^\s*[0-9][0-9,.]*[KMGTP]?\s+\d+%")
# Its fields: "  1,234,567  45%   12.34MB/s    0:00:12 (xfr#12, to-chk=0/200)", with -h
# "  1.23G  45% ...".
_LINE_RE = re.compile(
    r"^\s*(?P<bytes>[0-9][0-9,.]*)(?P<unit>[KMGTP]?)\s+(?P<pct>\d{1,3})%"
    r"\s+(?P<rate>[0-9][0-9,.]*)(?P<rate_unit>[kKMGTP]?)B/s"
    r"\s+(?P<time>\d+:\d{2}:\d{2})"
    r"(?:\s+\(xfr#(?P<xfr>\d+),\s*(?P<chk>to|ir)-chk=(?P<left>\d+)/(?P<total>\d+)\))?"
)
# rsync's -h sizes are 1000-based; its rates are 1024-based ("kB/s" = KiB/s).
_SIZE_UNIT = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4, "P": 1000**5}
_RATE_UNIT = {"": 1, "k": 1024, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}


def number(text: str, scale: int = 1) -> float:
    """An rsync number ("1,234,567", "1.23") times ``scale``, the value of its unit."""
    return float(text.replace(",", "")) * scale


def parse_stats_line(line: str) -> tuple[str, int] | None:
    """``(SyncStats field, value)`` for a ``--stats`` line we keep, else None. A ``-h``
    value ("1.50M") is approximate: it is all rsync gives."""
    match = _STATS_RE.match(line)
    if not match:
        return None
    field = _STATS_FIELDS.get(match.group("name"))
    if field is None:
        return None
    try:
        return field, int(number(match.group("value"), _SIZE_UNIT[match.group("unit")]))
    except ValueError:  # "1.2.3": not a number rsync prints
        return None


def is_progress_line(line: str) -> bool:
    return bool(_PROGRESS_RE.match(line))


@dataclass(frozen=True)
class Progress2:
    """One ``--info=progress2`` line."""

    bytes_done: int
    percent: int
    rate: float  # bytes per second, as rsync reports it (its average so far)
    seconds: int  # rsync's time field: ETA mid-file, elapsed time on a file's last line
    files_done: int | None = None  # xfr#
    to_check: int | None = None  # files still to check
    files_total: int | None = None
    # "ir-chk": rsync is still listing the tree (incremental recursion), so the file total,
    # and the byte total behind the percent, grow as it finds more.
    listing: bool = False

    @property
    def total_estimate(self) -> int | None:
        """The transfer's total size, from bytes and percent. rsync truncates the percent,
        so the total lies in (bytes*100/(pct+1), bytes*100/pct]: take the middle."""
        if self.percent >= 100:
            return self.bytes_done
        if self.percent <= 0 or self.bytes_done <= 0:
            return None
        high = self.bytes_done * 100 / self.percent
        low = self.bytes_done * 100 / (self.percent + 1)
        return int((high + low) / 2)


def parse_progress2(line: str) -> Progress2 | None:
    """The fields of a progress2 line, or None if it is not one."""
    m = _LINE_RE.match(line)
    if m is None:
        return None
    try:
        size = number(m.group("bytes"), _SIZE_UNIT[m.group("unit")])
        rate = number(m.group("rate"), _RATE_UNIT[m.group("rate_unit")])
    except ValueError:
        return None
    h, mnt, s = (int(x) for x in m.group("time").split(":"))
    xfr, left, total = m.group("xfr"), m.group("left"), m.group("total")
    return Progress2(
        bytes_done=int(size),
        percent=min(int(m.group("pct")), 100),
        rate=rate,
        seconds=h * 3600 + mnt * 60 + s,
        files_done=int(xfr) if xfr is not None else None,
        to_check=int(left) if left is not None else None,
        files_total=int(total) if total is not None else None,
        listing=m.group("chk") == "ir",
    )


# --- itemized changes (--out-format="%i %n") ------------------------------------------------

# "YXcstpoguax name": Y is what happens (< > sent/received, c created or changed here, h a hard
# link, . nothing, * a message such as "*deleting"), X the kind (f d L D S), then one letter
# per attribute that differs. "*deleting  " has the same width.
_ITEM_RE = re.compile(r"^(?P<y>[<>ch.*])(?P<x>[fdLDS])(?P<attrs>[ .+?a-zA-Z]{9}) (?P<name>.*)$")
_DELETING = "*deleting   "
# The words for each attribute column (c and s are worded by kind below).
_ATTRIBUTE_WORDS = {
    2: "modification time differs",
    3: "permissions differ",
    4: "owner differs",
    5: "group differs",
    6: "access or creation time differs",
    7: "ACL differs",
    8: "extended attributes differ",
}
_CHANGED_WORDS = {
    "f": "contents differ",
    "L": "symlink target differs",
    "D": "device differs",
    "S": "special file differs",
}


def itemized_difference(line: str) -> tuple[str, tuple[str, ...]] | None:
    """``(name, words)`` for one itemized line of a dry run from the source to its copy, or
    None for anything else (a line with nothing to say, rsync's other output). ``name`` is
    rsync's (non-printable bytes as ``\\#ooo``; a directory's ends with "/", the root is
    "./")."""
    if line.startswith(_DELETING):
        return line[len(_DELETING) :], ("only on the volume (not in the source)",)
    match = _ITEM_RE.match(line)
    if match is None or match.group("y") == "*":
        return None
    kind, attrs, name = match.group("x"), match.group("attrs"), match.group("name")
    if attrs.strip("+") == "":
        return name, ("missing on the volume",)
    words: list[str] = []
    if match.group("y") == "h":
        words.append("hard link split (one file in the source, separate on the volume)")
    if attrs[0] == "c":
        words.append(_CHANGED_WORDS.get(kind, "differs"))
    elif attrs[1] == "s":
        words.append("size differs")
    words += [w for i, w in _ATTRIBUTE_WORDS.items() if attrs[i] not in " .?"]
    return (name, tuple(words)) if words else None


# --- rsync's messages about single files ---------------------------------------------------

# On stderr: "rsync: [sender] send_files failed to open "/x": Permission denied (13)",
# "file has vanished: "/x"", "rsync warning: ...". The last line, "rsync error: some
# files/attrs were not transferred (see previous errors) (code 23) at main.c(1338)", only
# sums them up.
_PROBLEM_PREFIXES = ("rsync: ", "file has vanished: ", "rsync warning: ", "IO error encountered")


def is_problem_line(line: str) -> bool:
    """A line of rsync's stderr that names a file it could not copy (or that vanished)."""
    return line.startswith(_PROBLEM_PREFIXES) and not line.startswith("rsync: connection ")


_DELETED_RE = re.compile(r"^Number of deleted files: ([0-9,]+)(?: \((?P<kinds>[^)]*)\))?")


def deleted_non_directories(line: str) -> int | None:
    """From ``--stats``' "Number of deleted files: 5 (reg: 3, dir: 1, link: 1)": the entries
    that are not directories (4), or None for another line."""
    match = _DELETED_RE.match(line)
    if match is None:
        return None
    total = int(number(match.group(1)))
    dirs = re.search(r"\bdir: ([0-9,]+)", match.group("kinds") or "")
    return total - (int(number(dirs.group(1))) if dirs else 0)
