"""The escape suite: every attempt blocked in an edu container and in a Docker container of the
same image, by the layer the evidence names, and each control (the defence removed) showing that
the attempt was real: it then works, or fails in another way. Real containers, real dockerd.
"""

from __future__ import annotations

import errno
import subprocess
import tempfile
from pathlib import Path

import pytest

from edu_runtime import escapes

PREFIX = "l10-esct"
DOCKER_TAG = "edu-test-python:latest"

#: The layer that stops each attempt in a default container. Docker refuses the open of a
#: device node in its devices cgroup (EPERM); edu mounts the container's / and /dev nodev
#: (EACCES).
EXPECTED = {
    "host-pids": "pid namespace", "ptrace": "pid namespace", "proc1-root": "pid namespace",
    "open-by-handle": "seccomp", "mount": "seccomp", "module": "seccomp", "clock": "seccomp",
    "userns": "seccomp", "clone3": "seccomp (ENOSYS)", "keyctl": "seccomp",
    "masked": "masked path", "proc-write": "read-only mount (/proc/sys)",
    "sys-write": "read-only sysfs",
}
MKNOD = {"edu": "nodev mount", "docker": "devices cgroup"}


def load_python() -> str:
    """edu's python image in Docker as edu-test-python:latest (kept, as load_base keeps
    edu-test-busybox: loading 160 MB each session would cost seconds)."""
    from edu_runtime.images import archive
    from edu_runtime.images.store import Store

    store = Store()
    image = store.get("python")
    have = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", DOCKER_TAG],
                          capture_output=True, text=True)
    if have.returncode == 0 and have.stdout.strip() == image.id:
        return DOCKER_TAG
    with tempfile.TemporaryDirectory() as tmp:
        out = archive.save(store, [image.id], Path(tmp) / "python.tar")
        subprocess.run(["docker", "load", "-q", "-i", str(out)], check=True,
                       capture_output=True)
    subprocess.run(["docker", "tag", image.id, DOCKER_TAG], check=True)
    return DOCKER_TAG


@pytest.fixture(scope="module")
def results():
    from docker_reference import docker_up

    from edu_runtime.images import bootstrap
    from edu_runtime.images.store import Store

    bootstrap.bootstrap(Store(), "python", progress=False)
    assert docker_up(), "dockerd must answer here: the suite runs beside Docker"
    found = escapes.run("python", docker_tag=load_python(), controls=True, prefix=PREFIX)
    return {(r.attempt, r.runtime, r.config): r for r in found}


@pytest.mark.parametrize("runtime", ["edu", "docker"])
@pytest.mark.parametrize("attempt", [a.name for a in escapes.ATTEMPTS])
def test_blocked_by_the_expected_layer(results, runtime, attempt):
    r = results[(attempt, runtime, "default")]
    assert r.blocked, r
    assert r.layer == (MKNOD[runtime] if attempt == "mknod" else EXPECTED[attempt]), r


@pytest.mark.parametrize("attempt", escapes.ATTEMPTS, ids=lambda a: a.name)
def test_control_shows_the_attempt_is_real(results, attempt):
    """With its defence removed the attempt works, or fails with another errno or layer."""
    controls = [r for (name, runtime, config), r in results.items()
                if name == attempt.name and config != "default"]
    assert controls, f"no control ran for {attempt.name}"
    runtimes = {r.runtime for r in controls}
    assert "docker" in runtimes or attempt.control.get("host")
    assert "edu" in runtimes or "host" in runtimes
    for r in controls:
        default = results[(attempt.name, "edu" if r.runtime == "host" else r.runtime,
                           "default")]
        assert not r.blocked or (r.errno, r.layer) != (default.errno, default.layer), r


def test_controls_say_which_guard_was_next(results):
    # seccomp off, CAP_SYS_PTRACE still missing: the capability is the next guard.
    assert results[("ptrace", "edu", "--pid host")].layer == "capability CAP_SYS_PTRACE"
    assert results[("proc1-root", "docker", "--pid host")].layer == "capability CAP_SYS_PTRACE"
    # With the capability the kernel reaches the (harmless) bad argument, and stops there.
    clock = results[("clock", "edu", "--cap-add SYS_TIME")]
    assert clock.errno == "EINVAL" and clock.layer.startswith("none: past every guard")
    assert not results[("userns", "docker", "--security-opt seccomp=unconfined")].blocked
    assert not results[("host-pids", "edu", "--pid host")].blocked


