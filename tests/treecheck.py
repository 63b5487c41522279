"""A tree as a faithful copy must bring it back: for every path, its kind, contents, owner and
group (numbers), mode (setuid, setgid and sticky bits included), modification time to the
nanosecond (files, directories, symlinks, devices, FIFOs), symlink target, device number,
POSIX ACLs (access and default), extended attributes (every namespace but ``system.*``), which
paths are hard links to each other, and how much of each file is data rather than holes.

``read_tree(root)`` reads it (as root, to see ``trusted.*``); ``compare(expected, actual)``
lists what differs in words, one line per path and aspect; ``ASPECTS`` names the aspects, so a
test can judge one kind of thing at a time (``compare(a, b, aspects={"acl"})``). Paths are the
file system's bytes, so names that are not UTF-8 are compared as they are.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ACL_ACCESS = "system.posix_acl_access"
ACL_DEFAULT = "system.posix_acl_default"
ASPECTS = frozenset(
    {"kind", "contents", "owner", "mode", "mtime", "target", "device", "acl", "xattrs",
     "links", "holes"}
)  # fmt: skip
# A copy that keeps holes holds about the source's data: rsync -S writes zeros as holes in
# 1 KiB steps, and file systems round extents to their blocks.
HOLE_SLACK = 64 * 1024


@dataclass(frozen=True)
class Entry:
    kind: str  # file, dir, link, fifo, char, block, socket
    mode: int  # the permission bits with setuid/setgid/sticky
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0
    digest: str | None = None  # regular files
    target: bytes | None = None  # symlinks
    rdev: int | None = None  # devices
    acl_access: bytes | None = None  # the raw xattr: entries hold numeric ids
    acl_default: bytes | None = None
    xattrs: tuple[tuple[str, bytes], ...] = ()
    data: int | None = None  # regular files: bytes that are data, not holes
    inode: tuple[int, int] = (0, 0)  # (dev, ino): only to group hard links
    links: frozenset[bytes] = field(default=frozenset())  # the other paths of the same inode


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "dir"),
        (stat.S_ISLNK, "link"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISCHR, "char"),
        (stat.S_ISBLK, "block"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "unknown"


def _xattr(path: bytes, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def _data_bytes(path: bytes, size: int) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        total = position = 0
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            total, position = total + end - start, end
        return total
    finally:
        os.close(fd)


def _entry(path: bytes) -> Entry:
    st = os.lstat(path)
    kind = _kind(st.st_mode)
    digest = data = target = rdev = None
    if kind == "file":
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        digest = h.hexdigest()
        data = _data_bytes(path, st.st_size)
    elif kind == "link":
        target = os.readlink(path)
    elif kind in ("char", "block"):
        rdev = st.st_rdev
    try:
        names = sorted(os.listxattr(path, follow_symlinks=False))
    except OSError:
        names = []
    xattrs = tuple(
        (n, v) for n in names if not n.startswith("system.") if (v := _xattr(path, n)) is not None
    )
    return Entry(
        kind=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
        size=st.st_size if kind in ("file", "link") else 0,
        digest=digest,
        target=target,
        rdev=rdev,
        acl_access=None if kind == "link" else _xattr(path, ACL_ACCESS),
        acl_default=_xattr(path, ACL_DEFAULT) if kind == "dir" else None,
        xattrs=xattrs,
        data=data,
        inode=(st.st_dev, st.st_ino),
    )


def read_tree(root: Path, *, skip: Collection[bytes] = (b"lost+found",)) -> dict[bytes, Entry]:
    """Every path under ``root`` (``b""`` is ``root`` itself) and what it is."""
    top = os.fsencode(root)
    found: dict[bytes, Entry] = {b"": _entry(top)}
    stack = [b""]
    while stack:
        rel = stack.pop()
        for name in sorted(os.listdir(os.path.join(top, rel) if rel else top)):
            child = os.path.join(rel, name) if rel else name
            if child in skip:
                continue
            entry = _entry(os.path.join(top, child))
            found[child] = entry
            if entry.kind == "dir":
                stack.append(child)
    by_inode: dict[tuple[int, int], set[bytes]] = {}
    for rel, entry in found.items():
        if entry.kind == "file":
            by_inode.setdefault(entry.inode, set()).add(rel)
    for rel, entry in list(found.items()):
        if entry.kind == "file":
            others = frozenset(by_inode[entry.inode] - {rel})
            found[rel] = Entry(**{**entry.__dict__, "links": others})
    return found


def _show(path: bytes) -> str:
    return os.fsdecode(path) or "."


def compare(
    expected: Mapping[bytes, Entry],
    actual: Mapping[bytes, Entry],
    *,
    aspects: Collection[str] = ASPECTS,
    paths: Collection[bytes] | None = None,
) -> list[str]:
    """What differs, as "path: aspect (expected ... , got ...)" lines; [] if nothing does.
    ``paths``: only these (default: every path of either tree)."""
    unknown = set(aspects) - ASPECTS
    assert not unknown, f"unknown aspects {unknown}"
    chosen = sorted(set(expected) | set(actual)) if paths is None else sorted(paths)
    out: list[str] = []
    for path in chosen:
        want, got = expected.get(path), actual.get(path)
        if want is None or got is None:
            out.append(f"{_show(path)}: {'missing' if got is None else 'not expected'}")
            continue
        checks = {
            "kind": (want.kind, got.kind),
            "contents": (want.digest, got.digest),
            "owner": ((want.uid, want.gid), (got.uid, got.gid)),
            "mode": (oct(want.mode), oct(got.mode)),
            "mtime": (want.mtime_ns, got.mtime_ns),
            "target": (want.target, got.target),
            "device": (want.rdev, got.rdev),
            "acl": ((want.acl_access, want.acl_default), (got.acl_access, got.acl_default)),
            "xattrs": (want.xattrs, got.xattrs),
            "links": (want.links, got.links),
        }
        for aspect, (a, b) in checks.items():
            if aspect in aspects and a != b:
                out.append(f"{_show(path)}: {aspect} (expected {a!r}, got {b!r})")
        holey = want.data is not None and got.data is not None and got.data > want.data + HOLE_SLACK
        if "holes" in aspects and holey:
            out.append(
                f"{_show(path)}: holes (expected about {want.data} bytes of data, got {got.data})"
            )
    return out


# --- a tree of every kind --------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of thing a faithful copy keeps: where it is in the tree, which aspects judge
    it, and the rsync option without which it is lost (None: part of ``-a``)."""

    name: str
    paths: tuple[bytes, ...]
    aspects: frozenset[str]
    option: str | None = None


