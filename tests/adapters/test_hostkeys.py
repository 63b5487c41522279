"""Host keys out of cloud-init's console output, and the known_hosts file pinning them."""

from __future__ import annotations

import stat
from pathlib import Path

import asyncssh
import pytest

from ec2backup.adapters.hostkeys import (
    known_hosts_lines,
    parse_console_host_keys,
    write_known_hosts,
)


def _key(alg: str) -> tuple[str, str]:
    keytype, blob = asyncssh.generate_private_key(alg).export_public_key().decode().split()[:2]
    return keytype, blob


ED = _key("ssh-ed25519")
ECDSA = _key("ecdsa-sha2-nistp256")
RSA = _key("ssh-rsa")


def console(ed: tuple[str, str] = ED, ecdsa: tuple[str, str] = ECDSA) -> str:
    """Console output shaped like a real Ubuntu boot on Nitro, noise included."""
    lines = [
        "[    0.000000] Linux version 6.8.0-1012-aws (buildd@lcy02-amd64-017) (gcc 13.2.0)",
        "[    0.000000] Command line: BOOT_IMAGE=/vmlinuz-6.8.0-1012-aws root=PARTUUID=...",
        "[   11.902134] cloud-init[612]: Cloud-init v. 24.1.3 running 'init' at Mon, 01 Jan",
        "ci-info: +++++++++++++++++++++++Net device info++++++++++++++++++++++++",
        "ci-info: | ens5 | True | 10.0.1.23 | 255.255.255.0 | global | 0a:1b:2c |",
        "<14>Jan  1 00:00:12 cloud-init: #############################################",
        "-----BEGIN SSH HOST KEY FINGERPRINTS-----",
        "256 SHA256:Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg root@ip-10-0-1-23 (ECDSA)",
        "256 SHA256:YmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm8 root@ip-10-0-1-23 (ED25519)",
        "-----END SSH HOST KEY FINGERPRINTS-----",
        "<14>Jan  1 00:00:12 cloud-init: #############################################",
        "ec2: -----BEGIN SSH HOST KEY KEYS-----",
        f"[   12.345678] {ecdsa[0]} {ecdsa[1]} root@ip-10-0-1-23",
        f"ec2: {ed[0]} {ed[1]} root@ip-10-0-1-23",
        # A key type we do not pin, and a line the kernel broke into: both ignored.
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP root@ip-10-0-1-23",
        f"{RSA[0]} {RSA[1][:40]}[   12.4] random: crng init done",
        "ec2: -----END SSH HOST KEY KEYS-----",
        "[   12.501234] cloud-init[700]: Cloud-init v. 24.1.3 finished at Mon, 01 Jan 2024",
        "Ubuntu 24.04 LTS ip-10-0-1-23 ttyS0",
        "",
        "ip-10-0-1-23 login: ",
    ]
    return "\r\n".join(lines)


def test_parses_keys_from_noisy_console() -> None:
    assert parse_console_host_keys(console()) == [ECDSA, ED]


def test_plain_newlines_and_bare_lines_work_too() -> None:
    text = "\n".join(
        [
            "-----BEGIN SSH HOST KEY KEYS-----",
            f"{ED[0]} {ED[1]} root@host",
            f"{RSA[0]} {RSA[1]}",
            "-----END SSH HOST KEY KEYS-----",
        ]
    )
    assert parse_console_host_keys(text) == [ED, RSA]


def test_no_block_gives_empty_list() -> None:
    assert parse_console_host_keys("") == []
    assert parse_console_host_keys("[    0.0] Linux version 6.8\r\nlogin: ") == []


def test_block_cut_off_at_start_or_end_is_not_trusted() -> None:
    full = console()
    begin = full.index("-----BEGIN SSH HOST KEY KEYS-----")
    end = full.index("-----END SSH HOST KEY KEYS-----")
    # The 64 KB console window starts inside the block: no BEGIN seen.
    assert parse_console_host_keys(full[begin + 40 :]) == []
    # The output stops before END.
    assert parse_console_host_keys(full[:end]) == []


def test_last_complete_block_wins() -> None:
    other = _key("ssh-ed25519")
    text = console(ed=other) + "\r\n" + console()
    assert parse_console_host_keys(text) == [ECDSA, ED]


def test_bad_base64_and_mismatched_type_are_ignored() -> None:
    corrupt = ED[1][:-8] + "AAAAAAA="
    text = "\n".join(
        [
            "-----BEGIN SSH HOST KEY KEYS-----",
            f"ssh-ed25519 {corrupt} root@host",
            "ssh-ed25519 AAAAnot-base64!! root@host",
            f"ssh-ed25519 {ECDSA[1]} root@host",  # an ECDSA blob claiming to be ed25519
            f"{ECDSA[0]} {ECDSA[1]} root@host",
            "-----END SSH HOST KEY KEYS-----",
        ]
    )
    assert parse_console_host_keys(text) == [ECDSA]


def test_known_hosts_lines_default_port() -> None:
    assert known_hosts_lines("203.0.113.5", 22, [ED, ECDSA]) == (
        f"203.0.113.5 {ED[0]} {ED[1]}\n203.0.113.5 {ECDSA[0]} {ECDSA[1]}\n"
    )


def test_known_hosts_lines_other_port() -> None:
    assert known_hosts_lines("127.0.0.1", 2222, [ED]) == f"[127.0.0.1]:2222 {ED[0]} {ED[1]}\n"


def test_known_hosts_lines_are_understood_by_asyncssh() -> None:
    known = asyncssh.import_known_hosts(known_hosts_lines("127.0.0.1", 2222, [ED, ECDSA]))
    matched = known.match("127.0.0.1", "127.0.0.1", 2222)[0]
    assert {k.export_public_key().decode().split()[1] for k in matched} == {ED[1], ECDSA[1]}
    # Not valid for the same host on another port.
    assert known.match("127.0.0.1", "127.0.0.1", 2223)[0] == []


def test_write_known_hosts_mode_and_content(tmp_path: Path) -> None:
    path = tmp_path / "run" / "known_hosts"
    write_known_hosts(path, "10.0.0.1", 22, [ED])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == f"10.0.0.1 {ED[0]} {ED[1]}\n"
    # Rewriting replaces, never appends.
    write_known_hosts(path, "10.0.0.1", 22, [ECDSA])
    assert path.read_text() == f"10.0.0.1 {ECDSA[0]} {ECDSA[1]}\n"
    assert [p.name for p in path.parent.iterdir()] == ["known_hosts"]


def test_write_known_hosts_refuses_no_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_known_hosts(tmp_path / "known_hosts", "10.0.0.1", 22, [])
    assert not (tmp_path / "known_hosts").exists()
