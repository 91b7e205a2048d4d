"""The one place that talks to libc: syscalls through ctypes, and readers for /proc and /sys.

Every other module asks the kernel for things through this file, so a student who wants to
know which syscalls a container costs can read one page, and a test can see every call.
Python 3.11's ``os`` module has no ``unshare``, ``setns``, ``mount`` or ``pivot_root``, so
they are bound here from libc with ``use_errno=True`` and raise ``OSError`` like ``os`` does.

Introduced in notebooks/00-start-here; each syscall is taught in the lesson of its step.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar


def _load_libc() -> ctypes.CDLL:
    # find_library runs ldconfig (a subprocess: ~20 ms); the soname is right on glibc.
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        return ctypes.CDLL(find_library("c"), use_errno=True)


_libc = _load_libc()
T = TypeVar("T")

# Namespace flags, from <linux/sched.h>. The name is the one in /proc/PID/ns/.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

NAMESPACES: dict[str, int] = {
    "cgroup": CLONE_NEWCGROUP,
    "ipc": CLONE_NEWIPC,
    "mnt": CLONE_NEWNS,
    "net": CLONE_NEWNET,
    "pid": CLONE_NEWPID,
    "user": CLONE_NEWUSER,
    "uts": CLONE_NEWUTS,
}

# mount(2) flags, from <linux/mount.h>.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MNT_DETACH = 2

PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37

# Capability numbers, from <linux/capability.h>, in order: CAPS[n] is capability n.
CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]


# What the step being recorded has asked of the kernel: one tuple per call, (name, *args),
# appended as it happens and formatted only when a Trace is read (steps.StepRecord).
_recording: list[tuple[str, ...]] | None = None


def record_syscalls(on: bool) -> list[tuple[str, ...]]:
    """Start (True) or stop (False) noting calls; what was noted since the last start.

    What is noted is every call made through this module, and each one other modules
    ``note`` (cgroupfs writes, netlink requests, nft rules): a step's ``syscalls``.
    """
    global _recording
    noted = _recording or []
    _recording = [] if on else None
    return noted


def recording() -> bool:
    """True while a step is recorded: a caller may skip describing a call otherwise."""
    return _recording is not None


def note(call: str, *args: str) -> None:
    """Note a call made without this module (a cgroupfs write, netlink, nft) if recording."""
    # Callers note a pid as <pid> and an fd as <fd>: they differ from run to run, and one
    # run's trace is compared with another's.
    if _recording is not None:
        _recording.append((call, *args))


def alias(value: str, shown: str) -> None:
    """Show ``value`` (the container's address, say) as ``shown`` in all its trace's steps."""
    if _recording is not None:
        _recording.append(("=", value, shown))


def _check(result: int, what: str, path: str | None = None) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return result


def unshare(flags: int) -> None:
    """unshare(2): move this process into new namespaces (``CLONE_NEW*`` flags)."""
    note("unshare", "|".join(f"CLONE_NEW{n.upper()}" for n, f in NAMESPACES.items()
                              if flags & f))
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): join the namespace that ``fd`` (an open /proc/PID/ns/X) refers to."""
    note("setns", *(f"CLONE_NEW{n.upper()}" for n, f in NAMESPACES.items() if f == nstype))
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    """mount(2), with Python strings."""
    if _recording is not None:
        _recording.append(("mount", _mount_kind(fstype, flags), _shown_path(target)))
    _check(
        _libc.mount(
            source.encode(), target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {fstype or ''} {target}".replace("  ", " "),
        target,
    )


def remount_readonly(path: str | Path) -> None:
    """Make the mount at ``path`` read-only (a bind remount).

    The remount must repeat the flags the kernel locked on the original mount (nosuid,
    nodev, noexec), or it fails with EPERM inside a user namespace.
    """
    st = os.statvfs(path)
    keep = 0
    for bit, flag in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV),
                      (os.ST_NOEXEC, MS_NOEXEC)):
        if st.f_flag & bit:
            keep |= flag
    mount("none", str(path), None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)


