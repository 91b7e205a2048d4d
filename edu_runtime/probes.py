"""What this host's kernel lets a container runtime do, found by trying it.

``edu doctor`` assembles its report from these probes (and the VM probes in
``vm_compare.probes``). Each probe is two functions: ``facts_X()`` asks the kernel, for real
(a namespace is created, an overlay is mounted), and ``judge_X(facts)`` turns those facts into
a verdict without touching the machine, so the decision logic is tested over injected facts:
pure v2 hosts, rootless users and nested containers that CI's machine is not.

Every probe that changes kernel state does it in a forked child with its own mount
namespace, so a mount or namespace it makes dies with the child, even if doctor is killed.

Introduced in notebooks/00-start-here.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import cgroups, kernel, overlay, paths

PASS, WARN, FAIL = "pass", "warn", "fail"

#: Docker's default capability set (moby oci/caps/defaults.go).
DOCKER_DEFAULT_CAPS = sorted([
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
])

#: The unprivileged user that root's probes switch to ("nobody").
NOBODY = 65534


@dataclass
class ProbeResult:
    """One line of the doctor's report: a verdict, what was found, and the fix."""

    name: str
    status: str
    summary: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    #: A failed critical probe means the course cannot run; others degrade one lesson.
    critical: bool = True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


# ---- kernel -------------------------------------------------------------------------------

def facts_kernel() -> dict[str, Any]:
    """The running kernel's release and machine."""
    return {"release": platform.release(), "machine": platform.machine()}


def _version(release: str) -> tuple[int, int]:
    parts = release.split("-")[0].split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def judge_kernel(f: dict[str, Any]) -> ProbeResult:
    """Linux 5.11 or later has everything the course uses, rootless overlay included."""
    v = _version(f["release"])
    text = f"Linux {f['release']} ({f['machine']})"
    if v >= (5, 11):
        return ProbeResult("kernel", PASS, text, data=f)
    if v >= (4, 18):
        return ProbeResult("kernel", WARN, f"{text}: rootless overlay mounts need 5.11",
                           "Run as root, or use a newer kernel (Debian 12 ships 6.1).", f)
    return ProbeResult("kernel", FAIL, f"{text} is older than 4.18",
                       "Upgrade the kernel to 5.11 or later.", f)


# ---- cgroups ------------------------------------------------------------------------------

def facts_cgroups() -> dict[str, Any]:
    """Cgroup hierarchies from mountinfo and, for each needed controller, a real test."""
    found = cgroups.hierarchies()
    controllers = {}
    for name in cgroups.NEEDED:
        sup = cgroups.controller_support(found, name)
        info = {"usable": sup.usable, "version": sup.version,
                "path": str(sup.path) if sup.path else None, "reason": sup.reason}
        if sup.usable:
            info["created"] = _try_child_cgroup(sup)
            info["usable"] = info["created"] == "ok"
        controllers[name] = info
    return {
        "mode": cgroups.mode(found),
        "hierarchies": [{"version": h.version, "mount_point": str(h.mount_point),
                         "controllers": list(h.controllers)} for h in found],
        "controllers": controllers,
    }


def _try_child_cgroup(sup: cgroups.ControllerSupport) -> str:
    """Make and remove a cgroup where containers would get one: 'ok' or the error."""
    where = Path(sup.path) / f"edu-doctor-{os.getpid()}"
    try:
        where.mkdir()
    except OSError as exc:
        return f"mkdir {where}: {exc.strerror}"
    try:
        if sup.version == 2:
            return "ok"
        files = {"memory": "memory.limit_in_bytes", "pids": "pids.max",
                 "cpu": "cpu.cfs_quota_us"}
        return "ok" if (where / files[sup.name]).exists() else f"no {files[sup.name]}"
    finally:
        where.rmdir()


