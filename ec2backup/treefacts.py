"""What rsync's compare cannot see in a tree: which files are hard links to each other, where
files have holes, and what changed after a moment. Imports nothing of the project.

The same code reads the local sources and, sent as a ``python3 -c`` script
(``adapters/host.py``), the volume's copy on the instance, so both sides are measured the same
way. On the instance it reads a JSON list of relative paths on stdin and prints one JSON
document: the tree's hard-link groups and the facts of the asked paths. Written for any
python3 from 3.7 on (an instance's own interpreter, not ec2backup's), standard library only.

Paths are relative to the tree's root, as ``str`` decoded from the file system's bytes with
``surrogateescape``: every byte sequence survives a round trip, and JSON with ``ensure_ascii``
carries them over a UTF-8 channel unchanged.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from typing import Any

# A file's holes are looked for only when it has fewer blocks than its size needs: reading
# the extent map of every file would cost a system call pair each for nothing.
BLOCK = 512


def _rel(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


def _raw(rel: str) -> bytes:
    return rel.encode("utf-8", "surrogateescape")


def data_bytes(path: bytes, size: int) -> int | None:
    """The bytes of ``path`` that are data, not holes (SEEK_DATA/SEEK_HOLE), or None if it
    cannot be read."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        total, position = 0, 0
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # nothing but a hole up to the end
                    break
                return None
            end = os.lseek(fd, start, os.SEEK_HOLE)
            total += end - start
            position = end
        return total
    finally:
        os.close(fd)


def _entries(root: bytes) -> Iterator[tuple[bytes, os.stat_result]]:
    """(relative path, lstat) of everything under ``root`` (bytes), directories included,
    without following symlinks; unreadable directories are skipped."""
    stack: list[bytes] = [b""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(os.path.join(root, rel) if rel else root) as listing:
                items = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in listing]
        except OSError:
            continue
        for name, is_dir in items:
            child = os.path.join(rel, name) if rel else name
            try:
                st = os.lstat(os.path.join(root, child))
            except OSError:
                continue
            yield child, st
            if is_dir:
                stack.append(child)


def _holey(full: bytes, st: os.stat_result) -> list[int] | None:
    """(size, data bytes) of a regular file with holes, else None."""
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        return None
    if getattr(st, "st_blocks", st.st_size) * BLOCK >= st.st_size:
        return None
    data = data_bytes(full, st.st_size)
    if data is None or data >= st.st_size:
        return None
    return [st.st_size, data]


def walk(root: str | bytes | os.PathLike[str]) -> dict[str, Any]:
    """``{"groups": [[path, ...], ...], "holes": {path: [size, data bytes]}}``: the regular
    files under ``root`` that share an inode (each group sorted), and those with holes."""
    top = os.fsencode(root)
    by_inode: dict[tuple[int, int], list[str]] = {}
    holes: dict[str, list[int]] = {}
    for rel, st in _entries(top):
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            by_inode.setdefault((st.st_dev, st.st_ino), []).append(_rel(rel))
        found = _holey(os.path.join(top, rel), st)
        if found is not None:
            holes[_rel(rel)] = found
    groups = sorted(sorted(paths) for paths in by_inode.values() if len(paths) > 1)
    return {"groups": groups, "holes": holes}


def lookup(root: str | bytes | os.PathLike[str], paths: Iterable[str]) -> dict[str, list[Any]]:
    """``{path: [inode, data bytes or None]}`` for those of ``paths`` that are regular files
    under ``root`` (``inode`` as "dev:ino"; data bytes only for a file with fewer blocks than
    its size)."""
    top = os.fsencode(root)
    facts: dict[str, list[Any]] = {}
    for rel in paths:
        full = os.path.join(top, _raw(rel))
        try:
            st = os.lstat(full)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        data = None
        if st.st_size and getattr(st, "st_blocks", st.st_size) * BLOCK < st.st_size:
            data = data_bytes(full, st.st_size)
        facts[rel] = [f"{st.st_dev}:{st.st_ino}", st.st_size if data is None else data]
    return facts


def changed_since(
    root: str | bytes | os.PathLike[str], since_ns: int, limit: int
) -> tuple[list[str], int]:
    """Up to ``limit`` relative paths of the non-directories under ``root`` whose inode
    changed (contents, metadata, a rename) at or after ``since_ns``, and how many there are."""
    found: list[str] = []
    count = 0
    for rel, st in _entries(os.fsencode(root)):
        if stat.S_ISDIR(st.st_mode) or st.st_ctime_ns < since_ns:
            continue
        count += 1
        if len(found) < limit:
            found.append(_rel(rel))
    return found, count


def main(argv: list[str]) -> int:
    """On the instance: ``python3 -c SOURCE ROOT`` with the paths to look up on stdin."""
    root = argv[1]
    wanted = json.load(sys.stdin)
    facts = walk(root)
    facts["facts"] = lookup(root, wanted)
    json.dump(facts, sys.stdout, ensure_ascii=True, separators=(",", ":"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