def _mount_kind(fstype: str | None, flags: int) -> str:
    if flags & MS_REMOUNT:
        return "remount"
    if flags & MS_BIND:
        return "bind"
    if flags & (MS_PRIVATE | MS_SLAVE):
        return "private" if flags & MS_PRIVATE else "slave"
    return fstype or "?"


def _short_path(path: str) -> str:
    # A container's root is .../containers/<id>/merged: show paths as the container will.
    head, sep, tail = path.partition("/merged")
    return (tail or "/") if sep and "/containers/" in head else path


def _shown_path(path: str) -> str:
    # A mount onto an fd (/proc/self/fd/16, a file opened safely inside the image) shows
    # the file the fd names: the fd's number means nothing to a reader, nor in the next run.
    if path.startswith("/proc/self/fd/"):
        try:
            path = os.readlink(path)
        except OSError:
            return "<fd>"
    return _short_path(path)


def umount(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    note("umount2", target)
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), "umount", target)


def prctl(option: int, arg2: int = 0) -> int:
    """prctl(2) with one argument, returning the kernel's answer."""
    return _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), 0, 0, 0), "prctl")


def get_child_subreaper() -> bool:
    """True if this process adopts its orphaned descendants (PR_GET_CHILD_SUBREAPER)."""
    value = ctypes.c_int(0)
    _check(_libc.prctl(ctypes.c_int(PR_GET_CHILD_SUBREAPER), ctypes.byref(value), 0, 0, 0),
           "prctl")
    return bool(value.value)


def in_child(fn: Callable[[], int], timeout: float | None = None) -> int:
    """Run ``fn`` in a forked child and return its result (0..255) or ``-signal``.

    The child only makes syscalls and calls ``os._exit``: safe even from a threaded Jupyter
    kernel. An exception in the child becomes its errno (or 255), so the parent can tell
    EPERM from EINVAL. The child is always reaped.
    """
    pid = os.fork()
    if pid == 0:  # child
        code = 255
        try:
            code = int(fn())
        except OSError as exc:
            code = exc.errno or 255
        except BaseException:  # noqa: B036 - a child must never return into the caller
            code = 255
        finally:
            os._exit(code & 0xFF)
    return wait_status(pid, timeout)


def wait_status(pid: int, timeout: float | None = None) -> int:
    """Reap ``pid``: its exit code, or ``-signal`` if killed; SIGKILL it after ``timeout``."""
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG if deadline else 0)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.005)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def rootless() -> bool:
    """True unless this is root of the host's own (initial) user namespace: a plain user, or
    root of a user namespace (a rootless container, ``in_user_namespace``), where trusted.*
    xattrs and any ids outside the namespace's map are out of reach."""
    if os.geteuid() != 0:
        return True
    return (read("/proc/self/uid_map", "") or "").split() != ["0", "0", "4294967295"]


def enter_user_namespace() -> None:
    """unshare a user and a mount namespace, and map our own uid and gid to 0 in it (the one
    line each that an unprivileged process may write for itself, as rootless containers
    have): root inside, with the capabilities to mount there, and still ourselves outside."""
    uid, gid = os.geteuid(), os.getegid()
    unshare(CLONE_NEWUSER | CLONE_NEWNS)
    write_id_maps("self", uid, gid)


def write_id_maps(pid: int | str, uid: int, gid: int) -> None:
    """Map ``uid`` and ``gid`` outside to 0 inside ``pid``'s new user namespace, noted."""
    # One line each, as an unprivileged user may write them; setgroups is denied first,
    # or the kernel refuses the gid_map.
    shown = "self" if pid == "self" else "<pid>"
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"),
                       ("gid_map", f"0 {gid} 1")):
        note("write", f"/proc/{shown}/{name}", text)
        Path(f"/proc/{pid}/{name}").write_text(text)


