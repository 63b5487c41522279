"""``ports.Account`` with boto3: the account-level probes of ``ec2backup doctor``. Read-only,
and quick to fail (few retries, short timeouts), so a broken setup is reported at once."""

from __future__ import annotations

import boto3
from botocore.config import Config

from .errors import translated

# Doctor's probes fail fast rather than riding through a minute of retries.
_PROBE_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=5,
    read_timeout=20,
)


class Boto3Account:
    """The credentials and the region, as seen from ``region`` through ``session``."""

    def __init__(self, region: str, session: boto3.session.Session) -> None:
        self.region = region
        self._session = session

    def caller_identity(self) -> dict[str, str]:
        """STS GetCallerIdentity: proves the credentials work. Returns account and ARN."""
        with translated("sts:GetCallerIdentity", None, None):
            sts = self._session.client("sts", region_name=self.region, config=_PROBE_CONFIG)
            response = sts.get_caller_identity()
        return {"account": response.get("Account", ""), "arn": response.get("Arn", "")}

    def region_status(self) -> str | None:
        """None if botocore knows no such region in any partition; else the region's opt-in
        status from DescribeRegions (``opt-in-not-required``, ``opted-in``,
        ``not-opted-in``)."""
        known = {
            region
            for partition in self._session.get_available_partitions()
            for region in self._session.get_available_regions("ec2", partition)
        }
        if self.region not in known:
            return None
        with translated("ec2:DescribeRegions", {"region": self.region}, None):
            client = self._session.client("ec2", region_name=self.region, config=_PROBE_CONFIG)
            regions = client.describe_regions(AllRegions=True, RegionNames=[self.region])
        found = regions.get("Regions") or [{}]
        return str(found[0].get("OptInStatus") or "opt-in-not-required")
