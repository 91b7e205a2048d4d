"""A class on one machine through the course's JupyterHub: 30 students at once.

The real thing, as a class meets it: JupyterHub from ``deploy/hub/jupyterhub_config.py``
(the one ``make hub`` starts) with configurable-http-proxy, 30 real Unix accounts
(``useradd -m``, a password, PAM), each logged in through the hub's REST API with that
password, each one's JupyterLab started through the REST API (LocalProcessSpawner: a process
of theirs), then in every student's own kernel, reached through the proxy's websocket,
``edu run -d -p PORT:80 busybox httpd`` on the student's own course port, all at once; each
must answer on 127.0.0.1:PORT. Nothing else is contacted: every address is 127.0.0.1.

Recorded: memory (hub and proxy; each single-user server; each container's processes, as
PSS from /proc/PID/smaps_rollup; MemAvailable before and with the class running), the
servers' start-up (request to ready) and the containers' start (``edu run`` in the kernel)
as medians, and every failure. Written to bench/results/hub_class.json, with a short table::

    .venv/bin/python bench/hub_class.py [--students 30]

Everything it made is removed at the end, Ctrl-C or not: servers, hub, proxy, containers,
the accounts and their homes (``userdel -r``). tests/test_hub.py is the two-student form, which
checks behaviour (isolation, a held port); this file shares its parts with it.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests
import websocket

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
HUB_DIR = REPO / "deploy" / "hub"
sys.path.insert(0, str(HUB_DIR))
import classroom  # noqa: E402

from edu_runtime.notebook.accounts import processes as uid_processes  # noqa: E402

#: Accounts are named hub-PID-N: a killed run's accounts are removed by the next run.
PREFIX = "hub-"
#: A busybox web server that answers with its student's name.
SERVE = "mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 80 -h /www"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bindable(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:``port`` now (TIME_WAIT aside)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def until(what, timeout: float, every: float = 0.1):
    """Poll ``what()`` until it returns something true, and return it; TimeoutError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout} s waiting for {what.__name__}")
        time.sleep(every)


# ---- students: real Unix accounts ----------------------------------------------------------

@dataclass
class Student:
    """A real account, its password, and (once logged in) its hub token."""

    name: str
    password: str
    uid: int = 0
    token: str = ""
    kernel: Kernel | None = None
    times: dict[str, float] = field(default_factory=dict)

    @property
    def first_port(self) -> int:
        return classroom.ports_for(self.uid)[0]


def make_students(n: int) -> list[Student]:
    """``n`` accounts named hub-PID-N, each with a home (useradd -m, which also gives them
    a range in /etc/subuid) and a random password (chpasswd)."""
    remove_stale()
    students = []
    try:
        for i in range(n):
            s = Student(f"{PREFIX}{os.getpid()}-{i}", secrets.token_urlsafe(12))
            subprocess.run(["useradd", "-m", "-s", "/bin/bash", "-c", "edu hub student",
                            s.name], check=True, capture_output=True)
            students.append(s)
            s.uid = pwd.getpwnam(s.name).pw_uid
            subprocess.run(["chpasswd"], input=f"{s.name}:{s.password}\n", text=True,
                           check=True, capture_output=True)
    except BaseException:
        remove_students(students)
        raise
    return students


