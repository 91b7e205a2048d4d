"""edu_runtime for real: containers from the busybox image, checked from inside and out.

Every test runs real namespaces, cgroups, overlays, seccomp and capabilities, as root (CI),
and checks that nothing is left behind: mounts, cgroup dirs, processes, container dirs.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from accounts import processes
from conftest import need

from edu_runtime import capabilities, kernel, namespaces, paths
from edu_runtime.container import Container, diff, plan
from edu_runtime.kernel import pid_alive
from edu_runtime.steps import StepError


def run(image, command, **kw) -> tuple[int, str]:
    """Run a container with stdout captured through a pipe; returns (exit code, output)."""
    r, w = os.pipe()
    saved = os.dup(1)
    os.dup2(w, 1)
    os.close(w)
    try:
        c = Container(image, command, remove=True, **kw)
        code = c.run()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    with os.fdopen(r) as f:
        return code, f.read()


def test_namespaces_pid1_hostname(busybox, no_leaks):
    code, out = run(busybox, ["sh", "-c", "echo pid=$$; hostname; "
                              "for n in cgroup ipc mnt net pid uts; do "
                              "readlink /proc/self/ns/$n; done"], hostname="box1")
    assert code == 0
    lines = out.split()
    assert lines[0] == "pid=1" and lines[1] == "box1"
    host = namespaces.inodes("self")
    for line in lines[2:]:
        name = line.split(":")[0]
        assert line != host[name], f"{name} namespace is the host's"


def test_no_host_mount_visible(busybox, no_leaks):
    code, out = run(busybox, ["cat", "/proc/self/mountinfo"])
    assert code == 0
    inside = {line.split()[4] for line in out.splitlines()}
    assert "/" in inside and "/proc" in inside and "/dev" in inside
    host_only = {m["mount_point"] for m in kernel.mountinfo()} - {"/", "/proc", "/sys",
                                                                   "/dev", "/dev/pts",
                                                                   "/dev/shm", "/dev/mqueue"}
    assert not (inside & host_only), inside & host_only
    assert not any(p.startswith(str(paths.state_dir())) for p in inside)


def test_capeff_is_docker_default_within_host_bounding(busybox, no_leaks):
    code, out = run(busybox, ["grep", "Cap", "/proc/self/status"])
    status = dict(line.split(":\t") for line in out.splitlines())
    want = capabilities.DOCKER_DEFAULT & set(capabilities.host_bounding())
    assert set(kernel.decode_caps(status["CapEff"])) == want
    assert set(kernel.decode_caps(status["CapBnd"])) == want


def test_cap_add_and_drop(busybox, no_leaks):
    code, out = run(busybox, ["grep", "CapEff", "/proc/self/status"],
                    cap_add=["NET_ADMIN"], cap_drop=["chown", "CAP_KILL"])
    caps = set(kernel.decode_caps(out.split()[1]))
    assert "CAP_NET_ADMIN" in caps and "CAP_CHOWN" not in caps and "CAP_KILL" not in caps


def test_seccomp_blocks_unshare_and_unconfined_allows_it(busybox, no_leaks):
    code, out = run(busybox, ["sh", "-c", "grep Seccomp: /proc/self/status; unshare -U true; "
                              "echo rc=$?"])
    assert "Seccomp:\t2" in out and "rc=0" not in out
    code, out = run(busybox, ["sh", "-c", "grep Seccomp: /proc/self/status; unshare -U true; "
                              "echo rc=$?"], seccomp=False)
    assert "Seccomp:\t0" in out and "rc=0" in out


def test_no_new_privileges_switch(busybox, no_leaks):
    _, out = run(busybox, ["grep", "NoNewPrivs", "/proc/self/status"])
    assert out.split()[1] == "0"
    _, out = run(busybox, ["grep", "NoNewPrivs", "/proc/self/status"], no_new_privs=True)
    assert out.split()[1] == "1"


def test_read_only_switch(busybox, no_leaks):
    code, out = run(busybox, ["sh", "-c", "touch /x 2>&1; echo rc=$?"], read_only=True)
    assert "Read-only file system" in out and "rc=1" in out
    code, out = run(busybox, ["sh", "-c", "touch /x; echo rc=$?"])
    assert "rc=0" in out


def test_pid_host_switch(busybox, no_leaks):
    code, out = run(busybox, ["sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'"], pid="host")
    pid, count = out.split()
    assert pid != "1" and int(count) > 10


def test_missing_command_is_127_with_a_sentence(busybox, no_leaks):
    c = Container(busybox, ["no-such-program"], remove=True)
    with pytest.raises(StepError) as err:
        c.run()
    assert err.value.exit_code == 127
    assert "executable file not found: no-such-program in image busybox" in err.value.message


def test_user_and_workdir_and_env(busybox, no_leaks):
    code, out = run(busybox, ["sh", "-c", "id -u; pwd; echo $GREETING; echo $HOME"],
                    user="nobody", workdir="/tmp/work", env={"GREETING": "hi"})
    assert out.split() == ["65534", "/tmp/work", "hi", "/home"] or \
        out.split()[:3] == ["65534", "/tmp/work", "hi"]


def test_exit_code_passes_through(busybox, no_leaks):
    assert run(busybox, ["sh", "-c", "exit 42"])[0] == 42


def test_oom_kill_is_137_and_reported(busybox, no_leaks):
    c = Container(busybox, ["sh", "-c", "tail /dev/zero"], memory="32m", remove=True)
    assert c.run() == 137
    assert c.oom_killed


def test_pids_limit_stops_a_fork_bomb(busybox, no_leaks):
    """A shell forks until the kernel refuses (EAGAIN at --pids-limit 20) and dies of it;
    PID 1 then execs sleep. The host sees the cgroup hold at most 20 processes, and the
    kernel's own counter of refused forks went up."""
    bomb = "sh -c 'while true; do sleep 30 & done'; exec sleep 30"
    c = Container(busybox, ["sh", "-c", bomb], pids_limit=20, remove=True)
    c.start()
    try:
        import time
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            events = c._ctx.cgroup.observe()
            refused = [v for k, v in events.items() if k.endswith("pids.events")]
            if refused and refused[0].split()[-1] != "0":
                break
            time.sleep(0.05)
        assert refused and int(refused[0].split()[-1]) >= 1, events
        assert 15 <= len(c._ctx.cgroup.pids()) <= 20
    finally:
        c.kill()
        assert c.wait() == 137


