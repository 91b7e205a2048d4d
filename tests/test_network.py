"""Bridge networking for real: bridges, veths, nftables NAT and published ports.

The container runtime is wired in elsewhere, so these tests drive the network modules
directly with fake containers: a process sleeping in a network namespace of its own, which
is all a container is to the network steps. Traffic only ever goes to loopback and to
addresses inside namespaces made here. The traffic tests run twice, with dockerd running
and stopped (its iptables FORWARD DROP stays when it stops), and dockerd is put back as it
was. Every test checks that nothing is left: veths, bridges, nft rules, DOCKER-USER rules,
named netns, processes.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO, need

from edu_runtime import kernel, networks
from edu_runtime.networks import bridge, nat, registry
from edu_runtime.networks import steps as net
from edu_runtime.steps import StepError

OUT_HOST, OUT_PEER, OUT_NET = "10.79.255.1", "10.79.255.2", "10.79.255.0/30"


# ---- fakes and helpers -----------------------------------------------------------------------

class Fake:
    """A fake container: a process sleeping in a new network namespace, and its record."""

    def __init__(self, name: str = "", status: str = "running"):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                kernel.unshare(kernel.CLONE_NEWNET)
                os.write(w, b"k")
                while True:
                    signal.pause()
            finally:
                os._exit(0)
        os.close(w)
        assert os.read(r, 1) == b"k"
        os.close(r)
        self.pid, self.id = pid, secrets.token_hex(32)
        self.name = name or self.id[:12]
        self.record(status)

    def record(self, status: str) -> None:
        """Write (or update) the container record that networks.alive_ids() reads."""
        d = registry.container_dir(self.id)
        d.mkdir(parents=True, exist_ok=True)
        (d / "state.json").write_text(json.dumps(
            {"id": self.id, "name": self.name, "status": status, "pid": self.pid}))

    def kill(self) -> None:
        """SIGKILL and reap it; its network namespace dies with it."""
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = 0


class Started:
    """The network steps of one fake container, applied in plan order; ``stop`` undoes them."""

    def __init__(self, fake: Fake, network: str = "bridge", publish: list[str] = ()):
        config = SimpleNamespace(network=network, name=fake.name, hostname=fake.name,
                                 shared=set(), publish=nat.parse_publish(list(publish)))
        self.ctx = SimpleNamespace(config=config, pid=fake.pid, container_id=fake.id,
                                   endpoint=None, ports=[], port_holds=[])
        self.applied = []
        try:
            for step in (net.ReservePorts(), net.Bridge(), net.Veth(), net.Nat()):
                if step.enabled(self.ctx):
                    self.applied.append(step)
                    step.apply(self.ctx)
        except BaseException:
            self.stop()
            raise

    @property
    def ip(self) -> str:
        """The address the container got."""
        return self.ctx.endpoint["ip"]

    def port(self, container_port: int, proto: str = "tcp") -> int:
        """The host port published for ``container_port``."""
        return next(p.host_port for p in self.ctx.ports
                    if (p.container_port, p.proto) == (container_port, proto))

    def stop(self) -> None:
        """Undo the applied steps, newest first, as the container's teardown does."""
        while self.applied:
            self.applied.pop().undo(self.ctx)


def in_netns(pid: int, fn, timeout: float = 10):
    """Run ``fn()`` in a child that joined ``pid``'s network namespace; its JSON result."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(r)
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            kernel.setns(fd, kernel.CLONE_NEWNET)
            os.write(w, json.dumps(fn()).encode())
            code = 0
        except BaseException as exc:  # noqa: BLE001 - report it to the parent
            os.write(w, json.dumps({"error": repr(exc)}).encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    assert kernel.wait_status(child, timeout) in (0, 1)
    return json.loads(data)


class Server:
    """A server that answers each client with the address it sees the client come from."""

    def __init__(self, pid: int | None, port: int, proto: str = "tcp", ip: str = "0.0.0.0"):
        r, w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(r)
                if pid:
                    kernel.setns(os.open(f"/proc/{pid}/ns/net", os.O_RDONLY),
                                 kernel.CLONE_NEWNET)
                kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
                s = socket.socket(socket.AF_INET, kind)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((ip, port))
                if proto == "tcp":
                    s.listen(8)
                os.write(w, b"k")
                while True:
                    if proto == "tcp":
                        conn, peer = s.accept()
                        conn.sendall(peer[0].encode())
                        conn.close()
                    else:
                        _, peer = s.recvfrom(100)
                        s.sendto(peer[0].encode(), peer)
            finally:
                os._exit(0)
        os.close(w)
        assert os.read(r, 1) == b"k"
        os.close(r)

    def stop(self) -> None:
        """Kill and reap the server."""
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


def ask(ip: str, port: int, proto: str = "tcp", timeout: float = 3) -> str:
    """Connect to a Server and return what it says: the client's address as it saw it."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.settimeout(timeout)
        if proto == "tcp":
            s.connect((ip, port))
            return s.recv(100).decode()
        s.sendto(b"?", (ip, port))
        return s.recvfrom(100)[0].decode()