def in_user_namespace(fn: Callable[[], T]) -> T:
    """``fn()`` run as root of a user and mount namespace of our own (``enter_user_namespace``),
    in a forked child; its result, or its exception raised here (both cross back pickled).

    An unprivileged user may not mount, but may be root of a namespace they made, and mount
    an overlay of their own directories there (``userxattr``): this is how a rootless build
    copies into a layer. Fork with care: only from a single-threaded process (the CLI, the
    supervisor), as for containers. The child is always reaped.
    """
    import pickle

    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # child: never returns into the caller
        try:
            os.close(r)
            try:
                enter_user_namespace()
                outcome = (True, fn())
            except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
                outcome = (False, exc)
            try:
                data = pickle.dumps(outcome)
            except Exception:  # noqa: BLE001 - an unpicklable result or exception
                data = pickle.dumps((False, OSError(errno.EIO, repr(outcome[1])[:2000])))
            with open(w, "wb") as f:
                f.write(data)
        finally:
            os._exit(0)
    os.close(w)
    try:
        with open(r, "rb") as f:
            data = f.read()
    except BaseException:
        os.kill(pid, 9)
        raise
    finally:
        code = wait_status(pid)
    if not data:
        raise OSError(errno.EIO, "the user namespace helper ended without an answer "
                                 f"(exit status {code})")
    ok, value = pickle.loads(data)
    if ok:
        return value
    raise value


def errno_name(code: int) -> str:
    """``EPERM`` for 1 and so on; ``exit N`` for codes that are not errnos."""
    return errno.errorcode.get(code, f"exit {code}")


# ---- readers for /proc and /sys -----------------------------------------------------------

def read(path: str | Path, default: str | None = None) -> str | None:
    """The text of a /proc or /sys file, stripped; ``default`` if it cannot be read."""
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def proc_status(pid: int | str = "self") -> dict[str, str]:
    """/proc/PID/status as a dict (``CapBnd``, ``PPid``, ``State``, ...)."""
    out: dict[str, str] = {}
    for line in (read(f"/proc/{pid}/status", "") or "").splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def decode_caps(mask: int | str) -> list[str]:
    """Names of the capabilities set in a mask such as CapEff's hex string."""
    value = int(mask, 16) if isinstance(mask, str) else mask
    return [name for bit, name in enumerate(CAPS) if value >> bit & 1] + [
        f"CAP_{bit}" for bit in range(len(CAPS), 64) if value >> bit & 1
    ]


def mountinfo(pid: int | str = "self") -> list[dict[str, str]]:
    """/proc/PID/mountinfo parsed: mount id, mount point, fs type, source, options."""
    return parse_mountinfo(read(f"/proc/{pid}/mountinfo", "") or "")


def parse_mountinfo(text: str) -> list[dict[str, str]]:
    """Parse mountinfo text (see proc(5)); fields after the ``-`` separator are fs-specific."""
    mounts = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 6 or len(rest) < 2:
            continue
        mounts.append({
            "id": fields[0],
            "parent": fields[1],
            "root": _unescape(fields[3]),
            "mount_point": _unescape(fields[4]),
            "mount_options": fields[5],
            "optional": " ".join(fields[6:]),
            "fstype": rest[0],
            "source": _unescape(rest[1]),
            "super_options": rest[2] if len(rest) > 2 else "",
        })
    return mounts


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    return field.encode().decode("unicode_escape") if "\\" in field else field


def boot_id() -> str:
    """This kernel's boot id: equal in every container on the host, different in a VM."""
    return read("/proc/sys/kernel/random/boot_id", "") or ""


def start_time(pid: int) -> str:
    """When ``pid`` started, in clock ticks after boot (/proc/PID/stat's 22nd field); ''
    if it is gone or a zombie. With the pid it names one process: a pid is handed to
    another process once its own has exited, but that one started later."""
    fields = (read(f"/proc/{pid}/stat", "") or "").rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 and fields[0] not in "ZX" else ""


