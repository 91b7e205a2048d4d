"""AppArmor: the one layer Docker adds that edu does not.

On a host whose kernel runs the AppArmor security module (Debian and Ubuntu turn it on by
default), dockerd loads a profile called ``docker-default`` and starts every container under
it. AppArmor is a *mandatory* access control: its rules are checked after the usual
permission checks, and they hold even for a process that has the capability the normal check
asks for. So the profile is a second guard behind namespaces, capabilities, seccomp and the
masked and read-only paths, and the only one that still says no after ``--cap-add
SYS_ADMIN`` (mount) or ``--pid host --cap-add SYS_PTRACE`` (ptrace of a host process).

edu applies no AppArmor profile and no SELinux label, on any host: its containers run with
whatever label the process that made them has (``unconfined`` on an AppArmor host). This
module says so plainly (``EDU_PROFILE`` is None), lists what docker-default adds
(``DOCKER_DEFAULT``, each rule with what stops the same thing in edu), and probes, for real,
whether this host has AppArmor and whether dockerd confines its containers with it.

The rules are Docker's template, ``profiles/apparmor/template.go`` in moby/moby at v20.10.24
(the dockerd this course is tested beside); moby's current template
(``vendor/github.com/moby/profiles/apparmor/template.go``) adds two rules, marked below.

Introduced in notebooks/10-limits-and-security.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

from . import kernel

#: The profile edu applies to its containers: none. (Docker's is "docker-default".)
EDU_PROFILE: str | None = None

#: Where the rules come from.
SOURCE = ("moby/moby v20.10.24, profiles/apparmor/template.go; newer rules: moby/moby main, "
          "vendor/github.com/moby/profiles/apparmor/template.go")


@dataclass(frozen=True)
class Rule:
    """One rule of docker-default: what it stops, and what stops that in an edu container."""

    rule: str                 # as the template writes it
    stops: str                # what a container cannot do because of it
    in_edu: str               # the layer that stops the same thing in edu, or what is left
    #: The escape suite's attempt that shows it, and the layer it names in edu.
    shown_by: tuple[str, str] | None = None
    since: str = "20.10"      # the template that has it


DOCKER_DEFAULT: tuple[Rule, ...] = (
    Rule("deny @{PROC}/* w", "writing files directly in /proc (sysrq-trigger, ...)",
         "read-only /proc/sysrq-trigger; the other writable files need capabilities "
         "(mtrr: CAP_SYS_ADMIN) the container lacks"),
    Rule("deny @{PROC}/{[^1-9],[^1-9][^0-9],...}/** w",
         "writing below /proc directories that are neither a pid nor sys",
         "read-only /proc/bus, /proc/fs, /proc/irq; masked /proc/acpi, /proc/asound, "
         "/proc/scsi; nothing more for the rest (/proc/driver, /proc/tty): no second guard"),
    Rule("deny @{PROC}/sys/[^k]** w", "writing /proc/sys outside kernel/",
         "read-only /proc/sys", ("proc-write", "read-only mount (/proc/sys)")),
    Rule("deny @{PROC}/sys/kernel/{?,??,[^s][^h][^m]**} w",
         "writing /proc/sys/kernel/ except shm*", "read-only /proc/sys",
         ("proc-write", "read-only mount (/proc/sys)")),
    Rule("deny @{PROC}/sysrq-trigger rwklx", "the magic SysRq keys (reboot, crash)",
         "read-only /proc/sysrq-trigger"),
    Rule("deny @{PROC}/kcore rwklx", "the kernel's memory as a core file",
         "masked /proc/kcore", ("masked", "masked path")),
    Rule("deny mount", "every mount, even with --cap-add SYS_ADMIN",
         "seccomp and the missing CAP_SYS_ADMIN; with --cap-add SYS_ADMIN nothing: "
         "the mount reaches the kernel", ("mount", "seccomp")),
    Rule("deny /sys/[^f]*/** wklx (and /sys/f..., /sys/fs/... but /sys/fs/cgroup)",
         "writing /sys", "read-only sysfs", ("sys-write", "read-only sysfs")),
    Rule("deny /sys/firmware/** rwklx", "reading the firmware's tables (ACPI, EFI, DMI)",
         "masked /sys/firmware (an empty read-only tmpfs)"),
    Rule("deny /sys/kernel/security/** rwklx", "the security modules' own files",
         "read-only sysfs; securityfs is not mounted in a new sysfs (rootless with "
         "--network host binds the host's /sys read-only: what the user can read anyway)"),
    Rule("ptrace (trace,read,tracedby,readby) peer=docker-default",
         "ptrace of any process outside the container's profile, even with --pid host "
         "--cap-add SYS_PTRACE",
         "the pid namespace and the missing CAP_SYS_PTRACE; with --pid host --cap-add "
         "SYS_PTRACE nothing", ("ptrace", "pid namespace")),
    Rule("signal (send,receive) peer=docker-default",
         "signals to processes outside the profile, even with --pid host",
         "the pid namespace; with --pid host nothing (root's signals reach host processes)",
         ("host-pids", "pid namespace")),
    Rule("deny /sys/devices/virtual/powercap/** rwklx",
         "the power meters (RAPL: a side channel on what other code computes)",
         "masked /sys/devices/virtual/powercap", since="main"),
    Rule("deny network alg", "AF_ALG sockets (the kernel's crypto API)",
         "nothing: seccomp allows the socket", since="main"),
)


def markdown() -> str:
    """``DOCKER_DEFAULT`` as a Markdown table (SECURITY.md has it)."""
    lines = ["| docker-default rule | what it stops | in edu | template |", "|---|---|---|---|"]
    lines += [f"| `{r.rule}` | {r.stops} | {r.in_edu} | {r.since} |" for r in DOCKER_DEFAULT]
    return "\n".join(lines) + "\n"


# ---- the probe: does this host have AppArmor, and does Docker use it? -----------------------

def _read(path: str) -> tuple[str | None, str]:
    """A file's text, or None and the errno's name."""
    try:
        with open(path) as f:
            return f.read().strip().rstrip("\0"), ""
    except OSError as exc:
        return None, errno.errorcode.get(exc.errno or 0, str(exc))


def label(pid: int | str = "self") -> dict[str, str | None]:
    """The security label of process ``pid`` as the kernel gives it: AppArmor's own file
    (/proc/PID/attr/apparmor/current), then the shared one (attr/current); each value None
    with the errno's name when it cannot be read (EINVAL: no module provides a label)."""
    out: dict[str, str | None] = {}
    for key in ("apparmor/current", "current"):
        value, err = _read(f"/proc/{pid}/attr/{key}")
        out[key] = value
        out[key + " error"] = err or None
    return out


