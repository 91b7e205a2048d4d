"""Namespaces: what a container can *see*. Each kind gives the process its own copy of one
kernel table: mount points, process ids, hostname, IPC objects, network devices, cgroup
root, and (rootless) user ids.

One ``unshare(2)`` call makes them all. The pid namespace is the odd one: the caller stays
where it is, and only its *next child* is born inside, as PID 1. So the child that unshares
forks once more and exits; the grandchild, PID 1 of the new namespace, carries on. Our host
process is a subreaper (PR_SET_CHILD_SUBREAPER), so it adopts that grandchild and can reap it.

Introduced in notebooks/06-step-by-step.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from . import kernel
from .steps import CHILD, HOST, Step, recv, send

#: --pid host, --ipc host, --uts host, --network host share the host's namespace instead.
SHAREABLE = {"pid": kernel.CLONE_NEWPID, "ipc": kernel.CLONE_NEWIPC,
             "uts": kernel.CLONE_NEWUTS, "net": kernel.CLONE_NEWNET}


def flags_for(shared: set[str], rootless: bool) -> int:
    """The CLONE_NEW* flags for a container that shares ``shared`` with the host."""
    flags = kernel.CLONE_NEWNS | kernel.CLONE_NEWCGROUP
    for name, flag in SHAREABLE.items():
        if name not in shared:
            flags |= flag
    if rootless:
        flags |= kernel.CLONE_NEWUSER
    return flags


def inodes(pid: int | str) -> dict[str, str]:
    """``/proc/PID/ns/*`` link targets, e.g. ``{'net': 'net:[4026531840]'}``."""
    out = {}
    for name in sorted(kernel.NAMESPACES):
        try:
            out[name] = os.readlink(f"/proc/{pid}/ns/{name}")
        except OSError:
            out[name] = "?"
    return out


class Namespaces(Step):
    """unshare(2) into new namespaces, then fork the process that will be PID 1."""

    name = "namespaces"
    side = CHILD
    lesson = "notebooks/06-step-by-step"
    explain = (
        "The child calls unshare() to get new mount, UTS, IPC, network, cgroup and pid "
        "namespaces (and, rootless, a user namespace: a new one, or on a network the one your "
        "network holder made, joined with setns()). From now on it sees its own mount "
        "table, hostname and network devices, while still running on the same kernel. The "
        "pid namespace applies to the child's children, so it forks once more: the grandchild "
        "is PID 1 inside and carries on with the next steps. Undo: a namespace dies with its "
        "last process; nothing is left to remove.")

    def apply(self, ctx) -> None:
        """Unshare, fork PID 1, hand its pid to the host, and let the middle process exit."""
        flags = ctx.ns_flags
        if getattr(ctx, "userns_fd", -1) >= 0:
            # Rootless on a network: the user namespace of your network holder instead of a
            # new one, so the namespaces made here belong to it and the holder may cable ours.
            kernel.setns(ctx.userns_fd, kernel.CLONE_NEWUSER)
            flags &= ~kernel.CLONE_NEWUSER
        kernel.unshare(flags)
        handed, told = os.pipe()
        pid = os.fork()
        if pid:
            send(ctx.sock, handoff=pid)
            os.write(told, b".")  # the handoff is on its way, ahead of anything PID 1 says
            os._exit(0)
        # PID 1 of the new namespace carries on as soon as its pid is with the host, while
        # the middle process exits and the host reaps it (a millisecond: the exit of a copy
        # of the host's memory); the host's word that it adopted us comes later (``adopted``).
        os.close(told)
        if not os.read(handed, 1):  # the middle process died first: the host undoes it all
            os._exit(125)
        os.close(handed)
        ctx.adopted = False

    def observe(self, ctx) -> dict[str, Any]:
        """The container's namespace inodes beside the host's."""
        if not ctx.pid:
            return {}
        mine, host = inodes(ctx.pid), inodes("self")
        return {name: {"container": mine[name], "host": host[name],
                       "new": mine[name] != host[name]} for name in mine}


def adopted(ctx, msg: dict | None) -> None:
    """PID 1, told ``msg``: "adopted" (the host reaped the middle process, so we are its
    child now), or None (the host is gone, so nothing may run)."""
    if msg is None:
        os._exit(125)
    if not msg.get("adopted"):
        raise RuntimeError(f"expected the host's 'adopted', got {sorted(msg)}")
    ctx.adopted = True


def die_with_host(ctx) -> None:
    """PID 1, before it execs: once adopted by the host (its word may still be on its way:
    in a fast run it waits in the socket while the child's steps run), ask to be SIGKILLed
    when the host dies, as a foreground container must not outlive `edu run`, even a
    SIGKILLed one. (Asked before, the middle process's exit would have killed us; inside
    the namespace getppid() says 0, our parent living outside, hence the host's word.)"""
    await_adopted(ctx)
    kernel.set_pdeathsig(signal.SIGKILL)


def await_adopted(ctx) -> None:
    """PID 1: wait for the host's "adopted", unless it came already."""
    while not ctx.adopted:
        adopted(ctx, recv(ctx.sock))


class IdMaps(Step):
    """Rootless only: map the user's own uid and gid to root inside the user namespace."""

    name = "id maps"
    side = HOST
    lesson = "notebooks/06-step-by-step"
    explain = (
        "In a new user namespace, the child starts as 'nobody' until someone writes its "
        "uid_map and gid_map. The host writes one line to each: uid 0 inside is your own uid "
        "outside. That is why root in a rootless container cannot touch the host's files: "
        "to the kernel it is still you. Undo: the maps die with the user namespace.")

    def enabled(self, ctx) -> bool:
        """Only rootless containers get a user namespace (on a network, the holder's, which is
        mapped already)."""
        return ctx.rootless and not getattr(ctx, "joins_holder", False)

    def apply(self, ctx) -> None:
        """Write setgroups, uid_map and gid_map for the container's PID 1."""
        kernel.write_id_maps(ctx.pid, os.geteuid(), os.getegid())

    def observe(self, ctx) -> dict[str, Any]:
        """uid_map and gid_map as the kernel shows them."""
        return {f: " ".join((kernel.read(f"/proc/{ctx.pid}/{f}", "") or "").split())
                for f in ("uid_map", "gid_map")} if ctx.pid else {}
