"""``ports.Ec2`` implemented with boto3.

Credentials come from boto3's standard chain and the endpoint from ``AWS_ENDPOINT_URL`` (which
boto3 honours by itself), so the same code talks to real AWS and to the local cloud.

Every botocore exception is translated in one place (``_translate``) into the classes of
``errors.py``, with the resource ids and a hint that says the fix. Waits use botocore's waiter
machinery with a sub-second ``Delay`` (botocore passes it straight to ``time.sleep``, so a float
works) and a wall-clock deadline, so ``timeout`` means seconds even when calls are slow.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, cast

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
)
from botocore.waiter import SingleWaiterConfig

from ...core.tags import LIVE_INSTANCE_STATES
from ...errors import (
    InvalidResourceStateError,
    ResourceNotFoundError,
    TransientCloudError,
)
from ...ports import HostKey, IngressRule, Instance, LaunchSpec, Snapshot, Volume
from ..hostkeys import parse_console_host_keys
from . import console, groups, launch
from .convert import (
    _batches,
    _describe_volumes,
    _instance,
    _instances_in,
    _snapshot,
    _tag_filters,
    _tag_specs,
    _volume,
    _volumes_in,
)
from .errors import _error_code, translated
from .resize import VolumeResizing
from .tiers import SnapshotTierCalls
from .waiters import _INSTANCE_GONE_STATES, _WAITERS, _attached_waiter, wait

if TYPE_CHECKING:
    from mypy_boto3_ec2.client import EC2Client
    from mypy_boto3_ssm.client import SSMClient


# Standard mode retries throttling (RequestLimitExceeded, base 1 s backoff, capped at 20 s) and
# 5xx/connection errors. Ten attempts ride through roughly a minute of throttling.
_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 10},
    connect_timeout=10,
    read_timeout=60,
)

# For calls without a client token (CreateSnapshot): a blind retry after a lost response would
# do the work twice. They fail as TransientCloudError instead, and the engine re-runs the step,
# which first looks for what the lost call may have made.
_ONCE_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=10, read_timeout=60
)
RUN_INSTANCES_ATTEMPTS = 10

# TerminateInstances takes at most 1000 ids; a Describe filter at most 200 values.
TERMINATE_BATCH = 1000
FILTER_VALUES_BATCH = 200
# DescribeInstances' largest page: 1,000 instances in one call.
DESCRIBE_PAGE_SIZE = 1000
_INSTANCE_ID = re.compile(r"\bi-[0-9a-zA-Z]+\b")


def _launch_params(spec: LaunchSpec) -> dict[str, Any]:
    params: dict[str, Any] = {
        "ImageId": spec.image_id,
        "InstanceType": spec.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "ClientToken": spec.client_token,
        "Placement": {"AvailabilityZone": spec.availability_zone},
        # Tags in the launch call itself: a separate CreateTags could fail after the
        # launch and leak an instance no reaper can find.
        "TagSpecifications": _tag_specs(spec.tags, "instance", "volume", "network-interface"),
        "MetadataOptions": {
            "HttpTokens": "required",
            "HttpPutResponseHopLimit": 1,
            "HttpEndpoint": "enabled",
        },
        "InstanceInitiatedShutdownBehavior": "terminate",
    }
    if spec.user_data:
        params["UserData"] = spec.user_data  # botocore base64-encodes it
    # A public address asked for, not left to the subnet's MapPublicIpOnLaunch: the backup
    # host reaches the instance over the internet. Subnet and groups then go on the interface.
    interface: dict[str, Any] = {
        "DeviceIndex": 0,
        "AssociatePublicIpAddress": True,
        "DeleteOnTermination": True,
    }
    if spec.security_group_ids:
        interface["Groups"] = list(spec.security_group_ids)
    if spec.subnet_id:
        interface["SubnetId"] = spec.subnet_id
    params["NetworkInterfaces"] = [interface]
    return params


def _launch_resources(spec: LaunchSpec) -> dict[str, str]:
    return {
        "image": spec.image_id,
        "instance_type": spec.instance_type,
        "availability_zone": spec.availability_zone,
    }


class Boto3Ec2(VolumeResizing, SnapshotTierCalls):
    """``ports.Ec2`` on boto3. ``poll_interval`` is the delay between polls of every wait;
    ``run_id`` is put on every error raised."""

    def __init__(
        self,
        region: str,
        *,
        session: boto3.session.Session | None = None,
        poll_interval: float = 0.25,
        run_id: str | None = None,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be > 0")
        self.region = region
        self.poll_interval = poll_interval
        self.run_id = run_id
        with self._errors("create an EC2 client", {"region": region}):
            self.session = session or boto3.session.Session(region_name=region)
            self._client: EC2Client = self.session.client(
                "ec2", region_name=region, config=_CLIENT_CONFIG
            )
            self._client_once: EC2Client = self.session.client(
                "ec2", region_name=region, config=_ONCE_CONFIG
            )
        self._ssm_client: SSMClient | None = None

    # ---- error translation -------------------------------------------------------------

    def _errors(
        self, action: str, resources: Mapping[str, str] | None = None
    ) -> AbstractContextManager[None]:
        """Translate botocore exceptions raised inside the block (and only those)."""
        return translated(action, resources, self.run_id)

    # ---- what the modules it delegates to use (``clients.Ec2Clients``) ----------------

    errors = _errors

    @property
    def client(self) -> EC2Client:
        return self._client

    @property
    def client_once(self) -> EC2Client:
        return self._client_once

    def ssm_client(self) -> SSMClient:
        if self._ssm_client is None:
            self._ssm_client = self.session.client(
                "ssm", region_name=self.region, config=_CLIENT_CONFIG
            )
        return self._ssm_client

    # ---- images ------------------------------------------------------------------------

    def resolve_image(self, ami: str) -> str:
        return launch.resolve_image(self, ami)

    def image_architecture(self, image_id: str) -> str:
        return launch.image_architecture(self, image_id)

    def instance_type_architectures(
        self, instance_types: Sequence[str]
    ) -> dict[str, tuple[str, ...]]:
        return launch.instance_type_architectures(self, instance_types)

    def offered_instance_types(self, availability_zone: str, only: Sequence[str] = ()) -> set[str]:
        return launch.offered_instance_types(self, availability_zone, only)

    def check_launch(self, spec: LaunchSpec) -> None:
        """A dry run of ``run_instance(spec)``: raises what the launch would for IAM."""
        params = {k: v for k, v in _launch_params(spec).items() if k != "ClientToken"}
        launch.check_launch(self, params, _launch_resources(spec))

    # ---- instances ---------------------------------------------------------------------

    def run_instance(self, spec: LaunchSpec) -> Instance:
        """Launch one instance. The same ``client_token`` returns the same instance (even a
        terminated one, for a while): the caller checks the state it gets back."""
        response = self._run_instances(_launch_params(spec), _launch_resources(spec))
        return _instance(response["Instances"][0])

    def _run_instances(self, params: dict[str, Any], resources: Mapping[str, str]) -> Any:
        """RunInstances, retried here rather than by botocore: AWS answers a capacity shortage
        with HTTP 500, which botocore would retry for a minute before the caller could try
        another instance type. Throttling and other 5xx are retried with jittered backoff;
        the ClientToken makes every retry return the same instance."""
        for attempt in range(RUN_INSTANCES_ATTEMPTS):
            try:
                with self._errors("ec2:RunInstances", resources):
                    return self._client_once.run_instances(**params)
            except TransientCloudError:
                if attempt == RUN_INSTANCES_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0, min(20.0, 0.5 * 2**attempt)))
        raise AssertionError("unreachable")

    def get_instance(self, instance_id: str) -> Instance | None:
        resources = {"instance": instance_id}
        try:
            with self._errors("ec2:DescribeInstances", resources):
                response = self._client.describe_instances(InstanceIds=[instance_id])
        except ResourceNotFoundError:
            return None
        found = _instances_in(response)
        return found[0] if found else None

    def find_instances(
        self, tags: Mapping[str, str], states: Sequence[str] = LIVE_INSTANCE_STATES
    ) -> list[Instance]:
        """Instances carrying all ``tags`` in one of ``states`` (all states if empty)."""
        filters = _tag_filters(tags)
        if states:
            filters.append({"Name": "instance-state-name", "Values": list(states)})
        with self._errors("ec2:DescribeInstances"):
            pages = self._client.get_paginator("describe_instances").paginate(
                Filters=filters, PaginationConfig={"PageSize": DESCRIBE_PAGE_SIZE}
            )
            return [i for page in pages for i in _instances_in(page)]

    def terminate_instances(self, instance_ids: Sequence[str]) -> None:
        """Terminate in batches of at most 1000 ids. Unknown ids are success, as with
        ``terminate_instance``: EC2 rejects a whole batch that names one, so the ids it names
        are dropped and the rest sent again (one at a time if the message names none)."""
        for batch in _batches(instance_ids, TERMINATE_BATCH):
            self._terminate_batch(batch)

    def _terminate_batch(self, batch: list[str]) -> None:
        resources = {"instances": f"{len(batch)} ids, first {batch[0]}"}
        while batch:
            with self._errors("ec2:TerminateInstances", resources):
                try:
                    self._client.terminate_instances(InstanceIds=batch)
                    return
                except ClientError as exc:
                    if _error_code(exc) not in (
                        "InvalidInstanceID.NotFound",
                        "InvalidInstanceID.Malformed",
                    ):
                        raise
                    message = str(exc.response.get("Error", {}).get("Message") or "")
                    unknown = set(_INSTANCE_ID.findall(message)) & set(batch)
            if not unknown:
                for instance_id in batch:
                    self.terminate_instance(instance_id)
                return
            batch = [i for i in batch if i not in unknown]

    def terminate_instance(self, instance_id: str) -> str | None:
        """Idempotent: an already-terminated or unknown instance is success. Returns the state
        EC2 answers with (``shutting-down``, ``terminated``), or None for an unknown id."""
        with self._errors("ec2:TerminateInstances", {"instance": instance_id}):
            try:
                response = self._client.terminate_instances(InstanceIds=[instance_id])
            except ClientError as exc:
                if _error_code(exc) not in (
                    "InvalidInstanceID.NotFound",
                    "InvalidInstanceID.Malformed",
                ):
                    raise
                return None
        for change in response.get("TerminatingInstances", ()):
            if change.get("InstanceId") == instance_id:
                return change.get("CurrentState", {}).get("Name") or None
        return None

    def get_console_output(self, instance_id: str) -> str:
        return console.console_output(self, instance_id)

    def console_host_keys(self, instance_id: str) -> list[HostKey]:
        return parse_console_host_keys(console.console_output(self, instance_id))

    # ---- volumes -----------------------------------------------------------------------

    def get_volume(self, volume_id: str) -> Volume | None:
        try:
            with self._errors("ec2:DescribeVolumes", {"volume": volume_id}):
                response = self._client.describe_volumes(VolumeIds=[volume_id])
        except ResourceNotFoundError:
            return None
        found = _volumes_in(response)
        return found[0] if found else None

    def find_volumes(self, tags: Mapping[str, str]) -> list[Volume]:
        filters = _tag_filters(tags)
        with self._errors("ec2:DescribeVolumes"):
            pages = self._client.get_paginator("describe_volumes").paginate(Filters=filters)
            return [v for page in pages for v in _volumes_in(page)]

    def create_volume(
        self,
        availability_zone: str,
        size_gib: int,
        tags: Mapping[str, str],
        client_token: str,
        volume_type: str = "gp3",
        encrypted: bool = True,
        snapshot_id: str | None = None,
    ) -> Volume:
        resources = {"availability_zone": availability_zone, "client_token": client_token}
        extra: dict[str, Any] = {"SnapshotId": snapshot_id} if snapshot_id else {}
        with self._errors("ec2:CreateVolume", resources):
            response = self._client.create_volume(
                AvailabilityZone=availability_zone,
                Size=size_gib,
                VolumeType=volume_type,  # type: ignore[arg-type]
                Encrypted=encrypted,
                ClientToken=client_token,
                TagSpecifications=_tag_specs(tags, "volume"),
                **extra,
            )
        return _volume(response)

    def delete_volume(self, volume_id: str) -> None:
        """Delete; a volume that is already gone is success."""
        with self._errors("ec2:DeleteVolume", {"volume": volume_id}):
            try:
                self._client.delete_volume(VolumeId=volume_id)
            except ClientError as exc:
                if _error_code(exc) not in ("InvalidVolume.NotFound", "InvalidVolumeID.Malformed"):
                    raise

    def attach_volume(self, volume_id: str, instance_id: str, device: str) -> None:
        """Attach; already attached (or attaching) to this same instance is success, so a
        resumed step can simply call it again."""
        resources = {"volume": volume_id, "instance": instance_id, "device": device}
        with self._errors("ec2:AttachVolume", resources):
            try:
                self._client.attach_volume(
                    VolumeId=volume_id, InstanceId=instance_id, Device=device
                )
            except ClientError as exc:
                if _error_code(exc) != "VolumeInUse":
                    raise
                volume = self.get_volume(volume_id)
                ours = volume.attachment_to(instance_id) if volume else None
                if ours is None or ours.state not in ("attaching", "attached"):
                    raise

    def detach_volume(self, volume_id: str, instance_id: str, force: bool = False) -> None:
        """Detach from ``instance_id``; a volume not attached to it is success."""
        resources = {"volume": volume_id, "instance": instance_id}
        with self._errors("ec2:DetachVolume", resources):
            try:
                self._client.detach_volume(VolumeId=volume_id, InstanceId=instance_id, Force=force)
            except ClientError as exc:
                if _error_code(exc) not in ("IncorrectState", "InvalidAttachment.NotFound"):
                    raise

    # ---- snapshots ---------------------------------------------------------------------

    def create_snapshot(
        self, volume_id: str, description: str, tags: Mapping[str, str]
    ) -> Snapshot:
        """CreateSnapshot has no client token: the tags (run id) go in the same call so the
        caller can find an existing snapshot before creating another."""
        with self._errors("ec2:CreateSnapshot", {"volume": volume_id}):
            response = self._client_once.create_snapshot(
                VolumeId=volume_id,
                Description=description,
                TagSpecifications=_tag_specs(tags, "snapshot"),
            )
        return _snapshot(response)

    def find_snapshots(self, tags: Mapping[str, str]) -> list[Snapshot]:
        filters = _tag_filters(tags)
        with self._errors("ec2:DescribeSnapshots"):
            pages = self._client.get_paginator("describe_snapshots").paginate(
                OwnerIds=["self"], Filters=filters
            )
            return [_snapshot(s) for page in pages for s in page.get("Snapshots", ())]

    def ensure_security_group(self, name: str, ssh_cidr: str, tags: Mapping[str, str]) -> str:
        return groups.ensure_security_group(self, name, ssh_cidr, tags)

    # SSH from where this host is now (run/steps/access.py): rules added per run, tagged.
    def security_group_tags(self, group_id: str) -> Mapping[str, str] | None:
        return groups.security_group_tags(self, group_id)

    def ingress_rules(self, group_id: str) -> list[IngressRule]:
        return groups.ingress_rules(self, group_id)

    def find_ingress_rules(self, tags: Mapping[str, str]) -> list[IngressRule]:
        return groups.find_ingress_rules(self, tags)

    def authorize_ssh(self, group_id: str, cidr: str, tags: Mapping[str, str]) -> str:
        return groups.authorize_ssh(self, group_id, cidr, tags)

    def revoke_ingress_rules(self, group_id: str, rule_ids: Sequence[str]) -> None:
        groups.revoke_ingress_rules(self, group_id, rule_ids)

    def get_snapshot(self, snapshot_id: str) -> Snapshot | None:
        """None when no snapshot with that id is visible to this account."""
        with self._errors("ec2:DescribeSnapshots", {"snapshot": snapshot_id}):
            try:
                found = self._client.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
            except ClientError as exc:
                if _error_code(exc) in ("InvalidSnapshot.NotFound", "InvalidSnapshotID.Malformed"):
                    return None
                raise
        return _snapshot(found[0]) if found else None

    def delete_snapshot(self, snapshot_id: str) -> None:
        """Delete; a snapshot that is already gone is success."""
        with self._errors("ec2:DeleteSnapshot", {"snapshot": snapshot_id}):
            try:
                self._client.delete_snapshot(SnapshotId=snapshot_id)
            except ClientError as exc:
                if _error_code(exc) != "InvalidSnapshot.NotFound":
                    raise

    # ---- read-only checks ------------------------------------------------------------

    def missing_security_groups(self, group_ids: Sequence[str]) -> list[str]:
        return groups.missing_security_groups(self, group_ids)

    def default_subnet(self, availability_zone: str) -> str | None:
        return groups.default_subnet(self, availability_zone)

    def subnet_routes_to_internet(self, subnet_id: str) -> bool:
        return groups.subnet_routes_to_internet(self, subnet_id)

    # ---- waits -------------------------------------------------------------------------

    def wait_instance_running(self, instance_id: str, timeout: float) -> Instance:
        """Wait until the instance is running and has its public IP (the launch asks for one)."""
        resources = {"instance": instance_id}
        deadline = time.monotonic() + timeout

        def observe(response: Mapping[str, Any]) -> str:
            return ", ".join(
                f"{i.state}, public IP {i.public_ip or 'none'}" for i in _instances_in(response)
            )

        response = self._wait(
            # botocore's own InstanceRunning; the stubs type ``.config`` as a dict.
            cast(SingleWaiterConfig, self._client.get_waiter("instance_running").config),
            {"InstanceIds": [instance_id]},
            timeout,
            action="instance running",
            resources=resources,
            observe=observe,
            timeout_hint="the instance is slow to boot: raise the boot timeout and resume",
        )
        raw = next(i for r in response["Reservations"] for i in r["Instances"])
        if raw.get("PublicIpAddress"):
            return _instance(raw)
        # Running, but the public IP is not there yet: keep polling for it.
        response = self._wait(
            _WAITERS.get_waiter("InstanceRunningWithPublicIp"),
            {"InstanceIds": [instance_id]},
            max(0.0, deadline - time.monotonic()),
            action="instance public IP",
            resources=resources,
            observe=observe,
            timeout_hint="raise the boot timeout; check that the subnet assigns public IPv4 "
            "addresses",
        )
        return _instances_in(response)[0]

    def wait_volume_available(self, volume_id: str, timeout: float) -> Volume:
        response = self._wait(
            _WAITERS.get_waiter("VolumeAvailable"),
            {"VolumeIds": [volume_id]},
            timeout,
            action="volume available",
            resources={"volume": volume_id},
            observe=_describe_volumes,
            timeout_hint="a detach can hang while the filesystem is mounted: unmount it, or "
            "terminate the instance (safer than a forced detach), then resume",
        )
        return _volumes_in(response)[0]

    def wait_volume_attached(self, volume_id: str, instance_id: str, timeout: float) -> Volume:
        """Wait until the attachment to ``instance_id`` is ``attached`` (volume ``in-use`` is
        not enough). Fails fast if the volume is attached elsewhere or the instance is gone."""
        resources = {"volume": volume_id, "instance": instance_id}

        def instance_gone_check(response: Mapping[str, Any]) -> None:
            # The volume shows no sign of our attachment: maybe the instance died under it.
            volumes = _volumes_in(response)
            if not volumes or volumes[0].attachment_to(instance_id) is not None:
                return
            instance = self.get_instance(instance_id)
            if instance is None or instance.state in _INSTANCE_GONE_STATES:
                raise InvalidResourceStateError(
                    "instance is gone while waiting for the volume to attach "
                    f"(instance {instance.state if instance else 'not found'})",
                    run_id=self.run_id,
                    resources=resources,
                    hint="relaunch the instance and attach again",
                )

        response = self._wait(
            _attached_waiter(instance_id),
            {"VolumeIds": [volume_id]},
            timeout,
            action=f"volume attached to {instance_id}",
            resources=resources,
            observe=_describe_volumes,
            timeout_hint="an attach can stick in 'attaching' when the device name is still "
            "being released: detach, then attach with another device name",
            after_poll=instance_gone_check,
        )
        return _volumes_in(response)[0]

    def wait_instance_terminated(self, instance_id: str, timeout: float) -> None:
        self._wait(
            _WAITERS.get_waiter("InstanceGone"),
            {"InstanceIds": [instance_id]},
            timeout,
            action="instance terminated",
            resources={"instance": instance_id},
            observe=lambda r: ", ".join(i.state for i in _instances_in(r)),
            timeout_hint="check the instance in the EC2 console and terminate it there if "
            "needed, then resume",
        )

    def wait_snapshot_completed(
        self,
        snapshot_id: str,
        timeout: float,
        on_progress: Callable[[Snapshot], None] = lambda _s: None,
    ) -> Snapshot:
        def report(response: Mapping[str, Any]) -> None:
            for raw in response.get("Snapshots", ()):
                on_progress(_snapshot(raw))

        response = self._wait(
            # botocore's own SnapshotCompleted; the stubs type ``.config`` as a dict.
            cast(SingleWaiterConfig, self._client.get_waiter("snapshot_completed").config),
            {"SnapshotIds": [snapshot_id]},
            timeout,
            action="snapshot completed",
            resources={"snapshot": snapshot_id},
            observe=lambda r: ", ".join(
                f"{s.state} {s.progress or ''}".strip()
                for s in (_snapshot(x) for x in r.get("Snapshots", ()))
            ),
            timeout_hint="the snapshot is still being copied: try again later",
            after_poll=report,
        )
        return _snapshot(response["Snapshots"][0])

    def _wait(
        self,
        config: SingleWaiterConfig,
        params: Mapping[str, Any],
        timeout: float,
        **kwargs: Any,
    ) -> dict[str, Any]:
        return wait(
            self._client,
            config,
            params,
            timeout,
            poll_interval=self.poll_interval,
            run_id=self.run_id,
            **kwargs,
        )
