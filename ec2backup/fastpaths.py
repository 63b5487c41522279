"""The speed tricks that leave a library's plain way, and the one switch that turns them off.

Each trick lives in one module and asks ``enabled(ITS_NAME)`` in the one place where it
departs from the plain way. ``EC2BACKUP_NO_FASTPATHS=1`` turns every one off, so the plain
way runs instead (CI runs the unit tests of the modules that hold a trick once more like
that, so both ways keep working). A comma-separated list of names turns off only those:
``python -m benchmarks fastpaths`` measures each trick that way, with and without it. Any
other value (a typo included) turns every trick off: when in doubt, the plain way.

What each trick buys, measured side by side: docs/performance.md. Ground floor: imports
nothing of the project.
"""

from __future__ import annotations

import os

ENV = "EC2BACKUP_NO_FASTPATHS"

# The tricks, by the name the switch knows them by.
BOTOCORE_MODELS = "botocore-models"  # adapters/aws/botomodel.py
SQLITE_RUNS = "sqlite-runs"  # db/sqlite_runs.py
FAST_EXIT = "fast-exit"  # cli/main.py
GC_PAUSE = "gc-pause"  # cli/main.py
PROGRESS_BATCHES = "progress-batches"  # adapters/rsync.py
SSH_MULTIPLEX = "ssh-multiplex"  # adapters/sshmux.py

NAMES = frozenset(
    {
        BOTOCORE_MODELS,
        SQLITE_RUNS,
        FAST_EXIT,
        GC_PAUSE,
        PROGRESS_BATCHES,
        SSH_MULTIPLEX,
    }
)


def disabled_names(value: str | None = None) -> frozenset[str]:
    """The tricks that ``value`` (the switch's, by default) turns off."""
    text = (os.environ.get(ENV, "") if value is None else value).strip().lower()
    if text in ("", "0"):
        return frozenset()
    names = {part.strip() for part in text.split(",") if part.strip()}
    return frozenset(names) if names <= NAMES else NAMES


def enabled(name: str) -> bool:
    """Whether the trick ``name`` runs (read from the environment at each call)."""
    if name not in NAMES:
        raise ValueError(f"no speed trick named {name!r}; known: {', '.join(sorted(NAMES))}")
    return name not in disabled_names()
