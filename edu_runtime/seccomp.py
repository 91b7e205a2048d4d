"""Seccomp: the kernel checks every syscall a container makes against a list Docker wrote.

Namespaces decide what a container can *see* and capabilities decide which privileged
operations it may attempt, but every syscall still reaches the host's one shared kernel. A
seccomp filter is a small BPF program the kernel runs on each syscall before doing any work:
it reads the syscall number, the CPU architecture and the arguments, and answers "allow" or
"fail with this errno". It trims the kernel surface a container can touch, so a bug in a rarely
used syscall (keyctl, bpf, userfaultfd, ...) is out of its reach.

Docker's default profile (``data/seccomp-default.json``, vendored unchanged from moby) is an
*allowlist*, not a denylist: the default action is ``SCMP_ACT_ERRNO`` with errno 1, so any
syscall the profile does not name fails with EPERM, "Operation not permitted", and about 350
everyday syscalls are allowed. An allowlist fails safe: a syscall added to Linux next year
is blocked until someone decides it is harmless. Some entries depend on the container's
capabilities: with CAP_SYS_ADMIN, ``mount``, ``unshare``, ``setns`` and a ``clone`` that
creates namespaces are allowed; without it ``clone`` is allowed only with an argument filter
that forbids every CLONE_NEW* flag.

clone3 is the odd one: without CAP_SYS_ADMIN it fails with ENOSYS, "Function not
implemented", not EPERM. clone3 passes its flags in a struct in memory, and a seccomp filter
can only see register arguments, so it cannot check clone3 for namespace flags the way it
checks clone. So the filter blocks clone3 outright. ENOSYS is the answer glibc, Node.js and apt
expect from an older kernel, so they fall back to plain clone, which the filter *can* check.
EPERM would look like a real refusal and make them fail. runc goes further in the same spirit:
syscalls newer than any the profile names get ENOSYS too. This module does the same (see
``compile_profile``).

The work is split the way Docker splits it. ``applicable_rules`` is moby's ``seccomp.go``: it
keeps the entries that apply to these capabilities, this architecture and this kernel.
``compile_profile`` is runc's ``InitSeccomp``: it turns those entries into BPF with libseccomp.
``load`` installs the result through ``kernel.py``. Compiling takes milliseconds and imports
pyseccomp, so ``default_filter`` caches the BPF on disk, and ``edu run`` only reads a file.

Introduced in notebooks/10-limits-and-security.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path

from . import kernel, paths
from .steps import CHILD, Step

DEFAULT_PROFILE = Path(__file__).resolve().parent / "data" / "seccomp-default.json"

# The capabilities `docker run` grants when no --cap-add/--cap-drop is given (moby's
# oci/caps/defaults.go). The profile's includes/excludes are matched against this set.
DOCKER_DEFAULT_CAPS = frozenset({
    "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP",
    "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
})

# `uname -m` -> (the arch name Docker's profile uses in includes/excludes, the libseccomp
# architecture whose archMap entry applies). Docker names arches after Go's GOARCH.
_ARCHES = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "i686": ("x86", "SCMP_ARCH_X86"),
    "i386": ("x86", "SCMP_ARCH_X86"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
}

# Every syscall added since Linux 5.1 has the same number on nearly every architecture (424
# and up; alpha and MIPS add an offset), and Linux 6.18 ends near 470. Numbers between the
# newest syscall the rules name and this bound get ENOSYS (see compile_profile); past it the
# kernel has no syscalls for years to come.
_NEW_SYSCALLS_END = 512

_OPS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
        "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")  # libseccomp's enum values are 1..7, in order

# Bump when compile_profile changes what it produces, so old cached programs are not reused.
_COMPILER_VERSION = "1"

MODES = {0: "disabled", 1: "strict", 2: "filter"}


# ---- Docker's half: which entries apply ----------------------------------------------------

def native_arch() -> str:
    """This machine's architecture as ``uname -m`` names it (``x86_64``, ``aarch64``, ...)."""
    return os.uname().machine


def normalize_caps(caps: set[str] | frozenset[str]) -> frozenset[str]:
    """Capability names in the profile's spelling: ``sys_admin`` becomes ``CAP_SYS_ADMIN``."""
    out = set()
    for cap in caps:
        name = cap.strip().upper()
        out.add(name if name.startswith("CAP_") else "CAP_" + name)
    return frozenset(out)