def _lsm_unmounted() -> tuple[str | None, str]:
    """The kernel's list of security modules where securityfs is not mounted: mounted for a
    moment in a mount namespace of its own (unshare -m), which takes the mount with it."""
    import tempfile

    if os.geteuid() != 0:
        return None, "EPERM"
    with tempfile.TemporaryDirectory(prefix="edu-securityfs-") as where:
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               'mount -t securityfs securityfs "$1" && cat "$1/lsm"', "sh",
                               where], capture_output=True, text=True, timeout=30)
    return (done.stdout.strip(), "") if done.returncode == 0 else (None, done.stderr.strip())


def facts() -> dict[str, Any]:
    """Ask the kernel: is securityfs mounted, is the apparmor module loaded and enabled,
    which security modules run, and what label do we have."""
    mounts = kernel.mountinfo()
    enabled, enabled_err = _read("/sys/module/apparmor/parameters/enabled")
    securityfs = any(m["fstype"] == "securityfs" for m in mounts)
    lsm, _ = _read("/sys/kernel/security/lsm") if securityfs else _lsm_unmounted()
    return {
        "securityfs": securityfs,
        "module_enabled": enabled, "module_error": enabled_err or None,
        "apparmorfs": os.path.isdir("/sys/kernel/security/apparmor"),
        "lsm": lsm,
        "label": label("self"),
    }


def judge(f: dict[str, Any]) -> tuple[bool, str]:
    """(whether this host has AppArmor, one sentence saying how we know)."""
    if f.get("module_enabled") == "Y" or f.get("apparmorfs") \
            or "apparmor" in (f.get("lsm") or "").split(","):
        return True, ("AppArmor is on: " + ", ".join(
            w for w, ok in (("/sys/module/apparmor/parameters/enabled is Y",
                             f.get("module_enabled") == "Y"),
                            ("/sys/kernel/security/apparmor exists", f.get("apparmorfs")),
                            (f"the security modules are {f.get('lsm')}",
                             "apparmor" in (f.get("lsm") or "").split(",")))
            if ok))
    why = [f"/sys/module/apparmor/parameters/enabled: {f.get('module_error') or 'N'}"]
    why.append("/sys/kernel/security/apparmor is missing"
               + ("" if f.get("securityfs") else " (securityfs is not even mounted)"))
    if f.get("lsm"):
        why.append(f"the kernel's security modules are {f['lsm']}")
    err = (f.get("label") or {}).get("current error")
    if err:
        why.append(f"/proc/self/attr/current answers {err}: no module gives a label")
    return False, "this host has no AppArmor: " + "; ".join(why)


def docker_facts(image: str, name: str = "edu-apparmor-probe") -> dict[str, Any]:
    """What dockerd does about AppArmor: its SecurityOptions, and for a container of
    ``image`` (run, looked at, removed) the profile ``docker inspect`` names and the label
    the kernel gives its PID 1."""
    info = subprocess.run(["docker", "info", "--format", "{{json .SecurityOptions}}"],
                          capture_output=True, text=True, timeout=60)
    out: dict[str, Any] = {"security_options": json.loads(info.stdout or "null")
                           if info.returncode == 0 else None}
    started = subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "--network",
                              "none", image, "sleep", "60"],
                             capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        out["error"] = started.stderr.strip()
        return out
    try:
        seen = subprocess.run(["docker", "inspect", "--format",
                               "{{.State.Pid}} {{json .AppArmorProfile}}", name],
                              capture_output=True, text=True, timeout=60).stdout.split(" ", 1)
        out["pid_seen"] = int(seen[0]) > 0
        out["profile"] = json.loads(seen[1])
        out["label"] = label(int(seen[0]))
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
    return out


def answer(host: dict[str, Any], docker: dict[str, Any] | None = None) -> str:
    """The suite's answer about AppArmor on this host, in two sentences: does docker-default
    add anything here, and does edu apply a profile (no)."""
    has, why = judge(host)
    edu = ("edu applies no AppArmor profile (nor an SELinux label) to its containers, on "
           "any host.")
    if not has:
        return (f"{why[0].upper()}{why[1:]}. Docker's containers run unconfined here "
                f"(AppArmorProfile {(docker or {}).get('profile', '')!r}), so docker-default "
                f"adds nothing on this host. {edu}")
    profile = (docker or {}).get("profile")
    if profile:
        return (f"{why}. dockerd confines its containers with {profile}: its "
                f"{len(DOCKER_DEFAULT)} rules below are a layer Docker has and edu lacks. "
                f"{edu}")
    return f"{why}, but dockerd applies no profile to its containers. {edu}"
