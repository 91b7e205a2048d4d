"""Two state directories on one host (the machine's store, and a test's or a second
teacher's ``EDU_STATE_DIR``): bridges, veths and nft rules belong to the host, so one state
directory's clean-up must not take another's. Before this was fixed, a second store's first
``edu`` command removed the rules and veths of every container it had no record of, and a
published port of the first store stopped answering.

Both stores' default network is ``edu0``, with one subnet, and each leases addresses from its
own registry: a lease also skips the addresses that the other store's containers on the bridge
hold (read in their namespaces), so two stores running bridged containers at once never hand
out one address twice; and a user network's subnet skips another store's bridges.

Introduced in notebooks/08-web-app (what is behind -p).
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request

from conftest import need, wait_for


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()


def _answers(port: int) -> bool:
    try:
        return _get(port) == "first-store\n"
    except OSError:
        return False


def test_a_second_state_dir_leaves_the_first_ones_network_alone(cli, python, tmp_path):
    from edu_runtime.networks import nat

    need(os.geteuid() == 0, "root")
    name, port = cli.name(), _free_port()
    cli("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:80", "busybox", "sh", "-c",
        "mkdir /www && echo first-store > /www/index.html && httpd -f -p 80 -h /www")
    rec = json.loads(cli("inspect", name).stdout)[0]
    cid = rec["Id"]
    assert wait_for(lambda: _answers(port), timeout=20), "the first store's web server"
    second = {**os.environ, "EDU_STATE_DIR": str(tmp_path / "state"),
              "EDU_RUN_DIR": str(tmp_path / "run")}
    cli("save", "-o", str(tmp_path / "busybox.tar"), "busybox")
    for argv in (["load", "-i", str(tmp_path / "busybox.tar")],
                 ["run", "--rm", "--network", "none", "busybox", "true"], ["ps", "-a"],
                 ["prune"]):
        out = subprocess.run([python, "-m", "edu_cli.main", *argv], env=second,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
    subprocess.run([python, "-c", "from edu_runtime.life import client; client.shutdown()"],
                   env=second, timeout=60, check=True)  # the second store's supervisor too
    # The first store's container kept its veth, its DNAT rule, and its answer.
    assert os.path.exists(f"/sys/class/net/veth{cid[:8]}")
    assert nat.rule_lines(f"edu:{cid}")
    assert _get(port) == "first-store\n"


def _address(env: dict, python: str, name: str) -> str:
    out = subprocess.run([python, "-m", "edu_cli.main", "inspect", name], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]


SERVE = "mkdir /www && echo {} > /www/index.html && httpd -f -p 80 -h /www"


def test_two_stores_bridged_at_once_never_share_an_address(cli, python, tmp_path):
    from edu_runtime.networks import registry

    need(os.geteuid() == 0, "root")
    first, port = cli.name(), _free_port()
    cli("run", "-d", "--name", first, "-p", f"127.0.0.1:{port}:80", "busybox", "sh", "-c",
        SERVE.format("first-store"))
    assert wait_for(lambda: _answers(port), timeout=20), "the first store's web server"
    second = {**os.environ, "EDU_STATE_DIR": str(tmp_path / "state"),
              "EDU_RUN_DIR": str(tmp_path / "run")}

    def edu2(*argv: str) -> subprocess.CompletedProcess:
        out = subprocess.run([python, "-m", "edu_cli.main", *argv], env=second,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out
    cli("save", "-o", str(tmp_path / "busybox.tar"), "busybox")
    edu2("load", "-i", str(tmp_path / "busybox.tar"))
    port2 = _free_port()
    try:
        edu2("run", "-d", "--name", "other", "-p", f"127.0.0.1:{port2}:80", "busybox", "sh",
             "-c", SERVE.format("second-store"))
        mine, theirs = _address(os.environ, python, first), _address(second, python, "other")
        assert mine != theirs and mine.startswith("10.77.") and theirs.startswith("10.77.")
        assert wait_for(lambda: _get(port2) == "second-store\n", timeout=20)
        assert _get(port) == "first-store\n"  # neither took the other's address
        # A user network of the second store keeps off the first store's bridges' subnets.
        user = cli.name()
        cli("network", "create", user)
        try:
            taken = registry.get(user)["subnet"]
            cli("run", "--rm", "--network", user, "busybox", "true")  # (its bridge is up now)
            out = subprocess.run([python, "-m", "edu_cli.main", "network", "create", "n2"],
                                 env=second, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            ls = json.loads(edu2("network", "inspect", "n2").stdout)
            assert ls[0]["subnet"] != taken, (ls, taken)
        finally:
            cli("network", "rm", user)
    finally:
        subprocess.run([python, "-m", "edu_cli.main", "rm", "-f", "other"], env=second,
                       capture_output=True, timeout=60)
        subprocess.run([python, "-c", "from edu_runtime.life import client; client.shutdown()"],
                       env=second, timeout=60)
    assert _get(port) == "first-store\n"