def _arch_names(arch: str) -> tuple[str, str]:
    for machine, (docker_name, scmp_name) in _ARCHES.items():
        if arch in (machine, docker_name, scmp_name):
            return docker_name, scmp_name
    raise ValueError(
        f"Unknown architecture {arch!r}: seccomp profiles here support "
        f"{', '.join(sorted(_ARCHES))} (as `uname -m` prints them)."
    )


def _version(text: str) -> tuple[int, ...]:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        raise ValueError(f"Cannot read a kernel version from {text!r}; expected e.g. '4.8'.")
    return tuple(int(part or 0) for part in match.groups())


def _matches(filt: dict | None, caps: frozenset[str], docker_arch: str,
             kernel_version: tuple[int, ...], *, include: bool) -> bool:
    # moby's setupSeccomp: an "includes" filter must match in full (every cap present, the
    # arch listed, the kernel new enough); an "excludes" filter drops the entry if *any*
    # one of its conditions matches.
    filt = filt or {}
    checks = []
    if filt.get("arches"):
        checks.append(docker_arch in filt["arches"])
    if filt.get("caps"):
        present = [cap in caps for cap in filt["caps"]]
        checks.append(all(present) if include else any(present))
    if filt.get("minKernel"):
        checks.append(kernel_version >= _version(filt["minKernel"]))
    return all(checks) if include else any(checks)


def applicable_rules(profile: dict, caps: set[str] | frozenset[str],
                     arch: str | None = None, kernel_release: str | None = None,
                     ) -> list[dict]:
    """The profile's syscall entries that apply to ``caps``, ``arch`` and this kernel, in order.

    This is Docker's half of the work (moby ``profiles/seccomp``): ``includes`` and
    ``excludes`` are resolved here, so what is left is what runc compiles.
    """
    docker_arch, _ = _arch_names(arch or native_arch())
    caps = normalize_caps(caps)
    kernel_version = _version(kernel_release or os.uname().release)
    rules = []
    for entry in profile.get("syscalls") or []:
        if entry.get("name") and entry.get("names"):
            raise ValueError("A seccomp profile entry has both 'name' and 'names'; use one.")
        if _matches(entry.get("excludes"), caps, docker_arch, kernel_version, include=False):
            continue
        if not _matches(entry.get("includes"), caps, docker_arch, kernel_version, include=True):
            continue
        rules.append({
            "names": [entry["name"]] if entry.get("name") else list(entry.get("names") or []),
            "action": entry.get("action"),
            "errnoRet": entry.get("errnoRet"),
            "args": list(entry.get("args") or []),
        })
    return rules


def _architectures(profile: dict, scmp_arch: str) -> list[str]:
    # The architectures the filter covers: this one and its archMap sub-architectures
    # (x86_64 brings x86 and x32, so 32-bit programs are filtered too), or a legacy
    # "architectures" list as given.
    if profile.get("architectures") and profile.get("archMap"):
        raise ValueError("A seccomp profile has both 'architectures' and 'archMap'; use one.")
    if profile.get("architectures"):
        return list(profile["architectures"])
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == scmp_arch:
            return [scmp_arch] + list(entry.get("subArchitectures") or [])
    return [scmp_arch]


# ---- runc's half: compile with libseccomp --------------------------------------------------

def _import_pyseccomp():
    try:
        import pyseccomp
    except (ImportError, RuntimeError) as exc:  # pyseccomp raises RuntimeError without the .so
        raise RuntimeError(
            "Compiling a seccomp profile needs the pyseccomp package and the libseccomp "
            "library, and one of them is missing. Fix: `apt install libseccomp2` and "
            f"`pip install pyseccomp` in this environment. ({exc})"
        ) from exc
    return pyseccomp


def _action(sc, name: str, errno_ret: int | None, where: str) -> int:
    # runc's getAction: ERRNO and TRACE return EPERM unless the profile says otherwise.
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return sc.KILL_THREAD
    actions = {
        "SCMP_ACT_KILL_PROCESS": sc.KILL_PROCESS,
        "SCMP_ACT_TRAP": sc.TRAP,
        "SCMP_ACT_ALLOW": sc.ALLOW,
        "SCMP_ACT_LOG": sc.LOG,
        "SCMP_ACT_ERRNO": sc.ERRNO(errno.EPERM if errno_ret is None else errno_ret),
        "SCMP_ACT_TRACE": sc.TRACE(errno.EPERM if errno_ret is None else errno_ret),
    }
    if name == "SCMP_ACT_NOTIFY":
        raise ValueError(
            f"{where} uses SCMP_ACT_NOTIFY, which needs a seccomp agent process listening "
            "for the container's syscalls; edu has none. Use SCMP_ACT_ERRNO or SCMP_ACT_LOG."
        )
    if name not in actions:
        raise ValueError(f"{where} has an unknown action {name!r}; expected one of "
                         f"{', '.join(sorted(actions))}.")
    return actions[name]


