"""The side-effecting steps of a run. Each ``ensure_*`` function follows one shape:

1. observe the real resource (by its recorded id, else by the run's tags);
2. check it is in a valid origin state for this step, else raise;
3. if the world is already where the step leads, return (a resumed step is a no-op);
4. act, recording any new resource id before going on;
5. wait until the world is observably where the step leads.

They receive a ``StepContext`` that carries the run, its recorder (to commit resource ids
the moment they are known) and the adapters behind the ``ports`` interfaces.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from .config import Profile
from .errors import (
    CapacityError,
    DeviceNotFoundError,
    Ec2BackupError,
    InsufficientSpaceError,
    InvalidResourceStateError,
    RemoteCommandError,
    ResourceNotFoundError,
    SyncError,
    UnformattedVolumeError,
    WaitTimeoutError,
)
from .faults import crash_point
from .hostkeys import parse_console_host_keys, write_known_hosts
from .models import Run, utcnow
from .ports import (
    TAG_EXPIRES_AT,
    TAG_KIND,
    TAG_MANAGED,
    TAG_PROFILE,
    TAG_ROLE,
    TAG_RUN_ID,
    CommandResult,
    Ec2,
    Instance,
    LaunchSpec,
    RemoteConnector,
    RemoteShell,
    SshTarget,
    Syncer,
    Volume,
)
from .store import RunRecorder

log = logging.getLogger(__name__)

DEVICE_NAME = "/dev/sdf"  # what we ask EC2 for; the instance may show it under another name
NITRO_DEVICE = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume}"
CONSOLE_KEYS_TIMEOUT = 120.0  # how long to look for host keys on the console before TOFU
DEVICE_TIMEOUT = 60.0
POLL = 0.25

# Instance states from which a launch step may proceed by waiting, not launching again.
_USABLE_INSTANCE = ("pending", "running")
# An instance in these no longer bills, and has released its volumes (or is releasing them).
_ENDING = ("shutting-down", "terminated")


@dataclass
class StepContext:
    run: Run
    recorder: RunRecorder
    profile: Profile
    ec2: Ec2
    connector: RemoteConnector
    syncer: Syncer
    run_dir: Path
    key_path: Path
    public_key: str
    progress: Callable[[str], None] = lambda _line: None
    on_state: Callable[[str], None] = lambda _state: None
    shell: RemoteShell | None = field(default=None, repr=False)

    @property
    def known_hosts(self) -> Path:
        return self.run_dir / "known_hosts"

    def ssh_target(self) -> SshTarget:
        if not self.run.ssh_address:
            raise InvalidResourceStateError(
                "the run has no SSH address recorded",
                run_id=self.run.id,
                resources=self.resources(),
            )
        return SshTarget(
            host=self.run.ssh_address,
            user=self.profile.ssh_user,
            key_path=self.key_path,
            known_hosts_path=self.known_hosts,
        )

    def tags(self) -> dict[str, str]:
        return {
            **self.profile.tags,
            TAG_MANAGED: "true",
            TAG_RUN_ID: self.run.id,
            TAG_PROFILE: self.run.profile,
            TAG_KIND: self.run.kind,
        }

    def close_shell(self) -> None:
        if self.shell is not None:
            self.shell.close()
            self.shell = None

    def resources(self) -> dict[str, str]:
        ids = {"instance": self.run.instance_id, "volume": self.run.volume_id}
        return {k: v for k, v in ids.items() if v}


# --- volume ------------------------------------------------------------------------------


def _volume(ctx: StepContext) -> Volume:
    assert ctx.run.volume_id is not None
    volume = ctx.ec2.get_volume(ctx.run.volume_id)
    if volume is None:
        raise ResourceNotFoundError(
            f"volume {ctx.run.volume_id} does not exist in {ctx.profile.region}",
            run_id=ctx.run.id,
            hint="check volume_id and region in the profile",
        )
    return volume


def check_volume_usable(ctx: StepContext, volume: Volume) -> None:
    """The volume must be in the profile's AZ and attached to nothing but this run's instance."""
    if volume.availability_zone != ctx.profile.availability_zone:
        raise InvalidResourceStateError(
            f"volume {volume.id} is in {volume.availability_zone}, "
            f"not in the profile's {ctx.profile.availability_zone}",
            run_id=ctx.run.id,
            hint="set availability_zone in the profile to the volume's zone",
        )
    foreign = [a.instance_id for a in volume.attachments if a.instance_id != ctx.run.instance_id]
    if foreign:
        raise InvalidResourceStateError(
            f"volume {volume.id} is attached to instance {foreign[0]}, which is not this run's",
            run_id=ctx.run.id,
            hint="detach it there first (or reap it if it is a leftover of ec2backup)",
        )
    if volume.state not in ("available", "in-use"):
        raise InvalidResourceStateError(f"volume {volume.id} is {volume.state}", run_id=ctx.run.id)


def _ensure_tagged_volume(ctx: StepContext, role: str, snapshot_id: str | None = None) -> str:
    """This run's volume of ``role``: the recorded one, else the one tagged with the run's id
    (a crash between CreateVolume and recording it), else a new one. Waits until available."""
    run = ctx.run
    if run.volume_id is None:
        found = ctx.ec2.find_volumes({TAG_RUN_ID: run.id, TAG_ROLE: role})
        if found:
            run.volume_id = found[0].id
        else:
            volume = ctx.ec2.create_volume(
                ctx.profile.availability_zone,
                int(run.config["size_gib"]),
                {**ctx.tags(), TAG_ROLE: role, "Name": f"ec2backup {role} {run.profile}"},
                client_token=f"{run.id}-{role}",
                snapshot_id=snapshot_id,
            )
            crash_point("called:create_volume")
            run.volume_id = volume.id
        ctx.recorder.save()
    ctx.ec2.wait_volume_available(run.volume_id, ctx.profile.attach_timeout)
    return run.volume_id


def ensure_volume_created(ctx: StepContext) -> str:
    return f"volume {_ensure_tagged_volume(ctx, 'data')}"


# --- instance ----------------------------------------------------------------------------


def user_data(public_key: str, lifetime_minutes: int) -> str:
    # cloud-init installs the run's key for the AMI's default user (ubuntu): no EC2 key pair.
    # `restrict`: the key runs commands and nothing else (no port, agent or X11 forwarding, no
    # pty, no ~/.ssh/rc), so a copy of it cannot turn the instance into a way into the VPC.
    # The shutdown timer is the dead-man's switch: with InstanceInitiatedShutdownBehavior=
    # terminate, a power-off ends the instance even if nobody ever comes back for it.
    return (
        "#cloud-config\n"
        f"ssh_authorized_keys:\n  - restrict {public_key}\n"
        "bootcmd:\n"
        f'  - [shutdown, -P, "+{lifetime_minutes}", "ec2backup: instance lifetime reached"]\n'
    )


def _live_run_instance(ctx: StepContext) -> Instance | None:
    if ctx.run.instance_id:
        instance = ctx.ec2.get_instance(ctx.run.instance_id)
        if instance is not None and instance.state in _USABLE_INSTANCE:
            return instance
        return None
    # The process may have died between RunInstances and recording its result.
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
    ctx.recorder.save()


def _launch_spec(ctx: StepContext) -> LaunchSpec:
    run = ctx.run
    return LaunchSpec(
        image_id=run.config["image_id"],
        instance_type=run.config["instance_type"],
        availability_zone=ctx.profile.availability_zone,
        client_token=run.launch_token or "",
        tags={
            **ctx.tags(),
            "Name": f"ec2backup {run.profile} {run.id}",
            TAG_EXPIRES_AT: run.config["expires_at"],
        },
        user_data=user_data(ctx.public_key, ctx.profile.instance_lifetime_minutes),
        security_group_ids=ctx.profile.security_group_ids,
        subnet_id=ctx.profile.subnet_id,
    )


def _launch(ctx: StepContext) -> Instance:
    """RunInstances, falling back to the profile's other instance types while AWS has no
    capacity for one in the volume's zone (the zone itself is fixed by the volume)."""
    run = ctx.run
    types = [ctx.profile.instance_type, *ctx.profile.fallback_instance_types]
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
            ctx.close_shell()
            ctx.known_hosts.unlink(missing_ok=True)
            run.instance_id = None
            run.ssh_address = None
        if gone or run.launch_token is None:
            _new_launch_attempt(ctx, ctx.profile.instance_type)
        if "image_id" not in run.config:
            run.config = {**run.config, "image_id": ctx.ec2.resolve_image(ctx.profile.ami)}
            ctx.recorder.save()
        instance = _launch(ctx)
        crash_point("called:run_instance")
    if run.instance_id != instance.id:
        run.instance_id = instance.id
        ctx.recorder.save()
    instance = ctx.ec2.wait_instance_running(instance.id, ctx.profile.boot_timeout)
    address = instance.public_ip or instance.private_ip
    if not address:
        raise InvalidResourceStateError(
            f"instance {instance.id} has no IP address", run_id=run.id, resources=ctx.resources()
        )
    run.ssh_address = address
    ctx.recorder.save()
    return f"instance {instance.id} ({run.config['instance_type']}) at {address}"


