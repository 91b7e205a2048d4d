"""Who appears in the host's ps: a container's processes do; a guest's do not, only its qemu.

Lesson 01 runs one command in a container and in a libvirt guest of the same image, at the
same time: ``ps`` (what each sees from inside), then ``sleep 3600``. While both sleep, the
host's own process table (``/proc``) is read:

- the container's ``sleep`` is there: an ordinary host process with a host PID, in the
  container's cgroup, whose parent is a host process (edu's supervisor);
- the guest's ``sleep`` is not: it is a process of the *guest's* kernel, kept in the guest's
  memory, and that memory belongs to the one process the host does see, qemu. qemu has no
  child processes; the whole guest runs in its threads.

``both_running`` does it and returns JSON (so a replay can show it again); ``report`` turns
that into a few lines for a projector. Only ``both_running`` needs the engine and libvirt,
imported when it runs.

Introduced in notebooks/01-containers-vs-vms.
"""

from __future__ import annotations

import os
import pwd
import re
import select
import signal
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

END = "EDU-PS-END"  # printed after ps, so the reader knows its listing is complete
COMMAND = ["sleep", "3600"]
#: What both run: their own view first, then the command the host will look for.
INSIDE = ["sh", "-c", f"ps; echo {END}; exec {' '.join(COMMAND)}"]
SHOWN = 6  # lines of an inside listing shown before "... N more"
WIDTH = 100  # characters: a projector's line


class ProcessesError(RuntimeError):
    """The side-by-side run could not be made; the message says why."""


# ---- the host's process table ------------------------------------------------------------------

def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def host_process(pid: int) -> dict[str, Any] | None:
    """One host process as ``ps -o pid,ppid,user,nlwp,rss,args`` shows it (None if gone)."""
    try:
        status = _status(pid)
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    uid = int(status.get("Uid", "0").split()[0])
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return {"pid": pid, "ppid": int(status.get("PPid", "0")), "user": user,
            "comm": status.get("Name", "?"), "threads": int(status.get("Threads", "1")),
            "rss_kib": int((status.get("VmRSS") or "0 kB").split()[0]),
            "argv": [a.decode(errors="replace") for a in argv if a]}


def host_table() -> list[dict[str, Any]]:
    """Every process of the host (kernel threads, which have no command line, left out)."""
    rows = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            row = host_process(int(entry.name))
            if row is not None and row["argv"]:
                rows.append(row)
    return sorted(rows, key=lambda r: r["pid"])


def classify(table: list[dict[str, Any]], container_pids: set[int], qemu_pid: int | None,
             command: list[str] = COMMAND) -> dict[str, Any]:
    """What the host's table says about the two: the container's processes and the guest's
    qemu (with their parents), every host process running ``command`` and whose it is, and
    qemu's child processes (none: the guest's processes are not the host's)."""
    by_pid = {r["pid"]: r for r in table}

    def with_parent(row: dict[str, Any], who: str) -> dict[str, Any]:
        parent = by_pid.get(row["ppid"])
        argv = parent["argv"] if parent else []
        named = [Path(argv[0]).name, *argv[1:]] if argv else ["?"]
        return {**row, "who": who, "parent": " ".join(named)}

    rows = [with_parent(r, "the container's " + ("PID 1" if r["argv"] != command else
                                                 "sleep") + ", a host process")
            for r in table if r["pid"] in container_pids]
    if qemu_pid in by_pid:
        rows.append(with_parent(by_pid[qemu_pid], "the whole guest, its sleep included"))
    running = [{"pid": r["pid"], "whose": "the container" if r["pid"] in container_pids
                else "neither (something else on this host)"}
               for r in table if r["argv"] == command]
    return {"rows": rows, "running_command": running,
            "qemu_children": [r["pid"] for r in table if qemu_pid and r["ppid"] == qemu_pid]}


# ---- both at once ------------------------------------------------------------------------------

def read_until(fd: int, marker: str, timeout: float) -> str:
    """What ``fd`` says up to the line ``marker`` (that line left out)."""
    buf, deadline = b"", time.monotonic() + timeout
    while (marker + "\n").encode() not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise ProcessesError(f"the container did not print {marker} within {timeout:g} s; "
                                 f"it said: {buf.decode(errors='replace')[-300:]!r}")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise ProcessesError(f"the container's output ended before {marker}: "
                                 f"{buf.decode(errors='replace')[-300:]!r}")
        buf += chunk
    return buf.decode(errors="replace").split(marker + "\n")[0]


def guest_listing(console: str, marker: str) -> str:
    """The guest's ``ps``, from its console: after its ready line, up to ``END``, without
    the kernel's own messages (``[  1.234] ...``) that may fall in between."""
    after = console.split(marker, 1)[-1].split("\n", 1)[-1]
    lines = []
    for line in after.splitlines():
        if line.strip() == END:
            break
        if line.strip() and not re.match(r"\[\s*\d+\.\d+\]", line):
            lines.append(line)
    return "\n".join(lines) + "\n"


