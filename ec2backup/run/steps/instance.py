"""The run's instance: launched once per attempt (ClientToken, tags in the launch call), waited
for until it runs with an address, and terminated with everything tagged with the run."""

from __future__ import annotations

import logging
from datetime import timedelta

from ...core.states import called, recorded
from ...core.tags import TAG_EXPIRES_AT, TAG_RUN_ID
from ...core.times import utcnow
from ...errors import (
    CapacityError,
    InvalidResourceStateError,
)
from ...faults import crash_point
from ...ports import (
    Instance,
    LaunchSpec,
)
from ..context import StepContext
from ..userdata import user_data
from .session import FROM_USER_DATA
from .visibility import LAUNCHED_AT, note_create, until_visible
from .volume import _volume, check_volume_usable

log = logging.getLogger(__name__)

# Instance states from which a launch step may proceed by waiting, not launching again.
_USABLE_INSTANCE = ("pending", "running")
# An instance in these no longer bills, and has released its volumes (or is releasing them).
_ENDING = ("shutting-down", "terminated")


# --- instance ----------------------------------------------------------------------------


def _run_instance(ctx: StepContext) -> Instance | None:
    """The run's recorded instance; NotFound right after its launch is EC2 catching up."""
    instance_id = ctx.run.instance_id
    assert instance_id is not None
    return until_visible(ctx, LAUNCHED_AT, lambda: ctx.ec2.get_instance(instance_id))


def _live_run_instance(ctx: StepContext) -> Instance | None:
    if ctx.run.instance_id:
        instance = _run_instance(ctx)
        if instance is not None and instance.state in _USABLE_INSTANCE:
            return instance
        return None
    # The process may have died between RunInstances and recording its result. (A launch
    # retried under the same client token returns that instance even while tags lag.)
    found = ctx.ec2.find_instances({TAG_RUN_ID: ctx.run.id}, _USABLE_INSTANCE)
    return found[0] if found else None


def _new_launch_attempt(ctx: StepContext, instance_type: str) -> None:
    """A new ClientToken, recorded before the call together with what it launches: a retried
    launch under the same token must send identical parameters."""
    run = ctx.run
    run.launch_attempt += 1
    run.launch_token = f"{run.id}-{run.launch_attempt}"
    expires = utcnow() + timedelta(minutes=ctx.profile.instance_lifetime_minutes)
    run.config = {
        **run.config,
        "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "instance_type": instance_type,
    }
    note_create(ctx, LAUNCHED_AT)
    ctx.recorder.save()


def _instance_types(ctx: StepContext) -> list[str]:
    """The types to try, in order: as checked when the run was created (offered in the zone),
    else the profile's."""
    recorded = ctx.run.config.get("instance_types")
    if recorded:
        return list(recorded)
    return [ctx.profile.instance_type, *ctx.profile.fallback_instance_types]


def _launch_spec(ctx: StepContext) -> LaunchSpec:
    run = ctx.run
    assert ctx.host_key is not None, "the run's host key is made before its launch"
    instance_type = run.config["instance_type"]
    # Each type its own architecture's image (a fallback may be arm64 where the first is not).
    image_id = dict(run.config.get("images") or {}).get(instance_type, run.config["image_id"])
    return LaunchSpec(
        image_id=image_id,
        instance_type=instance_type,
        availability_zone=ctx.profile.availability_zone,
        client_token=run.launch_token or "",
        tags={
            **ctx.tags(),
            "Name": f"ec2backup {run.profile} {run.id}",
            TAG_EXPIRES_AT: run.config["expires_at"],
        },
        user_data=user_data(
            ctx.public_key,
            ctx.host_key,
            ctx.profile.instance_idle_minutes,
            ctx.profile.instance_lifetime_minutes,
        ),
        security_group_ids=ctx.profile.security_group_ids,
        subnet_id=run.config.get("subnet_id") or ctx.profile.subnet_id,
    )