def instance_alive(ctx: StepContext) -> bool:
    if ctx.run.instance_id is None:
        return False
    instance = ctx.ec2.get_instance(ctx.run.instance_id)
    return instance is not None and instance.state in _USABLE_INSTANCE


# --- attach / detach ---------------------------------------------------------------------


def ensure_attached(ctx: StepContext) -> str:
    run = ctx.run
    assert run.instance_id is not None
    volume = _volume(ctx)
    check_volume_usable(ctx, volume)
    attachment = volume.attachment_to(run.instance_id)
    if attachment is None:
        ctx.ec2.attach_volume(volume.id, run.instance_id, DEVICE_NAME)
    elif attachment.state in ("detaching", "detached"):
        raise InvalidResourceStateError(
            f"volume {volume.id} is {attachment.state} from this run's instance",
            run_id=run.id,
            hint="resume again once the detach has finished",
            resources=ctx.resources(),
        )
    ctx.ec2.wait_volume_attached(volume.id, run.instance_id, ctx.profile.attach_timeout)
    return f"volume {volume.id} attached to {run.instance_id}"


def ensure_detached(ctx: StepContext, *, force_after: float | None = None) -> str:
    """Detach the volume from the run's instance. With ``force_after``, a detach that has not
    finished in that many seconds is forced (force-clean only: it risks the filesystem)."""
    run = ctx.run
    volume = _volume(ctx)
    attachment = volume.attachment_to(run.instance_id) if run.instance_id else None
    if attachment is None and volume.state == "available":
        return f"volume {volume.id} available"
    if attachment is None and force_after is None:
        check_volume_usable(ctx, volume)  # attached elsewhere: not ours to detach
    if attachment is not None and attachment.state in ("attaching", "attached", "busy"):
        assert run.instance_id is not None
        ctx.ec2.detach_volume(volume.id, run.instance_id)
    if force_after is None or attachment is None:
        ctx.ec2.wait_volume_available(volume.id, ctx.profile.detach_timeout)
        return f"volume {volume.id} available"
    try:
        ctx.ec2.wait_volume_available(volume.id, force_after)
        return f"volume {volume.id} available"
    except WaitTimeoutError:
        assert run.instance_id is not None
        message = (
            f"volume {volume.id} did not detach within {force_after:.0f}s; forced the detach "
            "(the filesystem may need a check)"
        )
        log.warning("run %s: %s", run.id, message)
        run.warnings = [*run.warnings, message]
        ctx.recorder.save()
        ctx.ec2.detach_volume(volume.id, run.instance_id, force=True)
        ctx.ec2.wait_volume_available(volume.id, ctx.profile.detach_timeout)
        return message


