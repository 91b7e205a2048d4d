"""A container's life through the API, as a notebook drives it: create, start, stop, restart,
kill, pause, unpause, logs, wait, exec, inspect and rm on real containers the supervisor
owns, and on one this process forked; every refusal of the state machine is an
InvalidTransition with a sentence; and the CLI's create, start, restart and inspect exit as
Docker's do."""

from __future__ import annotations

import json
import signal
import socket
import uuid

import pytest
from conftest import wait_for

from edu_runtime import Container, paths
from edu_runtime.kernel import pid_alive
from edu_runtime.life import control, states
from edu_runtime.life.enter import ExecError
from edu_runtime.life.states import InvalidTransition, NoSuchContainer


@pytest.fixture
def make(busybox):
    """``make(command, **kw)``: a container made with ``create`` (not started), removed
    afterwards whatever state it is in."""
    made = []

    def new(command=("sleep", "60"), **kw) -> Container:
        kw.setdefault("network", "none")
        c = Container("busybox", list(command), name=f"t-{uuid.uuid4().hex[:8]}", **kw)
        made.append(c.create())
        return c
    yield new
    for c in made:
        try:
            control.remove(c.id, force=True)
        except NoSuchContainer:
            pass


def test_create_start_stop_start_keeps_the_writable_layer(make):
    never = make(["no-such-command"])
    with pytest.raises(control.ControlError, match="no-such-command"):
        control.start(never.id)
    state = never.inspect()["State"]  # a failed start keeps the container, as Docker's
    assert state["ExitCode"] == 127 and "no-such-command" in state["Error"]

    c = make(["sh", "-c", "date >> /log; exec sleep 60"])
    rec = control.find(c.id)
    assert c.status == rec["status"] == "created" and rec["pid"] == 0
    assert (paths.state_dir() / "store" / "pins" / f"{c.id}.json").exists()  # image pinned
    assert c.inspect()["State"]["Running"] is False

    assert control.start(c.config.name)["status"] == "running"  # by name, as Docker's
    assert c.status == "running"
    assert c.exec(["wc", "-l", "/log"]).output.split()[0] == "1"
    stopped = control.stop(c.id, timeout=0.5)  # sleep as PID 1 ignores SIGTERM: SIGKILL
    assert stopped["status"] == "exited" and stopped["exit_code"] == 137
    assert c.status == "exited"

    control.start(c.id)  # the same container again: same id, same name, same upper dir
    rec = control.find(c.id)
    assert rec["name"] == c.config.name and rec["status"] == "running"
    assert c.exec(["wc", "-l", "/log"]).output.split()[0] == "2"
    assert c.inspect()["Created"] == control.inspect(c.id)["Created"]


def test_invalid_transitions_are_sentences(make):
    c = make()
    name = c.config.name
    for verb in (control.pause, control.unpause, control.kill):
        with pytest.raises(InvalidTransition, match=f"container {name}: it is .*created"):
            verb(c.id)
    control.start(c.id)
    with pytest.raises(InvalidTransition, match=f"cannot start container {name}: it is "
                                                "running") as exc:
        control.start(c.id)
    assert exc.value.exit_code == 1
    with pytest.raises(InvalidTransition, match="not paused"):
        c.unpause()
    c.pause()
    assert c.status == "paused"
    with pytest.raises(InvalidTransition, match="it is paused .*unpause it"):
        c.pause()
    with pytest.raises(InvalidTransition, match="it is paused"):
        control.start(c.id)
    with pytest.raises(InvalidTransition, match="cannot remove a paused container"):
        c.remove()
    c.unpause()
    with pytest.raises(InvalidTransition, match="cannot remove a running container .*-f"):
        c.remove()
    c.stop(timeout=0.2)
    for verb, words in ((c.pause, "cannot pause .*it is exited"),
                        (c.unpause, "cannot unpause .*not paused"),
                        (c.kill, "cannot kill .*not running")):
        with pytest.raises(InvalidTransition, match=f"{words}"):
            verb()
    with pytest.raises(NoSuchContainer, match="No such container: t-none-such"):
        control.stop("t-none-such")


