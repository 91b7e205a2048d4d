"""The host, as far as edu could leave anything on it: one snapshot, compared before and after.

Issue 16's fault tests (kill points, kernel restarts, a full disk, the soak, a class on one
machine) all ask the same question: after the fault and one ordinary ``edu`` command, is the
host back where it was? ``snapshot()`` names every kernel object and file edu makes, as a set
of strings per kind; ``leaks(before, after)`` is what is new.

Others may run containers on the same host while a test runs (a teacher's demo beside the
tests; several engineers' test files). An object that belongs to a container another process
is still running (its record says running and its owner is alive) is theirs, not a leak:
``leaks`` leaves those out, by the container id that every object of a container carries (the
cgroup and upper dir are named by it, the veth by its first 8 characters, its nft rules and
lease by comment and key). The warm bridge and the supervisor of a supervisor that is alive
are not leaks either (``supervisor_alive``); once it has idled out, they are.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

KINDS = ("mounts", "cgroups", "netns", "links", "nft", "iptables", "leases", "containers",
         "processes", "store tmp", "libvirt", "guest tmp", "run dir")


def _mounts() -> set[str]:
    # The host's mount namespace: PID 1's (a test runs in it too, but say which we mean).
    out = set()
    for line in Path("/proc/1/mountinfo").read_text().splitlines():
        fields = line.split()
        point = fields[4]
        if "/edu" in point or "edu-" in point or "/containers/" in point:
            out.add(f"{point} ({fields[fields.index('-') + 1]})")
    return out


def _subdirs(path: str) -> list[str]:
    """The directories in ``path``; none if it is gone (others' cgroups come and go while
    we look: a glob would raise when one is removed between its listing and its descent)."""
    try:
        with os.scandir(path) as it:
            return [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _cgroups() -> set[str]:
    out: set[str] = set()
    for top in ["/sys/fs/cgroup", *_subdirs("/sys/fs/cgroup")]:
        for cg in _subdirs(f"{top}/edu"):
            out.add(cg)
            if top != "/sys/fs/cgroup":
                out |= set(_subdirs(cg))
    return out


def _netns() -> set[str]:
    named = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    return {f"/run/netns/{n}" for n in named}


def _links() -> set[str]:
    return {n for n in os.listdir("/sys/class/net")
            if re.match(r"^(veth|ceth)[0-9a-f]{8}$", n) or n.startswith("edu")}


def _nft() -> set[str]:
    if shutil.which("nft") is None:
        return set()
    out = subprocess.run(["nft", "-j", "list", "table", "ip", "edu"], capture_output=True,
                         text=True)
    if out.returncode != 0:
        return set()
    rules = set()
    for item in json.loads(out.stdout)["nftables"]:
        if "rule" in item:
            r = item["rule"]
            rules.add(f"{r['chain']}: {r.get('comment', '')} #{r['handle']}")
        elif "chain" in item:
            rules.add(f"chain {item['chain']['name']}")
    return rules | {"table ip edu"}


def _iptables() -> set[str]:
    if shutil.which("iptables") is None:
        return set()
    out = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True)
    return {line for line in out.stdout.splitlines() if "edu" in line}


def _leases() -> set[str]:
    from edu_runtime import paths

    out = set()
    for path in (paths.state_dir() / "networks").glob("*.json"):
        try:
            net = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for cid, ep in (net.get("containers") or {}).items():
            out.add(f"{net.get('name')}: {cid} {ep.get('ip', '') if isinstance(ep, dict) else ''}")
    return out


def _containers() -> set[str]:
    from edu_runtime import paths

    base = paths.state_dir() / "containers"
    return {p.name for p in base.iterdir()} if base.is_dir() else set()


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


def _processes() -> set[str]:
    """Processes in an edu cgroup, and edu's own (supervisor, helpers, holders, pasta)."""
    me = str(os.getpid())
    out = set()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or p.name == me:
            continue
        try:
            cgroup = (p / "cgroup").read_text()
        except OSError:
            continue
        cmd = _cmdline(p.name)
        if not cmd:
            continue  # a kernel thread, or a zombie: it holds nothing
        m = re.search(r"/edu/([0-9a-f]{64})", cgroup)
        if m:
            out.add(f"{p.name} in {m[1]}: {cmd[:80]}")
        elif re.search(r"edu_runtime\.(life|networks)\.|pasta ", cmd):
            out.add(f"{p.name}: {cmd[:80]}")
    return out