def judge_cgroups(f: dict[str, Any]) -> ProbeResult:
    """Limits need memory, pids and cpu controllers; without them containers still run."""
    mounts = ", ".join(
        f"{h['mount_point']} (v{h['version']}: {','.join(h['controllers']) or 'no controllers'})"
        for h in f["hierarchies"]) or "none"
    usable = [n for n, c in f["controllers"].items() if c["usable"]]
    missing = [n for n, c in f["controllers"].items() if not c["usable"]]
    where = "; ".join(f"{n}: {c['reason']}" for n, c in f["controllers"].items())
    data = dict(f, summary_mounts=mounts)
    if not missing:
        return ProbeResult("cgroups", PASS, f"{f['mode']}; usable: {', '.join(usable)} ({where}); "
                           "containers get limits, so lesson 10's limits run live", data=data)
    flags = " ".join(cgroups.NEEDED[n] for n in missing)
    if os.geteuid() == 0:
        fix = "Mount the missing controllers (v2: enable them in cgroup.subtree_control)."
    elif f["mode"] == "v2":
        fix = ("Start the lab from a delegated shell: systemd-run --user --scope -p "
               "Delegate=yes bash; or run as root.")
    else:
        fix = ("cgroup v1 cannot be delegated to a user: run as root for limits, or boot "
               "with systemd.unified_cgroup_hierarchy=1 for cgroup v2.")
    lesson = ("" if set(missing).isdisjoint(cgroups.NEEDED) else
              "; lesson 10's limits replay a recording for this user")
    return ProbeResult("cgroups", WARN,
                       f"{f['mode']}; missing {', '.join(missing)}: {flags} will not apply "
                       f"({where}){lesson}", fix, data)


# ---- namespaces ---------------------------------------------------------------------------

def _unshare_and_check(flag: int, rootless: bool) -> int:
    extra = kernel.CLONE_NEWUSER if rootless and flag != kernel.CLONE_NEWUSER else 0
    kernel.unshare(flag | extra)
    if flag == kernel.CLONE_NEWPID:
        # The new pid namespace is for our children: the first one must be its PID 1.
        return kernel.in_child(lambda: 0 if os.getpid() == 1 else 99)
    return 0


def facts_namespaces() -> dict[str, Any]:
    """Create each namespace type in a throwaway child: 'ok' or the errno's name."""
    rootless = os.geteuid() != 0
    out = {}
    for name, flag in sorted(kernel.NAMESPACES.items()):
        code = kernel.in_child(lambda flag=flag: _unshare_and_check(flag, rootless), timeout=10)
        out[name] = "ok" if code == 0 else \
            kernel.errno_name(code) if code > 0 else f"signal {-code}"
    return {"rootless": rootless, "created": out}


def judge_namespaces(f: dict[str, Any]) -> ProbeResult:
    """mnt, pid, uts, ipc (and user, when rootless) are required; net and cgroup degrade."""
    created = f["created"]
    bad = {n: why for n, why in created.items() if why != "ok"}
    required = {"mnt", "pid", "uts", "ipc"} | ({"user"} if f["rootless"] else set())
    if not bad:
        return ProbeResult("namespaces", PASS, "created all 7: " + ", ".join(sorted(created)),
                           data=f)
    text = "; ".join(f"{n}: {why}" for n, why in sorted(bad.items()))
    if required & bad.keys():
        fix = ("Enable unprivileged user namespaces (see the userns line), or run as root."
               if f["rootless"] else "Use a kernel built with CONFIG_NAMESPACES and its options.")
        return ProbeResult("namespaces", FAIL, f"cannot create {text}", fix, f)
    return ProbeResult("namespaces", WARN, f"cannot create {text}",
                       "--network none still works; the missing namespaces are shared with "
                       "the host.", f)


# ---- overlayfs ----------------------------------------------------------------------------

def _fstype_of(path: Path, mounts: list[dict[str, str]]) -> str:
    best, fstype = -1, "unknown"
    for m in mounts:
        point = m["mount_point"]
        if (str(path) == point or str(path).startswith(point.rstrip("/") + "/")) \
                and len(point) > best:
            best, fstype = len(point), m["fstype"]
    return fstype


def _enter_private_mount_ns(rootless: bool) -> None:
    if rootless:
        kernel.enter_user_namespace()
    else:
        kernel.unshare(kernel.CLONE_NEWNS)
    # Make every mount private first, so nothing we mount propagates back to the host.
    kernel.mount("none", "/", None, kernel.MS_REC | kernel.MS_PRIVATE)


