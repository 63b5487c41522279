"""Every error ec2backup raises on purpose, and the exit code the CLI gives it.

    Ec2BackupError                      exit 1  (base; never raised itself)
    ├── UserInputError                  exit 2  bad input: fix the command or the config
    │   ├── ConfigError                         a config file, profile or field is wrong
    │   ├── InsufficientSpaceError              the data does not fit on the volume
    │   ├── DeletionRefusedError                a sync would delete too much of a copy
    │   ├── UnknownRunError                     no run with that id in the database
    │   ├── RunStateError                       the run cannot do that from its state
    │   └── NotInBackupError                    restore --path names nothing in the backup
    ├── EnvironmentProblem              exit 3  the local machine lacks something
    │   └── ToolMissingError                    rsync / ssh not installed, or openrsync
    ├── StoreError                      exit 4  the database cannot be used
    ├── CloudError                      exit 5  an EC2 call or wait failed
    │   ├── TransientCloudError                 throttling / 5xx that outlasted botocore's retries
    │   ├── CapacityError                       no capacity for (or no offer of) an instance type
    │   ├── ResourceNotFoundError               a volume / instance / AMI does not exist
    │   ├── InvalidResourceStateError           a resource is not in a valid origin state
    │   │   └── UnformattedVolumeError          the volume has no filesystem (not from init)
    │   └── WaitTimeoutError                    a resource did not reach a state in time
    ├── RemoteError                     exit 6  SSH to the instance failed
    │   ├── SshConnectError                     could not connect before the deadline
    │   ├── HostKeyError                        the host key does not match the pinned one
    │   ├── RemoteCommandError                  a command on the instance failed
    │   └── DeviceNotFoundError                 the attached volume did not show up
    ├── SyncError                       exit 7  rsync failed (exit code kept)
    ├── LeaseHeldError                  exit 8  another live process drives that run or volume
    └── AbandonedRunError                       no process drove a live run; reap ended its
                                                instance (recorded on the run, never raised)

    Interrupted (a BaseException)       exit 130  Ctrl-C or SIGTERM during a run
    Terminated (a KeyboardInterrupt)              SIGTERM as its handler raises it; a run
                                                records it as Interrupted

Errors carry the run id and the ids of the resources involved, so a message can say which run
and which resource. Whatever stopped a run (one of these or any other exception) carries an
``Aftermath``: what the run left in the cloud, from which the CLI words the command that
continues or ends it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


class Ec2BackupError(Exception):
    exit_code: ClassVar[int] = 1
    # Whether `ec2backup resume RUN_ID` can continue a run this error stopped. When it cannot,
    # the engine cleans the run up at once instead of leaving an instance waiting.
    resumable: ClassVar[bool] = True

    def __init__(
        self,
        message: str,
        *,
        run_id: str | None = None,
        resources: dict[str, str] | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.run_id = run_id
        self.resources = dict(resources or {})
        self.hint = hint

    def one_line(self) -> str:
        """The message, the resources it concerns and the fix, on one line."""
        parts = [self.message]
        if self.resources:
            parts[0] += " (" + ", ".join(f"{k} {v}" for k, v in self.resources.items()) + ")"
        if self.hint:
            parts.append(self.hint)
        return "; ".join(parts)


class UserInputError(Ec2BackupError):
    exit_code = 2


class ConfigError(UserInputError):
    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        profile: str | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = ", ".join(
            p
            for p in (
                f"config {file}" if file else "",
                f"profile {profile!r}" if profile else "",
                f"field {field!r}" if field else "",
            )
            if p
        )
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.file, self.profile, self.field = file, profile, field


class InsufficientSpaceError(UserInputError):
    # The volume must grow first; resuming the same run cannot make the data fit.
    resumable = False


class DeletionRefusedError(UserInputError):
    """A source is empty while its copy is not, or mirroring it would delete more of the copy
    than the profile allows: an unmounted drive looks just like "delete everything". Nothing
    was copied or deleted; the run is cleaned up (no snapshot, so retention prunes nothing)."""

    resumable = False


class UnknownRunError(UserInputError):
    pass


class RunStateError(UserInputError):
    pass


class NotInBackupError(UserInputError):
    # Found on the instance, mid-run: resuming restores the same missing path, so the run is
    # cleaned up at once (its instance and temporary volume ended).
    resumable = False


class EnvironmentProblem(Ec2BackupError):
    exit_code = 3


class ToolMissingError(EnvironmentProblem):
    pass


class StoreError(Ec2BackupError):
    exit_code = 4


class CloudError(Ec2BackupError):
    exit_code = 5


class TransientCloudError(CloudError):
    pass


class CapacityError(CloudError):
    pass


class ResourceNotFoundError(CloudError):
    pass


class InvalidResourceStateError(CloudError):
    pass


class UnformattedVolumeError(InvalidResourceStateError):
    # A backup never formats a volume: no resume can mount it, so the run is cleaned up at once.
    resumable = False


class WaitTimeoutError(CloudError):
    pass


class RemoteError(Ec2BackupError):
    exit_code = 6


class SshConnectError(RemoteError):
    pass


class HostKeyError(RemoteError):
    # Possibly a man in the middle: nothing more may go to that address.
    resumable = False


class RemoteCommandError(RemoteError):
    def __init__(self, message: str, *, exit_status: int | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.exit_status = exit_status


class DeviceNotFoundError(RemoteError):
    pass


class SyncError(Ec2BackupError):
    exit_code = 7

    def __init__(
        self,
        message: str,
        *,
        rsync_exit: int | None = None,
        problems: list[str] | None = None,
        problem_count: int = 0,
        **kw: object,
    ) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.rsync_exit = rsync_exit
        # rsync's lines naming the files it could not copy (the first ones), and how many.
        self.problems = list(problems or [])
        self.problem_count = problem_count or len(self.problems)


class LeaseHeldError(Ec2BackupError):
    exit_code = 8


class AbandonedRunError(Ec2BackupError):
    """What ``reap`` records on a run that was live in the database while no process held its
    lease, once it has ended the run's instance. A run, not a command, fails with it: ``resume``
    relaunches the run, ``resume --clean`` ends it."""

    def __init__(self, run_id: str, instance_id: str, reason: str) -> None:
        super().__init__(
            f"its instance was reaped: {reason}",
            run_id=run_id,
            resources={"instance": instance_id},
            hint=f"`ec2backup resume {run_id}` relaunches it, `--clean` ends it",
        )
        self.instance_id = instance_id


EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Aftermath:
    """What a run that failed or was interrupted left in the cloud, and what can be done with
    it: said after the error's own line (``cli/main.py``, ``aftermath_text``)."""

    run_id: str
    # What is still there and billed ("instance i-1 with volume vol-2 attached"); () nothing;
    # None: unknown (neither EC2 nor the run's record could be read).
    left: tuple[str, ...] | None
    # True: as EC2 showed it once the run released what it could; False: as the run's record
    # says (EC2 could not be asked).
    observed: bool
    # The run is done or aborted: nothing continues it.
    ended: bool
    # ``ec2backup resume RUN_ID`` continues it; False: only ``--clean`` ends it.
    resumable: bool


