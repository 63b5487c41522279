"""The resize2fs of the local cloud's instances: EC2 instances grow a mounted ext4 online,
which needs CAP_SYS_RESOURCE; a container the sandbox runs in may lack it (the kernel then
answers "Permission denied to resize filesystem"). The wrapper, bound over the host's resize2fs
inside each instance, runs the real one and, refused so, does the same growth with the
filesystem unmounted for a moment. What ec2backup sees is the same: the mounted filesystem
grows."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

# The instance's resize2fs (see write_resize2fs): the real one, and where this machine's kernel
# refuses to grow a mounted filesystem, the same growth done with it unmounted for a moment.
RESIZE2FS = """#!/bin/sh
real={real}
device=
for arg in "$@"; do case "$arg" in -*) ;; *) [ -n "$device" ] || device=$arg ;; esac; done
target=$(findmnt -n -o TARGET --source "$device" 2>/dev/null | head -n 1)
if [ -z "$target" ]; then exec "$real" "$@"; fi
errors=$(mktemp)
"$real" "$@" 2>"$errors" && {{ cat "$errors" >&2; rm -f "$errors"; exit 0; }}
code=$?
cat "$errors" >&2
grep -q "Permission denied to resize filesystem" "$errors" || {{ rm -f "$errors"; exit $code; }}
rm -f "$errors"
options=$(findmnt -n -o OPTIONS --target "$target")
umount "$target" || exit $code
e2fsck -f -p "$device" >&2; [ $? -le 1 ] || {{ mount -o "$options" "$device" "$target"; exit 8; }}
"$real" "$device" >&2; code=$?
mount -o "$options" "$device" "$target" || exit 8
exit $code
"""


def write_resize2fs(directory: Path) -> tuple[Path, str] | None:
    """Write the wrapper (and a copy of the real resize2fs) into the instance's ``directory``;
    return (wrapper, the host's resize2fs path it is bound over), or None without one."""
    found = shutil.which("resize2fs") or (
        "/sbin/resize2fs" if Path("/sbin/resize2fs").exists() else None
    )
    if found is None:
        return None
    real = directory / "resize2fs.real"
    shutil.copy2(found, real)
    wrapper = directory / "resize2fs"
    wrapper.write_text(RESIZE2FS.format(real=shlex.quote(str(real))))
    wrapper.chmod(0o755)
    return wrapper, found