def _overlay_mount(base: Path, upper_on_tmpfs: bool, rootless: bool) -> int:
    _enter_private_mount_ns(rootless)
    if upper_on_tmpfs:
        kernel.mount("tmpfs", str(base / "rw"), "tmpfs")
    for d in ("rw/upper", "rw/work"):
        (base / d).mkdir(exist_ok=True)
    opts = overlay.mount_options([base / "lower"], base / "rw/upper", base / "rw/work", rootless)
    kernel.mount("overlay", str(base / "merged"), "overlay", 0, opts)
    (base / "merged" / "new").write_text("x")
    ok = (base / "merged" / "lower-file").read_text() == "lower" and \
        (base / "rw/upper/new").exists()
    return 0 if ok else 99


def facts_overlay() -> dict[str, Any]:
    """Mount an overlay where the image store lives, and, if / is overlay, try nesting."""
    rootless = os.geteuid() != 0
    store = paths.ensure(paths.state_dir())
    mounts = kernel.mountinfo()
    out: dict[str, Any] = {
        "rootless": rootless,
        "store": str(store),
        "store_fstype": _fstype_of(store, mounts),
        "root_fstype": _fstype_of(Path("/"), mounts),
    }
    base = Path(tempfile.mkdtemp(prefix=".doctor-overlay-", dir=store))
    try:
        for d in ("lower", "rw", "merged"):
            (base / d).mkdir()
        (base / "lower" / "lower-file").write_text("lower")
        code = kernel.in_child(lambda: _overlay_mount(base, False, rootless), timeout=10)
        out["direct"] = "ok" if code == 0 else kernel.errno_name(code)
        if code != 0 and out["store_fstype"] == "overlay":
            code = kernel.in_child(lambda: _overlay_mount(base, True, rootless), timeout=10)
            out["upper_on_tmpfs"] = "ok" if code == 0 else kernel.errno_name(code)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


def judge_overlay(f: dict[str, Any]) -> ProbeResult:
    """Containers' root filesystems are overlays; nested overlay needs upper dirs elsewhere."""
    where = f"store {f['store']} on {f['store_fstype']}"
    if f["direct"] == "ok":
        return ProbeResult("overlayfs", PASS, f"overlay mounts work ({where})", data=f)
    if f.get("upper_on_tmpfs") == "ok":
        return ProbeResult(
            "overlayfs", WARN,
            f"/ is overlay (inside a container?): overlay-on-overlay works only with upper "
            f"dirs on tmpfs ({where}: {f['direct']})",
            f"Mount a volume at {f['store']} (docker run -v edu:{f['store']} ...).", f)
    return ProbeResult("overlayfs", FAIL, f"cannot mount an overlay ({where}: {f['direct']})",
                       "Load the overlay module (modprobe overlay), or run as root on "
                       "Linux 5.11+ for rootless overlay.", f)


# ---- unprivileged user namespaces ---------------------------------------------------------

def _userns_as(uid: int) -> int:
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        # Changing uid clears "dumpable", which makes /proc/self/uid_map root's; restore it.
        kernel.prctl(kernel.PR_SET_DUMPABLE, 1)
    try:
        _enter_private_mount_ns(rootless=True)
    except OSError as exc:
        if "unshare" in str(exc):
            return 11 if exc.errno == 28 else 10
        return 12
    try:
        kernel.mount("tmpfs", "/tmp", "tmpfs")
    except OSError:
        return 20  # namespace made, but no capabilities inside it (AppArmor's restriction)
    return 0


USERNS_OUTCOMES = {
    0: "ok",
    10: "unshare(CLONE_NEWUSER) refused (EPERM)",
    11: "no user namespaces left (ENOSPC: user.max_user_namespaces)",
    12: "could not write uid_map or mount in the new namespace",
    20: "namespace made, but no capabilities inside it",
}


