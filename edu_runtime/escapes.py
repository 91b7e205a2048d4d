"""The escape suite: one harmless attempt per isolation layer, run inside a container.

A container is a process on the host's one kernel, walled in by several layers, each of which
a real attack has had to get past: the pid and mount namespaces (what it can see), the
capabilities (which privileged operations root may try), the seccomp filter (which syscalls
reach the kernel at all), masked and read-only paths (/proc and /sys files that talk to the
host's kernel), and, for device nodes, nodev mounts (edu) or the devices cgroup (Docker). This
module tries one thing per layer, from inside a container, and names the layer that said no.

Every attempt is harmless by construction: it stops before any effect, or asks for something
the kernel refuses *after* the permission checks. The clock is set to an invalid time zone
(settimeofday checks CAP_SYS_TIME first, then the range: EINVAL, nothing set); the module
loaded is empty; the mount asks for a filesystem type that does not exist; files are opened
for writing and closed unwritten; the process ptraced or signalled (with signal 0) is a
``sleep`` the suite starts itself; a device node is opened, never read.

The layer is read from evidence, not assumed: the errno, the container's CapEff, its
``Seccomp:`` mode and what Docker's profile answers for that syscall with those capabilities
(``seccomp.applicable_rules``), and the mount the path lives on (mountinfo). An attempt whose
defence is removed (the *control*: ``--cap-add SYS_TIME``, ``--security-opt
seccomp=unconfined``, ``--pid host``, or no container at all) must then succeed or fail
differently: that shows the attempt was real, and which layer held it.

Each attempt runs in an edu container and, where dockerd answers, in a Docker container of the
same image beside it (``docker_tag``: the caller loads edu's image into Docker). Two more
places must hold the same (``via_exec``, and running it as an ordinary user):

* **exec.** ``edu exec`` (and ``docker exec``) makes a new process in a running container.
  It must take on everything PID 1 holds (namespaces, cgroup, capabilities, seccomp filter,
  no_new_privs, user); if it missed one, the attempts would get through that gap. So the
  suite runs again through exec, and each run reports what the process holds beside what the
  container's PID 1 holds (``Result.evidence``).
* **rootless.** Run by a user other than root, the container is rootless: its root is that
  user outside, in a user namespace, and the namespace is one more layer. Capabilities held
  in it count only for what it owns (a device node is the initial namespace's), and a file
  of the host's root has no owner inside (the kernel shows ``nobody``), so root inside is
  refused it before any mount option is read.

Where the host has AppArmor, Docker's docker-default profile is one more layer edu does not
have; a result under it names ``AppArmor (docker-default)`` from the process's label
(``apparmor.py`` lists the profile's rules and what stops the same things in edu).

Introduced in notebooks/10-limits-and-security.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import kernel, seccomp

#: Syscall numbers of the calls libc has no wrapper for, per architecture.
_NR = {"x86_64": {"init_module": 175, "keyctl": 250, "clone3": 435, "open_by_handle_at": 304},
       "aarch64": {"init_module": 105, "keyctl": 219, "clone3": 435,
                   "open_by_handle_at": 265}}


#: The owner the kernel shows for a file whose owner a user namespace does not map (nobody).
OVERFLOW_UID = 65534


@dataclass(frozen=True)
class Attempt:
    """One escape attempt: what it tries, the code run in the container, and its control."""

    name: str
    layer: str                  # the isolation layer it tests, in words
    what: str                   # what it tries, one line
    code: str                   # Python run in a child process in the container; calls res()
    syscall: str | None = None  # the syscall whose seccomp answer is evidence
    cap: str | None = None      # the capability the kernel checks for it
    control: dict[str, Any] = field(default_factory=dict)  # edu kwargs, or {"host": True}
    docker_control: tuple[str, ...] = ()                   # docker run flags for the control


ATTEMPTS: tuple[Attempt, ...] = (
    Attempt("host-pids", "host PIDs", "signal 0 to a host process, by its host PID",
            "n = sum(p.isdigit() for p in os.listdir('/proc'))\n"
            "res(call(libc.kill, T['pid'], 0), f'sees {n} processes')",
            syscall="kill", cap="CAP_KILL", control={"pid": "host"},
            docker_control=("--pid", "host")),
    Attempt("ptrace", "host PIDs", "ptrace(PTRACE_ATTACH) a host process",
            "e = call(libc.ptrace, 16, T['pid'], None, None)\n"
            "if e == 0: libc.ptrace(17, T['pid'], None, None)\n"
            "res(e)", syscall="ptrace", cap="CAP_SYS_PTRACE", control={"pid": "host"},
            docker_control=("--pid", "host")),
    Attempt("proc1-root", "host root", "the host's / through /proc/1/root",
            "a, b = os.stat('/proc/1/root/'), os.stat('/')\n"
            "own = (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)\n"
            "res(0, 'PID 1 is the container\\'s own: /proc/1/root is this /' if own else\n"
            "    'reached another root', blocked=own, own_root=own)",
            cap="CAP_SYS_PTRACE", control={"pid": "host"}, docker_control=("--pid", "host")),
    Attempt("open-by-handle", "host root", "open_by_handle_at (the 'Shocker' fd trick)",
            "class FH(ctypes.Structure):\n"
            "    _fields_ = [('n', ctypes.c_uint), ('t', ctypes.c_int),\n"
            "                ('f', ctypes.c_ubyte * 8)]\n"
            "fd = os.open('/', os.O_RDONLY)\n"
            "res(sysc('open_by_handle_at', fd, ctypes.byref(FH(8, 1)), 0))",
            syscall="open_by_handle_at", cap="CAP_DAC_READ_SEARCH",
            control={"cap_add": ["DAC_READ_SEARCH"]},
            docker_control=("--cap-add", "DAC_READ_SEARCH")),
    Attempt("mount", "mount", "mount a filesystem",
            "os.makedirs('/mnt', exist_ok=True)\n"
            "res(call(libc.mount, b'none', b'/mnt', b'edu-no-such-fs', 0, None))",
            syscall="mount", cap="CAP_SYS_ADMIN", control={"cap_add": ["SYS_ADMIN"]},
            docker_control=("--cap-add", "SYS_ADMIN")),
    Attempt("module", "module load", "init_module with an empty module",
            "res(sysc('init_module', ctypes.create_string_buffer(1), 0, b''))",
            syscall="init_module", cap="CAP_SYS_MODULE", control={"cap_add": ["SYS_MODULE"]},
            docker_control=("--cap-add", "SYS_MODULE")),
    Attempt("clock", "clock", "settimeofday (an invalid zone: checked after the permission)",
            "class TZ(ctypes.Structure):\n"
            "    _fields_ = [('w', ctypes.c_int), ('d', ctypes.c_int)]\n"
            "res(call(libc.settimeofday, None, ctypes.byref(TZ(100000, 0))))",
            syscall="settimeofday", cap="CAP_SYS_TIME", control={"cap_add": ["SYS_TIME"]},
            docker_control=("--cap-add", "SYS_TIME")),
    Attempt("userns", "unshare", "unshare(CLONE_NEWUSER): a user namespace of its own",
            "res(call(libc.unshare, 0x10000000))", syscall="unshare",
            control={"seccomp": False}, docker_control=("--security-opt", "seccomp=unconfined")),
    Attempt("clone3", "unshare", "clone3 (its flags hide in memory, out of seccomp's sight)",
            "res(sysc('clone3', None, 0))", syscall="clone3",
            control={"seccomp": False}, docker_control=("--security-opt", "seccomp=unconfined")),
    Attempt("keyctl", "keyctl", "keyctl: the kernel's keyrings, shared by every container",
            "res(sysc('keyctl', 0, -3, 0))", syscall="keyctl",
            control={"seccomp": False}, docker_control=("--security-opt", "seccomp=unconfined")),
    Attempt("mknod", "devices", "mknod a block device for a host disk, then open it",
            "node = T['tmp'] + '/edu-escape-blk'\n"
            "try:\n"
            "    os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(*T['blk']))\n"
            "except OSError as e:\n"
            "    res(e.errno, 'mknod refused', step='mknod')\n"
            "else:\n"
            "    try:\n"
            "        os.close(os.open(node, os.O_RDONLY))\n"
            "        res(0, 'opened the host disk (nothing read)', step='open')\n"
            "    except OSError as e:\n"
            "        res(e.errno, 'made the node; open refused', step='open',\n"
            "            mount=mount_of(node))\n"
            "    finally:\n"
            "        os.unlink(node)",
            syscall="mknodat", cap="CAP_MKNOD", control={"host": True}),
    Attempt("masked", "masked paths", "read a masked /proc file (kernel timers, keys)",
            "p = T['masked']\n"
            "data = open(p, 'rb').read(64)\n"
            "m = mount_of(p)\n"
            "masked = not data and m[0] == p and (m[1] == '/null' or m[3] == 'tmpfs')\n"
            "res(0, f'read {len(data)} bytes of {p}', blocked=not data, masked=masked, mount=m)",
            control={"host": True}, docker_control=("--security-opt", "systempaths=unconfined")),
    Attempt("proc-write", "read-only paths", "open a /proc/sys file for writing",
            "p = T['procsys']\n"
            "try:\n"
            "    os.close(os.open(p, os.O_WRONLY))\n"
            "    res(0, f'{p} opened for writing (nothing written)')\n"
            "except OSError as e:\n"
            "    res(e.errno, p, mount=mount_of(p), owner=os.stat(p).st_uid)",
            control={"host": True}, docker_control=("--security-opt", "systempaths=unconfined")),
    Attempt("sys-write", "/sys writes", "open a /sys file for writing",
            "p = T['sysfs']\n"
            "try:\n"
            "    os.close(os.open(p, os.O_WRONLY))\n"
            "    res(0, f'{p} opened for writing (nothing written)')\n"
            "except OSError as e:\n"
            "    res(e.errno, p, mount=mount_of(p), owner=os.stat(p).st_uid)",
            control={"host": True}),
)

#: The program run in the container: evidence first, then each attempt in a child process
#: of its own (so a control's new user namespace or ptrace ends with it), one JSON line each.
SCRIPT = r"""
import ctypes, json, os, stat, sys
T = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
def call(fn, *a):
    ctypes.set_errno(0)
    a = [ctypes.c_long(x) if isinstance(x, int) else x for x in a]
    return ctypes.get_errno() if fn(*a) == -1 else 0
