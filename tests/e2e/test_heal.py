"""Never an instance left behind, and the next run heals: each sentence of the promise, on the
local cloud, with ``instance_idle_minutes = 1``.

One minute of the instances' timers lasts ``MINUTE`` real seconds here (the sandbox's
``minute_seconds``): the idle bound is then 15 s, while ec2backup re-arms every 6 s (it counts
real seconds: ``core.deadman.rearm_interval``), so a controller that works is never cut and one
that died is found out within a quarter of a minute."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import (
    Cli,
    assert_clean_after,
    ec2_client,
    make_sample_tree,
    mounted_read_only,
    run_instances,
    tree_digest,
)

pytestmark = pytest.mark.e2e

MINUTE = 15.0  # real seconds per minute of the instances' timers


def until(condition: Callable[[], Any], seconds: float, what: str) -> Any:
    """Poll ``condition`` until it is true, at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {seconds:.0f} s"
        time.sleep(0.2)


def init(cli: Cli, tmp_path: Path, profile: str, extra: str = "") -> tuple[str, Path]:
    source = tmp_path / "home"
    source.mkdir(exist_ok=True)
    make_sample_tree(source)
    volume_id = cli(
        "init", "--profile", profile, "--az", "us-east-1a", "--size", "1", "--source", str(source)
    ).stdout.strip()
    config = tmp_path / "config.toml"
    config.write_text(config.read_text() + "instance_idle_minutes = 1\n" + extra)
    return volume_id, source


def slow_file(source: Path, size: int) -> None:
    """A file that rsync copies slowly (with --bwlimit): the sync lasts long enough."""
    (source / "photos").mkdir(exist_ok=True)
    (source / "photos" / "slow.bin").write_bytes(os.urandom(size))


def set_rsync_args(tmp_path: Path, args: str) -> None:
    config = tmp_path / "config.toml"
    text = re.sub(r"(?m)^rsync_args = .*\n", "", config.read_text())
    config.write_text(text + (f"rsync_args = {args}\n" if args else ""))


def events(shown: dict[str, Any]) -> list[str]:
    return [e["to"] for e in shown["events"]]


def at(shown: dict[str, Any], state: str) -> float:
    from datetime import datetime

    (when,) = [e["at"] for e in shown["events"] if e["to"] == state]
    return datetime.fromisoformat(when).timestamp()


def test_a_sync_lasting_three_minutes_finishes(cli: Cli, sandbox: Any, tmp_path: Path) -> None:
    volume_id, source = init(cli, tmp_path, "long", 'rsync_args = ["--bwlimit=100"]\n')
    slow_file(source, 5_000_000)  # 50 s at 100 KB/s: more than three of these minutes
    with sandbox.configured(minute_seconds=MINUTE):
        run_id = cli("run", "--profile", "long", timeout=600).stdout.strip()
    shown = cli.json("show", run_id)
    assert shown["state"] == "done"
    assert events(shown).count("launching") == 1  # never cut, so never relaunched
    assert at(shown, "synced") - at(shown, "syncing") >= 3 * MINUTE
    assert_clean_after(ec2_client(sandbox), run_id, volume_id)
    with mounted_read_only(sandbox.volume_image(volume_id)) as mnt:
        assert tree_digest(mnt / "home") == tree_digest(source)


def test_a_controller_killed_mid_sync_leaves_an_instance_that_ends_itself_and_the_next_run_succeeds(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    volume_id, source = init(cli, tmp_path, "kill", 'rsync_args = ["--bwlimit=200"]\n')
    slow_file(source, 1_500_000)
    ec2 = ec2_client(sandbox)
    with sandbox.configured(minute_seconds=MINUTE):
        # Its own process group: the SIGKILL takes the controller and its ssh/rsync children,
        # as a lost laptop would.
        controller = subprocess.Popen(
            [sys.executable, "-m", "ec2backup", "run", "--profile", "kill"],
            env={**os.environ, **cli.env},
            cwd=cli.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            run = until(
                lambda: next((r for r in cli.json("runs") if r["state"] == "syncing"), None),
                180,
                "the run never reached syncing",
            )
        finally:
            os.killpg(controller.pid, signal.SIGKILL)
            controller.wait(30)
        killed = time.monotonic()

        def ended() -> bool:
            (instance,) = run_instances(ec2, run["id"])
            return instance["State"]["Name"] in ("shutting-down", "terminated")

        until(ended, 2 * MINUTE + 10, "the orphan never ended itself")
        gone_after = time.monotonic() - killed
        # The idle bound is one minute after the last re-arm; two minutes is the promise (the
        # 10 s above only let the test report a miss instead of hanging).
        assert gone_after <= 2 * MINUTE, f"gone {gone_after:.1f} s after the kill"
        # No reap, no resume: the next run finds the abandoned one (its lease is dead) and
        # heals it first.
        result = cli("run", "--profile", "kill", timeout=600)
    new_id = result.stdout.strip()
    assert f"healed run {run['id']} (backup, abandoned in syncing): force-cleaned" in result.stderr
    assert cli.json("show", new_id)["state"] == "done"
    assert cli.json("show", run["id"])["state"] == "aborted"
    assert_clean_after(ec2, new_id, volume_id)
    with mounted_read_only(sandbox.volume_image(volume_id)) as mnt:
        assert tree_digest(mnt / "home") == tree_digest(source)


def test_a_run_that_fails_in_sync_leaves_no_instance_and_the_next_run_succeeds(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    # With --copy-links a symlink that points nowhere is an error: rsync exits 23 (a partial
    # transfer), which no retry or resume fixes until the user does.
    volume_id, source = init(cli, tmp_path, "fail", 'rsync_args = ["--copy-links"]\n')
    (source / "dangling").symlink_to(tmp_path / "nowhere")
    ec2 = ec2_client(sandbox)
    with sandbox.configured(minute_seconds=MINUTE):
        failed = cli("run", "--profile", "fail", check=False, timeout=600)
        assert failed.returncode == 7, failed.stderr  # SyncError
        (failed_run,) = [
            r for r in cli.json("runs") if r["profile"] == "fail" and r["kind"] == "backup"
        ]
        shown = cli.json("show", failed_run["id"])
        assert (shown["state"], shown["failed_from"]) == ("failed", "syncing")  # progress kept
        assert "exit code 23" in failed.stderr
        assert f"[run {failed_run['id']}: nothing of it is left running; " in failed.stderr
        assert f"`ec2backup resume {failed_run['id']}` to continue]" in failed.stderr
        assert_clean_after(ec2, failed_run["id"], volume_id)  # terminated, volume detached

        set_rsync_args(tmp_path, "")  # the user's fix; no ec2backup command in between
        result = cli("run", "--profile", "fail", timeout=600)
    new_id = result.stdout.strip()
    assert cli.json("show", new_id)["state"] == "done"
    assert f"healed run {failed_run['id']} (backup, abandoned in syncing)" in result.stderr
    assert_clean_after(ec2, new_id, volume_id)
    with mounted_read_only(sandbox.volume_image(volume_id)) as mnt:
        assert tree_digest(mnt / "home") == tree_digest(source)


def _ssh_cidrs(ec2: Any, group_id: str) -> list[str]:
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group_id]}])
    return sorted(
        r["CidrIpv4"]
        for r in rules["SecurityGroupRules"]
        if not r["IsEgress"] and r.get("FromPort") == 22
    )