def as_student(s: Student, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``argv`` as the student, outside the hub (for clean-up only)."""
    env = classroom.environment(s.name)
    env.update(HOME=pwd.getpwnam(s.name).pw_dir, USER=s.name)
    return subprocess.run(["setpriv", f"--reuid={s.uid}", f"--regid={s.uid}",
                           "--init-groups", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd="/")


def remove_students(students: list[Student]) -> None:
    """Each student's containers (their own `edu rm -f`), then every process of theirs, then
    the account with its home and runtime dir; each step is tried for every student."""
    edu = str(classroom.COURSE / "venv/bin/edu")
    for s in students:
        if not s.uid:
            continue
        try:
            ids = as_student(s, edu, "ps", "-aq").stdout.split()
            if ids:
                as_student(s, edu, "rm", "-f", *ids)
        except (OSError, subprocess.SubprocessError):
            pass
    for s in students:
        if not s.uid:
            continue
        for _ in range(200):
            if not uid_processes(s.uid):
                break
            subprocess.run(["pkill", "-KILL", "-u", str(s.uid)], capture_output=True)
            time.sleep(0.05)
        subprocess.run(["userdel", "-r", "-f", s.name], capture_output=True)
        shutil.rmtree(classroom.runtime_dir(s.uid), ignore_errors=True)


def remove_stale() -> None:
    """The accounts of runs that are gone (killed before their clean-up)."""
    stale = []
    for pw in pwd.getpwall():
        owner = pw.pw_name.removeprefix(PREFIX).split("-")[0]
        if pw.pw_name.startswith(PREFIX) and owner.isdigit() \
                and not Path(f"/proc/{owner}").exists():
            stale.append(Student(pw.pw_name, "", pw.pw_uid))
    remove_students(stale)


# ---- the hub -------------------------------------------------------------------------------

class Hub:
    """JupyterHub from deploy/hub/jupyterhub_config.py on free 127.0.0.1 ports, with its own
    state dir and an admin service token; ``stop()`` ends it, its proxy and the servers."""

    def __init__(self):
        self.port, self.api_port, self.proxy_api_port = free_port(), free_port(), free_port()
        self.state = Path(tempfile.mkdtemp(prefix="hub-state-"))
        self.admin_token = secrets.token_hex(24)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.state / "hub.log", "w")  # noqa: SIM115 - closed in stop()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "EDU_"))}
        env.update(EDU_HUB_IP="127.0.0.1", EDU_HUB_PORT=str(self.port),
                   EDU_HUB_API_PORT=str(self.api_port),
                   EDU_HUB_PROXY_API_PORT=str(self.proxy_api_port),
                   EDU_HUB_STATE=str(self.state), EDU_HUB_ADMIN_TOKEN=self.admin_token,
                   EDU_HUB_GROUP="")
        jupyterhub = Path(sys.executable).parent / "jupyterhub"
        self.proc = subprocess.Popen([str(jupyterhub), "-f", str(HUB_DIR / "jupyterhub_config.py")],
                                     cwd=self.state, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            until(self._answers, 60)
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the hub exited ({self.proc.returncode}):\n{self.tail()}")
        try:
            return requests.get(f"{self.url}/hub/api/", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def tail(self) -> str:
        return "\n".join((self.state / "hub.log").read_text().splitlines()[-30:])

    def api(self, method: str, path: str, token: str | None = None, **kw) -> requests.Response:
        """A call to the hub's REST API (/hub/api/PATH) with ``token`` (the admin's)."""
        kw.setdefault("timeout", 30)
        headers = {"Authorization": f"token {token or self.admin_token}"}
        return requests.request(method, f"{self.url}/hub/api/{path}", headers=headers, **kw)

    def proxy_pid(self) -> int:
        try:
            return int((self.state / "proxy.pid").read_text())
        except (OSError, ValueError):
            return 0

    def add(self, students: list[Student]) -> None:
        """The instructor adds the students to the hub (its admin REST API)."""
        r = self.api("POST", "users", json={"usernames": [s.name for s in students]})
        assert r.status_code == 201, r.text

    def login(self, s: Student) -> None:
        """The student logs in through the REST API with their Unix password (PAM) and
        gets a token of their own."""
        r = requests.post(f"{self.url}/hub/api/users/{s.name}/tokens", timeout=30,
                          json={"auth": {"username": s.name, "password": s.password},
                                "note": "edu hub test", "expires_in": 3600})
        assert r.status_code == 201, f"{s.name} could not log in: {r.status_code} {r.text}"
        s.token = r.json()["token"]

    def spawn(self, s: Student, timeout: float = 120) -> float:
        """Start the student's server with their own token; seconds until it is ready."""
        t = time.perf_counter()
        r = self.api("POST", f"users/{s.name}/server", token=s.token)
        assert r.status_code in (201, 202), f"{s.name}'s server: {r.status_code} {r.text}"

        def ready():
            model = self.api("GET", f"users/{s.name}", token=s.token).json()
            server = model.get("servers", {}).get("")
            if not server and not model.get("pending"):
                raise RuntimeError(f"{s.name}'s server did not start:\n{self.tail()}")
            return server and server.get("ready")

        until(ready, timeout, every=0.2)
        return time.perf_counter() - t

    def stop(self, keep_log: Path | None = None) -> None:
        """SIGTERM the hub: it stops every server and its proxy, then exits. ``keep_log``:
        where to keep the hub's log (its servers' output too) before its state dir goes."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        proxy = self.proxy_pid()
        if proxy and _alive(proxy) and "configurable-http-proxy" in _cmdline(proxy):
            os.kill(proxy, signal.SIGTERM)
            until(lambda: not _alive(proxy), 10)
        self.log.close()
        if keep_log is not None:
            shutil.copy(self.state / "hub.log", keep_log)
        shutil.rmtree(self.state, ignore_errors=True)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in "ZX"


# ---- a kernel in the student's own JupyterLab, through the proxy ----------------------------

class Kernel:
    """A Python kernel in the student's server, driven over the Jupyter server's websocket
    (as JupyterLab does), authenticated with the student's own token."""

    def __init__(self, hub: Hub, s: Student):
        self.s = s
        base = f"{hub.url}/user/{s.name}/api/kernels"
        self.headers = {"Authorization": f"token {s.token}"}
        r = requests.post(base, json={"name": "python3"}, headers=self.headers, timeout=60)
        assert r.status_code == 201, f"{s.name}'s kernel: {r.status_code} {r.text}"
        self.id = r.json()["id"]
        self.session = uuid.uuid4().hex
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{hub.port}/user/{s.name}/api/kernels/{self.id}/channels",
            header=[f"Authorization: token {s.token}"], timeout=120)

    def execute(self, code: str) -> str:
        """Run ``code`` in the kernel; its stdout (an error in the cell raises)."""
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": self.s.name, "session": self.session,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False,
                        "stop_on_error": True}}))
        out, error = [], None
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content["name"] == "stdout":
                out.append(content["text"])
            elif kind == "error":
                error = f"{content['ename']}: {content['evalue']}"
            elif kind == "status" and content["execution_state"] == "idle":
                break
        if error:
            raise RuntimeError(f"{self.s.name}'s kernel: {error}")
        return "".join(out)

    def edu(self, *argv: str) -> tuple[int, str, str]:
        """``edu ARGV`` run from the student's kernel: (exit code, stdout, stderr)."""
        code = ("import json, subprocess\n"
                f"r = subprocess.run(['edu', *{list(argv)!r}], capture_output=True, text=True,"
                " timeout=300)\n"
                "print(json.dumps([r.returncode, r.stdout, r.stderr]))\n")
        code_, out, err = json.loads(self.execute(code).strip().splitlines()[-1])
        return code_, out, err

    def env(self, name: str) -> str:
        """A variable of the kernel's environment (what the hub gave the student)."""
        return json.loads(self.execute(f"import os, json; print(json.dumps(os.environ.get("
                                       f"{name!r}, '')))").strip())

    def close(self) -> None:
        self.ws.close()


