"""The next run heals: before a run of a profile starts, every earlier run of that profile that
is not over and that no live process drives (no live lease: ``db/leases.py``, never a guess) is
finished or force-cleaned, so that a crash, a kill or a lost laptop never leaves the profile
blocked ("volume ... is attached") or an instance billing.

Which, for a run found abandoned:

* an ``init``: resumed by ``run``, ``verify`` and ``restore`` (they need its volume formatted
  and the profile written); force-cleaned by a new ``init`` of the same profile, which starts
  over (the old init's volume is deleted: it holds nothing yet). The same for a snapshots-only
  init (its profile is in the file only once its first snapshot exists: then only deleting its
  work volume is left; a new init deletes that empty snapshot);
* a ``backup`` whose copy had finished (a ``synced`` event) and that needs no new instance to
  end (its instance is still there, or it is past unmounting): resumed, so that it ends with
  its snapshot; any other backup: force-cleaned (its copy is incomplete: the new run copies
  anyway; a finished copy is still snapshotted by the clean);
* a ``restore`` or ``verify``: force-cleaned (nobody waits for it any more; a restore writes
  into a local directory and must not do so unasked); its temporary volume is deleted.

A resume that fails is followed by a force-clean. SSH rules that runs of the profile added and
did not remove (``run/steps/access.py``) are removed once their run is not live. What was done
and why is logged and recorded on the new run (``warnings``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from ..core.states import FINAL_STATES, INIT_KINDS, RunKind, RunState, needs_instance
from ..core.times import utcnow
from ..db import leases
from ..db.models import Event, Run
from ..errors import Ec2BackupError, LeaseHeldError
from .app import App

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    run_id: str
    kind: str
    state: str
    clean: bool  # force-clean, else resume
    why: str

    def note(self) -> str:
        action = "force-cleaned" if self.clean else "resumed"
        what = f"{self.kind}, abandoned in {self.state}"
        return f"healed run {self.run_id} ({what}): {action}, {self.why}"


def unfinished_runs(app: App, profile: str, kinds: Sequence[RunKind] = tuple(RunKind)) -> list[Run]:
    """The profile's runs of these kinds that are not over (failed ones included), oldest first."""
    with app.store.session() as session:
        runs = list(
            session.scalars(
                select(Run)
                .where(
                    Run.profile == profile,
                    Run.state.not_in([str(s) for s in FINAL_STATES]),
                    Run.kind.in_([str(k) for k in kinds]),
                )
                .order_by(Run.created_at)
            )
        )
        session.expunge_all()
    return runs


def decide(app: App, run: Run, *, starting_over: bool = False) -> Decision:
    """Resume or force-clean ``run`` (abandoned), and why. ``starting_over``: for a new init
    of the profile, which replaces an unfinished one."""
    state = RunState(run.failed_from or run.state if run.state == RunState.FAILED else run.state)
    kind = RunKind(run.kind)

    def decision(clean: bool, why: str) -> Decision:
        return Decision(run.id, run.kind, str(state), clean, why)

    if state == RunState.CLEANING:
        return decision(True, "it was being force-cleaned")
    if kind in INIT_KINDS:
        if starting_over:
            return decision(True, "a new init of the profile starts over (what it made is empty)")
        return decision(False, "the profile's init must finish first")
    if kind in (RunKind.RESTORE, RunKind.VERIFY):
        return decision(True, f"nobody waits for that {run.kind} any more")
    synced = any(e.to_state == RunState.SYNCED for e in _events(app, run.id))
    if not synced:
        return decision(True, "its copy did not finish (this run copies again)")
    if state not in needs_instance(kind) or _instance_alive(app, run):
        return decision(False, "its copy had finished: only its cleanup and snapshot were left")
    return decision(True, "its copy had finished but its instance is gone (snapshot kept)")


def _events(app: App, run_id: str) -> list[Event]:
    with app.store.session() as session:
        events = list(app.store.get_run(session, run_id).events)
        session.expunge_all()
    return events


def _instance_alive(app: App, run: Run) -> bool:
    if not run.instance_id:
        return False
    from ..config import Profile

    region = Profile.model_validate(run.config["profile"]).region
    instance = app.adapters.ec2(region, run.id).get_instance(run.instance_id)
    return instance is not None and instance.state in ("pending", "running")


def heal(
    app: App,
    profile: str,
    region: str,
    *,
    held: Sequence[str] = (),
    kinds: Sequence[RunKind] = tuple(RunKind),
    starting_over: bool = False,
) -> list[str]:
    """Heal the profile's abandoned runs of ``kinds``; the notes of what was done. ``held``:
    the leases the caller already holds (a run being healed needs its own and its volume's).
    A run that a live process drives is left to it; one that is an init of the profile is a
    conflict (``LeaseHeldError``): the profile is not ready while it runs."""
    from .runner import _drive

    notes: list[str] = []
    live = leases.live_leases(app.store)
    for run in unfinished_runs(app, profile, kinds):
        if run.id in live:
            if run.kind in INIT_KINDS:
                raise LeaseHeldError(
                    f"profile {profile!r} is being initialised by "
                    f"{leases.describe(live[run.id], utcnow())}",
                    hint="wait for the init to finish",
                )
            continue
        decision = decide(app, run, starting_over=starting_over)
        log.warning("%s", decision.note())
        keys = [leases.run_key(run.id)]
        if run.volume_id and leases.volume_key(run.volume_id) not in held:
            keys.append(leases.volume_key(run.volume_id))
        try:
            with leases.held(app.store, run.id, keys):
                try:
                    _drive(app, run.id, resuming=True, clean=decision.clean)
                except Ec2BackupError as exc:
                    if decision.clean:
                        raise
                    log.warning("run %s: the resume failed (%s); force-cleaning it", run.id, exc)
                    _drive(app, run.id, resuming=True, clean=True)
                    decision = Decision(
                        run.id, run.kind, decision.state, True, f"its resume failed: {exc.message}"
                    )
        except LeaseHeldError:
            continue  # another process took it over just now: it is not abandoned
        notes.append(decision.note())
    # SSH rules that runs of the profile added and left (killed before they removed them).
    from .reap import reap_ssh_rules

    removed = [
        v
        for v in reap_ssh_rules(
            app.store, app.adapters.ec2(region, None), act=True, profile=profile
        )
        if v.orphan
    ]
    if removed:
        note = "removed SSH rules left by runs that are over: " + ", ".join(
            f"{v.rule_id} (run {v.run_id})" for v in removed
        )
        log.warning("%s", note)
        notes.append(note)
    return notes
