"""Finding and ending instances that no live run owns.

An instance is ours when it carries ``ec2backup:managed=true``; nothing else is ever touched.
Whether a live run owns it is decided from facts, never guessed:

1. its run holds a live lease in this database          -> owned: left alone, always;
2. launched less than ``--older-than`` ago              -> left alone (young);
3. its ``ec2backup:expires-at`` tag has passed          -> orphan;
4. its run is unknown to this database                  -> orphan (the tags are enough: a lost
                                                           database still lets reap work);
5. its run has ended (done, failed, aborted)            -> orphan;
6. its run is live but no process holds its lease       -> orphan (abandoned).

Acting on orphans: detach our (tagged) volumes but their root volume from them, terminate them in
batches (the root volume goes with the instance: DeleteOnTermination), and mark
their runs ``failed`` with ``AbandonedRunError`` so that ``resume`` (which relaunches) or
``resume --clean`` can finish them. Temporary volumes (``ec2backup:role=restore`` of a restore,
``role=work`` of a backup in snapshots-only storage) of runs that are over, abandoned or
unknown are deleted; so is a volume an ``init`` made that no profile names and no live run
owns (its init known here, unfinished, abandoned, the volume used by no other run). A backup
volume that may hold backups never is, nor any snapshot (the first snapshot of a snapshots-only
init that did not finish is deleted by that init's force-clean: run/steps/profile.py). SSH
rules that runs added to a security group are removed once their run holds no live lease. Dry
run unless asked.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ..core.states import ENDED_STATES, RunKind, RunState, build_machine, fire
from ..core.tags import (
    LIVE_INSTANCE_STATES,
    TAG_EXPIRES_AT,
    TAG_KIND,
    TAG_MANAGED,
    TAG_PROFILE,
    TAG_ROLE,
    TAG_RUN_ID,
)
from ..core.times import iso, utcnow
from ..db.leases import describe, live_leases
from ..db.models import Lease, Run
from ..db.recorder import RunRecorder
from ..db.store import Store
from ..errors import AbandonedRunError, ConfigError, UserInputError
from ..ports import Ec2, Instance
from ..run.steps.volume import TEMPORARY_ROLES

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger(__name__)

# shutting-down is already on its way out; terminating it again would only add calls.
REAPABLE_STATES = tuple(s for s in LIVE_INSTANCE_STATES if s != "shutting-down")


@dataclass
class Verdict:
    instance: Instance
    run_id: str | None
    orphan: bool
    reason: str
    volumes: list[str] = field(default_factory=list)
    action: str = ""

    def row(self) -> dict[str, object]:
        return {
            "instance_id": self.instance.id,
            "state": self.instance.state,
            "launched_at": iso(self.instance.launch_time),
            "run_id": self.run_id,
            "orphan": self.orphan,
            "reason": self.reason,
            "volumes": self.volumes,
            "action": self.action,
        }


_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise UserInputError(
            f"--older-than {text!r} is not a duration", hint="use e.g. 90s, 30m, 2h, 1d or 1w"
        )
    return timedelta(**{_UNIT[match.group(2)]: int(match.group(1))})


def _expired(instance: Instance, now: datetime) -> str | None:
    value = instance.tags.get(TAG_EXPIRES_AT)
    if not value:
        return None
    try:
        expires = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return f"its expires-at tag passed ({value})" if expires <= now else None


def judge_one(
    instance: Instance,
    run: Run | None,
    lease: Lease | None,
    *,
    now: datetime,
    older_than: timedelta | None,
) -> tuple[bool, str]:
    """(orphan?, why) for one instance: the rules of the module docstring, in order."""
    run_id = instance.tags.get(TAG_RUN_ID)
    if lease is not None:
        return False, f"run {run_id} holds a live lease: {describe(lease, now)}"
    if older_than and instance.launch_time and now - instance.launch_time < older_than:
        return False, f"launched less than {older_than} ago"
    if expired := _expired(instance, now):
        return True, expired
    if run_id is None:
        return True, "no ec2backup:run-id tag"
    if run is None:
        return True, f"run {run_id} is unknown to this database"
    if run.state in ENDED_STATES:
        return True, f"run {run_id} is {run.state}"
    return True, f"run {run_id} is {run.state} but no process holds it (abandoned)"


def judge(
    instances: Sequence[Instance],
    runs: Mapping[str, Run],
    leases: Mapping[str, Lease],
    *,
    now: datetime,
    older_than: timedelta | None,
) -> list[Verdict]:
    verdicts = []
    for instance in instances:
        run_id = instance.tags.get(TAG_RUN_ID)
        orphan, reason = judge_one(
            instance,
            runs.get(run_id) if run_id else None,
            leases.get(run_id) if run_id else None,
            now=now,
            older_than=older_than,
        )
        verdicts.append(Verdict(instance, run_id, orphan, reason))
    return verdicts


def reap_region(
    store: Store,
    ec2: Ec2,
    *,
    act: bool,
    older_than: timedelta | None = None,
    now: datetime | None = None,
) -> list[Verdict]:
    now = now or utcnow()
    instances = ec2.find_instances({TAG_MANAGED: "true"}, REAPABLE_STATES)
    run_ids = {i.tags[TAG_RUN_ID] for i in instances if TAG_RUN_ID in i.tags}
    with store.session() as session:
        runs = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(run_ids)))}
        session.expunge_all()
    verdicts = judge(instances, runs, dict(live_leases(store)), now=now, older_than=older_than)
    orphans = [v for v in verdicts if v.orphan]
    if orphans:
        # Our volumes are few (one per profile, plus restores in flight): one tag-filtered
        # listing, matched here, costs one call whatever the number of orphans.
        by_instance = {v.instance.id: v for v in orphans}
        for volume in ec2.find_volumes({TAG_MANAGED: "true"}):
            for attachment in volume.attachments:
                owner = by_instance.get(attachment.instance_id)
                # Its root volume (tagged by the launch too) cannot be detached from a running
                # instance, and goes with its termination (DeleteOnTermination).
                if owner is not None and attachment.device != owner.instance.root_device:
                    owner.volumes.append(volume.id)
    for v in verdicts:
        if not v.orphan:
            v.action = "left alone"
        elif not act:
            v.action = "would detach and terminate" if v.volumes else "would terminate"
    if not act or not orphans:
        return verdicts

    for v in orphans:
        for volume_id in v.volumes:
            ec2.detach_volume(volume_id, v.instance.id)
    ec2.terminate_instances([v.instance.id for v in orphans])
    for v in orphans:
        v.action = "detached and terminated" if v.volumes else "terminated"
        log.info("reaped %s: %s", v.instance.id, v.reason)
    _mark_abandoned(store, [v for v in orphans if v.run_id in runs])
    return verdicts


@dataclass
class VolumeVerdict:
    volume_id: str
    run_id: str | None
    orphan: bool
    reason: str
    action: str = ""

    def row(self) -> dict[str, object]:
        return asdict(self)


def reap_restore_volumes(store: Store, ec2: Ec2, *, act: bool) -> list[VolumeVerdict]:
    """Temporary volumes (role=restore, and role=work of snapshots-only storage) whose run is
    over or unknown: delete them. Only unattached ones: one still attached goes once its
    instance has been reaped."""
    volumes = [
        v
        for v in ec2.find_volumes({TAG_MANAGED: "true"})
        if v.tags.get(TAG_ROLE) in TEMPORARY_ROLES
    ]
    live = live_leases(store)
    run_ids = {v.tags.get(TAG_RUN_ID) for v in volumes} - {None}
    with store.session() as session:
        runs = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(run_ids)))}
        session.expunge_all()
    verdicts = []
    for volume in volumes:
        run_id = volume.tags.get(TAG_RUN_ID)
        run = runs.get(run_id) if run_id else None
        if volume.state not in ("available", "in-use"):
            continue
        if run_id in live:
            verdict = VolumeVerdict(volume.id, run_id, False, f"run {run_id} holds a live lease")
        elif volume.attachments:
            verdict = VolumeVerdict(volume.id, run_id, False, "still attached")
        elif run is not None and run.state not in ENDED_STATES:
            verdict = VolumeVerdict(volume.id, run_id, True, f"run {run_id} is abandoned")
        elif run is None:
            verdict = VolumeVerdict(volume.id, run_id, True, "its run is unknown here")
        else:
            verdict = VolumeVerdict(volume.id, run_id, True, f"run {run_id} is {run.state}")
        if verdict.orphan:
            if act:
                ec2.delete_volume(volume.id)
                verdict.action = "deleted"
            else:
                verdict.action = "would delete"
        else:
            verdict.action = "left alone"
        verdicts.append(verdict)
    return verdicts


def profile_volumes(config_path: Path) -> dict[str, str]:
    """Volume id -> the profile of the config file naming it (none if the file is unreadable:
    then no init volume is judged orphan, see ``reap_init_volumes``)."""
    from ..config import read_document

    if not config_path.exists():
        return {}
    profiles = read_document(config_path).get("profiles", {})
    named = {}
    for name, entry in profiles.items() if isinstance(profiles, dict) else ():
        if isinstance(entry, dict) and isinstance(entry.get("volume_id"), str):
            named[entry["volume_id"]] = name
    return named


def reap_init_volumes(
    store: Store, ec2: Ec2, config_path: Path, *, act: bool
) -> list[VolumeVerdict]:
    """Volumes an ``init`` made (role=data, kind=init) that no profile and no live run owns:
    their init is known to this database, did not finish, holds no live lease, and no other
    run used the volume. Anything less certain is left alone: such a volume may hold backups
    (a run unknown here, a config file kept elsewhere)."""
    volumes = ec2.find_volumes({TAG_MANAGED: "true", TAG_ROLE: "data", TAG_KIND: "init"})
    if not volumes:
        return []
    try:
        named = profile_volumes(config_path)
    except ConfigError:
        return [
            VolumeVerdict(
                v.id, v.tags.get(TAG_RUN_ID), False, "the config file cannot be read", "left alone"
            )
            for v in volumes
        ]
    live = live_leases(store)
    run_ids = {v.tags.get(TAG_RUN_ID) for v in volumes} - {None}
    ids = [v.id for v in volumes]
    with store.session() as session:
        runs = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(run_ids)))}
        used = set(
            session.scalars(
                select(Run.volume_id).where(Run.volume_id.in_(ids), Run.kind != RunKind.INIT)
            )
        )
        session.expunge_all()
    verdicts = []
    for volume in volumes:
        run_id = volume.tags.get(TAG_RUN_ID)
        run = runs.get(run_id) if run_id else None
        if volume.state not in ("available", "in-use"):
            continue
        keep = None
        if volume.id in named:
            keep = f"profile {named[volume.id]!r} names it"
        elif run_id in live:
            keep = f"run {run_id} holds a live lease"
        elif volume.attachments:
            keep = "still attached"
        elif run is None:
            keep = f"its init {run_id} is unknown to this database: it may hold backups"
        elif run.state == RunState.DONE:
            keep = f"its init {run_id} finished"
        elif volume.id in used:
            keep = "backups were made on it"
        if keep is not None or run is None:
            verdicts.append(VolumeVerdict(volume.id, run_id, False, keep or "", "left alone"))
            continue
        verdict = VolumeVerdict(
            volume.id, run_id, True, f"its init {run_id} is {run.state} and no profile names it"
        )
        if act:
            ec2.delete_volume(volume.id)
            verdict.action = "deleted"
        else:
            verdict.action = "would delete"
        verdicts.append(verdict)
    return verdicts


@dataclass
class RuleVerdict:
    rule_id: str
    group_id: str
    run_id: str | None
    orphan: bool
    reason: str
    action: str = ""

    def row(self) -> dict[str, object]:
        return asdict(self)


def reap_ssh_rules(
    store: Store, ec2: Ec2, *, act: bool, profile: str | None = None
) -> list[RuleVerdict]:
    """SSH rules that runs added (tagged with their run id) and that no live run needs any
    more: their run holds no live lease (it is over, abandoned or unknown here). ``profile``:
    only that profile's rules."""
    tags = {TAG_MANAGED: "true", **({TAG_PROFILE: profile} if profile else {})}
    rules = [r for r in ec2.find_ingress_rules(tags) if r.tags.get(TAG_RUN_ID)]
    live = live_leases(store)
    verdicts = []
    for rule in rules:
        run_id = rule.tags[TAG_RUN_ID]
        if run_id in live:
            verdicts.append(
                RuleVerdict(rule.id, rule.group_id, run_id, False, "its run holds a live lease")
            )
            continue
        verdict = RuleVerdict(
            rule.id, rule.group_id, run_id, True, f"SSH from {rule.cidr}: run {run_id} is not live"
        )
        if act:
            ec2.revoke_ingress_rules(rule.group_id, [rule.id])
            verdict.action = "removed"
        else:
            verdict.action = "would remove"
        verdicts.append(verdict)
    return verdicts


