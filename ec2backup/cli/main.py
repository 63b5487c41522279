"""The console script: runs the command, maps errors to one line and an exit code, and ends the
process."""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import traceback
from contextlib import suppress

import typer

from ..errors import (
    EXIT_INTERRUPTED,
    Aftermath,
    Ec2BackupError,
    Interrupted,
    Terminated,
    aftermath_of,
)
from ..fastpaths import FAST_EXIT, GC_PAUSE, enabled
from .app import app


def run_cli() -> int:
    """Run the command in ``sys.argv``; the exit code. Errors become one line on stderr; with
    ``--debug`` the traceback comes first, and the line and the exit code stay the same."""
    debug = "--debug" in sys.argv[1:] or bool(os.environ.get("EC2BACKUP_DEBUG"))
    try:
        app()
    except Ec2BackupError as exc:
        if debug:
            traceback.print_exc()
        typer.echo(f"ec2backup: error: {error_line(exc)}", err=True)
        return exc.exit_code
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        typer.echo(exc.code, err=True)
        return 1
    except BaseException as exc:
        if isinstance(exc, (Interrupted, KeyboardInterrupt)):
            if debug:
                traceback.print_exc()
            typer.echo(f"ec2backup: {interrupted_line(exc)}", err=True)
            return EXIT_INTERRUPTED
        if debug:
            traceback.print_exc()
        typer.echo(f"ec2backup: {unexpected_line(exc, debug=debug)}", err=True)
        return 1
    return 0


def error_line(exc: Ec2BackupError) -> str:
    """The one line of an error: the message, its resources and fix, and for a run that
    failed, what it left in the cloud and the command that continues or ends it."""
    return exc.one_line() + aftermath_text(aftermath_of(exc))


def interrupted_line(exc: BaseException) -> str:
    """``run ID interrupted by Ctrl-C; its state is recorded [run ID: ...]``."""
    left = aftermath_of(exc)
    run_id = left.run_id if left else exc.run_id if isinstance(exc, Interrupted) else None
    if run_id is None:
        return "interrupted"
    if isinstance(exc, Interrupted):
        signal_name = exc.signal_name
    else:  # a KeyboardInterrupt that reached the run outside the engine
        signal_name = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
    return f"run {run_id} interrupted by {signal_name}; its state is recorded" + aftermath_text(
        left
    )


def unexpected_line(exc: BaseException, *, debug: bool) -> str:
    return (
        f"unexpected error: {type(exc).__name__}: {exc}"
        + ("" if debug else " (--debug shows where)")
        + aftermath_text(aftermath_of(exc))
    )


def aftermath_text(left: Aftermath | None) -> str:
    """What a stopped run left in the cloud and the one command that continues or ends it,
    as said after the error's line: `` [run ID: still running: ...; `...` ends it]``; empty
    where no run was stopped."""
    if left is None:
        return ""
    run = left.run_id
    if left.left is None:
        what = "what it left in the cloud is unknown (neither EC2 nor its record could be read)"
    elif left.left:
        what = ("still running: " if left.observed else "left in the cloud, by its record: ") + (
            ", ".join(left.left)
        )
    else:
        what = "nothing of it is left " + (
            "running" if left.observed and not left.ended else "in the cloud"
        )
        what += "" if left.observed else ", by its record"
    if left.ended:
        command = "`ec2backup reap --yes` ends it" if left.left != () else ""
    elif left.resumable and left.left == ():
        command = f"`ec2backup resume {run}` to continue"
    else:
        command = f"`ec2backup resume {run} --clean` ends it"
    return f" [run {run}: {what}" + (f"; {command}]" if command else "]")


# How long a command runs before the cyclic garbage collector comes back on (see main).
GC_OFF_SECONDS = 10.0


def pause_gc(seconds: float) -> threading.Timer:
    """Turn the cyclic garbage collector off now and back on after ``seconds``, with every
    object alive by then frozen out of its passes."""

    def back_on() -> None:
        gc.freeze()
        gc.enable()

    gc.disable()
    timer = threading.Timer(seconds, back_on)
    timer.daemon = True
    timer.start()
    return timer


def main() -> None:
    """The console script. Once the command is over, its output flushed and its logs closed,
    the process ends with ``os._exit``: the interpreter's own teardown (finalising the modules
    boto3, SQLAlchemy and asyncssh bring in) took 0.3-0.45 s of every run and does nothing a
    finished command needs (the database is committed and closed, child processes reaped).

    While a command starts it allocates mostly objects that live until it ends (those modules,
    their models and mappers); the collector's repeated passes over them took 0.13-0.18 s of a
    1.4 s backup run. So it is off for the first ``GC_OFF_SECONDS``, then on again for the rest
    of a long run, with what exists by then frozen out of its passes."""
    if enabled(GC_PAUSE):
        pause_gc(GC_OFF_SECONDS)
    code = run_cli()
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):  # `ec2backup runs | head`: the reader is gone
        code = code or 1
    with suppress(BrokenPipeError, ValueError):
        sys.stderr.flush()
    if enabled(FAST_EXIT):
        logging.shutdown()
        os._exit(code)
    sys.exit(code)
