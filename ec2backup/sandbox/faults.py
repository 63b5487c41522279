"""EC2 call faults: the settings file, and what happens to a call before and after it runs.

``Faults.before_action`` sees every EC2 call first (after re-reading ``D/settings.json`` if it
changed): added latency, throttling and 5xx errors; ``after_action`` sees its answer (lost
responses). Each outcome is drawn from ``Random(f"{fault_seed}:{action}:{n}")`` for the n-th
call of an action since the settings last changed, so a seed replays the same faults whatever
else runs meanwhile. This runs outside ``CloudState.lock``: a slow call does not hold up the
others.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from typing import Any
from xml.sax.saxutils import escape

from moto.ec2.responses import EC2Response

from .settings import CloudSettings
from .state import CloudState

log = logging.getLogger("ec2backup.sandbox")

SERVER_ERRORS = (
    (500, "InternalError", "An internal error has occurred."),
    (503, "Unavailable", "The server is overloaded and can't handle the request."),
)


class CloudFault(Exception):
    """An EC2 error answer with an HTTP status of our choosing (moto would say 400)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> tuple[int, dict[str, str], str]:
        request_id = str(uuid.uuid4())
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Response><Errors><Error><Code>{escape(self.code)}</Code>"
            f"<Message>{escape(self.message)}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        )
        headers = {
            "status": str(self.status),
            "Content-Type": "text/xml;charset=UTF-8",
            "x-amzn-RequestId": request_id,
            "server": "AmazonEC2",
        }
        return self.status, headers, body


class Faults:
    def __init__(self, state: CloudState) -> None:
        self.state = state
        # Which settings file was read last, and the call counters it resets.
        self._settings_key: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        self._calls: dict[str, int] = {}

    def before_action(self, response: EC2Response) -> Any:
        """Return a response (``(status, headers, body)``) to answer an EC2 call without
        running it, or None to run it: latency, throttling and server errors."""
        settings = self.refresh_settings()
        action = response._get_action()
        if not settings.faults_apply_to(action):
            return None
        if settings.latency > 0:
            time.sleep(settings.latency)
        draw = self._draw(settings, action)
        first, second, lost = draw.random(), draw.random(), draw.random()
        if first < settings.throttle_rate:
            log.info("fault: %s throttled", action)
            return CloudFault(503, "RequestLimitExceeded", "Request limit exceeded.").response()
        if first < settings.throttle_rate + settings.error_rate:
            status, code, message = SERVER_ERRORS[int(second * len(SERVER_ERRORS))]
            log.info("fault: %s answered %s %s", action, status, code)
            return CloudFault(status, code, message).response()
        response._sandbox_lose_response = lost < settings.lost_response_rate  # type: ignore[attr-defined]
        return None

    def after_action(self, response: EC2Response, answer: Any) -> Any:
        """The answer to an EC2 call that ran, or the error that replaces it (lost response)."""
        if getattr(response, "_sandbox_lose_response", False) and int(answer[0]) < 400:
            log.info("fault: %s did its work, its response is lost", response._get_action())
            return CloudFault(500, "InternalError", "An internal error has occurred.").response()
        return answer

    def _draw(self, settings: CloudSettings, action: str) -> random.Random:
        """The random source of the n-th call of ``action`` since the settings changed."""
        with self._lock:
            n = self._calls.get(action, 0)
            self._calls[action] = n + 1
        return random.Random(f"{settings.fault_seed}:{action}:{n}")

    def refresh_settings(self) -> CloudSettings:
        """Re-read ``D/settings.json`` if it was replaced since the last look."""
        state = self.state
        path = state.layout.settings
        try:
            st = os.stat(path)
            key: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            key = None
        if key == self._settings_key:
            return state.settings
        with self._lock:
            if key != self._settings_key:
                try:
                    settings = CloudSettings.load(path)
                except (TypeError, ValueError) as e:
                    log.error("ignoring %s: %s", path, e)
                    settings = state.settings
                self._settings_key = key
                if settings != state.settings:
                    log.info("settings: %s", settings)
                state.settings = settings
                self._calls.clear()  # the same seed replays the same faults
                # cut_ssh_after cuts once per instance per configuration: a new one cuts again.
                state.ssh_cut.clear()
                state.ssh_watch.clear()
        return state.settings