def fetch(port: int) -> str:
    """The body 127.0.0.1:``port`` answers with, or '' if it does not (yet)."""
    try:
        return requests.get(f"http://127.0.0.1:{port}/", timeout=2).text
    except requests.RequestException:
        return ""


def ensure_busybox(k: Kernel) -> str:
    """busybox in the student's reach: "shared" if `edu image share` put it in the shared
    read-only store (their first run takes it from there), "own" if they had it, else
    "bootstrapped" (edu bootstrap busybox, rootless, in their own store)."""
    code, out, err = k.edu("image", "share", "--list")
    if code == 0 and any(line.split()[:1] and line.split()[0].startswith("busybox:")
                         for line in out.splitlines()[1:]):
        return "shared"
    code, out, err = k.edu("images")
    if code == 0 and any(line.split()[:1] == ["busybox"] for line in out.splitlines()):
        return "own"
    code, out, err = k.edu("bootstrap", "busybox")
    assert code == 0, f"{k.s.name}: edu bootstrap busybox: {err}"
    return "bootstrapped"


# ---- memory --------------------------------------------------------------------------------

def pss_kib(pids: list[int]) -> int:
    """Proportional set size of ``pids`` together (shared pages split among sharers)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int(Path(p, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(p.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def server_pid(s: Student) -> int:
    """The student's single-user server process."""
    for pid in uid_processes(s.uid):
        if "jupyterhub-singleuser" in _cmdline(pid):
            return pid
    return 0


