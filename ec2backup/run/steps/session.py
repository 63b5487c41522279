"""The SSH session to the run's instance, its host key pinned before the first connection."""

from __future__ import annotations

import logging
import time

from ...adapters.hostkeys import parse_console_host_keys, write_known_hosts
from ...errors import (
    RemoteCommandError,
)
from ...ports import (
    CommandResult,
    RemoteShell,
)
from ..context import StepContext

log = logging.getLogger(__name__)
CONSOLE_KEYS_TIMEOUT = 120.0  # how long to look for host keys on the console before TOFU


# --- on the instance ---------------------------------------------------------------------


def remote(ctx: StepContext) -> RemoteShell:
    """An SSH session to the run's instance, host key pinned from the console when possible."""
    if ctx.shell is not None:
        return ctx.shell
    ensure_host_keys(ctx)
    deadline = time.monotonic() + ctx.profile.ssh_timeout
    ctx.shell = ctx.connector.connect(
        ctx.ssh_target(), deadline, trust_on_first_use=ctx.run.host_key_source == "tofu"
    )
    return ctx.shell


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


def _command_error(ctx: StepContext, what: str, result: CommandResult) -> RemoteCommandError:
    detail = result.stderr.strip() or f"exit status {result.exit_status}"
    return RemoteCommandError(
        f"{what}: {detail}",
        exit_status=result.exit_status,
        run_id=ctx.run.id,
        resources=ctx.resources(),
    )


def _sudo(ctx: StepContext) -> bool:
    return ctx.profile.ssh_user != "root"
