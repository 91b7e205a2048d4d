"""The escape suite, extended (issue 16): through ``edu exec`` and ``docker exec`` into a
running container, in a rootless edu container made by a real unprivileged user, and what
Docker's AppArmor profile adds (on this host: whether there is one). SECURITY.md's table must
be what a fresh run gives. Real containers, a real user account, real dockerd.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from test_escapes import EXPECTED, MKNOD, load_python

from edu_runtime import Container, apparmor, escapes

PREFIX = "sec-esc"
REPO = Path(__file__).resolve().parent.parent

#: What exec must take over from the container's PID 1: the fields of /proc/PID/status,
#: the seven namespaces and the cgroup.
HELD = ("CapEff", "CapPrm", "CapBnd", "Seccomp", "Seccomp_filters", "NoNewPrivs", "Uid", "Gid",
        "ns", "cgroup")

#: The layer in a rootless container where it differs from root's: the user namespace.
ROOTLESS = {"mknod": "user namespace (CAP_MKNOD counts only inside it)",
            "proc-write": "user namespace (host root's file, owned by nobody here)"}


def rootless_run(student, prefix: str, controls: bool = True) -> list[escapes.Result]:
    """The suite (through exec too, and with each control unless not ``controls``) in the
    student's own rootless containers: root's python image is saved into the student's
    home and loaded into their store first."""
    from edu_runtime.images import archive
    from edu_runtime.images.store import Store

    tar = student.home / "edu-python.tar"
    try:
        archive.save(Store(), ["python"], tar)
        os.chown(tar, student.uid, student.gid)
        loaded = student.edu("load", "-i", str(tar))
        assert loaded.returncode == 0, loaded.stderr
    finally:
        tar.unlink(missing_ok=True)
    done = student.run([student.python, "-m", "edu_runtime.escapes", "--exec", "--prefix",
                        prefix, *(["--controls"] if controls else [])], timeout=180)
    assert done.returncode == 0, done.stderr
    return [escapes.Result.from_dict(json.loads(line)) for line in done.stdout.splitlines()]


@pytest.fixture(scope="module")
def suite(student):
    """Every attempt in edu run, docker run, edu exec, docker exec, and rootless (run and
    exec), default configurations."""
    from docker_reference import docker_up

    from edu_runtime.images import bootstrap
    from edu_runtime.images.store import Store

    bootstrap.bootstrap(Store(), "python", progress=False)
    assert docker_up(), "dockerd must answer here: the suite runs beside Docker"
    found = escapes.run("python", docker_tag=load_python(), via_exec=True, prefix=PREFIX)
    found += rootless_run(student, PREFIX)
    return {(r.attempt, r.runtime) if r.config == "default" else (r.attempt, r.runtime,
                                                                  r.config): r
            for r in found}


@pytest.mark.parametrize("runtime", ["edu", "docker"])
def test_exec_is_stopped_by_the_same_layers_as_run(suite, runtime):
    for a in escapes.ATTEMPTS:
        ran, entered = suite[(a.name, runtime)], suite[(a.name, f"{runtime} exec")]
        assert entered.blocked, entered
        assert (entered.errno, entered.layer) == (ran.errno, ran.layer), (ran, entered)
        assert entered.layer == (MKNOD[runtime] if a.name == "mknod" else EXPECTED[a.name])


@pytest.mark.parametrize("runtime", ["edu", "docker", "rootless"])
def test_exec_holds_what_pid1_holds(suite, runtime):
    """The exec'd process is in PID 1's namespaces and cgroup, with its capabilities,
    seccomp filter, no_new_privs and user: read from /proc/self and /proc/1 inside."""
    ev = suite[("mount", f"{runtime} exec")].evidence
    mine, pid1 = ev["self"], ev["pid1"]
    assert len(mine["ns"]) == 7 and mine["cgroup"], mine
    for key in HELD:
        assert mine.get(key) == pid1.get(key), (key, mine.get(key), pid1.get(key))
    assert mine["Seccomp"] == "2" and mine["Seccomp_filters"] == "1"
    # ... and not what the host's processes hold (the rootless student's are ours too).
    for ns in ("ipc", "mnt", "net", "pid", "uts"):
        assert mine["ns"][ns] != os.readlink(f"/proc/self/ns/{ns}"), ns


def test_rootless_adds_the_user_namespace(suite):
    for a in escapes.ATTEMPTS:
        r = suite[(a.name, "rootless")]
        assert r.blocked, r
        assert r.layer == (ROOTLESS[a.name] if a.name in ROOTLESS else EXPECTED[a.name]), r
        entered = suite[(a.name, "rootless exec")]
        assert (entered.blocked, entered.errno, entered.layer) == (True, r.errno, r.layer)
    ev = suite[("mount", "rootless")].evidence["self"]
    assert ev["Uid"] == "0 0 0 0" and ev["CapEff"] == suite[("mount", "edu")].evidence[
        "self"]["CapEff"], "root inside, with Docker's capabilities: in its own namespace"
    assert ev["ns"]["user"] != suite[("mount", "edu")].evidence["self"]["ns"]["user"]


def test_rootless_user_namespace_holds_behind_seccomp(suite):
    """The controls, rootless: with the capability added (and so past seccomp), the clock
    and open_by_handle_at are still refused: the capability counts only in the user
    namespace, and they belong to the initial one. As root the same control reaches the
    kernel's argument check (tests/test_escapes.py). (init_module answers ENOSYS on this
    kernel, built without modules, whoever asks.)"""
    for name, cap in (("clock", "SYS_TIME"), ("open-by-handle", "DAC_READ_SEARCH")):
        r = suite[(name, "rootless", f"--cap-add {cap}")]
        assert r.blocked and r.errno == "EPERM", r
        assert r.layer == f"user namespace (CAP_{cap} counts only inside it)", r
    # Without seccomp, a user namespace inside the user's own is allowed (it holds nothing
    # more), as for any unprivileged user on this host.
    assert not suite[("userns", "rootless", "--security-opt seccomp=unconfined")].blocked
    # --pid host does not even start rootless: the kernel refuses a proc of the host's pid
    # namespace to a user namespace that does not own it.
    ptrace = suite[("ptrace", "rootless", "--pid host")]
    assert ptrace.layer == "not run" and "mount proc" in ptrace.detail, ptrace
    assert "Operation not permitted" in ptrace.detail, ptrace


def test_security_md_table_is_a_fresh_runs(suite):
    """SECURITY.md's table (between its markers) is what this run gives: regenerate it with
    bench/escapes_table.py when a layer changes."""
    text = (REPO / "SECURITY.md").read_text()
    begin, end = escapes.TABLE_MARKERS
    committed = text.split(begin, 1)[1].split(end, 1)[0].strip()
    assert committed == escapes.markdown(list(suite.values())).strip(), \
        "SECURITY.md's escape table is stale: run .venv/bin/python bench/escapes_table.py"


# ---- AppArmor ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def armour(suite):
    """The host's AppArmor facts, dockerd's, and an edu container's label beside ours."""
    from docker_reference import load_base

    host = apparmor.facts()
    docker = apparmor.docker_facts(load_base(), name=f"{PREFIX}-apparmor")
    c = Container("busybox", ["sleep", "60"], name=f"{PREFIX}-apparmor", remove=True,
                  network="none").start()
    try:
        edu_label = apparmor.label(c.inspect()["State"]["Pid"])
    finally:
        c.kill()
        c.wait()
    return host, docker, edu_label