def _launch(ctx: StepContext) -> Instance:
    """RunInstances, falling back to the profile's other instance types while AWS has no
    capacity for one in the volume's zone (the zone itself is fixed by the volume)."""
    run = ctx.run
    types = _instance_types(ctx)
    while True:
        try:
            return ctx.ec2.run_instance(_launch_spec(ctx))
        except CapacityError as exc:
            tried = run.config["instance_type"]
            rest = types[types.index(tried) + 1 :] if tried in types else []
            if not rest:
                raise CapacityError(
                    f"no capacity in {ctx.profile.availability_zone} for "
                    f"{', '.join(types)}: {exc.message}",
                    run_id=run.id,
                    hint="add other types to fallback_instance_types in the profile, "
                    "or resume the run later",
                ) from exc
            log.warning("run %s: no capacity for %s; trying %s", run.id, tried, rest[0])
            run.warnings = [*run.warnings, f"no capacity for {tried}; launched {rest[0]}"]
            _new_launch_attempt(ctx, rest[0])


def ensure_instance_running(ctx: StepContext) -> str:
    run = ctx.run
    volume = _volume(ctx)
    check_volume_usable(ctx, volume)

    instance = _live_run_instance(ctx)
    if instance is None:
        gone = run.instance_id is not None
        if gone:  # the previous instance ended: start over with a new attempt
            ctx.close_host()
            ctx.known_hosts.unlink(missing_ok=True)
            run.instance_id = None
            run.ssh_address = None
        # The instance gets the run's host key in its user data: pinned from there.
        run.host_key_source = FROM_USER_DATA
        if gone or run.launch_token is None:
            _new_launch_attempt(ctx, _instance_types(ctx)[0])
        if "image_id" not in run.config:
            run.config = {**run.config, "image_id": ctx.ec2.resolve_image(ctx.profile.ami)}
            ctx.recorder.save()
        instance = _launch(ctx)
        crash_point(called("run_instance"))
    if run.instance_id != instance.id:
        run.instance_id = instance.id
        ctx.recorder.save()
        crash_point(recorded("instance_id"))  # before EC2 need show the new id
    instance = ctx.ec2.wait_instance_running(instance.id, ctx.profile.boot_timeout)
    # Never the private address: this host is not in the VPC.
    address = instance.public_ip
    if not address:
        raise InvalidResourceStateError(
            f"instance {instance.id} has no public IPv4 address",
            run_id=run.id,
            resources=ctx.resources(),
            hint="use a subnet (subnet_id) with a route to an internet gateway",
        )
    run.ssh_address = address
    ctx.recorder.save()
    return f"instance {instance.id} ({run.config['instance_type']}) at {address}"


def instance_alive(ctx: StepContext) -> bool:
    if ctx.run.instance_id is None:
        return False
    instance = _run_instance(ctx)
    return instance is not None and instance.state in _USABLE_INSTANCE


# --- terminate / snapshot ----------------------------------------------------------------


def ensure_terminated(ctx: StepContext) -> str:
    run = ctx.run
    ctx.close_host()

    def tagged() -> set[str] | None:
        return {i.id for i in ctx.ec2.find_instances({TAG_RUN_ID: run.id})} or None

    if run.instance_id:
        _run_instance(ctx)  # terminating an id EC2 does not show yet would do nothing
        ids = (tagged() or set()) | {run.instance_id}
    elif run.launch_token:
        # Launched (maybe) and not recorded: tags lag too, so look until the launch is old.
        ids = until_visible(ctx, LAUNCHED_AT, tagged) or set()
    else:
        ids = tagged() or set()
    states = {instance_id: ctx.ec2.terminate_instance(instance_id) for instance_id in sorted(ids)}
    for instance_id, state in states.items():
        # Billing stops at shutting-down and our volume is detached already: waiting for
        # `terminated` would only add seconds. Wait only if EC2's answer to the terminate
        # call is not even shutting-down (None: the instance is long gone).
        if state is not None and state not in _ENDING:
            ctx.ec2.wait_instance_terminated(instance_id, ctx.profile.boot_timeout)
    return "terminated " + (", ".join(sorted(ids)) or "nothing")
