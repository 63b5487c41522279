"""The EBS direct APIs that read snapshots (ListSnapshotBlocks, ListChangedBlocks), answered from
the sandbox's own snapshot images at the same endpoint, as AWS's ``ebs`` client calls them.

moto's ebs backend knows only snapshots written through its own StartSnapshot/PutSnapshotBlock
(and answers a KeyError for any other), with 512-byte blocks and no pagination. Here:

* A snapshot's blocks are the 512 KiB blocks of its image (``snapshots/<id>.img``) that hold
  data; the image is a sparse copy, so only the regions it stores are read.
* ListChangedBlocks lists the blocks whose contents differ between two snapshots of one
  lineage: the snapshots of a volume and of every volume made from one of them, back to the
  first volume. Others are ``ValidationException`` ``UNRELATED_SNAPSHOTS``.
* Only ``completed`` snapshots of the account, in the standard tier (or temporarily restored
  from the archive), can be read: AWS documents that a pending snapshot cannot be accessed and
  that the direct APIs read no archived snapshot.
* Pagination as AWS documents it: ``MaxResults`` from 100 to 10,000; a page scans a window of
  block indexes, so a page may be empty and still carry a ``NextToken`` (the caller must follow
  it until there is none); tokens expire after 60 minutes; with ``NextToken``,
  ``StartingBlockIndex`` is ignored.
* Errors as the service answers them (rest-json: the ``x-amzn-ErrorType`` header, ``message``
  and ``Reason``); in IAM mode, a denial is 403 ``AccessDeniedException``, each snapshot the
  call reads authorized by its ARN and tags (``iam.py``).

The comparisons are cached per pair of snapshots: a snapshot's image never changes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from moto.core.exceptions import AccessDeniedError
from moto.core.responses import ActionResult
from moto.ebs.responses import EBSResponse
from moto.ec2.models import ec2_backends

from .state import CloudState
from .tiers import Tiers, usable

BLOCK_SIZE = 512 * 1024
MIN_RESULTS, MAX_RESULTS = 100, 10_000
# Block indexes one page looks at: a page can end with fewer results than asked for.
SCAN_WINDOW = 1024
PAGE_TOKEN_SECONDS = 60 * 60
BLOCK_TOKEN_DAYS = 7

Response = tuple[int, dict[str, str], str]


class EbsError(Exception):
    def __init__(self, status: int, code: str, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.reason = status, code, message, reason

    def response(self) -> Response:
        body: dict[str, str] = {"message": self.message}
        if self.reason:
            body["Reason"] = self.reason
        headers = {
            "status": str(self.status),
            "Content-Type": "application/json",
            "x-amzn-ErrorType": self.code,
        }
        return self.status, headers, json.dumps(body)


def _validation(message: str, reason: str) -> EbsError:
    return EbsError(400, "ValidationException", message, reason)


def data_regions(path: Path) -> Iterator[tuple[int, int]]:
    """(start, end) of the regions of a sparse file that hold data (SEEK_DATA/SEEK_HOLE)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                return
            end = os.lseek(fd, start, os.SEEK_HOLE)
            yield start, end
            offset = end
    finally:
        os.close(fd)


