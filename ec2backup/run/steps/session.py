"""The SSH session to the run's instance, its host key pinned before the first connection."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ...adapters.hostkeys import parse_console_host_keys, write_known_hosts
from ...errors import Ec2BackupError
from ...ports import InstanceHost
from ..context import StepContext

log = logging.getLogger(__name__)
CONSOLE_KEYS_TIMEOUT = 120.0  # how long to look for host keys on the console before TOFU


# --- on the instance ---------------------------------------------------------------------


def connect(ctx: StepContext) -> InstanceHost:
    """The session to the run's instance, host key pinned from the console when possible."""
    if ctx.host is not None:
        return ctx.host
    ensure_host_keys(ctx)
    deadline = time.monotonic() + ctx.profile.ssh_timeout
    ctx.host = ctx.connector.connect(
        ctx.ssh_target(), deadline, trust_on_first_use=ctx.run.host_key_source == "tofu"
    )
    return ctx.host


@contextmanager
def attributed(ctx: StepContext) -> Iterator[None]:
    """Errors raised inside (by the instance or rsync, which know only the host) name the run
    and its resources."""
    try:
        yield
    except Ec2BackupError as exc:
        exc.run_id = exc.run_id or ctx.run.id
        exc.resources.update(ctx.resources())
        raise


def ensure_host_keys(ctx: StepContext) -> None:
    if ctx.known_hosts.exists() and ctx.known_hosts.stat().st_size > 0:
        return
    assert ctx.run.instance_id is not None and ctx.run.ssh_address is not None
    deadline = time.monotonic() + min(CONSOLE_KEYS_TIMEOUT, ctx.profile.ssh_timeout)
    while True:
        keys = parse_console_host_keys(ctx.ec2.get_console_output(ctx.run.instance_id))
        if keys:
            write_known_hosts(ctx.known_hosts, ctx.run.ssh_address, 22, keys)
            ctx.run.host_key_source = "console"
            ctx.recorder.save()
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    log.warning(
        "instance %s printed no SSH host keys on its console; trusting the first key it "
        "presents and pinning it for the rest of the run",
        ctx.run.instance_id,
    )
    ctx.run.host_key_source = "tofu"
    ctx.run.warnings = [*ctx.run.warnings, "host key trusted on first use (none on console)"]
    ctx.recorder.save()
