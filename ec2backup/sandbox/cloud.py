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
  ``faults.py`` (latency, throttling, 5xx errors, lost responses, seeded);
* ``reconcile`` (``reconcile.py``) runs every ``RECONCILE_INTERVAL`` seconds and finishes what
  takes time on AWS;
* in IAM mode (``enable_iam``, ``iam.py``), moto's own IAM enforcement is switched on after the
  seeding (``seed.py``), and EC2's denials are answered as EC2 answers them (403
  ``UnauthorizedOperation``);
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

from .faults import CloudFault, Faults
from .host import release_loops_under
from .iam import enable_iam, install_ec2_denials
from .instances import Instances
from .layout import CHECKIP_PATH, Layout
from .reconcile import Reconciler
from .seed import seed
from .settings import CloudSettings
from .snapshots import Snapshots
from .state import CloudState, Hook
from .tokens import ClientTokens
from .volumes import Volumes


class LocalCloud:
    def __init__(self, layout: Layout, region: str) -> None:
        self.state = CloudState(layout, region)
        self.faults = Faults(self.state)
        self.tokens = ClientTokens()
        self.volumes = Volumes(self.state, self.tokens)
        self.instances = Instances(self.state, self.tokens, self.volumes)
        self.snapshots = Snapshots(self.state)
        self.reconciler = Reconciler(self.state, self.faults, self.instances, self.volumes)
        self.default_ami_id = ""

    # --- installation ------------------------------------------------------------------------

    def action_hooks(self) -> dict[str, Hook]:
        """EC2Response method name -> hook. Add a hook here to change one more action."""
        return {
            "run_instances": self.instances.run_instances,
            "terminate_instances": self.instances.terminate_instances,
            "stop_instances": self.instances.stop_instances,
            "start_instances": self.instances.start_instances,
            "get_console_output": self.instances.get_console_output,
            "create_volume": self.volumes.create_volume,
            "delete_volume": self.volumes.delete_volume,
            "attach_volume": self.volumes.attach_volume,
            "detach_volume": self.volumes.detach_volume,
            "create_snapshot": self.snapshots.create_snapshot,
            "delete_snapshot": self.snapshots.delete_snapshot,
            "describe_snapshots": self.snapshots.describe_snapshots,
        }

    def install(self) -> None:
        moto_enis.random_public_ip = self.instances.allocate_address
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

    def seed(self) -> str:
        """Register the Ubuntu AMI and the SSM public parameter that names it."""
        self.default_ami_id = seed(self.state.region)
        return self.default_ami_id

    # --- background --------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Finish what real EC2 finishes later. Called periodically by the server."""
        self.reconciler.reconcile()

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
            return release_loops_under(self.state.layout.root)