def ask_from(pid: int, ip: str, port: int, proto: str = "tcp", timeout: float = 3) -> str:
    """``ask`` from inside ``pid``'s network namespace; 'error: ...' if it fails."""
    def go():
        try:
            return ask(ip, port, proto, timeout)
        except OSError as exc:
            return f"error: {exc}"
    return in_netns(pid, go)


def vanishes(link: str, timeout: float = 5) -> bool:
    """Wait until ``link`` is gone from the host."""
    deadline = time.monotonic() + timeout
    while link in bridge.host_links():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def free_port() -> int:
    """A TCP port nobody uses right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leftovers() -> dict:
    """What edu's networking could leak on the host."""
    links = bridge.host_links()
    return {
        "veths": [n for n in links if re.match(r"^(veth|ceth)[0-9a-f]{8}$", n)],
        "edu links": [n for n in links if n.startswith("edu")],
        "test links": [n for n in links if n.startswith("xout")],
        "nft table": nat.table_exists(),
        "DOCKER-USER": nat.docker_user_lines(),
        "netns": sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else [],
        "children": sorted(p.name for p in Path("/proc").iterdir() if p.name.isdigit()
                           and kernel.proc_status(p.name).get("PPid") == str(os.getpid())),
    }


CLEAN = {"veths": [], "edu links": [], "test links": [], "nft table": False,
         "DOCKER-USER": [], "netns": [], "children": []}


# ---- fixtures --------------------------------------------------------------------------------

@pytest.fixture
def state(tmp_path, monkeypatch):
    """A private edu state directory (the registry and records live there)."""
    monkeypatch.setenv("EDU_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
def host(root, state):
    """Real networking on this host: needs nft; everything is torn down and checked after."""
    need(shutil.which("nft") is not None, "nft (nftables) is not installed")
    fakes: list[Fake] = []
    yield fakes
    for fake in fakes:
        fake.kill()
    networks.teardown_all()
    assert leftovers() == CLEAN


def _docker_up() -> bool:
    """Whether dockerd answers (as scripts/services.sh checks it)."""
    return subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                          capture_output=True, timeout=20).returncode == 0


def _services(action: str) -> None:
    """Start or stop dockerd with scripts/services.sh, and wait until it has really gone."""
    subprocess.run([str(REPO / "scripts/services.sh"), action, "docker"], check=True,
                   capture_output=True, timeout=120)
    if action == "stop":  # services.sh signals tini; wait until dockerd has really gone
        for _ in range(100):
            if subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode:
                break
            time.sleep(0.1)


#: Set by test_on_a_host_where_dockerd_never_ran for the run it starts in a fresh netns.
FRESH = os.environ.get("EDU_TEST_FRESH_NETNS") == "1"


@pytest.fixture(scope="module",
                params=["fresh netns"] if FRESH else ["dockerd running", "dockerd stopped"])
def docker(request):
    """Run the test with dockerd running, then stopped; put dockerd back as it was."""
    need(os.geteuid() == 0, "needs root")
    if FRESH:  # no iptables rules at all in here: FORWARD accepts, no DOCKER-USER
        assert not nat.docker_user_exists()
        yield request.param
        return
    need(shutil.which("dockerd") is not None, "dockerd is not installed")
    was_up = _docker_up()
    want_up = request.param == "dockerd running"
    if want_up != was_up:
        _services("start" if want_up else "stop")
    assert _docker_up() == want_up
    yield request.param
    if _docker_up() != was_up:
        _services("start" if was_up else "stop")