def _candidate_blocks(*images: Path) -> list[int]:
    """Indexes of the blocks in which at least one of the images stores something."""
    found: set[int] = set()
    for image in images:
        for start, end in data_regions(image):
            found.update(range(start // BLOCK_SIZE, (end - 1) // BLOCK_SIZE + 1))
    return sorted(found)


def _read_block(f: Any, index: int) -> bytes:
    if f is None:
        return b""
    f.seek(index * BLOCK_SIZE)
    return bytes(f.read(BLOCK_SIZE))


def _zero(block: bytes) -> bool:
    return not block or block.count(0) == len(block)


def _open(path: Path) -> Any:
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None


def snapshot_blocks(image: Path) -> dict[int, bool]:
    """Block index -> True for every block of ``image`` that holds data."""
    f = _open(image)
    try:
        return {i: True for i in _candidate_blocks(image) if not _zero(_read_block(f, i))}
    finally:
        if f is not None:
            f.close()


def changed_blocks(first: Path, second: Path) -> dict[int, tuple[bool, bool]]:
    """Block index -> (data in first, data in second) for every block whose contents differ."""
    a, b = _open(first), _open(second)
    try:
        changed: dict[int, tuple[bool, bool]] = {}
        for index in _candidate_blocks(first, second):
            one, two = _read_block(a, index), _read_block(b, index)
            if one.ljust(len(two), b"\0") != two.ljust(len(one), b"\0"):
                changed[index] = (not _zero(one), not _zero(two))
        return changed
    finally:
        for f in (a, b):
            if f is not None:
                f.close()


class EbsDirect:
    """ListSnapshotBlocks and ListChangedBlocks for the server (installed by ``LocalCloud``)."""

    def __init__(self, state: CloudState, tiers: Tiers) -> None:
        self.state = state
        self.tiers = tiers
        self._cache: dict[tuple[str, str], dict[int, tuple[bool, bool]]] = {}
        self._cache_lock = threading.Lock()

    # --- installation ------------------------------------------------------------------------

    def install(self) -> None:
        ebs = self

        def list_snapshot_blocks(response: EBSResponse) -> Any:
            return ebs.answer(response, ebs.list_snapshot_blocks)

        def list_changed_blocks(response: EBSResponse) -> Any:
            return ebs.answer(response, ebs.list_changed_blocks)

        original_authorize = EBSResponse._authenticate_and_authorize_normal_action

        def authorize(response: EBSResponse, resource: str = "*") -> None:
            if response.method == "GET":
                # moto checks the signature of a GET as if its query string (or, without one,
                # its headers) were the body: botocore signed an empty body, as AWS expects.
                response.data = {}
            try:
                original_authorize(response, resource)
            except AccessDeniedError as denied:
                raise _Denied(denied.message) from None

        setattr(EBSResponse, "list_snapshot_blocks", list_snapshot_blocks)  # noqa: B010
        setattr(EBSResponse, "list_changed_blocks", list_changed_blocks)  # noqa: B010
        setattr(EBSResponse, "_authenticate_and_authorize_normal_action", authorize)  # noqa: B010
        original_call_action = EBSResponse.call_action

        def call_action(response: EBSResponse) -> Any:
            try:
                return original_call_action(response)
            except _Denied as denied:
                # The message as iam.py words it, AWS's: "User: ... is not authorized to
                # perform: ebs:ListSnapshotBlocks on resource: arn:aws:ec2:...::snapshot/..."
                return EbsError(
                    403, "AccessDeniedException", str(denied), "UNAUTHORIZED_ACCOUNT"
                ).response()

        setattr(EBSResponse, "call_action", call_action)  # noqa: B010

    def answer(self, response: EBSResponse, handler: Any) -> Any:
        try:
            return ActionResult(handler(response))
        except EbsError as error:
            return error.response()

    def forget(self, snapshot_id: str) -> None:
        """A snapshot was deleted: drop the comparisons that involve it."""
        with self._cache_lock:
            for key in [k for k in self._cache if snapshot_id in k]:
                del self._cache[key]

    # --- the calls ---------------------------------------------------------------------------

    def list_snapshot_blocks(self, response: EBSResponse) -> dict[str, Any]:
        snapshot_id = str(response._get_param("SnapshotId"))
        snapshot = self._readable(response, snapshot_id)
        blocks = self._compared("", snapshot_id)
        start, limit = self._page(response, "", snapshot_id)
        indexes, next_index = self._window(blocks, start, limit, _volume_blocks(snapshot))
        expiry = datetime.now(UTC) + timedelta(days=BLOCK_TOKEN_DAYS)
        return {
            "Blocks": [
                {"BlockIndex": i, "BlockToken": _block_token(snapshot_id, i)} for i in indexes
            ],
            "ExpiryTime": expiry,
            "VolumeSize": int(snapshot.volume.size),
            "BlockSize": BLOCK_SIZE,
            **self._next_token("", snapshot_id, next_index),
        }

    def list_changed_blocks(self, response: EBSResponse) -> dict[str, Any]:
        second_id = str(response._get_param("SecondSnapshotId"))
        first_id = response._get_param("FirstSnapshotId")
        second = self._readable(response, second_id)
        if first_id:
            first = self._readable(response, str(first_id))
            if self.lineage(first) != self.lineage(second):
                raise _validation(
                    f"The snapshots {first_id} and {second_id} are not of the same volume lineage.",
                    "UNRELATED_SNAPSHOTS",
                )
        first_id = str(first_id or "")
        changes = self._compared(first_id, second_id)
        start, limit = self._page(response, first_id, second_id)
        indexes, next_index = self._window(changes, start, limit, _volume_blocks(second))
        expiry = datetime.now(UTC) + timedelta(days=BLOCK_TOKEN_DAYS)
        listed = []
        for i in indexes:
            in_first, in_second = changes[i]
            block: dict[str, Any] = {"BlockIndex": i}
            if in_first and first_id:
                block["FirstBlockToken"] = _block_token(first_id, i)
            if in_second:
                block["SecondBlockToken"] = _block_token(second_id, i)
            listed.append(block)
        return {
            "ChangedBlocks": listed,
            "ExpiryTime": expiry,
            "VolumeSize": int(second.volume.size),
            "BlockSize": BLOCK_SIZE,
            **self._next_token(first_id, second_id, next_index),
        }

    # --- helpers -----------------------------------------------------------------------------

    def lineage(self, snapshot: Any) -> str:
        """The first volume of the snapshot's lineage: its volume, or the volume the snapshot
        that volume was made from was taken of, and so on. From what CreateVolume recorded
        (``CloudState.volume_origins``), so deleting a snapshot in between breaks nothing."""
        volume_id = str(snapshot.volume.id)
        seen: set[str] = set()
        while volume_id in self.state.volume_origins and volume_id not in seen:
            seen.add(volume_id)
            volume_id = self.state.volume_origins[volume_id]
        return volume_id

    def _readable(self, response: EBSResponse, snapshot_id: str) -> Any:
        with self.state.lock:
            self.tiers.settle()
            backend = ec2_backends[response.current_account][response.region]
            snapshot = backend.snapshots.get(snapshot_id)
            if snapshot is None or snapshot.owner_id != response.current_account:
                raise EbsError(
                    404,
                    "ResourceNotFoundException",
                    f"The snapshot '{snapshot_id}' does not exist.",
                    "SNAPSHOT_NOT_FOUND",
                )
            if snapshot.status != "completed":
                raise _validation(
                    f"The snapshot '{snapshot_id}' is {snapshot.status}; only completed "
                    "snapshots can be read.",
                    "INVALID_SNAPSHOT_ID",
                )
            if not usable(snapshot):
                raise _validation(
                    f"The snapshot '{snapshot_id}' is in the archive tier; restore it first.",
                    "INVALID_SNAPSHOT_ID",
                )
            return snapshot

    def _compared(self, first_id: str, second_id: str) -> dict[int, tuple[bool, bool]]:
        key = (first_id, second_id)
        with self._cache_lock:
            if key in self._cache:
                return self._cache[key]
        layout = self.state.layout
        second = layout.snapshot_image(second_id)
        if first_id:
            result = changed_blocks(layout.snapshot_image(first_id), second)
        else:
            result = {i: (False, True) for i in snapshot_blocks(second)}
        with self._cache_lock:
            self._cache[key] = result
        return result

    def _page(self, response: EBSResponse, first_id: str, second_id: str) -> tuple[int, int]:
        """(the block index this page starts from, the most results it may hold)."""
        limit = response._get_param("MaxResults")
        limit = MAX_RESULTS if limit is None else int(limit)
        if limit > MAX_RESULTS:
            raise _validation(
                f"MaxResults must be between {MIN_RESULTS} and {MAX_RESULTS}.",
                "INVALID_PARAMETER_VALUE",
            )
        limit = max(limit, MIN_RESULTS)  # AWS answers at least 100 for a smaller value
        token = response._get_param("NextToken")
        if not token:
            start = response._get_param("StartingBlockIndex")
            return (0 if start is None else max(0, int(start))), limit
        try:
            data = json.loads(base64.b64decode(str(token), validate=True))
            issued, index = float(data["t"]), int(data["i"])
            same = (data["f"], data["s"]) == (first_id, second_id)
        except (ValueError, KeyError, TypeError, binascii.Error):
            same, issued, index = False, 0.0, 0
        if not same or time.time() - issued > PAGE_TOKEN_SECONDS:
            raise _validation(
                "The pagination token is invalid or has expired.", "INVALID_PAGE_TOKEN"
            )
        return index, limit

    @staticmethod
    def _window(
        blocks: dict[int, Any], start: int, limit: int, volume_blocks: int
    ) -> tuple[list[int], int | None]:
        """The indexes one page lists, and where the next page starts (None: no more)."""
        end = start + SCAN_WINDOW
        indexes = [i for i in sorted(blocks) if start <= i < end][:limit]
        # A full page continues after its last block; a short one after its window.
        next_index = indexes[-1] + 1 if indexes and len(indexes) == limit else end
        if next_index >= volume_blocks or not any(i >= next_index for i in blocks):
            # Nothing left past this page: AWS ends the listing with no token.
            return indexes, None
        return indexes, next_index

    @staticmethod
    def _next_token(first_id: str, second_id: str, index: int | None) -> dict[str, str]:
        if index is None:
            return {}
        data = json.dumps({"f": first_id, "s": second_id, "i": index, "t": time.time()})
        return {"NextToken": base64.b64encode(data.encode()).decode()}


class _Denied(Exception):
    pass


def _volume_blocks(snapshot: Any) -> int:
    return int(snapshot.volume.size) * 2**30 // BLOCK_SIZE


def _block_token(snapshot_id: str, index: int) -> str:
    digest = hashlib.sha256(f"{snapshot_id}:{index}".encode()).digest()
    return base64.b64encode(digest).decode()