def sysc(name, *a):
    return call(libc.syscall, T['nr'][name], *a)
def mount_of(path):
    best = ('', '', '', '')
    for line in open('/proc/self/mountinfo'):
        f = line.split()
        mp = f[4]
        if (path == mp or path.startswith(mp.rstrip('/') + '/')) and len(mp) >= len(best[0]):
            best = (mp, f[3], f[5], line.split(' - ')[1].split()[0])
    return best
def held(p):
    # What a process holds: the fields exec must copy from PID 1 (each read may be refused).
    out = {}
    try:
        st = dict(l.split(':', 1) for l in open(f'/proc/{p}/status') if ':' in l)
        out.update({k: ' '.join(st[k].split()) for k in KEYS if k in st})
    except OSError:
        pass
    out['ns'] = {}
    for n in ('cgroup', 'ipc', 'mnt', 'net', 'pid', 'user', 'uts'):
        try:
            out['ns'][n] = os.readlink(f'/proc/{p}/ns/{n}')
        except OSError:
            pass
    try:
        out['cgroup'] = ' '.join(sorted(open(f'/proc/{p}/cgroup').read().split()))
    except OSError:
        pass
    return out
def lsm_label():
    for f in ('/proc/self/attr/apparmor/current', '/proc/self/attr/current'):
        try:
            return open(f).read().strip().rstrip('\0')
        except OSError:
            pass
    return ''
