"""The instance hooks: a machine (an sshd in namespaces) per running instance, booted from its
user data as cloud-init boots Ubuntu (``cloudinit.py``), and the EC2 semantics moto lacks:
ClientToken on RunInstances, an address that is ours (127.0.X.Y), delayed boot,
shutting-down/stopping before terminated/stopped, a power-off asked for from inside the instance
(``services.py``: the dead-man's switch), and the console with the machine's host keys once
cloud-init's final stage is over. ``reconcile`` finishes the delayed boots and power-offs."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
from typing import Any

from moto.core.responses import ActionResult
from moto.core.types import Base64EncodedString
from moto.core.utils import utcnow
from moto.ec2.exceptions import EC2ClientError, InvalidParameterCombination, OperationNotPermitted4
from moto.ec2.models.instances import StateReason
from moto.ec2.responses import EC2Response

from . import cloudinit, console, firewall, services
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
        """The instance's machine, booted as cloud-init boots Ubuntu (``cloudinit.py``): host
        and authorized keys and ``bootcmd`` before the sshd, the final stage after it."""
        address = self._machine_address(backend, instance)
        user_data = cloudinit.parse(user_data_text(instance.user_data))
        keys = list(user_data.authorized_keys)
        if instance.key_name and instance.key_name in backend.key_pairs:
            keys.append(backend.key_pairs[instance.key_name].public_key)
        hostname = "ip-" + str(instance.private_ip).replace(".", "-")
        directory = self.state.layout.instance_dir(instance.id)
        cloudinit.write_standins(directory / "sbin", directory / "systemd")
        log.info("booting %s on %s:22", instance.id, address)
        ssh_delay = self.state.settings.delay("ssh_delay")
        # sshd answers at once; cloud-init installs the key (and prints the host keys) later.
        machine = boot_machine(
            directory,
            instance.id,
            address,
            hostname,
            [] if ssh_delay else keys,
            host_keys=[(k.type, k.private, k.public) for k in user_data.host_keys],
            bootcmd=cloudinit.stage_script(user_data.bootcmd),
        )
        self.state.machines[instance.id] = machine
        self.state.booted[instance.id] = Scheduled(backend, instance, time.monotonic())
        self.guard_ssh(instance.id)  # before anyone can connect
        if ssh_delay > 0:
            self.state.pending_cloud_final[instance.id] = CloudFinal(
                backend, instance, time.monotonic() + ssh_delay, tuple(keys)
            )
        next_override = self.state.layout.console_overrides / NEXT_INSTANCE
        if next_override.exists():
            next_override.rename(self.state.layout.console_overrides / instance.id)
        services.bus_up(machine)
        final = services.start_final_stage(machine, user_data)
        if final is not None:
            self.state.final_stages[instance.id] = final

    def guard_ssh(self, instance_id: str) -> None:
        """Port 22 of the instance admits the client (``client_address``) exactly when one of
        its security groups does (``firewall.py``); applied when that changes."""
        machine = self.state.machines.get(instance_id)
        booted = self.state.booted.get(instance_id)
        if machine is None or booted is None:
            return
        client = self.state.settings.client_address
        groups = getattr(booted.instance, "security_groups", ())
        admitted = not client or firewall.admits_ssh(groups, client)
        if self.state.ssh_admitted.get(instance_id, True) == admitted:
            return
        try:
            firewall.set_ssh_admitted(machine, admitted)
        except OSError:
            log.exception("%s: could not change what reaches port 22", instance_id)
            return
        self.state.ssh_admitted[instance_id] = admitted
        log.info("%s: port 22 %s %s", instance_id, "admits" if admitted else "drops", client)

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
        self.state.booted.pop(instance_id, None)
        self.state.ssh_admitted.pop(instance_id, None)
        final = self.state.final_stages.pop(instance_id, None)
        self.state.pending_cloud_final.pop(instance_id, None)
        self.state.ssh_watch.pop(instance_id, None)
        self.volumes.end_pending_attaches(instance_id)
        machine = self.state.machines.pop(instance_id, None)
        if machine is not None:
            log.info("%s: machine stopped", instance_id)
            machine.kill()  # ends its namespaces, and with them every mount made over SSH
        if final is not None:  # nsenter ends with the namespace's processes
            with contextlib.suppress(subprocess.TimeoutExpired):
                final.wait(10)
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
        # cloud-init prints the host keys at the end of the final stage, not before (and the
        # keys it installs late with ssh_delay are part of that stage).
        finished = services.boot_finished(directory)
        shown = [host_key] if finished and instance.id not in self.state.pending_cloud_final else []
        text = console.boot_log(instance.private_ip, instance.launch_time, shown)
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
