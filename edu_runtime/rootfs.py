"""The root filesystem: the image's layers stacked by overlayfs, and pivot_root into them.

Overlayfs stacks the image's read-only layer directories (each unpacked once in the store,
shared by every container of every image that has it) under one writable *upper* directory
of the container's own. Reads fall through to the highest layer that has the file; writes go
to the upper dir, copying the file up first. The upper dir is kept until the container is
removed, because ``edu commit`` turns it into a new layer.

Then ``pivot_root`` swaps the container's root with the host's and the old root is detached.
Unlike ``chroot``, which only changes where path lookup starts (and is escaped by a process
that keeps a directory open), pivot_root leaves no path back to the host's files.

Introduced in notebooks/04-images.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import kernel, overlay, paths
from .namespaces import await_adopted
from .steps import CHILD, Step

#: What the runtime mounts over, so must exist: made here, not in the container's upper dir.
INIT_DIRS = ("dev", "etc", "proc", "sys")
#: Files edu binds its own of over the image's (see network.NameFiles).
NAME_FILES = ("etc/hostname", "etc/hosts", "etc/resolv.conf")


def init_layer() -> Path:
    """The *init layer*: a read-only layer on top of every container's image, holding the
    mount points the runtime needs: /proc, /sys, /dev and /etc, empty /etc/hostname,
    /etc/hosts and /etc/resolv.conf to bind the container's own over, and /etc/mtab, a link
    to /proc/mounts, as Docker makes it.

    Without it, an image that lacks one of them would get it created in the container's
    upper dir, and `edu commit` or a Dockerfile RUN would put the runtime's mount points into
    the new layer. Docker has the same thing: the ``<id>-init`` layer under each container's
    writable one. It is the same for every container, so it is made once and shared.
    """
    where = paths.state_dir() / "init-layer-2"
    if where.is_dir():
        return where
    tmp = where.with_name(f".{where.name}.{os.getpid()}")
    tmp.mkdir(parents=True, mode=0o755)
    for d in INIT_DIRS:
        (tmp / d).mkdir(mode=0o755)
    for f in NAME_FILES:
        (tmp / f).touch(mode=0o644)
    (tmp / "etc/mtab").symlink_to("/proc/mounts")
    for entry in (tmp, *(tmp / d for d in INIT_DIRS)):
        entry.chmod(0o755)  # whatever the umask said
    try:
        os.rename(tmp, where)
    except OSError:  # another start made it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return where


#: apt's setting for a rootless container, in a layer of its own (``apt_layer``).
APT_CONF = "etc/apt/apt.conf.d/00edu-rootless"
APT_SETTING = """\
// Written by edu for rootless containers (edu_runtime/rootfs.py, apt_layer): this user
// namespace maps one uid (yours, as 0), so apt cannot switch to its sandbox user _apt to
// download; it downloads as root, which is you. Not part of any image or build layer.
APT::Sandbox::User "root";
"""


def apt_layer() -> Path:
    """A read-only layer holding one apt setting, put over a rootless container's image when
    the image has apt (``wants_apt_layer``), as the init layer is over every image.

    apt downloads as its unprivileged user ``_apt`` (uid 42): it calls setgroups and
    seteuid(42). A rootless container's user namespace maps one uid, the student's, so
    uid 42 does not exist there and apt fails ("setgroups 65534 failed"). Rootless Docker
    maps a range of /etc/subuid ids instead; edu maps one, so that every file of the
    container stays the student's own, and tells apt to stay root (the student) instead.
    Being a layer, it never lands in the container's upper dir, so a RUN or ``edu commit``
    does not put it into an image."""
    where = paths.state_dir() / "apt-layer-1"
    if where.is_dir():
        return where
    tmp = where.with_name(f".{where.name}.{os.getpid()}")
    (tmp / APT_CONF).parent.mkdir(parents=True, mode=0o755)
    (tmp / APT_CONF).write_text(APT_SETTING)
    for entry in (tmp, tmp / "etc", tmp / "etc/apt", tmp / "etc/apt/apt.conf.d"):
        entry.chmod(0o755)
    (tmp / APT_CONF).chmod(0o644)
    try:
        os.rename(tmp, where)
    except OSError:  # another start made it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return where


def wants_apt_layer(lowerdirs: list[Path]) -> bool:
    """True for a rootless container (not root of the host) whose image has apt."""
    return os.geteuid() != 0 and any((d / "etc/apt/apt.conf.d").is_dir() for d in lowerdirs)


class RootFS(Step):
    """Mount the overlay of the image's layers and the container's upper dir."""

    name = "rootfs"
    side = CHILD
    lesson = "notebooks/04-images"
    explain = (
        "overlayfs stacks the image's layers (read-only, shared with every other container "
        "using them) under an upper directory that belongs to this container alone. Every "
        "write lands in the upper dir; the layers never change. On top of the image sits the "
        "init layer, the mount points the next steps need, so they never land in the upper "
        "dir. Undo: the mount dies with the mount namespace; the upper dir is kept until "
        "`edu rm`, for `edu commit`.")

    def apply(self, ctx) -> None:
        """mount -t overlay with the image's layers as lowerdir."""
        p = ctx.paths
        opts = overlay.mount_options(ctx.lowerdirs, p.upper, p.work, ctx.rootless)
        # nodev: root in a container keeps CAP_MKNOD (Docker's default set), so it can make
        # a node for the host's disk; nodev makes the kernel refuse to open it (EACCES).
        # Docker refuses the open with its devices cgroup instead; the escape suite checks
        # both (notebooks/10-limits-and-security).
        kernel.mount("overlay", str(p.merged), "overlay", kernel.MS_NODEV, opts)

    def observe(self, ctx) -> dict[str, Any]:
        """The overlay mount as the container's mountinfo shows it."""
        if not ctx.pid:
            return {}
        for m in kernel.mountinfo(ctx.pid):
            if m["fstype"] == "overlay" and m["mount_point"] in (str(ctx.paths.merged), "/"):
                return {"mount_point": m["mount_point"], "layers": len(ctx.lowerdirs),
                        "upperdir": str(ctx.paths.upper)}
        return {"overlay": "not mounted"}