def test_cpu_quota_throttles(busybox, no_leaks):
    """--cpus 0.2 writes a CFS quota of 20 ms per 100 ms; a busy loop gets throttled."""
    import time

    c = Container(busybox, ["sh", "-c", "while true; do :; done"], cpus=0.2, remove=True)
    c.start()
    try:
        time.sleep(0.6)
        stats = c._ctx.cgroup.observe()
    finally:
        c.kill()
        c.wait()
    quota = stats.get("cpu/cpu.cfs_quota_us") or stats.get("unified/cpu.max", "").split()[0]
    assert quota == "20000"
    cpu_stat = stats.get("cpu/cpu.stat") or stats.get("unified/cpu.stat", "")
    throttled = dict(line.split() for line in cpu_stat.splitlines())
    assert int(throttled["nr_throttled"]) >= 2


def test_stepper_pauses_and_host_sees_namespaces(busybox, no_leaks):
    c = Container(busybox, ["true"], remove=True)
    stepper = c.steps()
    seen = []
    while stepper.upcoming is not None:
        name = stepper.upcoming.name
        rec = stepper.advance()
        if name == "namespaces":
            # The child is paused here: its namespaces already differ from ours.
            assert c.pid and namespaces.inodes(c.pid)["mnt"] != namespaces.inodes("self")["mnt"]
            assert rec.after["net"]["new"] and not rec.before.get("net", {}).get("new")
        if name == "pivot_root":
            assert rec.after["host root visible"] is False
        seen.append(name)
        assert diff(rec) is not None
    assert seen[0] == "fork" and seen[-1] == "exec"
    assert c.wait() == 0


# Every step of a root container's plan ("id maps" and "network holder" run only rootless: see
# the rootless tests).
ROOT_PLAN = [s.name for s in plan() if s.name not in ("id maps", "network holder")]


@pytest.mark.parametrize("victim", ROOT_PLAN)
def test_teardown_after_a_failure_in_each_step(busybox, victim, monkeypatch, no_leaks):
    """Inject an exception into each step in turn: everything applied is undone, and the
    container's directory, cgroup, mounts and processes are gone (the no_leaks fixture)."""
    cls = type(next(s for s in plan() if s.name == victim))

    def boom(self, ctx):
        raise OSError(5, f"injected failure in {victim}")

    monkeypatch.setattr(cls, "apply", boom)
    # Steps that only some containers have get the flag that enables them.
    c = Container(busybox, ["true"], remove=False, init=victim == "init",
                  volumes=["/data"] if victim == "volumes" else None,
                  publish=["80"] if victim in ("ports", "nat") else None)
    with pytest.raises((StepError, OSError), match="injected failure|Input/output"):
        c.run()
    assert [r.name for r in c.trace.steps][-1] == victim


