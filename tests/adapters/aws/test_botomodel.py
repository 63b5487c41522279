"""The trimmed EC2, SSM and EBS models: they hold every operation aws.py calls and nothing else,
their shapes are complete, they are written once, and without a writable cache the full
models are used. The trimmed endpoints resolve as the full ones do, and the session's loader
does not list botocore's data directory."""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import boto3
import botocore.loaders
import botocore.regions
import pytest
from botocore import xform_name
from botocore.exceptions import UnknownServiceError
from moto import mock_aws

import ec2backup.adapters.aws
from ec2backup.adapters.aws.botomodel import (
    EC2_OPERATIONS,
    OPERATIONS,
    SERVICES,
    SSM_OPERATIONS,
    botocore_session,
    trim_endpoints,
    trim_service_model,
    trimmed_models_dir,
)
from ec2backup.fastpaths import ENV


@pytest.fixture(autouse=True)
def trick_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """These test the trick itself, also when the suite runs with every trick off."""
    monkeypatch.delenv(ENV, raising=False)


# The adapter's modules: every call it makes is in one of them.
AWS_PY = sorted(Path(ec2backup.adapters.aws.__file__).parent.glob("*.py"))


@pytest.fixture(scope="module")
def full_model() -> dict[str, Any]:
    return botocore.loaders.Loader().load_service_model("ec2", "service-2")  # type: ignore[no-any-return]


def operations_called_in_aws_py(full_model: dict[str, Any]) -> dict[str, set[str]]:
    """Every EC2 and SSM operation aws.py reaches: client method calls, paginators, botocore's
    waiters and its own waiter models (``"operation": "Name"``, all EC2)."""
    by_method = {xform_name(name): name for name in full_model["operations"]}
    ssm_model = botocore.loaders.Loader().load_service_model("ssm", "service-2")
    ssm_by_method = {xform_name(name): name for name in ssm_model["operations"]}
    ssm: set[str] = set()
    ebs_model = botocore.loaders.Loader().load_service_model("ebs", "service-2")
    ebs_by_method = {xform_name(name): name for name in ebs_model["operations"]}
    ebs: set[str] = set()
    waiters = botocore.loaders.Loader().load_service_model("ec2", "waiters-2")["waiters"]
    waiter_by_method = {xform_name(name): w["operation"] for name, w in waiters.items()}
    found: set[str] = set()
    trees = [ast.parse(p.read_text()) for p in AWS_PY]
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value == "operation"
                    and isinstance(value, ast.Constant)
                ):
                    found.add(str(value.value))
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        method, owner = node.func.attr, ast.unparse(node.func.value)
        if "client" not in owner:
            continue
        if "ssm" in owner:
            ssm.add(ssm_by_method[method])
        elif "ebs" in owner:
            ebs.add(ebs_by_method[method])
        elif method in ("get_paginator", "get_waiter") and isinstance(node.args[0], ast.Constant):
            name = str(node.args[0].value)
            found.add(by_method[name] if method == "get_paginator" else waiter_by_method[name])
        elif method in by_method:
            found.add(by_method[method])
    return {"ec2": found, "ssm": ssm, "ebs": ebs}


def test_the_lists_are_exactly_what_aws_py_calls(full_model: dict[str, Any]) -> None:
    called = operations_called_in_aws_py(full_model)
    assert {"RunInstances", "DescribeInstances", "CreateSnapshot"} <= called["ec2"]  # it works
    assert set(OPERATIONS) == set(called)
    for service, listed in OPERATIONS.items():
        assert called[service] - listed == set(), f"add these to botomodel's {service} list"
        assert listed - called[service] == set(), f"no longer called: remove from {service}'s"


def test_services_are_exactly_those_aws_py_makes_clients_for() -> None:
    made = {
        str(node.args[0].value)
        for path in AWS_PY
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "client"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }
    assert made == SERVICES


def test_trimmed_endpoints_resolve_as_the_full_ones() -> None:
    full = botocore.loaders.Loader().load_data("endpoints")
    trimmed = trim_endpoints(full, SERVICES)
    assert [p["regions"] for p in trimmed["partitions"]] == [
        p["regions"] for p in full["partitions"]
    ]
    assert all(set(p["services"]) <= SERVICES for p in trimmed["partitions"])
    whole, small = (
        botocore.regions.EndpointResolver(full),
        botocore.regions.EndpointResolver(trimmed),
    )
    checked = 0
    for partition in full["partitions"]:
        for region in partition["regions"]:
            assert small.get_partition_for_region(region) == whole.get_partition_for_region(region)
            for service in sorted(SERVICES):
                for fips in (False, True):
                    assert small.construct_endpoint(
                        service, region, use_fips_endpoint=fips
                    ) == whole.construct_endpoint(service, region, use_fips_endpoint=fips)
                    checked += 1
    assert checked > 100


