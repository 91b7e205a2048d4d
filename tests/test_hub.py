"""The course's JupyterHub with two real students (issue 17: a classroom on one machine).

The hub is the one ``make hub`` starts (deploy/hub/jupyterhub_config.py, configurable-http-
proxy from npm, LocalProcessSpawner, PAM logins), on free 127.0.0.1 ports. Two real accounts
(``useradd -m``, a password) are added by the instructor's REST API, log in through the REST
API with their Unix passwords, and start their own servers with their own tokens. Everything
a student does here goes through their own JupyterLab: a kernel of theirs, driven over the
Jupyter server's websocket through the proxy, runs ``edu`` (rootless: their own store,
user namespaces, pasta).

- The first student's ``edu run -d -p PORT:80 busybox httpd`` answers on 127.0.0.1:PORT.
  PORT is a free port standing in for the lessons' 8080 (tests never use 8080: a lesson or a
  colleague may hold it), the same port for both students, as 8080 would be.
- The second student's ``-p PORT:80`` fails with Docker's exit 125 and one sentence naming
  the holder (the first student's user), and leaves nothing half-made (no container in their
  ``edu ps -a``); their run on their own course port (EDU_PORTS, from the hub) answers.
- busybox comes to both from the shared read-only store (``scripts/hub install`` ran
  ``edu image share busybox``): neither bootstraps it.
- Neither sees the other's container in ``edu ps -a``, nor can remove it, nor read the
  other's home (their store).
- Then everything stops (containers, servers, hub, proxy) and the accounts go
  (``userdel -r``): no hub, proxy or student process, no account, no home, no port held, and
  tests/hoststate.py finds nothing new.

bench/hub_class.py is the 30-student form (memory and start-up), sharing its parts.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import hoststate
from conftest import REPO, need

sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "deploy" / "hub"))

import classroom  # noqa: E402
import hub_class as hc  # noqa: E402


def test_port_ranges_are_the_students_own_and_fit_the_lessons():
    ranges = [classroom.ports_for(uid) for uid in range(1000, 1000 + classroom.SLOTS)]
    assert ranges[0] == (20000, 20009) and ranges[1] == (20010, 20019)
    ports = [p for first, last in ranges for p in range(first, last + 1)]
    assert len(ports) == len(set(ports)), "two students share a port"
    assert min(ports) >= 1024 and max(ports) < 60000
    assert classroom.ports_for(1000 + classroom.SLOTS) == ranges[0]  # wraps, as documented


def test_the_config_binds_to_loopback_unless_told(tmp_path, monkeypatch):
    from traitlets.config import PyFileConfigLoader

    for var in [v for v in os.environ if v.startswith("EDU_HUB_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("EDU_HUB_STATE", str(tmp_path))

    def load():
        return PyFileConfigLoader("jupyterhub_config.py",
                                  path=str(REPO / "deploy" / "hub")).load_config()

    c = load()
    assert (c.JupyterHub.ip, c.JupyterHub.port) == ("127.0.0.1", 8000)
    assert c.JupyterHub.hub_ip == "127.0.0.1" and c.JupyterHub.hub_port not in (8080, 8081)
    assert c.JupyterHub.spawner_class == "localprocess"
    assert Path(c.ConfigurableHTTPProxy.command[0]).is_relative_to(REPO / "deploy" / "hub")
    monkeypatch.setenv("EDU_HUB_IP", "0.0.0.0")
    assert load().JupyterHub.ip == "0.0.0.0"


def test_two_students_on_one_hub(root):
    need(Path(hc.classroom.COURSE / "venv/bin/jupyterhub-singleuser").exists(),
         "the hub's course is not installed: run scripts/hub install (setup.sh --test does)")
    need((REPO / "deploy/hub/node_modules/.bin/configurable-http-proxy").exists(),
         "configurable-http-proxy is not installed: run scripts/hub install")
    import install

    install.course()  # the students run this clone's code (a second or less; none if same)
    before = hoststate.snapshot()
    port = hc.free_port()  # the lessons' 8080, for both students
    students = hc.make_students(2)
    a, b = students
    hub = hc.Hub()
    watched: dict[str, int] = {"hub": hub.proc.pid, "proxy": hub.proxy_pid()}
    try:
        hub.add(students)
        wrong = hc.requests.post(f"{hub.url}/hub/api/users/{a.name}/tokens", timeout=30,
                                 json={"auth": {"username": a.name, "password": "not-it"}})
        assert wrong.status_code == 403
        for s in students:
            hub.login(s)
            hub.spawn(s)
            watched[s.name] = hc.server_pid(s)
            s.kernel = hc.Kernel(hub, s)
            assert hc.ensure_busybox(s.kernel) == "shared"
        assert all(watched.values()), watched
        # Each has their own copy of the lessons, and JupyterLab opens lesson 00 in it.
        for s in students:
            assert (Path(pwd.getpwnam(s.name).pw_dir) / "notebooks/00-start-here.ipynb").is_file()
            lab = hc.requests.get(f"{hub.url}/user/{s.name}/lab/tree/notebooks/"
                                  "00-start-here.ipynb", timeout=30,
                                  headers={"Authorization": f"token {s.token}"})
            assert lab.status_code == 200 and "jupyter" in lab.text.lower(), lab.status_code
        # The hub gave each student their own port range, and the course reads it.
        own = int(b.kernel.execute("from edu_runtime.notebook import course\n"
                                   "print(course.port('web'))"))
        assert own == b.first_port and b.kernel.env("EDU_PORTS") == \
            "{}-{}".format(*classroom.ports_for(b.uid))

        code, out, err = a.kernel.edu("run", "-d", "--name", "hub-web", "-p", f"{port}:80",
                                      "busybox", "sh", "-c", hc.SERVE.format(text=a.name))
        assert code == 0, err
        a_id = out.strip()
        assert hc.until(lambda: hc.fetch(port), 20) == f"{a.name}\n"

        # The same host port, held by the first student: one sentence, exit 125, nothing made.
        code, out, err = b.kernel.edu("run", "-d", "--name", "hub-web", "-p", f"{port}:80",
                                      "busybox", "sh", "-c", hc.SERVE.format(text=b.name))
        assert code == 125, (code, out, err)
        # (busybox's first use copies it from the shared store: a line before the error)
        sentence = err.strip().splitlines()[-1]
        assert str(port) in sentence and f"user {a.name} (uid {a.uid})" in sentence, err
        assert "Traceback" not in err and err.count("edu:") == 1, err
        assert b.kernel.edu("ps", "-aq")[1].split() == []
        assert hc.fetch(port) == f"{a.name}\n"

        # The second student's own course port works.
        code, out, err = b.kernel.edu("run", "-d", "--name", "hub-web", "-p", f"{own}:80",
                                      "busybox", "sh", "-c", hc.SERVE.format(text=b.name))
        assert code == 0, err
        b_id = out.strip()
        assert hc.until(lambda: hc.fetch(own), 20) == f"{b.name}\n"

        # Each sees only their own container, and cannot remove the other's.
        for who, mine in ((a, a_id), (b, b_id)):
            listed = who.kernel.edu("ps", "-aq")[1].split()
            assert len(listed) == 1 and mine.startswith(listed[0]), (who.name, listed)
        assert a.name not in b.kernel.edu("ps", "-a")[1]
        for who, other in ((b, a_id), (a, b_id)):
            code, out, err = who.kernel.edu("rm", "-f", other)
            assert code != 0 and "No such container" in err, (code, err)
        assert hc.fetch(port) == f"{a.name}\n" and hc.fetch(own) == f"{b.name}\n"
        # Nor read the other's home, where their store and notebooks are.
        for who, other in ((b, a), (a, b)):
            home = pwd.getpwnam(other.name).pw_dir
            assert who.kernel.execute(f"import os\ntry:\n    os.listdir({home!r}); print('read')\n"
                                      "except PermissionError:\n    print('denied')") == \
                "denied\n"

        for s in students:
            code, out, err = s.kernel.edu("rm", "-f", "hub-web")
            assert code == 0, err
            s.kernel.close()
    finally:
        hub.stop()
        hc.remove_students(students)

    # Nothing left: processes, accounts, homes, ports, and edu's own objects.
    alive = {what: pid for what, pid in watched.items() if pid and hc._alive(pid)}
    assert alive == {}
    assert [p for p in Path("/proc").iterdir() if p.name.isdigit() and any(
        f"{s.name}" in hc._cmdline(int(p.name)) for s in students)] == []
    for s in students:
        try:
            pwd.getpwnam(s.name)
            raise AssertionError(f"{s.name} is still an account")
        except KeyError:
            pass
        assert not Path("/home", s.name).exists()
        assert not classroom.runtime_dir(s.uid).exists()
        assert hc.uid_processes(s.uid) == []
    assert [p for p in (port, own, hub.port, hub.api_port, hub.proxy_api_port)
            if not hc.bindable(p)] == []
    assert not hub.state.exists()
    subprocess.run([sys.executable, "-m", "edu_cli.main", "ps", "-a"], capture_output=True,
                   check=True)
    assert hoststate.wait_clean(before) == {}
