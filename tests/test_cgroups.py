"""Cgroup drivers: real v1 and v2 on this host, and the kernel's file formats in a temp dir.

The real tests make their cgroups under a parent of their own (``edu-test-<pid>``), never
under ``edu/``, so they cannot touch a student's containers, and they remove it at the end.
The temp-dir tests play the kernel's part: a temp dir does not fill a new directory with
files the way cgroupfs does, so ``fake_kernel_mkdir`` writes them, in the kernel's formats,
right after the driver's mkdir. The driver never creates a file itself (it opens them without
O_CREAT), so a file it writes that the kernel would not have made fails the test.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HYBRID_MOUNTINFO, PURE_V2_MOUNTINFO, need

from edu_runtime import cgroups, kernel
from edu_runtime.cgroups import CgroupError, CgroupUnavailable, Limits, V1Driver, V2Driver

MIB = 1024 * 1024
HOST = cgroups.hierarchies()
V1_USED = ("cpu", "freezer", "memory", "pids")


def v1_mounts() -> dict[str, Path]:
    """This host's v1 mount point for each controller the driver uses."""
    return {c: h.mount_point for h in HOST if h.version == 1 for c in h.controllers
            if c in V1_USED}


def v2_mount() -> Path | None:
    return next((h.mount_point for h in HOST if h.version == 2), None)


# ---- parsing and validation ---------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("64m", 64 * MIB), ("64M", 64 * MIB), ("64mb", 64 * MIB), (" 64m ", 64 * MIB),
    ("1g", 1024 * MIB), ("1.5G", 1536 * MIB), ("6m", 6 * MIB), ("8192k", 8 * MIB),
    ("6291456", 6 * MIB), ("6291456b", 6 * MIB), ("64 m", 64 * MIB),
])
def test_parse_memory(text, expected):
    assert cgroups.parse_memory(text) == expected


@pytest.mark.parametrize("text,says", [
    ("64x", "use a number with an optional unit b, k, m or g, e.g. 64m"),
    ("", "use a number"), ("m", "use a number"), ("-64m", "use a number"),
    ("64t", "use a number"), ("64mm", "use a number"),
    ("4m", "the minimum is 6m"), ("6291455", "the minimum is 6m"), ("0", "the minimum is 6m"),
])
def test_parse_memory_refuses(text, says):
    with pytest.raises(ValueError) as exc:
        cgroups.parse_memory(text)
    assert str(exc.value).startswith(f"invalid --memory value '{text}': ")
    assert says in str(exc.value)


def test_parse_cpus():
    assert cgroups.parse_cpus("0.5", available=2) == 0.5
    assert cgroups.parse_cpus("2", available=2) == 2.0
    with pytest.raises(ValueError, match="use a number of CPUs"):
        cgroups.parse_cpus("half")
    with pytest.raises(ValueError, match=r"from 0.01 to 2.00, as there are only 2 CPUs"):
        cgroups.parse_cpus("3", available=2)
    with pytest.raises(ValueError, match="from 0.01"):
        cgroups.parse_cpus("0.001", available=2)


def test_limits_validate_and_convert():
    assert Limits(cpus=0.5).cpu_quota() == 50000
    assert Limits(cpus=1.5).cpu_quota() == 150000
    assert Limits().cpu_quota() is None
    with pytest.raises(ValueError, match="minimum is 6291456 bytes"):
        Limits(memory=1000)
    with pytest.raises(ValueError, match="at least 1 process"):
        Limits(pids=0)
    with pytest.raises(ValueError, match="minimum is 0.01"):
        Limits(cpus=0.001)


@pytest.mark.parametrize("name", ["web", "c0ffee_1.2-x", "a" * 128])
def test_names_accepted(name):
    assert cgroups.check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "x y", "café", "a\n", "a" * 129])
def test_names_refused(name, tmp_path):
    with pytest.raises(ValueError, match="use 1 to 128 letters"):
        cgroups.check_name(name)
    with pytest.raises(ValueError):
        V2Driver(tmp_path).open(name)


