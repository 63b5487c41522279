"""The SSH session to the run's instance: the run's own host key pinned before the first
connection, the console's keys as a cross-check, and the dead-man's switch kept armed while
the session is used.

No key is ever accepted that was not pinned: the instance got its host key from this run (the
user data's ``ssh_keys``), so the key is known before the instance exists, and there is nothing
to wait for on the console. When cloud-init has printed the instance's keys there (at the end
of its boot), they must include the pinned one: otherwise the instance did not take the key it
was given, and the run stops (``HostKeyError``, not resumable).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ...errors import Ec2BackupError, HostKeyError
from ...ports import InstanceHost
from ..context import StepContext
from ..keeper import IdleKeeper

log = logging.getLogger(__name__)

# The run's key pinned from its own user data; earlier versions pinned from the console or on
# first use, and a run of theirs that is resumed keeps the pin it made.
FROM_USER_DATA = "user-data"
_LEGACY_SOURCES = ("console", "tofu")


# --- on the instance ---------------------------------------------------------------------


def connect(ctx: StepContext) -> InstanceHost:
    """The session to the run's instance, its host key pinned and cross-checked; a new
    session re-arms the instance's idle timer and keeps it armed from then on."""
    check_console_keys(ctx)
    if ctx.host is not None:
        return ctx.host
    pin_host_key(ctx)
    deadline = time.monotonic() + ctx.profile.ssh_timeout
    target = ctx.ssh_target()
    host = ctx.connector.connect(target, deadline)
    try:
        with attributed(ctx):
            host.arm_idle_timer(ctx.profile.instance_idle_minutes * 60)
    except BaseException:
        host.close()
        raise
    ctx.host = host
    if ctx.keeper is None:
        ctx.keeper = IdleKeeper(ctx.connector, ctx.profile.instance_idle_minutes)
    ctx.keeper.watch(target)
    return host


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


def _pinned_key(ctx: StepContext) -> tuple[str, str]:
    assert ctx.host_key is not None
    keytype, blob = ctx.host_key.public.split()[:2]
    return keytype, blob


def _legacy(ctx: StepContext) -> bool:
    return ctx.run.host_key_source in _LEGACY_SOURCES


def pin_host_key(ctx: StepContext) -> None:
    """known_hosts for the instance's address holds the run's host key, and nothing else."""
    run = ctx.run
    assert run.ssh_address is not None
    pinned = ctx.known_hosts.exists() and ctx.known_hosts.stat().st_size > 0
    if _legacy(ctx) and pinned:
        return
    if _legacy(ctx) or ctx.host_key is None:
        raise HostKeyError(
            f"no host key is pinned for instance {run.instance_id}",
            run_id=run.id,
            resources=ctx.resources(),
            hint=f"end it with `ec2backup resume {run.id} --clean`",
        )
    ctx.connector.pin_host_keys(ctx.ssh_target(), [_pinned_key(ctx)])


def check_console_keys(ctx: StepContext) -> None:
    """Once per instance, when its console shows host keys: the pinned key must be there."""
    run = ctx.run
    if _legacy(ctx) or ctx.host_key is None or run.instance_id is None:
        return
    if run.config.get("console_checked") == run.instance_id:
        return
    keys = ctx.ec2.console_host_keys(run.instance_id)
    if not keys:
        return  # not printed yet (cloud-init prints them at the end of boot), or never
    if _pinned_key(ctx) not in keys:
        raise HostKeyError(
            f"the console of instance {run.instance_id} shows host keys "
            f"({', '.join(k for k, _ in keys)}) that do not match the key this run gave it: "
            "not the instance this run launched, or an image that ignores cloud-init's ssh_keys",
            run_id=run.id,
            resources=ctx.resources(),
        )
    log.info("run %s: the console of %s agrees with the pinned host key", run.id, run.instance_id)
    run.config = {**run.config, "console_checked": run.instance_id}
    ctx.recorder.save()
