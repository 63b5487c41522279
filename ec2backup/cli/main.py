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

from ..errors import EXIT_INTERRUPTED, Ec2BackupError, Interrupted
from ..errors import aftermath as recorded_aftermath
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
        typer.echo(
            f"ec2backup: unexpected error: {type(exc).__name__}: {exc}"
            + ("" if debug else " (--debug shows where)")
            + aftermath_note(exc),
            err=True,
        )
        return 1
    return 0


def error_line(exc: Ec2BackupError) -> str:
    """The one line of an error: the message, its resources and fix, and for a run that
    failed, what it left in the cloud and the command that continues or ends it."""
    line = exc.one_line()
    if exc.run_id and exc.still_running is not None:  # the engine looked after releasing
        return line + aftermath(exc.run_id, exc.still_running, resumable=exc.resumable)
    note = aftermath_note(exc)
    if note:
        return line + note
    if exc.run_id and exc.resumable:
        line += f" [run {exc.run_id}: `ec2backup resume {exc.run_id}` to continue]"
    return line


def interrupted_line(exc: BaseException) -> str:
    if isinstance(exc, Interrupted) and exc.run_id:
        line = f"run {exc.run_id} {exc}; its state is recorded"
        if exc.still_running is not None:
            return line + aftermath(exc.run_id, exc.still_running, resumable=True)
        return line + (aftermath_note(exc) or f"; `ec2backup resume {exc.run_id}` to continue")
    return "interrupted"


def aftermath(run_id: str, still_running: list[str] | None, *, resumable: bool) -> str:
    """What a failed run left running, as EC2 showed it once the run released what it could,
    and the one command that ends it (or, with nothing left, the one that continues it)."""
    if still_running:
        return (
            f" [run {run_id}: still running: {', '.join(still_running)}; "
            f"`ec2backup resume {run_id} --clean` ends it]"
        )
    if not resumable:
        return f" [run {run_id}: nothing of it is left in the cloud]" if still_running == [] else ""
    left = "nothing of it is left running; " if still_running == [] else ""
    return f" [run {run_id}: {left}`ec2backup resume {run_id}` to continue]"


def aftermath_note(exc: BaseException) -> str:
    """What a failed run left behind, read from its record by the runner (where the engine
    did not look itself)."""
    text = recorded_aftermath(exc)
    return f"; {text}" if text else ""


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
