"""After a run of a profile: its hooks (``on_success``, ``on_failure``) and, for backups, its
metrics file. Neither can fail the run: a hook that fails or outlives ``hook_timeout_seconds``
is a warning, and so is a metrics file that cannot be written.

A hook is ``sh -c COMMAND`` in a session of its own (ended whole when its time is up), with the
run's outcome in its environment (``HOOK_VARIABLES``), its output on ec2backup's stderr (stdout
holds ec2backup's own result), and nothing on its stdin.

The metrics file is in node_exporter's textfile format (point its ``--collector.textfile
.directory`` at the file's directory), rewritten atomically after every backup run of the
profile, whether it succeeded, failed or was refused before it began.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ..config import Profile
from ..core.states import BACKUP_KINDS, RunKind, RunState
from ..core.times import utcnow
from ..errors import Ec2BackupError, LeaseHeldError
from ..paths import write_atomically

if TYPE_CHECKING:
    from ..db.models import Run
    from .app import App

log = logging.getLogger(__name__)

# The state of a backup refused by its checks before a run was recorded.
REFUSED = "refused"

HOOK_VARIABLES = {
    "EC2BACKUP_RUN_ID": "the run's id (empty when it was refused before it began)",
    "EC2BACKUP_PROFILE": "the profile's name",
    "EC2BACKUP_KIND": "backup, restore, verify or init (snapshot_backup, snapshot_init: "
    "snapshots-only storage)",
    "EC2BACKUP_STATE": "done, failed, aborted, or refused (bad input found before the run)",
    "EC2BACKUP_ERROR": "the error's one line (empty on success)",
    "EC2BACKUP_BYTES_SENT": "bytes rsync sent",
    "EC2BACKUP_FILES_TRANSFERRED": "files copied (for verify: the differences found)",
    "EC2BACKUP_TOTAL_SIZE": "bytes of the files in the copy",
    "EC2BACKUP_DURATION_SECONDS": "how long the run took",
    "EC2BACKUP_VOLUME_ID": "the volume the run used",
    "EC2BACKUP_SNAPSHOT_ID": "the snapshot a backup made (empty if none)",
}


@dataclass(frozen=True)
class Outcome:
    """How a run of a profile ended, as hooks and metrics see it."""

    profile: str
    kind: str
    state: str
    run_id: str = ""
    error: str = ""
    bytes_sent: int = 0
    files_transferred: int = 0
    total_size: int = 0
    duration_seconds: float = 0.0
    volume_id: str = ""
    snapshot_id: str = ""
    finished_at: datetime | None = None

    @property
    def succeeded(self) -> bool:
        return self.state == RunState.DONE

    @classmethod
    def of(cls, run: Run, error: str = "") -> Outcome:
        finished = run.finished_at or utcnow()
        return cls(
            profile=run.profile,
            kind=run.kind,
            state=str(run.state),
            run_id=run.id,
            error=error or ((run.error or "") if run.state != RunState.DONE else ""),
            bytes_sent=run.bytes_sent or 0,
            files_transferred=run.files_transferred or 0,
            total_size=run.total_size or 0,
            duration_seconds=max((finished - run.created_at).total_seconds(), 0.0),
            volume_id=run.volume_id or "",
            snapshot_id=run.snapshot_id or "",
            finished_at=finished,
        )

    def environment(self) -> dict[str, str]:
        return {
            "EC2BACKUP_RUN_ID": self.run_id,
            "EC2BACKUP_PROFILE": self.profile,
            "EC2BACKUP_KIND": self.kind,
            "EC2BACKUP_STATE": self.state,
            "EC2BACKUP_ERROR": self.error,
            "EC2BACKUP_BYTES_SENT": str(self.bytes_sent),
            "EC2BACKUP_FILES_TRANSFERRED": str(self.files_transferred),
            "EC2BACKUP_TOTAL_SIZE": str(self.total_size),
            "EC2BACKUP_DURATION_SECONDS": f"{self.duration_seconds:.1f}",
            "EC2BACKUP_VOLUME_ID": self.volume_id,
            "EC2BACKUP_SNAPSHOT_ID": self.snapshot_id,
        }


def after_run(app: App, profile: Profile, outcome: Outcome) -> list[str]:
    """The hook for the outcome, then the metrics file of a backup: the warnings they gave."""
    warnings = []
    command = profile.on_success if outcome.succeeded else profile.on_failure
    if command:
        name = "on_success" if outcome.succeeded else "on_failure"
        problem = run_hook(command, outcome.environment(), profile.hook_timeout_seconds)
        if problem:
            warnings.append(f"{name} hook {problem}")
    if profile.metrics_file and outcome.kind in BACKUP_KINDS:
        try:
            write_metrics(app, profile, outcome)
        except OSError as exc:
            warnings.append(f"metrics file {profile.metrics_file} not written: {exc.strerror}")
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


def run_hook(command: str, variables: Mapping[str, str], timeout: float) -> str | None:
    """Run ``sh -c command``; None if it exited 0, else what went wrong."""
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            env={**os.environ, **variables},
            stdin=subprocess.DEVNULL,
            stdout=_stderr(),  # stdout is ec2backup's result
            start_new_session=True,  # its own process group, ended whole on time-out
        )
    except OSError as exc:
        return f"could not start: {exc.strerror}"
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _end_group(proc)
        return f"ran longer than hook_timeout_seconds ({timeout:g} s) and was ended"
    except BaseException:
        _end_group(proc)
        raise
    if code < 0:
        return f"was killed by signal {-code}"
    return f"exited {code}" if code else None


def _stderr() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # not a file (captured): inherit ours
        return None


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


@contextmanager
def refusals_reported(app: App, profile: Profile, kind: RunKind) -> Iterator[Callable[[], None]]:
    """Around the checks before a run of ``profile``: bad input found before the run began
    (call the function given once it has) is an outcome too, ``refused``. Another process
    driving the volume is not: that run is the backup."""
    begun = False

    def began() -> None:
        nonlocal begun
        begun = True

    try:
        yield began
    except Ec2BackupError as exc:
        if not begun and not isinstance(exc, LeaseHeldError):
            after_run(app, profile, Outcome(profile.name, kind, REFUSED, error=exc.one_line()))
        raise


# --- metrics ------------------------------------------------------------------------------


def _label(value: str) -> str:
    # The exposition format's escapes in a label value: backslash, double quote, line feed.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(outcome: Outcome, last_success: datetime | None) -> str:
    """The profile's metrics, in node_exporter's textfile (Prometheus text) format."""
    profile = f'profile="{_label(outcome.profile)}"'
    ended = outcome.finished_at or utcnow()
    samples = [
        (
            "last_success_timestamp_seconds",
            "When the profile's last successful backup ended (Unix time; 0: never).",
            f"{{{profile}}}",
            f"{last_success.timestamp():.3f}" if last_success else "0",
        ),
        (
            "last_run_timestamp_seconds",
            "When the profile's last backup run ended (Unix time).",
            f"{{{profile}}}",
            f"{ended.timestamp():.3f}",
        ),
        (
            "last_run_success",
            "1 if the profile's last backup run succeeded, else 0.",
            f"{{{profile}}}",
            "1" if outcome.succeeded else "0",
        ),
        (
            "last_run_duration_seconds",
            "How long the profile's last backup run took.",
            f"{{{profile}}}",
            f"{outcome.duration_seconds:.3f}",
        ),
        (
            "last_run_bytes_sent",
            "Bytes rsync sent in the profile's last backup run.",
            f"{{{profile}}}",
            str(outcome.bytes_sent),
        ),
        (
            "last_run_files_transferred",
            "Files copied by the profile's last backup run.",
            f"{{{profile}}}",
            str(outcome.files_transferred),
        ),
        (
            "last_run_state",
            "The state the profile's last backup run ended in (done, failed, aborted, "
            "refused): 1 for that state.",
            f'{{{profile},state="{_label(outcome.state)}"}}',
            "1",
        ),
    ]
    lines = []
    for name, help_text, labels, value in samples:
        lines += [
            f"# HELP ec2backup_{name} {help_text}",
            f"# TYPE ec2backup_{name} gauge",
            f"ec2backup_{name}{labels} {value}",
        ]
    return "\n".join(lines) + "\n"


def write_metrics(app: App, profile: Profile, outcome: Outcome) -> None:
    assert profile.metrics_file is not None
    text = metrics_text(outcome, last_success(app, profile.name))
    profile.metrics_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(profile.metrics_file, text.encode(), 0o644)


def last_success(app: App, profile_name: str) -> datetime | None:
    from sqlalchemy import select

    from ..db.models import Run

    with app.store.session() as session:
        return session.scalar(
            select(Run.finished_at)
            .where(
                Run.profile == profile_name,
                Run.kind.in_(sorted(BACKUP_KINDS)),
                Run.state == RunState.DONE,
            )
            .order_by(Run.finished_at.desc())
            .limit(1)
        )
