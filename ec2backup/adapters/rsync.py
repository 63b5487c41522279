"""Mirror a directory to the instance with the system rsync over ssh (the ``Syncer`` port).

Every copy is faithful (``FIDELITY``): the backup, the restore and verify's compare all run
with the same options. rsync runs as a subprocess without a shell. Its ssh verifies the host
against the run's pinned known_hosts file (``StrictHostKeyChecking=yes``, never ``no``) and
uses only the run's key. Output is streamed: ``--info=progress2`` redraws one line with
``\\r`` and each redraw goes to ``on_progress``; the ``--stats`` lines are parsed as they
pass; of stderr, only the lines naming files (bounded) and the last few are kept, so a
transfer of hundreds of thousands of files uses constant memory.
"""

from __future__ import annotations

import collections
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import SyncError, ToolMissingError
from ..fastpaths import PROGRESS_BATCHES, enabled
from ..ports import Difference, SshTarget, SyncStats
from .rsync_output import (
    deleted_non_directories,
    is_problem_line,
    is_progress_line,
    itemized_difference,
    parse_stats_line,
)
from .sshmux import PERSIST_SECONDS, control_path

# Exit codes rsync documents; 24 means files vanished while being sent (a warning, kept), 23
# that some files or attributes were not copied (an unreadable file: a failure).
RSYNC_OK = 0
RSYNC_PARTIAL = 23
RSYNC_VANISHED = 24

# AES-GCM is the fastest cipher on CPUs with AES-NI; chacha20 stays as a fallback for
# servers or CPUs without it.
SSH_CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"
# Detect a dead connection within about a minute instead of hanging on it forever.
SSH_SERVER_ALIVE_INTERVAL = 15
SSH_SERVER_ALIVE_COUNT_MAX = 4
SSH_CONNECT_TIMEOUT = 30

# What a faithful copy needs beyond -a (contents, symlinks, permissions, owners, groups,
# modification times, devices and FIFOs): hard links (-H), ACLs, access and default (-A),
# extended attributes (-X; as root that is every namespace but system.*, so trusted.* and
# security.capability too), holes (-S), owners and groups by number, not matched by name
# between this machine and the instance, whose users differ (--numeric-ids), and times
# compared to the nanosecond (--modify-window=-1): with the default window of 0, rsync
# compares whole seconds and leaves a directory, symlink or FIFO it creates with the time of
# its creation when that falls in the same second as the source's. docs/performance.md has
# the measurements behind each (what -H costs in memory, -S next to --inplace).
FIDELITY = ("-H", "-A", "-X", "-S", "--numeric-ids", "--modify-window=-1")

# --info=progress2 needs 3.1; nanosecond times (--modify-window=-1) and --sparse together with
# --inplace need 3.1.3 (January 2018).
MIN_RSYNC_VERSION = (3, 1, 3)

_VERSION_RE = re.compile(r"rsync\s+version\s+v?(\d+)\.(\d+)(?:\.(\d+))?")
# `rsync --version` lists "ACLs, xattrs" among its capabilities, or "no ACLs", "no xattrs"
# when built without them (and then refuses -A/-X).
_MISSING_CAPABILITY_RE = re.compile(r"\bno (ACLs|xattrs)\b")
_HOST_KEY_FAILURE = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED")


