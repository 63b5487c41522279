"""The command line: parses, calls ``service``, renders. Imports of boto3, asyncssh, sqlalchemy
and moto happen inside the commands, so ``ec2backup --help`` stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..sandbox.cli import app as sandbox_app
from .context import OPTIONS, _app, _running, _setup_logging

if TYPE_CHECKING:
    pass


app = typer.Typer(
    help="Back up directories to an EBS volume through a short-lived EC2 instance.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
app.add_typer(sandbox_app, name="sandbox", help="A local cloud for trying and testing ec2backup.")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", envvar="EC2BACKUP_CONFIG", help="Config file.", show_default=False),
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db", envvar="EC2BACKUP_DB", help="SQLAlchemy database URL.", show_default=False
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ProfileOpt = Annotated[str, typer.Option("--profile", "-p", help="Profile name in the config.")]


@app.callback()
def _global(
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    OPTIONS.config, OPTIONS.db, OPTIONS.debug, OPTIONS.quiet = config, db, debug, quiet
    _setup_logging(debug, quiet)


@app.command()
def init(
    profile: ProfileOpt,
    az: Annotated[str, typer.Option("--az", help="Availability zone, e.g. us-east-1a.")],
    size: Annotated[int, typer.Option("--size", help="Volume size in GiB.")],
    source: Annotated[
        list[Path], typer.Option("--source", help="A directory to back up (repeatable).")
    ],
    region: Annotated[
        str | None, typer.Option("--region", help="Region; default: the AZ's region.")
    ] = None,
    ssh_user: Annotated[str, typer.Option("--ssh-user", help="Login user of the AMI.")] = "ubuntu",
    ami: Annotated[
        str | None, typer.Option("--ami", help="AMI id or SSM parameter name.", show_default=False)
    ] = None,
    instance_type: Annotated[str, typer.Option("--instance-type")] = "t3.micro",
    no_snapshot: Annotated[bool, typer.Option("--no-snapshot", help="Do not snapshot.")] = False,
    allow_ssh_from: Annotated[
        str | None,
        typer.Option(
            "--allow-ssh-from",
            envvar="EC2BACKUP_ALLOW_SSH_FROM",
            help="Address or network allowed to SSH to the instances "
            "(default: this host's public address).",
            show_default=False,
        ),
    ] = None,
    security_group: Annotated[
        list[str] | None,
        typer.Option(
            "--security-group", help="Use this security group (repeatable); none is made."
        ),
    ] = None,
) -> None:
    """Create and format a volume, and write PROFILE to the config file. Prints the volume id."""
    from ..commands.backup import start_init

    settings: dict[str, Any] = {"ssh_user": ssh_user, "instance_type": instance_type}
    if ami:
        settings["ami"] = ami
    if no_snapshot:
        settings["snapshot"] = False
    if security_group:
        settings["security_group_ids"] = security_group
    with _running() as app:
        run = start_init(
            app,
            profile,
            region=region or az[:-1],
            availability_zone=az,
            size_gib=size,
            sources=source,
            settings=settings,
            allow_ssh_from=allow_ssh_from,
        )
    typer.echo(run.volume_id)


@app.command("run")
def run_(profile: ProfileOpt) -> None:
    """Back up the profile's sources once. Prints the run id."""
    from ..commands.backup import start_backup

    with _running() as app:
        run = start_backup(app, profile)
    typer.echo(run.id)


@app.command()
def resume(
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
) -> None:
    """Continue a failed or interrupted run from its last recorded state."""
    from ..commands.runner import resume as resume_run

    if snapshot and not clean:
        raise typer.BadParameter("--snapshot only goes with --clean", param_hint="--snapshot")
    with _running() as app:
        run = resume_run(app, run_id, clean=clean, snapshot=snapshot)
    typer.echo(f"{run.id} {run.state}" if clean else run.id)