_AFTERMATH = "ec2backup_aftermath"


def set_aftermath(exc: BaseException, value: Aftermath) -> None:
    """Attach to the exception that stopped a run what the run left. Any exception can stop a
    run (a bug, a driver's own error), so the value rides on it whatever its class."""
    setattr(exc, _AFTERMATH, value)


def aftermath_of(exc: BaseException) -> Aftermath | None:
    value = getattr(exc, _AFTERMATH, None)
    return value if isinstance(value, Aftermath) else None


# rsync exit codes that mean the connection broke, not that the data or the command is wrong.
RSYNC_CONNECTION_EXITS = frozenset({10, 12, 30, 35, 255})


def is_transient(exc: BaseException) -> bool:
    """Whether running the same (idempotent) step again may succeed: a dropped connection or
    a throttled API, as opposed to a wrong input, a missing resource or a refused host key."""
    if isinstance(exc, TransientCloudError):
        return True
    if isinstance(exc, SyncError):
        return exc.rsync_exit in RSYNC_CONNECTION_EXITS or (exc.rsync_exit or 0) < 0
    # A plain RemoteError is a lost connection; its subclasses are definite answers.
    return type(exc) is RemoteError


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM: the run is recorded as failed and can be resumed. A BaseException,
    like KeyboardInterrupt, so that no ``except Exception`` swallows it."""

    def __init__(self, signal_name: str, run_id: str | None = None) -> None:
        super().__init__(f"interrupted by {signal_name}")
        self.signal_name = signal_name
        self.run_id = run_id


class Terminated(KeyboardInterrupt):
    """SIGTERM, as its handler raises it wherever the main thread is: also inside an event
    loop callback (asyncssh reading its socket), and asyncio lets only SystemExit and
    KeyboardInterrupt out of those (any other exception goes to the loop's exception handler
    and the signal is lost). A run records it as ``Interrupted("SIGTERM")``."""

    def __init__(self) -> None:
        super().__init__("SIGTERM")
