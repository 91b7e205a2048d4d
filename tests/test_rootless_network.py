"""Rootless networks, as a real student uses them (a ``useradd -m`` account, their own copy
of the course): containers on a user network and on the default bridge reach each other by
name and address, ``-p`` publishes from the host's 127.0.0.1, pasta is still the way to the
host, ``edu network rm`` works, and nothing of the student's is left running once their last
container has ended, or after any edu process of theirs was SIGKILLed.

Each network request here is polled for inside the container (bounded), never slept for.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
from accounts import processes
from conftest import need

#: A busybox web server that answers with TEXT.
SERVE = "mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 80 -h /www"
#: Where the test's "host" server listens: an address on the host's lo, reached through pasta.
HOST_IP = "10.79.254.1"
#: A UDP echo server on port 9999.
UDP_ECHO = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.bind(('0.0.0.0', 9999))\nwhile True:\n    d, a = s.recvfrom(100)\n"
            "    s.sendto(b'echo:' + d, a)\n")


def fetch(url: str) -> str:
    """A shell line printing ``url``'s body, retried for up to 10 s (the server may be just
    starting); it fails if no answer ever comes."""
    return (f"i=0; until wget -qO- {url}; do i=$((i+1)); [ $i -ge 100 ] && exit 1; "
            "sleep 0.1; done")


def wait_for(what, timeout: float = 20.0):
    """Poll ``what()`` until it returns something true; that value (AssertionError if not)."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            assert value, f"gave up after {timeout} s waiting for {what.__name__}"
            return value
        time.sleep(0.05)


def networking(uid: int) -> list[tuple[int, str]]:
    """The student's network holder and pasta processes."""
    return [(pid, cmd) for pid, cmd in processes(uid)
            if "edu_runtime.networks.holder" in cmd or cmd.split(" ")[0].endswith("pasta")]


def holder_files(student) -> list[str]:
    """The holder's record and socket in the student's run dir (its lock and log may stay)."""
    run = student.runtime_dir / "edu"
    return sorted(p.name for p in run.glob("netns-*") if p.suffix in (".json", ".sock"))


def leases(student, network: str) -> dict:
    """The containers that hold an address on ``network``."""
    out = student.edu("network", "inspect", network)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]["containers"]


def ok(result: subprocess.CompletedProcess) -> str:
    """stdout of a command that must have succeeded."""
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def learner(student):
    """The session's student, with busybox in their own store."""
    need(shutil.which("pasta") is not None, "pasta (Debian's passt) is needed rootless")
    ok(student.edu("bootstrap", "busybox", timeout=120))
    yield student
    # The student's supervisor (started by -d runs) idles for 30 s: end it with the module.
    student.run([student.python, "-c", "from edu_runtime.life import client; client.shutdown()"])


@pytest.fixture
def n1(learner):
    """A user network ``n1``, removed afterwards with every container of the student."""
    ok(learner.edu("network", "create", "n1"))
    yield "n1"
    ids = learner.edu("ps", "-aq").stdout.split()
    if ids:
        learner.edu("rm", "-f", *ids)
    learner.edu("network", "rm", "n1")


@pytest.fixture
def host_server(root):
    """An HTTP server on the host, on an address of the host's loopback device that pasta
    does not copy: a container reaches it only through pasta's sockets."""
    subprocess.run(["ip", "addr", "del", f"{HOST_IP}/32", "dev", "lo"], capture_output=True)
    subprocess.run(["ip", "addr", "add", f"{HOST_IP}/32", "dev", "lo"], check=True)

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = b"hello-from-the-host\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((HOST_IP, 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST_IP}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        subprocess.run(["ip", "addr", "del", f"{HOST_IP}/32", "dev", "lo"], check=True)