def test_layer_reads_the_evidence():
    by_name = {a.name: a for a in escapes.ATTEMPTS}
    filtered = {"CapEff": "00000000a80425fb", "Seccomp": "2"}
    unconfined = {**filtered, "Seccomp": "0"}
    eperm = {"blocked": True, "errno": errno.EPERM}
    assert escapes.layer(by_name["mount"], eperm, filtered) == "seccomp"
    assert escapes.layer(by_name["mount"], eperm, unconfined) == "capability CAP_SYS_ADMIN"
    assert escapes.layer(by_name["clone3"], {"blocked": True, "errno": errno.ENOSYS},
                         filtered) == "seccomp (ENOSYS)"
    assert escapes.layer(by_name["mount"], {"blocked": False, "errno": 0}, filtered) == ""
    rootless = {**unconfined, "CapEff": "00000000aa0425fb", "uid_map": "0 1001 1"}
    assert escapes.layer(by_name["clock"], eperm, rootless) == \
        "user namespace (CAP_SYS_TIME counts only inside it)"
    ro = {"blocked": True, "errno": errno.EROFS, "mount": ["/sys", "/", "ro", "sysfs"]}
    assert escapes.layer(by_name["sys-write"], ro, filtered) == "read-only sysfs"


def test_seccomp_answers_as_dockers_profile():
    default = {"CAP_CHOWN", "CAP_KILL", "CAP_MKNOD"}
    assert escapes.seccomp_answer("clone3", default) == errno.ENOSYS
    assert escapes.seccomp_answer("keyctl", default) == errno.EPERM
    assert escapes.seccomp_answer("mount", default) == errno.EPERM
    assert escapes.seccomp_answer("mount", default | {"CAP_SYS_ADMIN"}) is None
    assert escapes.seccomp_answer("settimeofday", default | {"CAP_SYS_TIME"}) is None
    assert escapes.seccomp_answer("kill", default) is None


def test_table_and_nothing_left(results):
    rows = escapes.table(list(results.values()))
    assert [r["attempt"] for r in rows] == [a.name for a in escapes.ATTEMPTS]
    assert all(r["edu"].startswith("blocked") and r["docker"].startswith("blocked")
               for r in rows)
    ps = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"],
                        capture_output=True, text=True).stdout
    assert PREFIX not in ps
    from edu_runtime.life import control

    assert not [r for r in control.ls(all=True) if r.get("name", "").startswith(PREFIX)]
    names = escapes.container_names(PREFIX)
    assert f"{PREFIX}-edu-default" in names and f"{PREFIX}-docker-systempaths" in names


def test_a_node_made_in_a_volume_does_not_open(busybox, tmp_path):
    """The mknod attempt in a named volume and in a bind mount: made, written, never opened
    (each volume is remounted nodev); a read-only one stays read-only."""
    import os

    from edu_runtime import Container, volumes

    major, minor = escapes.targets(os.getpid())["blk"]
    script = (f"echo hi > /vol/f && echo hi > /bind/f && "
              f"mknod /vol/z b {major} {minor} && mknod /bind/z b {major} {minor} && "
              "for n in /vol/z /bind/z; do head -c1 $n >/dev/null && echo $n opened; done; "
              "rm /vol/z /bind/z; echo x > /ro/f || echo ro refused; "
              "grep -E ' /(vol|bind|ro) ' /proc/self/mountinfo | cut -d' ' -f5,6")
    name = f"{PREFIX}-vol"
    out = tmp_path / "out"
    with open(out, "w+b") as sink, open(os.devnull, "rb") as nothing:
        code = Container(busybox, ["sh", "-c", script], remove=True, network="none",
                         volumes=[f"{name}:/vol", f"{tmp_path}:/bind", f"{tmp_path}:/ro:ro"],
                         stdio=(nothing.fileno(), sink.fileno(), sink.fileno())).run()
    try:
        said = out.read_text()
        assert code == 0, said
        assert "opened" not in said and "Permission denied" in said, said
        assert "ro refused" in said and (tmp_path / "f").read_text() == "hi\n"
        options = dict(line.split() for line in said.splitlines() if line.startswith("/"))
        assert all("nodev" in options[p].split(",") for p in ("/vol", "/bind", "/ro")), options
        assert "ro" in options["/ro"].split(",") and "rw" in options["/vol"].split(",")
    finally:
        volumes.rm(name)
