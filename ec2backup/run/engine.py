"""Drives one run through its steps, committing each state before the step's side effect.

    state = created
    loop:
        step = next_step(kind, state)            # states.py, pure
        if state is not step.active: begin_<step>  -> committed with an event
        detail = ensure_<step>(ctx)              # run/steps/: observe, act, wait
        complete_<step>(detail)                  -> committed with an event

A crash (even SIGKILL) leaves the run in the last committed state; ``resume`` calls ``drive``
again and the active step re-observes before acting. An exception or an interrupt is recorded
as ``failed`` (keeping ``failed_from``) before it propagates.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from transitions import EventData

from ..core.leftovers import instance_item, temporary_volume_item
from ..core.states import (
    BACKUP_KINDS,
    ENDED,
    TEMPORARY_VOLUME_KINDS,
    TERMINATE,
    RunKind,
    RunState,
    Step,
    build_machine,
    fire,
    needs_instance,
    next_step,
    path,
)
from ..core.tags import TAG_RUN_ID
from ..db.models import Run
from ..errors import Ec2BackupError, Interrupted, Terminated, is_transient
from ..faults import crash_point
from .context import StepContext
from .steps import ENSURE
from .steps.access import ensure_ssh_access, release_ssh_access
from .steps.attachment import ensure_detached
from .steps.filesystem import try_unmount
from .steps.instance import ensure_terminated, instance_alive
from .steps.profile import undo_init, undo_snapshot_init
from .steps.snapshot import ensure_snapshot
from .steps.volume import adopt_unrecorded_volume, ensure_volume_deleted, is_temporary_volume_of

# Force-clean bounds: how long to try SSH for the unmount, and to wait before forcing a detach.
CLEAN_SSH_SECONDS = 30.0
CLEAN_DETACH_SECONDS = 60.0
# Pauses before the 2nd and 3rd try of a step that failed for a transient reason.
STEP_RETRY_DELAYS = (1.0, 4.0)
# Instance states in which something still runs (and bills, or soon may).
STILL_RUNNING = ("pending", "running", "stopping", "stopped")

log = logging.getLogger(__name__)


def bind(run: Run, ctx: StepContext) -> None:
    def on_change(event: EventData) -> None:
        ctx.recorder(event)  # committed first: the display follows the database
        ctx.on_state(str(run.state))

    build_machine(run, RunKind(run.kind), on_change=on_change)


def drive(ctx: StepContext) -> Run:
    """Run ``ctx.run`` from its current state to ``done``. The run's machine must be bound."""
    run = ctx.run
    kind = RunKind(run.kind)
    if run.state == RunState.CLEANING:  # a force-clean that failed, resumed
        return clean(ctx)
    try:
        if _reaches_the_instance(kind, RunState(run.state)):
            log.info("run %s: %s", run.id, ensure_ssh_access(ctx))
        if RunState(run.state) in needs_instance(kind) and not instance_alive(ctx):
            log.warning("run %s: instance %s is gone; launching a new one", run.id, run.instance_id)
            fire(run, "relaunch", detail=f"instance {run.instance_id} is no longer running")
        while True:
            state = RunState(run.state)
            step = next_step(kind, state)
            if step is None:
                if state != RunState.DONE:
                    fire(run, "finish")
                    log.info("run %s: done", run.id)
                crash_point(ENDED)
                _quietly(ctx, release_ssh_access)
                return run
            if state != step.active:
                fire(run, f"begin_{step.name}")
            log.info("run %s: %s", run.id, step.active)
            crash_point(step.before)
            detail = run_step(ctx, step)
            crash_point(step.after)
            fire(run, f"complete_{step.name}", detail=detail)
            log.info("run %s: %s (%s)", run.id, step.result, detail)
    except Interrupted as exc:
        exc.run_id = run.id
        record_failure(ctx, exc)
        after_failure(ctx)
        raise
    except KeyboardInterrupt as exc:
        interrupted = Interrupted("SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C", run.id)
        record_failure(ctx, interrupted)
        after_failure(ctx)
        raise interrupted from exc
    except Exception as exc:
        record_failure(ctx, exc)
        if isinstance(exc, Ec2BackupError) and not exc.resumable and not ctx.keep_instance:
            # Resuming cannot fix this (a refused host key, data that does not fit): clean up
            # now rather than leave an instance waiting for a resume that must not happen.
            log.warning("run %s: a resume could not fix this; cleaning up", run.id)
            clean(ctx)
            exc.hint = (exc.hint + "; " if exc.hint else "") + (
                f"the run was cleaned up and aborted (`ec2backup show {run.id}`)"
            )
            ctx.left_seen = observe_leftovers(ctx)
        else:
            after_failure(ctx)
        raise
    finally:
        ctx.close_host()