@pytest.fixture
def outside(host):
    """A namespace standing for the world outside: its own veth to the host, no bridge."""
    from pyroute2 import IPRoute

    world = Fake("outside", status="exited")
    host.append(world)
    name = f"xout{secrets.token_hex(2)}"
    fd = os.open(f"/proc/{world.pid}/ns/net", os.O_RDONLY)
    with IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="veth", peer="xin0")
        index = ipr.link_lookup(ifname=name)[0]
        ipr.addr("add", index=index, address=OUT_HOST, prefixlen=30)
        ipr.link("set", index=index, state="up")
        ipr.link("set", index=ipr.link_lookup(ifname="xin0")[0], net_ns_fd=fd)
    with IPRoute(fileno=bridge.netns_socket(fd).detach()) as ipr:
        index = ipr.link_lookup(ifname="xin0")[0]
        ipr.addr("add", index=index, address=OUT_PEER, prefixlen=30)
        ipr.link("set", index=index, state="up")
    os.close(fd)
    yield world
    with IPRoute() as ipr:  # not left to the namespace's death, which the kernel does later
        ipr.link("del", ifname=name)
    world.kill()


# ---- parsing -p ------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, want", [
    ("80", ("0.0.0.0", 0, 80, "tcp")),
    ("8080:80", ("0.0.0.0", 8080, 80, "tcp")),
    ("127.0.0.1:8080:80", ("127.0.0.1", 8080, 80, "tcp")),
    ("127.0.0.1::80", ("127.0.0.1", 0, 80, "tcp")),
    ("8080:80/udp", ("0.0.0.0", 8080, 80, "udp")),
    ("53/UDP", ("0.0.0.0", 0, 53, "udp")),
])
def test_parse_port_like_docker(spec, want):
    m = nat.parse_port(spec)
    assert (m.host_ip, m.host_port, m.container_port, m.proto) == want


@pytest.mark.parametrize("spec, words", [
    ("8080:80/sctp", "use /tcp or /udp"),
    ("8080-8081:80-81", "ranges are not supported"),
    ("[::1]:8080:80", "IPv4 only"),
    ("1.2.3:8080:80", "not an IPv4 address"),
    ("70000:80", "1 to 65535"),
    ("8080:", "the form is"),
    ("a:b:c:d", "the form is"),
])
def test_parse_port_errors_are_sentences(spec, words):
    with pytest.raises(nat.PortError, match=re.escape(words)):
        nat.parse_port(spec)


def test_publish_all_and_duplicates():
    got = nat.parse_publish(["8080:80"], publish_all=True,
                            exposed={"80/tcp": {}, "53/udp": {}, "443/tcp": {}})
    assert [str(m) for m in got] == ["0.0.0.0:8080->80/tcp", "0.0.0.0:0->443/tcp",
                                     "0.0.0.0:0->53/udp"]
    with pytest.raises(nat.PortError, match="published twice"):
        nat.parse_publish(["8080:80", "127.0.0.1:8080:81"])
    assert len(nat.parse_publish(["8080:80", "8080:80/udp"])) == 2


# ---- the registry (files only) ---------------------------------------------------------------

def test_registry_create_ls_inspect_rm(state):
    nets = {n["name"]: n for n in networks.ls()}
    assert sorted(nets) == ["bridge", "host", "none"]
    default = nets["bridge"]
    assert (default["bridge"], default["gateway"]) == ("edu0", "10.77.0.1")
    assert default["subnet"] == "10.77.0.0/16"
    made = networks.create("web")
    assert made["subnet"].startswith("10.78.") and made["subnet"].endswith("/24")
    assert made["bridge"] == f"edu-{made['id'][:8]}"
    second = networks.create("db")
    assert not ipaddress.ip_network(made["subnet"]).overlaps(
        ipaddress.ip_network(second["subnet"]))
    assert networks.inspect("web") == made
    assert networks.inspect(made["id"][:6]) == made
    assert json.loads((state / "networks" / "web.json").read_text()) == made
    with pytest.raises(networks.NetworkError, match="already exists"):
        networks.create("web")
    with pytest.raises(networks.NetworkError, match="pre-defined"):
        networks.rm("bridge")
    with pytest.raises(networks.NetworkError, match="invalid network name"):
        networks.create("no/slash")
    with pytest.raises(networks.NetworkError, match="not found"):
        networks.inspect("nope")
    networks.rm("db")  # no bridge was ever made for it: nothing in the kernel to remove
    assert [n["name"] for n in networks.ls()] == ["bridge", "host", "none", "web"]


