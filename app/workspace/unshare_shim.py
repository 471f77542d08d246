"""The ``unshare`` runner's filesystem, set up inside its namespaces, then the command.

Run by path (``python -I -S unshare_shim.py``, the standard library only) as the
namespace's root, under ``unshare --user --map-root-user --mount --net --pid --fork``.
Until this, the runner confined the network alone: a test could write to $HOME, to the
main checkout and its ``.git/hooks``, and to the run's own evidence before it was
sealed (an audit forged a green test log that way). Now it builds what bwrap builds:

1. every mount read-only (each one remounted with its own locked flags kept);
2. private ``/tmp``, ``/run`` and ``/var/run`` (the host's service sockets live there,
   and a read-only mount does not stop ``connect()`` on a unix socket), and a ``/dev``
   of its own (:func:`build_dev`: the host's held the user's terminals);
3. ``--ro`` paths that those private mounts would hide (a checkout's ``.venv`` under
   /tmp) shown again, read-only;
4. the secret stores (``--mask``) hidden: an empty tmpfs over a folder, /dev/null over a
   file;
5. ``--cwd`` (the worktree) writable, its ``.git`` read-only, and each ``--pin`` file
   in it (a submodule's ``.git``) read-only, every folder on the way to it bound onto
   itself so that none can be renamed away; a fresh /proc for the pid namespace;
   loopback up, as bwrap brings it up;
6. every capability dropped, for good (bounding set, ambient set, ``SECBIT_NOROOT``
   locked, ``no_new_privs``): the namespace's root could otherwise remount ``/``
   read-write again, as bwrap's ``--cap-drop ALL`` prevents.

Any step that fails ends the shim with exit 126 and says which: the command never runs
with less confinement than this (the probe runs the same shim, so a machine where it
cannot work falls back to the opt-in runner, never silently to an open one).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import sys

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
#: a mount's own flags, kept on a remount (a flag locked by the parent namespace must be)
_FLAGS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
}
#: mounts a remount may refuse without weakening the sandbox: the kernel's own views,
#: which only the real root writes (a user's delegated cgroup tree is not among them)
_VIRTUAL = frozenset(
    {"proc", "sysfs", "debugfs", "tracefs", "securityfs", "pstore", "bpf", "configfs",
     "fusectl", "binfmt_misc", "autofs", "efivarfs", "nsfs", "rpc_pipefs"}
)  # fmt: skip
PRIVATE = ("/tmp", "/run", "/var/run")
#: the device nodes of the sandbox's own /dev (the host's held the user's terminals: a
#: test wrote a fake "42 passed" onto the pty Switchyard ran in)
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
#: statvfs's flags → the mount flags a remount must keep (locked by the parent namespace)
_ST_FLAGS = (
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    pass


def _mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    rc = _libc.mount(
        None if source is None else os.fsencode(source),
        os.fsencode(target),
        None if fstype is None else os.fsencode(fstype),
        ctypes.c_ulong(flags),
        None if data is None else os.fsencode(data),
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise SetupError(f"mount {target}: {os.strerror(err)}")


def _unescape(field: str) -> str:
    # mountinfo spells a space, tab, newline and backslash as octal escapes
    return (field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")).replace(
        "\\134", "\\"
    )


def _mounts() -> list[tuple[str, int, str]]:
    """(mount point, its own flags, fs type) of every mount, parents first."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fields = left.split()
            fstype = right.split()[0] if right.split() else ""
            flags = 0
            for opt in fields[5].split(","):
                flags |= _FLAGS.get(opt, 0)
            out.append((_unescape(fields[4]), flags, fstype))
    return out


def _read_only_everywhere() -> None:
    for point, flags, fstype in _mounts():
        try:
            _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except SetupError:
            # /dev's own mounts are hidden under the sandbox's /dev (see build_dev)
            hidden = point == "/dev" or point.startswith("/dev/")
            if fstype in _VIRTUAL or hidden or not os.path.exists(point):
                continue
            raise


def _open(path: str) -> int | None:
    try:
        return os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return None


def _bind(fd: int, target: str, *, writable: bool, is_dir: bool) -> None:
    """Mount what ``fd`` holds at ``target`` (made inside a private tmpfs if needed)."""
    if not os.path.exists(target):
        if is_dir:
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "a"):
                pass
    _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    # the source's own nosuid/nodev/noexec are locked in this namespace: a remount that
    # left them out was refused (a worktree or /tmp on a nosuid tmpfs: no sandbox at all)
    flags = MS_REMOUNT | MS_BIND | _source_flags(fd) | (0 if writable else MS_RDONLY)
    _mount(None, target, None, flags)


def _source_flags(fd: int) -> int:
    got = os.statvfs(f"/proc/self/fd/{fd}").f_flag
    return sum(ms for st, ms in _ST_FLAGS if got & st)


def build_dev(nodes: dict[str, int]) -> None:
    """A /dev of the sandbox's own, as bwrap's ``--dev``: the harmless nodes (held open
    before, bound from the host's), a private pty instance when the kernel allows one,
    /dev/shm, and the fd links."""
    _mount("tmpfs", "/dev", "tmpfs", MS_NOSUID, "mode=0755")
    for name, fd in nodes.items():
        target = f"/dev/{name}"
        with open(target, "a"):
            pass
        _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND)
    os.mkdir("/dev/pts", 0o755)
    try:
        _mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, PTS_OPTIONS)
        os.symlink("pts/ptmx", "/dev/ptmx")
    except (SetupError, OSError):
        pass  # no pseudo-terminals in the sandbox: a test asking for one fails alone
    os.mkdir("/dev/shm", 0o1777)
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV)
    for link, to in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(to, f"/dev/{link}")


