"""5. Reap at scale: N orphaned instances (tagged as ec2backup's, owned by no run) on the local
cloud, reaped by ``ec2backup reap --yes``; counts the EC2 API calls the reaping process makes
(botocore's ``_make_api_call``, patched in that process only) and its wall time.

Each local-cloud instance is a real sshd in its own namespaces, so 1,000 of them take a while
to launch (not timed) and a few GB of memory; ``--quick`` uses 100.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .common import Figure, Section, cli_env

TARGET_CALLS = 10
TARGET_SECONDS = 10.0

COUNTING_CHILD = r"""
import collections, json, sys, time
import botocore.client
calls = collections.Counter()
call_seconds = collections.Counter()
spans = []  # (operation, wall-clock start, wall-clock end)
original = botocore.client.BaseClient._make_api_call
def counting(self, operation, params):
    name = f"{self.meta.service_model.service_name}:{operation}"
    calls[name] += 1
    t0, w0 = time.perf_counter(), time.time()
    try:
        return original(self, operation, params)
    finally:
        call_seconds[name] += time.perf_counter() - t0
        spans.append((name, w0, time.time()))
botocore.client.BaseClient._make_api_call = counting
sys.argv = ["ec2backup", *sys.argv[1:]]
from ec2backup.cli.main import run_cli
start = time.perf_counter()
w_start = time.time()
code = run_cli()
print(json.dumps({"seconds": time.perf_counter() - start, "calls": calls, "exit": code,
                  "call_seconds": call_seconds, "spans": spans, "start": w_start}),
      file=sys.stderr)
"""

_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ (.*)$")


def _stopped_times(log: Path, since: float, until: float) -> list[float]:
    """Wall-clock times of the sandbox's "machine stopped" lines between two times."""
    times = []
    for line in log.read_text(errors="replace").splitlines():
        m = _LOG_LINE.match(line)
        if not m or not m.group(2).endswith(": machine stopped"):
            continue
        t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time
        if since <= t <= until:
            times.append(t)
    return times


def _launch_orphans(env: dict[str, str], ami: str, n: int) -> list[str]:
    import boto3

    ec2 = boto3.client("ec2", region_name=env["AWS_DEFAULT_REGION"])
    ids: list[str] = []
    batch = 100
    for i in range(0, n, batch):
        count = min(batch, n - i)
        resp = ec2.run_instances(
            ImageId=ami,
            InstanceType="t3.micro",
            MinCount=count,
            MaxCount=count,
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [
                        {"Key": "ec2backup:managed", "Value": "true"},
                        {"Key": "ec2backup:run-id", "Value": f"orphan-{i // batch}"},
                        {"Key": "ec2backup:profile", "Value": "bench"},
                        {"Key": "ec2backup:kind", "Value": "backup"},
                    ],
                }
            ],
        )
        ids += [inst["InstanceId"] for inst in resp["Instances"]]
    return ids


