"""Kernel sharing made visible: a container is host processes, on the host's kernel.

Three facts, each read from both sides: the kernel release (``uname -r``), the kernel's
boot id (random per boot: equal only on the same running kernel), and the process table,
where the container's processes appear under host PIDs while inside they count from 1.
A virtual machine (vm_compare) differs on the first two.

Introduced in notebooks/01-containers-vs-vms.
"""

from __future__ import annotations

import os
from typing import Any

from . import kernel


def _inside(pid: int, path: str) -> str | None:
    """Read ``path`` as the container sees it (through its root)."""
    return kernel.read(f"/proc/{pid}/root{path}")


def host_pids_of(pid: int) -> list[dict[str, Any]]:
    """The container's processes as the host's table lists them: host PID, PID inside, name.

    ``NSpid`` in /proc/PID/status gives a process's pid in every pid namespace it is in,
    outermost first: the host's number, then the container's.
    """
    ns = os.readlink(f"/proc/{pid}/ns/pid")
    rows = []
    for entry in sorted(os.listdir("/proc"), key=lambda e: (len(e), e)):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                continue
        except OSError:
            continue
        status = kernel.proc_status(entry)
        nspid = status.get("NSpid", entry).split()
        rows.append({"host_pid": int(entry), "container_pid": int(nspid[-1]),
                     "command": status.get("Name", "?")})
    return rows


def compare(pid: int) -> dict[str, dict[str, Any]]:
    """Side by side: what the host and the container (PID ``pid``) report."""
    uname_inside = _inside(pid, "/proc/sys/kernel/osrelease")
    boot_inside = _inside(pid, "/proc/sys/kernel/random/boot_id")
    return {
        "uname -r": {"host": os.uname().release, "container": uname_inside,
                     "same": uname_inside == os.uname().release},
        "boot_id": {"host": kernel.boot_id(), "container": boot_inside,
                    "same": boot_inside == kernel.boot_id()},
        "processes": {"host": None, "container": host_pids_of(pid), "same": None},
    }


def table(pid: int) -> str:
    """``compare`` as text for a terminal or a notebook cell."""
    rows = compare(pid)
    lines = [f"{'':<10}{'host':<40}{'container':<40}"]
    for key in ("uname -r", "boot_id"):
        r = rows[key]
        lines.append(f"{key:<10}{r['host']:<40}{r['container'] or '?':<40}"
                     f"{'same' if r['same'] else 'DIFFERENT'}")
    lines.append("processes (host PID -> PID inside):")
    for p in rows["processes"]["container"]:
        lines.append(f"  {p['host_pid']:>7} -> {p['container_pid']:<5} {p['command']}")
    return "\n".join(lines)
