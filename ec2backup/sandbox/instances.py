"""The instance hooks: a machine (an sshd in namespaces) per running instance, and the EC2
semantics moto lacks: ClientToken on RunInstances, an address that is ours (127.0.X.Y), delayed
boot, shutting-down/stopping before terminated/stopped, the shutdown timer found in user data
(the dead-man's switch), and the console with the machine's host key. ``reconcile`` finishes
the delayed boots and power-offs and fires the timers."""

from __future__ import annotations

import logging
import time
from typing import Any

from moto.core.responses import ActionResult
from moto.core.types import Base64EncodedString
from moto.core.utils import utcnow
from moto.ec2.exceptions import EC2ClientError, InvalidParameterCombination, OperationNotPermitted4
from moto.ec2.models.instances import StateReason
from moto.ec2.responses import EC2Response

from . import console
from .consistency import Consistency
from .host import Machine, boot_machine, make_host_key
from .launch_checks import check_capacity, check_image_and_type
from .layout import NEXT_INSTANCE
from .moto_fixes import groups_from_interface
from .state import CloudFinal, CloudState, Original, PowerOff, Scheduled
from .tokens import ClientTokens
from .volumes import Volumes

log = logging.getLogger("ec2backup.sandbox")

STATE_CODES = {
    "pending": 0,
    "running": 16,
    "shutting-down": 32,
    "terminated": 48,
    "stopping": 64,
    "stopped": 80,
}