def _store_tmp() -> set[str]:
    from edu_runtime import paths

    store = paths.state_dir() / "store"
    out = {f"store/tmp/{p.name}" for p in (store / "tmp").iterdir()} if (
        store / "tmp").is_dir() else set()
    for sub in ("blobs/sha256", "layers/sha256", "rebuild/sha256", ""):
        d = store / sub if sub else store
        if d.is_dir():
            out |= {f"store/{sub}/{p.name}" for p in d.glob(".*.tmp")}
    return out


def _libvirt() -> set[str]:
    if shutil.which("virsh") is None:
        return set()
    out = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                         capture_output=True, text=True, timeout=30)
    return {f"domain {n}" for n in out.stdout.split() if n.startswith("edu")}


def _guest_tmp() -> set[str]:
    """Half-built guest images, per-boot dirs (a disk guest's throwaway qcow2 overlay), and
    edu compare's work dirs (a runc bundle) in the home directory."""
    from edu_runtime import paths

    root = paths.cache_dir() / "guest" / "images"
    boots = paths.cache_dir() / "boots"
    return ({str(p) for p in root.iterdir() if p.name.startswith((".", "tmp"))
             and p.name != ".lock"} if root.is_dir() else set()) | (
        {str(p) for p in boots.iterdir()} if boots.is_dir() else set()) | {
        str(p) for p in Path.home().glob("edu-compare-*")}


def _run_dir() -> set[str]:
    from edu_runtime import paths

    d = paths.run_dir()
    return {p.name for p in d.iterdir() if p.name != "supervisor.log"} if d.is_dir() else set()


def snapshot() -> dict[str, set[str]]:
    """Every object edu could have left on the host, by kind (``KINDS``)."""
    return {"mounts": _mounts(), "cgroups": _cgroups(), "netns": _netns(), "links": _links(),
            "nft": _nft(), "iptables": _iptables(), "leases": _leases(),
            "containers": _containers(), "processes": _processes(),
            "store tmp": _store_tmp(), "libvirt": _libvirt(), "guest tmp": _guest_tmp(),
            "run dir": _run_dir()}


def others() -> set[str]:
    """Ids of containers someone else is running now: record says running, owner alive."""
    from edu_runtime import paths
    from edu_runtime.life import control

    out = set()
    for rec_path in (paths.state_dir() / "containers").glob("*/state.json"):
        try:
            rec = json.loads(rec_path.read_text())
        except (OSError, ValueError):
            continue
        if rec.get("status") in ("creating", "running", "paused", "restarting") and \
                control._owner_alive(rec):
            out.add(rec["id"])
    return out


def supervisor_alive() -> bool:
    """Whether the shared supervisor is running (its warm bridge and rules are then its own)."""
    from edu_runtime.life import client

    return bool(client.running_pid())


def _theirs(item: str, ids: set[str]) -> bool:
    return any(cid in item or f"eth{cid[:8]}" in item for cid in ids)


def leaks(before: dict[str, set[str]], after: dict[str, set[str]] | None = None, *,
          mine: set[str] = frozenset()) -> dict[str, list[str]]:
    """What ``after`` (default: now) has that ``before`` had not, kind by kind; empty kinds
    left out. Objects of containers others are running now are not counted, unless their id
    is in ``mine``; nor is a live supervisor with its warm bridge and rules."""
    after = snapshot() if after is None else after
    foreign = others() - set(mine)
    warm = supervisor_alive()
    out = {}
    for kind in KINDS:
        new = sorted(after[kind] - before[kind])
        new = [i for i in new if not _theirs(i, foreign)]
        if warm:
            new = [i for i in new if not (
                (kind == "processes" and "edu_runtime.life.supervisor" in i)
                or (kind == "links" and i.startswith("edu"))
                or (kind in ("nft", "iptables") and "edu:" not in i)
                or (kind == "run dir" and i.startswith("supervisor")))]
        if new:
            out[kind] = new
    return out


def wait_clean(before: dict[str, set[str]], *, mine: set[str] = frozenset(),
               timeout: float = 30.0) -> dict[str, list[str]]:
    """``leaks``, once they are gone or ``timeout`` has passed (a killed process's teardown by
    the kernel, such as a netns whose last process is being reaped, is not instant)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        found = leaks(before, mine=mine)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)