KEYS = ('CapEff', 'CapPrm', 'CapBnd', 'Seccomp', 'Seccomp_filters', 'NoNewPrivs', 'Uid', 'Gid')
st = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l)
print(json.dumps({'evidence': {'CapEff': st['CapEff'].strip(), 'Seccomp': st['Seccomp'].strip(),
                               'uid': os.getuid(),
                               'uid_map': ' '.join(open('/proc/self/uid_map').read().split()),
                               'label': lsm_label(),
                               'self': held('self'), 'pid1': held(1)}}),
      flush=True)
for name, code in T['attempts']:
    pid = os.fork()
    if pid == 0:
        out = {'name': name}
        def res(err, detail='', blocked=None, **kw):
            out.update(errno=err, detail=detail, blocked=err != 0 if blocked is None else blocked,
                       **kw)
        try:
            exec(code, {**globals(), 'res': res})
        except OSError as e:
            out.update(errno=e.errno, detail=str(e), blocked=True)
        except Exception as e:
            out.update(errno=None, detail=repr(e), blocked=True, broken=True)
        print(json.dumps(out), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
"""


@dataclass(frozen=True)
class Result:
    """One attempt in one runtime and configuration, with the layer that stopped it."""

    attempt: str
    runtime: str          # edu, docker or host
    config: str           # "default", or the control's flags
    blocked: bool
    errno: str            # EPERM, ENOSYS, ... ("" when it worked or no errno applies)
    layer: str            # what stopped it, from the evidence ("" when it worked)
    detail: str
    #: What the process held (CapEff, Seccomp, NoNewPrivs, Uid, namespaces, cgroup) beside
    #: what the container's PID 1 holds: exec must hold the same.
    evidence: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self, evidence: bool = False) -> dict[str, Any]:
        """JSON-ready (with ``evidence``, what the process held too)."""
        out = asdict(self)
        if not evidence:
            del out["evidence"]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        """The inverse of ``to_dict``."""
        return cls(**d)


# ---- what to aim at, on this host -----------------------------------------------------------

def _first(paths: list[str], ok) -> str:
    """The first path that is ``ok``; else (a user who may open none of them) the first that
    exists; else the first."""
    return next((p for p in paths if ok(p)), next((p for p in paths if os.path.exists(p)),
                                                  paths[0]))


def _writable(path: str) -> bool:
    try:
        os.close(os.open(path, os.O_WRONLY))  # opened and closed: nothing is written
        return True
    except OSError:
        return False


def _block_device() -> tuple[int, int]:
    """A block device this host's root can open (read-only, nothing read): major, minor."""
    base = Path("/sys/dev/block")
    for entry in sorted(base.iterdir()) if base.is_dir() else []:
        major, _, minor = entry.name.partition(":")
        dev = Path("/dev") / entry.resolve().name
        try:
            os.close(os.open(dev, os.O_RDONLY | os.O_NONBLOCK))
            return int(major), int(minor)
        except OSError:
            continue
    return 7, 0  # loop0: there on most hosts


def targets(sleeper_pid: int, tmp: str = "/tmp") -> dict[str, Any]:
    """What the attempts aim at here: a host process, the first masked, /proc/sys and /sys
    files this kernel has, a block device the host can open, syscall numbers."""
    return {
        "pid": sleeper_pid, "tmp": tmp, "blk": list(_block_device()),
        "nr": _NR.get(os.uname().machine, _NR["x86_64"]),
        "masked": _first(["/proc/kcore", "/proc/timer_list", "/proc/keys"], os.path.exists),
        "procsys": _first(["/proc/sysrq-trigger", "/proc/sys/kernel/sysrq",
                           "/proc/sys/vm/drop_caches", "/proc/sys/kernel/panic"], _writable),
        "sysfs": _first(["/sys/kernel/uevent_helper",
                         "/sys/kernel/mm/transparent_hugepage/enabled",
                         "/sys/kernel/profiling", "/sys/power/state"], _writable),
    }


# ---- the layer, from the evidence -----------------------------------------------------------

def seccomp_answer(syscall: str, caps: set[str]) -> int | None:
    """What Docker's default profile answers for ``syscall`` with ``caps``: None for allow,
    else the errno (EPERM for a syscall it does not name, ENOSYS for clone3)."""
    profile = json.loads(seccomp.DEFAULT_PROFILE.read_text())
    answer: int | None = errno.EPERM
    for rule in seccomp.applicable_rules(profile, caps):
        if syscall in rule.get("names", ()):
            if rule.get("action") == "SCMP_ACT_ALLOW":
                return None
            answer = rule.get("errnoRet") or errno.EPERM
    return answer


def layer(attempt: Attempt, out: dict[str, Any], evidence: dict[str, Any]) -> str:
    """The layer that stopped ``attempt``, from its result ``out`` and the container's
    evidence (CapEff, Seccomp mode): "" when nothing did."""
    if not out.get("blocked"):
        return ""
    err = out.get("errno") or 0
    caps = set(kernel.decode_caps(evidence.get("CapEff", "0")))
    if evidence.get("Seccomp") == "2" and attempt.syscall and err:
        answer = seccomp_answer(attempt.syscall, caps)
        if answer is not None and err == answer:
            return "seccomp" + (" (ENOSYS)" if err == errno.ENOSYS else "")
    mount = out.get("mount") or ("", "", "", "")
    if err == errno.ESRCH or out.get("own_root"):
        return "pid namespace"
    if err == errno.EROFS:
        return "read-only sysfs" if mount[3] == "sysfs" else f"read-only mount ({mount[0]})"
    if out.get("masked"):
        return "masked path"
    if attempt.cap and attempt.cap not in caps and err in (errno.EPERM, errno.EACCES):
        return f"capability {attempt.cap}"
    # Rootless: capabilities held in a user namespace count only for what that namespace
    # owns; the host's clock, modules and devices belong to the initial one.
    mapped = evidence.get("uid_map", "0 0 4294967295")
    if attempt.cap and mapped != "0 0 4294967295" and err in (errno.EPERM, errno.EACCES):
        return f"user namespace ({attempt.cap} counts only inside it)"
    # A file of the host's root has no owner in a user namespace that does not map uid 0:
    # the kernel shows it as the overflow uid, and root inside is not its owner.
    if mapped != "0 0 4294967295" and err == errno.EACCES and out.get("owner") == OVERFLOW_UID:
        return "user namespace (host root's file, owned by nobody here)"
    if attempt.name == "mknod" and out.get("step") == "open":
        if err == errno.EACCES and "nodev" in mount[2].split(","):
            return "nodev mount"
        if err == errno.EPERM:
            return "devices cgroup"
    # AppArmor answers EACCES after every other check has passed (apparmor.py).
    profile = evidence.get("label", "").split(" (")[0]
    if err in (errno.EACCES, errno.EPERM) and profile not in ("", "unconfined"):
        return f"AppArmor ({profile})"
    if err == errno.ENOSYS:
        return "not in this kernel"
    if err:  # every guard let it through: the kernel itself refused the harmless argument
        return f"none: past every guard ({errno.errorcode.get(err, err)} for the bad argument)"
    return "not reached"


# ---- running them ---------------------------------------------------------------------------

def _parse(text: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    evidence: dict[str, Any] = {}
    results = {}
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        item = json.loads(line)
        if "evidence" in item:
            evidence = item["evidence"]
        else:
            results[item["name"]] = item
    return evidence, results


def _argv(attempts: list[Attempt], tgt: dict[str, Any]) -> list[str]:
    return ["python3", "-c", SCRIPT,
            json.dumps({**tgt, "attempts": [[a.name, a.code] for a in attempts]})]


def container_names(prefix: str = "escape") -> list[str]:
    """Every container name the suite may use (edu's and Docker's), so a lesson can note
    them before they are made."""
    configs = sorted({_config_name(a.control) for a in ATTEMPTS if not a.control.get("host")})
    return [f"{prefix}-{runtime}-{c}" for runtime in ("edu", "docker")
            for c in ["default", *configs, "systempaths", "exec"]]


def _config_name(control: dict[str, Any]) -> str:
    if control.get("pid"):
        return "pid-host"
    if control.get("seccomp") is False:
        return "unconfined"
    return "cap-" + "-".join(c.lower().replace("_", "") for c in control.get("cap_add", []))


def _edu_runtime() -> str:
    """An edu container made by root is "edu"; made by anyone else, it is rootless: a user
    namespace maps its root to that user, which is one more layer."""
    return "edu" if os.geteuid() == 0 else "rootless"


def _run_edu(image: str, attempts: list[Attempt], tgt: dict[str, Any], name: str,
             control: dict[str, Any]) -> str:
    from .container import Container
    from .steps import StepError

    with tempfile.TemporaryFile() as out:
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            Container(image, _argv(attempts, tgt), name=name, remove=True, network="none",
                      stdio=(devnull, out.fileno(), out.fileno()), **control).run()
        except StepError as exc:  # the container could not be made: each attempt "not run"
            return f"edu run: {exc}"
        finally:
            os.close(devnull)
        out.seek(0)
        return out.read().decode(errors="replace")


def _run_docker(tag: str, attempts: list[Attempt], tgt: dict[str, Any], name: str,
                flags: tuple[str, ...]) -> str:
    done = subprocess.run(["docker", "run", "--rm", "--name", name, "--network", "none",
                           *flags, tag, *_argv(attempts, tgt)],
                          capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr


def _run_edu_exec(image: str, attempts: list[Attempt], tgt: dict[str, Any], name: str
                  ) -> str:
    """The attempts through ``edu exec`` into a running container of ``image`` (its PID 1
    a ``sleep``): exec must enter with what PID 1 holds, so the same layers must stop them."""
    from .container import Container
    from .life import control
    from .steps import StepError

    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        c = Container(image, ["sleep", "300"], name=name, remove=True, network="none",
                      stdio=(devnull, devnull, devnull)).start()
    finally:
        os.close(devnull)
    try:
        return control.exec_run(c.id, _argv(attempts, tgt)).output
    except StepError as exc:
        return f"edu exec: {exc}"
    finally:
        c.kill()
        c.wait()


def _run_docker_exec(tag: str, attempts: list[Attempt], tgt: dict[str, Any], name: str
                     ) -> str:
    started = subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "--network",
                              "none", tag, "sleep", "300"],
                             capture_output=True, text=True, timeout=120)
    try:
        if started.returncode != 0:
            return started.stderr
        done = subprocess.run(["docker", "exec", name, *_argv(attempts, tgt)],
                              capture_output=True, text=True, timeout=120)
        return done.stdout + done.stderr
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def _run_host(attempts: list[Attempt], tgt: dict[str, Any]) -> str:
    with tempfile.TemporaryDirectory(prefix="edu-escape-") as tmp:
        argv = _argv(attempts, {**tgt, "tmp": tmp})
        done = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True,
                              timeout=60)
    return done.stdout + done.stderr


