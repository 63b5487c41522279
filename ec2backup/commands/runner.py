"""Creating a run, driving it with the engine, and resuming it.

Bad input is found before anything is created: the profile is validated, the sources and the
local tools are checked, and the volume is looked at (read-only calls) before a run is
recorded or an instance launched."""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..config import Profile
from ..core.leftovers import Leftovers, aftermath, leftovers
from ..core.states import (
    BACKUP_KINDS,
    FINAL_STATES,
    TEMPORARY_VOLUME_KINDS,
    RunKind,
    RunState,
    fire,
)
from ..core.times import utcnow
from ..db import leases
from ..db.models import Event, Run
from ..db.recorder import RunRecorder
from ..errors import Aftermath, Ec2BackupError, RunStateError, set_aftermath
from .app import App

if TYPE_CHECKING:
    from ..run.context import StepContext

log = logging.getLogger(__name__)


def client_cidr(profile: Profile) -> Callable[[], str | None]:
    """Where this run's SSH comes from, looked up once when first asked: the profile's
    ``allow_ssh_from``, else this host's public address now. Unknown (the lookup failed): None,
    and the security group is left as it is."""
    found: list[str | None] = []

    def cidr() -> str | None:
        if not found:
            from ..adapters.address import checkip_url, ssh_cidr

            try:
                found.append(ssh_cidr(profile.allow_ssh_from))
            except (OSError, ValueError) as exc:
                log.warning("cannot find this host's public address (%s: %s)", checkip_url(), exc)
                found.append(None)
        return found[0]

    return cidr


def new_run_id() -> str:
    # Sorts by time, reads at a glance, and leaves room in a 64-character ClientToken.
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


# --- starting and resuming runs ----------------------------------------------------------


def _create_run(
    app: App,
    run_id: str,
    kind: RunKind,
    profile: Profile,
    extra: dict[str, Any],
    *,
    volume_id: str | None = None,
    warnings: list[str] | None = None,
) -> Run:
    now = utcnow()
    run = Run(
        id=run_id,
        kind=kind,
        profile=profile.name,
        state=RunState.CREATED,
        host=socket.gethostname(),
        volume_id=volume_id or (None if kind == RunKind.RESTORE else profile.volume_id),
        launch_attempt=0,
        warnings=list(warnings or []),
        config={"profile": profile.model_dump(mode="json"), **extra},
        created_at=now,
        updated_at=now,
    )
    with app.store.session() as session:
        session.add(run)
        session.add(Event(run_id=run_id, from_state=None, to_state=RunState.CREATED, at=now))
        session.commit()
    return run


def resume(app: App, run_id: str, *, clean: bool = False, snapshot: bool = False) -> Run:
    """Continue a run from its last committed state; with ``clean``, force-clean it instead
    (unmount, detach, terminate; end ``aborted``)."""
    with app.store.session() as session:
        run = app.store.get_run(session, run_id)
        if run.state in FINAL_STATES:
            raise RunStateError(
                f"run {run_id} is already {run.state}; there is nothing to "
                + ("clean up" if clean else "resume"),
                hint="start a new one with `ec2backup run`",
            )
        keys = [leases.run_key(run.id)]
        if run.volume_id:
            keys.append(leases.volume_key(run.volume_id))
        if run.kind == RunKind.SNAPSHOT_BACKUP:
            keys.append(leases.profile_key(run.profile))
    with leases.held(app.store, run_id, keys):
        return _drive(app, run_id, resuming=True, clean=clean, snapshot=snapshot)


def _drive(
    app: App, run_id: str, *, resuming: bool = False, clean: bool = False, snapshot: bool = False
) -> Run:
    """Drive a run whose leases this process holds. Whatever stops it carries what it left in
    the cloud (``errors.aftermath_of``), set here and nowhere else."""
    from ..adapters.keys import generate_host_key, generate_run_key
    from ..run import engine
    from ..run.context import StepContext
    from ..run.userdata import HostKeyPair

    with app.store.session() as session:
        run = app.store.get_run(session, run_id)
        ctx: StepContext | None = None
        try:
            profile = Profile.model_validate(run.config["profile"])
            run_dir = app.run_dir(run.id)
            key_path, public_key = generate_run_key(run_dir)
            host_key = HostKeyPair(*generate_host_key(run_dir))
            ctx = StepContext(
                run=run,
                recorder=RunRecorder(session, run),
                profile=profile,
                ec2=app.adapters.ec2(profile.region, run.id),
                connector=app.adapters.connector(),
                syncer=app.adapters.syncer(),
                run_dir=run_dir,
                key_path=key_path,
                public_key=public_key,
                host_key=host_key,
                progress=app.progress,
                on_state=app.on_state,
                on_transfer=app.on_transfer,
                keep_instance=app.keep_instance,
                client_cidr=client_cidr(profile),
            )
            engine.bind(run, ctx)
            _drive_bound(app, ctx, resuming=resuming, clean=clean, snapshot=snapshot)
        except BaseException as exc:
            set_aftermath(exc, left_by(run_id, run, exc, None if ctx is None else ctx.left_seen))
            raise
        return run


