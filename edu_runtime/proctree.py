"""An engine's parts, as the host's process table shows them.

``docker run`` and ``edu run`` print an id and return, and the container goes on running.
Something must be its parent, hold its output, and reap it when it exits. Which process that
is, and what stands behind it, is the anatomy of a container engine. It is read here from
``/proc``, the kernel's own table, as ``ps`` reads it:

- ``info(pid)``: one process: its parent, owner, command line, memory (PSS), its pid in each
  pid namespace it is in (``NSpid``) and the namespaces it is in;
- ``ancestry(pid)``: the process, its parent, its parent's parent, ... up to PID 1: for a
  Docker container, ``containerd-shim-runc-v2`` and what adopted it; for an edu container,
  edu's supervisor;
- ``named(name)``: the processes running a program (``dockerd``, ``containerd``);
- ``listening(pid)``: the unix sockets a process listens on, from ``/proc/net/unix`` and its
  open files: dockerd's ``/var/run/docker.sock``, edu's supervisor socket. That is where a
  CLI sends its requests;
- ``tree(rows)``: a few rows as ``ps --forest`` draws them, for a projector.

Nothing here changes anything; every function returns plain data (JSON), so a lesson can
record it and replay it on a machine without Docker.

Introduced in notebooks/03-installing.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

from . import kernel

#: Namespaces a container gets of its own (user only when rootless), as /proc/PID/ns names them.
NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "user", "uts")
#: /proc/net/unix: a socket in the LISTEN state has this flag (__SO_ACCEPTCON).
_ACCEPTING = 0x10000
WIDTH = 100  # a projector's line


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def pss_kib(pid: int) -> int | None:
    """The process's proportional memory (PSS: shared pages split among their users), in
    KiB; None when it cannot be read (another user's process, or gone)."""
    for line in (kernel.read(f"/proc/{pid}/smaps_rollup", "") or "").splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return None


def namespaces(pid: int | str) -> dict[str, str]:
    """The namespaces a process is in: ``{"pid": "pid:[4026531836]", ...}``."""
    out = {}
    for ns in NAMESPACES:
        try:
            out[ns] = os.readlink(f"/proc/{pid}/ns/{ns}")
        except OSError:
            pass
    return out


def info(pid: int) -> dict[str, Any]:
    """One process as the host sees it (``{}`` when it is gone)."""
    status = kernel.proc_status(pid)
    if not status:
        return {}
    uid = int(status.get("Uid", "0").split()[0])
    args = _cmdline(pid)
    return {"pid": pid, "ppid": int(status.get("PPid", "0")), "uid": uid, "user": _user(uid),
            "name": status.get("Name", "?"), "args": args or [f"[{status.get('Name', '?')}]"],
            "nspid": [int(p) for p in status.get("NSpid", str(pid)).split()],
            "pss_kib": pss_kib(pid), "ns": namespaces(pid)}


def ancestry(pid: int) -> list[dict[str, Any]]:
    """``pid``, then its parent, and so on up to PID 1 (or the top this pid namespace
    sees): the chain that owns a container."""
    chain: list[dict[str, Any]] = []
    seen = set()
    while pid and pid not in seen:
        seen.add(pid)
        row = info(pid)
        if not row:
            break
        chain.append(row)
        pid = row["ppid"]
    return chain


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid``, in order."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            status = kernel.proc_status(entry)
            if status.get("PPid") == str(pid):
                out.append(int(entry))
    return sorted(out)


def named(name: str) -> list[int]:
    """The pids of processes whose program is ``name`` (``/proc/PID/comm``, at most 15
    characters, as the kernel keeps it), in order."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and kernel.read(f"/proc/{entry}/comm") == name[:15]:
            out.append(int(entry))
    return sorted(out)


def listening(pid: int) -> list[str]:
    """The paths of the unix sockets ``pid`` listens on (an API's address: where a client
    such as ``docker`` or ``edu`` connects), sorted."""
    paths: dict[str, str] = {}  # socket inode -> path, for listening sockets
    for line in (kernel.read(f"/proc/{pid}/net/unix", "") or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and int(fields[3], 16) & _ACCEPTING:
            paths[fields[6]] = fields[7]
    found = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inode = target[8:-1]
            if inode in paths and not paths[inode].startswith("@"):
                found.add(paths[inode])
    return sorted(found)


def cut(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, with an ellipsis when it was longer."""
    return text if len(text) <= width else text[:width - 1] + "…"


def command(row: dict[str, Any], width: int = 60) -> str:
    """A process's command line as ``ps`` shows it, cut to ``width``."""
    return cut(" ".join(row.get("args") or [row.get("name", "?")]), width)


def tree(rows: list[dict[str, Any]], notes: dict[int, str] | None = None,
         width: int = WIDTH) -> str:
    """Rows (from ``info``) drawn as ``ps -o pid,ppid,user,args --forest`` would, each child
    under its parent, with a note after the processes in ``notes``; a row whose parent is
    not among them starts a tree of its own."""
    notes = notes or {}
    by_pid = {r["pid"]: r for r in rows}
    kids: dict[int, list[int]] = {}
    tops = []
    for r in sorted(rows, key=lambda r: r["pid"]):
        if r["ppid"] in by_pid and r["ppid"] != r["pid"]:
            kids.setdefault(r["ppid"], []).append(r["pid"])
        else:
            tops.append(r["pid"])
    lines = [f"{'PID':>7} {'PPID':>7} {'USER':<12} COMMAND"]

    def draw(pid: int, depth: int) -> None:
        r = by_pid[pid]
        lead = "   " * (depth - 1) + "└─ " if depth else ""
        note = notes.get(pid, "")
        head = f"{r['pid']:>7} {r['ppid']:>7} {cut(r['user'], 12):<12} {lead}"
        room = max(12, width - len(head) - (len(note) + 3 if note else 0))
        lines.append(head + command(r, room) + (f"   {note}" if note else ""))
        for kid in kids.get(pid, []):
            draw(kid, depth + 1)

    for top in tops:
        draw(top, 0)
    return "\n".join(lines)
