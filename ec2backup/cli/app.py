"""The command line: parses, calls ``commands``, renders through ``views``. Imports of boto3,
asyncssh, sqlalchemy and moto happen inside the commands, so ``ec2backup --help`` stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..sandbox.cli import app as sandbox_app
from . import views
from .context import Invocation, invocation, setup_logging


def _flags_take_no_value() -> None:
    """typer writes the type after every option in --help, flags included (``--yes <bool>``),
    which reads as if the flag took a value: flags show no type."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag and not self.count else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_take_no_value()

app = typer.Typer(
    help="Back up directories to an EBS volume through a short-lived EC2 instance.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
app.add_typer(sandbox_app, name="sandbox", help="A local cloud for trying and testing ec2backup.")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="EC2BACKUP_CONFIG",
        help="Config file.",
        show_default=False,
        metavar="FILE",
    ),
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="EC2BACKUP_DB",
        help="SQLAlchemy database URL.",
        show_default=False,
        metavar="URL",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ProfileOpt = Annotated[
    str, typer.Option("--profile", "-p", help="Profile name in the config.", metavar="NAME")
]
ProfileFilterOpt = Annotated[
    str | None,
    typer.Option("--profile", "-p", help="Only this profile's runs.", metavar="NAME"),
]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"ec2backup {version('ec2backup')}")
        raise typer.Exit()


KeepOpt = Annotated[
    bool,
    typer.Option(
        "--keep-instance",
        help="If the run fails, keep its instance (volume attached) for debugging instead of "
        "ending it; it still powers itself off after instance_idle_minutes.",
    ),
]


@app.callback()
def _global(
    ctx: typer.Context,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_version, is_eager=True
        ),
    ] = False,
) -> None:
    ctx.obj = Invocation(config=config, db=db, debug=debug, quiet=quiet)
    ctx.call_on_close(ctx.obj.close)
    setup_logging(debug, quiet)


@app.command()
def init(
    ctx: typer.Context,
    profile: ProfileOpt,
    az: Annotated[
        str, typer.Option("--az", help="Availability zone, e.g. us-east-1a.", metavar="ZONE")
    ],
    size: Annotated[int, typer.Option("--size", help="Volume size in GiB.", metavar="GIB")],
    source: Annotated[
        list[Path],
        typer.Option("--source", help="A directory to back up (repeatable).", metavar="DIR"),
    ],
    region: Annotated[
        str | None,
        typer.Option("--region", help="Region; default: the AZ's region.", metavar="REGION"),
    ] = None,
    ssh_user: Annotated[
        str, typer.Option("--ssh-user", help="Login user of the AMI.", metavar="USER")
    ] = "ubuntu",
    ami: Annotated[
        str | None,
        typer.Option(
            "--ami", help="AMI id or SSM parameter name.", show_default=False, metavar="AMI"
        ),
    ] = None,
    instance_type: Annotated[
        str,
        typer.Option(
            "--instance-type",
            help="EC2 instance type of the short-lived instances.",
            metavar="TYPE",
        ),
    ] = "t3.micro",
    no_snapshot: Annotated[bool, typer.Option("--no-snapshot", help="Do not snapshot.")] = False,
    allow_ssh_from: Annotated[
        str | None,
        typer.Option(
            "--allow-ssh-from",
            envvar="EC2BACKUP_ALLOW_SSH_FROM",
            help="Address or network allowed to SSH to the instances "
            "(default: this host's public address).",
            show_default=False,
            metavar="CIDR",
        ),
    ] = None,
    security_group: Annotated[
        list[str] | None,
        typer.Option(
            "--security-group",
            help="Use this security group (repeatable); none is made.",
            metavar="SG",
        ),
    ] = None,
    keep_instance: KeepOpt = False,
    storage: Annotated[
        str,
        typer.Option(
            "--storage",
            help="volume: one standing volume; snapshots: none, each run makes one from the "
            "latest snapshot and deletes it.",
        ),
    ] = "volume",
) -> None:
    """Create and format a volume, and write PROFILE to the config file. Prints the volume id
    (with --storage snapshots: the id of the profile's first snapshot; the volume is gone)."""
    from ..commands.backup import start_init

    if storage not in ("volume", "snapshots"):
        raise typer.BadParameter("must be volume or snapshots", param_hint="--storage")

    settings: dict[str, Any] = {"ssh_user": ssh_user, "instance_type": instance_type}
    if ami:
        settings["ami"] = ami
    if no_snapshot:
        settings["snapshot"] = False
    if security_group:
        settings["security_group_ids"] = security_group
    with invocation(ctx).running(keep_instance=keep_instance) as app:
        run = start_init(
            app,
            profile,
            region=region,
            availability_zone=az,
            size_gib=size,
            sources=source,
            settings=settings,
            allow_ssh_from=allow_ssh_from,
            storage=storage,
        )
    typer.echo(run.snapshot_id if storage == "snapshots" else run.volume_id)