def test_subnet_clashes_with_host_routes_are_refused(state):
    # Not edu's own bridges: their routes belong to edu's networks, which are compared
    # with each other separately.
    routes = [r for r in registry.host_routes() if not r[0].startswith("edu")]
    need(bool(routes), "the host has no non-default route to clash with")
    dev, taken = routes[0]
    with pytest.raises(networks.NetworkError, match=f"overlaps the host's route to {taken}"):
        networks.create("clash", subnet=str(taken))
    networks.create("a", subnet="10.78.200.0/24")
    with pytest.raises(networks.NetworkError, match="overlaps edu network a"):
        networks.create("b", subnet="10.78.0.0/16")
    with pytest.raises(networks.NetworkError, match="invalid subnet"):
        networks.create("c", subnet="10.78.201.1/24")


def test_leases_hosts_and_stale_release(state):
    a, b, c = (secrets.token_hex(32) for _ in range(3))
    for cid, name in ((a, "web"), (b, "db")):
        d = registry.container_dir(cid)
        d.mkdir(parents=True)
        (d / "state.json").write_text(json.dumps({"id": cid, "name": name,
                                                  "status": "running"}))
    assert networks.lease("bridge", a, "web", "web") == "10.77.0.2"
    assert networks.lease("bridge", b, "db", "dbhost") == "10.77.0.3"
    assert networks.lease("bridge", a, "web") == "10.77.0.2"  # the same lease again
    assert networks.lease("bridge", c, "gone") == "10.77.0.4"  # no record: stale
    text = registry.hosts("bridge", b)
    assert "127.0.0.1\tlocalhost\n" in text
    assert f"10.77.0.3\tdbhost db {b[:12]}\n" in text
    assert f"10.77.0.2\tweb {a[:12]}\n" in text
    assert text.index("10.77.0.3") < text.index("10.77.0.2")  # itself first
    assert networks.release_stale() == [c]
    networks.release("bridge", a)
    assert networks.lease("bridge", c, "again") == "10.77.0.2"  # the lowest free one
    networks.create("tiny", subnet="10.78.9.0/30")  # room for the gateway and one more
    assert networks.lease("tiny", a, "web") == "10.78.9.2"
    with pytest.raises(networks.NetworkError, match="network tiny has no free address"):
        networks.lease("tiny", b, "db")


def test_rm_names_the_attached_containers(state):
    networks.create("shop", subnet="10.78.10.0/24")
    ids = []
    for name in ("b-api", "a-web"):
        cid = secrets.token_hex(32)
        ids.append(cid)
        registry.container_dir(cid).mkdir(parents=True)
        (registry.container_dir(cid) / "state.json").write_text(
            json.dumps({"id": cid, "name": name, "status": "running"}))
        networks.lease("shop", cid, name)
    with pytest.raises(networks.NetworkError) as err:
        networks.rm("shop")
    assert str(err.value) == ("network shop has active endpoints (containers: a-web, b-api): "
                              "stop or remove them first")
    (registry.container_dir(ids[0]) / "state.json").unlink()  # gone without releasing
    with pytest.raises(networks.NetworkError, match=r"\(containers: a-web\)"):
        networks.rm("shop")


