"""Two real students on one machine, rootless (issue 17's classroom): neither can see, inspect,
stop or remove the other's containers, images, networks or volumes; one's prune never
touches the other's; their state and run dirs are theirs alone (0700). A host port one of
them publishes is refused to the other, and to root, in one sentence naming its holder, with
nothing half-made. Lesson 10's limits need ("limits") is false for a student on this cgroup
v1 host, true for root, and true for a user with a delegated cgroup v2 subtree (a temp-dir
cgroupfs in the kernel's formats).
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import urllib.request
from pathlib import Path

import hoststate
from conftest import PURE_V2_MOUNTINFO, wait_for
from shr_students import shared_dir, students
from test_cgroups import USER_CGROUP, write_files

from edu_runtime import cgroups, kernel


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).status == 200
    except OSError:
        return False


def test_two_students_are_apart_and_a_taken_port_names_its_holder(root, busybox, cli):
    before = hoststate.snapshot()
    with shared_dir() as where:
        env = {"EDU_SHARED_DIR": str(where)}
        subprocess.run(["env", f"EDU_SHARED_DIR={where}", *cli_argv(), "image", "share",
                        "busybox"], check=True, capture_output=True)
        with students("a", "b") as (ann, bob):
            port = {ann.name: _free_port(), bob.name: _free_port()}
            ids = {}
            for s in (ann, bob):
                tag = s.name.split("-")[1]
                www = f"mkdir -p /www && echo {s.name} > /www/index.html && exec httpd -f " \
                      "-p 80 -h /www"
                out = s.edu("run", "-d", "--name", "shr-w", "-p", f"{port[s.name]}:80",
                            "busybox", "sh", "-c", www, env=env)
                assert out.returncode == 0, out.stderr
                ids[s.name] = out.stdout.strip()
                for argv in (("network", "create", f"shr-net-{tag}"),
                             ("volume", "create", f"shr-vol-{tag}"),
                             ("tag", "busybox", f"shr-img-{tag}")):
                    made = s.edu(*argv)
                    assert made.returncode == 0, made.stderr
                assert wait_for(lambda p=port[s.name]: _answers(p), 20)

            # Their own dirs, 0700: the other cannot even list them.
            for s, other in ((ann, bob), (bob, ann)):
                for d in (s.home / ".local/share/edu", s.runtime_dir / "edu"):
                    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
                    assert other.run(["ls", str(d)]).returncode != 0

            # Nothing of the other's is visible or reachable by id or name.
            a, b = ids[ann.name], ids[bob.name]
            assert ann.edu("ps", "-aq").stdout.split() == [a[:12]]
            for argv in (("inspect", b), ("stop", b), ("rm", "-f", b), ("logs", b),
                         ("rmi", "shr-img-b"), ("network", "rm", "shr-net-b"),
                         ("volume", "rm", "shr-vol-b")):
                out = ann.edu(*argv)
                assert out.returncode != 0, argv
                said = out.stderr.lower()
                assert "no such" in said or "not found" in said, (argv, out.stderr)
                assert "Traceback" not in out.stderr
            assert "shr-img-b" not in ann.edu("images").stdout
            assert "shr-net-b" not in ann.edu("network", "ls").stdout
            assert "shr-vol-b" not in ann.edu("volume", "ls").stdout

            # Bob wants Ann's port: one sentence naming her, and no container half-made.
            clash = bob.edu("run", "-d", "--name", "shr-clash", "-p", f"{port[ann.name]}:80",
                            "busybox", "true")
            assert clash.returncode == 125 and "Traceback" not in clash.stderr
            assert len(clash.stderr.strip().splitlines()) == 1, clash.stderr
            assert f"Bind for 0.0.0.0:{port[ann.name]} failed: address already in use" \
                in clash.stderr
            assert f"of user {ann.name} (uid {ann.uid})" in clash.stderr
            assert "EDU_PORTS" in clash.stderr
            assert "shr-clash" not in bob.edu("ps", "-a").stdout
            # Root is told the same, and sees the process too (Ann's supervisor).
            bobs = clash.stderr
            clash = cli("run", "--rm", "--name", "shr-clash", "-p", f"{port[ann.name]}:80",
                        "busybox", "true", check=False)
            assert clash.returncode == 125 and len(clash.stderr.strip().splitlines()) == 1
            assert "shr-clash" not in cli("ps", "-a").stdout
            # The same sentence, but that root may see the holding process (her supervisor).
            assert f"a socket on 0.0.0.0 of user {ann.name} (uid {ann.uid}), whose " \
                "processes are not yours to see" in bobs
            assert f"(a container of user {ann.name} (uid {ann.uid}): edu's supervisor (pid " \
                in clash.stderr
            for said in (bobs, clash.stderr):
                head, _, rest = said.partition(" (")
                assert head == f"edu: ports: Bind for 0.0.0.0:{port[ann.name]} failed: " \
                    "address already in use"
                assert rest.rpartition("): ")[2] == bobs.rpartition("): ")[2]

            # Ann clears everything of hers; Bob's all stay, and his server still answers.
            for argv in (("rm", "-f", a), ("prune",), ("image", "prune", "-f"),
                         ("rmi", "shr-img-a"), ("network", "rm", "shr-net-a"),
                         ("volume", "prune", "-f"), ("volume", "rm", "shr-vol-a")):
                out = ann.edu(*argv)
                assert out.returncode == 0, (argv, out.stderr)
            assert ann.edu("ps", "-aq").stdout.strip() == ""
            assert bob.edu("ps", "-q").stdout.split() == [b[:12]]
            assert "shr-img-b" in bob.edu("images").stdout
            assert "shr-net-b" in bob.edu("network", "ls").stdout
            assert "shr-vol-b" in bob.edu("volume", "ls").stdout
            assert _answers(port[bob.name])
            out = bob.edu("rm", "-f", b)
            assert out.returncode == 0, out.stderr
            print(bobs + clash.stderr)
    cli("ps")  # (one ordinary edu command, then the host is as it was)
    assert hoststate.wait_clean(before) == {}


def cli_argv() -> list[str]:
    import sys

    return [sys.executable, "-m", "edu_cli.main"]


def test_limits_need_says_who_gets_a_cgroup(root, tmp_path):
    # This host: cgroup v1 controllers. Root's containers get limits; a student's none.
    ok, why = cgroups.limits_here()
    assert ok and "as root" in why
    with students("l") as (lee,):
        out = lee.run([lee.python, "-c", "from edu_runtime import cgroups; "
                       "print(cgroups.limits_here())"])
        assert out.stdout.startswith("(False, ") and "cgroup v1" in out.stdout, out.stderr
        assert "cannot be delegated to a user" in out.stdout
        # edu doctor's cgroups line says it too, as the student.
        out = lee.run([lee.python, "-c", "from edu_runtime import probes; r = probes."
                       "judge_cgroups(probes.facts_cgroups()); print(r.status, r.summary)"])
        assert out.stdout.startswith("warn "), out.stdout
        assert "lesson 10's limits replay a recording for this user" in out.stdout

    # cgroup v2 with systemd delegation: the user's own subtree, writable, offering the
    # controllers, with the lab's processes in a child cgroup: limits apply, live.
    mine = tmp_path / "sys/fs/cgroup" / USER_CGROUP
    write_files(tmp_path / "sys/fs/cgroup", {"cgroup.controllers": "cpu io memory pids\n"})
    write_files(mine, {"cgroup.controllers": "cpu memory pids\n", "cgroup.type": "domain\n",
                       "cgroup.subtree_control": "\n", "cgroup.procs": ""})
    found = cgroups.hierarchies(kernel.parse_mountinfo(PURE_V2_MOUNTINFO), root=tmp_path)
    proc = f"0::/{USER_CGROUP}\n"
    ok, why = cgroups.limits_here(found, root=tmp_path, uid=1000, proc_cgroup=proc)
    assert ok and "delegated to this user" in why and "cgroup v2" in why
    # Not delegated (systemd offers the user no controllers): replay, and why.
    (mine / "cgroup.controllers").write_text("\n")
    ok, why = cgroups.limits_here(found, root=tmp_path, uid=1000, proc_cgroup=proc)
    assert not ok and "not delegated to this user" in why
    # Root on the same v2 host: live.
    ok, why = cgroups.limits_here(found, root=tmp_path, uid=0)
    assert ok and "cgroup v2, as root" in why


def test_lesson_10_says_which_parts_replay_and_why(root):
    from edu_runtime.notebook import course

    info = course.declaration("10-limits-and-security")
    assert {p.name for p in info.parts if "limits" in p.needs} == {"memory", "pids", "cpu"}
    assert Path(course.notebooks_dir() / "10-limits-and-security.ipynb").exists()


def test_a_run_dir_in_tmp_is_the_students_own(root):
    """Without XDG_RUNTIME_DIR (a spawner that sets none), the run dir is /tmp/edu-UID: made
    0700 by the student, and refused in a sentence if someone else made it first."""
    with students("t") as (tom,):
        fallback = Path(f"/tmp/edu-{tom.uid}")
        try:
            fallback.mkdir(mode=0o755)  # someone else's (root's), made first
            out = tom.edu("ps", env={"XDG_RUNTIME_DIR": ""})
            assert out.returncode == 125 and "Traceback" not in out.stderr
            assert f"{fallback} belongs to uid 0, not to you (uid {tom.uid})" in out.stderr
            fallback.rmdir()
            out = tom.edu("ps", env={"XDG_RUNTIME_DIR": ""})
            assert out.returncode == 0, out.stderr
            st = os.stat(fallback)
            assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (tom.uid, 0o700)
        finally:
            subprocess.run(["rm", "-rf", str(fallback)], check=True)