def single_threaded() -> bool:
    """True if this process has one thread: only then may it fork a container (a child of
    a threaded process can inherit a lock another thread held, and hang on it)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def pid_alive(pid: int, started: str | None = None) -> bool:
    """True if ``pid`` runs (a zombie has exited already) and, when ``started`` is given,
    is still the process that started then, not a later one given the same pid. The one
    liveness check of the runtime: records, leases, holders and owners all use it."""
    if not pid or pid < 0:
        return False
    now = start_time(pid)
    return now != "" and (started is None or now == started)


# ---- openat2: path resolution that cannot leave a directory --------------------------------
# Used by images/layers.py to unpack untrusted layer tars. Python 3.11's ``os`` has no
# openat2(2) (Linux 5.6), so it is called by number: 437, on x86_64, arm64 and every other
# architecture but alpha, because it came after the syscall tables were unified.

_SYS_OPENAT2 = 437

# ``resolve`` flags, from <linux/openat2.h>.
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02  # refuse /proc/PID/fd/N-style links, which jump anywhere
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10  # treat dirfd as "/": "..", and absolute symlinks, stay inside it


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): open ``path`` relative to ``dirfd`` under the ``RESOLVE_*`` rules; an fd.

    With ``RESOLVE_IN_ROOT`` every symlink and ``..`` is resolved as if ``dirfd`` were the
    root directory, so a hostile ``etc -> /`` link inside an image still lands inside it.
    The kernel answers EAGAIN if a rename raced the lookup; the caller may simply retry.
    """
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dirfd), os.fsencode(path),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    return _check(fd, f"openat2 {path}", path)


# ---- the rest of a container's start: pivot_root, hostname, capabilities, links -----------

_SYS_PIVOT_ROOT = 155
_SYS_CAPSET = 126
_CAP_V3 = 0x20080522
PR_SET_PDEATHSIG = 1
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2): make ``new_root`` this mount namespace's root (no glibc wrapper)."""
    note("pivot_root")
    _check(_libc.syscall(ctypes.c_long(_SYS_PIVOT_ROOT), new_root.encode(), put_old.encode()),
           "pivot_root", new_root)


def sethostname(name: str) -> None:
    """sethostname(2) in the caller's UTS namespace."""
    note("sethostname")
    data = name.encode()
    _check(_libc.sethostname(data, ctypes.c_size_t(len(data))), "sethostname")


def set_pdeathsig(sig: int) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies."""
    note("prctl", "PR_SET_PDEATHSIG")
    prctl(PR_SET_PDEATHSIG, sig)


def set_no_new_privs() -> None:
    """PR_SET_NO_NEW_PRIVS: execve can never again grant privileges (setuid, file caps)."""
    note("prctl", "PR_SET_NO_NEW_PRIVS")
    _check(_libc.prctl(ctypes.c_int(PR_SET_NO_NEW_PRIVS), ctypes.c_ulong(1), 0, 0, 0),
           "prctl(PR_SET_NO_NEW_PRIVS)")


def capbset_read(cap: int) -> bool:
    """True if capability number ``cap`` is in this process's bounding set."""
    return _libc.prctl(ctypes.c_int(PR_CAPBSET_READ), ctypes.c_ulong(cap), 0, 0, 0) == 1


def capbset_drop(cap: int) -> None:
    """Remove capability ``cap`` from the bounding set, for good."""
    note("prctl", "PR_CAPBSET_DROP", CAPS[cap] if cap < len(CAPS) else str(cap))
    _check(_libc.prctl(ctypes.c_int(PR_CAPBSET_DROP), ctypes.c_ulong(cap), 0, 0, 0),
           "prctl(PR_CAPBSET_DROP)")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2), version 3: set this thread's capability sets from 64-bit masks."""
    note("capset")
    data = (_CapData * 2)()
    for i in range(2):
        data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> (32 * i)) & 0xFFFFFFFF
    header = _CapHeader(_CAP_V3, 0)
    _check(_libc.syscall(ctypes.c_long(_SYS_CAPSET), ctypes.byref(header), data), "capset")


_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


