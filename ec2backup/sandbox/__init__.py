"""The local cloud ("sandbox"): an EC2 that ec2backup's end-to-end tests and `make demo` run
against, on this machine, as root. No AWS account is involved.

Usage::

    with Sandbox.start(Path("/tmp/sb")) as sandbox:
        os.environ.update(sandbox.env)    # AWS_ENDPOINT_URL, keys, region
        ...                               # boto3 / ec2backup as against AWS

    # or, from a shell:  eval "$(ec2backup sandbox start --dir D)"

    # faults and timing, at start or later (the same names):
    with Sandbox.start(D, throttle_rate=0.1, error_rate=0.05, latency=0.05, boot_delay=3,
                       attach_delay=1, detach_delay=1, terminate_delay=2, fault_seed=7) as sb:
        sb.configure_faults(no_capacity=("t3.micro@us-east-1a",), instance_limit=2)
        with sb.configured(cut_ssh_after=2, cut_ssh_on="rsync"): ...
        sb.cut_ssh(instance_id)
    # IAM enforced; env holds an administrator's key:
    with Sandbox.start(D, iam=True) as sb:
        keys = sb.create_iam_user("backup", policy_document)  # AWS_ACCESS_KEY_ID/..._SECRET_...

Processes
---------
* The *server* (``server.py``): one detached process (its own session) running moto's
  ``ThreadedMotoServer`` on 127.0.0.1:<random port>. It holds all cloud state, so the state
  survives the death of any ec2backup process (the crash tests SIGKILL ec2backup).
* One *instance* per running EC2 instance: ``unshare --mount --pid --fork --kill-child
  --mount-proc`` running a shell that sets up the instance's private mounts and then execs
  ``sshd -D`` on ``127.0.X.Y:22``, which becomes pid 1 of the instance's pid namespace.
  Killing that sshd kills every process of the instance (SSH sessions, rsync) and so ends its
  mount namespace and every mount made over SSH. The server is the parent of these.
* ``Sandbox`` (``api.py``) and the CLI (``cli.py``) only start/stop the server, read D and
  write ``D/settings.json``; they import neither moto nor boto3 (``create_iam_user`` imports
  boto3 when called).

What an instance looks like from SSH
------------------------------------
* Private tmpfs on ``/mnt``, ``/dev/disk/by-id`` and ``/home``: mounts and device links made
  inside are invisible on the host and in other instances.
* User ``ubuntu`` (uid 1000), existing only inside the instance: private copies of
  /etc/passwd, /etc/group, /etc/shadow (replacing whatever holds uid 1000 on the host) and of
  /etc/sudoers.d (``ubuntu ALL=(ALL) NOPASSWD:ALL``) are bind-mounted over the host's. So
  ``sudo -n`` works and a command that forgot sudo fails, as on an Ubuntu AMI. Root login is
  refused. Authorized keys: the top-level ``ssh_authorized_keys`` of the ``#cloud-config``
  user data, plus the public key of the ``KeyName`` key pair if moto knows it.
* Booted from its user data as cloud-init boots Ubuntu 24.04 (``cloudinit.py``): host keys
  from ``ssh_keys`` (else a generated ed25519 key); ``bootcmd`` as root before the sshd starts,
  when D-Bus and logind are not up yet; ``runcmd``, a shell-script user data and
  ``power_state`` in the final stage, after the sshd started. Their output goes to
  ``instances/<i-id>/cloud-init-output.log``.
* No systemd: its ``/usr/local/sbin`` (first on root's and sudo's PATH) holds stand-ins for
  ``systemd-run``, ``systemctl``, ``shutdown``, ``poweroff`` and ``halt`` (``standin.py``).
  Before D-Bus is up they fail as on Ubuntu ("Failed to connect to bus"): a ``shutdown +N`` in
  ``bootcmd`` arms nothing. Afterwards ``systemd-run --on-active=SPAN [--unit=NAME] CMD`` arms
  a transient timer, ``systemctl stop NAME.timer`` disarms it, ``shutdown [-P] +N|hh:mm|now``
  schedules (``-c`` cancels) logind's one power-off, ``systemctl poweroff`` powers off. The
  server runs a due timer's command inside the instance (``services.py``).
* Each instance has its own empty blkid cache (a tmpfs on /run/blkid), as a new instance
  has: the host's cache describes whatever last had a /dev/loopN name.
* An attached volume is a loop device over the volume's image, linked (with ``nsenter`` into
  the instance's mount namespace) as
  ``/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<id without dash>``, the Nitro name.

What is changed in moto, and why (one layer, one lock)
------------------------------------------------------
``cloud.py`` (``LocalCloud``) composes the parts and installs them into moto's ``EC2Response``;
they share one ``CloudState`` (``state.py``: the lock, live machines and devices, the delayed
changes). One concern each: ``instances.py`` (Run/Terminate/Stop/StartInstances,
GetConsoleOutput, boot, power-off, addresses), ``volumes.py`` (Create/Delete/Attach/
DetachVolume, devices), ``snapshots.py`` (Create/Delete/DescribeSnapshots), ``tokens.py``
(ClientToken), ``launch_checks.py`` (capacity and limits on RunInstances), ``faults.py`` (EC2
call faults, re-reading the settings), ``reconcile.py`` (the periodic step), ``iam.py`` (IAM
mode; ``iam_requests.py`` and ``iam_policy.py``: what it authorizes and how), ``seed.py``
(the AMI and SSM parameter).

* ``random_public_ip`` (where moto makes a network interface) returns a fresh 127.0.X.Y, so
  the RunInstances response carries an address that is ours. moto makes one only where the
  subnet maps public addresses or the launch asks (``AssociatePublicIpAddress``), as EC2;
  an instance without one, or in a subnet with no 0.0.0.0/0 route to an internet gateway,
  runs its sshd on an address nobody is told: it cannot be reached. The default VPC gets
  the internet gateway and route a new AWS account has (moto's has none). moto's random
  public addresses belong to real internet hosts and must never be connected to.
* RunInstances: honours ``ClientToken`` (same token -> same reservation, also after the
  instance terminated; same token, other parameters -> ``IdempotentParameterMismatch``), then
  boots an sshd per instance. CreateVolume honours ``ClientToken`` the same way.
* TerminateInstances: kills the instance's sshd (ending namespace and mounts), releases its
  loop devices; moto itself makes the volumes ``available``.
* GetConsoleOutput: a cloud-init style boot log (``console.py``); once the instance's final
  stage is over, the sshd's real host key between ``-----BEGIN SSH HOST KEY KEYS-----`` and
  ``-----END SSH HOST KEY KEYS-----`` (as cloud-init prints it at the end of boot), or an
  impostor key if ``Sandbox.fake_console_host_key()`` asked for one.
* CreateVolume/DeleteVolume: create/remove a sparse image of the volume's size (a volume made
  from a snapshot starts as a copy of the snapshot's image).
* AttachVolume: the zone/in-use/running checks EC2 makes, then loop device + device link.
* DetachVolume of a root device is refused unless the instance is stopped
  (``OperationNotPermitted``); the root volume goes with the instance (DeleteOnTermination).
* DetachVolume: while a filesystem on the device is mounted in the instance, the attachment
  stays ``detaching`` (volume ``in-use``) as on AWS; the reconcile loop completes the detach
  once it is unmounted or the instance terminates. ``Force=True`` detaches at once.
* CreateSnapshot/DeleteSnapshot: copy the volume's image sparsely / remove the copy; moto
  keeps the metadata (tags from TagSpecifications).
* DescribeSnapshots: honours ``OwnerIds`` (moto ignores it), so ``self`` lists the account's
  own snapshots only, not the one behind Canonical's AMI.
* The EBS direct APIs ListSnapshotBlocks and ListChangedBlocks (``ebs.py``; the ``ebs``
  service at the same endpoint): answered from the snapshot images, 512 KiB blocks, a lineage
  that follows volumes made from snapshots, AWS's pagination (pages may be empty and still
  carry a ``NextToken``) and errors; pending and archived snapshots cannot be read.
* Snapshot tiers (``tiers.py``): ModifySnapshotTier only of a completed snapshot in the
  standard tier, RestoreSnapshotTier only of an archived one, both taking ``tier_delay``
  seconds (the ``*-in-progress`` statuses meanwhile); CreateVolume from an archived snapshot
  that is not restored is refused; DescribeSnapshotTierStatus lists the account's own only.
* Seeded at start, in an account that is otherwise empty like a new one (moto's ~200 default
  AMIs are not loaded): Ubuntu 24.04 AMIs (owner Canonical) for x86_64 and arm64 and the SSM
  public parameters ``/aws/service/canonical/ubuntu/server/24.04/stable/current/{amd64,arm64}/
  hvm/ebs-gp3/ami-id`` naming them (``Sandbox.default_ami_id`` is the amd64 one,
  ``Sandbox.ami_ids`` both). moto itself is set right where it departs from EC2 on calls
  ec2backup makes (``moto_fixes.py``: a second TerminateInstances is harmless).
* RunInstances refuses, as EC2 does (``launch_checks.py``, from moto's instance-type data): an
  image whose architecture the type does not support (``InvalidParameterValue``) and a type
  not offered in the zone (``Unsupported``, naming the zones that offer it).
* Extension points: ``LocalCloud.before_action``/``after_action`` (every EC2 call; they apply
  the faults of ``faults.py``), ``LocalCloud.action_hooks`` (one more action: a method of the
  part it concerns) and ``Reconciler.reconcile`` (every 0.2 s, under the same lock as the
  hooks).

Faults and timing (``settings.py``: ``CloudSettings``; flags of ``sandbox start``, keyword
arguments of ``Sandbox.start``, changed live by ``Sandbox.configure_faults``/``configured`` or
``sandbox configure``, which rewrite ``D/settings.json``; the server re-reads it before the next
EC2 call)
-----------------------------------------------------------------------------------------------
* EC2 call faults, decided before the call runs (outside the lock): ``latency`` seconds added;
  ``throttle_rate`` -> 503 ``RequestLimitExceeded``; ``error_rate`` -> 500 ``InternalError``
  or 503 ``Unavailable`` (nothing done); ``lost_response_rate`` -> the call does its work and
  answers 500 ``InternalError`` (a ClientToken retry must find it). ``fault_actions`` limits
  them to some actions. Seeded: the n-th call of an action after a (re)configuration gets the
  outcome drawn from ``Random(f"{fault_seed}:{action}:{n}")``, whatever else runs meanwhile.
* Delays (seconds, default 0 = at once): ``boot_delay`` (``pending`` -> ``running``; the sshd
  starts only then, so port 22 of a pending instance is closed and its console empty),
  ``attach_delay`` (``attaching`` -> ``attached``; the device appears then),
  ``detach_delay`` (``detaching`` -> volume ``available``; still never while mounted unless
  forced), ``terminate_delay`` (``shutting-down`` -> ``terminated``; the machine is gone at
  once, its volumes stay ``in-use`` until terminated; also ``stopping`` -> ``stopped``),
  ``ssh_delay`` (``running`` -> cloud-final done: until then the console shows no host keys
  and logins as ``ubuntu`` are refused), ``snapshot_delay`` (``pending`` -> ``completed``,
  the progress rising; CreateVolume from a pending snapshot answers ``IncorrectState``).
  ``timing="aws"`` gives every delay left at 0 AWS's typical value (``settings.AWS_DELAYS``:
  boot 12 s, SSH 20 s, attach 5, detach 8, terminate 45, snapshot 600) times
  ``timing_scale``.
* Eventual consistency (``consistency_lag``, ``consistency.py``): for that long after a
  create, calls naming the new instance, volume, security group or snapshot by id answer
  NotFound as EC2 words it, and tag-filtered Describe calls leave it out.
* Dead-man's switch: nothing is read from the user data by the server. A timer the
  instance's own commands armed (``systemd-run --on-active``, a scheduled ``shutdown``) runs its
  command inside the instance once due, one minute of its span lasting ``minute_seconds`` s
  (default 60; read when the timer is checked, so a span of 1min lasts ``minute_seconds`` real
  seconds). A power-off asked for from inside (``systemctl poweroff``) ends the instance with no
  API call: by its ``InstanceInitiatedShutdownBehavior``, ``terminate`` -> shutting-down ->
  terminated (volumes detached), else ``stop`` -> stopping -> stopped; StateReason
  ``Client.InstanceInitiatedShutdown``. The ``ec2backup:expires-at`` tag is ec2backup's own
  (its reaper reads it); EC2 ignores tags, and so does the sandbox.
* SSH: ``Sandbox.cut_ssh(id)`` kills the per-connection sshd processes of the instance (not
  the listening sshd), as a dropped connection: clients see it end, session processes (rsync)
  see EOF, new connections are accepted. ``cut_ssh_after`` does it by itself, once per
  instance (per configuration), that many seconds after an SSH connection (or a process named
  ``cut_ssh_on``, e.g. ``rsync``) is seen running in it.
* Capacity: ``no_capacity`` (``t3.micro`` or ``t3.micro@us-east-1a``) -> RunInstances answers
  500 ``InsufficientInstanceCapacity`` with EC2's message (a server error, as on AWS: botocore
  retries it unless told otherwise); ``instance_limit`` -> 400 ``InstanceLimitExceeded`` when
  live (pending, running, stopping, shutting-down) + MinCount would exceed it. Checked after
  the ClientToken, so a replay of an earlier launch still answers.
* StopInstances kills the machine (the volumes stay attached in the API); StartInstances is
  refused (``UnsupportedOperation``): the sandbox cannot boot a stopped instance again.

IAM mode (``--iam``, ``Sandbox.start(iam=True)``)
-------------------------------------------------
Every request must carry a SigV4 signature by a known IAM access key (moto's check: else 401
``AuthFailure``), and every EC2, EBS direct API and SSM call is authorized as AWS authorizes it
(``iam.py``): ``iam_requests.py`` lists each (action, resource ARN) pair the Service
Authorization Reference (parliament's copy) says the call needs, with only the condition keys
it lists for that resource type, their values taken from the request and the resources
(``aws:RequestTag``, ``aws:ResourceTag``, ``aws:TagKeys``, ``ec2:CreateAction`` for tags
given at creation, ``ec2:InstanceType``, ``ec2:MetadataHttpTokens``...);
``iam_policy.py`` evaluates the user's policies for each pair (explicit Deny over Allow, a
missing key makes a condition false, ``...IfExists``, ``ForAllValues``/``ForAnyValue``).
One pair denied refuses the call, worded as AWS does: EC2 403 ``UnauthorizedOperation``
("... is not authorized to perform: ec2:RunInstances on resource: arn:...:volume/* because no
identity-based policy allows ...", with an encoded message), SSM ``AccessDeniedException``,
the EBS direct APIs 403 ``AccessDeniedException`` ("... ebs:ListChangedBlocks on resource:
arn:aws:ec2:us-east-1::snapshot/snap-..."; ListChangedBlocks authorizes both snapshots).
RunInstances with ``DryRun`` is authorized the same way and answers ``DryRunOperation``.
``sts:GetCallerIdentity`` needs no permission; IAM calls keep moto's check (actions only).
IAM is switched on after the seeding, which writes to moto's backends directly. An
administrator (``sandbox-admin``, ``*:*``) is made then; its key is in ``state.json`` (mode
0600) and in ``Sandbox.env``. ``Sandbox.create_iam_user(name, policy)`` makes users with it.

Files in the directory D
------------------------
::

    server.pid, server.log       the server process and its log (faults injected are logged)
    state.json                   endpoint, region, AMI id (IAM: the admin key); exists while
                                 the server answers
    settings.json                fault and timing settings (CloudSettings), re-read on change
    volumes/<vol-id>.img         sparse image of each volume (kept after stop)
    snapshots/<snap-id>.img      the volume's image when the snapshot was taken
    instances/<i-id>/            host keys, sshd_config, boot.sh, bootcmd.sh, final.sh,
                                 cloud-init-output.log, user database copies, sbin/ (the
                                 stand-ins), systemd/ (their state: timers, requests), sshd.log,
                                 machine.json (pids and address: used by stop)
    console-overrides/<i-id>     that instance's console shows an impostor host key;
    console-overrides/next       ... the next instance launched gets one

``stop`` asks the server to terminate everything (SIGTERM), then, whatever the server did,
kills every instance process recorded in ``instances/*/machine.json`` (checking the command
line first, against pid reuse) and detaches every loop device whose backing file lies in D.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import (
        Sandbox,
        SandboxError,
        missing_tools,
        require_root,
        require_tools,
        stop_sandbox,
    )

__all__ = [
    "Sandbox",
    "SandboxError",
    "missing_tools",
    "require_root",
    "require_tools",
    "stop_sandbox",
]


def __getattr__(name: str) -> Any:
    # Loaded on first use: the main CLI imports ``sandbox.cli`` (and so this package) for
    # every command, and most never touch the sandbox.
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