def _results(runtime: str, config: str, attempts: list[Attempt], text: str) -> list[Result]:
    evidence, found = _parse(text)
    out = []
    for a in attempts:
        item = found.get(a.name)
        if item is None:
            out.append(Result(a.name, runtime, config, True, "", "not run",
                              text.strip().splitlines()[-1][:400] if text.strip() else ""))
            continue
        err = item.get("errno") or 0
        out.append(Result(a.name, runtime, config, bool(item.get("blocked")),
                          errno.errorcode.get(err, str(err)) if err else "",
                          layer(a, item, evidence), str(item.get("detail", "")),
                          {k: evidence[k] for k in ("self", "pid1") if k in evidence}))
    return out


def run(image: str = "python", docker_tag: str | None = None, controls: bool = False,
        prefix: str = "escape", only: list[str] | None = None, edu: bool = True,
        via_exec: bool = False) -> list[Result]:
    """Run every attempt (or ``only`` those named) in an edu container of ``image`` (unless
    not ``edu``) and, with ``docker_tag`` (the same image loaded into Docker), in a Docker
    container beside it. With ``controls``, each attempt again with its defence removed.
    With ``via_exec``, each attempt also through ``edu exec`` (and ``docker exec``) into a
    running container: runtimes "edu exec" and "docker exec". Run by a user other than root,
    edu's containers are rootless: runtimes "rootless" and "rootless exec". Nothing is left
    behind: the containers are --rm, the target process is killed, temp files go."""
    attempts = [a for a in ATTEMPTS if only is None or a.name in only]
    me = _edu_runtime()
    sleeper = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        tgt = targets(sleeper.pid)
        results = []
        if edu:
            results += _results(me, "default", attempts,
                                _run_edu(image, attempts, tgt, f"{prefix}-edu-default", {}))
        if docker_tag:
            results += _results("docker", "default", attempts, _run_docker(
                docker_tag, attempts, tgt, f"{prefix}-docker-default", ()))
        if via_exec and edu:
            results += _results(f"{me} exec", "default", attempts, _run_edu_exec(
                image, attempts, tgt, f"{prefix}-edu-exec"))
        if via_exec and docker_tag:
            results += _results("docker exec", "default", attempts, _run_docker_exec(
                docker_tag, attempts, tgt, f"{prefix}-docker-exec"))
        if controls:
            results += _controls(image, docker_tag, attempts, tgt, prefix, edu)
        return results
    finally:
        sleeper.kill()
        sleeper.wait()


