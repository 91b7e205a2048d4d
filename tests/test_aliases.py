"""Network aliases for real: ``--network-alias db`` on a user-defined network, so a service
name resolves to its container (what compose gives every service), refused where Docker
refuses it, checked as strictly as container names (aliases end up in the /etc/hosts of
every neighbour), shown by ``network inspect``, and gone from the neighbours' files with
their container.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path

import docker_reference as ref
import pytest
from conftest import need, snapshot
from conftest import wait_for as poll

from edu_runtime import networks
from edu_runtime.life import states

ALIAS_RULE = "Invalid network alias"
NOT_HERE = "network-scoped alias is supported only for containers in user defined networks"
SERVE = ("mkdir -p /www && echo hello-from-db > /www/index.html && "
         "exec httpd -f -p 80 -h /www")


@pytest.fixture
def edu(cli):
    """``edu ARGV...``; ``edu.name()`` names a container removed after the test."""
    return cli


@pytest.fixture
def net(edu):
    """A user-defined network, removed after the test's containers (edu's fixture tears
    down after this one)."""
    name = f"n-{uuid.uuid4().hex[:6]}"
    edu("network", "create", name)
    yield name
    for cid in list(networks.get(name)["containers"]):
        edu("rm", "-f", cid, check=False)
    edu("network", "rm", name, check=False)


def wait_for(pred, timeout: float = 30.0) -> bool:
    """conftest's poll, with the longer patience a supervisor's checks need."""
    return poll(pred, timeout)


def hosts_of(edu, name: str) -> list[str]:
    """The lines of a container's /etc/hosts, as it reads them."""
    return edu("exec", name, "cat", "/etc/hosts").stdout.splitlines()


def named(lines: list[str], alias: str) -> list[str]:
    """The hosts lines that give ``alias`` an address."""
    return [line for line in lines if alias in line.split()[1:]]


def made() -> set[tuple[str, str]]:
    """Container directories, cgroups and mounts: what a refused run could have left.

    Compared as ``made() - before``; what belongs to a container with a record is not a
    refused run's (other tests may start containers meanwhile)."""
    state = snapshot()
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    things = ({("container", c) for c in state["containers"]}
              | {("cgroup", c) for c in state["cgroups"]}
              | {("mount", line.split()[4]) for line in mounts})
    owned = {r["id"] for r in states.records()}
    return {t for t in things if not any(cid in t[1] for cid in owned)}


def test_a_service_name_resolves_to_its_container(edu, net):
    server = edu.name()
    edu("run", "-d", "--name", server, "--network", net, "--network-alias", "db",
        "busybox", "sh", "-c", SERVE)
    # The client retries while httpd comes up; the name itself resolves from the start.
    out = edu("run", "--rm", "--network", net, "busybox", "sh", "-c",
              "ping -c1 -W2 db >/dev/null || exit 7; for i in $(seq 50); do "
              "wget -qO- http://db/ && exit 0; sleep 0.2; done; exit 1", check=False)
    assert out.returncode == 0 and out.stdout == "hello-from-db\n", out


def test_network_inspect_shows_the_aliases(edu, net):
    server = edu.name()
    cid = edu("run", "-d", "--name", server, "--network", net, "--network-alias", "db",
              "--network-alias", "primary.db", "busybox", "sleep", "60").stdout.strip()
    shown = json.loads(edu("network", "inspect", net).stdout)[0]["containers"][cid]
    assert shown["name"] == server and shown["aliases"] == ["db", "primary.db"]
    assert states.find(server)["network"]["aliases"] == ["db", "primary.db"]
    line = named(hosts_of(edu, server), "primary.db")  # its own names, itself included
    assert line and line[0].split()[1:] == [cid[:12], server, "db", "primary.db"]


def refused_here(edu, *where: str) -> None:
    before = made()
    out = edu("run", "--rm", *where, "--network-alias", "db", "busybox", "true", check=False)
    assert out.returncode == 125 and NOT_HERE in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and made() - before == set()