# A moment with nanoseconds, long past: a copy that keeps only seconds shows.
PAST_NS = 1_000_000_000 * 1_000_000_000 + 123_456_789
GIB = 2**30


def _utime(path: Path | bytes, ns: int) -> None:
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


def needed_tools() -> list[str]:
    """What ``make_tree_of_every_kind`` runs (Debian: acl, libcap2-bin), if it is missing."""
    return [t for t in ("setfacl", "setcap") if shutil.which(t) is None]


def make_tree_of_every_kind(
    root: Path, *, renamed_owners: Sequence[tuple[int, int]] = ()
) -> list[Kind]:
    """Build (as root) a tree holding one of every kind a faithful copy keeps, and say where
    each is. ``renamed_owners``: (uid, gid) pairs whose names on this machine the instance
    gives to other ids, or the other way round (what ``--numeric-ids`` is for); without them
    that kind is left out."""
    r = os.fsencode(root)
    root.mkdir(parents=True, exist_ok=True)

    def p(*parts: str | bytes) -> bytes:
        return os.path.join(r, *(os.fsencode(x) for x in parts))

    def write(path: bytes, data: str | bytes) -> None:
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)

    for d in ("plain", "links/deeper", "acl/inherits", "xattr", "sparse", "owners", "modes",
              "times/dir", "dev", "special", "names", "empty/inner", "symlinks"):  # fmt: skip
        os.makedirs(p(d), exist_ok=True)
    kinds: list[Kind] = []

    write(p("plain", "text.txt"), "some text\n" * 100)
    write(p("plain", "empty"), b"")
    write(p("plain", "random.bin"), os.urandom(300_000))
    kinds.append(Kind("contents", (b"plain/text.txt", b"plain/empty", b"plain/random.bin"),
                      frozenset({"kind", "contents"})))  # fmt: skip

    write(p("links", "one"), "one inode, three names\n")
    os.link(p("links", "one"), p("links", "two"))
    os.link(p("links", "one"), p("links", "deeper", "three"))
    kinds.append(Kind("hard links", (b"links/one", b"links/two", b"links/deeper/three"),
                      frozenset({"links"}), "-H"))  # fmt: skip

    write(p("acl", "file"), "acl\n")
    subprocess.run(["setfacl", "-m", "u:4242:r-x,g:4343:r--", p("acl", "file")], check=True)
    subprocess.run(["setfacl", "-d", "-m", "u:4242:rwx,g::r-x", p("acl", "inherits")], check=True)
    subprocess.run(["setfacl", "-m", "u:4242:rwx", p("acl", "inherits")], check=True)
    kinds.append(Kind("ACLs (access and default)", (b"acl/file", b"acl/inherits"),
                      frozenset({"acl"}), "-A"))  # fmt: skip

    write(p("xattr", "user"), "x\n")
    os.setxattr(p("xattr", "user"), "user.comment", b"kept by -X")
    os.setxattr(p("xattr", "user"), "user.binary", bytes(range(256)))
    write(p("xattr", "trusted"), "t\n")
    os.setxattr(p("xattr", "trusted"), "trusted.ec2backup-test", b"\x00\x01 trusted")
    shutil.copy("/bin/true", os.fsdecode(p("xattr", "ping-like")))
    subprocess.run(["setcap", "cap_net_raw+ep", p("xattr", "ping-like")], check=True)
    os.setxattr(p("xattr"), "user.on-a-directory", b"yes")
    kinds.append(Kind("extended attributes (user.*, trusted.*, security.capability)",
                      (b"xattr", b"xattr/user", b"xattr/trusted", b"xattr/ping-like"),
                      frozenset({"xattrs"}), "-X"))  # fmt: skip

    with open(p("sparse", "disk.img"), "wb") as f:  # 1 GiB, 12 KiB of it data
        f.truncate(GIB)
        for offset in (0, GIB // 2, GIB - 4096):
            f.seek(offset)
            f.write(os.urandom(4096))
    kinds.append(Kind("sparse files", (b"sparse/disk.img",), frozenset({"holes", "contents"}),
                      "-S"))  # fmt: skip

    write(p("owners", "nobody-knows"), "ids with no name\n")
    os.lchown(p("owners", "nobody-knows"), 4242, 4343)
    os.symlink("nobody-knows", p("owners", "link-nobody-knows"))
    os.lchown(p("owners", "link-nobody-knows"), 4244, 4345)
    kinds.append(Kind("ids with no name on either side",
                      (b"owners/nobody-knows", b"owners/link-nobody-knows"),
                      frozenset({"owner"})))  # fmt: skip
    if renamed_owners:
        renamed = []
        for i, (uid, gid) in enumerate(renamed_owners):
            name = b"owners/renamed-%d" % i
            write(os.path.join(r, name), f"owned by {uid}:{gid}, a name the instance maps\n")
            os.lchown(os.path.join(r, name), uid, gid)
            renamed.append(name)
        write(p("owners", "acl-renamed"), "ACL entries by number\n")
        entries = ",".join(f"u:{uid}:rw,g:{gid}:r" for uid, gid in renamed_owners)
        subprocess.run(["setfacl", "-m", entries, p("owners", "acl-renamed")], check=True)
        kinds.append(Kind("numeric owners and groups", (*renamed, b"owners/acl-renamed"),
                          frozenset({"owner", "acl"}), "--numeric-ids"))  # fmt: skip

    for name, mode in (("setuid", 0o4755), ("setgid", 0o2711), ("sticky", 0o1777)):
        write(p("modes", name), name)
        os.chmod(p("modes", name), mode)
    os.chmod(p("modes"), 0o2775)
    kinds.append(Kind("setuid, setgid and sticky modes",
                      (b"modes", b"modes/setuid", b"modes/setgid", b"modes/sticky"),
                      frozenset({"mode"})))  # fmt: skip

    write(p("times", "file"), "old\n")
    os.symlink("file", p("times", "link"))
    for part in (("times", "file"), ("times", "link"), ("times", "dir"), ("times",)):
        _utime(p(*part), PAST_NS)
    kinds.append(Kind("nanosecond times of files, directories and symlinks",
                      (b"times", b"times/file", b"times/dir", b"times/link"),
                      frozenset({"mtime"}), "--modify-window=-1"))  # fmt: skip

    os.mknod(p("dev", "null-like"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(p("dev", "loop-like"), 0o660 | stat.S_IFBLK, os.makedev(7, 200))
    kinds.append(Kind("device nodes", (b"dev/null-like", b"dev/loop-like"),
                      frozenset({"kind", "device", "mode"})))  # fmt: skip
    os.mkfifo(p("special", "fifo"), 0o640)
    kinds.append(Kind("FIFOs", (b"special/fifo",), frozenset({"kind", "mode"})))

    odd = [b"with space", b"new\nline", b"caf\xc3\xa9", b"\xff\xfe not UTF-8", b"n" * 255,
           b"-starts with a dash", b"back\\slash #"]  # fmt: skip
    for name in odd:
        with open(p("names", name), "wb") as f:
            f.write(name)
    kinds.append(Kind("every file name", tuple(b"names/" + n for n in odd),
                      frozenset({"kind", "contents"})))  # fmt: skip

    kinds.append(Kind("empty directories", (b"empty", b"empty/inner"), frozenset({"kind"})))

    os.symlink("../plain/text.txt", p("symlinks", "relative"))
    os.symlink("/nowhere/at/all", p("symlinks", "dangling"))
    kinds.append(Kind("symlinks", (b"symlinks/relative", b"symlinks/dangling"),
                      frozenset({"kind", "target"})))  # fmt: skip

    # Directory times last: making their entries changed them.
    for d in (b"empty/inner", b"empty", b"names", b"symlinks", b"owners", b"dev", b"special"):
        _utime(p(d), PAST_NS + 1000)
    return kinds


def touch_nanoseconds(root: Path, kinds: list[Kind]) -> None:
    """Move the times of the "times" kind by nanoseconds only, within the same second: what
    a copy comparing whole seconds would not bring over."""
    (times,) = [k for k in kinds if k.option == "--modify-window=-1"]
    for rel in sorted(times.paths, key=len, reverse=True):  # the directory last
        _utime(os.path.join(os.fsencode(root), rel), PAST_NS // 10**9 * 10**9 + 876_543_210)