PTS_OPTIONS = "newinstance,ptmxmode=0666,mode=620"


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
#: NOROOT, NO_SETUID_FIXUP and KEEP_CAPS, each locked: root's exec gains no capability
SECUREBITS = 0x01 | 0x02 | 0x04 | 0x08 | 0x20
_CAP_V3 = 0x20080522


def _prctl(*args: int) -> int:
    return int(_libc.prctl(*(ctypes.c_ulong(a) for a in args)))


def drop_capabilities() -> None:
    """No capability now or after exec (see step 6)."""
    if _prctl(PR_SET_SECUREBITS, SECUREBITS, 0, 0, 0) != 0:
        raise SetupError(f"securebits: {os.strerror(ctypes.get_errno())}")
    for cap in range(64):
        if _prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:
            raise SetupError(f"drop capability {cap}: {os.strerror(ctypes.get_errno())}")
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # EINVAL on old kernels: none
    header = _CapHeader(_CAP_V3, 0)
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise SetupError(f"capset: {os.strerror(ctypes.get_errno())}")
    if _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SetupError(f"no_new_privs: {os.strerror(ctypes.get_errno())}")


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _loopback_up() -> None:
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        req = fcntl.ioctl(s, 0x8913, struct.pack("16sh", b"lo", 0))  # SIOCGIFFLAGS
        flags = struct.unpack("16sh", req)[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sh", b"lo", flags | 1))  # SIOCSIFFLAGS: up
        s.close()
    except OSError:
        pass


def _pin(cwd: str, pins: tuple[str, ...]) -> None:
    """Each file ``pins`` names (relative to ``cwd``) read-only, and every folder on the
    way to it a mount point of its own (writable), parents first: a read-only bind moves
    along with a renamed parent folder, a mount point cannot be renamed. A link or a
    missing folder on the way cannot be pinned: the command does not run."""
    done: set[str] = set()
    files: list[str] = []
    for rel in pins:
        parts = rel.split("/")
        if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise SetupError(f"{rel}: not a path inside the worktree")
        here = cwd
        for part in parts[:-1]:
            here = os.path.join(here, part)
            if here in done:
                continue
            if os.path.islink(here) or not os.path.isdir(here):
                raise SetupError(f"{rel}: {here} is not a real folder")
            _bind_path(here, writable=True, is_dir=True)
            done.add(here)
        files.append(os.path.join(cwd, *parts))
    for path in files:
        if os.path.islink(path) or not os.path.isfile(path):
            raise SetupError(f"{path}: not a regular file")
        _bind_path(path, writable=False, is_dir=False)


def _bind_path(path: str, *, writable: bool, is_dir: bool) -> None:
    fd = _open(path)
    if fd is None:
        raise SetupError(f"{path}: cannot be opened")
    _bind(fd, path, writable=writable, is_dir=is_dir)


def setup(cwd: str, ro: list[str], masks: list[str], pins: tuple[str, ...] = ()) -> None:
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    private = tuple(p for p in PRIVATE if os.path.isdir(p) and not os.path.islink(p))
    # what the private mounts would hide, held open before they go up
    shown = [(p, _open(p), os.path.isdir(p)) for p in ro if _under(p, private)]
    work = _open(cwd)
    if work is None:
        raise SetupError(f"{cwd}: cannot open the worktree")
    nodes = {name: fd for name in DEVICES if (fd := _open(f"/dev/{name}")) is not None}
    _read_only_everywhere()
    for p in private:
        _mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV)
    for path, fd, is_dir in shown:
        if fd is not None:
            _bind(fd, path, writable=False, is_dir=is_dir)
    for path in masks:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY)
        elif os.path.exists(path):
            _mount("/dev/null", path, None, MS_BIND)
    build_dev(nodes)
    _bind(work, cwd, writable=True, is_dir=True)
    dotgit = os.path.join(cwd, ".git")
    if os.path.exists(dotgit) and not os.path.islink(dotgit):
        fd = _open(dotgit)
        if fd is not None:
            _bind(fd, dotgit, writable=False, is_dir=os.path.isdir(dotgit))
    _pin(cwd, pins)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _loopback_up()
    os.chdir(cwd)
    drop_capabilities()


def main(args: list[str]) -> int:
    cwd, ro, masks, pins = "", [], [], []
    while args and args[0] != "--":
        flag, value, args = args[0], args[1], args[2:]
        if flag == "--cwd":
            cwd = value
        elif flag == "--ro":
            ro.append(value)
        elif flag == "--mask":
            masks.append(value)
        elif flag == "--pin":
            pins.append(value)
        else:
            sys.stderr.write(f"sandbox: unknown option {flag}\n")
            return 126
    argv = args[1:]
    if not cwd or not argv:
        sys.stderr.write("sandbox: --cwd and a command are required\n")
        return 126
    try:
        setup(cwd, ro, masks, tuple(pins))
    except (SetupError, OSError) as exc:
        sys.stderr.write(f"sandbox: cannot confine the command (unshare runner): {exc}\n")
        return 126
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        sys.stderr.write(f"{argv[0]}: {exc.strerror}\n")
        return 127
    return 127  # not reached: execvp replaces the process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
