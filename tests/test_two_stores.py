"""Two state directories on one host (the machine's store, and a test's or a second
teacher's ``EDU_STATE_DIR``): bridges, veths and nft rules belong to the host, so one state
directory's clean-up must not take another's. Before this was fixed, a second store's first
``edu`` command removed the rules and veths of every container it had no record of, and a
published port of the first store stopped answering.

Still shared, and left alone: both stores' default network is ``edu0`` with one subnet, and
each leases addresses from its own registry, so two stores that both run bridged containers
at once could hand out the same address. The second store here uses ``--network none``.

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