def bindable(port: int) -> bool:
    """Whether a server could listen on ``port`` now (a closed connection's TIME_WAIT aside)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- reaching each other ---------------------------------------------------------------------

def test_a_user_network_connects_by_name_and_address_and_reaches_the_host(learner, n1,
                                                                           host_server):
    srv = ok(learner.edu("run", "-d", "--name", "srv", "--network", n1, "busybox", "sh", "-c",
                         SERVE.format(text="hello-from-srv"))).strip()
    ip = leases(learner, n1)[srv]["ip"]
    out = ok(learner.edu("run", "--rm", "--network", n1, "busybox", "sh", "-c",
                         f"{fetch('http://srv/')} && {fetch(f'http://{ip}/')} && "
                         f"{fetch(host_server)}"))
    assert out == "hello-from-srv\nhello-from-srv\nhello-from-the-host\n"


def test_the_default_bridge_connects_containers(learner, n1):
    ok(learner.edu("run", "-d", "--name", "front", "busybox", "sh", "-c",
                   SERVE.format(text="hello-from-front")))
    front = leases(learner, "bridge")
    ip = next(ep["ip"] for ep in front.values() if ep["name"] == "front")
    out = ok(learner.edu("run", "--rm", "busybox", "sh", "-c",
                         f"{fetch(f'http://{ip}/')} && {fetch('http://front/')}"))
    assert out == "hello-from-front\nhello-from-front\n"
    # Networks stay apart, as Docker's do: n1 has no route to the default bridge.
    apart = learner.edu("run", "--rm", "--network", n1, "busybox", "wget", "-qO-", "-T", "2",
                        f"http://{ip}/")
    assert apart.returncode != 0


def test_publish_answers_on_the_hosts_loopback(learner, n1):
    port = _free_port()
    web = ok(learner.edu("run", "-d", "--name", "web", "--network", n1, "-p", f"{port}:80",
                         "-p", f"{port}:9999/udp", "busybox", "sh", "-c",
                         SERVE.format(text="hello-from-web"))).strip()
    assert leases(learner, n1)[web]["ports"] == [  # as network inspect shows it for root
        {"container_port": 80, "host_ip": "0.0.0.0", "host_port": port, "proto": "tcp"},
        {"container_port": 9999, "host_ip": "0.0.0.0", "host_port": port, "proto": "udp"}]

    def body():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
        except OSError:
            return b""

    assert wait_for(body) == b"hello-from-web\n"
    assert f"0.0.0.0:{port}->80/tcp" in ok(learner.edu("ps"))
    # UDP both ways: busybox has no UDP server, so an echo runs in the container's network
    # namespace, started by root (nsenter).
    record = learner.home / ".local/share/edu/containers" / web / "state.json"
    echo = subprocess.Popen(["nsenter", "-t", str(json.loads(record.read_text())["pid"]), "-n",
                             "python3", "-c", UDP_ECHO])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)

            def echoed():
                s.sendto(b"ping", ("127.0.0.1", port))  # again until the echo is bound
                try:
                    return s.recv(100)
                except OSError:
                    return b""

            assert wait_for(echoed) == b"echo:ping"
    finally:
        echo.kill()
        echo.wait()
    assert not bindable(port)  # held while the container runs
    ok(learner.edu("rm", "-f", "web"))
    wait_for(lambda: bindable(port))  # and let go with it


def test_network_rm(learner):
    ok(learner.edu("network", "create", "n2"))
    ok(learner.edu("run", "-d", "--name", "db", "--network", "n2", "busybox", "sleep", "300"))
    busy = learner.edu("network", "rm", "n2")
    assert busy.returncode == 1 and "active endpoints (containers: db)" in busy.stderr
    ok(learner.edu("rm", "-f", "db"))
    assert ok(learner.edu("network", "rm", "n2")) == "n2\n"
    assert "n2" not in ok(learner.edu("network", "ls")).split()


# ---- nothing left behind ---------------------------------------------------------------------

def test_nothing_is_left_after_the_last_container(learner, n1):
    learner.kill_all()  # no supervisor of theirs: foreground runs only, from here
    port = _free_port()
    ok(learner.edu("run", "--rm", "--network", n1, "-p", f"{port}:80", "busybox", "true"))
    assert processes(learner.uid) == []
    assert holder_files(learner) == [] and leases(learner, n1) == {}
    # A start that fails at its last step (exec) is undone as far: the holder goes too.
    failed = learner.edu("run", "--rm", "--network", n1, "busybox", "no-such-command")
    assert failed.returncode == 127 and "no-such-command" in failed.stderr
    assert processes(learner.uid) == [] and holder_files(learner) == []
    # And the next one starts it all again.
    assert "inet 10.77." in ok(learner.edu("run", "--rm", "busybox", "ip", "-4", "addr", "show",
                                           "eth0"))
    assert processes(learner.uid) == []


def _container_sleeping(learner):
    """Wait for the test's container to run; its holder and pasta run then too."""
    def sleeping():
        return [pid for pid, cmd in processes(learner.uid) if cmd == "sleep 300"]
    wait_for(sleeping)
    assert len(networking(learner.uid)) == 2


@pytest.mark.parametrize("victim", ["edu run", "supervisor", "network holder"])
def test_sigkill_of_any_edu_process_is_cleaned_by_the_next_command(learner, n1, victim):
    learner.kill_all()
    if victim == "edu run":
        run = learner.popen([learner.python, "-m", "edu_cli.main", "run", "--rm", "--network",
                             n1, "busybox", "sleep", "300"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _container_sleeping(learner)
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
    else:
        ok(learner.edu("run", "-d", "--name", "sleeper", "--network", n1, "busybox",
                       "sleep", "300"))
        _container_sleeping(learner)
        wanted = (("edu_cli.supervise", "edu_runtime.life.supervisor") if victim == "supervisor"
                  else ("edu_runtime.networks.holder",))
        pid = next(p for p, cmd in processes(learner.uid) if any(w in cmd for w in wanted))
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: pid not in dict(processes(learner.uid)))  # the kill is done
        if victim == "network holder":  # the container ends with a holder that is gone
            ok(learner.edu("rm", "-f", "sleeper"))
    assert learner.edu("ps").returncode == 0  # the next command
    assert networking(learner.uid) == []
    # The container itself was SIGKILLed (by the kernel as its edu died, or by edu ps).
    wait_for(lambda: "sleep 300" not in dict(processes(learner.uid)).values())
    assert holder_files(learner) == [] and leases(learner, n1) == {}
    # A new container gets a new holder, and its network works.
    assert "inet 10.78." in ok(learner.edu("run", "--rm", "--network", n1, "busybox", "ip", "-4",
                                           "addr", "show", "eth0"))
    assert networking(learner.uid) == []
