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

from edu_runtime import lifecycle

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
    rec = lifecycle.find(name)
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
        "from edu_runtime import nat\n"
        "from edu_runtime.container import Container\n"
        "real = nat.Nat.apply\n"
        "def apply(self, ctx):\n"
        "    real(self, ctx)\n"
        "    print(ctx.container_id, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "nat.Nat.apply = apply\n"
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
    assert not (lifecycle.base() / cid).exists()
    from pathlib import Path

    assert not list(Path("/sys/fs/cgroup").glob(f"*/edu/{cid}"))  # its cgroup went too
