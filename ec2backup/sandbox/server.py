"""The sandbox's long-lived server process (started detached by ``Sandbox.start``):

    python -m ec2backup.sandbox.server --dir D [--region us-east-1] [--iam]

Serves moto's EC2/SSM/IAM API on 127.0.0.1 with the hooks of ``cloud.py`` installed, writes
``D/state.json`` once it answers, and on SIGTERM/SIGINT terminates every instance, releases
every loop device and exits. Its fault and timing settings are in ``D/settings.json``
(re-read when it changes). With ``--iam``, every request must be signed by an IAM user's key
and is checked against that user's policies; ``state.json`` then holds an administrator's key.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .layout import Layout, write_json

log = logging.getLogger("ec2backup.sandbox")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ec2backup.sandbox.server")
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--iam", action="store_true", help="enforce IAM (moto checks actions)")
    args = parser.parse_args(argv)

    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    layout = Layout(args.dir.resolve())
    layout.make_dirs()
    layout.server_pid.write_text(f"{os.getpid()}\n")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    # An account as a new one is on AWS: only what the sandbox seeds. moto otherwise adds
    # ~200 public AMIs whose snapshots it lists as the caller's own (DescribeSnapshots with
    # OwnerIds=self took ~80 ms instead of ~5 ms).
    os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
    # moto is imported here, in the server process only.
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    from .cloud import LocalCloud
    from .reconcile import RECONCILE_INTERVAL

    cloud = LocalCloud(layout, args.region)
    log.info("settings: %s", cloud.refresh_settings())
    cloud.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        ami_ids = cloud.seed()
        ami_id = ami_ids["x86_64"]
        state: dict[str, object] = {"iam": False}
        if args.iam:
            # After the seeding, which goes to moto's backends directly, never through IAM.
            access_key_id, secret_access_key = cloud.enable_iam()
            state = {
                "iam": True,
                "access_key_id": access_key_id,
                "secret_access_key": secret_access_key,
            }
        host, port = server.get_host_and_port()
        old_umask = os.umask(0o077)  # it may hold an administrator's secret key
        try:
            write_json(
                layout.state,
                {
                    **state,
                    "pid": os.getpid(),
                    "endpoint_url": f"http://{host}:{port}",
                    "region": args.region,
                    "default_ami_id": ami_id,
                    "ami_ids": ami_ids,
                },
            )
        finally:
            os.umask(old_umask)
        log.info(
            "ready on http://%s:%s, default AMI %s%s",
            host,
            port,
            ami_id,
            ", IAM enforced" if args.iam else "",
        )
        while not stop.wait(RECONCILE_INTERVAL):
            try:
                cloud.reconcile()
            except Exception:
                log.exception("reconcile failed")
    finally:
        layout.state.unlink(missing_ok=True)
        server.stop()
        left = cloud.shutdown()
        if left:
            log.error("loop devices still busy: %s", " ".join(left))
        layout.server_pid.unlink(missing_ok=True)
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
