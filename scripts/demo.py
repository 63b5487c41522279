"""`make demo`: the main job on the local cloud, start to finish, showing each command.

Starts the local cloud in .demo/cloud, creates and formats a volume (`ec2backup init`), backs
up a sample directory (`ec2backup run`), changes a file and backs up again, prints the run
history and the last run's timeline, and always stops the local cloud at the end.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", file=sys.stderr, flush=True)


def ec2backup(*args: str, env: dict[str, str]) -> str:
    print(f"$ ec2backup {shlex.join(args)}", file=sys.stderr, flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "ec2backup", *args], env=env, stdout=subprocess.PIPE, text=True
    )
    sys.stdout.write(result.stdout)
    sys.stdout.flush()
    if result.returncode != 0:
        raise SystemExit(f"demo: `ec2backup {shlex.join(args)}` exited {result.returncode}")
    return result.stdout.strip()


def make_sample(source: Path) -> None:
    (source / "documents" / "letters").mkdir(parents=True)
    (source / "documents" / "letters" / "to-grandma.txt").write_text("Dear grandma,\n")
    (source / "documents" / "taxes-2026.csv").write_text("month,amount\n" * 200)
    (source / "photos").mkdir()
    (source / "photos" / "holiday.raw").write_bytes(os.urandom(2 * 1024 * 1024))
    (source / "README").write_text("Files that matter.\n")


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("demo: the local cloud runs real sshd and loop devices: run as root")
    from ec2backup.sandbox import Sandbox

    shutil.rmtree(DEMO, ignore_errors=True)
    source = DEMO / "my-files"
    source.mkdir(parents=True)
    make_sample(source)

    step("start the local cloud (moto's EC2 server, sshd instances, loop-device volumes)")
    sandbox = Sandbox.start(DEMO / "cloud")
    try:
        env = {
            **os.environ,
            **sandbox.env,
            "EC2BACKUP_CONFIG": str(DEMO / "config.toml"),
            "EC2BACKUP_DB": f"sqlite:///{DEMO / 'ec2backup.db'}",
            "EC2BACKUP_DATA_DIR": str(DEMO / "data"),
        }
        for key in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
            print(f"  {key}={sandbox.env[key]}", file=sys.stderr)

        step("create and format the backup volume (once)")
        ec2backup(
            "init",
            "--profile",
            "demo",
            "--az",
            "us-east-1a",
            "--size",
            "1",
            "--source",
            str(source),
            env=env,
        )
        print((DEMO / "config.toml").read_text(), file=sys.stderr)

        step("back up")
        ec2backup("run", "--profile", "demo", env=env)

        step("change a file and back up again: rsync sends only the change")
        with (source / "photos" / "holiday.raw").open("r+b") as f:
            f.write(b"edited")
        (source / "documents" / "new-note.txt").write_text("a new file\n")
        run_id = ec2backup("run", "--profile", "demo", env=env)

        step("run history")
        ec2backup("runs", env=env)

        step(f"timeline of run {run_id}")
        ec2backup("show", run_id, env=env)
    finally:
        step("stop the local cloud")
        sandbox.stop()
    print("\ndemo: done", file=sys.stderr)


if __name__ == "__main__":
    main()