def _condition(sc, arg: dict, where: str):
    if arg.get("op") not in _OPS:
        raise ValueError(f"{where} has an unknown comparison {arg.get('op')!r}; expected one "
                         f"of {', '.join(_OPS)}.")
    # For SCMP_CMP_MASKED_EQ, "value" is the mask and "valueTwo" what the masked argument
    # must equal: clone's rule is "flags & (all CLONE_NEW* bits) == 0".
    return sc.Arg(int(arg["index"]), _OPS.index(arg["op"]) + 1, int(arg.get("value", 0)),
                  int(arg.get("valueTwo", 0)))


def _add_rules(sc, flt, rules: list[dict], default: int) -> int:
    # runc's matchCall for each name; returns the newest (highest) native syscall number
    # the rules name, which is where runc's ENOSYS range starts.
    newest = 0
    for rule in rules:
        for name in rule["names"]:
            where = f"The seccomp rule for {name!r}"
            action = _action(sc, rule["action"], rule["errnoRet"], where)
            number = sc.resolve_syscall(sc.Arch.NATIVE, name)
            if number == -1:
                continue  # unknown to this libseccomp: skipped, as Docker and runc do
            newest = max(newest, number)
            if action == default:
                continue  # redundant, and libseccomp refuses a rule equal to the default
            conditions = [_condition(sc, arg, where) for arg in rule["args"]]
            indexes = [int(arg["index"]) for arg in rule["args"]]
            if len(set(indexes)) == len(indexes):
                _add(flt, action, number, conditions, where)
            else:
                # Two conditions on one argument can never both hold in a single rule
                # (libseccomp ANDs them), so runc adds one rule per condition (an OR).
                for cond in conditions:
                    _add(flt, action, number, [cond], where)
    return newest


def _add(flt, action: int, number: int, conditions: list, where: str) -> None:
    try:
        flt.add_rule(action, number, *conditions)
    except OSError as exc:
        if exc.errno == errno.EFAULT:
            return  # none of this filter's architectures has the syscall: nothing to filter
        raise ValueError(f"{where} was refused by libseccomp ({exc.strerror}); check its "
                         "action and its args (index 0-5, a known op).") from exc


def _new_filter(sc, default: int, arches: list[int], rule_count: int):
    flt = sc.SyscallFilter(default)
    native = sc.system_arch()
    for arch in arches:
        if arch != native:
            flt.add_arch(arch)
    if native not in arches:
        flt.remove_arch(native)
    if rule_count > 32:
        # Like runc: a binary tree of syscall numbers instead of one long if-chain keeps
        # the program short and each syscall's check at a few instructions.
        flt.set_attr(sc.Attr.CTL_OPTIMIZE, 2)
    return flt


def _build_filter(profile: dict, caps: set[str] | frozenset[str],
                  arch: str | None, kernel_release: str | None):
    sc = _import_pyseccomp()
    _, scmp_arch = _arch_names(arch or native_arch())
    rules = applicable_rules(profile, caps, arch, kernel_release)
    if "defaultAction" not in profile:
        raise ValueError("The seccomp profile has no 'defaultAction'; Docker requires one.")
    default = _action(sc, profile["defaultAction"], profile.get("defaultErrnoRet"),
                      "The profile's defaultAction")
    arches = []
    for name in _architectures(profile, scmp_arch):
        try:
            arches.append(getattr(sc.Arch, name.removeprefix("SCMP_ARCH_")))
        except AttributeError:
            raise ValueError(f"The seccomp profile names architecture {name!r}, which "
                             "this libseccomp binding does not know.") from None
    count = sum(len(rule["names"]) for rule in rules)
    main_arch = getattr(sc.Arch, scmp_arch.removeprefix("SCMP_ARCH_"))

    # One filter for the main architecture and one for its sub-architectures, merged at the
    # end. Only the main one gets the ENOSYS rules for new syscalls: they are given by
    # number, because this libseccomp may not know their names yet, and a bare number only
    # means something on the native architecture.
    flt = _new_filter(sc, default, [main_arch], count)
    newest = _add_rules(sc, flt, rules, default)
    enosys = sc.ERRNO(errno.ENOSYS)
    # runc skips the ENOSYS range when the default already lets calls through (ALLOW, LOG,
    # or TRACE, whose tracer can answer for itself), or already answers ENOSYS.
    permissive = (default & 0xFFFF0000) in (sc.ALLOW, sc.LOG, sc.TRACE(0)) or default == enosys
    if main_arch == sc.system_arch() and not permissive:
        for number in range(newest + 1, _NEW_SYSCALLS_END):
            _add(flt, enosys, number, [], f"The ENOSYS rule for syscall {number}")
    others = [a for a in arches if a != main_arch]
    if others:
        sub = _new_filter(sc, default, others, count)
        _add_rules(sc, sub, rules, default)
        flt.merge(sub)
    return flt