# --- terminate / snapshot ----------------------------------------------------------------


def ensure_terminated(ctx: StepContext) -> str:
    run = ctx.run
    ctx.close_shell()
    ids = {i.id for i in ctx.ec2.find_instances({TAG_RUN_ID: run.id})}
    if run.instance_id:
        ids.add(run.instance_id)
    states = {instance_id: ctx.ec2.terminate_instance(instance_id) for instance_id in sorted(ids)}
    for instance_id, state in states.items():
        # Billing stops at shutting-down and our volume is detached already: waiting for
        # `terminated` would only add seconds. Wait only if EC2's answer to the terminate
        # call is not even shutting-down (None: the instance is long gone).
        if state is not None and state not in _ENDING:
            ctx.ec2.wait_instance_terminated(instance_id, ctx.profile.boot_timeout)
    return "terminated " + (", ".join(sorted(ids)) or "nothing")


def ensure_snapshot(ctx: StepContext) -> str:
    run = ctx.run
    if not ctx.profile.snapshot:
        return "snapshots are off for this profile"
    assert run.volume_id is not None
    if run.snapshot_id is None:
        existing = ctx.ec2.find_snapshots({TAG_RUN_ID: run.id})
        if existing:
            run.snapshot_id = existing[0].id
        else:
            snapshot = ctx.ec2.create_snapshot(
                run.volume_id,
                f"ec2backup {run.profile} run {run.id}",
                {**ctx.tags(), "Name": f"ec2backup {run.profile} {run.id}"},
            )
            crash_point("called:create_snapshot")
            run.snapshot_id = snapshot.id
        ctx.recorder.save()
    # Not waited on: the snapshot captures the volume as of now and completes in the background.
    return f"snapshot {run.snapshot_id}"


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