def _flags(control: dict[str, Any]) -> str:
    if control.get("host"):
        return "no container (the host)"
    if control.get("pid"):
        return "--pid host"
    if control.get("seccomp") is False:
        return "--security-opt seccomp=unconfined"
    return " ".join(f"--cap-add {c}" for c in control.get("cap_add", []))


def _controls(image: str, docker_tag: str | None, attempts: list[Attempt],
              tgt: dict[str, Any], prefix: str, edu: bool = True) -> list[Result]:
    results: list[Result] = []
    groups: dict[str, list[Attempt]] = {}
    for a in attempts:
        groups.setdefault(json.dumps(a.control, sort_keys=True), []).append(a)
    host_needed = []
    for key, group in sorted(groups.items()) if edu else ():
        control = json.loads(key)
        if control.get("host"):
            host_needed += group
            continue
        name = _config_name(control)
        results += _results(_edu_runtime(), _flags(control), group, _run_edu(
            image, group, tgt, f"{prefix}-edu-{name}", control))
    if host_needed:
        results += _results("host", _flags({"host": True}), host_needed,
                            _run_host(host_needed, tgt))
    if docker_tag:
        by_flags: dict[tuple[str, ...], list[Attempt]] = {}
        for a in attempts:
            if a.docker_control:
                by_flags.setdefault(a.docker_control, []).append(a)
        for flags, group in sorted(by_flags.items()):
            name = "systempaths" if "systempaths" in " ".join(flags) else \
                _config_name(group[0].control)
            results += _results("docker", " ".join(flags), group, _run_docker(
                docker_tag, group, tgt, f"{prefix}-docker-{name}", flags))
    return results