def compile_profile(profile: dict, caps: set[str] | frozenset[str],
                    arch: str | None = None, kernel_release: str | None = None) -> bytes:
    """Compile a Docker seccomp profile for ``caps`` into a BPF program (bytes) for ``load``.

    ``arch`` defaults to this machine's (``uname -m``); ``kernel_release`` to the running
    kernel's, for ``minKernel``. Follows runc: unknown syscall names are skipped; ERRNO
    without ``errnoRet`` means EPERM; and on the native architecture any syscall newer than
    every one the rules name gets ENOSYS instead of the default EPERM, so programs fall back
    as they would on an older kernel (runc's "ENOSYS stub").
    """
    flt = _build_filter(profile, caps, arch, kernel_release)
    with open(os.memfd_create("edu-seccomp"), "w+b") as out:
        flt.export_bpf(out)
        out.seek(0)
        return out.read()


def pseudo_code(profile: dict, caps: set[str] | frozenset[str],
                arch: str | None = None, kernel_release: str | None = None) -> str:
    """The same filter as ``compile_profile`` in libseccomp's readable pseudo code (PFC)."""
    flt = _build_filter(profile, caps, arch, kernel_release)
    with open(os.memfd_create("edu-seccomp-pfc"), "w+b") as out:
        flt.export_pfc(out)
        out.seek(0)
        return out.read().decode()


# ---- the cache: `edu run` reads a file instead of compiling --------------------------------

def cache_path(profile_bytes: bytes, caps: set[str] | frozenset[str],
               arch: str | None = None) -> Path:
    """Where the compiled program for this profile, caps, arch, kernel and libseccomp lives."""
    key = b"\0".join([
        profile_bytes,
        ",".join(sorted(normalize_caps(caps))).encode(),
        (arch or native_arch()).encode(),
        os.uname().release.encode(),  # minKernel decisions depend on it
        kernel.libseccomp_version().encode(),
        _COMPILER_VERSION.encode(),
    ])
    return paths.cache_dir() / "seccomp" / f"{hashlib.sha256(key).hexdigest()}.bpf"


def _write_atomic(path: Path, data: bytes) -> None:
    # Write beside the target and rename over it: a concurrent `edu run` sees either no
    # file or a whole one, never half a program.
    import tempfile

    paths.ensure(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".bpf")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def default_filter(caps: set[str] | frozenset[str] = DOCKER_DEFAULT_CAPS,
                   profile_path: str | Path = DEFAULT_PROFILE) -> bytes:
    """The compiled program for Docker's default profile (or ``profile_path``) and ``caps``.

    Read from ``paths.cache_dir()/seccomp/`` when cached; compiled (importing pyseccomp) and
    cached otherwise. A cache directory that cannot be written only costs speed. A process
    that starts many containers (the supervisor) keeps what it read, for as long as the
    profile file and the cached file are the ones it read (``_remembered``).
    """
    key = (str(profile_path), _stamp(profile_path), normalize_caps(caps), str(paths.cache_dir()))
    known = _remembered.get(key)
    if known is not None and _stamp(known[0]) == known[1]:
        return known[2]
    profile_bytes = Path(profile_path).read_bytes()
    path = cache_path(profile_bytes, caps)
    try:
        bpf = path.read_bytes()
        if bpf and len(bpf) % 8 == 0:
            return _remember(key, path, bpf)
    except OSError:
        pass
    import json

    bpf = compile_profile(json.loads(profile_bytes), caps)
    try:
        _write_atomic(path, bpf)
    except OSError:
        pass
    return _remember(key, path, bpf)