def _settled(pids: Callable[[], list[int]], timeout: float = 5.0) -> None:
    """Wait until one of ``pids()`` runs ``COMMAND`` (its shell has exec'd it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in pids():
            row = host_process(pid)
            if row and row["argv"] == COMMAND:
                return
        time.sleep(0.05)


def both_running(image: str = "busybox", *, accel: str | None = None,
                 note: Callable[..., object] | None = None, store=None,
                 progress: Callable[[str], object] = lambda _text: None) -> dict[str, Any]:
    """Run ``INSIDE`` in a container and in a libvirt guest of ``image`` at once; read the
    host's process table while both sleep; stop both. ``note(container=ID)`` and
    ``note(guest=NAME)`` are told before each is made (a lesson's ledger, for its reset)."""
    from edu_runtime import Container

    from . import guest_image, libvirt_guest

    note = note or (lambda **_thing: None)
    guest = guest_image.minimal(image, INSIDE, store=store, progress=progress)
    accel = accel or libvirt_guest.choose_accel()
    r, w = os.pipe()
    devnull = os.open(os.devnull, os.O_RDONLY)
    c = None
    try:
        c = Container(image, INSIDE, network="none", remove=True, stdio=(devnull, w, w),
                      store=store)
        note(container=c.id)
        progress("starting the container")
        c.start()
        os.close(w)
        w = -1
        inside_container = read_until(r, END, 60)
        name = libvirt_guest.new_name()
        note(guest=name, undo=libvirt_guest.UNDO)
        progress("booting the guest")
        with libvirt_guest.boot(guest, accel=accel, name=name) as b:
            if b.console.wait_for(re.escape(END.encode()) + rb"\r?\n",
                                  time.monotonic() + 60) is None:
                raise ProcessesError(f"the guest did not print {END} after its ps")
            inside_guest = guest_listing(b.console.text, guest.marker)
            _settled(c.processes)
            time.sleep(0.3)  # the guest's shell exec's sleep too (not that the host can see)
            seen = classify(host_table(), set(c.processes()), b.qemu_pid)
            result = {"image": image, "accel": accel, "command": " ".join(COMMAND),
                      "inside": INSIDE[-1],
                      "container": {"id": c.id, "name": c.config.name,
                                    "ps": inside_container},
                      "guest": {"name": name, "qemu_pid": b.qemu_pid, "ps": inside_guest},
                      **seen}
    finally:
        for fd in (r, w, devnull):
            if fd != -1:
                os.close(fd)
        if c is not None and c.pid:
            c.kill(signal.SIGKILL)
            c.wait()
    return result


# ---- for a projector ---------------------------------------------------------------------------

def _cut(listing: str, keep: str, shown: int = SHOWN) -> list[str]:
    """The first lines of a ps listing, plus the lines with ``keep``, then "... N more"."""
    lines = listing.rstrip("\n").splitlines()
    head, rest = lines[:shown], lines[shown:]
    kept = [line for line in rest if keep in line]
    more = len(rest) - len(kept)
    return head + (["  ..."] if kept and more else []) + kept + \
        ([f"  ... {more} more"] if more else [])


def _command(argv: list[str], width: int = 44) -> str:
    text = " ".join(argv)
    return text if len(text) <= width else text[:width - 1] + "…"


def report(result: dict[str, Any]) -> str:
    """The run as a projector shows it: each one's own ps, then the host's view of both."""
    out = [f"Inside the container ({result['image']}), its own ps:"]
    out += ["  " + line for line in _cut(result["container"]["ps"], "sleep")]
    out += ["", f"Inside the guest ({result['image']}, {result['accel'].upper()}), its own ps:"]
    out += ["  " + line for line in _cut(result["guest"]["ps"], "sleep")]
    out += ["", "The host's ps, the lines of these two:",
            f"  {'PID':>7} {'PPID':>7}  {'USER':<13} {'THREADS':>7} {'RSS':>9}  COMMAND"]
    for row in result["rows"]:
        out.append(f"  {row['pid']:>7} {row['ppid']:>7}  {row['user'][:13]:<13} "
                   f"{row['threads']:>7} {row['rss_kib'] / 1024:>5.1f} MiB  "
                   f"{_command(row['argv'])}")
        out.append(f"{'':>10}↳ {row['who']}; parent: {_command(row['parent'].split(), 34)}")
    ours = [p for p in result["running_command"] if p["whose"] == "the container"]
    others = len(result["running_command"]) - len(ours)
    out.append("")
    out += textwrap.wrap(
        f"Host processes running `{result['command']}`: {len(ours)} of the container's"
        + (f" (pid {', '.join(str(p['pid']) for p in ours)})" if ours else "")
        + (f", {others} of something else on this host" if others else "")
        + "; none of the guest's.", WIDTH)
    children = result["qemu_children"]
    out += textwrap.wrap(
        f"Child processes of the guest's qemu: {len(children) or 'none'}."
        + ("" if children else " The guest's processes live inside qemu's memory, run by "
           "the guest's kernel."), WIDTH)
    return "\n".join(out)
