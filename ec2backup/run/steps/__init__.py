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

from ...core import states
from ...core.states import Step
from ..context import StepContext
from .attachment import ensure_attached, ensure_detached
from .filesystem import ensure_formatted, ensure_mounted, ensure_unmounted
from .instance import ensure_instance_running, ensure_terminated
from .profile import ensure_profile_written
from .snapshot import ensure_snapshot
from .transfer import ensure_compared, ensure_pulled, ensure_synced
from .volume import (
    ensure_restore_volume,
    ensure_volume_created,
    ensure_volume_deleted,
    ensure_work_volume,
)

StepFunction = Callable[[StepContext], str]

# Keyed by the steps of core/states.py themselves, not by their names: a step that is renamed,
# added or dropped there cannot be silently missed here (tests/run/test_step_table.py checks
# that every step of every kind has its function and that no function is left unused).
ENSURE: dict[Step, StepFunction] = {
    states.CREATE_VOLUME: ensure_volume_created,
    states.WRITE_PROFILE: ensure_profile_written,
    states.RESTORE_VOLUME: ensure_restore_volume,
    states.LAUNCH: ensure_instance_running,
    states.ATTACH: ensure_attached,
    states.FORMAT: ensure_formatted,
    states.MOUNT: ensure_mounted,
    states.MOUNT_READ_ONLY: lambda ctx: ensure_mounted(ctx, read_only=True),
    states.SYNC: ensure_synced,
    states.PULL: ensure_pulled,
    states.COMPARE: ensure_compared,
    states.UNMOUNT: ensure_unmounted,
    states.DETACH: ensure_detached,
    states.TERMINATE: ensure_terminated,
    states.SNAPSHOT: ensure_snapshot,
    states.DELETE_VOLUME: ensure_volume_deleted,
    states.WORK_VOLUME: ensure_work_volume,
    states.SNAPSHOT_WORK: ensure_snapshot,
}