def test_resolv_conf(tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    plain.write_text("# comment\nnameserver 10.1.2.3\nnameserver ::1\nsearch lab\n"
                     "options ndots:2\n")
    text = registry.resolv_conf(str(plain))
    assert "nameserver 10.1.2.3\n" in text and "search lab\noptions ndots:2\n" in text
    assert "nameserver ::1" not in text and "Left out" in text
    stub = tmp_path / "stub"
    stub.write_text("nameserver 127.0.0.53\noptions edns0\n")
    upstream = tmp_path / "upstream"
    upstream.write_text("nameserver 10.9.9.9\n")
    monkeypatch.setattr(registry, "RESOLVED_UPSTREAM", str(upstream))
    assert "nameserver 10.9.9.9\n" in registry.resolv_conf(str(stub))
    monkeypatch.setattr(registry, "RESOLVED_UPSTREAM", str(tmp_path / "missing"))
    text = registry.resolv_conf(str(stub))
    assert "nameserver" not in text.replace("# ", "").split("\n", 2)[-1]
    assert "No resolver is reachable" in text


def test_importing_the_modules_does_not_import_pyroute2():
    code = ("import sys, edu_runtime.networks.bridge, edu_runtime.networks.nat, "
            "edu_runtime.networks.steps; print('pyroute2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    assert out.strip() == "False"


# ---- the kernel side -------------------------------------------------------------------------

def test_bridge_veth_address_route_and_names(host, docker):
    a, b = Fake("web"), Fake("db")
    host.extend([a, b])
    sa, sb = Started(a), Started(b)
    net = networks.get("bridge")
    assert (sa.ip, sb.ip) == ("10.77.0.2", "10.77.0.3")
    view = bridge.container_view(a.pid)
    assert view["addresses"] == ["eth0 10.77.0.2/16", "lo 127.0.0.1/8"]
    assert view["routes"] == ["10.77.0.0/16 dev eth0", "default via 10.77.0.1 dev eth0"]
    hv = bridge.host_view(net, f"veth{a.id[:8]}")
    assert hv["edu0"]["ports"] == sorted([f"veth{a.id[:8]}", f"veth{b.id[:8]}"])
    assert hv[f"veth{a.id[:8]}"]["master"] == "edu0"
    assert hv["ip_forward"] == "1" and hv["edu0"]["route_localnet"] == "1"
    # The gateway answers from inside, and one container reaches the other by address.
    gw = Server(None, 7001, ip="10.77.0.1")
    srv = Server(b.pid, 7002)
    try:
        assert ask_from(a.pid, "10.77.0.1", 7001) == "10.77.0.2"
        assert ask_from(a.pid, sb.ip, 7002) == "10.77.0.2"
    finally:
        gw.stop()
        srv.stop()
    # Names: each hosts file lists itself and the other, by name and short id.
    hosts_a = (registry.container_dir(a.id) / "hosts").read_text()
    assert f"10.77.0.3\tdb {b.id[:12]}\n" in hosts_a
    assert f"10.77.0.2\tweb {a.id[:12]}\n" in hosts_a
    assert (registry.container_dir(a.id) / "resolv.conf").read_text().startswith("# Generated")
    inode = (registry.container_dir(a.id) / "hosts").stat().st_ino
    sb.stop()  # db leaves: web's hosts file is rewritten in place (a bind mount keeps inodes)
    hosts_a = (registry.container_dir(a.id) / "hosts").read_text()
    assert "\tdb " not in hosts_a and b.id[:12] not in hosts_a
    assert (registry.container_dir(a.id) / "hosts").stat().st_ino == inode
    assert f"veth{b.id[:8]}" not in bridge.host_links()
    sa.stop()


def test_outbound_traffic_is_masqueraded(host, docker, outside):
    c = Fake("client")
    host.append(c)
    Started(c)
    srv = Server(outside.pid, 7010)
    try:
        # The outside world sees the host's address on its link, not 10.77.0.2.
        assert ask_from(c.pid, OUT_PEER, 7010) == OUT_HOST
    finally:
        srv.stop()


def test_published_ports_from_host_loopback_and_outside(host, docker, outside):
    c = Fake("web")
    host.append(c)
    hp, lp = free_port(), free_port()
    s = Started(c, publish=[f"{hp}:80", f"127.0.0.1:{lp}:81", "82", f"{hp}:80/udp"])
    tcp80, tcp81, tcp82 = Server(c.pid, 80), Server(c.pid, 81), Server(c.pid, 82)
    udp80 = Server(c.pid, 80, proto="udp")
    try:
        assert ask("10.77.0.1", hp) == "10.77.0.1"   # the host, on the bridge's address
        assert ask("127.0.0.1", hp) == "10.77.0.1"   # 127.0.0.1, masqueraded to the gateway
        assert ask_from(outside.pid, OUT_HOST, hp) == OUT_PEER  # outside: source kept
        assert ask("127.0.0.1", lp) == "10.77.0.1"
        assert ask_from(outside.pid, OUT_HOST, lp).startswith("error")  # 127.0.0.1 only
        random = s.port(82)
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        assert lo <= random <= hi and ask("127.0.0.1", random) == "10.77.0.1"
        assert ask("127.0.0.1", hp, proto="udp") == "10.77.0.1"
        # The minimum for 127.0.0.1: route_localnet on the bridge only.
        assert bridge.sysctl("net/ipv4/conf/all/route_localnet") == "0"
        # The ports are held: nobody else can take them now.
        for port, ip in ((hp, "0.0.0.0"), (lp, "127.0.0.1"), (random, "0.0.0.0")):
            with socket.socket() as other, pytest.raises(OSError):
                other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                other.bind((ip, port))
        ep = networks.inspect("bridge")["containers"][c.id]
        assert sorted(nat.PortMapping(**p).__str__() for p in ep["ports"]) == sorted(
            [f"0.0.0.0:{hp}->80/tcp", f"127.0.0.1:{lp}->81/tcp", f"0.0.0.0:{random}->82/tcp",
             f"0.0.0.0:{hp}->80/udp"])
        assert len(nat.rule_lines(f"edu:{c.id}")) == 4
        # DOCKER-USER accepts for edu0, wherever dockerd made that chain (it stays when
        # dockerd stops); none where it never ran.
        assert len(nat.docker_user_lines()) == (0 if docker == "fresh netns" else 2)
    finally:
        for srv in (tcp80, tcp81, tcp82, udp80):
            srv.stop()
    s.stop()
    assert nat.rule_lines(f"edu:{c.id}") == []
    with socket.socket() as again:  # undo let go of the port
        again.bind(("0.0.0.0", hp))


def test_port_in_use_fails_before_anything_is_made(host, docker):
    c = Fake("web")  # first: a child forked later would inherit the squatter's socket
    host.append(c)
    port = free_port()
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", port))
    squatter.listen(1)
    try:
        with pytest.raises(StepError) as err:
            Started(c, publish=[f"{port}:80"])
    finally:
        squatter.close()
    message = str(err.value)
    assert message.startswith(f"ports: Bind for 0.0.0.0:{port} failed: address already in use")
    assert f"(pid {os.getpid()}) on 127.0.0.1" in message
    assert "choose another host port" in message
    assert networks.endpoints() == {}
    assert [n for n in bridge.host_links() if n.startswith(("veth", "ceth", "edu"))] == []
    assert not nat.table_exists()
    # Another edu container holding the port: Docker's words, and which container.
    first = Started(c, publish=[f"{port}:80"])
    d = Fake("second")
    host.append(d)
    with pytest.raises(StepError, match=r"port is already allocated \(container web on "
                                        r"network bridge publishes 0\.0\.0\.0:\d+->80/tcp\)"):
        Started(d, publish=[f"127.0.0.1:{port}:8080"])
    assert d.id not in networks.endpoints()
    first.stop()


def test_undo_removes_veth_rules_and_lease(host, docker):
    c = Fake("web")
    host.append(c)
    s = Started(c, publish=["80"])
    veth = f"veth{c.id[:8]}"
    assert veth in bridge.host_links()
    assert any(r["comment"] == f"edu:{c.id}" for r in nat.rules())
    assert c.id in networks.inspect("bridge")["containers"]
    s.stop()
    assert veth not in bridge.host_links()
    assert not any(r["comment"] == f"edu:{c.id}" for r in nat.rules())
    assert networks.inspect("bridge")["containers"] == {}
    out = subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True, text=True)
    assert c.id not in out.stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert veth not in links and "ceth" not in links
    # The last container out took the bridge and the network's rules: nothing of edu is left
    # in the kernel while no container needs it (the next one makes them again).
    assert not nat.rule_lines("edu-net:edu0") and "edu0" not in bridge.host_links()
    assert not nat.table_exists()


def test_user_networks_are_isolated_and_rm_refuses_while_attached(host, docker):
    networks.create("front", subnet="10.78.31.0/24")
    networks.create("back", subnet="10.78.32.0/24")
    a, b, c = Fake("a"), Fake("b"), Fake("c")
    host.extend([a, b, c])
    sa, sb, sc = Started(a, "front"), Started(b, "front"), Started(c, "back")
    assert (sa.ip, sb.ip, sc.ip) == ("10.78.31.2", "10.78.31.3", "10.78.32.2")
    srv_b, srv_c = Server(b.pid, 7020), Server(c.pid, 7021)
    try:
        assert ask_from(a.pid, sb.ip, 7020) == sa.ip
        assert ask_from(a.pid, sc.ip, 7021, timeout=1).startswith("error")
    finally:
        srv_b.stop()
        srv_c.stop()
    front = networks.inspect("front")
    with pytest.raises(networks.NetworkError, match=r"network front has active endpoints "
                                                    r"\(containers: a, b\)"):
        networks.rm("front")
    assert front["bridge"] in bridge.host_links()
    sa.stop()
    sb.stop()
    networks.rm("front")
    assert front["bridge"] not in bridge.host_links()
    assert nat.rule_lines(f"edu-net:{front['bridge']}") == []
    assert all(front["bridge"] not in line for line in nat.docker_user_lines())
    sc.stop()


def test_cleanup_stale_after_a_sigkilled_edu(host):
    c = Fake("killed")
    host.append(c)
    Started(c, publish=["80"])  # never stopped: its edu "died"
    veth = f"veth{c.id[:8]}"
    keep = Fake("alive")
    host.append(keep)
    Started(keep)
    nothing = {"leases": [], "rules": [], "links": []}
    assert networks.cleanup_stale() == nothing  # both records still say running
    c.kill()
    (registry.container_dir(c.id) / "state.json").write_text(json.dumps(
        {"id": c.id, "name": "killed", "status": "exited"}))
    assert vanishes(veth)  # the pair dies with the namespace (the kernel does it async)
    # A pair left half made by another killed edu: both ends still on the host.
    half = secrets.token_hex(32)
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.link("add", ifname=f"veth{half[:8]}", kind="veth", peer=f"ceth{half[:8]}")
    assert networks.cleanup_stale() == {"leases": [c.id], "rules": [c.id],
                                        "links": [f"ceth{half[:8]}", f"veth{half[:8]}"]}
    assert list(networks.inspect("bridge")["containers"]) == [keep.id]
    assert nat.rule_lines(f"edu:{c.id}") == []
    assert not [n for n in bridge.host_links() if half[:8] in n]
    assert f"veth{keep.id[:8]}" in bridge.host_links()
    assert networks.cleanup_stale() == nothing


def test_loopback_guard_keeps_containers_off_host_127(host):
    """route_localnet on the bridge must not let a container reach the host's 127.0.0.1."""
    c = Fake("attacker")
    host.append(c)
    Started(c)
    port = free_port()
    victim = Server(None, port, ip="127.0.0.1")

    def aim_at_host_loopback():
        from pyroute2 import IPRoute

        # Send 127.0.0.0/8 to the gateway: drop the container's own loopback net, and
        # let eth0 carry 127.x (what an attacker with CAP_NET_ADMIN inside can do).
        Path("/proc/sys/net/ipv4/conf/eth0/route_localnet").write_text("1")
        with IPRoute() as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=lo, state="down")
            ipr.addr("del", index=lo, address="127.0.0.1", prefixlen=8)
            ipr.route("add", dst="127.0.0.0/8", gateway="10.77.0.1")
        return True

    try:
        assert in_netns(c.pid, aim_at_host_loopback) is True
        assert ask_from(c.pid, "127.0.0.1", port, timeout=1).startswith("error")
        guard = [r for r in nat.rules() if r["chain"] == "guard"]
        assert [r["comment"] for r in guard] == ["edu-net:edu0"]
        # The attack is real: without the guard rule it gets through.
        nat.nft("delete", "rule", "ip", "edu", "guard", "handle", str(guard[0]["handle"]))
        assert ask_from(c.pid, "127.0.0.1", port, timeout=1) == "10.77.0.2"
    finally:
        victim.stop()


