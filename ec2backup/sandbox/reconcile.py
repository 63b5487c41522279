"""The periodic step (every ``RECONCILE_INTERVAL`` s, under ``CloudState.lock``) that finishes
what takes time on AWS: pending -> running (then the sshd boots), attaching -> attached,
detaching -> available (never while mounted unless forced), shutting-down -> terminated,
stopping -> stopped, snapshot pending -> completed. It ends cloud-init's final stage (and
installs the keys it installs late, ``ssh_delay``), fires the timers the instances' own
commands armed and powers off an instance that asked for it (``services.py``: the dead-man's
switch), and cuts SSH connections when ``cut_ssh_after`` says so. The hooks schedule these
changes in the ``CloudState``; the parts that own the resources apply them."""

from __future__ import annotations

import logging
import time

from moto.ec2.models.instances import StateReason

from . import services
from .faults import Faults
from .host import HostError
from .instances import Instances, set_state
from .settings import CloudSettings
from .snapshots import Snapshots
from .state import CloudState
from .volumes import Volumes, set_attachment_status

log = logging.getLogger("ec2backup.sandbox")

RECONCILE_INTERVAL = 0.2
INSTANCE_SHUTDOWN = StateReason(
    "Client.InstanceInitiatedShutdown: Instance initiated shutdown",
    "Client.InstanceInitiatedShutdown",
)


class Reconciler:
    def __init__(
        self,
        state: CloudState,
        faults: Faults,
        instances: Instances,
        volumes: Volumes,
        snapshots: Snapshots,
    ) -> None:
        self.state = state
        self.faults = faults  # its refresh_settings: the step sees settings changed meanwhile
        self.instances = instances
        self.volumes = volumes
        self.snapshots = snapshots

    def reconcile(self) -> None:
        """Finish what real EC2 finishes later. Called periodically by the server."""
        settings = self.faults.refresh_settings()
        with self.state.lock:
            now = time.monotonic()
            for instance_id, boot in list(self.state.pending_boots.items()):
                if now < boot.due:
                    continue
                del self.state.pending_boots[instance_id]
                if boot.instance.state != "pending":
                    continue
                # Running first, then the sshd starts: port 22 of a pending instance is closed.
                set_state(boot.instance, "running")
                self.state.record_change("boot", instance_id, boot.due)
                try:
                    self.instances.boot(boot.backend, boot.instance)
                except HostError:
                    log.exception("%s: boot failed", instance_id)

            for cloud_final in list(self.state.pending_cloud_final.values()):
                if now >= cloud_final.due:
                    try:
                        self.instances.finish_cloud_init(cloud_final)
                    except HostError:
                        log.exception("%s: installing the key failed", cloud_final.instance.id)

            for volume_id, attach in list(self.state.pending_attaches.items()):
                if now < attach.due:
                    continue
                del self.state.pending_attaches[volume_id]
                try:
                    self.volumes.connect_device(attach.backend, volume_id, attach.instance_id)
                except HostError:
                    log.exception("attach of %s failed", volume_id)
                    continue
                set_attachment_status(attach.backend, volume_id, attach.instance_id, "attached")
                self.state.record_change("attach", volume_id, attach.due)

            for volume_id, pending in list(self.state.pending_detaches.items()):
                if now < pending.due:
                    continue
                device = self.state.devices.get(volume_id)
                machine = self.state.machines.get(pending.instance_id)
                if (
                    not pending.force
                    and device
                    and machine
                    and machine.alive()
                    and machine.has_mounted(device.loop)
                ):
                    continue
                self.volumes.complete_detach(volume_id, pending)

            self._run_services(settings)
            for instance_id in list(self.state.machines):
                self.instances.guard_ssh(instance_id)

            for _instance_id, power_off in list(self.state.power_offs.items()):
                if now >= power_off.due:
                    self.instances.finish_power_off(power_off)

            self.snapshots.advance(now)

            if settings.cut_ssh_after is not None:
                self._cut_ssh_when_due(settings, now)

    def _run_services(self, settings: CloudSettings) -> None:
        """What runs inside the instances on its own: cloud-init's final stage ending, the
        timers their commands armed, and a power-off one of those asked for."""
        for instance_id, final in list(self.state.final_stages.items()):
            machine = self.state.machines.get(instance_id)
            if final.poll() is None and machine is not None:
                continue
            del self.state.final_stages[instance_id]
            if machine is not None:
                services.final_done(machine)
        self.state.jobs = [job for job in self.state.jobs if job.poll() is None]
        now = time.time()
        for instance_id, machine in list(self.state.machines.items()):
            for timer in services.due_timers(machine, settings.minute_seconds, now):
                self.state.jobs.append(services.fire(machine, timer))
            if not services.take_poweroff_request(machine):
                continue
            booted = self.state.booted.get(instance_id)
            if booted is None or booted.instance.state != "running":
                continue
            instance = booted.instance
            behaviour = instance.instance_initiated_shutdown_behavior or "stop"
            final_state = "terminated" if behaviour == "terminate" else "stopped"
            log.info("%s: powered off from inside (behaviour %s)", instance_id, behaviour)
            self.instances.power_off(
                booted.backend,
                instance,
                final_state,
                INSTANCE_SHUTDOWN,
                settings.terminate_delay,
            )

    def _cut_ssh_when_due(self, settings: CloudSettings, now: float) -> None:
        assert settings.cut_ssh_after is not None
        for instance_id, machine in list(self.state.machines.items()):
            if instance_id in self.state.ssh_cut:
                continue
            if settings.cut_ssh_on:
                active = any(name == settings.cut_ssh_on for _, _, name in machine.processes())
            else:
                active = bool(machine.ssh_connections())
            if not active:
                self.state.ssh_watch.pop(instance_id, None)
                continue
            since = self.state.ssh_watch.setdefault(instance_id, now)
            if now - since >= settings.cut_ssh_after:
                cut = machine.cut_ssh()
                self.state.ssh_cut.add(instance_id)
                self.state.ssh_watch.pop(instance_id, None)
                log.info("fault: cut %d SSH connection(s) to %s", cut, instance_id)