def try_unmount(ctx: StepContext, deadline_seconds: float) -> str:
    """Force-clean's unmount: only if the instance is alive and answers SSH in time with the
    host key already pinned for this run. Never blocks the cleanup for long."""
    if not instance_alive(ctx) or not ctx.run.ssh_address:
        return "instance not running: nothing to unmount"
    if not (ctx.known_hosts.exists() and ctx.known_hosts.stat().st_size > 0):
        return "no pinned host key: did not log in to unmount"
    try:
        if ctx.shell is None:
            ctx.shell = ctx.connector.connect(
                ctx.ssh_target(), time.monotonic() + deadline_seconds, trust_on_first_use=False
            )
        return ensure_unmounted(ctx)
    except Ec2BackupError as exc:
        ctx.close_shell()
        message = f"could not unmount ({exc.message}); detaching anyway"
        ctx.run.warnings = [*ctx.run.warnings, message]
        ctx.recorder.save()
        return message


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


def find_device(ctx: StepContext, shell: RemoteShell) -> str:
    """The attached volume's block device as the instance shows it, waiting for it to appear."""
    assert ctx.run.volume_id is not None
    candidates = [
        NITRO_DEVICE.format(volume=ctx.run.volume_id.replace("-", "")),
        DEVICE_NAME.replace("/dev/sd", "/dev/xvd"),
        DEVICE_NAME,
    ]
    probe = " || ".join(f"readlink -e {shlex.quote(c)}" for c in candidates)
    deadline = time.monotonic() + DEVICE_TIMEOUT
    while True:
        result = shell.run(f"{probe} || true", check=False)
        device = result.stdout.strip().splitlines()
        if device and device[0].startswith("/dev/"):
            return device[0]
        if time.monotonic() >= deadline:
            raise DeviceNotFoundError(
                f"volume {ctx.run.volume_id} did not appear on the instance "
                f"(looked for {', '.join(candidates)})",
                run_id=ctx.run.id,
                resources=ctx.resources(),
            )
        time.sleep(POLL)