def test_netlink_works_inside_a_running_event_loop(host):
    """A Jupyter kernel runs an asyncio loop in its main thread; pyroute2 0.9 needs its own."""
    c = Fake("jupyter")
    host.append(c)
    s = Started(c)

    async def cell():
        return bridge.container_view(c.pid)

    assert "eth0 10.77.0.2/16" in asyncio.run(cell())["addresses"]
    s.stop()


def test_a_hand_packed_request_the_kernel_refuses_is_its_errno_and_nothing_is_made(host):
    """The veth step's requests are packed by hand (rtnetlink.py): the kernel's refusal
    comes back as its errno, and a veth whose peer cannot go where asked is not made."""
    from edu_runtime.networks import rtnetlink

    with rtnetlink.Socket() as nl:
        with pytest.raises(OSError) as no_device:
            nl.request(rtnetlink.set_up(2 ** 31 - 1))
        assert no_device.value.errno == errno.ENODEV
        bad = os.open(os.devnull, os.O_RDONLY)  # not a network namespace
        try:
            with pytest.raises(OSError) as not_a_netns:
                nl.request(rtnetlink.new_veth("vethdeadbeef", 0, "eth0", bad,
                                              "02:42:0a:4d:00:63"))
        finally:
            os.close(bad)
        assert not_a_netns.value.errno == errno.EINVAL
        assert nl.link_index("lo") == 1
    assert "vethdeadbeef" not in bridge.host_links()


