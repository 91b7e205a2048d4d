"""seccomp: Docker's default profile, compiled here, answers syscalls the way Docker's does.

Each kernel check loads the filter in a forked child (``kernel.in_child``), makes one syscall
and exits with the errno it got, so the pytest process itself is never filtered. Control
runs without a filter show that each answer comes from the filter and not from the kernel.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO, need

from edu_runtime import kernel, seccomp

SYS_CLONE3 = 435     # the same number on every architecture (added in Linux 5.3)
SYS_FCHMODAT2 = 452  # Linux 6.6: newer than every syscall the profile names
AF_VSOCK = 40

PROFILE_SHA256 = "691370acc2e46f4b0e02a0f8ccce1b01be0068740c41ceaaccadeca42b0cf89b"


@pytest.fixture(scope="module")
def profile() -> dict:
    return json.loads(seccomp.DEFAULT_PROFILE.read_text())


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDU_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def docker_bpf(profile) -> bytes:
    return seccomp.compile_profile(profile, seccomp.DOCKER_DEFAULT_CAPS)


@pytest.fixture(scope="module")
def admin_bpf(profile) -> bytes:
    return seccomp.compile_profile(profile, seccomp.DOCKER_DEFAULT_CAPS | {"CAP_SYS_ADMIN"})


def nr(name: str) -> int:
    import pyseccomp

    return pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)


def errno_under(bpf: bytes | None, call) -> int:
    """In a child: load ``bpf`` (if any), run ``call``; 0 if it worked, else its errno."""
    def child() -> int:
        if bpf is not None:
            seccomp.load(bpf)
        call()
        return 0
    return kernel.in_child(child, timeout=30)


def need_root():
    need(os.geteuid() == 0, "loading a seccomp filter without no_new_privs needs root")


# ---- the vendored profile and the pure half -------------------------------------------------

def test_profile_is_moby_default_unchanged(profile):
    raw = seccomp.DEFAULT_PROFILE.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == PROFILE_SHA256  # see edu_runtime/data/README.md
    # moby writes it with Go's json.MarshalIndent(p, "", "\t"): re-encoding gives the same bytes
    assert json.dumps(profile, indent="\t").encode() == raw
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == 1


def test_capabilities_select_entries(profile):
    def by_name(caps):
        out = {}
        for rule in seccomp.applicable_rules(profile, caps, arch="x86_64",
                                             kernel_release="6.1.0"):
            for name in rule["names"]:
                out.setdefault(name, []).append(rule)
        return out

    docker = by_name(seccomp.DOCKER_DEFAULT_CAPS)
    assert "unshare" not in docker and "mount" not in docker and "keyctl" not in docker
    [clone] = docker["clone"]
    assert clone["args"] == [{"index": 0, "value": 0x7E020000, "op": "SCMP_CMP_MASKED_EQ"}]
    assert [(r["action"], r["errnoRet"]) for r in docker["clone3"]] == [("SCMP_ACT_ERRNO", 38)]
    assert "arch_prctl" in docker and "s390_runtime_instr" not in docker  # includes.arches
    assert "ptrace" in docker  # includes.minKernel 4.8
    old = seccomp.applicable_rules(profile, seccomp.DOCKER_DEFAULT_CAPS, "x86_64", "4.4.0")
    assert not any("ptrace" in r["names"] for r in old)

    admin = by_name({"sys_admin"})  # short names are accepted
    assert admin["unshare"][0]["action"] == "SCMP_ACT_ALLOW"
    assert [r["args"] for r in admin["clone"]] == [[]]  # no flag filter with CAP_SYS_ADMIN
    assert "clone3" in admin and admin["clone3"][0]["action"] == "SCMP_ACT_ALLOW"
    # s390x gets clone's flags in its second argument
    s390 = seccomp.applicable_rules(profile, set(), "s390x", "6.1.0")
    assert [r["args"][0]["index"] for r in s390 if r["names"] == ["clone"]] == [1]


def test_compiled_program_is_sane(docker_bpf, admin_bpf):
    for bpf in (docker_bpf, admin_bpf):
        assert len(bpf) % 8 == 0
        assert 100 < len(bpf) // 8 <= kernel.BPF_MAXINSNS
    assert docker_bpf != admin_bpf


def test_unknown_syscall_names_are_skipped(profile):
    base = {"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["getpid", "read"], "action": "SCMP_ACT_ALLOW"}]}
    odd = json.loads(json.dumps(base))
    odd["syscalls"][0]["names"].insert(1, "no_such_syscall_in_any_kernel")
    assert seccomp.compile_profile(odd, set()) == seccomp.compile_profile(base, set())


def test_profile_mistakes_are_sentences():
    bad = {"defaultAction": "SCMP_ACT_ERRNO",
           "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_MAYBE"}]}
    with pytest.raises(ValueError, match="unknown action 'SCMP_ACT_MAYBE'"):
        seccomp.compile_profile(bad, set())
    with pytest.raises(ValueError, match="Unknown architecture"):
        seccomp.compile_profile(bad, set(), arch="pdp11")
    with pytest.raises(ValueError, match="1 to 4096 BPF instructions"):
        seccomp.load(b"abc")
    arg7 = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{
        "names": ["personality"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 7, "value": 8, "op": "SCMP_CMP_EQ"}]}]}
    with pytest.raises(ValueError, match="'personality' was refused by libseccomp"):
        seccomp.compile_profile(arg7, set())


def test_two_conditions_on_one_argument_mean_either():
    # runc's rule: conditions on the same argument become separate rules (OR), since one
    # rule ANDs its conditions and "a0 == 8 and a0 == 0x20008" could never match.
    either = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{
        "names": ["personality"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                 {"index": 0, "value": 0x20008, "op": "SCMP_CMP_EQ"}]}]}
    pfc = seccomp.pseudo_code(either, set(), arch="x86_64")
    rule = pfc[pfc.index('"personality"'):pfc.index("# default action")]
    assert rule.count("action ALLOW") == 2
    assert "$a0.lo32 == 8" in rule and "$a0.lo32 == 131080" in rule


def test_other_architecture_compiles(profile):
    audit_arch = {"aarch64": 0xC00000B7, "x86_64": 0xC000003E}
    for arch, value in audit_arch.items():
        bpf = seccomp.compile_profile(profile, seccomp.DOCKER_DEFAULT_CAPS, arch=arch)
        assert len(bpf) % 8 == 0
        # the program starts by checking seccomp_data.arch against this AUDIT_ARCH_* value
        assert struct.pack("=I", value) in bpf[:64]


# ---- the filter in a real process -----------------------------------------------------------

def test_blocked_calls_get_docker_errnos(docker_bpf):
    need_root()
    keyctl = nr("keyctl")
    checks = [
        # (what, call, errno without the filter, errno with it)
        ("keyctl (not in the allowlist)", lambda: kernel.syscall(keyctl, 0), None, errno.EPERM),
        ("unshare(CLONE_NEWUSER)", lambda: kernel.unshare(kernel.CLONE_NEWUSER), 0,
         errno.EPERM),
        ("clone3", lambda: kernel.syscall(SYS_CLONE3, 0, 0), errno.EINVAL, errno.ENOSYS),
        ("socket(AF_VSOCK)", lambda: os.close(kernel.syscall(nr("socket"), AF_VSOCK, 1, 0)),
         None, errno.EPERM),
        ("getpid", os.getpid, 0, 0),
        ("socket(AF_UNIX)", lambda: os.close(kernel.syscall(nr("socket"), 1, 1, 0)), 0, 0),
        ("fork (clone without namespace flags)", _fork_and_reap, 0, 0),
    ]
    for what, call, without, with_filter in checks:
        got = errno_under(docker_bpf, call)
        assert got == with_filter, f"{what}: {kernel.errno_name(got)} under the filter"
        if without is not None:
            plain = errno_under(None, call)
            assert plain == without, f"{what}: {kernel.errno_name(plain)} without a filter"
            assert plain != with_filter or with_filter == 0


def _fork_and_reap() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 7


def test_newer_syscalls_get_enosys_like_runc(docker_bpf):
    need_root()
    release = tuple(int(x) for x in os.uname().release.split(".")[:2])
    if release < (6, 6):  # the kernel's own ENOSYS would look the same: nothing to prove
        pytest.skip("fchmodat2 needs Linux 6.6")
    # AT_FDCWD, "/", mode 0755, flags -1 (invalid): the kernel itself says EINVAL
    call = lambda: kernel.syscall(SYS_FCHMODAT2, -100, 0, 0o755, -1)  # noqa: E731
    assert errno_under(None, call) in (errno.EINVAL, errno.EFAULT)
    assert errno_under(docker_bpf, call) == errno.ENOSYS


def test_cap_sys_admin_allows_namespaces_again(admin_bpf):
    need_root()
    assert errno_under(admin_bpf, lambda: kernel.unshare(kernel.CLONE_NEWUSER)) == 0
    assert errno_under(admin_bpf, lambda: kernel.syscall(SYS_CLONE3, 0, 0)) == errno.EINVAL


THREADS = textwrap.dedent("""
    import threading
    out = []
    threads = [threading.Thread(target=out.append, args=(i,)) for i in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    print("threads", sorted(out))
""")


def run_under(bpf: bytes, script: str) -> tuple[int, str]:
    """Load ``bpf`` in a child, exec ``python -c script`` there; its exit code and stdout."""
    r, w = os.pipe()

    def child() -> int:
        seccomp.load(bpf)
        os.dup2(w, 1)
        os.execv(sys.executable, [sys.executable, "-c", script])
        return 127

    code = kernel.in_child(child, timeout=60)
    os.close(w)
    with os.fdopen(r) as pipe:
        return code, pipe.read()


def test_threaded_program_runs_under_the_filter(profile, docker_bpf):
    need_root()
    # glibc's pthread_create tries clone3, gets ENOSYS, and falls back to clone.
    assert run_under(docker_bpf, THREADS) == (0, "threads [0, 1, 2, 3]\n")
    # control: were clone3 refused with EPERM, glibc would not fall back and threads fail
    eperm = json.loads(json.dumps(profile))
    [rule] = [r for r in eperm["syscalls"] if r["names"] == ["clone3"]]
    rule["errnoRet"] = errno.EPERM
    code, out = run_under(seccomp.compile_profile(eperm, seccomp.DOCKER_DEFAULT_CAPS), THREADS)
    assert code != 0 and out == ""


def test_observe_from_outside(docker_bpf):
    need_root()
    here = seccomp.observe()  # pytest itself may already run under a filter (a CI container)
    assert here["mode_name"] == seccomp.MODES[here["mode"]]
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: filter, set no_new_privs, report, wait to be released
        try:
            os.close(done_w)  # else the child holds its own release pipe open
            seccomp.no_new_privs()
            seccomp.load(docker_bpf)
            os.write(ready_w, b"1")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        assert os.read(ready_r, 1) == b"1"
        seen = seccomp.observe(pid)
    finally:
        os.close(done_w)
        os.close(ready_r)
        assert kernel.wait_status(pid, timeout=30) == 0
    assert seen == {"mode": 2, "mode_name": "filter", "filters": here["filters"] + 1,
                    "no_new_privs": True}


def test_load_needs_sys_admin_or_no_new_privs(docker_bpf):
    need_root()

    def child() -> int:
        kernel.capset(0, 0, 0)  # drop every capability, keep no_new_privs off
        try:
            seccomp.load(docker_bpf)
        except PermissionError as exc:
            assert "no_new_privs" in str(exc)
            return 13
        return 0

    # where pytest already runs with no_new_privs set, the load is allowed
    assert kernel.in_child(child, timeout=30) == (0 if seccomp.observe()["no_new_privs"] else 13)


# ---- the cache ------------------------------------------------------------------------------

def test_cache_hit_skips_pyseccomp_and_returns_same_bytes(tmp_path, docker_bpf):
    cache = tmp_path / "cache"
    first = seccomp.default_filter()
    assert first == docker_bpf
    files = sorted(p.name for p in (cache / "seccomp").iterdir())
    assert len(files) == 1 and files[0].endswith(".bpf")  # no temp file left behind

    probe = textwrap.dedent("""
        import hashlib, sys, time
        t = time.perf_counter()
        from edu_runtime import seccomp
        bpf = seccomp.default_filter()
        ms = (time.perf_counter() - t) * 1000
        print("pyseccomp" in sys.modules, hashlib.sha256(bpf).hexdigest(), f"{ms:.1f}")
    """)
    env = dict(os.environ, EDU_CACHE_DIR=str(cache))
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=60, check=True)
    imported, digest, ms = run.stdout.split()
    assert imported == "False"
    assert digest == hashlib.sha256(first).hexdigest()
    print(f"cached default_filter in a fresh process: {ms} ms (import included)")

    # control: with an empty cache the same probe does import pyseccomp
    env["EDU_CACHE_DIR"] = str(tmp_path / "empty")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=60, check=True)
    assert run.stdout.split()[0] == "True"


def test_cache_is_keyed_by_caps_and_survives_damage(tmp_path):
    t = time.perf_counter()
    docker = seccomp.default_filter(seccomp.DOCKER_DEFAULT_CAPS)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    assert seccomp.default_filter(set(seccomp.DOCKER_DEFAULT_CAPS)) == docker
    warm = time.perf_counter() - t
    print(f"default_filter: compile {cold * 1000:.1f} ms, cached {warm * 1000:.2f} ms")
    admin = seccomp.default_filter(seccomp.DOCKER_DEFAULT_CAPS | {"SYS_ADMIN"})
    assert admin != docker
    assert len(list((tmp_path / "cache" / "seccomp").glob("*.bpf"))) == 2
    path = seccomp.cache_path(seccomp.DEFAULT_PROFILE.read_bytes(), seccomp.DOCKER_DEFAULT_CAPS)
    path.write_bytes(b"torn")  # not a whole number of instructions: recompiled
    assert seccomp.default_filter() == docker
    assert path.read_bytes() == docker  # and the torn file replaced by a whole one


def test_a_process_remembers_the_program_until_the_profile_or_cached_file_changes(
        tmp_path, monkeypatch, docker_bpf, profile):
    """The supervisor starts many containers: the second start reads and hashes nothing, and
    an edited profile or a rewritten cached file is read again (issue 18)."""
    mine = tmp_path / "profile.json"
    mine.write_text(json.dumps(profile))
    assert seccomp.default_filter(profile_path=mine) == docker_bpf

    def no_reading(*_a, **_k):
        raise AssertionError("read and hashed again")

    with monkeypatch.context() as m:
        m.setattr(seccomp, "cache_path", no_reading)
        assert seccomp.default_filter(profile_path=mine) == docker_bpf

    # The profile edited (ENOSYS for what it refuses): its stamp changed, so it is read again.
    edited = {**profile, "defaultErrnoRet": errno.ENOSYS}
    mine.write_text(json.dumps(edited))
    assert seccomp.default_filter(profile_path=mine) == seccomp.compile_profile(
        edited, seccomp.DOCKER_DEFAULT_CAPS) != docker_bpf

    # The cached file damaged behind the process's back: read again, found torn, recompiled.
    mine.write_text(json.dumps(profile))
    assert seccomp.default_filter(profile_path=mine) == docker_bpf
    cached = seccomp.cache_path(mine.read_bytes(), seccomp.DOCKER_DEFAULT_CAPS)
    cached.write_bytes(b"torn")
    assert seccomp.default_filter(profile_path=mine) == docker_bpf
    assert cached.read_bytes() == docker_bpf
