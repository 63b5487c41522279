"""``ec2backup sandbox start|env|configure|cut-ssh|stop|status``. Importing this module imports
only typer: the main CLI imports it for every command, so the sandbox's own modules are
imported inside the commands that use them."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from .api import SandboxError

app = typer.Typer(
    help="The local cloud (moto + real sshd and loop devices) the tests and the demo use."
    " Needs root.",
    no_args_is_help=True,
)

DIR_OPTION = typer.Option(..., "--dir", help="Directory holding the sandbox's state and images.")


def _fail(error: SandboxError) -> typer.Exit:
    typer.echo(f"ec2backup sandbox: {error.one_line()}", err=True)
    return typer.Exit(error.exit_code)


FAULTS = "Faults of EC2 calls"
DELAYS = "Delayed state changes (seconds)"
INSIDE = "Instances and SSH"
LIMITS = "Capacity and quotas"


@app.command()
def start(
    directory: Path = DIR_OPTION,
    region: str = typer.Option("us-east-1", help="The region the sandbox pretends to be."),
    iam: bool = typer.Option(
        False,
        "--iam",
        help="Enforce IAM: requests must be signed by an IAM user's key; EC2, EBS direct API"
        " and SSM calls are checked against its policies as AWS does (each resource, with"
        " conditions). The printed keys are an administrator's.",
    ),
    throttle_rate: float = typer.Option(
        0.0,
        min=0.0,
        max=1.0,
        help="Share of EC2 calls answered 503 RequestLimitExceeded.",
        rich_help_panel=FAULTS,
    ),
    error_rate: float = typer.Option(
        0.0,
        min=0.0,
        max=1.0,
        help="Share of EC2 calls answered 500 InternalError / 503 Unavailable.",
        rich_help_panel=FAULTS,
    ),
    lost_response_rate: float = typer.Option(
        0.0,
        min=0.0,
        max=1.0,
        help="Share of EC2 calls that do their work, then answer 500 (a lost response).",
        rich_help_panel=FAULTS,
    ),
    latency: float = typer.Option(
        0.0, min=0.0, help="Seconds added to every EC2 call.", rich_help_panel=FAULTS
    ),
    fault_seed: int = typer.Option(
        0,
        help="Seed of the faults: the n-th call of an action always gets the same fault.",
        rich_help_panel=FAULTS,
    ),
    fault_action: list[str] = typer.Option(
        [],
        "--fault-action",
        help="Limit faults and latency to this EC2 action (e.g. RunInstances); repeatable.",
        rich_help_panel=FAULTS,
    ),
    timing: str = typer.Option(
        "instant",
        help="instant, or aws: every delay left at 0 takes AWS's typical value (boot 12 s,"
        " SSH ready 20 s later, attach 5, detach 8, terminate 45, snapshot 600), times"
        " --timing-scale.",
        rich_help_panel=DELAYS,
    ),
    timing_scale: float = typer.Option(
        1.0, min=0.001, help="Multiplies the aws delays (same order).", rich_help_panel=DELAYS
    ),
    boot_delay: float = typer.Option(
        0.0,
        min=0.0,
        help="pending -> running; sshd starts once running.",
        rich_help_panel=DELAYS,
    ),
    ssh_delay: float = typer.Option(
        0.0,
        min=0.0,
        help="running -> cloud-final done: host keys on the console, logins accepted.",
        rich_help_panel=DELAYS,
    ),
    attach_delay: float = typer.Option(
        0.0, min=0.0, help="Attachment attaching -> attached.", rich_help_panel=DELAYS
    ),
    detach_delay: float = typer.Option(
        0.0,
        min=0.0,
        help="Attachment detaching -> volume available (never while mounted).",
        rich_help_panel=DELAYS,
    ),
    terminate_delay: float = typer.Option(
        0.0,
        min=0.0,
        help="shutting-down -> terminated (and stopping -> stopped).",
        rich_help_panel=DELAYS,
    ),
    snapshot_delay: float = typer.Option(
        0.0,
        min=0.0,
        help="Snapshot pending -> completed (no volume can be made from it before).",
        rich_help_panel=DELAYS,
    ),
    consistency_lag: float = typer.Option(
        0.0,
        min=0.0,
        help="Eventual consistency: a new resource answers NotFound by id, and is missing from"
        " tag-filtered Describe calls, for this long.",
        rich_help_panel=DELAYS,
    ),
    minute_seconds: float = typer.Option(
        60.0,
        min=0.001,
        help="Seconds one minute of an instance's timers (systemd-run --on-active, a"
        " scheduled shutdown) lasts here.",
        rich_help_panel=INSIDE,
    ),
    cut_ssh_after: float | None = typer.Option(
        None,
        min=0.0,
        help="Cut the SSH connections of each instance once, this many seconds after they"
        " opened (or after --cut-ssh-on's process started).",
        rich_help_panel=INSIDE,
    ),
    cut_ssh_on: str = typer.Option(
        "",
        help="Process (e.g. rsync) whose run starts the --cut-ssh-after clock.",
        rich_help_panel=INSIDE,
    ),
    client_address: str = typer.Option(
        "",
        help="See every client as coming from this address: instances admit SSH only if"
        " their security groups do, and the address lookup answers it.",
        rich_help_panel=INSIDE,
    ),
    no_capacity: list[str] = typer.Option(
        [],
        "--no-capacity",
        help="Instance type (t3.micro, or t3.micro@us-east-1a for one zone) for which"
        " RunInstances fails with InsufficientInstanceCapacity; repeatable.",
        rich_help_panel=LIMITS,
    ),
    instance_limit: int | None = typer.Option(
        None,
        min=0,
        help="RunInstances fails with InstanceLimitExceeded beyond this many live instances.",
        rich_help_panel=LIMITS,
    ),
) -> None:
    """Start a sandbox; print `export VAR=value` lines for eval once it is ready.

    Fault and timing settings can be changed later with `ec2backup sandbox configure`."""
    settings: dict[str, Any] = {
        "throttle_rate": throttle_rate,
        "error_rate": error_rate,
        "lost_response_rate": lost_response_rate,
        "latency": latency,
        "fault_seed": fault_seed,
        "fault_actions": tuple(fault_action),
        "timing": timing,
        "timing_scale": timing_scale,
        "boot_delay": boot_delay,
        "ssh_delay": ssh_delay,
        "attach_delay": attach_delay,
        "detach_delay": detach_delay,
        "terminate_delay": terminate_delay,
        "snapshot_delay": snapshot_delay,
        "consistency_lag": consistency_lag,
        "minute_seconds": minute_seconds,
        "cut_ssh_after": cut_ssh_after,
        "cut_ssh_on": cut_ssh_on,
        "client_address": client_address,
        "no_capacity": tuple(no_capacity),
        "instance_limit": instance_limit,
    }
    from .api import Sandbox, SandboxError

    try:
        sandbox = Sandbox.start(directory, region=region, iam=iam, **settings)
    except SandboxError as e:
        raise _fail(e) from None
    for key, value in sandbox.env.items():
        typer.echo(f"export {key}={shlex.quote(value)}")
    typer.echo(
        f"sandbox ready at {sandbox.endpoint_url} (server pid {sandbox.server_pid},"
        f" Ubuntu AMI {sandbox.default_ami_id}); stop it with: ec2backup sandbox stop"
        f" --dir {shlex.quote(str(sandbox.directory))}",
        err=True,
    )


@app.command()
def configure(
    directory: Path = DIR_OPTION,
    setting: list[str] = typer.Argument(
        None,
        metavar="NAME=VALUE...",
        help="Settings to change, named as the options of `start` with underscores"
        " (throttle_rate=0.2 boot_delay=3 no_capacity=t3.micro,t3.small instance_limit=none)."
        " None given: print the settings.",
    ),
    reset: bool = typer.Option(False, "--reset", help="Back to no faults and no delays first."),
) -> None:
    """Change the fault and timing settings of a running sandbox (from its next EC2 call)."""
    from .api import Sandbox, SandboxError, require_root

    try:
        require_root()
        sandbox = Sandbox.open(directory)
        if reset:
            sandbox.reset_faults()
        changes = dict(_parse_setting(item) for item in setting or [])
        current = sandbox.configure_faults(**changes) if changes else sandbox.settings
    except SandboxError as e:
        raise _fail(e) from None
    for name, value in current.to_json().items():
        typer.echo(f"{name}={_show(value)}")


def _parse_setting(item: str) -> tuple[str, Any]:
    from .api import SandboxError
    from .settings import CloudSettings

    name, sep, raw = item.partition("=")
    name = name.strip().replace("-", "_")
    defaults = CloudSettings().to_json()
    if not sep or name not in defaults:
        raise SandboxError(f"not a setting: {item!r} (known: {', '.join(defaults)})")
    default = defaults[name]
    try:
        if raw.lower() in ("none", "") and name in ("cut_ssh_after", "instance_limit"):
            return name, None
        if isinstance(default, list):
            return name, tuple(v for v in raw.split(",") if v)
        if name == "instance_limit" or (isinstance(default, int) and not isinstance(default, bool)):
            return name, int(raw)
        if isinstance(default, float) or name == "cut_ssh_after":
            return name, float(raw)
    except ValueError:
        raise SandboxError(f"bad value for {name}: {raw!r}") from None
    return name, raw


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


@app.command("cut-ssh")
def cut_ssh(
    instance_id: str = typer.Argument(..., help="The instance whose SSH connections to drop."),
    directory: Path = DIR_OPTION,
) -> None:
    """Drop every SSH connection to an instance, as a network failure would.

    The instance stays up and accepts new connections."""
    from .api import Sandbox, SandboxError, require_root

    try:
        require_root()
        cut = Sandbox.open(directory).cut_ssh(instance_id)
    except SandboxError as e:
        raise _fail(e) from None
    typer.echo(f"cut {cut} SSH connection(s) to {instance_id}", err=True)


@app.command()
def stop(directory: Path = DIR_OPTION) -> None:
    """Stop the sandbox: terminate its instances, release its loop devices, end its server."""
    from .api import SandboxError, require_root, stop_sandbox

    try:
        require_root()
        stop_sandbox(directory)
    except SandboxError as e:
        raise _fail(e) from None
    typer.echo(f"sandbox in {directory} stopped", err=True)


@app.command()
def status(directory: Path = DIR_OPTION) -> None:
    """Say whether a sandbox runs in the directory, and what it holds. Exit 1 if none runs."""
    from .api import Sandbox, SandboxError, require_root
    from .host import Machine, is_running, loops_backed_under
    from .layout import Layout
    from .settings import CloudSettings

    try:
        require_root()
    except SandboxError as e:
        raise _fail(e) from None
    try:
        sandbox = Sandbox.open(directory)
    except SandboxError as e:
        typer.echo(f"ec2backup sandbox: {e.one_line()}", err=True)
        _echo_kept(directory, "kept for the next `ec2backup sandbox start`")
        raise typer.Exit(1) from None
    layout = Layout(sandbox.directory)
    machines = [m for d in sorted(layout.instances.glob("*")) if (m := Machine.load(d))]
    live = [m for m in machines if is_running(m.sshd_pid)]
    typer.echo(f"running: {sandbox.endpoint_url} (server pid {sandbox.server_pid})")
    typer.echo(f"region: {sandbox.region}, Ubuntu AMI: {sandbox.default_ami_id}")
    typer.echo(f"IAM: {'enforced' if sandbox.iam else 'off'}")
    changed = [
        f"{name}={_show(value)}"
        for name, value in sandbox.settings.to_json().items()
        if value != CloudSettings().to_json()[name]
    ]
    typer.echo(f"settings: {' '.join(changed) if changed else 'defaults (no faults, no delays)'}")
    typer.echo(f"instances with a live sshd: {len(live)} of {len(machines)} launched")
    for m in live:
        typer.echo(f"  {m.instance_id} {m.address}:22 (sshd pid {m.sshd_pid})")
    loops = loops_backed_under(layout.root)
    typer.echo(f"loop devices: {' '.join(loops) if loops else 'none'}")
    _echo_kept(sandbox.directory, "held")


def _echo_kept(directory: Path, what: str) -> None:
    """The volumes and snapshots (a stop and a start keep them), one line each."""
    from .api import kept_resources

    kept = kept_resources(directory)
    volumes, snapshots = kept["volumes"], kept["snapshots"]
    typer.echo(f"volumes {what}: {len(volumes) or 'none'}")
    for v in volumes:
        name = v["tags"].get("Name") or v["tags"].get("ec2backup:profile") or ""
        typer.echo(f"  {v['id']} {v['size']} GiB {v['zone']}" + (f" {name}" if name else ""))
    typer.echo(f"snapshots {what}: {len(snapshots) or 'none'}")
    for snap in snapshots:
        typer.echo(f"  {snap['id']} of {snap['volume_id']} ({snap['volume_size']} GiB)")


@app.command()
def env(directory: Path = DIR_OPTION) -> None:
    """Print the `export VAR=value` lines of the sandbox running in the directory again (as
    `start` printed them), for `eval` in another terminal. Exit 1 if none runs."""
    from .api import Sandbox, SandboxError

    try:
        sandbox = Sandbox.open(directory)
    except SandboxError as e:
        typer.echo(f"ec2backup sandbox: {e.one_line()}", err=True)
        raise typer.Exit(1) from None
    for key, value in sandbox.env.items():
        typer.echo(f"export {key}={shlex.quote(value)}")