def test_rules_seen_at_a_ruleset_generation_are_not_listed_again_until_nftables_changes(
        host, monkeypatch):
    """The nat step checks its network's rules on every start. Once seen in place, they are
    not listed again while nftables' ruleset generation (the kernel's count of changes) is
    the same; a change anywhere, such as someone deleting them, is listed and put right."""
    network = registry.get("bridge")
    nat.ensure_network(network)  # made: not remembered until seen
    assert nat.network_ready(network)  # seen in place: remembered at this generation
    listings = []
    listed = nat._listed
    monkeypatch.setattr(nat, "_listed", lambda: listings.append(1) or listed())
    gen = nat.generation()
    nat.ensure_network(network)
    assert (listings, nat.generation()) == ([], gen)
    assert nat.network_ready(network) and listings == []
    doomed = [r for r in nat.rules() if r["comment"] == f"edu-net:{network['bridge']}"]
    assert doomed
    for rule in doomed:
        nat.nft("delete", "rule", "ip", "edu", rule["chain"], "handle", str(rule["handle"]))
    assert nat.generation() > gen
    before = len(listings)  # (nat.rules() above listed too)
    assert not nat.network_ready(network) and len(listings) == before + 1
    nat.ensure_network(network)
    assert {r["comment"] for r in nat.rules()} >= {f"edu-net:{network['bridge']}"}
    assert len([r for r in nat.rules() if r["chain"] == "guard"]) == 1


