"""Write docs/errors.md from the messages tests/e2e/test_bad_input.py saw (ERRORS_DOC)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

INTRO = """# Bad input: every case, its message, its exit code

Each case below is a test in tests/e2e/test_bad_input.py, run against the local cloud through the
real command. Each gives one line on stderr that names the problem and the fix, a non-zero
exit, creates nothing in the cloud and loses nothing in the database (where a run had already
started, it is recorded as failed or cleaned up, never left holding an instance; a failed run
that offers `ec2backup resume` is resumed by the test to `done`). The messages are copied from a
test run (`make errors-doc`); `DIR` stands for the test's directory, `RUN_ID` for a run's
id. "What to do" is the message's own hint (the part after its first `; `).

## Exit codes

| code | meaning |
|---|---|
| 0 | success |
| 1 | unexpected error (`--debug` shows the traceback) |
| 2 | bad input: command line, config, unknown run, run in the wrong state |
| 3 | the local machine lacks something (rsync, ssh, openrsync instead of rsync) |
| 4 | the database cannot be used (locked, corrupt, newer schema, disk full) |
| 5 | an AWS call or wait failed (credentials, permissions, capacity, quota, missing AMI) |
| 6 | SSH to the instance failed (including a host key that does not match) |
| 7 | rsync failed |
| 8 | another live process holds the run or the volume |
| 130 | interrupted (Ctrl-C, SIGTERM); the run is recorded as failed and `resume` continues it |

A traceback is shown only with `--debug`.

## Cases

| case | command | exit | message | what to do |
|---|---|---|---|---|
"""

EXTRA = """
Also covered by tests:
`no-capacity-fallback`: with `fallback_instance_types`, a type without capacity is skipped and
the run launches the next one (a warning on the run says so);
a host key that differs from the console's (tests/e2e/test_security.py) fails with exit 6 and
the run cleans itself up (aborted);
a missing IAM permission (tests/e2e/test_iam.py) fails with exit 5 and
`not authorized to call ec2:TerminateInstances (...)`; grant that action;
`ctrl-c` and `sigterm` are also sent from outside, to the whole process group (ssh and rsync
included) while the database shows `syncing`: the same line, exit 130, and `resume` finishes the
run with the files intact.
"""


RUN_ID = re.compile(r"\b\d{8}T\d{6}Z-[0-9a-f]{6}\b")


def _cell(text: str) -> str:
    # Run ids differ at every test run: one placeholder keeps the document stable.
    return RUN_ID.sub("RUN_ID", text).replace("|", "\\|")


def _todo(row: dict[str, str]) -> str:
    line = row["line"].removeprefix("ec2backup: error: ").removeprefix("ec2backup: ")
    todo = row.get("todo") or (line.split("; ", 1)[1] if "; " in line else "")
    if row.get("bug"):
        todo += f" (known bug, the message lacks it: {row['bug']})"
    return todo


def main(results: Path, out: Path) -> None:
    rows = {}
    for raw in results.read_text().splitlines():
        row = json.loads(raw)
        rows[row["id"]] = row
    lines = [INTRO]
    for row in rows.values():
        lines.append(
            f"| `{row['id']}` | `ec2backup {_cell(row['command'])}` | {row['code']} | "
            f"{_cell(row['line'])} | {_cell(_todo(row))} |\n"
        )
    lines.append(EXTRA)
    out.write_text("".join(lines))
    print(f"wrote {out}: {len(rows)} cases", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