def run(quick: bool = False) -> Section:
    n = 100 if quick else 1000
    section = Section(key="reap", title="5. Reap at scale", command="python -m benchmarks reap")
    if os.geteuid() != 0:
        section.notes.append("Not run: the local cloud needs root.")
        return section
    from ec2backup.sandbox import Sandbox

    with tempfile.TemporaryDirectory(prefix="ec2backup-bench-reap-") as tmp:
        root = Path(tmp)
        sandbox = Sandbox.start(root / "cloud")
        try:
            env = cli_env(root, sandbox.env)
            saved = dict(os.environ)
            os.environ.update(sandbox.env)
            try:
                t0 = time.perf_counter()
                ids = _launch_orphans(env, sandbox.default_ami_id, n)
                launch_s = time.perf_counter() - t0
            finally:
                os.environ.clear()
                os.environ.update(saved)
            done = subprocess.run(
                [sys.executable, "-c", COUNTING_CHILD, "reap", "--yes", "--json",
                 "--region", sandbox.region],
                env=env, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            tail = done.stderr.strip().splitlines()
            result = json.loads(tail[-1]) if tail and tail[-1].startswith("{") else None
            if result is None or result["exit"] != 0:
                raise RuntimeError(f"reap failed: {done.stderr[-3000:]}")
            stopped = _stopped_times(
                sandbox.layout.server_log, result["start"], result["start"] + result["seconds"] + 1
            )
            import boto3

            ec2 = boto3.client(
                "ec2",
                region_name=sandbox.region,
                endpoint_url=sandbox.endpoint_url,
                aws_access_key_id=sandbox.env["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=sandbox.env["AWS_SECRET_ACCESS_KEY"],
            )
            left = 0
            for page in ec2.get_paginator("describe_instances").paginate(InstanceIds=ids[:1000]):
                for r in page["Reservations"]:
                    left += sum(
                        i["State"]["Name"] not in ("shutting-down", "terminated")
                        for i in r["Instances"]
                    )
        finally:
            sandbox.stop()
    calls = result["calls"]
    ec2_calls = sum(v for k, v in calls.items() if k.startswith("ec2:"))
    section.figures += [
        Figure(f"EC2 API calls to reap {n:,} orphans", ec2_calls, "calls",
               TARGET_CALLS if n >= 1000 else None,
               detail=", ".join(f"{k} {v}" for k, v in sorted(calls.items()))),
        Figure(f"`ec2backup reap --yes` wall time, {n:,} orphans", result["seconds"], "s",
               TARGET_SECONDS if n >= 1000 else None, detail="in-process, after interpreter start"),
        Figure("instances still not terminating afterwards", left, "instances", 0),
    ]  # fmt: skip
    section.tables.append(_breakdown(result, stopped))
    section.notes.append(
        f"{n:,} instances launched with the run tags of runs the database does not know "
        f"(launch took {launch_s:.0f} s, not counted). Targets apply to 1,000 orphans"
        + ("; this was a --quick run with 100, so they are shown as reported only." if quick
           else ".")
    )  # fmt: skip
    return section


def _breakdown(result: dict[str, Any], stopped: list[float]) -> str:
    """Where the reap's wall time went: each EC2 operation (summed), the rest in-process, and
    inside TerminateInstances the sandbox's stopping of the machines (from its log)."""
    total = result["seconds"]
    rows = ["| where | seconds | share |", "|---|---|---|"]
    spans = result["spans"]
    first_call = min((w0 for _, w0, _ in spans), default=result["start"]) - result["start"]
    rows.append(
        f"| before the first EC2 call (imports, config, database, boto3 client) "
        f"| {first_call:.2f} | {first_call / total:.0%} |"
    )
    for name, secs in sorted(result["call_seconds"].items(), key=lambda kv: -kv[1]):
        rows.append(
            f"| {name} ({result['calls'][name]} call(s), round trips) | {secs:.2f} "
            f"| {secs / total:.0%} |"
        )
    in_calls = sum(result["call_seconds"].values())
    rest = total - first_call - in_calls
    rows.append(f"| ec2backup between calls (judging, database, output) | {rest:.2f} "
                f"| {rest / total:.0%} |")  # fmt: skip
    terminate = [(w0, w1) for name, w0, w1 in spans if name == "ec2:TerminateInstances"]
    if terminate and stopped:
        w0, w1 = min(a for a, _ in terminate), max(b for _, b in terminate)
        inside = [t for t in stopped if w0 <= t <= w1 + 0.01]
        if inside:
            before, kill, after = inside[0] - w0, inside[-1] - inside[0], w1 - inside[-1]
            per = kill / max(1, len(inside) - 1) * 1000
            rows += [
                f"| of TerminateInstances: request, moto's own terminate, until the first "
                f"machine stops | {before:.2f} | {before / total:.0%} |",
                f"| of TerminateInstances: the sandbox stopping {len(inside):,} machines "
                f"(sshd namespaces, loop devices; {per:.1f} ms each, from its log) "
                f"| {kill:.2f} | {kill / total:.0%} |",
                f"| of TerminateInstances: after the last machine stopped (response) "
                f"| {after:.2f} | {after / total:.0%} |",
            ]
    return (
        "Where the reap's wall time went (one run; timers in the reaping process, the "
        "sandbox's server log for inside TerminateInstances):\n\n" + "\n".join(rows)
    )