#: default_filter's answers in this process: (profile, its stamp, caps, cache directory) ->
#: (the cached file, its stamp when read, the program). A profile edited, or a cached file
#: rewritten or damaged, changes its stamp, and the program is read (or compiled) again.
_remembered: dict[tuple, tuple[Path, tuple | None, bytes]] = {}


def _stamp(path: str | Path) -> tuple | None:
    """What changes when a file is replaced or written: device, inode, size, mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _remember(key: tuple, path: Path, bpf: bytes) -> bytes:
    if len(_remembered) >= 16:  # a few cap sets in practice; never grows without bound
        _remembered.clear()
    _remembered[key] = (path, _stamp(path), bpf)
    return bpf


# ---- install and observe -------------------------------------------------------------------

def no_new_privs() -> None:
    """Set no_new_privs (``--security-opt no-new-privileges``): exec can never gain privileges.

    setuid binaries and file capabilities stop working for this process and its children.
    It also lets a process without CAP_SYS_ADMIN load a seccomp filter.
    """
    kernel.set_no_new_privs()


def load(bpf: bytes) -> None:
    """Install ``bpf`` on the calling thread: every later syscall, here and in children, is checked.

    The kernel lets a thread load a filter only if it has CAP_SYS_ADMIN or has set
    no_new_privs; otherwise a filter could trick a setuid program into failing halfway.
    runc therefore loads the filter *before* it drops capabilities, while the container's
    init still holds CAP_SYS_ADMIN, and the capability step comes after this one. Call it
    in the single-threaded child just before exec: other threads of the caller are not
    filtered.
    """
    try:
        kernel.seccomp_set_filter(bpf)
    except OSError as exc:
        if exc.errno == errno.EACCES:
            raise PermissionError(
                errno.EACCES,
                "Loading a seccomp filter was refused: the process has neither "
                "CAP_SYS_ADMIN nor no_new_privs. Load it before dropping capabilities "
                "(as runc does), or call seccomp.no_new_privs() first.",
            ) from exc
        if exc.errno == errno.EINVAL:
            raise OSError(
                errno.EINVAL,
                "The kernel rejected the seccomp program as invalid BPF. Recompile it with "
                "seccomp.compile_profile(); a cached file may be damaged (delete "
                f"{paths.cache_dir() / 'seccomp'}).",
            ) from exc
        raise


def observe(pid: int | str = "self") -> dict:
    """The seccomp state of ``pid`` from /proc/PID/status, decoded for students.

    ``mode`` is 0 (disabled), 1 (strict: only read, write, exit, sigreturn) or 2 (filter:
    BPF programs decide); ``filters`` counts the programs stacked on the process, because
    each exec'd runtime or sandbox can add one but none can be removed.
    """
    status = kernel.proc_status(pid)
    mode = int(status["Seccomp"]) if "Seccomp" in status else None
    return {
        "mode": mode,
        "mode_name": MODES.get(mode, "unknown") if mode is not None else "not in this kernel",
        "filters": int(status.get("Seccomp_filters", 0)),
        "no_new_privs": status.get("NoNewPrivs") == "1",
    }


class Seccomp(Step):
    """Load Docker's default seccomp filter into the container's PID 1."""

    name = "seccomp"
    side = CHILD
    lesson = "notebooks/10-limits-and-security"
    explain = (
        "A seccomp filter is a small BPF program the kernel runs on every system call the "
        "process makes. Docker's default is an allowlist of about 350 calls; everything else "
        "fails with EPERM (keyctl, unshare of a user namespace, kexec_load, ...), and clone3 "
        "gets ENOSYS so that glibc falls back to clone. It is loaded while the child still "
        "holds CAP_SYS_ADMIN, before the capabilities step drops it, as runc does. Filters "
        "are inherited by every child and survive execve. Undo: none is possible; a filter "
        "can only be made stricter, and it goes away with the process.")

    def enabled(self, ctx) -> bool:
        """Skipped with --security-opt seccomp=unconfined."""
        return ctx.seccomp_bpf is not None

    def apply(self, ctx) -> None:
        """no_new_privs if asked, then install the filter compiled on the host."""
        if ctx.config.no_new_privs:
            no_new_privs()
        load(ctx.seccomp_bpf)

    def observe(self, ctx) -> dict:
        """The Seccomp: line of the container's PID 1 (0 none, 2 filter)."""
        return observe(ctx.pid) if ctx.pid else {}