def ssh_option_path(path: Path) -> str:
    """A path as the value of an ``ssh -o`` option.

    ssh splits option values on whitespace and expands ``%`` tokens in file options, so a
    key under ``~/Library/Application Support`` would otherwise break: escape ``%`` and
    double-quote anything with spaces, quotes or backslashes.
    """
    text = str(path).replace("%", "%%")
    if any(c.isspace() or c in "\"'\\" for c in text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def ssh_command(
    target: SshTarget, ssh_program: str = "ssh", control: Path | None = None
) -> list[str]:
    """The ssh command rsync runs (``-e``), as a list of arguments; with ``control``, the
    passes share one connection through that socket (``sshmux``)."""
    shared = [
        "-o", "ControlMaster=auto",
        "-o", f"ControlPath={ssh_option_path(control)}",
        "-o", f"ControlPersist={PERSIST_SECONDS}",
    ] if control is not None else []  # fmt: skip
    return [
        ssh_program,
        "-o", "IdentitiesOnly=yes",
        "-o", f"IdentityFile={ssh_option_path(target.key_path)}",
        "-o", f"UserKnownHostsFile={ssh_option_path(target.known_hosts_path)}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", f"Ciphers={SSH_CIPHERS}",
        "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT}",
        "-o", f"ServerAliveInterval={SSH_SERVER_ALIVE_INTERVAL}",
        "-o", f"ServerAliveCountMax={SSH_SERVER_ALIVE_COUNT_MAX}",
        *shared,
        "-p", str(target.port),
    ]  # fmt: skip


def _remote_spec(target: SshTarget, remote_dir: str) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host  # IPv6 literal
    return f"{target.user}@{host}:{remote_dir.rstrip('/')}/"


# The profile's rsync_args are written for the backup. A restore and verify's compare take
# them too (bandwidth limits, filters, --one-file-system: what shapes the copy shapes what is
# compared and restored), except what would delete or skip something a restore must bring
# back, and, for the compare, what changes the output it reads.
_NEVER_WHEN_PULLING = ("--del", "--delete", "--remove-source-files", "--max-delete",
                       "--prune-empty-dirs", "--dry-run")  # fmt: skip
_NEVER_WHEN_COMPARING = (*_NEVER_WHEN_PULLING, "--verbose", "--quiet", "--progress",
                         "--info", "--debug", "--out-format", "--log-file", "--itemize-changes",
                         "--stats", "--human-readable", "--8-bit-output", "--inplace",
                         "--partial", "--append")  # fmt: skip
_SHORT_NEVER_WHEN_PULLING = "mn"
_SHORT_NEVER_WHEN_COMPARING = "mnvqPih8"


def applicable_args(args: Sequence[str], *, pull: bool = False, compare: bool = False) -> list[str]:
    """Those of ``args`` (the profile's rsync_args) that apply to a restore (``pull``) or to
    verify's compare (``compare``); all of them for a backup. Long options are matched by
    name (``--delete-after`` is a ``--delete``), bundled short ones letter by letter."""
    if not (pull or compare):
        return list(args)
    long_never = _NEVER_WHEN_COMPARING if compare else _NEVER_WHEN_PULLING
    short_never = _SHORT_NEVER_WHEN_COMPARING if compare else _SHORT_NEVER_WHEN_PULLING
    kept: list[str] = []
    for arg in args:
        if arg.startswith("--"):
            name = arg.split("=", 1)[0]
            if not any(name == n or name.startswith(n + "-") for n in long_never):
                kept.append(arg)
        elif re.fullmatch(r"-[A-Za-z0-9]+", arg):
            letters = "".join(c for c in arg[1:] if c not in short_never)
            if letters:
                kept.append("-" + letters)
        else:
            kept.append(arg)
    return kept


def build_rsync_command(
    source: Path,
    target: SshTarget,
    remote_dir: str,
    *,
    excludes: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    remote_sudo: bool = False,
    rsync_program: str = "rsync",
    ssh_program: str = "ssh",
    control: Path | None = None,
    pull: bool = False,
    delete: bool = True,
    in_place: bool = True,
    progress: bool = True,
) -> list[str]:
    """The full rsync argv mirroring ``source``'s contents into ``remote_dir`` (with
    ``delete``, deletions too) or, with ``pull``, ``remote_dir``'s contents into the local
    directory ``source`` (a restore: it adds and overwrites but never deletes local files).
    Both ways with ``FIDELITY``; a mirror writes in place unless not ``in_place``;
    ``extra_args`` are passed as given, after everything else.

    ``source`` is made absolute so a relative name starting with ``-`` is never an option;
    the trailing ``/`` on both sides means "the contents of", not "the directory itself".
    rsync splits the ``-e`` string itself and honours quotes, hence ``shlex.join``.
    """
    src = os.path.abspath(source).rstrip("/") + "/"
    # A backup writes changed files in place: only the blocks that changed are written, so
    # the next snapshot holds only those (rsync's default, a new copy renamed over the old
    # one, rewrote every block of a changed file). The last snapshot stays the consistent
    # version while a run is under way (docs/architecture.md, "Writing in place"). With -S,
    # rsync 3.1.3+ punches holes where a file written in place now has zeros
    # (docs/performance.md, "What fidelity costs"). A restore keeps rsync's default: a local
    # file is replaced only once its new copy is whole; verify's dry run writes nothing.
    mirror = [] if pull or not delete else ["--delete", *(["--inplace"] if in_place else [])]
    argv = [rsync_program, "-a", *FIDELITY, *mirror]
    # Incremental recursion (rsync's default) stays on: with --no-inc-recursive, which makes
    # progress2's total exact from the start, the whole file list was built and held first,
    # and a sync of 1 GiB in 10,000 files took ~10% more time and CPU (docs/performance.md).
    # Until the list is complete, progress2 counts "ir-chk" and the display says so.
    argv += ["--stats", *(["--info=progress2"] if progress else [])]
    argv += [f"--exclude={pattern}" for pattern in excludes]
    argv += list(extra_args)
    if remote_sudo:
        # -n: fail at once instead of waiting for a password prompt nobody can answer.
        argv.append("--rsync-path=sudo -n rsync")
    argv += ["-e", shlex.join(ssh_command(target, ssh_program, control))]
    remote = _remote_spec(target, remote_dir)
    argv += [remote, src] if pull else [src, remote]
    return argv


def split_stream(chunks: Iterator[bytes]) -> Iterator[str]:
    """Lines of a byte stream split on ``\\r`` or ``\\n``; only the unfinished tail is held."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        parts = re.split(rb"[\r\n]", pending)
        pending = parts.pop()
        for part in parts:
            if part:
                yield part.decode("utf-8", errors="replace")
        if len(pending) > 1 << 20:
            # A megabyte without a line end is not rsync output we parse: do not hoard it.
            yield pending.decode("utf-8", errors="replace")
            pending = b""
    if pending:
        yield pending.decode("utf-8", errors="replace")


# rsync's --info=progress2 writes an update per file ("\r" and the figures, no line end):
# thousands a second on a fast link. Waking up for every one took this process ~0.2 s of CPU
# per GiB of small files, which on a 2-core machine the transfer itself (rsync, ssh, sshd) was
# short of: the sync ran 9% slower than rsync writing to /dev/null. After a chunk that ends
# mid-line (in an update), the reader waits this long so the next ones are read together (the
# pipe holds 64 KiB, ~800 updates). Lines that end, as the statistics at the end do, are read
# at once.
PROGRESS_READ_PAUSE = 0.01


def _chunks(stream: IO[bytes], *, pause_after_progress: float = 0.0) -> Iterator[bytes]:
    while True:
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            return
        yield chunk
        if pause_after_progress and not chunk.endswith(b"\n"):
            time.sleep(pause_after_progress)


# rsync names each file it could not copy on its own stderr line; at most this many are kept
# (the error, `show`), and the rest counted.
MAX_PROBLEMS = 100


@dataclass
class Problems:
    """rsync's lines about single files, the first ``MAX_PROBLEMS`` kept, all counted."""

    lines: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, line: str) -> None:
        self.count += 1
        if len(self.lines) < MAX_PROBLEMS:
            self.lines.append(line.strip())