@app.command("run")
def run_(
    ctx: typer.Context,
    profile: ProfileOpt,
    allow_deletions: Annotated[
        bool,
        typer.Option(
            "--allow-deletions",
            help="Mirror a source even if that deletes more than max_delete_percent of its "
            "copy, or all of it (an emptied source).",
        ),
    ] = False,
    keep_instance: KeepOpt = False,
) -> None:
    """Back up the profile's sources once. Prints the run id."""
    from ..commands.backup import start_backup

    with invocation(ctx).running(keep_instance=keep_instance) as app:
        run = start_backup(app, profile, allow_deletions=allow_deletions)
    typer.echo(run.id)


@app.command()
def resume(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run to continue.")],
    clean: Annotated[
        bool,
        typer.Option(
            "--clean",
            help="Force-clean instead: unmount if the instance answers, detach, terminate; "
            "the run ends aborted.",
        ),
    ] = False,
    snapshot: Annotated[
        bool,
        typer.Option("--snapshot", help="With --clean: snapshot even if the sync did not finish."),
    ] = False,
    keep_instance: KeepOpt = False,
) -> None:
    """Continue a failed or interrupted run from its last recorded state."""
    from ..commands.runner import resume as resume_run

    if snapshot and not clean:
        raise typer.BadParameter("--snapshot only goes with --clean", param_hint="--snapshot")
    with invocation(ctx).running(keep_instance=keep_instance) as app:
        run = resume_run(app, run_id, clean=clean, snapshot=snapshot)
    typer.echo(f"{run.id} {run.state}" if clean else run.id)


