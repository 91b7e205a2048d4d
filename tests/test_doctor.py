"""edu doctor: its verdicts equal direct probes here, and its decisions hold elsewhere.

The first half compares each runtime probe with the same question asked another way (with
util-linux's unshare, mount and setpriv, or the shell), so nothing about this machine is
hard-coded. The second half feeds the pure judge functions facts from hosts CI is not:
pure cgroup v2, rootless users, nested containers, no libvirt, working KVM.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import HYBRID_MOUNTINFO, PURE_V2_MOUNTINFO, need

from edu_cli import doctor
from edu_runtime import cgroups, probes
from edu_runtime.probes import FAIL, PASS, WARN, ProbeResult


def sh(cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60, **kw)


# ---- verdicts equal direct probes ---------------------------------------------------------

def test_kernel_release_matches_uname():
    r = probes.judge_kernel(probes.facts_kernel())
    assert r.data["release"] == sh("uname -r").stdout.strip()
    major, minor = (int(x) for x in r.data["release"].split(".")[:2])
    assert r.status == (PASS if (major, minor) >= (5, 11) else WARN if (major, minor) >= (4, 18)
                        else FAIL)


def test_cgroup_mode_matches_statfs():
    f = probes.facts_cgroups()
    top = sh("stat -f -c %T /sys/fs/cgroup").stdout.strip()
    unified = sh("stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null").stdout.strip()
    v1_mounts = sh("grep -c ' - cgroup ' /proc/self/mountinfo").stdout.strip()
    if top == "cgroup2fs":
        expected = "hybrid" if v1_mounts != "0" else "v2"
    else:
        expected = "hybrid" if unified == "cgroup2fs" else "v1"
    assert f["mode"] == expected
    # cpu and cpuacct are separate v1 mounts on some hosts: each hierarchy stands alone.
    points = {h["mount_point"] for h in f["hierarchies"]}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[3] == "/" and line.split(" - ")[1].split()[0] in ("cgroup", "cgroup2"):
            if "name=" in line and "cgroup2" not in line and fields[4].endswith("systemd"):
                continue  # a named v1 hierarchy with no controllers
            assert fields[4] in points


def test_cgroup_controllers_match_mkdir(root):
    f = probes.facts_cgroups()
    for name, info in f["controllers"].items():
        if info["path"] is None:
            assert not info["usable"]
            continue
        probe = Path(info["path"]) / f"edu-test-{os.getpid()}"
        try:
            probe.mkdir()
            made = True
            offered = name in (probe.parent / "cgroup.controllers").read_text().split() \
                if info["version"] == 2 else (probe / f"{name}.stat").exists() or any(
                    p.name.startswith(name + ".") for p in probe.iterdir())
        except OSError:
            made = offered = False
        finally:
            if probe.exists():
                probe.rmdir()
        assert info["usable"] == (made and offered), (name, info)


@pytest.mark.parametrize("ns,flag", [("cgroup", "--cgroup"), ("ipc", "--ipc"),
                                     ("mnt", "--mount"), ("net", "--net"), ("pid", "--pid"),
                                     ("user", "--user"), ("uts", "--uts")])
def test_namespaces_match_unshare(ns, flag):
    f = probes.facts_namespaces()
    extra = "--user --map-root-user " if os.geteuid() != 0 and ns != "user" else ""
    fork = "--fork " if ns == "pid" else ""
    direct = sh(f"unshare {extra}{fork}{flag} true").returncode == 0
    assert (f["created"][ns] == "ok") == direct, (ns, f["created"][ns])


def test_overlay_matches_mount():
    need(shutil.which("unshare") is not None, "util-linux unshare missing")
    f = probes.facts_overlay()
    userns = "--user --map-root-user " if os.geteuid() != 0 else ""
    extra = ",userxattr" if os.geteuid() != 0 else ""
    # Direct probe in the same filesystem as the store, since that is what doctor answers for.
    store = Path(f["store"])
    base = Path(sh(f"mktemp -d -p {store} .test-overlay-XXXX").stdout.strip())
    try:
        for d in ("l", "u", "w", "m"):
            (base / d).mkdir()
        cmd = (f"unshare {userns}--mount sh -c 'mount -t overlay overlay -o lowerdir={base}/l,"
               f"upperdir={base}/u,workdir={base}/w{extra} {base}/m && touch {base}/m/x'")
        direct = sh(cmd).returncode == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert (f["direct"] == "ok") == direct
    assert probes.judge_overlay(f).status == (PASS if direct else
                                              WARN if f.get("upper_on_tmpfs") == "ok" else FAIL)
    # Nothing of the probe is left: no temp dir (mounts: see the next test).
    assert not list(store.glob(".doctor-overlay-*"))


def test_overlay_probe_leaves_no_mount():
    before = Path("/proc/self/mountinfo").read_text()
    probes.facts_overlay()
    assert Path("/proc/self/mountinfo").read_text() == before


def test_userns_matches_setpriv(root):
    need(shutil.which("setpriv") is not None, "util-linux setpriv missing")
    f = probes.facts_userns()
    direct = sh("setpriv --reuid 65534 --regid 65534 --clear-groups "
                "unshare --user --map-root-user --mount sh -c 'mount -t tmpfs none /tmp'")
    assert (f["outcome"] == "ok") == (direct.returncode == 0), (f, direct.stderr)


def test_container_signs_match_process_table():
    f = probes.facts_container()
    kthreadd = "kthreadd" in sh("ps -e -o comm=").stdout.split()
    assert f["kernel_threads_visible"] == kthreadd
    assert f["dockerenv"] == os.path.exists("/.dockerenv")


def test_reaping_matches_shell_orphan():
    f = probes.facts_reaping(refresh=True)
    # The shell's own version: background a sleep from a subshell that exits at once.
    pid = int(sh("(sleep 0.2 >/dev/null 2>&1 & echo $!)").stdout.strip())
    deadline = time.monotonic() + probes.REAP_WAIT + 1
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)
    reaped = not Path(f"/proc/{pid}").exists()
    verdict = probes.judge_reaping(f)
    assert (verdict.status == PASS) == reaped, (f, reaped)


def test_reaping_verdict_is_cached_per_boot():
    probes.facts_reaping(refresh=True)
    t = time.monotonic()
    f = probes.facts_reaping()
    assert f["pid1_zombies"] > 0 or f["probe"] is not None
    assert time.monotonic() - t < 0.5  # no second orphan: the cached verdict answered


def test_caps_match_setpriv():
    need(shutil.which("setpriv") is not None, "util-linux setpriv missing")
    out = sh("setpriv -d").stdout
    line = next(x for x in out.splitlines() if x.startswith("Capability bounding set:"))
    names = line.split(":", 1)[1].strip()
    direct = set() if names == "[none]" else {f"CAP_{n.upper()}" for n in names.split(",")}
    f = probes.facts_caps()
    assert {c for c in f["bounding"] if not c[4:].isdigit()} == direct
    r = probes.judge_caps(f)
    assert r.status == (PASS if set(probes.DOCKER_DEFAULT_CAPS) <= direct else WARN)


def test_peers_match_cli():
    f = probes.facts_peers()
    runc = sh("runc --version")
    assert (f["runc"] is not None) == (runc.returncode == 0)
    docker = sh("docker version --format '{{.Server.Version}}'")
    direct = docker.stdout.strip() if docker.returncode == 0 else None
    assert f["dockerd"] == direct


def test_libvirt_matches_virsh():
    need(shutil.which("virsh") is not None, "virsh missing (libvirt-clients)")
    uri = "qemu:///system" if os.geteuid() == 0 else "qemu:///session"
    direct = sh(f"virsh -c {uri} version").returncode == 0
    from vm_compare.probes import probe_libvirt

    libvirt = probe_libvirt()
    assert (libvirt["status"] == PASS) == direct, libvirt


def test_doctor_json_cli(python):
    out = subprocess.run([python, "-m", "edu_cli.main", "doctor", "--json"],
                         capture_output=True, text=True, timeout=300)
    report = json.loads(out.stdout)
    assert report["schema"] == doctor.SCHEMA
    names = [r["name"] for r in report["results"]]
    assert names == ["kernel", "cgroups", "namespaces", "overlayfs", "userns", "container",
                     "pid1-reaping", "capabilities", "peers", "kvm", "libvirt"]
    assert all(r["status"] in (PASS, WARN, FAIL) for r in report["results"])
    assert all(r["fix"] for r in report["results"] if r["status"] != PASS)
    assert out.returncode == report["exit_code"] == (0 if report["can_run"] else 1)


def test_doctor_text_cli(python):
    out = subprocess.run([python, "-m", "edu_cli.main", "doctor"], capture_output=True,
                         text=True, timeout=300)
    assert "PASS  kernel" in out.stdout
    assert out.stdout.rstrip().splitlines()[-1].startswith("The course can")


# ---- decisions over injected facts --------------------------------------------------------

def _cgroupfs(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path




USER_CGROUP = "user.slice/user-1000.slice/user@1000.service/app.slice/lab.scope"


def test_pure_v2_root(tmp_path):
    fs = _cgroupfs(tmp_path, {
        "sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n"})
    found = cgroups.hierarchies(probes_mounts(PURE_V2_MOUNTINFO), root=fs)
    assert cgroups.mode(found) == "v2"
    for name in cgroups.NEEDED:
        sup = cgroups.controller_support(found, name, root=fs, uid=0)
        assert sup.usable and sup.version == 2 and sup.path == Path("/sys/fs/cgroup")


def test_pure_v2_rootless_with_and_without_delegation(tmp_path):
    fs = _cgroupfs(tmp_path, {
        "sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory pids\n",
        f"sys/fs/cgroup/{USER_CGROUP}/cgroup.controllers": "cpu memory pids\n"})
    found = cgroups.hierarchies(probes_mounts(PURE_V2_MOUNTINFO), root=fs)
    proc = f"0::/{USER_CGROUP}\n"
    sup = cgroups.controller_support(found, "memory", root=fs, uid=1000, proc_cgroup=proc)
    assert sup.usable and sup.path == Path("/sys/fs/cgroup") / USER_CGROUP
    # Without systemd's delegation the user's cgroup offers no controllers.
    (fs / "sys/fs/cgroup" / USER_CGROUP / "cgroup.controllers").write_text("\n")
    sup = cgroups.controller_support(found, "pids", root=fs, uid=1000, proc_cgroup=proc)
    assert not sup.usable and "not delegated" in sup.reason


def test_hybrid_prefers_v1_and_keeps_cpu_apart_from_cpuacct(tmp_path):
    fs = _cgroupfs(tmp_path, {"sys/fs/cgroup/unified/cgroup.controllers": "hugetlb\n"})
    found = cgroups.hierarchies(probes_mounts(HYBRID_MOUNTINFO), root=fs)
    assert cgroups.mode(found) == "hybrid"
    assert [h.controllers for h in found if h.version == 1] == \
        [("cpu",), ("cpuacct",), ("freezer",), ("memory",), ("pids",)]
    sup = cgroups.controller_support(found, "cpu", root=fs, uid=0)
    assert sup.version == 1 and sup.path == Path("/sys/fs/cgroup/cpu")


def probes_mounts(text: str):
    from edu_runtime import kernel
    return kernel.parse_mountinfo(text)


def test_judge_cgroups_missing_controller_degrades_not_blocks():
    f = {"mode": "v2", "hierarchies": [{"version": 2, "mount_point": "/sys/fs/cgroup",
                                        "controllers": ["cpu"]}],
         "controllers": {"memory": {"usable": False, "reason": "not delegated"},
                         "pids": {"usable": False, "reason": "not delegated"},
                         "cpu": {"usable": True, "reason": "v2 at /sys/fs/cgroup"}}}
    r = probes.judge_cgroups(f)
    assert r.status == WARN and "--memory" in r.summary and "--pids-limit" in r.summary
    assert doctor.assemble([r]).exit_code == 0


def test_rootless_without_userns_cannot_run(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    ns = probes.judge_namespaces({"rootless": True, "created": {
        "cgroup": "EPERM", "ipc": "EPERM", "mnt": "EPERM", "net": "EPERM", "pid": "EPERM",
        "user": "EPERM", "uts": "EPERM"}})
    userns = probes.judge_userns({"tested_uid": 1000, "outcome": "namespace made, but no "
                                  "capabilities inside it", "max_user_namespaces": "15000",
                                  "unprivileged_userns_clone": None, "apparmor_restrict": "1"})
    assert ns.status == FAIL and userns.status == FAIL and userns.critical
    assert "apparmor_restrict_unprivileged_userns=0" in userns.fix
    report = doctor.assemble([ns, userns])
    assert report.exit_code == 1 and "cannot run" in report.verdict


def test_root_does_not_need_unprivileged_userns(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    r = probes.judge_userns({"tested_uid": 65534, "outcome": "unshare(CLONE_NEWUSER) refused "
                             "(EPERM)", "max_user_namespaces": "0",
                             "unprivileged_userns_clone": None, "apparmor_restrict": None})
    assert r.status == WARN and not r.critical and "max_user_namespaces" in r.fix
    assert doctor.assemble([r]).exit_code == 0


def test_inside_a_container():
    r = probes.judge_container({"dockerenv": True, "containerenv": False,
                                "container_env": None, "cgroup_hint": "docker",
                                "uid_map": "0 0 4294967295", "root_fstype": "overlay",
                                "kernel_threads_visible": False})
    assert r.status == WARN and "/.dockerenv" in r.summary and "seccomp=unconfined" in r.fix
    ov = probes.judge_overlay({"store": "/var/lib/edu", "store_fstype": "overlay",
                               "root_fstype": "overlay", "direct": "EINVAL",
                               "upper_on_tmpfs": "ok", "rootless": False})
    assert ov.status == WARN and "volume" in ov.fix
    assert doctor.assemble([r, ov]).exit_code == 0


def test_no_libvirt_degrades_only_the_vm_lesson():
    libvirt = ProbeResult("libvirt", FAIL, "cannot connect to qemu:///system",
                          "start libvirtd", critical=False)
    kernel = probes.judge_kernel({"release": "6.1.0-28-amd64", "machine": "x86_64"})
    report = doctor.assemble([kernel, libvirt])
    assert report.exit_code == 0 and "libvirt" in report.verdict
    assert "fix: start libvirtd" in report.to_text()


def test_kvm_ok_and_everything_passes():
    results = [probes.judge_kernel({"release": "6.8.0", "machine": "x86_64"}),
               ProbeResult("kvm", PASS, "KVM works", critical=False),
               ProbeResult("libvirt", PASS, "qemu:///system", critical=False)]
    report = doctor.assemble(results)
    assert report.can_run and report.verdict.endswith("everything real.")
    assert json.loads(report.to_json())["exit_code"] == 0


def test_caps_missing_docker_default():
    bnd = [c for c in probes.DOCKER_DEFAULT_CAPS if c != "CAP_NET_RAW"]
    r = probes.judge_caps({"bounding": bnd})
    assert r.status == WARN and "CAP_NET_RAW" in r.summary


# ---- rootless, for real -------------------------------------------------------------------

def test_doctor_as_an_unprivileged_user(student):
    """``edu doctor`` as a real user, from their own copy of the course: per-user paths, and
    verdicts that agree with util-linux run as the same user."""
    out = student.edu("doctor", "--json")
    assert out.stdout.startswith("{"), out.stderr
    report = json.loads(out.stdout)
    by_name = {r["name"]: r for r in report["results"]}
    # Per-user paths: the store is under the user's XDG data dir, never the system's.
    assert by_name["overlayfs"]["data"]["store"] == str(student.home / ".local/share/edu")
    assert by_name["overlayfs"]["data"]["rootless"] is True
    # Rootless namespaces and overlay agree with util-linux run as the same user.
    direct_ns = student.run(["unshare", "--user", "--map-root-user", "--mount", "--pid",
                             "--fork", "--uts", "--ipc", "true"])
    assert (by_name["namespaces"]["status"] == PASS) == (direct_ns.returncode == 0)
    base = student.home / "ov"
    direct_ov = student.run(["sh", "-c", (
        f"mkdir -p {base}/l {base}/u {base}/w {base}/m && unshare --user --map-root-user "
        f"--mount mount -t overlay overlay -o lowerdir={base}/l,upperdir={base}/u,"
        f"workdir={base}/w,userxattr {base}/m")])
    shutil.rmtree(base, ignore_errors=True)
    assert (by_name["overlayfs"]["status"] == PASS) == (direct_ov.returncode == 0)
    # cgroup limits: v1 is never delegated, so a user only has them through v2 delegation.
    v1_limits = any(c["version"] == 1 and c["usable"]
                    for c in by_name["cgroups"]["data"]["controllers"].values())
    assert not v1_limits
    assert by_name["libvirt"]["status"] in (PASS, WARN, FAIL)
    assert out.returncode == report["exit_code"]