def exit_to_result(
    exit_code: int,
    stats: Mapping[str, int],
    stderr_tail: Sequence[str],
    host: str = "",
    problems: Problems | None = None,
) -> SyncStats:
    """Turn rsync's exit code and parsed stats into ``SyncStats`` or ``SyncError``.

    0 is success, 24 (source files vanished during the transfer) is success with
    ``exit_code=24`` for the caller to record as a warning. 23 (partial transfer, including
    an unreadable source) and every other code, or death by a signal, raise ``SyncError``.
    Either way ``problems`` carries rsync's lines naming the files concerned.
    """
    problems = problems or Problems()
    if exit_code in (RSYNC_OK, RSYNC_VANISHED):
        return SyncStats(
            files_transferred=stats.get("files_transferred", 0),
            bytes_sent=stats.get("bytes_sent", 0),
            total_size=stats.get("total_size", 0),
            exit_code=exit_code,
            problems=tuple(problems.lines),
            problem_count=problems.count,
            entries=stats.get("entries", 0),
        )
    lines = [ln for ln in stderr_tail if ln.strip()]
    last = lines[-1].strip() if lines else "(no error output)"
    hint = None
    if exit_code < 0:
        message = f"rsync was killed by signal {-exit_code}"
    elif exit_code == RSYNC_PARTIAL and problems.lines:
        # The summary ("see previous errors") says nothing; the lines before it name the files.
        shown = "; ".join(problems.lines[:3])
        more = problems.count - min(3, len(problems.lines))
        message = f"rsync could not copy everything (exit code 23): {shown}" + (
            f"; and {more} more" if more else ""
        )
        hint = (
            "make those files readable by this user (or run as root), or exclude them; "
            "`ec2backup show` lists every one"
        )
    else:
        message = f"rsync failed with exit code {exit_code}: {last}"
    if any(marker in ln for ln in lines for marker in _HOST_KEY_FAILURE):
        message += " (ssh rejected the host key: it does not match the pinned one)"
        hint = "the instance's host key is not the one pinned for this run; do not override it"
    raise SyncError(
        message,
        rsync_exit=exit_code,
        resources={"host": host} if host else None,
        hint=hint,
        problems=problems.lines,
        problem_count=problems.count,
    )