def test_trace_json_schema(busybox, no_leaks):
    c = Container(busybox, ["true"], remove=True)
    assert c.run() == 0
    t = c.trace.to_dict()
    assert t["schema"] == "edu.trace/2"
    names = [s["name"] for s in t["steps"]]
    assert names[0] == "fork" and names[-1] == "exec" and "pivot_root" in names
    assert all(s["end"] >= s["start"] >= t["started"] for s in t["steps"])
    assert any(["pivot_root"] in s["syscalls"] for s in t["steps"])
    json.dumps(t)


def test_cli_run_exit_codes(busybox, python):
    def edu(*argv):
        return subprocess.run([python, "-m", "edu_cli.main", *argv], capture_output=True,
                              text=True, timeout=60)
    out = edu("run", "--rm", "busybox", "echo", "hello")
    assert out.returncode == 0 and out.stdout == "hello\n"
    out = edu("run", "--rm", "busybox", "nope")
    assert out.returncode == 127 and "executable file not found: nope" in out.stderr
    out = edu("run", "--rm", "--memory", "64x", "busybox", "true")
    assert out.returncode == 125 and "--memory" in out.stderr
    out = edu("run", "--rm", "no-such-image", "true")
    assert out.returncode == 125 and "no-such-image" in out.stderr
    out = edu("run", "--rm", "--trace", "busybox", "true")
    assert out.returncode == 0 and "pivot_root" in out.stderr


