"""The one switch: ``EC2BACKUP_NO_FASTPATHS=1`` turns every speed trick off, and the plain way
runs instead. Each trick is checked both ways: on by default, off through the switch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ec2backup import fastpaths
from ec2backup.fastpaths import ENV, NAMES, disabled_names, enabled


def test_the_switch_turns_off_all_none_or_the_named() -> None:
    assert disabled_names("") == disabled_names("0") == frozenset()
    assert disabled_names("1") == NAMES
    assert disabled_names(" gc-pause , sqlite-runs") == {"gc-pause", "sqlite-runs"}
    # Anything else, a misspelt name included, turns every trick off: the plain way.
    assert disabled_names("yes") == disabled_names("gc-pause,sqlite-run") == NAMES


def test_the_switch_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert all(enabled(name) for name in NAMES)
    monkeypatch.setenv(ENV, "1")
    assert not any(enabled(name) for name in NAMES)
    monkeypatch.setenv(ENV, fastpaths.GC_PAUSE)
    assert [n for n in sorted(NAMES) if not enabled(n)] == [fastpaths.GC_PAUSE]
    with pytest.raises(ValueError, match="no speed trick named"):
        enabled("gc_pause")


# --- each trick, on and then off --------------------------------------------------------


def _botocore_models(tmp_path: Path, on: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    import botocore.loaders

    from ec2backup.adapters.aws.botomodel import KnownServicesLoader, botocore_session

    session = botocore_session(tmp_path / "cache")
    loader = session.get_component("data_loader")
    client = boto3.session.Session(botocore_session=session, region_name="us-east-1").client("ec2")
    if on:
        assert isinstance(loader, KnownServicesLoader)
        assert not hasattr(client, "describe_key_pairs")  # the trimmed model
    else:
        assert type(loader) is botocore.loaders.Loader  # botocore's own, listing its data
        assert hasattr(client, "describe_key_pairs")  # the whole model
        assert not (tmp_path / "cache").exists()  # nothing written


def _sqlite_runs(tmp_path: Path, on: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from ec2backup.db.sqlite_runs import list_runs_sqlite
    from ec2backup.db.store import open_store

    url = f"sqlite:///{tmp_path / 'ec2backup.db'}"
    open_store(url).close()  # at the newest schema: where the trick applies
    assert list_runs_sqlite(url) == ([] if on else None)
    probe = (
        "import json, sys\n"
        "sys.argv = ['ec2backup', 'runs', '--json']\n"
        "from ec2backup.cli.main import run_cli\n"
        "code = run_cli()\n"
        "print(json.dumps(['sqlalchemy' in sys.modules, code]), file=sys.stderr)\n"
    )
    env = {**os.environ, "EC2BACKUP_DB": url, "EC2BACKUP_CONFIG": str(tmp_path / "none.toml")}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stderr.strip().splitlines()[-1]) == [not on, 0]
    assert json.loads(done.stdout) == []


def _console_script_ending(tmp_path: Path) -> list[str]:
    """How the console script ended ``runs``, and whether the collector was on by then."""
    probe = (
        "import atexit, gc, os, sys\n"
        "def report(how):\n"
        "    print(how, gc.isenabled(), file=sys.stderr, flush=True)\n"
        "real_exit = os._exit\n"
        "def exit_reporting(code):\n"
        "    report('os._exit')\n"
        "    real_exit(code)\n"
        "os._exit = exit_reporting\n"
        "atexit.register(report, 'teardown')\n"
        "sys.argv = ['ec2backup', 'runs', '--json']\n"
        "from ec2backup.cli.main import main\n"
        "main()\n"
    )
    env = {
        **os.environ,
        "EC2BACKUP_DB": f"sqlite:///{tmp_path / 'ec2backup.db'}",
        "EC2BACKUP_CONFIG": str(tmp_path / "none.toml"),
    }
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stderr.strip().splitlines()[-1].split()


def _fast_exit(tmp_path: Path, on: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    how, _ = _console_script_ending(tmp_path)
    assert how == ("os._exit" if on else "teardown")


def _gc_pause(tmp_path: Path, on: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    _, collector_on = _console_script_ending(tmp_path)
    assert collector_on == ("False" if on else "True")  # paused for the command's first 10 s


def _progress_batches(tmp_path: Path, on: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from ec2backup.adapters import rsync

    pauses: list[float] = []
    real_chunks = rsync._chunks

    def chunks(stream: object, *, pause_after_progress: float = 0.0) -> object:
        pauses.append(pause_after_progress)
        return real_chunks(stream, pause_after_progress=pause_after_progress)  # type: ignore[arg-type]

    monkeypatch.setattr(rsync, "_chunks", chunks)
    rsync.RsyncSyncer()._run(["sh", "-c", "echo 'Number of files: 3'"], "host")
    # stderr is never paused; stdout is, unless the switch is on.
    assert sorted(pauses) == [0.0, rsync.PROGRESS_READ_PAUSE if on else 0.0]


def _ssh_multiplex(tmp_path: Path, on: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from ec2backup.adapters import rsync
    from ec2backup.ports import SshTarget

    key = Path("/tmp/r1/id_ed25519")
    target = SshTarget("127.0.0.9", "ubuntu", key, key.parent / "known_hosts", 22)
    argv = rsync.RsyncSyncer()._command(Path("/src"), target, "/dst")
    assert ("ControlMaster=auto" in argv[argv.index("-e") + 1]) == on


CHECKS: dict[str, Callable[[Path, bool, pytest.MonkeyPatch], None]] = {
    fastpaths.BOTOCORE_MODELS: _botocore_models,
    fastpaths.SQLITE_RUNS: _sqlite_runs,
    fastpaths.FAST_EXIT: _fast_exit,
    fastpaths.GC_PAUSE: _gc_pause,
    fastpaths.PROGRESS_BATCHES: _progress_batches,
    fastpaths.SSH_MULTIPLEX: _ssh_multiplex,
}


def test_every_trick_has_its_check() -> None:
    assert set(CHECKS) == NAMES


@pytest.mark.parametrize("on", [True, False], ids=["on", "switched-off"])
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_the_switch_turns_the_trick_off(
    name: str, on: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if on:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, "1")
    CHECKS[name](tmp_path, on, monkeypatch)