def test_apparmor_is_probed_and_answered(armour):
    """Not skipped on a host without AppArmor: the probe's verdict is checked against what
    the kernel and dockerd say, and the answer says it in words."""
    host, docker, edu_label = armour
    has, why = apparmor.judge(host)
    options = " ".join(docker["security_options"] or [])
    assert has == ("name=apparmor" in options), (why, options)  # dockerd sees what we see
    answer = apparmor.answer(host, docker)
    assert "edu applies no AppArmor profile" in answer and apparmor.EDU_PROFILE is None
    assert edu_label == apparmor.label("self"), "edu sets no label: its container has ours"
    if has:
        assert docker["profile"] == "docker-default", docker
        assert (docker["label"]["current"] or "").startswith("docker-default"), docker
        assert "are a layer Docker has and edu lacks" in answer
    else:
        assert docker["profile"] == "" and docker["label"]["current"] is None, docker
        assert host["label"]["current error"] == "EINVAL"  # no module gives a label
        assert "apparmor" not in (host["lsm"] or "").split(",")
        assert answer.startswith("This host has no AppArmor") and "adds nothing" in answer


def test_what_docker_default_adds_is_held_by_another_layer_in_edu(suite):
    """Each docker-default rule that the suite has an attempt for: edu stops that attempt
    with its own layer, the one the rule's text names."""
    names = {a.name for a in escapes.ATTEMPTS}
    shown = [rule for rule in apparmor.DOCKER_DEFAULT if rule.shown_by]
    assert len(shown) >= 7
    for rule in shown:
        attempt, layer = rule.shown_by
        assert attempt in names, rule
        r = suite[(attempt, "edu")]
        assert r.blocked and r.layer.startswith(layer), (rule, r)