#: The runtimes a default result can come from, in the order tables show them.
RUNTIMES = ("edu", "docker", "edu exec", "docker exec", "rootless", "rootless exec")


def table(results: list[Result]) -> list[dict[str, str]]:
    """One row per attempt: edu's and Docker's verdicts side by side (default configs),
    and those through exec and in a rootless container where the results have them."""
    rows = []
    by = {(r.attempt, r.runtime, r.config): r for r in results}
    for a in ATTEMPTS:
        if not any((a.name, rt, "default") in by for rt in RUNTIMES):
            continue
        row = {"attempt": a.name, "layer tested": a.layer, "tries": a.what}
        for runtime in RUNTIMES:
            r = by.get((a.name, runtime, "default"))
            if r is not None:
                verdict = f"blocked {r.errno}".strip() if r.blocked else "ALLOWED"
                row[runtime] = f"{verdict}: {r.layer}" if r.layer else verdict
        rows.append(row)
    return rows


#: Where SECURITY.md's table begins and ends (bench/escapes_table.py rewrites what is between).
TABLE_MARKERS = ("<!-- escape-table: generated by bench/escapes_table.py; do not edit -->",
                 "<!-- escape-table: end -->")

#: The column each runtime gets in SECURITY.md's table.
COLUMNS = {"edu": "edu run", "docker": "docker run", "edu exec": "edu exec",
           "docker exec": "docker exec", "rootless": "rootless edu run",
           "rootless exec": "rootless edu exec"}