# ---- the kernel's file formats, in a temp dir ---------------------------------------------

def write_files(where: Path, files: dict[str, str]) -> None:
    where.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (where / name).write_text(text)


def fake_kernel_mkdir_v2(where: Path) -> None:
    """The files cgroupfs v2 shows in a new directory: core ones, plus each controller's
    that the parent enabled in its cgroup.subtree_control."""
    enabled = {c.lstrip("+") for c in (where.parent / "cgroup.subtree_control").read_text()
               .split()}
    files = {"cgroup.controllers": " ".join(sorted(enabled)) + "\n",
             "cgroup.subtree_control": "\n", "cgroup.procs": "", "cgroup.type": "domain\n",
             "cgroup.events": "populated 0\nfrozen 0\n", "cgroup.freeze": "0\n",
             "cgroup.kill": "", "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"}
    if "memory" in enabled:
        files.update({"memory.max": "max\n", "memory.swap.max": "max\n",
                      "memory.current": "0\n",
                      "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"
                                       "oom_group_kill 0\n"})
    if "pids" in enabled:
        files.update({"pids.max": "max\n", "pids.current": "0\n", "pids.events": "max 0\n"})
    if "cpu" in enabled:
        files.update({"cpu.max": "max 100000\n", "cpu.weight": "100\n"})
    write_files(where, files)


def fake_kernel_mkdir_v1(where: Path, controller: str) -> None:
    """The files cgroupfs v1 shows in a new directory of one controller's hierarchy."""
    files = {"cgroup.procs": "", "tasks": "", "notify_on_release": "0\n"}
    files.update({
        "memory": {"memory.limit_in_bytes": "9223372036854771712\n",
                   "memory.memsw.limit_in_bytes": "9223372036854771712\n",
                   "memory.usage_in_bytes": "0\n",
                   "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"},
        "pids": {"pids.max": "max\n", "pids.current": "0\n"},
        "cpu": {"cpu.cfs_period_us": "100000\n", "cpu.cfs_quota_us": "-1\n",
                "cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n"},
        "freezer": {"freezer.state": "THAWED\n"},
    }[controller])
    write_files(where, files)


@pytest.fixture
def v2_tmp(tmp_path) -> Path:
    """A temp-dir cgroup2 root offering what a Debian 12 host's /sys/fs/cgroup offers."""
    root = tmp_path / "sys/fs/cgroup"
    write_files(root, {"cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n",
                       "cgroup.subtree_control": "\n", "cgroup.procs": "1\n"})
    # edu/ as the kernel made it when the driver first ran here (the driver keeps it).
    write_files(root / "edu", {"cgroup.subtree_control": "\n", "cgroup.procs": "",
                               "cgroup.type": "domain\n"})
    return root


