"""The side-effecting steps of a run. Each ``ensure_*`` function follows one shape:

1. observe the real resource (by its recorded id, else by the run's tags);
2. check it is in a valid origin state for this step, else raise;
3. if the world is already where the step leads, return (a resumed step is a no-op);
4. act, recording any new resource id before going on;
5. wait until the world is observably where the step leads.

They receive a ``StepContext`` that carries the run, its recorder (to commit resource ids
the moment they are known) and the adapters behind the ``ports`` interfaces.
"""

from __future__ import annotations

from collections.abc import Callable

from ..context import StepContext
from .attachment import ensure_attached, ensure_detached
from .filesystem import ensure_formatted, ensure_mounted, ensure_unmounted
from .instance import ensure_instance_running, ensure_terminated
from .snapshot import ensure_snapshot
from .transfer import ensure_compared, ensure_pulled, ensure_synced
from .volume import ensure_restore_volume, ensure_volume_created, ensure_volume_deleted

ENSURE: dict[str, Callable[[StepContext], str]] = {
    "create_volume": ensure_volume_created,
    "launch": ensure_instance_running,
    "attach": ensure_attached,
    "format": ensure_formatted,
    "mount": ensure_mounted,
    "mount_ro": lambda ctx: ensure_mounted(ctx, read_only=True),
    "restore_volume": ensure_restore_volume,
    "pull": ensure_pulled,
    "compare": ensure_compared,
    "delete_volume": ensure_volume_deleted,
    "sync": ensure_synced,
    "unmount": ensure_unmounted,
    "detach": ensure_detached,
    "terminate": ensure_terminated,
    "snapshot": ensure_snapshot,
}