def _mark_abandoned(store: Store, orphans: Sequence[Verdict]) -> None:
    with store.session() as session:
        for v in orphans:
            run = session.get(Run, v.run_id)
            if run is None or run.state in ENDED_STATES:
                continue
            recorder = RunRecorder(session, run)
            build_machine(run, RunKind(run.kind), on_change=recorder)
            error = AbandonedRunError(run.id, v.instance.id, v.reason)
            run.error = error.one_line()
            run.error_type = type(error).__name__
            fire(run, "fail", detail=run.error)


# --- the command ---------------------------------------------------------------------


def reap_regions(app: App, regions: list[str]) -> list[str]:
    """The regions to sweep: those given, else those of the config's profiles, else boto3's
    default region. Reap must work without a config or a database."""
    if regions:
        return regions
    from ..config import read_document

    found: set[str] = set()
    if app.config_path.exists():
        try:
            profiles = read_document(app.config_path).get("profiles", {})
            found = {
                p["region"] for p in profiles.values() if isinstance(p, dict) and "region" in p
            }
        except ConfigError:
            found = set()
    if not found:
        import boto3

        region = boto3.session.Session().region_name
        if not region:
            raise UserInputError(
                "no region to sweep", hint="pass --region, or set AWS_DEFAULT_REGION"
            )
        found = {region}
    return sorted(found)


def reap(
    app: App, *, regions: list[str], act: bool, older_than: str | None
) -> list[dict[str, Any]]:

    age = parse_duration(older_than) if older_than else None
    rows: list[dict[str, Any]] = []
    for region in reap_regions(app, regions):
        ec2 = app.adapters.ec2(region, None)
        for verdict in reap_region(app.store, ec2, act=act, older_than=age):
            rows.append({"region": region, "resource": verdict.instance.id, **verdict.row()})
        # After the instances: a volume they held is free (and deletable) only then.
        for volume in [
            *reap_restore_volumes(app.store, ec2, act=act),
            *reap_init_volumes(app.store, ec2, app.config_path, act=act),
        ]:
            rows.append({"region": region, "resource": volume.volume_id, **volume.row()})
        for rule in reap_ssh_rules(app.store, ec2, act=act):
            rows.append({"region": region, "resource": rule.rule_id, **rule.row()})
    return rows
