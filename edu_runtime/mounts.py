"""Mounts: what a container's filesystem tree looks like beyond its image.

Two steps live here. *Propagation* comes first: on most hosts ``/`` is a shared mount, and
every mount we made under it would appear on the host too (and the host's new mounts in the
container). Making everything private before mounting anything is what keeps the container's
mounts inside its mount namespace, so they vanish with it. *Special filesystems* then puts a
fresh /proc (for the new pid namespace), a read-only /sys, and a minimal /dev into the new
root, and hides the host files Docker hides (masked and read-only paths).

Introduced in notebooks/04-images (the filesystem) and notebooks/10-limits-and-security
(masked paths).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

from . import kernel
from .steps import CHILD, Step

# Docker's defaults (moby oci/defaults.go): hidden entirely, or visible but read-only.
MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

#: The device nodes a container gets, bind-mounted from the host (works rootless too).
DEVICES = ["null", "zero", "full", "random", "urandom", "tty"]
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}

NOSUID_NODEV_NOEXEC = kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_NOEXEC


def mount_points(pid: int | str) -> list[str]:
    """Mount points ``pid`` sees, in mount order."""
    return [m["mount_point"] for m in kernel.mountinfo(pid)]


class Propagation(Step):
    """Make every mount private before anything is mounted."""

    name = "propagation"
    side = CHILD
    lesson = "notebooks/04-images"
    explain = (
        "The new mount namespace starts as a copy of the host's, and on most hosts '/' is a "
        "*shared* mount: a mount made under it would propagate back to the host. So before "
        "mounting anything, the child marks every mount private (mount --make-rprivate /). "
        "Undo: nothing to undo; the namespace and its mounts die with the container.")

    def apply(self, ctx) -> None:
        """mount(MS_REC | MS_PRIVATE) on /."""
        kernel.mount("none", "/", None, kernel.MS_REC | kernel.MS_PRIVATE)

    def observe(self, ctx) -> dict[str, Any]:
        """The propagation of / inside (the optional fields: shared:N, master:N, or none)."""
        if not ctx.pid:
            return {}
        root = next((m for m in kernel.mountinfo(ctx.pid) if m["mount_point"] == "/"), None)
        return {"/": (root["optional"] or "private") if root else "?"}


def _bind(src: str, dst: str | Path, flags: int = 0) -> None:
    kernel.mount(src, str(dst), None, kernel.MS_BIND | flags)


def _remount_ro(path: str | Path) -> None:
    kernel.remount_readonly(path)


def _kind(path: str) -> str:
    """"dir", "file" (anything else that exists) or "" (nothing there), in one stat."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return ""
    return "dir" if stat.S_ISDIR(mode) else "file"


class SpecialFilesystems(Step):
    """/proc, /sys (read-only) and a minimal /dev in the new root, with Docker's masks."""

    name = "special mounts"
    side = CHILD
    lesson = "notebooks/04-images"
    explain = (
        "Programs expect /proc, /sys and /dev. The child mounts a new proc filesystem (it "
        "shows only the processes of the new pid namespace), sysfs read-only, and a tmpfs on "
        "/dev holding only null, zero, full, random, urandom, tty, a private pts instance, shm "
        "and the stdin/stdout/stderr links: no disks, no host terminals. Then it hides what "
        "Docker hides: /proc/kcore, /proc/keys, /sys/firmware and others are covered, and "
        "/proc/sys is made read-only. Undo: these mounts die with the mount namespace.")

    def apply(self, ctx) -> None:
        """Mount proc, sys and dev under the container's root, then mask paths."""
        root = ctx.paths.merged
        proc, sys_, dev = root / "proc", root / "sys", root / "dev"
        for d in (proc, sys_, dev):
            try:
                os.mkdir(d)
            except FileExistsError:
                pass
        kernel.mount("proc", str(proc), "proc", NOSUID_NODEV_NOEXEC)
        try:
            kernel.mount("sysfs", str(sys_), "sysfs", NOSUID_NODEV_NOEXEC | kernel.MS_RDONLY)
        except OSError as exc:
            # Without a network namespace of our own (rootless --network host), the kernel
            # refuses a new sysfs; a read-only bind of the host's is what runc does too.
            if exc.errno != errno.EPERM:
                raise
            _bind("/sys", sys_, kernel.MS_REC)
            _remount_ro(sys_)
        self._dev(dev)
        # One stat per path (what is it, if anything): a container start is many syscalls.
        for path in MASKED_PATHS:
            target = f"{root}{path}"
            kind = _kind(target)
            if kind == "dir":
                kernel.mount("tmpfs", target, "tmpfs", kernel.MS_RDONLY)
            elif kind:
                _bind("/dev/null", target)
        for path in READONLY_PATHS:
            target = f"{root}{path}"
            if _kind(target):
                _bind(target, target, kernel.MS_REC)
                _remount_ro(target)

    @staticmethod
    def _dev(dev: Path) -> None:
        # nodev as the root (rootfs.py): the nodes bound below are mounts of their own, so
        # they still open; a node made with mknod in /dev does not.
        kernel.mount("tmpfs", str(dev), "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV,
                     "mode=755,size=65536k")
        for name in DEVICES:
            node = f"{dev}/{name}"  # an empty file to bind onto, on the new tmpfs
            os.close(os.open(node, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
            _bind(f"/dev/{name}", node)
        (dev / "pts").mkdir()
        kernel.mount("devpts", str(dev / "pts"), "devpts", kernel.MS_NOSUID | kernel.MS_NOEXEC,
                     "newinstance,ptmxmode=0666,mode=0620")
        (dev / "shm").mkdir()
        kernel.mount("shm", str(dev / "shm"), "tmpfs", NOSUID_NODEV_NOEXEC,
                     "mode=1777,size=65536k")
        (dev / "mqueue").mkdir()
        try:
            kernel.mount("mqueue", str(dev / "mqueue"), "mqueue", NOSUID_NODEV_NOEXEC)
        except OSError:
            (dev / "mqueue").rmdir()  # --ipc host: the host's mqueue cannot be remounted
        for name, target in DEV_LINKS.items():
            os.symlink(target, dev / name)

    def observe(self, ctx) -> dict[str, Any]:
        """The mount points inside the container."""
        return {"mounts": mount_points(ctx.pid)} if ctx.pid else {}