def test_the_rules_without_an_attempt(suite, python):
    """What the list says edu does for docker-default's other rules, checked in a container:
    /sys/firmware, powercap and securityfs are empty; an AF_ALG socket opens if the kernel
    has one (no guard in edu)."""
    out = subprocess.run(
        [python, "-m", "edu_cli.main", "run", "--rm", "--network", "none", "python",
         "python3", "-c",
         "import os, socket\n"
         "for d in ('/sys/firmware', '/sys/devices/virtual/powercap', '/sys/kernel/security'):"
         "\n    print(d, len(os.listdir(d)) if os.path.isdir(d) else 'absent')\n"
         "try:\n    socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET, 0).close()\n"
         "    print('alg opened')\n"
         "except OSError as e:\n    print('alg', e.errno)\n"],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    said = dict(line.rsplit(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert said["/sys/firmware"] in ("0", "absent") and said["/sys/kernel/security"] in (
        "0", "absent") and said["/sys/devices/virtual/powercap"] in ("0", "absent"), said
    import errno

    assert said["alg"] in ("opened", str(errno.EAFNOSUPPORT)), said  # never EPERM


def test_security_md_lists_docker_defaults_rules():
    """SECURITY.md's AppArmor table is apparmor.DOCKER_DEFAULT (paste apparmor.markdown())."""
    assert apparmor.markdown() in (REPO / "SECURITY.md").read_text()
    assert len(apparmor.DOCKER_DEFAULT) == 14 and apparmor.SOURCE.startswith("moby/moby")


def test_layer_names_apparmor_from_the_label():
    by_name = {a.name: a for a in escapes.ATTEMPTS}
    confined = {"CapEff": "00000000a82425fb", "Seccomp": "2",
                "label": "docker-default (enforce)"}
    mount = escapes.layer(by_name["mount"], {"blocked": True, "errno": 13}, confined)
    assert mount == "AppArmor (docker-default)"  # CAP_SYS_ADMIN held, seccomp let it by
    unconfined = {**confined, "label": "unconfined"}
    assert escapes.layer(by_name["mount"], {"blocked": True, "errno": 19}, unconfined) \
        .startswith("none: past every guard")
    rootless = {"CapEff": "00000000a80425fb", "Seccomp": "2", "uid_map": "0 1001 1"}
    owned = {"blocked": True, "errno": 13, "owner": escapes.OVERFLOW_UID}
    assert escapes.layer(by_name["proc-write"], owned, rootless) == ROOTLESS["proc-write"]


def test_nothing_left(suite):
    ps = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"],
                        capture_output=True, text=True).stdout
    assert PREFIX not in ps
    from edu_runtime.life import control

    assert not [r for r in control.ls(all=True) if r.get("name", "").startswith(PREFIX)]