def run_step(ctx: StepContext, step: Step) -> str:
    """Run one step, again on a fresh connection if it failed for a transient reason (a
    dropped connection, throttling): steps are idempotent, so a re-run picks up the pieces."""
    for attempt in range(len(STEP_RETRY_DELAYS) + 1):
        try:
            return ENSURE[step](ctx)
        except Ec2BackupError as exc:
            if attempt == len(STEP_RETRY_DELAYS) or not is_transient(exc):
                raise
            note = f"{step.name} retried after: {exc.message}"
            log.warning("run %s: %s (%d/%d)", ctx.run.id, note, attempt + 1, len(STEP_RETRY_DELAYS))
            ctx.run.warnings = [*ctx.run.warnings, note]
            ctx.recorder.save()
            ctx.close_host()
            time.sleep(STEP_RETRY_DELAYS[attempt])
    raise AssertionError("unreachable")


def clean(ctx: StepContext, *, snapshot: bool = False) -> Run:
    """Force-clean: take the run down the cleanup path from wherever it stands and end it
    ``aborted``. A snapshot is made only if this run's sync had finished, or if asked. An
    init leaves nothing: its volume and its profile entry are removed (a snapshots-only init:
    its work volume, its profile entry and its first snapshot)."""
    run = ctx.run
    try:
        if run.state != RunState.CLEANING:
            origin = run.failed_from if run.state == RunState.FAILED else run.state
            fire(run, "clean", detail=f"force-clean from {origin}")
        if run.instance_id:  # the unmount needs SSH
            _quietly(ctx, ensure_ssh_access)
        notes = [try_unmount(ctx, CLEAN_SSH_SECONDS)]
        adopt_unrecorded_volume(ctx)
        volume_there = run.volume_id is not None and ctx.ec2.get_volume(run.volume_id) is not None
        if volume_there:
            notes.append(ensure_detached(ctx, force_after=CLEAN_DETACH_SECONDS))
        elif run.volume_id:
            notes.append(f"volume {run.volume_id} is gone")
        notes.append(ensure_terminated(ctx))
        if run.kind == RunKind.INIT:
            notes += undo_init(ctx)
        elif run.kind == RunKind.SNAPSHOT_INIT:
            notes += undo_snapshot_init(ctx)
        synced = any(e.to_state == RunState.SYNCED for e in run.events)
        if run.kind in BACKUP_KINDS and volume_there and (synced or snapshot):
            # Before a temporary volume is deleted: its snapshot is the backup.
            notes.append(ensure_snapshot(ctx))
        elif run.kind in BACKUP_KINDS:
            notes.append("no snapshot (the sync did not finish)")
        if run.kind in TEMPORARY_VOLUME_KINDS and volume_there:
            notes.append(ensure_volume_deleted(ctx))
        fire(run, "abort", detail="; ".join(notes))
        log.info("run %s: aborted (%s)", run.id, "; ".join(notes))
        crash_point(ENDED)
        _quietly(ctx, release_ssh_access)
        return run
    except (Exception, KeyboardInterrupt) as exc:
        record_failure(ctx, exc)
        ctx.left_seen = observe_leftovers(ctx)  # what the force-clean did not get to
        raise
    finally:
        ctx.close_host()


