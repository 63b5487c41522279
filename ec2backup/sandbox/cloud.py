"""Everything the sandbox changes in moto, composed and installed. Runs only inside the server
process.

moto keeps the EC2 model (ids, states, tags, filters, waiters); the parts below add what
ec2backup's correctness depends on and moto lacks. ``LocalCloud`` makes one of each, hands them
the one ``CloudState`` they share (``state.py``), and installs them into moto's ``EC2Response``:

* ``random_public_ip`` (called where moto makes a network interface) hands out 127.0.X.Y
  (``Instances.allocate_address``), so the RunInstances response already carries an address
  that is safe to connect to;
* the EC2 actions listed in ``LocalCloud.action_hooks`` are wrapped: each hook gets the moto
  response object (request parameters, backend) and moto's own handler, and does the real work
  on the host around it (sshd, loop devices, images) and the missing semantics:
  ``instances.py``, ``volumes.py``, ``snapshots.py``, with ``tokens.py`` (ClientToken) and
  ``launch_checks.py`` (capacity);
* ``before_action`` sees every EC2 call first and ``after_action`` its answer: the faults of
  ``faults.py`` (latency, throttling, 5xx errors, lost responses, seeded) and the eventual
  consistency of ``consistency.py`` (NotFound by id right after a create);
* ``reconcile`` (``reconcile.py``) runs every ``RECONCILE_INTERVAL`` seconds and finishes what
  takes time on AWS;
* in IAM mode (``enable_iam``, ``iam.py``), IAM is enforced after the seeding (``seed.py``):
  moto checks the signatures, and EC2, EBS direct API and SSM calls are authorized per
  resource and condition as AWS does (``iam_requests.py``, ``iam_policy.py``), denials worded
  as AWS words them (403 ``UnauthorizedOperation``; the EBS direct APIs' 403
  ``AccessDeniedException``);
* ``GET /_sandbox/checkip`` answers the client's address (``client_address``), as
  checkip.amazonaws.com does on AWS; the instances' port 22 admits that address only if their
  security groups do (``firewall.py``, applied by ``Instances.guard_ssh``).

One lock (``CloudState.lock``) serialises the hooks and the reconcile step, since the moto
server is threaded. Faults and latency are decided outside it, so a slow call does not hold up
the others.
"""

from __future__ import annotations

from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.models import elastic_network_interfaces as moto_enis
from moto.ec2.responses import EC2Response
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

from . import iam, moto_fixes
from .consistency import Consistency
from .ebs import EbsDirect
from .faults import CloudFault, Faults
from .host import release_loops_under
from .instances import Instances
from .layout import CHECKIP_PATH, Layout
from .modifications import Modifications, install_states
from .reconcile import Reconciler
from .seed import seed
from .settings import CloudSettings
from .snapshots import Snapshots
from .state import CloudState, Hook, Original
from .tiers import Tiers
from .tokens import ClientTokens
from .volumes import Volumes


