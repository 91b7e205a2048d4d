"""The primer's web app, for real: `edu run --name web -p 8080:80 -d`, reached from the host
on 127.0.0.1 and on the container's bridge address, and a second container that finds it by
name on a user-defined network. Afterwards no veth, nft rule, lease or bridge is left."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
import uuid

import pytest
from conftest import need
from test_network import docker  # noqa: F401 - the fixture: dockerd running, then stopped

from edu_runtime.life import states

HTTPD = ("mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && "
         "exec httpd -f -p 80 -h /www")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def edu(python):
    import os

    need(os.geteuid() == 0, "root")
    made, nets = [], []

    def run(*argv, check=True):
        out = subprocess.run([python, "-m", "edu_cli.main", *argv], capture_output=True,
                             text=True, timeout=60)
        if check:
            assert out.returncode == 0, out.stderr
        return out
    run("bootstrap", "busybox")
    run.made, run.nets = made, nets
    yield run
    if made:
        run("rm", "-f", *made, check=False)
    for n in nets:
        run("network", "rm", n, check=False)


def get(url: str) -> str:
    for _ in range(50):
        try:
            return urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            import time
            time.sleep(0.1)
    raise AssertionError(f"no answer from {url}")


def kernel_state() -> dict:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return {"veths": sorted(w for w in links.split() if w.startswith("veth")),
            "edu links": sorted(w.rstrip(":") for w in links.split() if w.startswith("edu")),
            "edu table": "ip edu" in tables}


def test_published_web_app_and_names_between_containers(edu, docker):  # noqa: F811
    before = kernel_state()
    port, name, net = free_port(), f"web-{uuid.uuid4().hex[:6]}", f"n{uuid.uuid4().hex[:6]}"
    edu.made.append(name)
    edu.nets.append(net)
    edu("network", "create", net)
    edu("run", "-d", "--name", name, "--network", net, "-p", f"{port}:80", "busybox", "sh",
        "-c", HTTPD)
    rec = states.find(name)
    ip = rec["network"]["ip"]
    assert get(f"http://127.0.0.1:{port}/").startswith("hello-from-")
    assert get(f"http://{ip}:80/").startswith("hello-from-")
    assert f"0.0.0.0:{port}->80/tcp" in edu("ps").stdout
    # A second container on the same network reaches the first by its name.
    out = edu("run", "--rm", "--network", net, "busybox", "wget", "-qO-", f"http://{name}/")
    assert out.stdout.startswith("hello-from-")
    # The port is taken now: a clear sentence, exit 125, and nothing half-made.
    mid = kernel_state()
    clash = edu("run", "--rm", "-p", f"{port}:80", "busybox", "true", check=False)
    assert clash.returncode == 125 and "port is already allocated" in clash.stderr
    after = kernel_state()
    assert (after["veths"], after["edu links"]) == (mid["veths"], mid["edu links"])
    edu("rm", "-f", name)
    edu("network", "rm", net)
    edu.made.clear()
    edu.nets.clear()
    # Nothing of this container or network is left (other tests' containers may still run,
    # so compare what is ours, not the whole host).
    after = kernel_state()
    assert f"veth{rec['id'][:8]}" not in after["veths"]
    assert not set(after["edu links"]) - set(before["edu links"])
    rules = subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True,
                           text=True).stdout
    assert rec["id"] not in rules
    assert net not in edu("network", "ls").stdout
    leases = json.loads(edu("network", "inspect", "bridge").stdout)[0]["containers"]
    assert rec["id"] not in leases


def test_port_held_by_a_host_program_is_refused_before_anything_exists(edu):
    before = kernel_state()["veths"]
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        out = edu("run", "--rm", "-p", f"{port}:80", "busybox", "true", check=False)
    assert out.returncode == 125 and "already in use" in out.stderr
    assert kernel_state()["veths"] == before


def test_foreground_run_on_the_bridge_goes_through_the_supervisor(edu):
    """stdout and stderr stay apart, the exit code comes back, errors keep Docker's codes."""
    out = edu("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 7",
              check=False)
    assert (out.returncode, out.stdout, out.stderr) == (7, "out\n", "err\n")
    out = edu("run", "--rm", "busybox", "no-such-cmd", check=False)
    assert out.returncode == 127 and "executable file not found: no-such-cmd" in out.stderr
    out = edu("run", "--rm", "--trace", "busybox", "true", check=False)
    assert out.returncode == 0 and "veth" in out.stderr and "pivot_root" in out.stderr
    out = edu("run", "--rm", "-m", "32m", "busybox", "sh", "-c", "tail /dev/zero", check=False)
    assert out.returncode == 137 and "OOMKilled" in out.stderr