def _findmnt(mount_point: str) -> str:
    """Prints what is mounted on ``mount_point``; exits non-zero if nothing is."""
    return f"findmnt -n -o SOURCE --mountpoint {shlex.quote(mount_point)}"


def _mounted_source(shell: RemoteShell, mount_point: str) -> str | None:
    result = shell.run(_findmnt(mount_point), check=False)
    if result.exit_status != 0:
        return None
    return result.stdout.strip() or None


def _filesystem_type(ctx: StepContext, shell: RemoteShell, device: str) -> str:
    """What the device holds: a filesystem type ("ext4"), "partition table (gpt)", or "" for
    nothing at all, the only answer that lets ``init`` format it.

    ``-p`` reads the device itself, never blkid's cache: a cache entry (trusted for up to 200 s)
    can describe whatever last had that device name, and the format decision must not rest on
    it. blkid exits 2 when it finds no signature; any other failure (an ambivalent probe, an
    I/O error) is an error, never "empty".
    """
    result = shell.run(f"blkid -p -o export {shlex.quote(device)}", sudo=_sudo(ctx), check=False)
    if result.exit_status == 2:
        return ""
    fields = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    if result.exit_status != 0 or not (fields.get("TYPE") or fields.get("PTTYPE")):
        raise RemoteCommandError(
            f"could not tell what {device} holds (blkid -p exited {result.exit_status}: "
            f"{result.stderr.strip() or result.stdout.strip() or 'no output'}); not touching it",
            exit_status=result.exit_status,
            run_id=ctx.run.id,
            resources=ctx.resources(),
        )
    if fields.get("TYPE"):
        return fields["TYPE"]
    return f"partition table ({fields['PTTYPE']})"


def ensure_formatted(ctx: StepContext) -> str:
    shell = remote(ctx)
    device = find_device(ctx, shell)
    existing = _filesystem_type(ctx, shell, device)
    if existing:
        return f"{device} already has a {existing} filesystem; left as it is"
    shell.run(f"mkfs.ext4 -q -L ec2backup {shlex.quote(device)}", sudo=_sudo(ctx))
    return f"made ext4 on {device}"


def ensure_mounted(ctx: StepContext, *, read_only: bool = False) -> str:
    shell = remote(ctx)
    mount_point = ctx.profile.mount_point
    device = find_device(ctx, shell)
    source = _mounted_source(shell, mount_point)
    if source is not None:
        real = shell.run(f"readlink -e {shlex.quote(source)}", check=False).stdout.strip()
        if real == device:
            return f"{device} already mounted on {mount_point}"
        raise InvalidResourceStateError(
            f"{mount_point} on the instance is already a mount of {source}",
            run_id=ctx.run.id,
            hint="choose another mount_point in the profile",
            resources=ctx.resources(),
        )
    q = shlex.quote
    # Read-only for restore and verify: noload also skips replaying the journal, so not one
    # block of the volume is written.
    options = "-o ro,noload " if read_only else ""
    # mount probes the device with libblkid and refuses one with no filesystem (or with more
    # than one signature: "more filesystems detected") without writing to it; blkid runs only
    # to say why a mount failed. One sudo round trip fewer on every run.
    result = shell.run(
        f"mkdir -p {q(mount_point)} && mount {options}{q(device)} {q(mount_point)}",
        sudo=_sudo(ctx),
        check=False,
    )
    if result.exit_status != 0:
        if not _filesystem_type(ctx, shell, device):
            raise UnformattedVolumeError(
                f"volume {ctx.run.volume_id} has no filesystem",
                run_id=ctx.run.id,
                hint="create the volume with `ec2backup init`; a backup never formats a volume",
                resources=ctx.resources(),
            )
        raise _command_error(ctx, f"could not mount {device} on {mount_point}", result)
    return f"{device} mounted on {mount_point}" + (" read-only" if read_only else "")