def test_observe_shows_both_sides(host):
    c = Fake("web")
    host.append(c)
    s = Started(c, publish=[f"{free_port()}:80"])
    seen = {step.name: step.observe(s.ctx) for step in s.applied}
    assert seen["veth"]["container"]["routes"][-1] == "default via 10.77.0.1 dev eth0"
    assert seen["bridge"]["edu0"]["state"] in ("up", "unknown")
    assert any("dnat to 10.77.0.2:80" in line for line in seen["nat"]["container rules"])
    assert list(seen["ports"].values())[0][0].startswith("0.0.0.0:")
    s.stop()


def test_teardown_all_leaves_nothing(host, docker):
    c = Fake("web")
    host.append(c)
    networks.create("extra", subnet="10.78.40.0/24")
    Started(c, publish=["80"])
    d = Fake("other")
    host.append(d)
    Started(d, "extra")
    c.kill()
    d.kill()
    networks.teardown_all()
    assert leftovers() == CLEAN
    assert all(not n["containers"] for n in networks.ls())


def test_on_a_host_where_dockerd_never_ran(root):
    """dockerd leaves its iptables rules when it stops, so 'stopped' above still has
    DOCKER-USER and FORWARD DROP. A fresh network namespace (with its own sysfs, in a
    mount namespace) is a host where dockerd never ran: run the traffic tests there."""
    need(shutil.which("unshare") is not None, "unshare (util-linux) is not installed")
    need(not FRESH, "already inside the fresh namespace")
    script = ("mount -t sysfs sysfs /sys && ip link set lo up && exec \"$0\" -m pytest -q "
              "-p no:cacheprovider tests/test_network.py -k 'fresh and not never_ran'")
    done = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "--",
                           "sh", "-c", script, sys.executable], cwd=REPO, capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "EDU_TEST_FRESH_NETNS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert re.search(r"\b(\d+) passed", done.stdout) and "skipped" not in done.stdout