class Instances:
    def __init__(
        self, state: CloudState, tokens: ClientTokens, volumes: Volumes, consistency: Consistency
    ) -> None:
        self.state = state
        self.tokens = tokens
        self.volumes = volumes
        self.consistency = consistency

    def allocate_address(self) -> str:
        with self.state.lock:
            return self.state.addresses.allocate()

    def run_instances(self, response: EC2Response, original: Original) -> ActionResult:
        backend = response.ec2_backend
        if response._get_bool_param("DryRun", False):
            return original()  # authorized already: moto answers DryRunOperation
        known = self.tokens.check(response, "RunInstances")
        if known is not None:
            # A replay shows the instances as they are now; moto would always say "pending".
            transformers = dict(response.RESPONSE_KEY_PATH_TO_TRANSFORMER)
            transformers.pop("RunInstances.Reservation.Instances.Instance.State", None)
            response.RESPONSE_KEY_PATH_TO_TRANSFORMER = transformers
            return ActionResult(backend.reservations[known])
        check_image_and_type(response)
        check_capacity(self.state.settings, response)
        result = original()
        reservation: Any = result.result
        self.tokens.remember(response, "RunInstances", reservation.id)
        self.consistency.note(i.id for i in reservation.instances)
        delay = self.state.settings.delay("boot_delay")
        for instance in reservation.instances:
            groups_from_interface(instance)
            if delay > 0:
                set_state(instance, "pending")
                self.state.pending_boots[instance.id] = Scheduled(
                    backend, instance, time.monotonic() + delay
                )
            else:
                self.boot(backend, instance)
        return result

    def _machine_address(self, backend: Any, instance: Any) -> str:
        """Where the instance's sshd listens: its public address, if it has one (moto gives
        one where the subnet maps them or the launch asks: ``allocate_address``) and its subnet
        routes to an internet gateway; else an address nobody is told, as an instance the
        backup host cannot reach."""
        address = instance.public_ip
        if address and address.startswith("127.") and routes_to_internet(backend, instance):
            return str(address)
        return self.allocate_address()

    def boot(self, backend: Any, instance: Any) -> None:
        address = self._machine_address(backend, instance)
        user_data = user_data_text(instance.user_data)
        keys = console.authorized_keys(user_data)
        if instance.key_name and instance.key_name in backend.key_pairs:
            keys.append(backend.key_pairs[instance.key_name].public_key)
        hostname = "ip-" + str(instance.private_ip).replace(".", "-")
        directory = self.state.layout.instance_dir(instance.id)
        log.info("booting %s on %s:22", instance.id, address)
        ssh_delay = self.state.settings.delay("ssh_delay")
        # sshd answers at once; cloud-init installs the key (and prints the host keys) later.
        machine = boot_machine(directory, instance.id, address, hostname, [] if ssh_delay else keys)
        self.state.machines[instance.id] = machine
        if ssh_delay > 0:
            self.state.pending_cloud_final[instance.id] = CloudFinal(
                backend, instance, time.monotonic() + ssh_delay, tuple(keys)
            )
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
        delay = self.state.settings.delay("terminate_delay")
        if delay <= 0:
            result = original()
            for item in result.result["TerminatingInstances"]:  # type: ignore[index]
                self.shut_down(item["InstanceId"])
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
            previous = state_of(instance)
            pending = self.state.power_offs.get(instance.id)
            terminating = pending is not None and pending.final == "terminated"
            if instance.state != "terminated" and not terminating:
                self.power_off(backend, instance, "terminated", None, delay)
            items.append(
                {
                    "InstanceId": instance.id,
                    "CurrentState": state_of(instance),
                    "PreviousState": previous,
                }
            )
        return ActionResult({"TerminatingInstances": items})

    def stop_instances(self, response: EC2Response, original: Original) -> ActionResult:
        result = original()
        for item in result.result["StoppingInstances"]:  # type: ignore[index]
            self.shut_down(item["InstanceId"])
        return result

    def start_instances(self, response: EC2Response, original: Original) -> ActionResult:
        raise EC2ClientError(
            "UnsupportedOperation",
            "The local cloud cannot start a stopped instance again; launch a new one.",
        )

    def power_off(
        self,
        backend: Any,
        instance: Any,
        final: str,
        reason: StateReason | None,
        delay: float,
    ) -> None:
        """The instance's OS is gone at once; EC2 shows it ``final`` after ``delay`` s."""
        log.info("%s: shutting down, %s in %.1f s", instance.id, final, delay)
        self.shut_down(instance.id)
        set_state(instance, "shutting-down" if final == "terminated" else "stopping")
        if reason is not None:
            instance.state_reason = reason
        power_off = PowerOff(backend, instance, time.monotonic() + delay, final, reason)
        if delay > 0:
            self.state.power_offs[instance.id] = power_off
        else:
            self.finish_power_off(power_off)

    def finish_power_off(self, power_off: PowerOff) -> None:
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

    def finish_cloud_init(self, final: CloudFinal) -> None:
        instance_id = final.instance.id
        self.state.pending_cloud_final.pop(instance_id, None)
        machine = self.state.machines.get(instance_id)
        if machine is not None and machine.alive():
            machine.install_authorized_keys(final.keys)
            self.state.record_change("ssh", instance_id, final.due)
            log.info("%s: cloud-final done (key installed, host keys printed)", instance_id)

    def shut_down(self, instance_id: str) -> None:
        """The instance's machine stops: kill its sshd (and every process and mount in it),
        release its loop devices, finish detaches that waited for it; forget its timers."""
        self.state.pending_boots.pop(instance_id, None)
        self.state.pending_cloud_final.pop(instance_id, None)
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
        done = instance.id not in self.state.pending_cloud_final
        text = console.boot_log(instance.private_ip, instance.launch_time, [host_key], done)
        return ActionResult(
            {
                "InstanceId": instance.id,
                "Timestamp": utcnow(),
                "Output": Base64EncodedString.from_raw_string(text),
            }
        )


def routes_to_internet(backend: Any, instance: Any) -> bool:
    """Whether the instance's subnet has a 0.0.0.0/0 route to an internet gateway (its own
    route table's, else its VPC's main one)."""
    subnet_id = instance.subnet_id
    try:
        vpc_id = backend.get_subnet(subnet_id).vpc_id
    except EC2ClientError:
        return False
    tables = list(backend.route_tables.values())
    own = [t for t in tables if subnet_id in t._associations.values()]
    main = [t for t in tables if t.vpc_id == vpc_id and t.main_association_id]
    for table in own or main:
        for route in table.routes:
            gateway = getattr(route, "gateway", None)
            to_igw = gateway is not None and str(gateway.id).startswith("igw-")
            if route.destination_cidr_block == "0.0.0.0/0" and to_igw:
                return True
    return False


def set_state(instance: Any, name: str) -> None:
    instance._state.name = name
    instance._state.code = STATE_CODES[name]


def state_of(instance: Any) -> dict[str, Any]:
    return {"Code": instance._state.code, "Name": instance._state.name}


def user_data_text(user_data: Any) -> str:
    if isinstance(user_data, list):  # older moto kept a list
        user_data = user_data[0] if user_data else None
    if isinstance(user_data, Base64EncodedString):
        return user_data.decode()
    return ""
