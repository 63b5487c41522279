"""botocore models of EC2, SSM and EBS that hold only the operations ec2backup calls.

botocore's EC2 model describes ~830 operations and ~4,400 shapes. Parsing it took ~0.1 s of
every command that makes an EC2 client, and building a client's methods for all of them
another ~0.03 s per client: a tenth of a backup run's own overhead on the local cloud. The
copy made here keeps the listed operations and the shapes they reach, without documentation.
SSM (one operation of ~150, for the AMI parameter) gets the same treatment. The copies are
written once per botocore version (and list of operations) under the cache directory and put
first on the session's model search path (botocore's ``data_path``); everything else
(endpoints, paginators, waiters, retries) still comes from botocore's own files.

The same directory holds a copy of botocore's ``endpoints.json`` (1.2 MB, ~17 ms to parse in
every process that makes a client) with only the services in ``SERVICES``; every partition's
regions and defaults stay, so those services resolve exactly as with the full file. And the
session's loader is told which services exist: botocore otherwise lists every one of its
~400 service directories (~1,800 directory listings) the first time each kind of file (model,
endpoint rules, paginators, waiters) is loaded, only to check the name it was asked for.

If the cache cannot be written, the session keeps botocore's full models: slower, same result.
A call to an operation missing from ``OPERATIONS`` fails with AttributeError at once;
``tests/adapters/aws/test_botomodel.py`` checks the lists against every call in the adapter.
``EC2BACKUP_NO_FASTPATHS`` (``fastpaths.BOTOCORE_MODELS``) turns all of it off: botocore's own
session, loader and files, as boto3 makes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import botocore
import botocore.loaders
import botocore.session

from ...fastpaths import BOTOCORE_MODELS, enabled
from ...paths import write_atomically

log = logging.getLogger(__name__)

EC2_OPERATIONS = frozenset(
    {
        "AttachVolume",
        "AuthorizeSecurityGroupIngress",
        "CreateSecurityGroup",
        "CreateSnapshot",
        "CreateVolume",
        "DeleteSnapshot",
        "DeleteVolume",
        "DescribeImages",
        "DescribeInstanceTypeOfferings",
        "DescribeInstanceTypes",
        "DescribeInstances",
        "DescribeRegions",
        "DescribeRouteTables",
        "DescribeSecurityGroupRules",
        "DescribeSecurityGroups",
        "DescribeSnapshotTierStatus",
        "DescribeSnapshots",
        "DescribeSubnets",
        "DescribeVolumes",
        "DescribeVpcs",
        "DetachVolume",
        "DescribeVolumesModifications",
        "GetConsoleOutput",
        "ModifySnapshotTier",
        "ModifyVolume",
        "RestoreSnapshotTier",
        "RevokeSecurityGroupIngress",
        "RunInstances",
        "TerminateInstances",
    }
)

SSM_OPERATIONS = frozenset({"GetParameter"})

# The EBS direct APIs that read snapshots (what each snapshot adds to the chain).
EBS_OPERATIONS = frozenset({"ListChangedBlocks", "ListSnapshotBlocks"})

OPERATIONS: dict[str, frozenset[str]] = {
    "ec2": EC2_OPERATIONS,
    "ssm": SSM_OPERATIONS,
    "ebs": EBS_OPERATIONS,
}

# Every service the session makes clients for: the trimmed ones and STS (the credentials
# probe), whose small model loads whole. A client of any other service raises
# UnknownServiceError; tests/adapters/aws/test_botomodel.py checks the list against the adapter.
SERVICES = frozenset({*OPERATIONS, "sts"})

CACHE_ENV = "EC2BACKUP_CACHE_DIR"


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    from platformdirs import user_cache_path

    return user_cache_path("ec2backup")


def trim_service_model(full: Mapping[str, Any], operations: Iterable[str]) -> dict[str, Any]:
    """``full`` (a ``service-2`` model) with only ``operations`` and the shapes they reach."""
    shapes: Mapping[str, Any] = full["shapes"]
    kept: dict[str, Any] = {}

    def keep(name: str) -> None:
        if name in kept:
            return
        shape = {k: v for k, v in shapes[name].items() if k != "documentation"}
        kept[name] = shape
        for ref in (shape.get(k) for k in ("member", "key", "value")):
            if ref:
                keep(ref["shape"])
        for member in shape.get("members", {}).values():
            keep(member["shape"])

    kept_operations = {}
    for name in sorted(operations):
        operation = {k: v for k, v in full["operations"][name].items() if k != "documentation"}
        kept_operations[name] = operation
        for ref in (operation.get("input"), operation.get("output"), *operation.get("errors", ())):
            if ref:
                keep(ref["shape"])
    return {
        **{k: v for k, v in full.items() if k not in ("operations", "shapes", "documentation")},
        "operations": kept_operations,
        "shapes": kept,
    }


def _write_whole(target: Path, model: Mapping[str, Any]) -> None:
    """A concurrent run sees no file or the whole one, and a failed write (a full disk)
    leaves nothing behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, json.dumps(model, separators=(",", ":")).encode())