def test_sigkilled_owner_is_cleaned_by_the_next_command(busybox, python):
    """A process that started a container itself (a notebook's kernel; a rootless `edu
    run`) is SIGKILLed: the container dies with it, and the next edu command cleans up."""
    import time

    cdir = paths.state_dir() / "containers"
    known = {p.name for p in cdir.iterdir()} if cdir.exists() else set()
    proc = subprocess.Popen([python, "-c", "from edu_runtime.container import Container; "
                             "Container('busybox', ['sleep', '60'], remove=True, "
                             "network='none').run()"])
    deadline, ours = time.monotonic() + 20, None
    while time.monotonic() < deadline and ours is None:
        for rec in cdir.glob("*/state.json"):
            if rec.parent.name not in known and json.loads(rec.read_text())["status"] == \
                    "running":
                ours = json.loads(rec.read_text())
        time.sleep(0.02)
    assert ours is not None, "the container never reached running"
    proc.kill()
    proc.wait()
    # The container died with its parent (PR_SET_PDEATHSIG), but its record, upper dir and
    # cgroup are still there until the next edu command looks.
    assert (cdir / ours["id"]).exists()
    out = subprocess.run([python, "-m", "edu_cli.main", "run", "--rm", "busybox", "true"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0
    assert not (cdir / ours["id"]).exists()
    assert not any(Path(p).exists() for p in ours["cgroup"].values())
    # Killed; a zombie at most, until init reaps it (it is no longer ours to reap).
    assert not pid_alive(ours["pid"])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rootless_run_as_a_student(student):
    """A real user (their own copy of the course, readable from any clone): uid 0 inside is
    their uid outside, pasta gives the network, and -p publishes a port without root."""
    boot = student.edu("bootstrap", "busybox", timeout=120)
    assert boot.returncode == 0, boot.stderr
    earlier = processes(student.uid)  # an idle helper of an earlier test may still be there
    out = student.edu("run", "--rm", "busybox", "sh", "-c", "id -u; cat /proc/self/uid_map; "
                      "cat /proc/net/dev | grep -c eth0", timeout=60)
    assert out.returncode == 0, out.stderr
    uid, *mapping, eth0 = out.stdout.split()
    assert uid == "0" and mapping == ["0", str(student.uid), "1"]
    assert eth0 == "1"  # pasta's tap: rootless networking
    # -p without root: pasta listens on the host port and relays to the container.
    port = _free_port()
    httpd = ("mkdir -p /www && echo rootless-hello > /www/index.html && "
             "httpd -p 80 -h /www && sleep 4")
    web = student.popen([student.python, "-m", "edu_cli.main", "run", "--rm", "-p",
                         f"{port}:80", "busybox", "sh", "-c", httpd],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import urllib.request
        body = None
        for _ in range(60):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/",
                                              timeout=1).read().decode()
                break
            except OSError:
                time.sleep(0.1)
        assert body == "rootless-hello\n", web.stderr.read() if web.poll() else body
        # pasta is the way out, and runs as the student (its comm is passt's binary's name).
        assert [cmd for _, cmd in processes(student.uid) if cmd.startswith("pasta ")]
    finally:
        assert web.wait(timeout=30) == 0
    # Nothing of the student's runs on after their last container: no pasta, no holder.
    assert set(processes(student.uid)) <= set(earlier)


def test_no_zombie_children_after_runs(busybox):
    """The runtime reaps what it starts, and is a subreaper only while PID 1 is handed over:
    nothing else may end up as a zombie child of the process that uses it."""
    assert not kernel.get_child_subreaper()
    run(busybox, ["sh", "-c", "sleep 0.1 & exit 0"])
    Container(busybox, ["true"], remove=True).run()
    assert not kernel.get_child_subreaper()
    zombies = [p.name for p in Path("/proc").iterdir() if p.name.isdigit()
               and kernel.proc_status(p.name).get("PPid") == str(os.getpid())
               and kernel.proc_status(p.name).get("State", "").startswith("Z")]
    assert zombies == []


def test_kernel_sharing_is_visible(busybox, no_leaks):
    from edu_runtime import sharing

    c = Container(busybox, ["sh", "-c", "sleep 30 & sleep 30; echo done"], remove=True)
    c.start()
    try:
        import time

        # Wait for the state the test is about: sh and its two sleeps. Between fork and exec
        # a busybox child is briefly called "exe" (it re-executes /proc/self/exe), so a
        # count alone can catch a half-made process.
        def settled() -> bool:
            procs = sharing.host_pids_of(c.pid)
            return len(procs) == 3 and {p["command"] for p in procs} == {"sh", "sleep"}

        deadline = time.monotonic() + 30
        while not settled():
            assert time.monotonic() < deadline, sharing.host_pids_of(c.pid)
            time.sleep(0.02)
        rows = sharing.compare(c.pid)
        assert rows["uname -r"]["same"] and rows["uname -r"]["host"] == os.uname().release
        assert rows["boot_id"]["same"] and rows["boot_id"]["host"] == kernel.boot_id()
        procs = rows["processes"]["container"]
        assert {p["container_pid"] for p in procs} >= {1}
        assert all(p["host_pid"] != p["container_pid"] for p in procs)
        assert {p["command"] for p in procs} == {"sh", "sleep"}
        assert "boot_id" in sharing.table(c.pid)
    finally:
        c.kill()
        c.wait()


@pytest.fixture(scope="session")
def python_image():
    """Debian's python3 on the debian base, in the default store (built once, ~50 s)."""
    from edu_runtime.images import bootstrap
    from edu_runtime.images.store import Store

    need(os.geteuid() == 0, "root")
    return bootstrap.bootstrap(Store(), "python", progress=False)


@pytest.mark.slow
def test_clone3_enosys_and_threads_run_under_seccomp(python_image, no_leaks):
    script = (
        "import ctypes, errno, threading\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "r = libc.syscall(435, 0, 0)\n"  # clone3(NULL, 0)
        "print('clone3', errno.errorcode[ctypes.get_errno()])\n"
        "r = libc.syscall(250, 0, 0, 0, 0, 0)\n"  # keyctl
        "print('keyctl', errno.errorcode[ctypes.get_errno()])\n"
        "out = []\n"
        "ts = [threading.Thread(target=out.append, args=(i,)) for i in range(8)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "print('threads', len(out))\n")
    code, out = run(python_image, ["python3", "-c", script])
    assert code == 0, out
    assert out.split("\n")[:3] == ["clone3 ENOSYS", "keyctl EPERM", "threads 8"]


def test_idle_host_keeps_no_edu_cgroup(busybox):
    """The last container out removes the `edu` parent cgroups as well."""
    assert run(busybox, ["true"])[0] == 0
    # Any `edu` parent still there must be holding another container's cgroup (another
    # test's, or a student's detached container): an empty one is a leak.
    empty = [p for p in Path("/sys/fs/cgroup").glob("*/edu")
             if p.is_dir() and not any(c.is_dir() for c in p.iterdir())]
    assert empty == []


def test_removing_a_container_never_follows_its_symlinks(busybox, tmp_path):
    """A container may leave `ln -s / x` in its upper dir; removing it must not touch /."""
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    before = (os.stat("/").st_mode, outside.stat().st_mode)
    c = Container(busybox, ["sh", "-c", f"mkdir /d; ln -s / /d/root; ln -s {outside} /d/o"])
    assert c.run() == 0
    from edu_runtime.life.control import remove_dir

    remove_dir(c.paths.dir)
    assert (os.stat("/").st_mode, outside.stat().st_mode) == before
    assert not c.paths.dir.exists()


def test_container_starts_with_default_signals(busybox, no_leaks):
    """Nothing the runtime's caller ignored or blocked (Python ignores SIGPIPE; CI runners
    ignore signal 32) reaches the container: a fresh program expects every default."""
    code, out = run(busybox, ["grep", "-E", "SigIgn|SigBlk", "/proc/self/status"])
    assert out.split() == ["SigBlk:", "0000000000000000", "SigIgn:", "0000000000000000"]


def test_run_without_network_never_imports_pyroute2_or_libvirt(busybox, python):
    """`edu run --network none` pays for no netlink library and no hypervisor binding: not
    in the CLI, which is a thin client of the supervisor, nor in a supervisor that has only
    started such containers."""
    from edu_runtime.life import client

    def imports(*argv):
        out = subprocess.run([python, "-X", "importtime", "-m", "edu_cli.main", *argv],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return {line.split("|")[-1].strip() for line in out.stderr.splitlines()
                if line.startswith("import time:")}

    client.shutdown()
    cold = imports("run", "--rm", "--network", "none", "busybox", "true")  # starts one
    thin = imports("run", "--rm", "--network", "none", "busybox", "true")
    heavy = ("pyroute2", "libvirt", "matplotlib", "vm_compare")
    for imported in (cold, thin):
        assert not {m for m in imported if m.split(".")[0] in heavy}
    # The thin client: no parser, no paths, no JSON, not even the socket module.
    assert not thin & {"argparse", "pathlib", "json", "socket", "edu_runtime.container"}
    assert client.ask({"op": "ping"})["imported"] == []


def test_a_bridge_run_imports_the_netlink_library_once_in_the_supervisor(busybox, python):
    """The supervisor forks a shim per thin `edu run`; a shim that imported pyroute2 (and
    asyncio under it, 0.1 s) itself lost it when it exited, so every bridge run paid again.
    The first bridge run imports it in the supervisor, before the fork; the shims, and every
    later run, find it imported (bench/run_startup.py: 175 ms to about 65 ms)."""
    from edu_runtime.life import client

    client.shutdown()
    for network in ("none", "bridge", "bridge"):  # the first starts it: the others are thin
        out = subprocess.run([python, "-m", "edu_cli.main", "run", "--rm", "--network",
                              network, "busybox", "true"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    assert client.ask({"op": "ping"})["imported"] == ["pyroute2"]


def test_thin_client_finds_the_supervisor_where_the_runtime_puts_it(monkeypatch, tmp_path):
    """fastrun computes the socket's path without pathlib; it must be the runtime's path."""
    from edu_cli import fastrun
    from edu_runtime.life import client

    assert fastrun.socket_path() == client.socket_path()
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.setenv("EDU_STATE_DIR", str(tmp_path / "link"))
    monkeypatch.setenv("EDU_RUN_DIR", str(tmp_path / "run"))
    assert fastrun.socket_path() == client.socket_path()
    assert fastrun.socket_path().startswith(str(tmp_path / "run") + "/supervisor-")


def test_orphan_empty_cgroups_are_cleaned_by_the_next_command(busybox, python):
    """An empty container cgroup with no record (an older edu's leftover) goes at the next
    command; a fresh one (a concurrent start) is left alone."""
    from edu_runtime import cgroups

    driver = cgroups.driver()
    old, fresh = driver.create("orphan-" + "a" * 20), driver.create("orphan-" + "b" * 20)
    try:
        for p in old.paths().values():
            os.utime(p, (time.time() - 600, time.time() - 600))
        subprocess.run([python, "-m", "edu_cli.main", "ps"], check=True, capture_output=True)
        assert not any(p.exists() for p in old.paths().values())
        assert all(p.exists() for p in fresh.paths().values())
    finally:
        old.remove()
        fresh.remove()