class PivotRoot(Step):
    """pivot_root(2) into the overlay and detach the host's root."""

    name = "pivot_root"
    side = CHILD
    lesson = "notebooks/04-images"
    explain = (
        "pivot_root() makes the overlay the root of this mount namespace and puts the old "
        "root (the host's whole filesystem) on top of it, where the child immediately "
        "detaches it with umount2(MNT_DETACH). After that no path leads to host files: the "
        "host's mounts are gone from the container's mount table. With --read-only, / is "
        "then remounted read-only. Undo: the mount namespace dies with its last process.")

    def apply(self, ctx) -> None:
        """pivot_root(".", "."), the trick runc uses: no directory for the old root needed."""
        # The middle process is gone by now (its exit, under way while the steps before ran,
        # would otherwise slow the detach of the old root below).
        await_adopted(ctx)
        os.chdir(ctx.paths.merged)
        kernel.pivot_root(".", ".")
        kernel.umount(".", kernel.MNT_DETACH)
        os.chdir("/")
        if ctx.config.read_only:
            kernel.mount("none", "/", None,
                         kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_RDONLY)

    def observe(self, ctx) -> dict[str, Any]:
        """How many mounts the container sees, and whether the host's / is among them."""
        if not ctx.pid:
            return {}
        mounts = kernel.mountinfo(ctx.pid)
        host_root = next(m for m in kernel.mountinfo("self") if m["mount_point"] == "/")
        return {"mounts": len(mounts),
                "host root visible": any(m["id"] == host_root["id"] for m in mounts),
                "root": next((m["fstype"] for m in mounts if m["mount_point"] == "/"), "?")}