@app.command()
def reap(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", help="Act; without it, only show.")] = False,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Only instances launched longer ago (90s, 30m, 2h, 1d).",
            show_default=False,
            metavar="AGE",
        ),
    ] = None,
    region: Annotated[
        list[str] | None,
        typer.Option(
            "--region",
            help="Region to sweep (repeatable); default: the profiles'.",
            metavar="REGION",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Find instances of ours that no live run owns; detach our volumes and terminate them.
    A dry run unless --yes. Works from the tags alone, even without a database."""
    from ..commands.reap import reap as reap_orphans
    from ..commands.reap import reap_regions

    app = invocation(ctx).app()
    regions = reap_regions(app, region or [])
    rows = reap_orphans(app, regions=regions, act=yes, older_than=older_than)
    views.reap(rows, as_json=as_json, acted=yes, regions=regions)


@app.command()
def runs(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    profile: ProfileFilterOpt = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", "-n", min=1, help="At most N runs (table default: 50).", metavar="N"
        ),
    ] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Every run in the table.")] = False,
    host: Annotated[
        str | None,
        typer.Option(
            "--host", help="Only runs started on this host (a shared --db).", metavar="HOST"
        ),
    ] = None,
) -> None:
    """The run history of every host using this database, newest first."""
    from ..db.sqlite_runs import list_runs_sqlite

    # A table of thousands of rows helps nobody (and takes seconds to draw): the newest 50,
    # unless asked. JSON is for scripts: everything, unless --limit.
    shown = limit or (None if as_json or all_runs else views.TABLE_DEFAULT_LIMIT)
    fetch = shown + 1 if shown else None
    # SQLite at the newest schema is read without SQLAlchemy (~0.2 s of imports); anything
    # else goes through the store, which creates, upgrades and reports errors.
    rows = list_runs_sqlite(invocation(ctx).db_url(), profile=profile, host=host, limit=fetch)
    if rows is None:
        from ..commands.history import list_runs

        rows = list_runs(invocation(ctx).app(), profile=profile, host=host, limit=fetch)
    more = shown is not None and len(rows) > shown
    views.runs(rows[:shown] if shown else rows, as_json=as_json)
    if more and not limit:
        typer.echo(f"the newest {shown} runs; --all or --limit N for more", err=True)


@app.command()
def show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run to show (see `ec2backup runs`).")],
    as_json: JsonOpt = False,
) -> None:
    """One run: its resources, statistics and timeline (time spent in each state)."""
    from ..commands.history import show_run

    views.show(show_run(invocation(ctx).app(), run_id), as_json=as_json)


@app.command()
def snapshots(ctx: typer.Context, profile: ProfileOpt, as_json: JsonOpt = False) -> None:
    """The profile's snapshots, newest first, with their current state."""
    from ..commands.snapshots import list_snapshots

    views.snapshots(list_snapshots(invocation(ctx).app(), profile), as_json=as_json)


@app.command()
def prune(
    ctx: typer.Context,
    profile: ProfileOpt,
    keep_last: Annotated[
        int | None,
        typer.Option("--keep-last", help="Keep the N newest.", show_default=False, metavar="N"),
    ] = None,
    keep_daily: Annotated[
        int | None,
        typer.Option(
            "--keep-daily",
            help="Newest of each of the last N days.",
            show_default=False,
            metavar="N",
        ),
    ] = None,
    keep_weekly: Annotated[
        int | None,
        typer.Option(
            "--keep-weekly",
            help="Newest of each of the last N ISO weeks.",
            show_default=False,
            metavar="N",
        ),
    ] = None,
    keep_monthly: Annotated[
        int | None,
        typer.Option(
            "--keep-monthly",
            help="Newest of each of the last N months.",
            show_default=False,
            metavar="N",
        ),
    ] = None,
    archive_after_days: Annotated[
        int | None,
        typer.Option(
            "--archive-after-days",
            help="Also move kept snapshots this old to the archive tier (billed 90 days at "
            "least; up to 72 hours to restore). Never the newest.",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Delete; without it, only show.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete the profile's snapshots no rule keeps (restic-style rules, UTC). A dry run
    unless --yes; a pending snapshot is never deleted."""
    from ..commands.snapshots import policy_from_flags
    from ..commands.snapshots import prune as prune_snapshots
    from ..errors import CloudError, UserInputError

    policy = policy_from_flags(keep_last, keep_daily, keep_weekly, keep_monthly)
    if archive_after_days is not None and archive_after_days < 0:
        raise UserInputError(
            f"--archive-after-days {archive_after_days} is negative",
            hint="give a number of days, 0 or more",
        )
    result = prune_snapshots(
        invocation(ctx).app(), profile, policy, yes=yes, archive_after_days=archive_after_days
    )
    views.prune(result, as_json=as_json)
    if result["failed"]:
        raise CloudError(
            f"{result['failed']} of {result['removed'] + result['archived'] + result['failed']}"
            " snapshot deletions or archivals failed (see the table)",
            hint="fix the cause shown and prune again",
        )


@app.command()
def cost(ctx: typer.Context, profile: ProfileOpt, as_json: JsonOpt = False) -> None:
    """The profile's monthly bill by component (volume, snapshots in each tier, instance time,
    requests) and the same data under both storage modes."""
    from ..commands.cost import estimate

    views.cost(estimate(invocation(ctx).app(), profile), as_json=as_json)


@app.command()
def doctor(
    ctx: typer.Context,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile", "-p", help="Also check this profile's cloud resources.", metavar="NAME"
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check rsync, ssh, the config, the database and AWS access (and with --profile the
    region, volume, AMI and security groups). Exit 0 when all pass, 3 otherwise."""
    from ..commands.doctor import EXIT_FAILED, as_rows, run_checks

    options = invocation(ctx)
    checks = run_checks(
        config_path=options.config_path(), db_url=options.db_url(), profile_name=profile
    )
    views.doctor(as_rows(checks), as_json=as_json)
    if any(c.failed for c in checks):
        raise typer.Exit(EXIT_FAILED)


@app.command()
def schedule(
    ctx: typer.Context,
    profile: ProfileOpt,
    systemd: Annotated[
        bool, typer.Option("--systemd", help="Print a systemd service and timer.")
    ] = False,
    cron: Annotated[bool, typer.Option("--cron", help="Print a crontab line.")] = False,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="Daily at HH:MM, local time (default 03:00).",
            show_default=False,
            metavar="HH:MM",
        ),
    ] = None,
    on_calendar: Annotated[
        str | None,
        typer.Option(
            "--on-calendar",
            help="systemd OnCalendar expression, e.g. 'Mon..Fri 02:00' (--systemd only).",
            show_default=False,
            metavar="EXPR",
        ),
    ] = None,
) -> None:
    """Print what runs `ec2backup --quiet run --profile P` on a schedule, never two at once
    (flock -n). It only prints; install the output yourself."""
    from ..commands.schedule import schedule as schedule_text
    from ..paths import default_data_dir

    options = invocation(ctx)
    text = schedule_text(
        profile,
        config_path=options.config_path(),
        db_url=options.db,
        data_dir=default_data_dir(),
        systemd=systemd,
        cron=cron,
        at=at,
        on_calendar=on_calendar,
    )
    typer.echo(text, nl=False)


@app.command()
def restore(
    ctx: typer.Context,
    to: Annotated[Path, typer.Option("--to", help="Directory to restore into.", metavar="DIR")],
    run: Annotated[
        str | None,
        typer.Option("--run", help="Restore the snapshot of this backup run.", metavar="RUN_ID"),
    ] = None,
    snapshot: Annotated[
        str | None,
        typer.Option(
            "--snapshot", help="Restore this snapshot (needs --profile).", metavar="SNAP_ID"
        ),
    ] = None,
    live: Annotated[
        bool, typer.Option("--live", help="Restore from the live volume, read-only.")
    ] = False,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            "-p",
            help="The profile whose volume (--live) or snapshot (--snapshot) to restore.",
            metavar="NAME",
        ),
    ] = None,
    path: Annotated[
        str | None,
        typer.Option(
            "--path", help="Only this path under the backup (e.g. home/docs).", metavar="PATH"
        ),
    ] = None,
    keep_instance: KeepOpt = False,
    restore_days: Annotated[
        int,
        typer.Option(
            "--restore-days",
            help="An archived snapshot is first restored from the archive for this many days "
            "(it takes up to 72 hours; run the restore again then).",
        ),
    ] = 1,
) -> None:
    """Copy a backup back: a temporary volume from the snapshot (deleted afterwards), or the
    live volume, is mounted read-only on a fresh instance and rsynced into --to. Nothing
    in the target is deleted. Prints the run id."""
    from ..commands.restore import start_restore

    with invocation(ctx).running(keep_instance=keep_instance) as app:
        result = start_restore(
            app,
            to=to,
            run_id=run,
            snapshot_id=snapshot,
            profile_name=profile,
            live=live,
            path=path,
            restore_days=restore_days,
        )
    typer.echo(result.id)


@app.command()
def grow(
    ctx: typer.Context,
    profile: ProfileOpt,
    size: Annotated[
        int, typer.Option("--size", help="The volume's new size in GiB.", metavar="GIB")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Make the profile's volume bigger (EBS ModifyVolume; volumes never shrink). Its
    filesystem grows into the new size, online, at the next run. Safe to repeat."""
    from ..commands.grow import grow as grow_volume

    views.grow(grow_volume(invocation(ctx).app(), profile, size), as_json=as_json)


@app.command()
def verify(
    ctx: typer.Context,
    profile: ProfileOpt,
    as_json: JsonOpt = False,
    keep_instance: KeepOpt = False,
) -> None:
    """Compare the sources with the volume's copy by checksum (read-only) and list each
    difference. Exit 0 when they match, 1 when they differ."""
    from ..commands.backup import differences, start_verify

    with invocation(ctx).running(keep_instance=keep_instance) as app:
        result = start_verify(app, profile)
    found = differences(result)
    views.verify(result.id, found, as_json=as_json)
    if found:
        raise typer.Exit(1)
