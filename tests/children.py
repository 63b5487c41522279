"""Helper processes that a test talks to line by line over their stdin and stdout: the test
waits for what a child reports (with a deadline), never for a length of time."""

from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
import threading
import time


class Child:
    """``python -c script *args``; its stdout read line by line on a thread."""

    def __init__(self, script: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self._stderr.extend(self.proc.stderr)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_line(self, deadline: float) -> str:
        """The next line the child prints; fails if it ends first or ``deadline`` (a
        ``time.monotonic()`` instant) passes."""
        try:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"child {self.pid} printed nothing in time") from None
        if line is None:
            code = self.proc.wait()
            raise AssertionError(f"child {self.pid} exited {code}: {''.join(self._stderr)}")
        return line

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60) -> int:
        """Close its stdin (the child's cue to end), wait for it, kill it if it does not end
        in time. Its exit code; safe to call twice."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):  # it had ended already
                self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)