def test_v2_limits_in_kernel_format(v2_tmp):
    drv = V2Driver(v2_tmp)
    assert drv.controllers == ("cpu", "memory", "pids") and drv.missing == {}
    cg = drv.create("web")
    fake_kernel_mkdir_v2(cg.paths()["unified"])
    assert (v2_tmp / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (v2_tmp / "edu/cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    cg.set_limits(Limits(memory=cgroups.parse_memory("64m"), pids=20, cpus=0.5))
    where = v2_tmp / "edu/web"
    assert cg.paths() == {"unified": where}
    assert (where / "memory.max").read_text() == "67108864"
    assert (where / "memory.swap.max").read_text() == "67108864"  # Docker: total 2 x memory
    assert (where / "pids.max").read_text() == "20"
    assert (where / "cpu.max").read_text() == "50000 100000"
    # The kernel counts; the driver reads its counters.
    assert cg.oom_kills() == 0
    (where / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\n"
                                         "oom_group_kill 0\n")
    (where / "memory.current").write_text("1048576\n")
    assert cg.oom_kills() == 2 and cg.memory_usage() == MIB
    seen = cg.observe()
    assert list(seen) == sorted(seen)
    assert seen["unified/memory.max"] == "67108864" and seen["unified/cpu.max"] == "50000 100000"
    assert "unified/cgroup.events" in seen


def test_v2_none_means_unchanged_and_enabling_is_once(v2_tmp):
    (v2_tmp / "cgroup.subtree_control").write_text("cpu memory pids\n")  # enabled already
    drv = V2Driver(v2_tmp)
    cg = drv.create("db")
    fake_kernel_mkdir_v2(cg.paths()["unified"])
    assert (v2_tmp / "cgroup.subtree_control").read_text() == "cpu memory pids\n"  # no write
    cg.set_limits(Limits(pids=5))
    where = cg.paths()["unified"]
    assert (where / "memory.max").read_text() == "max\n"
    assert (where / "cpu.max").read_text() == "max 100000\n"
    assert (where / "pids.max").read_text() == "5"


def test_v2_missing_controller_is_a_sentence(v2_tmp):
    (v2_tmp / "cgroup.controllers").write_text("cpu memory\n")
    drv = V2Driver(v2_tmp)
    assert drv.controllers == ("cpu", "memory") and "pids" in drv.missing
    cg = drv.create("web")
    assert (v2_tmp / "edu/cgroup.subtree_control").read_text() == "+cpu +memory"
    fake_kernel_mkdir_v2(cg.paths()["unified"])
    with pytest.raises(CgroupError, match=r"--pids-limit cannot be applied: the pids controller"):
        cg.set_limits(Limits(memory=64 * MIB, pids=20))
    assert (cg.paths()["unified"] / "memory.max").read_text() == "max\n"  # nothing half-done


def test_v2_write_to_a_missing_file_says_why(v2_tmp):
    cg = V2Driver(v2_tmp).create("web")  # and no fake kernel: the directory stays empty
    with pytest.raises(CgroupError, match="controller is not enabled") as exc:
        cg.set_limits(Limits(pids=20))
    assert not (cg.paths()["unified"] / "pids.max").exists()  # the driver made no file
    assert exc.value.__cause__.errno == errno.ENOENT


def test_create_refuses_an_existing_cgroup_and_lists_stale_ones(v2_tmp):
    drv = V2Driver(v2_tmp)
    drv.create("web")
    drv.create("old")
    with pytest.raises(CgroupError, match="already exists .*cleanup_stale"):
        drv.create("web")
    assert drv.names() == ["old", "web"]  # files such as cgroup.procs are not cgroups
    assert drv.find_stale({"web"}) == ["old"]
    assert drv.find_stale({"web", "old"}) == []


def test_v1_limits_in_kernel_format(tmp_path):
    mounts = {c: tmp_path / c for c in V1_USED}
    for m in mounts.values():
        m.mkdir()
    drv = V1Driver(mounts, parent="edu")
    assert drv.controllers == ("cpu", "memory", "pids")
    cg = drv.create("web")
    assert sorted(cg.paths()) == list(V1_USED)
    for c, where in cg.paths().items():
        assert where == tmp_path / c / "edu/web"
        fake_kernel_mkdir_v1(where, c)
    cg.set_limits(Limits(memory=64 * MIB, pids=20, cpus=0.5))
    mem = cg.paths()["memory"]
    assert (mem / "memory.limit_in_bytes").read_text() == "67108864"
    assert (mem / "memory.memsw.limit_in_bytes").read_text() == "134217728"  # Docker's 2 x
    assert (cg.paths()["pids"] / "pids.max").read_text() == "20"
    assert (cg.paths()["cpu"] / "cpu.cfs_period_us").read_text() == "100000"
    assert (cg.paths()["cpu"] / "cpu.cfs_quota_us").read_text() == "50000"
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    assert cg.oom_kills() == 3
    assert "freezer/freezer.state" in cg.observe() and "memory/cgroup.procs" in cg.observe()


# ---- choosing a driver --------------------------------------------------------------------



USER_CGROUP = "user.slice/user-1000.slice/user@1000.service/app.slice/lab.scope"


def test_pure_v2_root_gets_the_v2_driver(v2_tmp):
    found = cgroups.hierarchies(kernel.parse_mountinfo(PURE_V2_MOUNTINFO), root=v2_tmp.parents[2])
    drv = cgroups.driver(found, root=v2_tmp.parents[2], uid=0)
    assert isinstance(drv, V2Driver) and drv.root == v2_tmp
    assert drv.controllers == ("cpu", "memory", "pids") and drv.missing == {}
    assert drv.parent_paths() == {"unified": v2_tmp / "edu"}


def test_pure_v2_rootless_in_a_busy_delegated_cgroup(tmp_path):
    mine = tmp_path / "sys/fs/cgroup" / USER_CGROUP
    write_files(tmp_path / "sys/fs/cgroup", {"cgroup.controllers": "cpu io memory pids\n"})
    write_files(mine, {"cgroup.controllers": "cpu memory pids\n", "cgroup.type": "domain\n",
                       "cgroup.subtree_control": "\n", "cgroup.procs": "4242\n"})
    found = cgroups.hierarchies(kernel.parse_mountinfo(PURE_V2_MOUNTINFO), root=tmp_path)
    drv = cgroups.driver(found, root=tmp_path, uid=1000, proc_cgroup=f"0::/{USER_CGROUP}\n")
    assert isinstance(drv, V2Driver) and drv.root == mine
    assert drv.controllers == ()  # the lab's own processes sit in the delegated cgroup
    assert all("has processes of its own" in why for why in drv.missing.values())
    # Once they live in a child cgroup, the controllers are the user's.
    (mine / "cgroup.procs").write_text("")
    drv = cgroups.driver(found, root=tmp_path, uid=1000, proc_cgroup=f"0::/{USER_CGROUP}\n")
    assert drv.controllers == ("cpu", "memory", "pids") and drv.missing == {}


def test_hybrid_uses_v1_and_leaves_the_v2_tree_alone(tmp_path):
    """Joining the v2 tree would cost every start an RCU grace period (see cgroups)."""
    write_files(tmp_path / "sys/fs/cgroup/unified", {"cgroup.controllers": "hugetlb\n"})
    found = cgroups.hierarchies(kernel.parse_mountinfo(HYBRID_MOUNTINFO), root=tmp_path)
    drv = cgroups.driver(found, root=tmp_path, uid=0)
    assert isinstance(drv, V1Driver) and drv.missing == {}
    base = tmp_path / "sys/fs/cgroup"
    assert drv.unified == base / "unified"
    assert drv.parent_paths() == {"cpu": base / "cpu/edu", "freezer": base / "freezer/edu",
                                  "memory": base / "memory/edu", "pids": base / "pids/edu"}


def test_v1_only_and_rootless_is_not_available(tmp_path):
    v1_only = "\n".join(line for line in HYBRID_MOUNTINFO.splitlines() if "cgroup2" not in line)
    found = cgroups.hierarchies(kernel.parse_mountinfo(v1_only), root=tmp_path)
    # tmp_path has no cgroup directories, so none is writable: as for a user on a v1 host.
    with pytest.raises(CgroupUnavailable, match="^not available: cgroup v1 cannot be delegated"):
        cgroups.driver(found, root=tmp_path, uid=1000)
    with pytest.raises(CgroupUnavailable, match="^not available: no cgroup hierarchy"):
        cgroups.driver([], root=tmp_path, uid=0)


def test_driver_for_this_host():
    mode = cgroups.mode(HOST)
    need(mode != "none", "no cgroups mounted")
    drv = cgroups.driver()
    if os.geteuid() == 0 and {"memory", "pids", "cpu"} <= set(v1_mounts()):
        assert isinstance(drv, V1Driver)
        assert drv.mounts == {c: m for c, m in v1_mounts().items()}
        assert drv.unified == v2_mount()  # hybrid: also the v2 tree; v1: None
    elif mode == "v2":
        assert isinstance(drv, V2Driver)


def test_the_driver_is_kept_while_what_it_was_found_from_stays_the_same(tmp_path,
                                                                          monkeypatch):
    """The supervisor finds its driver once (issue 18), not at every start; a new mount table
    or a v2 tree's new controllers find it again. On the temp-dir cgroupfs for v2."""
    need(os.geteuid() == 0, "root's driver is the one kept")
    tree = tmp_path / "sys/fs/cgroup"
    tree.mkdir(parents=True)
    (tree / "cgroup.controllers").write_text("cpu memory pids\n")
    v2 = cgroups.host_key(PURE_V2_MOUNTINFO, root=tmp_path)
    assert cgroups.host_key(PURE_V2_MOUNTINFO, root=tmp_path) == v2
    (tree / "cgroup.controllers").write_text("memory pids\n")  # cpu went to a v1 mount
    assert cgroups.host_key(PURE_V2_MOUNTINFO, root=tmp_path) != v2
    assert cgroups.host_key(HYBRID_MOUNTINFO, root=tmp_path) != v2

    first = cgroups.driver_for(False)[0]
    assert cgroups.driver_for(True)[0] is first  # kept: nothing read or parsed again
    assert type(first) is type(cgroups.driver())
    monkeypatch.setattr(cgroups, "host_key", lambda: ("the mount table changed",))
    again = cgroups.driver_for(False)[0]
    assert again is not first and type(again) is type(first)


# ---- real cgroups on this host ------------------------------------------------------------

@pytest.fixture
def children():
    """Processes a test starts; SIGKILLed and reaped at the end whatever happened."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def spawn(children, *args: str, **kw) -> subprocess.Popen:
    p = subprocess.Popen(list(args), **kw)
    children.append(p)
    return p


def cleanup(drv: cgroups.Driver) -> None:
    """Kill and remove every cgroup under the test's parent, then the parent itself."""
    problems = []
    for name in drv.names():
        try:
            drv.open(name).kill()
            drv.open(name).remove()
        except CgroupError as exc:
            problems.append(str(exc))
    for parent in drv.parent_paths().values():
        try:
            parent.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append(f"rmdir {parent}: {exc.strerror}")
    assert not problems, f"cgroups left behind: {problems}"


@pytest.fixture
def v1(root, children):
    """The host's driver (v1 controllers, and the v2 tree on a hybrid host), own parent."""
    need({"memory", "pids", "cpu", "freezer"} <= set(v1_mounts()),
         "memory, pids, cpu and freezer are not all on cgroup v1 here")
    drv = cgroups.driver(parent=f"edu-test-{os.getpid()}")
    assert isinstance(drv, V1Driver)
    yield drv
    for p in children:
        if p.poll() is None:
            p.kill()
    cleanup(drv)


@pytest.fixture
def v2(root, children):
    """A v2 driver on this host's v2 tree (the hybrid's unified tree here), own parent."""
    mount = v2_mount()
    need(mount is not None, "no cgroup v2 tree mounted")
    need((mount / "cgroup.procs").exists(), "the v2 tree is not readable")
    drv = V2Driver(mount, parent=f"edu-test-{os.getpid()}")
    yield drv
    for p in children:
        if p.poll() is None:
            p.kill()
    cleanup(drv)


def state(pid: int) -> str:
    return kernel.proc_status(pid)["State"]


def test_v1_real_limits_membership_kill_remove(v1, children):
    cg = v1.create("limits")
    cg.set_limits(Limits(memory=cgroups.parse_memory("64m"), pids=20, cpus=0.5))
    paths = cg.paths()
    assert kernel.read(paths["memory"] / "memory.limit_in_bytes") == "67108864"
    if (paths["memory"] / "memory.memsw.limit_in_bytes").exists():
        assert kernel.read(paths["memory"] / "memory.memsw.limit_in_bytes") == "134217728"
    assert kernel.read(paths["pids"] / "pids.max") == "20"
    assert kernel.read(paths["cpu"] / "cpu.cfs_quota_us") == "50000"
    assert kernel.read(paths["cpu"] / "cpu.cfs_period_us") == "100000"

    sleeper = spawn(children, "sleep", "60")
    cg.add(sleeper.pid)
    assert cg.pids() == [sleeper.pid]
    for where in paths.values():  # one process, one directory in every hierarchy
        assert kernel.read(where / "cgroup.procs") == str(sleeper.pid)
    own = kernel.read(f"/proc/{sleeper.pid}/cgroup") or ""
    assert f":memory:/{v1.parent}/limits" in own and f":pids:/{v1.parent}/limits" in own
    # v1 leaves the memory a process used before it moved charged to its old cgroup.
    assert isinstance(cg.memory_usage(), int)
    seen = cg.observe()
    assert list(seen) == sorted(seen) and seen["pids/pids.max"] == "20"
    assert seen["memory/cgroup.procs"] == str(sleeper.pid)

    cg.kill()
    assert cg.pids() == []
    assert sleeper.wait(timeout=10) == -9
    cg.remove()
    assert not any(p.exists() for p in paths.values())
    cg.remove()  # again: nothing to do


def _joined_by_itself(cg) -> str:
    """Fork a child that joins ``cg`` itself, then reports its /proc/self/cgroup."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            cg.join()
            os.write(w, open("/proc/self/cgroup", "rb").read())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        text = f.read()
    os.waitpid(pid, 0)
    return text


def test_v1_real_join_moves_the_caller_itself(v1):
    """`echo 0 > tasks`: the process lands in every v1 hierarchy of the cgroup, and nowhere
    in the v2 tree (a hybrid host's unified tree is left alone)."""
    cg = v1.create("selfjoin")
    own = _joined_by_itself(cg)
    for c in ("memory", "pids", "cpu", "freezer"):
        assert re.search(rf"^\d+:[^:]*\b{c}\b[^:]*:/{v1.parent}/selfjoin$", own, re.M), own
    assert re.search(r"^0::/$", own, re.M) or "0::" not in own
    cg.remove()


def test_v2_real_join_moves_the_caller_itself(v2):
    cg = v2.create("selfjoin")
    assert f"0::/{v2.parent}/selfjoin" in _joined_by_itself(cg).splitlines()
    cg.remove()


def test_v1_real_oom_kill_is_counted(v1, children):
    cg = v1.create("oom")
    cg.set_limits(Limits(memory=cgroups.parse_memory("32m")))
    before = cg.oom_kills()
    # The child waits on stdin until it is in the cgroup, then writes 200 MB (bytes * n
    # touches every page, so all of it is charged).
    hog = spawn(children, sys.executable, "-c",
                "import sys; sys.stdin.read(1); x = b'x' * (200 << 20); print('survived')",
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    cg.add(hog.pid)
    out, _ = hog.communicate("g", timeout=60)
    assert hog.returncode == -9 and "survived" not in out  # SIGKILL, from the OOM killer
    assert cg.oom_kills() >= before + 1
    assert "oom_kill " in cg.observe()["memory/memory.oom_control"]


FORKER = """
import os, sys
sys.stdin.read(1)
r, w = os.pipe()
kids, err = [], 0
for _ in range(40):
    try:
        pid = os.fork()
    except OSError as exc:
        err = exc.errno
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)  # wait for the parent to close its end, then go
        os._exit(0)
    kids.append(pid)
os.close(w)
for pid in kids:
    os.waitpid(pid, 0)
print(len(kids), err)
"""


def test_v1_real_pids_limit_stops_forks(v1, children):
    cg = v1.create("forks")
    cg.set_limits(Limits(pids=20))
    forker = spawn(children, sys.executable, "-c", FORKER, stdin=subprocess.PIPE,
                   stdout=subprocess.PIPE, text=True)
    cg.add(forker.pid)
    out, _ = forker.communicate("g", timeout=60)
    forked, err = (int(x) for x in out.split())
    # pids.max counts the forker too: 19 children fit, the 20th fork gets EAGAIN.
    assert (forked, err) == (19, errno.EAGAIN), out
    assert forker.returncode == 0
    assert "max 1" in cg.observe()["pids/pids.events"]


def test_v1_real_freeze_thaw_and_kill_while_frozen(v1, children):
    cg = v1.create("pause")
    sleeper = spawn(children, "sleep", "60")
    cg.add(sleeper.pid)
    cg.freeze()
    assert kernel.read(cg.paths()["freezer"] / "freezer.state") == "FROZEN"
    assert state(sleeper.pid).startswith("D")  # v1 frozen tasks show as uninterruptible
    cg.thaw()
    assert kernel.read(cg.paths()["freezer"] / "freezer.state") == "THAWED"
    assert not state(sleeper.pid).startswith("D")
    cg.freeze()
    cg.kill()  # docker kill on a paused container
    assert sleeper.wait(timeout=10) == -9 and cg.pids() == []
    cg.remove()


def test_v1_real_kill_without_cgroup_kill(v1, children):
    # Plain v1 has no cgroup.kill: the driver freezes, SIGKILLs each pid and loops. The
    # sleeps are our own children, not a shell's: killed grandchildren would become PID 1's
    # zombies, and test_doctor's reaping probe would see them.
    plain = V1Driver(v1.mounts, unified=None, parent=v1.parent)
    cg = plain.create("plain")
    sleepers = [spawn(children, "sleep", "60") for _ in range(3)]
    for p in sleepers:
        cg.add(p.pid)
    assert cg.pids() == sorted(p.pid for p in sleepers)
    cg.kill()
    assert cg.pids() == [] and [p.wait(timeout=10) for p in sleepers] == [-9, -9, -9]
    cg.remove()


def test_real_cleanup_of_stale_cgroups(v1, children):
    v1.create("alive")
    stale = v1.create("stale")
    orphan = spawn(children, "sleep", "60")
    stale.add(orphan.pid)
    assert v1.find_stale({"alive"}) == ["stale"]
    assert v1.cleanup_stale({"alive"}) == ["stale"]
    assert orphan.wait(timeout=10) == -9
    assert v1.names() == ["alive"]
    assert not any(p.exists() for p in stale.paths().values())


def test_v2_real_procs_freeze_kill_remove(v2, children):
    cg = v2.create("core")
    where = cg.paths()["unified"]
    assert (where / "cgroup.kill").exists(), "cgroup.kill needs Linux 5.14"
    sleeper = spawn(children, "sleep", "60")
    cg.add(sleeper.pid)
    assert cg.pids() == [sleeper.pid]
    assert "populated 1" in kernel.read(where / "cgroup.events")
    cg.freeze()
    assert kernel.read(where / "cgroup.events").splitlines()[1] == "frozen 1"
    cg.thaw()
    assert kernel.read(where / "cgroup.events").splitlines()[1] == "frozen 0"
    cg.kill()
    assert kernel.read(where / "cgroup.events").splitlines()[0] == "populated 0"
    assert sleeper.wait(timeout=10) == -9
    cg.remove()
    assert not where.exists()


def test_v2_real_limits_only_where_the_tree_offers_them(v2):
    cg = v2.create("limits")
    for name in v2.missing:
        flag = cgroups.NEEDED[name]
        with pytest.raises(CgroupError, match=f"^{flag} cannot be applied"):
            cg.set_limits(Limits(**{"memory": {"memory": 64 * MIB}, "pids": {"pids": 20},
                                    "cpu": {"cpus": 0.5}}[name]))
    if not v2.missing:  # a pure v2 host: the limits land in the kernel's own files
        cg.set_limits(Limits(memory=64 * MIB, pids=20, cpus=0.5))
        where = cg.paths()["unified"]
        assert kernel.read(where / "memory.max") == "67108864"
        assert kernel.read(where / "cpu.max") == "50000 100000"
        assert kernel.read(where / "pids.max") == "20"
    cg.remove()
