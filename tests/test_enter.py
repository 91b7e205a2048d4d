"""edu exec for real: a process that enters a running busybox container must end up with
exactly what the container's PID 1 has (cgroup, namespaces, root, capabilities, seccomp,
no_new_privs), and nothing of ours may linger or leak: no helper, no zombie, no fd."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import running

from edu_runtime import kernel, namespaces
from edu_runtime.life import enter

SECURITY = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "Seccomp", "NoNewPrivs")


def ex(record, argv, **kw) -> tuple[int, str]:
    """exec_in with stdout (and stderr) captured in a temp file: (exit code, output)."""
    with tempfile.TemporaryFile() as out:
        kw.setdefault("stderr", out.fileno())
        code = enter.exec_in(record, argv, stdout=out.fileno(), **kw)
        out.seek(0)
        return code, out.read().decode()


def status_fields(text: str) -> dict[str, str]:
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k: v.strip() for k, v in fields.items() if k in SECURITY}


@pytest.mark.parametrize("security", [
    {},
    {"cap_drop": ["ALL"], "cap_add": ["NET_ADMIN", "CHOWN"]},
    {"no_new_privs": True},
    {"seccomp": False},
], ids=["docker-default", "cap-drop-all-add-two", "no-new-privileges", "seccomp-unconfined"])
def test_exec_has_the_security_of_pid1(busybox, no_leaks, security):
    with running(busybox, **security) as (c, rec):
        code, out = ex(rec, ["sh", "-c", "cat /proc/1/status; echo ====; cat /proc/self/status"])
        assert code == 0, out
        pid1, mine = (status_fields(part) for part in out.split("===="))
        assert set(pid1) == set(SECURITY)
        assert mine == pid1
        # ... and that is the container as the host sees it, with the record's caps.
        host_view = kernel.proc_status(c.pid)
        assert {k: host_view[k] for k in SECURITY} == pid1
        assert sorted(kernel.decode_caps(mine["CapEff"])) == rec["security"]["caps"]
        assert mine["Seccomp"] == ("2" if security.get("seccomp", True) else "0")
        # Python ignores SIGPIPE and SIGXFSZ; the command must not inherit that.
        assert ex(rec, ["grep", "SigIgn", "/proc/self/status"]) == \
            (0, "SigIgn:\t0000000000000000\n")
        assert mine["NoNewPrivs"] == ("1" if security.get("no_new_privs") else "0")


def test_exec_sees_the_containers_hostname_files_pids_and_cgroup(busybox, no_leaks):
    script = ("hostname; cat /from-pid1; echo $$; cat /proc/1/cmdline | tr '\\0' ' '; echo;"
              "ls /proc | grep -c '^[0-9]'; echo ====; cat /proc/self/cgroup; echo ====;"
              "cat /proc/1/cgroup; echo ====;"
              "for n in cgroup ipc mnt net pid uts; do readlink /proc/self/ns/$n;"
              " readlink /proc/1/ns/$n; done; echo exec-was-here > /from-exec")
    with running(busybox, ["sh", "-c", "echo pid1-was-here > /from-pid1; exec sleep 60"],
                 hostname="exec-box") as (c, rec):
        deadline = time.monotonic() + 5
        while not (c.paths.upper / "from-pid1").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        code, out = ex(rec, ["sh", "-c", script])
        assert code == 0, out
        head, cg_self, cg_pid1, ns = out.split("====")
        hostname, marker, my_pid, pid1_cmd, nprocs = head.split("\n")[:5]
        assert hostname == "exec-box"
        assert marker == "pid1-was-here"
        assert 1 < int(my_pid) < 100  # numbered inside the container's pid namespace
        assert pid1_cmd.strip() == "sleep 60"
        assert int(nprocs) <= 5  # PID 1, the shell, ls, grep: not the host's processes
        assert cg_self.split() == cg_pid1.split()
        assert all(line.endswith(":/") for line in cg_self.split())  # its cgroup ns root
        links = ns.split()
        assert len(links) == 12 and links[0::2] == links[1::2]
        host = namespaces.inodes("self")
        assert not set(links) & set(host.values())
        # What exec wrote is in the container's own upper directory, not on the host.
        assert (c.paths.upper / "from-exec").read_text() == "exec-was-here\n"
        assert not Path("/from-exec").exists()


def test_exec_user_env_and_workdir(busybox, no_leaks):
    with running(busybox, env={"FROM_RUN": "1"}, hostname="h1") as (c, rec):
        code, out = ex(rec, ["sh", "-c", "id -u; id -g; pwd; echo $GREETING $FROM_RUN "
                             "$HOSTNAME; grep CapEff /proc/self/status"],
                       user="nobody", env={"GREETING": "hi"}, workdir="/tmp")
        assert code == 0, out
        uid, gid, cwd, env_line, capeff = out.splitlines()
        assert (uid, gid, cwd, env_line) == ("65534", "65534", "/tmp", "hi 1 h1")
        assert capeff.split()[1] == "0000000000000000"  # a user, not root: no capabilities
        code, out = ex(rec, ["sh", "-c", "id -u; id -g; pwd"], user="1234:55")
        assert out.split() == ["1234", "55", "/"]
    with running(busybox, user="nobody") as (c, rec):
        assert ex(rec, ["id", "-u"])[1].strip() == "65534"  # the container's user by default
        assert ex(rec, ["id", "-u"], user="root")[1].strip() == "0"


def test_exec_exit_codes_are_dockers(busybox, no_leaks):
    with running(busybox) as (c, rec):
        assert ex(rec, ["sh", "-c", "exit 42"])[0] == 42
        assert ex(rec, ["sh", "-c", "kill -9 $$"])[0] == 137
        cases = [(["no-such-program"], {}, 127, "executable file not found: no-such-program"),
                 (["/etc/passwd"], {}, 126, "cannot execute /etc/passwd: Permission denied"),
                 (["true"], {"user": "nosuch"}, 126, "unable to find user nosuch"),
                 (["true"], {"workdir": "/no/such/dir"}, 126,
                  "cannot change to working directory /no/such/dir"),
                 (["true"], {"workdir": "tmp"}, 126, "must be an absolute path")]
        for argv, kw, code, words in cases:
            with pytest.raises(enter.ExecError) as err:
                enter.exec_in(rec, argv, **kw)
            assert err.value.exit_code == code, err.value.message
            assert words in err.value.message
    # The container is gone now: a sentence, not a setns into whatever has its pid.
    with pytest.raises(enter.ExecError, match="is not running"):
        enter.exec_in(rec, ["true"])
    with pytest.raises(enter.ExecError, match="is not running"):
        enter.exec_in({**rec, "status": "exited", "pid": 0}, ["true"])


def test_stdin_and_tty(busybox, no_leaks):
    with running(busybox) as (c, rec), tempfile.TemporaryFile() as given:
        given.write(b"typed in\n")
        given.seek(0)
        assert ex(rec, ["cat"], stdin=given.fileno()) == (0, "typed in\n")
        assert ex(rec, ["cat"]) == (0, "")  # no stdin: /dev/null, as without -i
        code, out = ex(rec, ["sh", "-c", "tty; echo $TERM; ls /proc/self/fd"], tty=True)
        assert code == 0
        # A terminal of the container's own devpts, and no fd of ours beyond 0, 1, 2.
        assert out.split() == ["/dev/pts/0", "xterm", "0", "1", "2", "3"]


def test_nothing_lingers_between_us_and_the_command(busybox, no_leaks):
    """While the command runs it is our direct child (the helper is gone), inside the
    container's cgroup; afterwards nothing is left: no child, no zombie, no subreaper."""
    with running(busybox) as (c, rec):
        r, w = os.pipe()
        null = os.open(os.devnull, os.O_WRONLY)
        result = {}
        t = threading.Thread(target=lambda: result.update(code=enter.exec_in(
            rec, ["cat"], stdin=r, stdout=null)))
        t.start()
        try:
            deadline = time.monotonic() + 5
            kids: list[str] = []
            while time.monotonic() < deadline:
                kids = [p.name for p in Path("/proc").iterdir() if p.name.isdigit()
                        and p.name != str(c.pid)  # the container's PID 1 is ours too
                        and kernel.proc_status(p.name).get("PPid") == str(os.getpid())]
                if kids and kernel.read(f"/proc/{kids[0]}/comm") == "cat":
                    break
                time.sleep(0.01)
            assert len(kids) == 1 and kernel.read(f"/proc/{kids[0]}/comm") == "cat", kids
            pid = int(kids[0])
            assert namespaces.inodes(pid) == namespaces.inodes(c.pid)
            nspid = kernel.proc_status(pid)["NSpid"].split()
            assert len(nspid) == 2 and nspid[0] == str(pid) and nspid[1] != "1"
            for directory in rec["cgroup"].values():
                assert str(pid) in (kernel.read(Path(directory) / "cgroup.procs") or "").split()
        finally:
            os.close(w)
            t.join(10)
            os.close(r)
            os.close(null)
        assert result == {"code": 0}


def test_exec_into_a_container_that_shares_the_hosts_pid_and_uts(busybox, no_leaks):
    with running(busybox, pid="host", uts="host") as (c, rec):
        code, out = ex(rec, ["sh", "-c", "echo $$; hostname; cat /proc/1/comm"])
        pid, name, init = out.split()
        assert code == 0 and int(pid) > 1 and name == os.uname().nodename
        assert init == kernel.read("/proc/1/comm")
