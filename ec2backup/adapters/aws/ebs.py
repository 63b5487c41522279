"""``ports.SnapshotBlocks`` with boto3's ``ebs`` client: what a snapshot adds to its chain, as
EBS itself counts it (the EBS direct APIs, 512 KiB blocks).

Every page is followed until AWS answers no ``NextToken``: a page may hold fewer blocks than
asked for, or none, and still not be the last. Only counts are kept, never the block lists
(a 1 TiB volume has two million blocks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

from ...ports import BlockCount
from .errors import translated

# The most blocks a page may hold (the API's maximum): fewest calls per listing.
MAX_RESULTS = 10_000
_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=60
)


class Boto3SnapshotBlocks:
    def __init__(
        self, region: str, session: boto3.session.Session, run_id: str | None = None
    ) -> None:
        self.region = region
        self.run_id = run_id
        with translated("create an EBS client", {"region": region}, run_id):
            self._ebs_client = session.client("ebs", region_name=region, config=_CLIENT_CONFIG)

    def added_blocks(self, earlier_snapshot_id: str | None, snapshot_id: str) -> BlockCount:
        if earlier_snapshot_id is None:
            resources = {"snapshot": snapshot_id}
            with translated("ebs:ListSnapshotBlocks", resources, self.run_id):
                return _count(
                    lambda token: self._ebs_client.list_snapshot_blocks(
                        SnapshotId=snapshot_id, MaxResults=MAX_RESULTS, **token
                    ),
                    lambda page: len(page.get("Blocks", ())),
                )
        resources = {"snapshot": snapshot_id, "compared_with": earlier_snapshot_id}
        with translated("ebs:ListChangedBlocks", resources, self.run_id):
            return _count(
                lambda token: self._ebs_client.list_changed_blocks(
                    FirstSnapshotId=earlier_snapshot_id,
                    SecondSnapshotId=snapshot_id,
                    MaxResults=MAX_RESULTS,
                    **token,
                ),
                # A block the later snapshot no longer holds (trimmed) adds nothing to it.
                lambda page: sum(
                    1 for b in page.get("ChangedBlocks", ()) if b.get("SecondBlockToken")
                ),
            )


def _count(call: Callable[[dict[str, str]], Any], blocks_in: Callable[[Any], int]) -> BlockCount:
    token: dict[str, str] = {}
    blocks = requests = 0
    block_size = 512 * 1024
    while True:
        page = call(token)
        requests += 1
        blocks += blocks_in(page)
        block_size = int(page.get("BlockSize") or block_size)
        next_token = page.get("NextToken")
        if not next_token:
            return BlockCount(blocks=blocks, block_size=block_size, requests=requests)
        token = {"NextToken": next_token}