class RsyncSyncer:
    """``Syncer`` running the system rsync (3.1.3 or later with ACLs and xattrs, not
    openrsync) over ssh."""

    def __init__(self, rsync_program: str = "rsync", ssh_program: str = "ssh") -> None:
        self.rsync_program = rsync_program
        self.ssh_program = ssh_program

    def check_available(self) -> None:
        rsync = shutil.which(self.rsync_program)
        if rsync is None:
            raise ToolMissingError(
                f"{self.rsync_program} is not installed (not found on PATH)",
                hint="install rsync 3.x, e.g. `apt install rsync` or `brew install rsync`",
            )
        if shutil.which(self.ssh_program) is None:
            raise ToolMissingError(
                f"{self.ssh_program} is not installed (not found on PATH)",
                hint="install the OpenSSH client, e.g. `apt install openssh-client`",
            )
        try:
            done = subprocess.run(
                [rsync, "--version"],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=30,
                env={**os.environ, "LC_ALL": "C"},
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ToolMissingError(
                f"{rsync} --version failed: {exc}", hint="install rsync 3.x"
            ) from exc
        output = done.stdout + done.stderr
        if "openrsync" in output.lower():
            # macOS 15.4+ ships openrsync, which rejects --info=progress2.
            raise ToolMissingError(
                f"{rsync} is openrsync, which lacks options ec2backup needs (--info=progress2)",
                hint="install rsync 3.x, e.g. `brew install rsync`, and put it first on PATH",
            )
        match = _VERSION_RE.search(output)
        if match is None:
            raise ToolMissingError(
                f"cannot tell the version of {rsync} from `rsync --version`",
                hint="install rsync 3.x",
            )
        version = (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))
        if version < MIN_RSYNC_VERSION:
            need = ".".join(str(n) for n in MIN_RSYNC_VERSION)
            raise ToolMissingError(
                f"{rsync} is version {'.'.join(str(n) for n in version)}; ec2backup needs "
                f"rsync {need} or later (nanosecond times, --info=progress2)",
                hint="install rsync 3.x, e.g. `apt install rsync` or `brew install rsync`",
            )
        missing = _MISSING_CAPABILITY_RE.findall(output)
        if missing:
            raise ToolMissingError(
                f"{rsync} was built without {' and '.join(missing)}: a copy would lose them",
                hint="install an rsync built with ACLs and xattrs (Debian's, Ubuntu's and "
                "Homebrew's are)",
            )

    def sync(
        self,
        source: Path,
        target: SshTarget,
        remote_dir: str,
        *,
        excludes: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        remote_sudo: bool = False,
        on_progress: Callable[[str], None] | None = None,
        pull: bool = False,
    ) -> SyncStats:
        if pull:
            Path(source).mkdir(parents=True, exist_ok=True)
        else:
            _require_directory(source)
        argv = self._command(
            source,
            target,
            remote_dir,
            excludes=excludes,
            extra_args=applicable_args(extra_args, pull=pull),
            remote_sudo=remote_sudo,
            pull=pull,
        )
        return self._run(argv, target.host, on_progress=on_progress)

    def compare(
        self,
        source: Path,
        target: SshTarget,
        remote_dir: str,
        *,
        excludes: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        remote_sudo: bool = False,
        checksum: bool = True,
        only: Sequence[str] | None = None,
    ) -> list[Difference]:
        """What differs between ``source`` and ``remote_dir``, from rsync's itemized lines
        of a dry run (``>fc.......... docs/a.txt``, ``*deleting old.txt``) put in words;
        [] if they match. Nothing is changed on either side."""
        _require_directory(source)
        flags = ["--dry-run", "--out-format=%i %n", *(["--checksum"] if checksum else [])]
        with tempfile.TemporaryDirectory(prefix="ec2backup-compare-") as scratch:
            if only is not None:
                if not only:
                    return []
                # NUL-separated: a name may hold a newline. rsync implies --relative; without
                # -r it compares just the names given (and cannot --delete).
                listing = Path(scratch) / "paths"
                listing.write_bytes(b"".join(os.fsencode(p) + b"\0" for p in only))
                flags += ["--from0", f"--files-from={listing}"]
            argv = self._command(
                source,
                target,
                remote_dir,
                excludes=excludes,
                extra_args=[*flags, *applicable_args(extra_args, compare=True)],
                remote_sudo=remote_sudo,
                delete=only is None,
                in_place=False,
                progress=False,
            )
            differences: list[Difference] = []

            def keep(line: str) -> None:
                found = itemized_difference(line.rstrip("\n"))
                if found is not None:
                    name, what = found
                    differences.append(Difference("" if name == "./" else name, what))

            self._run(argv, target.host, on_line=keep)
        return differences

    def count_deletions(
        self,
        source: Path,
        target: SshTarget,
        remote_dir: str,
        *,
        excludes: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        remote_sudo: bool = False,
    ) -> int:
        _require_directory(source)
        argv = self._command(
            source,
            target,
            remote_dir,
            excludes=excludes,
            extra_args=["--dry-run", *extra_args],
            remote_sudo=remote_sudo,
            progress=False,
        )
        deleted = [0]

        def count(line: str) -> None:
            found = deleted_non_directories(line)
            if found is not None:
                deleted[0] = found

        self._run(argv, target.host, on_line=count)
        return deleted[0]

    def _command(
        self, source: Path, target: SshTarget, remote_dir: str, **options: Any
    ) -> list[str]:
        """``build_rsync_command`` with this syncer's rsync and ssh, its passes to one host
        sharing one connection."""
        return build_rsync_command(
            source,
            target,
            remote_dir,
            rsync_program=self.rsync_program,
            ssh_program=self.ssh_program,
            control=control_path(target),
            **options,
        )

    def _run(
        self,
        argv: list[str],
        host: str,
        *,
        on_progress: Callable[[str], None] | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> SyncStats:
        resources = {"host": host}
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**os.environ, "LC_ALL": "C"},
            )
        except OSError as exc:
            raise SyncError(f"cannot run {argv[0]}: {exc}", resources=resources) from exc

        # stderr is drained on a thread so a chatty rsync can never block on a full pipe; its
        # lines naming files are kept (bounded), and its last lines for the error message.
        stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        problems = Problems()
        assert proc.stderr is not None and proc.stdout is not None
        stderr = proc.stderr

        def read_stderr() -> None:
            for line in split_stream(_chunks(stderr)):
                stderr_tail.append(line)
                if is_problem_line(line):
                    problems.add(line)

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        stats: dict[str, int] = {}
        try:
            pause = PROGRESS_READ_PAUSE if enabled(PROGRESS_BATCHES) else 0.0
            chunks = _chunks(proc.stdout, pause_after_progress=pause)
            for line in split_stream(chunks):
                # Progress first: it is most of the output (about a line per file).
                if is_progress_line(line):
                    if on_progress is not None:
                        on_progress(line.strip())
                elif (parsed := parse_stats_line(line)) is not None:
                    stats[parsed[0]] = parsed[1]
                elif on_line is not None:
                    on_line(line)
            exit_code = proc.wait()
        finally:
            if proc.poll() is None:
                # Interrupted (Ctrl-C, a raising callback): never leave rsync running.
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            reader.join(timeout=10)
            proc.stdout.close()
            proc.stderr.close()
        return exit_to_result(exit_code, stats, list(stderr_tail), host, problems)


def _require_directory(source: Path) -> None:
    if not Path(source).is_dir():
        raise SyncError(
            f"source directory {source} does not exist or is not a directory",
            resources={"source": str(source)},
        )
