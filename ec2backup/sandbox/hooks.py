"""Everything the sandbox changes in moto, in one layer. Runs only inside the server process.

moto keeps the EC2 model (ids, states, tags, filters, waiters); this layer adds what ec2backup's
correctness depends on and moto lacks:

* ``random_public_ip`` (called where moto makes a network interface) hands out 127.0.X.Y, so
  the RunInstances response already carries an address that is safe to connect to;
* the EC2 actions listed in ``LocalCloud.action_hooks`` are wrapped: each hook gets the moto
  response object (request parameters, backend) and moto's own handler, and does the real
  work on the host around it (sshd, loop devices, images) and the missing semantics
  (ClientToken, detach hanging while mounted, host keys on the console);
* ``before_action`` sees every EC2 call first (after re-reading ``D/settings.json`` if it
  changed): added latency, throttling and 5xx errors, seeded; ``after_action`` sees its answer
  (lost responses);
* ``reconcile`` runs every ``RECONCILE_INTERVAL`` seconds and finishes what takes time on AWS:
  pending -> running (then the sshd boots), attaching -> attached, detaching -> available
  (never while mounted unless forced), shutting-down -> terminated, stopping -> stopped; it
  fires the shutdown timers found in user data (the dead-man's switch) and cuts SSH
  connections when ``cut_ssh_after`` says so;
* in IAM mode (``enable_iam``), moto's own IAM enforcement is switched on after the seeding,
  and EC2's denials are answered as EC2 answers them (403 ``UnauthorizedOperation``).

One lock serialises the hooks and the reconcile step, since the moto server is threaded.
Faults and latency are decided outside it, so a slow call does not hold up the others.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from moto.core.responses import ActionResult
from moto.core.types import Base64EncodedString
from moto.core.utils import utcnow
from moto.ec2.exceptions import (
    EC2ClientError,
    InvalidParameterCombination,
    OperationNotPermitted4,
)
from moto.ec2.models import elastic_network_interfaces as moto_enis
from moto.ec2.models.instances import StateReason
from moto.ec2.responses import EC2Response

from . import console
from .faults import CloudFault, Faults
from .host import (
    HostError,
    Machine,
    boot_machine,
    make_host_key,
    release_loops_under,
)
from .iam import enable_iam, install_ec2_denials
from .layout import NEXT_INSTANCE, Layout
from .seed import seed
from .settings import CloudSettings
from .snapshots import Snapshots
from .state import (
    CloudState,
    Hook,
    Original,
    PowerOff,
    Scheduled,
)
from .tokens import ClientTokens
from .volumes import Volumes, set_attachment_status

log = logging.getLogger("ec2backup.sandbox")

RECONCILE_INTERVAL = 0.2
STATE_CODES = {
    "pending": 0,
    "running": 16,
    "shutting-down": 32,
    "terminated": 48,
    "stopping": 64,
    "stopped": 80,
}
# Counted by instance_limit: what still holds capacity.
LIVE_STATES = ("pending", "running", "stopping", "shutting-down")
INSTANCE_SHUTDOWN = StateReason(
    "Client.InstanceInitiatedShutdown: Instance initiated shutdown",
    "Client.InstanceInitiatedShutdown",
)


class LocalCloud:
    def __init__(self, layout: Layout, region: str) -> None:
        self.state = CloudState(layout, region)
        self.faults = Faults(self.state)
        self.tokens = ClientTokens()
        self.volumes = Volumes(self.state, self.tokens)
        self.snapshots = Snapshots(self.state)
        self.default_ami_id = ""

    # --- installation ------------------------------------------------------------------------

    def action_hooks(self) -> dict[str, Hook]:
        """EC2Response method name -> hook. Add a hook here to change one more action."""
        return {
            "run_instances": self.run_instances,
            "terminate_instances": self.terminate_instances,
            "stop_instances": self.stop_instances,
            "start_instances": self.start_instances,
            "get_console_output": self.get_console_output,
            "create_volume": self.volumes.create_volume,
            "delete_volume": self.volumes.delete_volume,
            "attach_volume": self.volumes.attach_volume,
            "detach_volume": self.volumes.detach_volume,
            "create_snapshot": self.snapshots.create_snapshot,
            "delete_snapshot": self.snapshots.delete_snapshot,
            "describe_snapshots": self.snapshots.describe_snapshots,
        }

    def install(self) -> None:
        moto_enis.random_public_ip = self.allocate_address
        for action, hook in self.action_hooks().items():
            self._wrap(action, hook)

        original_call_action = EC2Response.call_action
        cloud = self

        def call_action(response: EC2Response) -> Any:
            try:
                early = cloud.before_action(response)
                if early is not None:
                    return early
                return cloud.after_action(response, original_call_action(response))
            except CloudFault as fault:
                return fault.response()

        setattr(EC2Response, "call_action", call_action)  # noqa: B010 (mypy rejects assigning to a method)

        install_ec2_denials()

    def _wrap(self, action: str, hook: Hook) -> None:
        original = getattr(EC2Response, action)
        lock = self.state.lock

        def wrapper(response: EC2Response) -> ActionResult:
            with lock:
                return hook(response, lambda: original(response))

        wrapper.__name__ = action
        setattr(EC2Response, action, wrapper)

    def before_action(self, response: EC2Response) -> Any:
        """Return a response (``(status, headers, body)``) to answer an EC2 call without
        running it, or None to run it."""
        return self.faults.before_action(response)

    def after_action(self, response: EC2Response, answer: Any) -> Any:
        """The answer to an EC2 call that ran, or the one that replaces it."""
        return self.faults.after_action(response, answer)

    def refresh_settings(self) -> CloudSettings:
        """Re-read ``D/settings.json`` if it was replaced since the last look."""
        return self.faults.refresh_settings()

    def enable_iam(self) -> tuple[str, str]:
        """Switch on moto's IAM enforcement and return an administrator's access key. Call
        after ``seed``: the seeding goes to the backends directly, never through the checks."""
        return enable_iam(self.state.region)

    def allocate_address(self) -> str:
        with self.state.lock:
            return self.state.addresses.allocate()

    def seed(self) -> str:
        """Register the Ubuntu AMI and the SSM public parameter that names it."""
        self.default_ami_id = seed(self.state.region)
        return self.default_ami_id

    # --- instances ---------------------------------------------------------------------------

    def run_instances(self, response: EC2Response, original: Original) -> ActionResult:
        backend = response.ec2_backend
        known = self.tokens.check(response, "RunInstances")
        if known is not None:
            # A replay shows the instances as they are now; moto would always say "pending".
            transformers = dict(response.RESPONSE_KEY_PATH_TO_TRANSFORMER)
            transformers.pop("RunInstances.Reservation.Instances.Instance.State", None)
            response.RESPONSE_KEY_PATH_TO_TRANSFORMER = transformers
            return ActionResult(backend.reservations[known])
        self._check_capacity(response)
        result = original()
        reservation: Any = result.result
        self.tokens.remember(response, "RunInstances", reservation.id)
        delay = self.state.settings.boot_delay
        for instance in reservation.instances:
            self._give_address(instance)
            if delay > 0:
                _set_state(instance, "pending")
                self.state.pending_boots[instance.id] = Scheduled(
                    backend, instance, time.monotonic() + delay
                )
            else:
                self._boot(backend, instance)
        return result

    def _check_capacity(self, response: EC2Response) -> None:
        settings = self.state.settings
        backend = response.ec2_backend
        instance_type = response._get_param("InstanceType") or "m1.small"
        zone = response._get_param("Placement.AvailabilityZone")
        subnet_id = response._get_param("SubnetId")
        if not zone and subnet_id:
            with contextlib.suppress(EC2ClientError):  # gone meanwhile
                zone = backend.get_subnet(subnet_id).availability_zone
        if zone and settings.no_capacity_for(instance_type, zone):
            others = [
                z.name
                for z in backend.describe_availability_zones()
                if z.name != zone and not settings.no_capacity_for(instance_type, z.name)
            ]
            message = (
                f"We currently do not have sufficient {instance_type} capacity in the"
                f" Availability Zone you requested ({zone}). Our system will be working on"
                " provisioning additional capacity."
            )
            if others:
                message += (
                    f" You can currently get {instance_type} capacity by not specifying an"
                    f" Availability Zone in your request or choosing {', '.join(others)}."
                )
            raise CloudFault(500, "InsufficientInstanceCapacity", message)
        if not zone and instance_type in settings.no_capacity:
            raise CloudFault(500, "InsufficientInstanceCapacity", "Insufficient capacity.")
        if settings.instance_limit is not None:
            live = sum(1 for i in backend.all_instances() if i.state in LIVE_STATES)
            wanted = live + int(response._get_param("MinCount") or 1)
            if wanted > settings.instance_limit:
                raise CloudFault(
                    400,
                    "InstanceLimitExceeded",
                    f"You have requested more instances ({wanted}) than your current instance"
                    f" limit of {settings.instance_limit} allows for the specified instance"
                    " type. Please visit http://aws.amazon.com/contact-us/ec2-request to"
                    " request an adjustment to this limit.",
                )

    def _give_address(self, instance: Any) -> None:
        address = instance.public_ip
        if not address or not address.startswith("127."):
            # Launched without a public address: give it one anyway, it is our only way in.
            instance.nics[0].public_ip = self.allocate_address()

    def _boot(self, backend: Any, instance: Any) -> None:
        self._give_address(instance)
        address = instance.public_ip
        user_data = _user_data_text(instance.user_data)
        keys = console.authorized_keys(user_data)
        if instance.key_name and instance.key_name in backend.key_pairs:
            keys.append(backend.key_pairs[instance.key_name].public_key)
        hostname = "ip-" + str(instance.private_ip).replace(".", "-")
        directory = self.state.layout.instance_dir(instance.id)
        log.info("booting %s on %s:22", instance.id, address)
        machine = boot_machine(directory, instance.id, address, hostname, keys)
        self.state.machines[instance.id] = machine
        next_override = self.state.layout.console_overrides / NEXT_INSTANCE
        if next_override.exists():
            next_override.rename(self.state.layout.console_overrides / instance.id)
        minutes = console.shutdown_minutes(user_data)
        if minutes is not None:
            seconds = minutes * self.state.settings.minute_seconds
            log.info("%s powers off in %g minutes (%.1f s here)", instance.id, minutes, seconds)
            self.state.shutdown_timers[instance.id] = Scheduled(
                backend, instance, time.monotonic() + seconds
            )

    def terminate_instances(self, response: EC2Response, original: Original) -> ActionResult:
        delay = self.state.settings.terminate_delay
        if delay <= 0:
            result = original()
            for item in result.result["TerminatingInstances"]:  # type: ignore[index]
                self._shut_down(item["InstanceId"])
                self.state.power_offs.pop(item["InstanceId"], None)
            return result
        # As on AWS: shutting-down at once (the machine is gone), terminated a while later.
        backend = response.ec2_backend
        instance_ids = response._get_param("InstanceIds", [])
        if not instance_ids:
            raise InvalidParameterCombination("No instances specified")
        response.error_on_dryrun()
        instances = backend.get_multi_instances_by_id(instance_ids)
        for instance in instances:
            if instance.disable_api_termination is True:
                raise OperationNotPermitted4(instance.id)
        items = []
        for instance in instances:
            previous = _state_of(instance)
            pending = self.state.power_offs.get(instance.id)
            terminating = pending is not None and pending.final == "terminated"
            if instance.state != "terminated" and not terminating:
                self._power_off(backend, instance, "terminated", None, delay)
            items.append(
                {
                    "InstanceId": instance.id,
                    "CurrentState": _state_of(instance),
                    "PreviousState": previous,
                }
            )
        return ActionResult({"TerminatingInstances": items})

    def stop_instances(self, response: EC2Response, original: Original) -> ActionResult:
        result = original()
        for item in result.result["StoppingInstances"]:  # type: ignore[index]
            self._shut_down(item["InstanceId"])
        return result

    def start_instances(self, response: EC2Response, original: Original) -> ActionResult:
        raise EC2ClientError(
            "UnsupportedOperation",
            "The local cloud cannot start a stopped instance again; launch a new one.",
        )

    def _power_off(
        self,
        backend: Any,
        instance: Any,
        final: str,
        reason: StateReason | None,
        delay: float,
    ) -> None:
        """The instance's OS is gone at once; EC2 shows it ``final`` after ``delay`` s."""
        log.info("%s: shutting down, %s in %.1f s", instance.id, final, delay)
        self._shut_down(instance.id)
        _set_state(instance, "shutting-down" if final == "terminated" else "stopping")
        if reason is not None:
            instance.state_reason = reason
        power_off = PowerOff(backend, instance, time.monotonic() + delay, final, reason)
        if delay > 0:
            self.state.power_offs[instance.id] = power_off
        else:
            self._finish_power_off(power_off)

    def _finish_power_off(self, power_off: PowerOff) -> None:
        instance = power_off.instance
        self.state.power_offs.pop(instance.id, None)
        if power_off.final == "terminated":
            power_off.backend.terminate_instances([instance.id])  # detaches its volumes
        else:
            instance.stop()
        self.state.record_change(
            "terminate" if power_off.final == "terminated" else "stop", instance.id, power_off.due
        )
        if power_off.reason is not None:
            instance.state_reason = power_off.reason
            instance._reason = ""
        log.info("%s is %s", instance.id, power_off.final)

    def _shut_down(self, instance_id: str) -> None:
        """The instance's machine stops: kill its sshd (and every process and mount in it),
        release its loop devices, finish detaches that waited for it; forget its timers."""
        self.state.pending_boots.pop(instance_id, None)
        self.state.shutdown_timers.pop(instance_id, None)
        self.state.ssh_watch.pop(instance_id, None)
        self.volumes.end_pending_attaches(instance_id)
        machine = self.state.machines.pop(instance_id, None)
        if machine is not None:
            log.info("%s: machine stopped", instance_id)
            machine.kill()  # ends its namespaces, and with them every mount made over SSH
        self.volumes.machine_gone(instance_id)

    def get_console_output(self, response: EC2Response, original: Original) -> ActionResult:
        instance = response.ec2_backend.get_instance(response._get_param("InstanceId"))
        directory = self.state.layout.instance_dir(instance.id)
        machine = self.state.machines.get(instance.id) or Machine.load(directory)
        if machine is None and instance.state == "pending":
            # Nothing printed yet: EC2 answers without Output.
            return ActionResult({"InstanceId": instance.id, "Timestamp": utcnow()})
        if machine is None:
            return original()
        host_key = machine.host_key_public
        if (self.state.layout.console_overrides / instance.id).exists():
            impostor = directory / "impostor_host_key"
            if impostor.exists():
                host_key = impostor.with_suffix(".pub").read_text().strip()
            else:
                host_key = make_host_key(impostor, host_key.split()[-1])
        text = console.boot_log(instance.private_ip, instance.launch_time, [host_key])
        return ActionResult(
            {
                "InstanceId": instance.id,
                "Timestamp": utcnow(),
                "Output": Base64EncodedString.from_raw_string(text),
            }
        )

    # --- background --------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Finish what real EC2 finishes later. Called periodically by the server."""
        settings = self.refresh_settings()
        with self.state.lock:
            now = time.monotonic()
            for instance_id, boot in list(self.state.pending_boots.items()):
                if now < boot.due:
                    continue
                del self.state.pending_boots[instance_id]
                if boot.instance.state != "pending":
                    continue
                # Running first, then the sshd starts: port 22 of a pending instance is closed.
                _set_state(boot.instance, "running")
                self.state.record_change("boot", instance_id, boot.due)
                try:
                    self._boot(boot.backend, boot.instance)
                except HostError:
                    log.exception("%s: boot failed", instance_id)

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

            for instance_id, timer in list(self.state.shutdown_timers.items()):
                if now < timer.due:
                    continue
                del self.state.shutdown_timers[instance_id]
                instance = timer.instance
                if instance.state != "running":
                    continue
                behaviour = instance.instance_initiated_shutdown_behavior or "stop"
                final = "terminated" if behaviour == "terminate" else "stopped"
                log.info("%s: shutdown timer fired (behaviour %s)", instance_id, behaviour)
                self._power_off(
                    timer.backend, instance, final, INSTANCE_SHUTDOWN, settings.terminate_delay
                )

            for _instance_id, power_off in list(self.state.power_offs.items()):
                if now >= power_off.due:
                    self._finish_power_off(power_off)

            if settings.cut_ssh_after is not None:
                self._cut_ssh_when_due(settings, now)

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

    def cut_ssh(self, instance_id: str) -> int:
        with self.state.lock:
            machine = self.state.machines.get(instance_id)
            return machine.cut_ssh() if machine is not None else 0

    def shutdown(self) -> list[str]:
        """Kill every instance and release every loop device; return loops left behind."""
        with self.state.lock:
            for instance_id in list(self.state.machines):
                self._shut_down(instance_id)
            self.state.pending_detaches.clear()
            self.state.pending_attaches.clear()
            self.state.pending_boots.clear()
            self.state.power_offs.clear()
            return release_loops_under(self.state.layout.root)


def _set_state(instance: Any, name: str) -> None:
    instance._state.name = name
    instance._state.code = STATE_CODES[name]


def _state_of(instance: Any) -> dict[str, Any]:
    return {"Code": instance._state.code, "Name": instance._state.name}


def _user_data_text(user_data: Any) -> str:
    if isinstance(user_data, list):  # older moto kept a list
        user_data = user_data[0] if user_data else None
    if isinstance(user_data, Base64EncodedString):
        return user_data.decode()
    return ""