def test_kill_9_mid_start_on_the_bridge_is_cleaned_by_the_next_command(edu, python, tmp_path):
    """An `edu` process SIGKILLed right after its container got an address, a veth and a
    DNAT rule: the next edu command finds no veth, rule or lease of it left behind."""
    import time

    script = tmp_path / "killed.py"
    script.write_text(
        "import os, signal\n"
        "from edu_runtime.networks import steps\n"
        "from edu_runtime.container import Container\n"
        "real = steps.Nat.apply\n"
        "def apply(self, ctx):\n"
        "    real(self, ctx)\n"
        "    print(ctx.container_id, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "steps.Nat.apply = apply\n"
        "Container('busybox', ['sleep', '60'], publish=['80'], remove=True).run()\n")
    out = subprocess.run([python, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == -9
    cid = out.stdout.strip()
    assert len(cid) == 64
    edu("ps")  # the next command cleans up
    for _ in range(50):  # the kernel destroys a dead netns (and its veth) asynchronously
        if f"veth{cid[:8]}" not in kernel_state()["veths"]:
            break
        time.sleep(0.1)
    assert f"veth{cid[:8]}" not in kernel_state()["veths"]
    rules = subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True,
                           text=True).stdout
    assert cid not in rules
    leases = json.loads(edu("network", "inspect", "bridge").stdout)[0]["containers"]
    assert cid not in leases
    assert not (states.base() / cid).exists()
    from pathlib import Path

    assert not list(Path("/sys/fs/cgroup").glob(f"*/edu/{cid}"))  # its cgroup went too


def test_supervisor_keeps_the_bridge_warm_and_takes_it_along(edu, python):
    """While the supervisor lives, the default bridge and its rules stay between runs (as
    docker0 stays while dockerd runs): that is most of a bridged start's cost. Its exit, and
    a SIGKILL of it followed by any edu command, leave no bridge, rule or table behind."""
    import os
    import signal
    import time

    from edu_runtime import networks
    from edu_runtime.life import client
    from edu_runtime.networks import nat

    client.shutdown()  # nothing warm from earlier tests
    edu("run", "--rm", "busybox", "true")
    pid = client.running_pid()
    assert pid and networks.warm_holder() == pid
    assert "edu0" in kernel_state()["edu links"] and nat.table_exists()
    index = open("/sys/class/net/edu0/ifindex").read()
    out = edu("run", "--rm", "busybox", "ip", "-o", "-4", "addr", "show", "eth0")
    assert "10.77.0." in out.stdout
    assert open("/sys/class/net/edu0/ifindex").read() == index  # the same bridge, reused
    assert not [v for v in kernel_state()["veths"] if v.startswith("veth")
                and os.path.exists(f"/sys/class/net/{v}/master")
                and os.path.basename(os.readlink(f"/sys/class/net/{v}/master")) == "edu0"]
    if nat.docker_user_exists():
        assert any("edu-net:edu0" in line for line in nat.docker_user_lines())

    assert client.shutdown()  # SIGTERM: what an idle exit does too
    state = kernel_state()
    assert "edu0" not in state["edu links"] and not state["edu table"]
    assert not any("edu-net:edu0" in line for line in nat.docker_user_lines())
    assert networks.warm_holder() == 0

    edu("run", "--rm", "busybox", "true")  # a new supervisor makes it all again
    pid = client.running_pid()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}/stat") and \
            open(f"/proc/{pid}/stat").read().split(") ")[1][0] != "Z" and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert "edu0" in kernel_state()["edu links"]  # a killed supervisor cleans nothing...
    subprocess.run([python, "-m", "edu_cli.main", "ps"], check=True, capture_output=True)
    state = kernel_state()  # ...the next command does
    assert "edu0" not in state["edu links"] and not state["edu table"]


def test_sigterm_to_a_thin_run_stops_its_container(edu, python):
    """`edu run` as a thin client: SIGTERM (as Ctrl-C) ends the container (137), and its
    veth, lease and record go; `--help` still answers from the full parser."""
    import signal
    import time

    edu("run", "--rm", "busybox", "true")  # the supervisor is up: the next run is thin
    name = f"t-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([python, "-m", "edu_cli.main", "run", "--rm", "--name", name,
                             "busybox", "sleep", "60"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    rec = None
    while time.monotonic() < deadline:
        try:
            rec = states.find(name)
            if rec.get("status") == "running":
                break
        except states.NoSuchContainer:
            pass
        time.sleep(0.02)
    assert rec and rec["status"] == "running"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 137, proc.stderr.read()
    edu("ps", "-a")  # answered after the supervisor's teardown
    with pytest.raises(states.NoSuchContainer):
        states.find(name)
    assert f"veth{rec['id'][:8]}" not in kernel_state()["veths"]
    leases = json.loads(edu("network", "inspect", "bridge").stdout)[0]["containers"]
    assert rec["id"] not in leases
    assert "--publish" in edu("run", "--help").stdout
