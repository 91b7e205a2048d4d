"""Control groups: where the kernel's resource controllers live on this machine.

A container's memory, pids and cpu limits are files in a cgroup directory. Where those
directories are depends on the host: pure cgroup v2 (one tree at /sys/fs/cgroup, what most
students have), v1 (one mount per controller, sometimes several controllers per mount), or
"hybrid" (v1 controllers plus a v2 tree, usually with few controllers of its own). This
module finds the hierarchies from mountinfo, never by guessing paths, so the same code works
on all three and can be tested against a temp-dir cgroupfs.

Introduced in notebooks/00-start-here (doctor); the limits are taught in the cgroups lesson.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import kernel

#: The controllers a container's limits need, and what each one limits.
NEEDED = {"memory": "--memory", "pids": "--pids-limit", "cpu": "--cpus"}


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup tree: v1 (``controllers`` from its mount options) or v2."""

    version: int
    mount_point: Path
    controllers: tuple[str, ...] = field(default=())


def hierarchies(mounts: list[dict[str, str]] | None = None,
                root: Path = Path("/")) -> list[Hierarchy]:
    """Every cgroup hierarchy in ``mounts`` (default: this process's mountinfo).

    ``root`` prefixes paths read from a v2 tree, so tests can point at a temp-dir cgroupfs.
    A bind mount of a subtree (root field not ``/``) is skipped: it is not the hierarchy.
    """
    found = []
    for m in kernel.mountinfo() if mounts is None else mounts:
        if m["root"] != "/":
            continue
        point = Path(m["mount_point"])
        if m["fstype"] == "cgroup":
            opts = [o for o in m["super_options"].split(",")
                    if o not in ("rw", "ro") and "=" not in o]
            if opts:
                found.append(Hierarchy(1, point, tuple(sorted(opts))))
        elif m["fstype"] == "cgroup2":
            text = kernel.read(root / point.relative_to("/") / "cgroup.controllers", "")
            found.append(Hierarchy(2, point, tuple(sorted((text or "").split()))))
    return sorted(found, key=lambda h: (h.version, str(h.mount_point)))


def mode(found: list[Hierarchy]) -> str:
    """``v2``, ``v1``, ``hybrid`` or ``none``: how this host mounts its cgroups."""
    v1 = any(h.version == 1 for h in found)
    v2 = any(h.version == 2 for h in found)
    if v1 and v2:
        return "hybrid"
    return "v1" if v1 else "v2" if v2 else "none"


def own_v2_path(proc_cgroup: str | None = None) -> str:
    """This process's path in the v2 tree (the ``0::`` line of /proc/self/cgroup)."""
    text = proc_cgroup if proc_cgroup is not None else kernel.read("/proc/self/cgroup", "")
    for line in (text or "").splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return "/"


@dataclass(frozen=True)
class ControllerSupport:
    """Where one controller can be used, or why it cannot."""

    name: str
    usable: bool
    version: int | None
    path: Path | None
    reason: str


def controller_support(found: list[Hierarchy], name: str, root: Path = Path("/"),
                       uid: int | None = None, proc_cgroup: str | None = None
                       ) -> ControllerSupport:
    """Can a container get a ``name`` limit here? v1 is preferred on hybrid hosts.

    On v1 the controller's own mount must be writable (root only, in practice). On v2 the
    controller must be offered by the tree; as root we create cgroups under the tree's root,
    rootless we need a delegated subtree: our own cgroup, writable, offering the controller.
    """
    uid = os.geteuid() if uid is None else uid
    for h in found:
        if h.version == 1 and name in h.controllers:
            where = root / h.mount_point.relative_to("/")
            if uid == 0 or os.access(where, os.W_OK):
                return ControllerSupport(name, True, 1, h.mount_point, f"v1 at {h.mount_point}")
            return ControllerSupport(name, False, 1, h.mount_point,
                                     f"v1 at {h.mount_point}, not writable without root")
    for h in found:
        if h.version != 2:
            continue
        base = h.mount_point if uid == 0 else h.mount_point / own_v2_path(proc_cgroup).lstrip("/")
        where = root / base.relative_to("/")
        offered = (kernel.read(where / "cgroup.controllers", "") or "").split()
        if name not in offered:
            why = "not offered by the v2 tree" if uid == 0 else \
                "not delegated to this user (no systemd delegation of the user's cgroup)"
            return ControllerSupport(name, False, 2, base, f"v2 at {base}: {why}")
        if uid != 0 and not os.access(where, os.W_OK):
            return ControllerSupport(name, False, 2, base, f"v2 at {base}: not writable")
        return ControllerSupport(name, True, 2, base, f"v2 at {base}")
    return ControllerSupport(name, False, None, None, "no hierarchy offers it")