def _require_mounted(ctx: StepContext, shell: RemoteShell) -> None:
    if _mounted_source(shell, ctx.profile.mount_point) is None:
        raise InvalidResourceStateError(
            f"{ctx.profile.mount_point} is not mounted on the instance",
            run_id=ctx.run.id,
            resources=ctx.resources(),
        )


# --- restore and verify ------------------------------------------------------------------


def ensure_restore_volume(ctx: StepContext) -> str:
    """The volume to restore from: the live one (read-only), or a temporary one made from the
    snapshot, tagged so that reap finds it if this run is abandoned."""
    run = ctx.run
    if run.config.get("live"):
        return f"the live volume {run.volume_id}, read-only"
    snapshot_id = run.config["snapshot_id"]
    return (
        f"volume {_ensure_tagged_volume(ctx, 'restore', snapshot_id)} from snapshot {snapshot_id}"
    )


def ensure_pulled(ctx: StepContext) -> str:
    shell = remote(ctx)
    run = ctx.run
    _require_mounted(ctx, shell)
    subpath = run.config.get("path") or ""
    remote_dir = ctx.profile.mount_point + (f"/{subpath}" if subpath else "")
    if shell.run(f"test -d {shlex.quote(remote_dir)}", sudo=_sudo(ctx), check=False).exit_status:
        raise RemoteCommandError(
            f"the backup has no directory {subpath!r}",
            run_id=run.id,
            resources=ctx.resources(),
            hint="list what it holds with `ec2backup restore --path ''` into a scratch directory",
        )
    stats = ctx.syncer.sync(
        Path(run.config["to"]),
        ctx.ssh_target(),
        remote_dir,
        remote_sudo=_sudo(ctx),
        on_progress=ctx.progress,
        pull=True,
    )
    run.files_transferred, run.bytes_sent, run.total_size = (
        stats.files_transferred,
        stats.bytes_sent,
        stats.total_size,
    )
    ctx.recorder.save()
    return f"{stats.files_transferred} files restored into {run.config['to']}"


MAX_RECORDED_DIFFERENCES = 200


def ensure_compared(ctx: StepContext) -> str:
    shell = remote(ctx)
    run, profile = ctx.run, ctx.profile
    _require_mounted(ctx, shell)
    differences: list[str] = []
    for source in profile.sources:
        lines = ctx.syncer.compare(
            source.path,
            ctx.ssh_target(),
            f"{profile.mount_point}/{source.dest}",
            excludes=profile.excludes,
            remote_sudo=_sudo(ctx),
        )
        differences += [f"{source.dest}: {line}" for line in lines]
    shown = [f"differs: {d}" for d in differences[:MAX_RECORDED_DIFFERENCES]]
    if len(differences) > MAX_RECORDED_DIFFERENCES:
        shown.append(f"differs: ... and {len(differences) - MAX_RECORDED_DIFFERENCES} more")
    run.warnings = [*run.warnings, *shown]
    run.files_transferred = len(differences)  # for verify: the number of differences
    ctx.recorder.save()
    return f"{len(differences)} differences" if differences else "the volume matches the sources"


