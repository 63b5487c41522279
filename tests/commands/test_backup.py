"""The commands' own helpers (the commands themselves: tests/run/test_engine.py and tests/e2e)."""

from __future__ import annotations

import pytest

from ec2backup.commands.backup import ssh_cidr
from ec2backup.errors import UserInputError


def test_ssh_cidr_normalises_what_it_is_given() -> None:
    assert ssh_cidr("203.0.113.7") == "203.0.113.7/32"
    assert ssh_cidr("203.0.113.9/24") == "203.0.113.0/24"
    with pytest.raises(UserInputError, match="not an address or network"):
        ssh_cidr("everywhere")


def test_ssh_cidr_without_checkip_asks_for_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EC2BACKUP_CHECKIP_URL", "http://127.0.0.1:9")  # refuses at once
    with pytest.raises(UserInputError) as info:
        ssh_cidr(None)
    assert "--allow-ssh-from" in info.value.one_line()


def test_ssh_cidr_asks_the_address_service_named_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import http.server
    import threading

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"198.51.100.23\n")

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("EC2BACKUP_CHECKIP_URL", f"http://127.0.0.1:{server.server_port}/ip")
        assert ssh_cidr(None) == "198.51.100.23/32"
    finally:
        server.shutdown()
        server.server_close()
