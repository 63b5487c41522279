"""The commands' own helpers (the commands themselves: tests/run/test_engine.py and tests/e2e)."""

from __future__ import annotations

import pytest

from ec2backup.commands import backup as backup_command
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


@pytest.mark.parametrize(
    ("paths", "names"),
    [
        (["/home/me/Documents", "/home/me/Pictures"], ["Documents", "Pictures"]),
        (["/home/a/docs", "/home/b/docs"], ["a-docs", "b-docs"]),
        (["/x/a/docs", "/y/a/docs", "/srv/photos"], ["x-a-docs", "y-a-docs", "photos"]),
        (["/data/docs", "/docs"], ["data-docs", "docs"]),
        (["/srv/docs", "/srv/docs"], ["srv-docs", "srv-docs-2"]),
        (["/"], ["root"]),
    ],
)
def test_init_gives_each_source_a_destination_of_its_own(
    paths: list[str], names: list[str]
) -> None:
    from pathlib import Path

    from ec2backup.config import Source, destination_clash

    got, notes = backup_command.destination_names([Path(p) for p in paths])
    assert got == names
    sources = tuple(Source(path=Path(p), dest=n) for p, n in zip(paths, got, strict=True))
    assert destination_clash(sources) is None
    pairs = zip(paths, names, strict=True)
    renamed = [f"{p} -> {n!r}" for p, n in pairs if n != Path(p).name and p != "/"]
    if renamed:
        (note,) = notes
        assert "share a folder name" in note and all(r in note for r in renamed)
    else:
        assert notes == []