def test_restart_changes_the_pid_and_keeps_the_id(make):
    c = make()
    control.start(c.id)
    before = c.inspect()["State"]
    assert before["Running"] and pid_alive(before["Pid"])
    c.restart(timeout=0.2)
    after = c.inspect()["State"]
    assert after["Running"] and after["Pid"] != before["Pid"]
    assert not pid_alive(before["Pid"]) and pid_alive(after["Pid"])
    assert control.find(c.id)["status"] == "running"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_inspect_is_docker_shaped(make):
    port = _free_port()
    c = make(["sh", "-c", "exec sleep 60"], network="bridge", env={"FOO": "bar"},
             workdir="/tmp", hostname="box", memory="64m", publish=[f"{port}:80"])
    control.start(c.id)
    info = json.loads(json.dumps(c.inspect()))  # JSON as it is, nothing else
    assert list(info) == ["Id", "Created", "Path", "Args", "State", "Image", "LogPath", "Name",
                          "RestartCount", "HostConfig", "Mounts", "Config", "NetworkSettings"]
    assert info["Id"] == c.id and info["Name"] == "/" + c.config.name
    assert info["Path"] == "sh" and info["Args"] == ["-c", "exec sleep 60"]
    state = info["State"]
    assert list(state)[:4] == ["Status", "Running", "Paused", "Restarting"]
    assert state["Status"] == "running" and state["Running"] and not state["Paused"]
    assert pid_alive(state["Pid"]) and state["ExitCode"] == 0
    assert state["StartedAt"].endswith("Z") and state["FinishedAt"] == "0001-01-01T00:00:00Z"
    assert "Health" not in state  # no healthcheck, no Health
    assert info["Image"] == c.image.id
    config = info["Config"]
    assert "FOO=bar" in config["Env"] and any(e.startswith("PATH=") for e in config["Env"])
    assert config["Cmd"] == ["sh", "-c", "exec sleep 60"] and config["Image"] == "busybox"
    assert (config["WorkingDir"], config["Hostname"]) == ("/tmp", "box")
    host = info["HostConfig"]
    assert host["Memory"] == 64 * 1024 * 1024 and host["NetworkMode"] == "bridge"
    assert host["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    net = info["NetworkSettings"]["Networks"]["bridge"]
    assert net["IPAddress"].startswith("10.77.") and net["Gateway"] == "10.77.0.1"
    assert net["MacAddress"].startswith("02:42:") and net["IPPrefixLen"] == 16
    assert info["NetworkSettings"]["Ports"] == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}

    c.stop(timeout=0.2)
    stopped = c.inspect()
    assert stopped["State"]["Status"] == "exited" and stopped["State"]["Pid"] == 0
    assert stopped["State"]["ExitCode"] == 137
    assert stopped["State"]["FinishedAt"] != "0001-01-01T00:00:00Z"
    assert stopped["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == ""
    assert stopped["NetworkSettings"]["Ports"] == {}


def test_logs_exec_and_wait(make):
    c = make(["sh", "-c", "echo out; echo err >&2; exec sleep 60"])
    control.start(c.id)
    assert wait_for(lambda: len(list(c.logs())) == 2)
    assert sorted(c.logs()) == [("stderr", "err\n"), ("stdout", "out\n")]
    assert len(list(c.logs(tail=1))) == 1 and list(c.logs(tail=0)) == []
    result = c.exec(["sh", "-c", "echo hi; echo oops >&2; exit 3"])
    assert result == (3, "hi\noops\n") and result.exit_code == 3
    assert c.exec(["id", "-u"], user="nobody").output.strip() == "65534"
    with pytest.raises(ExecError) as exc:
        c.exec(["no-such-command"])
    assert exc.value.exit_code == 127

    counted = make(["sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done; exit 3"])
    control.start(counted.id)
    lines = [text for _, text in control.logs(counted.id, follow=True)]
    assert lines == ["line1\n", "line2\n", "line3\n"]
    assert control.wait(counted.id, timeout=10) == 3
    with pytest.raises(control.ControlError, match="invalid tail"):
        control.logs(counted.id, tail="-1")


def test_a_handle_from_get_and_list(cli):
    name = cli.name()
    out = cli("run", "-d", "--name", name, "busybox", "sleep", "60")
    h = Container.get(name)
    assert h.id == out.stdout.strip() and h.status == "running"
    assert h.id in {c.id for c in Container.list()}
    h.pause()
    assert Container.get(h.id[:12]).status == "paused"
    h.unpause()
    assert h.exec(["hostname"]).output.strip() == h.id[:12]
    h.pause()
    h.kill(signal.SIGKILL)  # delivered to a frozen process: the freezer lets go of it
    assert wait_for(lambda: h.status == "exited")
    assert control.wait(name) == 137
    assert h.id not in {c.id for c in Container.list()}
    assert h.id in {c.id for c in Container.list(all=True)}
    h.remove()
    with pytest.raises(NoSuchContainer):
        Container.get(name)


def test_a_container_this_process_forked(busybox):
    """Started in-process (not by the supervisor): stop reaps it here, rm -f too."""
    c = Container(busybox, ["sleep", "60"], network="none")
    c.start()
    try:
        c.pause()
        assert c.status == "paused"
        c.unpause()
        c.stop(timeout=0.2)
        assert c.status == "exited" and c.exit_code == 137 and c.pid == 0
        c2 = Container(busybox, ["sleep", "60"], network="none")
        c2.start()
        c2.remove(force=True)
        assert c2.pid == 0 and not c2.paths.dir.exists()
    finally:
        c.remove(force=True)
    assert not c.paths.dir.exists()


def test_cli_create_start_restart_inspect(cli):
    name = cli.name()
    made = cli("create", "--name", name, "--network", "none", "busybox", "sh", "-c",
               "date >> /log; exec sleep 60")
    cid = made.stdout.strip()
    assert states.find(name)["id"] == cid and states.find(name)["status"] == "created"
    # docker create's codes: 1 for what its daemon refuses (run's are 125: test_bad_input)
    dup = cli("create", "--name", name, "--network", "none", "busybox", "true",
              check=False)
    assert dup.returncode == 1 and "already in use" in dup.stderr
    dup = cli("run", "-d", "--name", name, "--network", "none", "busybox", "true",
              check=False)  # the thin client's path too, through the supervisor's front
    assert dup.returncode == 125 and "already in use" in dup.stderr
    missing = cli("create", "no-such-image:1", check=False)
    assert missing.returncode == 1 and "Unable to find image" in missing.stderr
    bad = cli("create", "--restart", "sometimes", "--network", "none", "busybox", "true",
              check=False)
    assert bad.returncode == 1 and "invalid restart policy" in bad.stderr

    started = cli("start", name)
    assert started.stdout == f"{name}\n"
    again = cli("start", name, "t-none-such", check=False)
    assert again.returncode == 1 and again.stdout == ""
    assert f"cannot start container {name}: it is running" in again.stderr
    assert "No such container: t-none-such" in again.stderr

    info = json.loads(cli("inspect", name).stdout)
    assert len(info) == 1 and info[0]["Id"] == cid and info[0]["State"]["Running"]
    pid = info[0]["State"]["Pid"]
    restarted = cli("restart", "-t", "0.2", name)
    assert restarted.stdout == f"{name}\n"
    info = json.loads(cli("inspect", "--type", "container", name).stdout)[0]
    assert info["State"]["Pid"] != pid and info["State"]["Running"]
    log = cli("exec", name, "cat", "/log").stdout.splitlines()
    assert len(log) == 2  # the writable layer was kept through the restart

    image = json.loads(cli("inspect", "busybox").stdout)[0]
    assert "RepoTags" in image and "State" not in image
    not_image = cli("inspect", "--type", "image", name, check=False)
    assert not_image.returncode == 1 and f"No such image: {name}" in not_image.stderr
    assert json.loads(not_image.stdout) == []
    neither = cli("inspect", "t-none-such", name, check=False)
    assert neither.returncode == 1 and "Error: No such object: t-none-such" in neither.stderr
    assert [i["Id"] for i in json.loads(neither.stdout)] == [cid]

    cli("stop", "-t", "0.2", name)
    paused = cli("pause", name, check=False)
    assert paused.returncode == 1 and "exited" in paused.stderr
    cli("start", name)
    assert len(cli("exec", name, "cat", "/log").stdout.splitlines()) == 3