def test_clients_load_without_listing_botocore_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trimmed_models_dir(tmp_path)  # written first: writing it reads botocore's data
    listed: list[str] = []
    real_listdir = os.listdir

    def listdir(path: str | os.PathLike[str] = ".") -> list[str]:
        listed.append(os.fspath(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    session = boto3.session.Session(
        botocore_session=botocore_session(tmp_path), region_name="us-east-1"
    )
    ec2 = session.client("ec2")
    ec2.get_paginator("describe_instances")
    ec2.get_waiter("instance_running")
    assert session.client("ssm").meta.service_model.operation_names == ["GetParameter"]
    assert session.client("sts").meta.service_model.service_name == "sts"
    data = os.path.dirname(botocore.__file__) + os.sep + "data"
    assert [p for p in listed if os.path.normpath(p) == os.path.normpath(data)] == []
    assert len(listed) < 20, listed  # each service's own versions only
    with pytest.raises(UnknownServiceError):
        session.client("s3")


def test_trimmed_model_is_closed_and_small(full_model: dict[str, Any]) -> None:
    trimmed = trim_service_model(full_model, EC2_OPERATIONS)
    assert set(trimmed["operations"]) == EC2_OPERATIONS
    assert trimmed["metadata"] == full_model["metadata"]
    shapes = trimmed["shapes"]
    for shape in shapes.values():
        refs = [shape.get(k) for k in ("member", "key", "value")]
        refs += list(shape.get("members", {}).values())
        assert all(ref["shape"] in shapes for ref in refs if ref)
        assert "documentation" not in shape
    for operation in trimmed["operations"].values():
        for ref in (operation.get("input"), operation.get("output"), *operation.get("errors", ())):
            assert ref is None or ref["shape"] in shapes
    assert len(shapes) < len(full_model["shapes"]) / 5


def test_written_once_and_used_by_clients(tmp_path: Path) -> None:
    root = trimmed_models_dir(tmp_path)
    assert root is not None
    assert {m.parts[-3] for m in root.glob("*/*/service-2.json")} == set(OPERATIONS)
    assert (root / "endpoints.json").stat().st_size < 100_000  # botocore's: 1.2 MB
    (model,) = root.glob("ec2/*/service-2.json")
    written = model.stat().st_mtime_ns
    assert trimmed_models_dir(tmp_path) == root and model.stat().st_mtime_ns == written

    session = boto3.session.Session(
        botocore_session=botocore_session(tmp_path), region_name="us-east-1"
    )
    client = session.client("ec2")
    assert client.meta.service_model.operation_names == sorted(EC2_OPERATIONS)
    assert not hasattr(client, "describe_key_pairs")
    assert session.client("ssm").meta.service_model.operation_names == sorted(SSM_OPERATIONS)
    assert len(session.client("sts").meta.service_model.operation_names) > 1  # others: whole


def test_trimmed_client_talks_to_ec2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    session = boto3.session.Session(
        botocore_session=botocore_session(tmp_path), region_name="us-east-1"
    )
    with mock_aws():
        client = session.client("ec2")
        made = client.create_volume(AvailabilityZone="us-east-1a", Size=1, VolumeType="gp3")
        (seen,) = client.describe_volumes(VolumeIds=[made["VolumeId"]])["Volumes"]
    assert (seen["Size"], seen["VolumeType"], seen["AvailabilityZone"]) == (1, "gp3", "us-east-1a")


def test_unwritable_cache_falls_back_to_the_full_model(tmp_path: Path) -> None:
    locked = tmp_path / "not-a-directory"  # even root cannot make directories under a file
    locked.write_text("")
    assert trimmed_models_dir(locked) is None
    client = boto3.session.Session(
        botocore_session=botocore_session(locked), region_name="us-east-1"
    ).client("ec2")
    assert hasattr(client, "describe_key_pairs")


def test_a_failed_write_leaves_no_file_and_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*_args: object, **_kwargs: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("ec2backup.paths.os.write", disk_full)
    assert trimmed_models_dir(tmp_path) is None
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