def set_link_up(name: str) -> None:
    """``ip link set NAME up`` with the classic ioctl (no netlink needed for one flag)."""
    import fcntl
    import socket
    import struct

    note("ioctl", "SIOCSIFFLAGS", f"{name} up")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", name.encode(), 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", name.encode(),
                                                           flags | _IFF_UP))


# ---- seccomp: install a syscall filter (notebooks/10-limits-and-security) ----------------
# Appended for edu_runtime/seccomp.py, which compiles Docker's profile into the BPF program
# these functions install. prctl(PR_SET_SECCOMP) is used rather than seccomp(2) because glibc
# wraps prctl on every architecture, while seccomp(2) would need a per-arch syscall number.
# prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog) is exactly seccomp(SECCOMP_SET_MODE_FILTER,
# 0, prog): it filters the calling thread only. SECCOMP_FILTER_FLAG_TSYNC (seccomp(2) only)
# would also filter the other threads, but a container's init loads its filter while it is
# the only thread, just before exec, so runc does not need it and neither do we.

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
BPF_MAXINSNS = 4096  # the kernel refuses longer programs (EINVAL)


class _SockFprog(ctypes.Structure):
    # struct sock_fprog from <linux/filter.h>: a count of 8-byte sock_filter instructions.
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_set_filter(bpf: bytes) -> None:
    """prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER): filter this thread's syscalls through ``bpf``.

    ``bpf`` is a classic-BPF program, 8 bytes per instruction, as libseccomp's
    ``seccomp_export_bpf`` writes it. There is no undo: the filter stays for the life of the
    thread, and every child and every exec'd program inherits it. The kernel answers EACCES
    unless the thread has CAP_SYS_ADMIN or has set no_new_privs (``set_no_new_privs``) first.
    """
    count = len(bpf) // 8
    if not bpf or len(bpf) % 8 or count > BPF_MAXINSNS:
        raise ValueError(
            f"A seccomp program is 1 to {BPF_MAXINSNS} BPF instructions of 8 bytes each; "
            f"got {len(bpf)} bytes. Pass the bytes that seccomp.compile_profile() returns."
        )
    note("prctl", "PR_SET_SECCOMP", "SECCOMP_MODE_FILTER", f"{count} instructions")
    buf = ctypes.create_string_buffer(bytes(bpf), len(bpf))
    prog = _SockFprog(count, ctypes.cast(buf, ctypes.c_void_p))
    _check(_libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER),
                       ctypes.byref(prog), ctypes.c_ulong(0), ctypes.c_ulong(0)),
           "prctl(PR_SET_SECCOMP)")


def syscall(number: int, *args: int) -> int:
    """syscall(2): make syscall ``number`` with integer arguments; its result, or OSError.

    For calls libc has no wrapper for, or that a lesson wants to make raw (keyctl, clone3),
    to show what a seccomp filter answers. Numbers differ between architectures.
    """
    note("syscall", str(number))
    result = _libc.syscall(ctypes.c_long(number), *(ctypes.c_long(arg) for arg in args))
    return _check(result, f"syscall {number}")


class _ScmpVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


def libseccomp_version() -> str:
    """The installed libseccomp's version, such as ``2.5.4``; ``""`` if it is not installed.

    Read with one dlopen and no subprocess (unlike ``ctypes.util.find_library``), so the
    seccomp cache can use it in its key on ``edu run``'s fast path.
    """
    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return ""
    lib.seccomp_version.restype = ctypes.POINTER(_ScmpVersion)
    version = lib.seccomp_version().contents
    return f"{version.major}.{version.minor}.{version.micro}"


# ---- end of the seccomp section ------------------------------------------------------------


# ---- detached mounts: fsopen, fsconfig, fsmount (edu cp, notebooks/07-run-it) -----------------
# Appended for edu_runtime/copy.py, which reads and writes a *stopped* container's files
# through its overlay. mount(2) would attach that overlay somewhere in a mount namespace,
# where it could outlive a crash of ours; the new mount API (Linux 5.2) builds a mount that
# is attached nowhere and reachable only through one fd: closing the fd unmounts it, so
# nothing can leak. The three calls are numbered 430-432 on every architecture (they came
# after the syscall tables were unified) and glibc 2.36 has no wrappers for them.

_SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 430, 431, 432
FSOPEN_CLOEXEC = FSMOUNT_CLOEXEC = 1
FSCONFIG_SET_FLAG, FSCONFIG_SET_STRING, FSCONFIG_CMD_CREATE = 0, 1, 6
# ``attr`` flags for fsmount, from <linux/mount.h>.
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 1, 2, 4, 8


def _fs_log(fs_fd: int) -> str:
    # A filesystem explains a refused option in its context's log, one read() per message.
    lines = []
    while True:
        try:
            lines.append(os.read(fs_fd, 512).decode(errors="replace").strip())
        except OSError:
            return "; ".join(line for line in lines if line)


def mount_detached(fstype: str, options: list[tuple[str, str | None]], attr: int = 0) -> int:
    """fsopen + fsconfig + fsmount: a mount attached nowhere; an O_PATH fd to its root.

    ``options`` are ``(key, value)`` pairs (``value`` None for a flag such as ``userxattr``).
    Open files under the fd with ``openat``/``openat2`` relative to it; closing it (and
    every fd opened through it) unmounts the filesystem. Needs CAP_SYS_ADMIN.
    """
    note("fsopen", fstype)
    fs = _check(_libc.syscall(ctypes.c_long(_SYS_FSOPEN), fstype.encode(),
                              ctypes.c_uint(FSOPEN_CLOEXEC)), f"fsopen {fstype}")
    try:
        for key, value in options:
            cmd = FSCONFIG_SET_FLAG if value is None else FSCONFIG_SET_STRING
            result = _libc.syscall(ctypes.c_long(_SYS_FSCONFIG), ctypes.c_int(fs),
                                   ctypes.c_uint(cmd), key.encode(),
                                   None if value is None else value.encode(), ctypes.c_int(0))
            if result == -1:
                err = ctypes.get_errno()
                raise OSError(err, f"fsconfig {key}: {os.strerror(err)} {_fs_log(fs)}".strip())
        note("fsconfig", f"{len(options)} options", "FSCONFIG_CMD_CREATE")
        if _libc.syscall(ctypes.c_long(_SYS_FSCONFIG), ctypes.c_int(fs),
                         ctypes.c_uint(FSCONFIG_CMD_CREATE), None, None, ctypes.c_int(0)) == -1:
            err = ctypes.get_errno()
            raise OSError(err, f"mount {fstype}: {os.strerror(err)} {_fs_log(fs)}".strip())
        note("fsmount")
        return _check(_libc.syscall(ctypes.c_long(_SYS_FSMOUNT), ctypes.c_int(fs),
                                    ctypes.c_uint(FSMOUNT_CLOEXEC), ctypes.c_uint(attr)),
                      "fsmount")
    finally:
        os.close(fs)


# ---- end of the detached mounts section ----------------------------------------------------


# ---- signal dispositions glibc will not touch ----------------------------------------------

_SYS_RT_SIGACTION = 13


class _KernelSigaction(ctypes.Structure):
    _fields_ = [("handler", ctypes.c_void_p), ("flags", ctypes.c_ulong),
                ("restorer", ctypes.c_void_p), ("mask", ctypes.c_uint64)]


def sigaction_default(sig: int) -> None:
    """rt_sigaction(sig, SIG_DFL) straight to the kernel.

    glibc reserves signals 32 and 33 for its threads and refuses to change them, but a
    disposition of SIG_IGN inherited from whoever started us would still pass through
    execve into the container; the kernel itself does not mind.
    """
    act = _KernelSigaction(None, 0, None, 0)
    _check(_libc.syscall(ctypes.c_long(_SYS_RT_SIGACTION), ctypes.c_int(sig), ctypes.byref(act),
                         None, ctypes.c_size_t(8)), f"rt_sigaction({sig})")