def container_pid(s: Student, cid: str) -> int:
    """The container's PID 1, from its record in the student's own store."""
    record = Path(pwd.getpwnam(s.name).pw_dir, ".local/share/edu/containers", cid, "state.json")
    try:
        return int(json.loads(record.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return 0


# ---- the bench -----------------------------------------------------------------------------

def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def solo_times(hub: Hub, s: Student) -> dict[str, float]:
    """Server start, kernel start and container start for one student alone; their container
    and server are gone afterwards."""
    out = {"server_s": hub.spawn(s)}
    t = time.perf_counter()
    k = Kernel(hub, s)
    out["kernel_s"] = time.perf_counter() - t
    ensure_busybox(k)
    t = time.perf_counter()
    code, cid, err = k.edu("run", "-d", "--name", f"{s.name}-web", "-p", f"{s.first_port}:80",
                           "busybox", "sh", "-c", SERVE.format(text=s.name))
    out["container_s"] = time.perf_counter() - t
    assert code == 0, err
    until(lambda: fetch(s.first_port) == f"{s.name}\n", 30)
    code, _, err = k.edu("rm", "-f", cid.strip())
    assert code == 0, err
    k.close()
    r = hub.api("DELETE", f"users/{s.name}/server", token=s.token)
    assert r.status_code in (202, 204), r.text
    until(lambda: not hub.api("GET", f"users/{s.name}", token=s.token).json()["servers"], 60)
    return out


def bench(n: int) -> dict:
    failures: list[str] = []
    mem_before = mem_available_kib()
    everyone = make_students(n + 1)
    solo, students = everyone[0], everyone[1:]
    hub = None
    try:
        hub = Hub()
        hub_pss = pss_kib([hub.proc.pid, hub.proxy_pid()])
        hub.add(everyone)
        for s in everyone:
            hub.login(s)
        # The baseline: one student alone on the machine (then gone), for the ratios.
        alone = solo_times(hub, solo)
        mem_class_start = mem_available_kib()

        def spawn(s: Student):
            s.times["server_s"] = hub.spawn(s)

        with ThreadPoolExecutor(n) as pool:
            for s, f in zip(students, [pool.submit(spawn, s) for s in students], strict=True):
                if f.exception():
                    failures.append(f"{s.name} server: {f.exception()}")
        up = [s for s in students if "server_s" in s.times]

        def kernel(s: Student):
            t = time.perf_counter()
            s.kernel = Kernel(hub, s)
            s.times["kernel_s"] = time.perf_counter() - t
            ensure_busybox(s.kernel)

        with ThreadPoolExecutor(max(1, len(up))) as pool:
            for s, f in zip(up, [pool.submit(kernel, s) for s in up], strict=True):
                if f.exception():
                    failures.append(f"{s.name} kernel: {f.exception()}")
                    s.kernel = None
        ready = [s for s in up if s.kernel]
        server_pss = {s.name: pss_kib(tree(server_pid(s))) for s in ready}
        barrier = threading.Barrier(len(ready))
        ids: dict[str, str] = {}

        def run(s: Student):
            port = s.first_port
            barrier.wait()
            t = time.perf_counter()
            code, out, err = s.kernel.edu("run", "-d", "--name", f"{s.name}-web", "-p",
                                          f"{port}:80", "busybox", "sh", "-c",
                                          SERVE.format(text=s.name))
            s.times["container_s"] = time.perf_counter() - t
            assert code == 0, f"exit {code}: {err.strip()}"
            ids[s.name] = out.strip()
            until(lambda: fetch(port) == f"{s.name}\n", 30)

        with ThreadPoolExecutor(max(1, len(ready))) as pool:
            for s, f in zip(ready, [pool.submit(run, s) for s in ready], strict=True):
                if f.exception():
                    failures.append(f"{s.name} container: {f.exception()}")
        answering = [s for s in ready if s.name in ids]
        mem_running = mem_available_kib()
        container_pss = {}
        for s in answering:
            pid = container_pid(s, ids[s.name])
            container_pss[s.name] = pss_kib(tree(pid)) if pid else 0
        hub_pss_running = pss_kib([hub.proc.pid, hub.proxy_pid()])
        server_pss_running = {s.name: pss_kib(tree(server_pid(s))) for s in answering}
        student_pss = {s.name: pss_kib(uid_processes(s.uid)) for s in answering}
        for s in ready:
            s.kernel.close()
    finally:
        if hub is not None:
            RESULTS.mkdir(exist_ok=True)
            hub.stop(keep_log=RESULTS / "hub_class.log")
        remove_students(everyone)
    mem_after = mem_available_kib()
    left = [s.name for s in everyone if _user_exists(s.name)]
    if left:
        failures.append(f"accounts left: {left}")
    server_s = [s.times["server_s"] for s in students if "server_s" in s.times]
    container_s = [s.times["container_s"] for s in students if "container_s" in s.times
                   and s.name in ids]
    kernel_s = [s.times["kernel_s"] for s in students if "kernel_s" in s.times]
    per_server = list(server_pss_running.values())
    per_container = [v for v in container_pss.values() if v]
    return {
        "students": n, "servers_ready": len(server_s), "containers_answering": len(answering),
        "failures": failures,
        "memory_kib": {
            "mem_available_before": mem_before, "mem_available_running": mem_running,
            "mem_available_after": mem_after,
            "mem_available_class_start": mem_class_start,
            "class_used": mem_class_start - mem_running,
            "hub_and_proxy_idle_pss": hub_pss, "hub_and_proxy_running_pss": hub_pss_running,
            "per_server_pss_median": median(per_server),
            "per_server_pss_idle_median": median(list(server_pss.values())),
            "per_container_pss_median": median(per_container),
            "per_student_all_processes_pss_median": median(list(student_pss.values())),
        },
        "alone_seconds": alone,
        "seconds": {
            "server_start_median": median(server_s), "server_start_max": max(server_s or [0]),
            "kernel_start_median": median(kernel_s),
            "container_start_median": median(container_s),
            "container_start_max": max(container_s or [0]),
        },
    }


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def table(r: dict) -> str:
    m, t = r["memory_kib"], r["seconds"]
    mib = 1024
    per_student = m["class_used"] / max(1, r["containers_answering"])
    ratio = t["server_start_median"] / t["container_start_median"] \
        if t["container_start_median"] > 0 else float("nan")
    mem_ratio = m["per_server_pss_median"] / m["per_container_pss_median"] \
        if m["per_container_pss_median"] > 0 else float("nan")
    a = r["alone_seconds"]

    def slower(key: str, alone_key: str) -> str:
        return f"x{t[key] / a[alone_key]:.1f} one alone ({a[alone_key]:.2f} s)" \
            if a.get(alone_key) else ""

    lines = [
        f"A class through JupyterHub: {r['students']} students, "
        f"{r['servers_ready']} servers ready, {r['containers_answering']} containers "
        f"answering, {len(r['failures'])} failures",
        "  start-up, all students at once (medians)",
        f"    JupyterLab server (REST to ready)  {t['server_start_median']:6.2f} s"
        f"   max {t['server_start_max']:6.2f} s   {slower('server_start_median', 'server_s')}",
        f"    kernel (REST to websocket)         {t['kernel_start_median']:6.2f} s"
        f"                {slower('kernel_start_median', 'kernel_s')}",
        f"    container (edu run -d -p)          {t['container_start_median']:6.2f} s"
        f"   max {t['container_start_max']:6.2f} s   "
        f"{slower('container_start_median', 'container_s')}",
        f"    a server takes x{ratio:.1f} a container at once",
        "  memory (PSS: shared pages split among their users)",
        f"    hub + proxy                        {m['hub_and_proxy_running_pss'] / mib:7.1f} MiB",
        f"    a student's server + kernel        {m['per_server_pss_median'] / mib:7.1f} MiB",
        f"    a student's container              {m['per_container_pss_median'] / mib:7.1f} MiB"
        f"   a server + kernel is x{mem_ratio:.0f} a container",
        f"    all of a student's processes       "
        f"{m['per_student_all_processes_pss_median'] / mib:7.1f} MiB",
        f"    MemAvailable taken by the class    {m['class_used'] / mib:7.1f} MiB "
        f"({per_student / mib:.1f} MiB a student); after: "
        f"{(m['mem_available_after'] - m['mem_available_before']) / mib:+.1f} MiB vs before",
    ]
    lines += [f"  FAILED: {f}" for f in r["failures"]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=30)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/hub_class.py needs root: it makes Unix accounts and starts a hub",
              file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up as on Ctrl-C
    result = bench(args.students)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import machine
    result["machine"] = machine()
    (RESULTS / "hub_class.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