def ensure_volume_deleted(ctx: StepContext) -> str:
    run = ctx.run
    if run.config.get("live") or run.volume_id is None:
        return "no temporary volume"
    volume = ctx.ec2.get_volume(run.volume_id)
    if volume is not None and volume.state not in ("deleting", "deleted"):
        if volume.tags.get(TAG_ROLE) != "restore" or volume.tags.get(TAG_RUN_ID) != run.id:
            raise InvalidResourceStateError(
                f"volume {volume.id} is not this run's temporary volume; not deleting it",
                run_id=run.id,
            )
        ctx.ec2.wait_volume_available(volume.id, ctx.profile.detach_timeout)
        ctx.ec2.delete_volume(volume.id)
    return f"temporary volume {run.volume_id} deleted"


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root`` (not following symlinks), walked without
    keeping per-file state. Excludes are not applied: an estimate on the safe side."""
    total, stack = 0, [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total


LEFTOVER_RSYNC_SECONDS = 30

# Exit statuses of our own scripts on the instance, above any of the tools' own (umount's go
# up to 64, the others' to 2).
_NOT_MOUNTED = 100
_RSYNC_LEFT = 101
_STILL_MOUNTED = 102


def _end_rsync_script() -> str:
    """A process killed mid-transfer leaves its rsync running (the local one until its next
    write, the instance's server longer). The instance is single-purpose and ours: end them,
    so two transfers never interleave and the volume can be unmounted. The wait until they are
    gone runs on the instance; a subshell, so that its exit ends only itself: 0 once no rsync
    is left, 1 if one outlives the wait."""
    polls = int(LEFTOVER_RSYNC_SECONDS / POLL)
    return (
        "(pkill -KILL -x rsync; "
        f"for _ in $(seq {polls}); do pgrep -x rsync >/dev/null || exit 0; sleep {POLL:g}; done; "
        "exit 1)"
    )


def _leftover_rsync_error(ctx: StepContext) -> RemoteCommandError:
    return RemoteCommandError(
        "an earlier rsync on the instance did not end", run_id=ctx.run.id, resources=ctx.resources()
    )


def end_leftover_rsync(ctx: StepContext, shell: RemoteShell) -> None:
    if shell.run(_end_rsync_script(), sudo=_sudo(ctx), check=False).exit_status != 0:
        raise _leftover_rsync_error(ctx)


def prepare_sync(ctx: StepContext, shell: RemoteShell) -> tuple[int, int]:
    """Everything the copy needs on the instance, in one round trip (each command is an RTT
    plus a sudo on AWS), in this order: the mount point must be a mount, or the copy would
    fill the instance's root disk; an rsync left by a killed earlier attempt is ended; then
    the bytes already in the destinations and the bytes free on the volume are printed (du
    exits non-zero for a destination that does not exist yet: 0 bytes there); and the
    destinations are created (empty directories: harmless if the space check then refuses the
    copy). Returns (used, free)."""
    profile = ctx.profile
    q = shlex.quote
    dests = " ".join(q(f"{profile.mount_point}/{s.dest}") for s in profile.sources)
    script = "\n".join(
        [
            f"{_findmnt(profile.mount_point)} >/dev/null || exit {_NOT_MOUNTED}",
            f"{_end_rsync_script()} || exit {_RSYNC_LEFT}",
            f"du -s -B1 --apparent-size {dests} 2>/dev/null "
            "| awk '{t += $1} END {print t + 0}'",
            f"df -B1 --output=avail {q(profile.mount_point)} | tail -n 1",
            f"mkdir -p {dests}",
        ]
    )
    result = shell.run(script, sudo=_sudo(ctx), check=False)
    if result.exit_status == _NOT_MOUNTED:
        raise InvalidResourceStateError(
            f"{profile.mount_point} is not mounted on the instance; refusing to copy onto its "
            "root disk",
            run_id=ctx.run.id,
            resources=ctx.resources(),
        )
    if result.exit_status == _RSYNC_LEFT:
        raise _leftover_rsync_error(ctx)
    if result.exit_status != 0:
        raise _command_error(ctx, f"could not create the destinations {dests}", result)
    numbers = result.stdout.split()
    if len(numbers) != 2 or not all(n.isdigit() for n in numbers):
        raise RemoteCommandError(
            f"could not read the free space of {profile.mount_point} on the instance "
            f"(got {' '.join(numbers)!r})",
            run_id=ctx.run.id,
            resources=ctx.resources(),
        )
    used, free = (int(n) for n in numbers)
    return used, free


def check_free_space(ctx: StepContext, used: int, free: int) -> None:
    """Before rsync: what the sources add to the volume must fit in its free space."""
    local = sum(tree_bytes(source.path) for source in ctx.profile.sources)
    need = local - used
    if need > free:
        raise InsufficientSpaceError(
            f"the sources need about {_gib(need)} more on volume {ctx.run.volume_id}, "
            f"which has {_gib(free)} free",
            run_id=ctx.run.id,
            resources=ctx.resources(),
            hint="grow the volume (aws ec2 modify-volume, then resize2fs) or exclude some data",
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def ensure_synced(ctx: StepContext) -> str:
    shell = remote(ctx)
    run, profile = ctx.run, ctx.profile
    check_free_space(ctx, *prepare_sync(ctx, shell))
    totals = {"files": 0, "sent": 0, "size": 0}
    for source in profile.sources:
        remote_dir = f"{profile.mount_point}/{source.dest}"
        log.info("run %s: copying %s to %s", run.id, source.path, remote_dir)
        try:
            stats = ctx.syncer.sync(
                source.path,
                ctx.ssh_target(),
                remote_dir,
                excludes=profile.excludes,
                extra_args=profile.rsync_args,
                remote_sudo=_sudo(ctx),
                on_progress=ctx.progress,
            )
        except SyncError as exc:
            exc.run_id = run.id
            exc.resources.update(ctx.resources())
            raise
        if stats.exit_code == 24:
            run.warnings = [*run.warnings, f"{source.path}: some files vanished during the copy"]
        totals["files"] += stats.files_transferred
        totals["sent"] += stats.bytes_sent
        totals["size"] += stats.total_size
    run.files_transferred = totals["files"]
    run.bytes_sent = totals["sent"]
    run.total_size = totals["size"]
    ctx.recorder.save()
    return f"{totals['files']} files, {totals['sent']} bytes sent, {totals['size']} bytes in all"


def ensure_unmounted(ctx: StepContext) -> str:
    shell = remote(ctx)
    mount_point = ctx.profile.mount_point
    q = shlex.quote(mount_point)
    mounted = f"{_findmnt(mount_point)} >/dev/null"
    # One round trip: not mounted is done already; else unmount and confirm. No `sync`
    # first: umount writes back everything of that filesystem before it returns, and a
    # global sync would only flush the instance's root disk too.
    script = "\n".join(
        [
            f"{mounted} || exit 0",
            f"umount {q} || exit $?",
            f"{mounted} && exit {_STILL_MOUNTED}",
            "exit 0",
        ]
    )
    result = shell.run(script, sudo=_sudo(ctx), check=False)
    status = result.exit_status
    if status != 0 and "busy" in result.stderr:
        # Held by an rsync of a crashed earlier attempt: end it and try once more.
        end_leftover_rsync(ctx, shell)
        shell.run(f"umount {q}", sudo=_sudo(ctx))
        status = _STILL_MOUNTED if _mounted_source(shell, mount_point) is not None else 0
    if status == _STILL_MOUNTED:
        raise RemoteCommandError(
            f"{mount_point} is still mounted after umount",
            run_id=ctx.run.id,
            resources=ctx.resources(),
        )
    if status != 0:
        raise _command_error(ctx, f"umount {mount_point} failed", result)
    return f"{mount_point} unmounted"


ENSURE: dict[str, Callable[[StepContext], str]] = {
    "create_volume": ensure_volume_created,
    "launch": ensure_instance_running,
    "attach": ensure_attached,
    "format": ensure_formatted,
    "mount": ensure_mounted,
    "mount_ro": lambda ctx: ensure_mounted(ctx, read_only=True),
    "restore_volume": ensure_restore_volume,
    "pull": ensure_pulled,
    "compare": ensure_compared,
    "delete_volume": ensure_volume_deleted,
    "sync": ensure_synced,
    "unmount": ensure_unmounted,
    "detach": ensure_detached,
    "terminate": ensure_terminated,
    "snapshot": ensure_snapshot,
}