def test_a_run_after_the_client_address_changed_succeeds_and_rules_do_not_pile_up(
    cli: Cli, sandbox: Any, tmp_path: Path
) -> None:
    ec2 = ec2_client(sandbox)
    with sandbox.configured(minute_seconds=MINUTE, client_address="203.0.113.7"):
        volume_id, source = init(cli, tmp_path, "moves")
        (group_id,) = re.findall(
            r'security_group_ids = \["(sg-[0-9a-f]+)"\]', (tmp_path / "config.toml").read_text()
        )
        assert _ssh_cidrs(ec2, group_id) == ["203.0.113.7/32"]  # where init ran from

    # The laptop moved: the group that init made does not admit it any more.
    with sandbox.configured(minute_seconds=MINUTE, client_address="198.51.100.20"):
        for _ in range(2):
            (source / "new.txt").write_text(f"written at {time.time()}\n")
            result = cli("run", "--profile", "moves", timeout=600)
            run_id = result.stdout.strip()
            assert cli.json("show", run_id)["state"] == "done"
            assert f"{group_id} now admits SSH from 198.51.100.20/32" in result.stderr
            # Removed once the run no longer needs it: only init's rule is left.
            assert _ssh_cidrs(ec2, group_id) == ["203.0.113.7/32"]
            assert_clean_after(ec2, run_id, volume_id)
    with mounted_read_only(sandbox.volume_image(volume_id)) as mnt:
        assert tree_digest(mnt / "home") == tree_digest(source)


@pytest.mark.parametrize("point", ["called:create_volume", "after:write_profile"])
def test_an_init_killed_after_its_volume_exists_and_force_cleaned_leaves_no_volume(
    cli: Cli, sandbox: Any, tmp_path: Path, point: str
) -> None:
    source = tmp_path / "home"
    source.mkdir()
    make_sample_tree(source)
    crashing = Cli(env={**cli.env, "EC2BACKUP_CRASH_AT": point}, cwd=cli.cwd)
    args = ["init", "--profile", "gone", "--az", "us-east-1a", "--size", "1"]
    assert crashing(*args, "--source", str(source), check=False).returncode == -9
    (run,) = cli.json("runs")
    ec2 = ec2_client(sandbox)

    def volumes() -> list[dict[str, Any]]:
        found = ec2.describe_volumes(
            Filters=[{"Name": "tag:ec2backup:run-id", "Values": [run["id"]]}]
        )["Volumes"]
        return [v for v in found if v["State"] not in ("deleting", "deleted")]

    assert len(volumes()) == 1  # it exists

    # reap (a dry run by default) would delete it if no profile and no live run owns it;
    # once the profile names it, it may hold backups: left alone.
    dry = cli.json("reap", "--region", "us-east-1")
    (row,) = [r for r in dry if r["resource"] == volumes()[0]["VolumeId"]]
    if point == "after:write_profile":
        assert not row["orphan"] and row["reason"] == "profile 'gone' names it", row
    else:
        assert row["orphan"] and row["action"] == "would delete", row
    assert len(volumes()) == 1  # a dry run deletes nothing

    assert cli("resume", run["id"], "--clean").stdout.split() == [run["id"], "aborted"]
    assert volumes() == []
    config = tmp_path / "config.toml"
    assert not config.exists() or "gone" not in config.read_text()