@pytest.mark.parametrize("network", ["bridge", "host", "none"])
def test_refused_off_user_defined_networks(edu, network):
    refused_here(edu, "--network", network)


def test_refused_on_the_default_bridge_as_docker_refuses(edu):
    """edu gives dockerd's sentence; and Docker does refuse it (when dockerd runs, which it
    does in CI)."""
    refused_here(edu)
    need(ref.docker_up(), "dockerd is not running: scripts/services.sh start docker")
    base = ref.load_base()
    theirs = subprocess.run(["docker", "run", "--rm", "--network-alias", "db", base, "true"],
                            capture_output=True, text=True, timeout=60)
    # The docker CLI of 20.10 and later checks first, in words of its own.
    assert theirs.returncode == 125 and re.search(
        r"network-scoped alias.* supported .*user.defined networks", theirs.stderr), theirs.stderr


@pytest.mark.parametrize("mode", ["-d", "--rm", "thin"])
@pytest.mark.parametrize("alias", ["a b", "x\n6.6.6.6 victim", "a/b", "-x", "", "x" * 254],
                         ids=lambda alias: repr(alias)[:16])
def test_bad_aliases_are_refused_with_a_sentence_and_nothing_made(edu, net, alias, mode):
    before = made()
    argv = ["run", "--network", net, f"--network-alias={alias}", "busybox", "true"]
    if mode != "thin":  # plain `edu run` as root is the thin client of the supervisor
        argv.insert(1, mode)
    out = edu(*argv, check=False)
    assert out.returncode == 125 and ALIAS_RULE in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert made() - before == set() and networks.get(net)["containers"] == {}


def test_the_api_checks_aliases_too(busybox, net):
    from edu_runtime.container import Container
    from edu_runtime.steps import StepError

    for bad in ("ok\n6.6.6.6 victim", "a b", 7):
        with pytest.raises(ValueError, match=ALIAS_RULE):
            Container("busybox", ["true"], network=net, aliases=[bad])
    with pytest.raises(StepError, match=NOT_HERE):
        Container("busybox", ["true"], aliases=["db"])
    c = Container("busybox", ["true"], network=net, aliases=["db", "x"])
    assert c.config.aliases == ["db", "x"] and c.spec["aliases"] == ["db", "x"]


def test_the_alias_leaves_the_neighbours_hosts_with_its_container(edu, net):
    neighbour, server = edu.name(), edu.name()
    edu("run", "-d", "--name", neighbour, "--network", net, "busybox", "sleep", "60")
    edu("run", "-d", "--name", server, "--network", net, "--network-alias", "db",
        "busybox", "sleep", "60")
    line = named(hosts_of(edu, neighbour), "db")
    assert len(line) == 1 and server in line[0].split()
    edu("rm", "-f", server)
    assert wait_for(lambda: named(hosts_of(edu, neighbour), "db") == [])
    assert not any(server in line for line in hosts_of(edu, neighbour))


def test_two_containers_may_share_an_alias(edu, net):
    """As Docker allows; its DNS answers with both addresses, here the hosts file has a line
    for each, which a resolver returns in file order (README: no round robin)."""
    one, two, client = edu.name(), edu.name(), edu.name()
    for name in (one, two):
        edu("run", "-d", "--name", name, "--network", net, "--network-alias", "db",
            "busybox", "sleep", "60")
    edu("run", "-d", "--name", client, "--network", net, "busybox", "sleep", "60")
    lines = named(hosts_of(edu, client), "db")
    assert sorted(line.split()[1] for line in lines) == sorted([one, two])
    ips = [line.split()[0] for line in lines]
    assert ips == sorted(ips, key=lambda ip: tuple(map(int, ip.split("."))))
    assert edu("exec", client, "ping", "-c1", "-W2", "db", check=False).returncode == 0