@app.command()
def reap(
    yes: Annotated[bool, typer.Option("--yes", help="Act; without it, only show.")] = False,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Only instances launched longer ago (90s, 30m, 2h, 1d).",
            show_default=False,
        ),
    ] = None,
    region: Annotated[
        list[str] | None,
        typer.Option("--region", help="Region to sweep (repeatable); default: the profiles'."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Find instances of ours that no live run owns; detach our volumes and terminate them.
    A dry run unless --yes. Works from the tags alone, even without a database."""
    from ..commands.reap import reap as reap_orphans
    from .render import emit

    rows = reap_orphans(_app(), regions=region or [], act=yes, older_than=older_than)
    emit(
        rows,
        as_json=as_json,
        columns=[
            ("resource", "RESOURCE"),
            ("state", "STATE"),
            ("run_id", "RUN"),
            ("action", "ACTION"),
            ("reason", "WHY"),
            ("volumes", "VOLUMES"),
        ],
    )
    if not yes and any(r["orphan"] for r in rows):
        typer.echo("dry run: nothing was changed; pass --yes to act", err=True)


TABLE_DEFAULT_LIMIT = 50
RUN_COLUMNS = [
    ("id", "RUN"),
    ("kind", "KIND"),
    ("profile", "PROFILE"),
    ("host", "HOST"),
    ("state", "STATE"),
    ("started", "STARTED (UTC)"),
    ("instance_id", "INSTANCE"),
    ("snapshot_id", "SNAPSHOT"),
    ("error", "ERROR"),
]


@app.command()
def runs(
    as_json: JsonOpt = False,
    profile: Annotated[str | None, typer.Option("--profile", "-p")] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", "-n", min=1, help="At most N runs (table default: 50)."),
    ] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Every run in the table.")] = False,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Only runs started on this host (a shared --db)."),
    ] = None,
) -> None:
    """The run history of every host using this database, newest first."""
    from ..db.sqlite_runs import list_runs_sqlite
    from ..paths import default_db_url
    from .render import emit, short_time

    # A table of thousands of rows helps nobody (and takes seconds to draw): the newest 50,
    # unless asked. JSON is for scripts: everything, unless --limit.
    shown = limit or (None if as_json or all_runs else TABLE_DEFAULT_LIMIT)
    fetch = shown + 1 if shown else None
    # SQLite at the newest schema is read without SQLAlchemy (~0.2 s of imports); anything
    # else goes through the store, which creates, upgrades and reports errors.
    rows = list_runs_sqlite(OPTIONS.db or default_db_url(), profile=profile, host=host, limit=fetch)
    if rows is None:
        from ..commands.history import list_runs

        rows = list_runs(_app(), profile=profile, host=host, limit=fetch)
    more = shown is not None and len(rows) > shown
    rows = rows[:shown] if shown else rows
    if not as_json:
        rows = [{**r, "started": short_time(r["started_at"])} for r in rows]
    emit(rows, as_json=as_json, columns=RUN_COLUMNS)
    if more and not limit:
        typer.echo(f"the newest {shown} runs; --all or --limit N for more", err=True)


@app.command()
def show(run_id: Annotated[str, typer.Argument()], as_json: JsonOpt = False) -> None:
    """One run: its resources, statistics and timeline (time spent in each state)."""
    from ..commands.history import show_run
    from .render import emit, emit_json, emit_table, short_time

    data = show_run(_app(), run_id)
    if as_json:
        emit_json(data)
        return
    fields = [
        {"field": k, "value": v}
        for k, v in data.items()
        if k not in ("events", "stats", "warnings", "cost")
    ]
    fields += [{"field": k, "value": v} for k, v in data["stats"].items()]
    fields += [{"field": f"cost.{k}", "value": v} for k, v in data["cost"].items()]
    fields += [{"field": "warning", "value": w} for w in data["warnings"]]
    emit(fields, as_json=False, columns=[("field", "FIELD"), ("value", "VALUE")])
    events = [{**e, "at": short_time(e["at"])} for e in data["events"]]
    emit_table(
        events,
        [
            ("at", "AT (UTC)"),
            ("to", "STATE"),
            ("seconds_in_state", "SECONDS"),
            ("detail", "DETAIL"),
        ],
        title="timeline",
    )


SNAPSHOT_COLUMNS = [
    ("id", "SNAPSHOT"),
    ("started", "STARTED (UTC)"),
    ("state", "STATE"),
    ("size_gib", "SIZE (GiB)"),
    ("run_id", "RUN"),
]


@app.command()
def snapshots(profile: ProfileOpt, as_json: JsonOpt = False) -> None:
    """The profile's snapshots, newest first, with their current state."""
    from ..commands.snapshots import list_snapshots
    from .render import emit, short_time

    rows = list_snapshots(_app(), profile)
    if not as_json:
        rows = [{**r, "started": short_time(r["started_at"])} for r in rows]
    emit(rows, as_json=as_json, columns=SNAPSHOT_COLUMNS)


@app.command()
def prune(
    profile: ProfileOpt,
    keep_last: Annotated[
        int | None, typer.Option("--keep-last", help="Keep the N newest.", show_default=False)
    ] = None,
    keep_daily: Annotated[
        int | None,
        typer.Option("--keep-daily", help="Newest of each of the last N days.", show_default=False),
    ] = None,
    keep_weekly: Annotated[
        int | None,
        typer.Option(
            "--keep-weekly", help="Newest of each of the last N ISO weeks.", show_default=False
        ),
    ] = None,
    keep_monthly: Annotated[
        int | None,
        typer.Option(
            "--keep-monthly", help="Newest of each of the last N months.", show_default=False
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Delete; without it, only show.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete the profile's snapshots no rule keeps (restic-style rules, UTC). A dry run
    unless --yes; a pending snapshot is never deleted."""
    from ..commands.snapshots import policy_from_flags
    from ..commands.snapshots import prune as prune_snapshots
    from ..errors import CloudError
    from .render import emit, short_time

    policy = policy_from_flags(keep_last, keep_daily, keep_weekly, keep_monthly)
    result = prune_snapshots(_app(), profile, policy, yes=yes)
    if as_json:
        emit(result, as_json=True, columns=[])
    else:
        from rich.markup import escape  # an AWS error message may hold [brackets]

        rows = [
            {
                **r,
                "started": short_time(r["started_at"]),
                "why": escape(
                    "; ".join(r["reasons"]) + (f"; {r['error']}" if r.get("error") else "")
                ),
            }
            for r in result["snapshots"]
        ]
        emit(
            rows,
            as_json=False,
            columns=[*SNAPSHOT_COLUMNS[:3], ("action", "ACTION"), ("why", "WHY")],
        )
    if result["dry_run"]:
        typer.echo(
            f"dry run ({result['policy']}): would delete {result['removed']} of "
            f"{len(result['snapshots'])} snapshots; pass --yes to delete them",
            err=True,
        )
    if result["failed"]:
        raise CloudError(
            f"{result['failed']} of {result['removed'] + result['failed']} snapshot deletions "
            "failed (see the table)",
            hint="fix the cause shown and prune again",
        )


@app.command()
def cost(profile: ProfileOpt, as_json: JsonOpt = False) -> None:
    """Estimate the profile's monthly bill: volume, snapshots, instance time."""
    from ..commands.cost import estimate
    from .render import emit, emit_table

    result = estimate(_app(), profile)
    if as_json:
        emit(result, as_json=True, columns=[])
        return

    def money(value: float | None, digits: int = 2) -> str | None:
        return None if value is None else f"${value:.{digits}f}"

    from rich.markup import escape  # the table renders markup: "[prices]" would vanish

    rows = [
        {
            **i,
            "quantity": None if i["quantity"] is None else f"{i['quantity']:.2f} {i['unit']}",
            "price": money(i["unit_price_usd"], 4),
            "monthly": money(i["monthly_usd"]),
            "basis": escape(i["basis"]),
        }
        for i in result["items"]
    ]
    rows.append({"item": "total", "monthly": money(result["total_monthly_usd"])})
    emit(
        rows,
        as_json=False,
        columns=[
            ("item", "ITEM"),
            ("quantity", "QUANTITY"),
            ("price", "PRICE (USD)"),
            ("monthly", "PER MONTH"),
            ("basis", "BASIS"),
        ],
        title=escape(f"{result['profile']} ({result['region']})"),
    )
    notes = [f"prices: {result['prices']}", *result["notes"]]
    emit_table([{"note": escape(n)} for n in notes], [("note", "NOTE")])


@app.command()
def doctor(
    profile: Annotated[
        str | None,
        typer.Option("--profile", "-p", help="Also check this profile's cloud resources."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check rsync, ssh, the config, the database and AWS access (and with --profile the
    region, volume, AMI and security groups). Exit 0 when all pass, 3 otherwise."""
    from ..commands.doctor import EXIT_FAILED, as_rows, run_checks
    from ..config import default_config_path
    from ..paths import default_db_url
    from .render import emit

    checks = run_checks(
        config_path=OPTIONS.config or default_config_path(),
        db_url=OPTIONS.db or default_db_url(),
        profile_name=profile,
    )
    emit(
        as_rows(checks),
        as_json=as_json,
        columns=[("check", "CHECK"), ("status", "STATUS"), ("detail", "DETAIL"), ("fix", "FIX")],
    )
    if any(c.failed for c in checks):
        raise typer.Exit(EXIT_FAILED)


@app.command()
def schedule(
    profile: ProfileOpt,
    systemd: Annotated[
        bool, typer.Option("--systemd", help="Print a systemd service and timer.")
    ] = False,
    cron: Annotated[bool, typer.Option("--cron", help="Print a crontab line.")] = False,
    at: Annotated[
        str | None,
        typer.Option(
            "--at", help="Daily at HH:MM, local time (default 03:00).", show_default=False
        ),
    ] = None,
    on_calendar: Annotated[
        str | None,
        typer.Option(
            "--on-calendar",
            help="systemd OnCalendar expression, e.g. 'Mon..Fri 02:00' (--systemd only).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print what runs `ec2backup --quiet run --profile P` on a schedule, never two at once
    (flock -n). It only prints; install the output yourself."""
    from ..commands.schedule import schedule as schedule_text
    from ..paths import default_config_path, default_data_dir

    text = schedule_text(
        profile,
        config_path=OPTIONS.config or default_config_path(),
        db_url=OPTIONS.db,
        data_dir=default_data_dir(),
        systemd=systemd,
        cron=cron,
        at=at,
        on_calendar=on_calendar,
    )
    typer.echo(text, nl=False)


@app.command()
def restore(
    to: Annotated[Path, typer.Option("--to", help="Directory to restore into.")],
    run: Annotated[
        str | None, typer.Option("--run", help="Restore the snapshot of this backup run.")
    ] = None,
    snapshot: Annotated[
        str | None, typer.Option("--snapshot", help="Restore this snapshot (needs --profile).")
    ] = None,
    live: Annotated[
        bool, typer.Option("--live", help="Restore from the live volume, read-only.")
    ] = False,
    profile: Annotated[str | None, typer.Option("--profile", "-p")] = None,
    path: Annotated[
        str | None, typer.Option("--path", help="Only this path under the backup (e.g. home/docs).")
    ] = None,
) -> None:
    """Copy a backup back: a temporary volume from the snapshot (deleted afterwards), or the
    live volume, is mounted read-only on a fresh instance and rsynced into --to. Nothing in
    --to is deleted. Prints the run id."""
    from ..commands.restore import start_restore

    with _running() as app:
        result = start_restore(
            app,
            to=to,
            run_id=run,
            snapshot_id=snapshot,
            profile_name=profile,
            live=live,
            path=path,
        )
    typer.echo(result.id)


@app.command()
def verify(profile: ProfileOpt, as_json: JsonOpt = False) -> None:
    """Compare the sources with the volume's copy by checksum (read-only) and list each
    difference. Exit 0 when they match, 1 when they differ."""
    from ..commands.backup import differences, start_verify
    from .render import emit_json

    with _running() as app:
        result = start_verify(app, profile)
    found = differences(result)
    if as_json:
        emit_json({"run_id": result.id, "matches": not found, "differences": found})
    else:
        for line in found:
            typer.echo(line)
        typer.echo(
            f"run {result.id}: " + (f"{len(found)} differences" if found else "the volume matches"),
            err=True,
        )
    if found:
        raise typer.Exit(1)
