"""What the commands of one invocation share: the global options, logging, the App they open
(closed when the command ends, however it ends) and, for commands that drive a run, signals
and the progress display. It lives on typer's context (``ctx.obj``), not in module globals."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ..errors import Terminated

if TYPE_CHECKING:
    from ..commands.app import App


@dataclass
class Invocation:
    config: Path | None = None
    db: str | None = None
    debug: bool = False
    quiet: bool = False
    opened: list[App] = field(default_factory=list)

    def config_path(self) -> Path:
        from ..paths import default_config_path

        return self.config or default_config_path()

    def db_url(self) -> str:
        from ..paths import default_db_url

        return self.db or default_db_url()

    def app(self) -> App:
        """The App of this invocation: the database opened (and upgraded) once."""
        if not self.opened:
            from ..commands.app import App
            from ..db.store import open_store

            self.opened.append(App(store=open_store(self.db), config_path=self.config_path()))
        return self.opened[0]

    @contextmanager
    def running(self, *, keep_instance: bool = False) -> Iterator[App]:
        """The App for a command that drives a run: SIGTERM is recorded like Ctrl-C, and on
        a terminal a progress bar and the run's state show on stderr (never on a pipe).
        ``keep_instance``: a run that fails keeps its instance (for debugging)."""
        from .progress import make_progress

        signal.signal(signal.SIGTERM, _on_sigterm)
        sink = make_progress(sys.stderr.isatty() and not self.quiet)
        console = getattr(sink, "console", None)
        if console is not None:
            setup_logging(self.debug, self.quiet, console)
        app = self.app()
        app.progress, app.on_state, app.on_transfer = sink.on_progress, sink.state, sink.transfer
        app.keep_instance = keep_instance
        try:
            yield app
        finally:
            sink.close()

    def close(self) -> None:
        # Disposing the engine closes its SQLite connections, which checkpoints the WAL into
        # the database file (and lets PostgreSQL see a clean disconnect).
        while self.opened:
            try:
                self.opened.pop().store.close()
            except Exception as exc:  # the command's result stands; say why the close failed
                logging.getLogger(__name__).warning("closing the database: %s", exc)


def invocation(ctx: typer.Context) -> Invocation:
    """The options of the main callback, for a command (or a default one, when a command is
    invoked on its own in a test)."""
    root = ctx.find_root()
    if not isinstance(root.obj, Invocation):
        root.obj = Invocation()
        root.call_on_close(root.obj.close)
    return root.obj


def setup_logging(debug: bool, quiet: bool, console: Any = None) -> None:
    """Logs to stderr: through rich on a terminal (``console``: the progress display's, so
    that log lines print above the live bar instead of through it); elsewhere (cron, a log
    file, a pipe) as plain lines, one per record, never wrapped at rich's 80 columns."""
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler: logging.Handler
    if console is not None or sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(
            console=console or Console(stderr=True), show_path=debug, show_time=debug, markup=False
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)-8s %(name)s: %(message)s"
                if debug
                else "%(levelname)-8s %(message)s"
            )
        )
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("ec2backup").setLevel(level)
    # A signal can land inside the SSH event loop; asyncio then logs the tasks it abandoned
    # ("exception was never retrieved") after our one-line message. Not user output.
    logging.getLogger("asyncio").setLevel(logging.DEBUG if debug else logging.CRITICAL)


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise Terminated()