class LocalCloud:
    def __init__(self, layout: Layout, region: str) -> None:
        self.state = CloudState(layout, region)
        self.faults = Faults(self.state)
        self.tokens = ClientTokens()
        self.consistency = Consistency(self.state)
        self.volumes = Volumes(self.state, self.tokens, self.consistency)
        self.instances = Instances(self.state, self.tokens, self.volumes, self.consistency)
        self.tiers = Tiers(self.state)
        self.ebs = EbsDirect(self.state, self.tiers)
        self.snapshots = Snapshots(self.state, self.consistency, self.ebs, self.tiers)
        self.modifications = Modifications(self.state)
        self.reconciler = Reconciler(
            self.state, self.faults, self.instances, self.volumes, self.snapshots
        )
        self.ami_ids: dict[str, str] = {}

    # --- installation ------------------------------------------------------------------------

    def action_hooks(self) -> dict[str, Hook]:
        """EC2Response method name -> hook. Add a hook here to change one more action."""
        return {
            "run_instances": self.instances.run_instances,
            "terminate_instances": self.instances.terminate_instances,
            "stop_instances": self.instances.stop_instances,
            "start_instances": self.instances.start_instances,
            "get_console_output": self.instances.get_console_output,
            "create_volume": self._create_volume,
            "delete_volume": self.volumes.delete_volume,
            "attach_volume": self.volumes.attach_volume,
            "detach_volume": self.volumes.detach_volume,
            "create_snapshot": self.snapshots.create_snapshot,
            "delete_snapshot": self.snapshots.delete_snapshot,
            "describe_snapshots": self.snapshots.describe_snapshots,
            "modify_volume": self.modifications.modify_volume,
            "describe_volumes_modifications": self.modifications.describe_volumes_modifications,
            "describe_instances": self.consistency.describe_instances,
            "describe_volumes": self.consistency.describe_volumes,
            "create_security_group": self.create_security_group,
            "modify_snapshot_tier": self.tiers.modify_snapshot_tier,
            "restore_snapshot_tier": self.tiers.restore_snapshot_tier,
            "describe_snapshot_tier_status": self.tiers.describe_snapshot_tier_status,
        }

    def _create_volume(self, response: EC2Response, original: Original) -> ActionResult:
        self.tiers.check_source(response)  # no volume from an archived snapshot
        return self.volumes.create_volume(response, original)

    def install(self) -> None:
        moto_fixes.install()
        moto_enis.random_public_ip = self.instances.allocate_address
        install_states()
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

        iam.install()
        self.ebs.install()
        self._install_checkip()

    def _install_checkip(self) -> None:
        """``GET /_sandbox/checkip``: the address this host has as AWS sees it, as
        checkip.amazonaws.com answers (one line): ``client_address`` if set, else the
        caller's own."""
        original = DomainDispatcherApplication.__call__
        cloud = self

        def call(app: Any, environ: dict[str, Any], start_response: Any) -> Any:
            if environ.get("PATH_INFO") != CHECKIP_PATH:
                return original(app, environ, start_response)
            settings = cloud.refresh_settings()
            address = settings.client_address or environ.get("REMOTE_ADDR") or "127.0.0.1"
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"{address}\n".encode()]

        setattr(DomainDispatcherApplication, "__call__", call)  # noqa: B010

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
        early = self.faults.before_action(response)
        if early is None:
            self.consistency.check(response)  # raises CloudFault: NotFound while young
        return early

    def create_security_group(self, response: EC2Response, original: Any) -> ActionResult:
        result = original()
        self.consistency.note([result.result["GroupId"]])
        return result

    def after_action(self, response: EC2Response, answer: Any) -> Any:
        """The answer to an EC2 call that ran, or the one that replaces it."""
        return self.faults.after_action(response, answer)

    def refresh_settings(self) -> CloudSettings:
        """Re-read ``D/settings.json`` if it was replaced since the last look."""
        return self.faults.refresh_settings()

    def enable_iam(self) -> tuple[str, str]:
        """Switch on moto's IAM enforcement and return an administrator's access key. Call
        after ``seed``: the seeding goes to the backends directly, never through the checks."""
        return iam.enable_iam(self.state.region)

    def seed(self) -> dict[str, str]:
        """Register the Ubuntu AMIs and the SSM public parameters that name them; return the
        AMI ids by architecture."""
        self.ami_ids = seed(self.state.region)
        return self.ami_ids

    # --- background --------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Finish what real EC2 finishes later. Called periodically by the server."""
        self.reconciler.reconcile()
        self.modifications.advance()

    def cut_ssh(self, instance_id: str) -> int:
        with self.state.lock:
            machine = self.state.machines.get(instance_id)
            return machine.cut_ssh() if machine is not None else 0

    def shutdown(self) -> list[str]:
        """Kill every instance and release every loop device; return loops left behind."""
        with self.state.lock:
            for instance_id in list(self.state.machines):
                self.instances.shut_down(instance_id)
            self.state.pending_detaches.clear()
            self.state.pending_attaches.clear()
            self.state.pending_boots.clear()
            self.state.power_offs.clear()
            self.state.pending_snapshots.clear()
            self.state.pending_cloud_final.clear()
            return release_loops_under(self.state.layout.root)