def facts_userns() -> dict[str, Any]:
    """Sysctls that gate unprivileged user namespaces, and a real try as an unprivileged uid."""
    uid = NOBODY if os.geteuid() == 0 else os.geteuid()
    code = kernel.in_child(lambda: _userns_as(uid), timeout=10)
    return {
        "tested_uid": uid,
        "outcome": USERNS_OUTCOMES.get(code, f"child exited {code}"),
        "max_user_namespaces": kernel.read("/proc/sys/user/max_user_namespaces"),
        "unprivileged_userns_clone": kernel.read("/proc/sys/kernel/unprivileged_userns_clone"),
        "apparmor_restrict": kernel.read(
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
    }


def judge_userns(f: dict[str, Any]) -> ProbeResult:
    """Rootless containers need unprivileged user namespaces; root does not."""
    root = os.geteuid() == 0
    if f["outcome"] == "ok":
        return ProbeResult("userns", PASS, f"unprivileged user namespaces work "
                           f"(tried as uid {f['tested_uid']})", data=f, critical=not root)
    if f.get("apparmor_restrict") == "1":
        why = "Ubuntu's AppArmor restriction (kernel.apparmor_restrict_unprivileged_userns=1)"
        fix = ("sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or run as "
               "root.")
    elif f.get("unprivileged_userns_clone") == "0":
        why = "kernel.unprivileged_userns_clone=0"
        fix = "sudo sysctl -w kernel.unprivileged_userns_clone=1, or run as root."
    elif f.get("max_user_namespaces") == "0":
        why = "user.max_user_namespaces=0"
        fix = "sudo sysctl -w user.max_user_namespaces=15000, or run as root."
    else:
        why, fix = "unknown cause", "Run as root."
    return ProbeResult("userns", WARN if root else FAIL,
                       f"unprivileged user namespaces unusable: {f['outcome']}; {why}"
                       + (" (root does not need them)" if root else ""), fix, f,
                       critical=not root)


# ---- inside a container? ------------------------------------------------------------------

def facts_container() -> dict[str, Any]:
    """Signs that this machine is itself a container."""
    environ = (kernel.read("/proc/1/environ", "") or "").split("\0")
    cgroup_text = kernel.read("/proc/1/cgroup", "") or ""
    return {
        "dockerenv": os.path.exists("/.dockerenv"),
        "containerenv": os.path.exists("/run/.containerenv"),
        "container_env": next((e.split("=", 1)[1] for e in environ
                               if e.startswith("container=")), None),
        "cgroup_hint": next((w for w in ("docker", "kubepods", "lxc", "libpod", "containerd")
                             if w in cgroup_text), None),
        "uid_map": " ".join((kernel.read("/proc/self/uid_map", "") or "").split()),
        "root_fstype": _fstype_of(Path("/"), kernel.mountinfo()),
        # Kernel threads (children of kthreadd, PID 2) are visible only from the host's
        # initial pid namespace: the strongest sign that we are *not* in a container.
        "kernel_threads_visible": kernel.read("/proc/2/comm") == "kthreadd",
    }


def judge_container(f: dict[str, Any]) -> ProbeResult:
    """Nested containers work, with limits: say so rather than fail mysteriously later."""
    host_pidns = f["kernel_threads_visible"]
    files = [p for p, there in (("/.dockerenv", f["dockerenv"]),
                                ("/run/.containerenv", f["containerenv"])) if there]
    signs = [s for s in (
        "no kernel threads visible (not the host's pid namespace)" if not host_pidns else None,
        *(files if not host_pidns else []),
        f"container={f['container_env']}" if f["container_env"] else None,
        f"cgroup mentions {f['cgroup_hint']}" if f["cgroup_hint"] else None,
        f"user namespace mapped ({f['uid_map']})"
        if f["uid_map"] and f["uid_map"] != "0 0 4294967295" else None,
    ) if s]
    if not signs:
        note = f" ({', '.join(files)} exists, but kernel threads are visible: a machine " \
            "built from a container image)" if files else ""
        return ProbeResult("container", PASS, "not inside a container" + note, data=f)
    return ProbeResult("container", WARN, "running inside a container: " + "; ".join(signs),
                       "Nested containers need their outer container started with "
                       "--cap-add SYS_ADMIN --security-opt seccomp=unconfined and a volume "
                       "for the store, or run the course on a VM or bare metal.", f)


# ---- does PID 1 reap orphans? -------------------------------------------------------------

def _zombies_of(ppid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = kernel.read(f"/proc/{entry}/stat", "") or ""
            fields = stat.rpartition(")")[2].split()
            if len(fields) > 1 and fields[0] == "Z" and fields[1] == str(ppid):
                out.append(int(entry))
    return sorted(out)


REAP_WAIT = 6.0


def _orphan_probe() -> dict[str, Any]:
    """Orphan a process and watch whether whoever adopts it reaps it.

    The orphan reports its new parent through a pipe, then exits. If the adopter does not
    reap it, that one zombie stays until reboot: that is the cost of asking, once per boot.
    """
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.close(r)
        if os.fork() == 0:
            deadline = time.monotonic() + 5
            while os.getppid() == middle and time.monotonic() < deadline:
                time.sleep(0.002)
            os.write(w, f"{os.getpid()} {os.getppid()}".encode())
            os._exit(0)
        os._exit(0)
    os.close(w)
    kernel.wait_status(middle)
    with os.fdopen(r) as pipe:
        orphan, adopter = (int(x) for x in pipe.read().split())
    # Some inits reap on a timer rather than on SIGCHLD (this project's CI machines: about
    # every 2 s), so give it REAP_WAIT seconds before calling the orphan a zombie for good.
    start = time.monotonic()
    while time.monotonic() - start < REAP_WAIT and os.path.exists(f"/proc/{orphan}"):
        time.sleep(0.01)
    reaped = not os.path.exists(f"/proc/{orphan}")
    return {"adopter": adopter,
            "adopter_comm": kernel.read(f"/proc/{adopter}/comm"),
            "reaped": reaped,
            "waited_s": round(time.monotonic() - start, 2)}


def facts_reaping(refresh: bool = False) -> dict[str, Any]:
    """Zombies PID 1 holds for good, or else the orphan probe (the verdict is cached once
    per boot)."""
    cache = paths.cache_dir() / "doctor" / "reaping.json"
    comm = kernel.read("/proc/1/comm")
    if not refresh:
        try:
            cached = json.loads(cache.read_text())
            if cached.get("boot_id") == kernel.boot_id():
                return {"pid1_comm": comm, "pid1_zombies": cached.get("pid1_zombies", 0),
                        "probe": cached.get("probe")}
        except (OSError, ValueError, KeyError):
            pass
    zombies = set(_zombies_of(1))
    # An init that reaps on a timer holds a fresh zombie for a moment (a daemon that just
    # exited): only those still there after REAP_WAIT count, as for the orphan probe.
    deadline = time.monotonic() + REAP_WAIT
    while zombies and time.monotonic() < deadline:
        time.sleep(0.1)
        zombies &= set(_zombies_of(1))
    facts: dict[str, Any] = {"pid1_comm": comm, "pid1_zombies": len(zombies),
                             "probe": None if zombies else _orphan_probe()}
    paths.ensure(cache.parent)
    cache.write_text(json.dumps({"boot_id": kernel.boot_id(), "pid1_zombies": len(zombies),
                                 "probe": facts["probe"]}))
    return facts


def judge_reaping(f: dict[str, Any]) -> ProbeResult:
    """A PID 1 that does not reap leaves every orphan as a zombie: edu reaps its own."""
    comm = f["pid1_comm"]
    fix = ("Nothing to do for edu (its supervisor is a subreaper). Start daemons yourself "
           "under 'tini -s --', as scripts/services.sh does.")
    if f["pid1_zombies"]:
        return ProbeResult("pid1-reaping", WARN,
                           f"PID 1 ({comm}) does not reap orphans: it holds "
                           f"{f['pid1_zombies']} zombie(s)", fix, f, critical=False)
    p = f["probe"] or {}
    who = "PID 1" if p.get("adopter") == 1 else f"subreaper PID {p.get('adopter')}"
    who += f" ({p.get('adopter_comm') if p.get('adopter') != 1 else comm})"
    if p.get("reaped"):
        return ProbeResult("pid1-reaping", PASS, f"orphans are reaped by {who}, within "
                           f"{p.get('waited_s', 0):.1f} s", data=f, critical=False)
    return ProbeResult("pid1-reaping", WARN, f"{who} does not reap orphans (one still a "
                       f"zombie after {p.get('waited_s', REAP_WAIT):.0f} s)", fix, f,
                       critical=False)


# ---- capabilities -------------------------------------------------------------------------

def facts_caps() -> dict[str, Any]:
    """This process's capability bounding set, decoded."""
    return {"bounding": kernel.decode_caps(kernel.proc_status().get("CapBnd", "0"))}


def judge_caps(f: dict[str, Any]) -> ProbeResult:
    """Containers get Docker's default caps, intersected with what the host can give."""
    have = set(f["bounding"])
    missing_default = [c for c in DOCKER_DEFAULT_CAPS if c not in have]
    missing_any = [c for c in kernel.CAPS if c not in have]
    data = dict(f, missing_default=missing_default, missing_any=missing_any)
    if missing_default:
        return ProbeResult("capabilities", WARN,
                           "bounding set lacks Docker defaults: " + ", ".join(missing_default),
                           "Containers will run without these; start the lab from a shell "
                           "with a full bounding set to get them.", data)
    extra = f"; lacks {', '.join(missing_any)} (so docker run --privileged fails here)" \
        if missing_any else ""
    return ProbeResult("capabilities", PASS,
                       f"all {len(DOCKER_DEFAULT_CAPS)} Docker default caps in the bounding set"
                       + extra, data=data)


# ---- peers for side-by-side comparisons ---------------------------------------------------

def _first_line(cmd: list[str]) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout or out.stderr).strip().splitlines()[0] if out.returncode == 0 else None


def _docker_daemon(sock: str = "/var/run/docker.sock") -> str | None:
    """The daemon's version from its API socket, without the docker CLI."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(3)
            s.connect(sock)
            s.sendall(b"GET /version HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        return json.loads(reply.partition(b"\r\n\r\n")[2])["Version"]
    except (OSError, ValueError, KeyError):
        return None


def facts_peers() -> dict[str, Any]:
    """runc and docker, the real runtimes the benchmarks compare against."""
    return {"runc": _first_line(["runc", "--version"]),
            "docker_cli": _first_line(["docker", "--version"]),
            "dockerd": _docker_daemon()}


def judge_peers(f: dict[str, Any]) -> ProbeResult:
    """Comparisons need runc and a running dockerd; without them lessons show recordings."""
    have = f"runc: {f['runc'] or 'missing'}; docker daemon: {f['dockerd'] or 'not reachable'}"
    if f["runc"] and f["dockerd"]:
        return ProbeResult("peers", PASS, have, data=f, critical=False)
    fix = "As root, make lab installs runc and docker.io and starts dockerd " \
          "(scripts/services.sh start docker)."
    return ProbeResult("peers", WARN, have + ": side-by-side comparisons will be skipped",
                       fix, f, critical=False)


#: The runtime probes, in report order.
PROBES = [
    (facts_kernel, judge_kernel),
    (facts_cgroups, judge_cgroups),
    (facts_namespaces, judge_namespaces),
    (facts_overlay, judge_overlay),
    (facts_userns, judge_userns),
    (facts_container, judge_container),
    (facts_reaping, judge_reaping),
    (facts_caps, judge_caps),
    (facts_peers, judge_peers),
]


def run_all() -> list[ProbeResult]:
    """Run every runtime probe; a probe that crashes is reported, not raised."""
    out = []
    for facts, judge in PROBES:
        name = judge.__name__.removeprefix("judge_")
        try:
            out.append(judge(facts()))
        except Exception as exc:  # noqa: BLE001 - doctor must always finish its report
            out.append(ProbeResult(name, FAIL, f"probe crashed: {exc!r}",
                                   "Please report this with the output of edu doctor --json."))
    return out