def cell(r: Result) -> str:
    """One verdict, short: the layer and the errno ("**allowed**" when nothing stopped it)."""
    if not r.blocked:
        return "**allowed**"
    return f"{r.layer} ({r.errno})" if r.errno and r.errno not in r.layer else r.layer


def markdown(results: list[Result]) -> str:
    """The default configurations' verdicts as a Markdown table, one row per attempt and one
    column per runtime present (SECURITY.md's table is this, from a real run)."""
    by = {(r.attempt, r.runtime): r for r in results if r.config == "default"}
    present = [rt for rt in RUNTIMES if any(k[1] == rt for k in by)]
    lines = ["| attempt | tries | " + " | ".join(COLUMNS[rt] for rt in present) + " |",
             "|---|---|" + "---|" * len(present)]
    for a in ATTEMPTS:
        if any((a.name, rt) in by for rt in present):
            cells = [cell(by[(a.name, rt)]) if (a.name, rt) in by else "" for rt in present]
            lines.append(f"| {a.name} | {a.what} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m edu_runtime.escapes``: run the suite here (as root, or rootless as any
    other user) and print one JSON line per result, with its evidence."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m edu_runtime.escapes",
                                 description=main.__doc__.splitlines()[0])
    ap.add_argument("--image", default="python")
    ap.add_argument("--prefix", default="escape")
    ap.add_argument("--exec", dest="via_exec", action="store_true",
                    help="also through edu exec into a running container")
    ap.add_argument("--controls", action="store_true", help="each defence removed in turn")
    args = ap.parse_args(argv)
    for r in run(args.image, controls=args.controls, prefix=args.prefix,
                 via_exec=args.via_exec):
        print(json.dumps(r.to_dict(evidence=True)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
