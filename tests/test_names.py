"""Names and other values that end up in files other containers read are checked the way
Docker checks them (or more carefully), on every path that takes them: the CLI, the thin
client through the supervisor, the supervisor's own request, and the API.

A name with a newline once wrote a line into the /etc/hosts of every neighbour on its
network (``ok\\n6.6.6.6 victim`` made ``victim`` resolve to 6.6.6.6 there).
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import docker_reference as ref
import pytest
from conftest import need, snapshot

from edu_runtime import networks, volumes
from edu_runtime.life import client, states

BAD_NAMES = ["a", "a b", ".hidden", "a/b", "../../x", "ok\n6.6.6.6 victim", "_x", "x\n",
             "-x", "x" * 3 + "\t", "café"]
GOOD_NAMES = ["ab", "web-1", "/db_2", "A.b-c_d", "x" * 200]
SENTENCE = "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"


@pytest.fixture(autouse=True)
def _root(busybox):
    """The runtime tests run as root, on the default store with busybox in it."""


def edu(python: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "edu_cli.main", *argv], capture_output=True,
                          text=True, timeout=60)


def made() -> set[tuple[str, str]]:
    """What a refused container could have left: records, cgroups, mounts.

    Compared as ``made() - before``: nothing new (other containers may end meanwhile, and
    what belongs to another container's record, still there, is not ours)."""
    state = snapshot()
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    things = ({("container", c) for c in state["containers"]}
              | {("cgroup", c) for c in state["cgroups"]}
              | {("mount", line.split()[4]) for line in mounts})
    owned = {r["id"] for r in states.records() if r.get("name") not in BAD_NAMES}
    return {t for t in things if not any(cid in t[1] for cid in owned)}


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_lifecycle_refuses_what_docker_refuses(name):
    with pytest.raises(states.InvalidName, match=r"Invalid container name \(.*\), " +
                       SENTENCE.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        states.valid_name(name)


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_lifecycle_accepts_what_docker_accepts(name):
    assert states.valid_name(name) == name.lstrip("/")


@pytest.mark.parametrize("mode", ["--rm", "-d", "thin"])
@pytest.mark.parametrize("name", ["a b", "../../x", "ok\n6.6.6.6 victim"], ids=repr)
def test_cli_refuses_bad_names_and_makes_nothing(python, name, mode):
    before = made()
    argv = ["run", "--name", name, "busybox", "true"]
    if mode != "thin":  # plain `edu run` as root is the thin client of the supervisor
        argv.insert(1, mode)
    out = edu(python, *argv)
    assert out.returncode == 125, out
    assert SENTENCE in out.stderr and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1  # one sentence, the name's newline escaped
    assert made() - before == set()


def test_the_supervisors_request_is_checked_too():
    """A client that skips the CLI and sends the supervisor a spec directly."""
    before = made()
    reply, conn = client.request({"op": "run", "spec": {
        "image": "busybox", "command": ["true"], "name": "ok\n6.6.6.6 victim"},
        "tty": False, "interactive": False, "restart": "no", "attach": False})
    conn.close()
    assert reply.get("code") == 125 and SENTENCE in reply.get("error", ""), reply
    assert made() - before == set()


def test_api_refuses_bad_names_hostnames_and_workdirs():
    from edu_runtime.container import Container

    before = made()
    for kw in ({"name": "ok\n6.6.6.6 victim"}, {"hostname": "a\nb"}, {"hostname": "x" * 65},
               {"hostname": "-x"}, {"workdir": "relative/dir"}):
        with pytest.raises(ValueError):
            Container("busybox", ["true"], **kw)
    assert made() - before == set()
    c = Container("busybox", ["hostname"], name=f"/t-{uuid.uuid4().hex[:6]}",
                  hostname="web-1.local", workdir="/tmp", network="none", remove=True)
    assert not c.config.name.startswith("/")


def test_hosts_of_neighbours_take_no_injected_line(python):
    """The attack end to end: a server on a network, then the injecting name is refused and
    the server's /etc/hosts still has only its own line."""
    net = f"n-{uuid.uuid4().hex[:6]}"
    srv = f"srv-{uuid.uuid4().hex[:6]}"
    assert edu(python, "network", "create", net).returncode == 0
    try:
        assert edu(python, "run", "-d", "--name", srv, "--network", net, "busybox",
                   "sleep", "30").returncode == 0
        bad = edu(python, "run", "-d", "--name", "ok\n6.6.6.6 victim", "--network", net,
                  "busybox", "sleep", "30")
        assert bad.returncode == 125
        hosts = edu(python, "exec", srv, "cat", "/etc/hosts").stdout
        assert "victim" not in hosts and "6.6.6.6" not in hosts
        assert len(networks.get(net)["containers"]) == 1
    finally:
        edu(python, "rm", "-f", srv)
        edu(python, "network", "rm", net)


@pytest.mark.parametrize("argv, docker_says", [
    (["-w", "relative/dir"], "the working directory 'relative/dir' is invalid, it needs to "
                             "be an absolute path"),
    (["--name", "a b"], "Invalid container name (a b), only [a-zA-Z0-9][a-zA-Z0-9_.-] are "
                        "allowed"),
    (["--name", "x"], "Invalid container name (x), only [a-zA-Z0-9][a-zA-Z0-9_.-] are "
                      "allowed"),
])
def test_refused_as_docker_refuses(python, argv, docker_says):
    """edu gives Docker's sentence and exit code; and real Docker does say it (when dockerd
    runs, which it does in CI)."""
    out = edu(python, "run", "--rm", *argv, "busybox", "true")
    assert out.returncode == 125 and docker_says in out.stderr, out.stderr
    need(ref.docker_up(), "dockerd is not running: scripts/services.sh start docker")
    base = ref.load_base()
    theirs = subprocess.run(["docker", "run", "--rm", *argv, base, "true"],
                            capture_output=True, text=True, timeout=60)
    assert theirs.returncode == 125 and docker_says in theirs.stderr, theirs.stderr


def test_hostname_is_checked_more_carefully_than_docker(python):
    """Docker passes a newline in --hostname into the container's own /etc/hosts; edu refuses
    it, and a hostname longer than the kernel's 64 bytes, with a sentence (not EINVAL)."""
    for bad in ("a\nb", "x" * 65, "under_score", "a..b"):
        out = edu(python, "run", "--rm", "-h", bad, "busybox", "true")
        assert out.returncode == 125 and "invalid hostname" in out.stderr, out.stderr
    good = edu(python, "run", "--rm", "--network", "none", "-h", "web-1.local", "busybox",
               "hostname")
    assert good.returncode == 0 and good.stdout.strip() == "web-1.local"


def test_volume_and_network_names_with_a_trailing_newline_are_refused():
    """``re.match`` with ``$`` accepts a final newline; these checks use fullmatch."""
    with pytest.raises(volumes.VolumeError):
        volumes.check_name("data\n")
    with pytest.raises(networks.NetworkError):
        networks.create("net\n")
    assert not (volumes.volumes_dir() / "data\n").exists()
    assert "net\n" not in [n["name"] for n in networks.ls()]