def after_failure(ctx: StepContext) -> None:
    """Release a failed run's instance (the default) or keep it (``--keep-instance``), then
    look at what EC2 still shows of the run (``ctx.left_seen``). The run stays ``failed``
    with its progress either way."""
    run = ctx.run
    ctx.close_host()  # and stop keeping the instance alive: a kept one ends after its idle bound
    if ctx.keep_instance:
        ctx.left_seen = observe_leftovers(ctx)
        if ctx.left_seen:
            log.warning(
                "run %s: kept for debugging (--keep-instance): %s; it powers itself off after "
                "%d idle minutes",
                run.id,
                ", ".join(ctx.left_seen),
                ctx.profile.instance_idle_minutes,
            )
        return
    try:
        notes = release(ctx)
    except (Exception, KeyboardInterrupt, Interrupted) as release_error:
        detail = str(release_error) or type(release_error).__name__
        log.warning("run %s: could not release its instance after the failure: %s", run.id, detail)
        notes = [f"the release failed: {detail}"]
    with contextlib.suppress(Exception):
        ctx.recorder.session.rollback()
        run.warnings = [*run.warnings, "after the failure: " + "; ".join(notes)]
        ctx.recorder.save()
    _quietly(ctx, release_ssh_access)
    ctx.left_seen = observe_leftovers(ctx)


def _reaches_the_instance(kind: RunKind, state: RunState) -> bool:
    """Whether what is left of the run may log in to its instance (before it terminates)."""
    states = path(kind)
    return state in states and states.index(state) < states.index(TERMINATE.active)


def _quietly(ctx: StepContext, action: Callable[[StepContext], str]) -> None:
    """An action whose failure must not fail the run: what it leaves is swept later (the
    next run of the profile, reap)."""
    try:
        log.info("run %s: %s", ctx.run.id, action(ctx))
    except Ec2BackupError as exc:
        log.warning("run %s: %s", ctx.run.id, exc.one_line())


def release(ctx: StepContext) -> list[str]:
    """A failed run's instance ended: unmount (if it answers), detach, terminate. Nothing
    of the run's progress is lost: ``resume`` relaunches from the state it failed in."""
    run = ctx.run
    if not run.instance_id and not ctx.ec2.find_instances({TAG_RUN_ID: run.id}):
        return ["no instance to release"]
    log.info("run %s: releasing its instance after the failure", run.id)
    notes = [try_unmount(ctx, CLEAN_SSH_SECONDS)]
    volume = ctx.ec2.get_volume(run.volume_id) if run.volume_id else None
    if volume is not None and run.instance_id and volume.attachment_to(run.instance_id):
        notes.append(ensure_detached(ctx, force_after=CLEAN_DETACH_SECONDS))
    notes.append(ensure_terminated(ctx))
    log.info("run %s: released (%s)", run.id, "; ".join(notes))
    return notes


def observe_leftovers(ctx: StepContext) -> tuple[str, ...] | None:
    """What of the run is still in the cloud, as EC2 says (read-only calls): its instances
    that still run, with the volume if it is attached, and a volume it made for itself. None
    when that cannot be seen: the message then says what the run's record says."""
    run = ctx.run
    try:
        instances = ctx.ec2.find_instances({TAG_RUN_ID: run.id}, STILL_RUNNING)
        volume = ctx.ec2.get_volume(run.volume_id) if run.volume_id else None
    except Exception as exc:  # EC2 did not answer (or the database behind the run's fields)
        log.warning("cannot see what the stopped run left: %s", exc)
        return None
    if volume is not None and volume.state in ("deleting", "deleted"):
        volume = None
    temporary = volume is not None and is_temporary_volume_of(volume, run.id)
    left, named = [], False
    for instance in instances:
        attached = volume.id if volume and volume.attachment_to(instance.id) else None
        named = named or attached is not None
        left.append(instance_item(instance.id, attached, temporary=temporary))
    if volume is not None and temporary and not named:
        left.append(temporary_volume_item(volume.id))
    return tuple(left)


def record_failure(ctx: StepContext, exc: BaseException) -> None:
    run = ctx.run
    message = exc.one_line() if isinstance(exc, Ec2BackupError) else str(exc) or repr(exc)
    if isinstance(exc, Ec2BackupError) and exc.run_id is None:
        exc.run_id = run.id
    try:
        ctx.recorder.session.rollback()
        run.error = message
        run.error_type = type(exc).__name__
        if run.state not in (RunState.FAILED, RunState.DONE, RunState.ABORTED):
            fire(run, "fail", detail=message)
    except Exception:  # the database itself may be what failed; the original error matters
        log.exception("run %s: could not record the failure", run.id)