def _drive_bound(
    app: App, ctx: StepContext, *, resuming: bool, clean: bool, snapshot: bool
) -> None:
    """The engine's part of ``_drive``, then what a finished run does; the profile's hook
    and metrics whatever the outcome."""
    from ..adapters.keys import remove_run_dir
    from ..run import engine

    run, profile = ctx.run, ctx.profile
    failure: BaseException | None = None
    try:
        prefetch = None
        if run.kind in BACKUP_KINDS and not clean:
            from .growth import Prefetch

            prefetch = Prefetch(app, profile, exclude=run.id)
        if clean:
            engine.clean(ctx, snapshot=snapshot)
        else:
            if resuming and run.state == RunState.FAILED:
                run.error = None
                run.error_type = None
                fire(run, "resume", detail=f"resumed from {run.failed_from}")
            engine.drive(ctx)
        if run.kind in BACKUP_KINDS and run.state == RunState.DONE:
            ctx.recorder.session.commit()
            if prefetch is not None:
                # Recorded before retention prunes: it may delete a snapshot compared with.
                prefetch.finish(app)
            if profile.retention:
                from .snapshots import apply_profile_retention

                apply_profile_retention(app, profile)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        # The run's key is needed only while the run can still be resumed.
        if run.state in FINAL_STATES:
            remove_run_dir(ctx.run_dir)
        _after_run(app, ctx, profile, failure)


def _after_run(app: App, ctx: StepContext, profile: Profile, failure: BaseException | None) -> None:
    """The profile's hook and metrics for the run just driven; what they warn of is kept on
    the run. Never raises: the run's own outcome stands."""
    from .hooks import Outcome, after_run

    run = ctx.run
    try:
        error = ""
        if failure is not None:
            error = failure.one_line() if isinstance(failure, Ec2BackupError) else str(failure)
        warnings = after_run(app, profile, Outcome.of(run, error))
        if warnings:
            run.warnings = [*run.warnings, *warnings]
            ctx.recorder.save()
    except Exception as exc:  # the database may be what failed the run
        log.warning("run %s: after the run: %s", run.id, exc)


def left_by(run_id: str, run: Run, exc: BaseException, seen: tuple[str, ...] | None) -> Aftermath:
    """What the stopped run left in the cloud: what EC2 showed once the engine released what
    it could (``seen``); else what the run's record says. The record speaks only where EC2
    could not be asked: the failure came before the engine was bound (a key file, the
    profile), after the run was done (its retention), or EC2 itself did not answer."""
    resumable = not isinstance(exc, Ec2BackupError) or exc.resumable
    try:
        state, failed_from = str(run.state), run.failed_from
        left = seen if seen is not None else recorded_leftovers(run).items()
    except Exception as read_error:  # the database is what failed: its record cannot say
        log.warning("run %s: cannot read its record: %s", run_id, read_error)
        return Aftermath(run_id, seen, observed=seen is not None, ended=False, resumable=resumable)
    return aftermath(
        run_id, state, failed_from, left, observed=seen is not None, error_resumable=resumable
    )


def recorded_leftovers(run: Run) -> Leftovers:
    """What the run left, by the states it entered (core/leftovers.py)."""
    from sqlalchemy import select
    from sqlalchemy.orm import object_session

    # From the database: events appended since ``run.events`` was loaded are not in it.
    session = object_session(run)
    states = (
        list(
            session.scalars(select(Event.to_state).where(Event.run_id == run.id).order_by(Event.id))
        )
        if session is not None
        else [event.to_state for event in run.events]
    )
    return leftovers(
        run.kind,
        states,
        instance_id=run.instance_id,
        volume_id=run.volume_id,
        temporary_volume=run.kind in TEMPORARY_VOLUME_KINDS
        and not (run.kind == RunKind.RESTORE and run.config.get("live")),
    )