def trim_endpoints(full: Mapping[str, Any], services: Iterable[str]) -> dict[str, Any]:
    """``full`` (botocore's ``endpoints``) with only ``services`` in each partition."""
    keep = set(services)
    return {
        **full,
        "partitions": [
            {**p, "services": {k: v for k, v in p["services"].items() if k in keep}}
            for p in full["partitions"]
        ],
    }


def trimmed_models_dir(
    cache_dir: Path,
    operations: Mapping[str, Iterable[str]] = OPERATIONS,
    services: Iterable[str] = SERVICES,
) -> Path | None:
    """The directory to put first on botocore's search path, written if missing; None if it
    cannot be written."""
    wanted = {service: sorted(ops) for service, ops in sorted(operations.items())}
    endpoint_services = sorted(services)
    key = json.dumps({"models": wanted, "endpoints": endpoint_services})
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    root = cache_dir / f"botocore-{botocore.__version__}-{digest}"
    if (root / "complete").is_file():
        return root
    try:
        loader = botocore.loaders.Loader()
        for service, ops in wanted.items():
            api_version = loader.determine_latest_version(service, "service-2")
            full = loader.load_service_model(service, "service-2", api_version)
            _write_whole(
                root / service / api_version / "service-2.json", trim_service_model(full, ops)
            )
        endpoints = trim_endpoints(loader.load_data("endpoints"), endpoint_services)
        _write_whole(root / "endpoints.json", endpoints)
        (root / "complete").touch()
    except OSError as exc:
        log.debug("no trimmed botocore models (%s); using the full ones", exc)
        return None
    return root


class KnownServicesLoader(botocore.loaders.Loader):
    """botocore's loader, with ``SERVICES`` as the services that exist instead of a listing of
    every directory on the search path. A kind of file a service lacks (waiters of SSM) still
    raises DataNotFoundError when loaded, as before."""

    def list_available_services(self, type_name: str) -> list[str]:
        return sorted(SERVICES)


def botocore_session(cache_dir: Path | None = None) -> botocore.session.Session:
    """The botocore session ec2backup makes its clients from: for ``SERVICES``, its EC2 and
    SSM clients loading the trimmed models; botocore's own unless the speed trick is on."""
    session = botocore.session.get_session()
    if not enabled(BOTOCORE_MODELS):
        return session
    root = trimmed_models_dir(cache_dir or default_cache_dir())
    if root is not None:
        # data_path is botocore's documented search path (AWS_DATA_PATH); the user's stays
        # after ours, so their own models of other services still load.
        existing = session.get_config_variable("data_path")
        session.set_config_variable(
            "data_path", os.pathsep.join(p for p in (str(root), existing) if p)
        )
    # As botocore's own create_loader builds it from data_path, with the listing replaced.
    data_path = session.get_config_variable("data_path") or ""
    paths = [os.path.expanduser(os.path.expandvars(p)) for p in data_path.split(os.pathsep) if p]
    session.register_component("data_loader", KnownServicesLoader(extra_search_paths=paths))
    return session
