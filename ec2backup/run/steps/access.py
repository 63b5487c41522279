"""SSH from where this host is now. The address a laptop runs from changes; the security group
``init`` made admits only the address seen then. So each time a run is driven, the profile's
groups that ec2backup manages (tagged ``ec2backup:managed``) must admit this host's current
address (``allow_ssh_from``, else the public address as AWS sees it); if none of their rules
does, one is added for it, tagged with the run, and removed again when the run is over, has
failed and released its instance, or is found abandoned (``commands/heal.py``, ``reap``).
Rules never pile up: at most one per live run besides the one ``init`` made.

Groups that are not ec2backup's (``--security-group``) are never changed.
"""

from __future__ import annotations

import ipaddress
import logging

from ...core.tags import TAG_MANAGED, TAG_RUN_ID
from ...ports import IngressRule
from ..context import StepContext

log = logging.getLogger(__name__)


def _admits(rules: list[IngressRule], cidr: str) -> bool:
    network = ipaddress.ip_network(cidr)
    if network.num_addresses == 1:
        return any(rule.admits_ssh_from(str(network.network_address)) for rule in rules)
    return any(rule.cidr == cidr and rule.admits_ssh_from(str(network[0])) for rule in rules)


def ensure_ssh_access(ctx: StepContext) -> str:
    """The run's managed security groups admit SSH from this host (a rule added if needed)."""
    run = ctx.run
    managed = [
        group
        for group in ctx.profile.security_group_ids
        if (ctx.ec2.security_group_tags(group) or {}).get(TAG_MANAGED) == "true"
    ]
    if not managed:
        return "no security group of ec2backup's to open"
    cidr = ctx.client_cidr()
    if cidr is None:
        return "this host's address is unknown: the security group is left as it is"
    notes = []
    for group in managed:
        rules = ctx.ec2.ingress_rules(group)
        ours = [r for r in rules if r.tags.get(TAG_RUN_ID) == run.id]
        stale = [r.id for r in ours if r.cidr != cidr]  # an earlier address of this run
        if stale:
            ctx.ec2.revoke_ingress_rules(group, stale)
        current = [r for r in rules if r.id not in stale]
        if _admits(current, cidr):
            notes.append(f"{group} admits SSH from {cidr}")
            continue
        # Tagged in the same call: a crash before the id is recorded leaves a rule that the
        # run's tags find again.
        run.config = {**run.config, "ssh_access": {"group": group, "cidr": cidr}}
        ctx.recorder.save()
        rule_id = ctx.ec2.authorize_ssh(group, cidr, ctx.tags())
        run.config = {**run.config, "ssh_access": {"group": group, "cidr": cidr, "rule": rule_id}}
        ctx.recorder.save()
        log.info("run %s: %s now admits SSH from %s (rule %s)", run.id, group, cidr, rule_id)
        notes.append(f"{group} opened to {cidr} ({rule_id})")
    return "; ".join(notes)


def release_ssh_access(ctx: StepContext) -> str:
    """Remove the rules this run added (found by its tag): it no longer needs SSH."""
    rules = ctx.ec2.find_ingress_rules({TAG_RUN_ID: ctx.run.id})
    by_group: dict[str, list[str]] = {}
    for rule in rules:
        by_group.setdefault(rule.group_id, []).append(rule.id)
    for group, rule_ids in by_group.items():
        ctx.ec2.revoke_ingress_rules(group, rule_ids)
    if rules:
        log.info("run %s: removed its SSH rules %s", ctx.run.id, ", ".join(r.id for r in rules))
    return f"removed {len(rules)} SSH rule(s)" if rules else "no SSH rule to remove"
