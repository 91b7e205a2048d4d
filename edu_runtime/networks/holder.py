"""Rootless networks: one network namespace per user, where edu's bridges live.

Without root, nothing can be added to the host's own network: no bridge, no veth, no NAT
rule. But a user may make a *user namespace* and be root in it, and a network namespace
owned by that user namespace, and there they may make any bridge, veth or nftables rule
they like. That is how Docker's rootless mode does it (RootlessKit's design), and edu too:

- one small process per user, the **network holder**, makes a user namespace (uid 0 inside
  is the user outside) with a network namespace, and stays there. It is started on demand
  by the first container that needs a network, like the supervisor is, and leaves when the
  last one has gone;
- **pasta** (from the passt project) is attached to the holder's namespace once: its tap
  device, with the host's address and routes copied onto it, is the namespace's way out,
  relayed through ordinary host sockets;
- inside, the holder makes the bridges (``edu0`` and one per user network), addresses,
  veths and nftables rules with the very code root uses (``bridge``, ``nat``);
- a container joins the holder's user namespace before it makes its own namespaces, so they
  belong to it and the holder (root there) may move a veth end into the container;
- ``-p HOST:CTR``: the ``edu`` process binds the host port (as for root) and hands the socket
  to the holder, which accepts on it and connects to the container from inside the
  namespace (RootlessKit's "builtin" port driver, docker-proxy's way).

The holder listens on ``run_dir()/netns-SCOPE.sock``. Each container keeps one connection
open for as long as its network lives: when it closes (the container's teardown, or its
``edu`` killed), the holder forgets that container, and when none is left it removes its
files, stops pasta and exits; the namespace, bridges and rules die with it. A holder killed
with SIGKILL is known by its pid and start time in ``netns-SCOPE.json``: the next ``edu``
command stops its pasta and removes its files. ``netns-SCOPE.lock`` orders starting, using
and leaving: a holder leaves only while holding it, so a container that took it first always
finds its holder alive.

Introduced in notebooks/08-web-app.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import kernel, paths
from ..life import client
from . import registry

READY_TIMEOUT = 30.0  # seconds for a new holder to make its namespace and start pasta
GONE_TIMEOUT = 10.0  # seconds for a leaving holder (or a stopped pasta) to be gone
PASTA = ["pasta", "--config-net", "--quiet", "-t", "none", "-u", "none", "-T", "none",
         "-U", "none"]

#: The holder's one rule of its own: a packet conntrack finds invalid is dropped, not answered.
#: pasta (passt 2023-03, Debian 12's) acknowledges a container's first data with a segment
#: that has no flags at all; conntrack calls it invalid, so it is not translated back to the
#: container's address and reaches the holder's own stack, which answers it with a RST, and
#: pasta closes the connection: every download through pasta died after its request (the
#: handshake had worked). A host drops such a packet where the socket is its own; here,
#: conntrack's drop does. (Only in the holder's namespace: the host's rules are left alone.)
INVALID_DROP = """table inet edu-holder {
\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\tct state invalid drop
\t}
}
"""


def _file(kind: str) -> Path:
    """The holder's files beside the supervisor's: one holder per state directory."""
    return paths.run_dir() / f"netns-{client.scope()}.{kind}"


def log_path() -> Path:
    """Where the holder (and pasta's errors) write."""
    return _file("log")


@contextmanager
def _locked():
    fd = os.open(paths.ensure(paths.run_dir(), 0o700) / _file("lock").name,
                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the flock


def _record() -> dict[str, Any] | None:
    try:
        return json.loads(_file("json").read_text())
    except (OSError, ValueError):
        return None


def running() -> dict[str, Any] | None:
    """The record of this user's live holder (pid, pasta's pid, start times), or None."""
    rec = _record()
    return rec if rec and kernel.pid_alive(rec["pid"], rec["start"]) else None


def _stop(pid: int, started: str) -> None:
    """End ``pid`` if it is still the process that started then: SIGTERM, and SIGKILL if it
    is not gone in GONE_TIMEOUT."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not kernel.pid_alive(pid, started):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        _wait_gone(pid, started)


def _wait_gone(pid: int, started: str) -> None:
    """Wait (at most GONE_TIMEOUT) until ``pid`` has exited."""
    deadline = time.monotonic() + GONE_TIMEOUT
    while kernel.pid_alive(pid, started) and time.monotonic() < deadline:
        time.sleep(0.01)


# ---- the containers' side --------------------------------------------------------------------

def _connect() -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.connect(str(_file("sock")))
    except OSError:
        s.close()
        raise
    return s


def call(conn: socket.socket, op: str, fds: list[int] | None = None, **fields: Any
         ) -> dict[str, Any]:
    """One request to the holder on ``conn``, and its answer; NetworkError if it refuses."""
    try:
        client.send(conn, {"op": op, **fields}, fds)
        reply = client.answer(conn)
    except OSError:
        raise registry.NetworkError(
            f"the network holder went away during {op!r}: see {log_path()}, and run the "
            "container again (the next edu command cleans up after it)") from None
    if "error" in reply:
        raise registry.NetworkError(reply["error"])
    return reply


def hold(container_id: str) -> tuple[socket.socket, int]:
    """Make sure this user's holder runs (starting it, with its pasta, if not) and register
    ``container_id`` with it. Returns the connection that keeps the container registered
    while it is open, and an fd of the holder's user namespace for the container to join."""
    with _locked():
        rec = running()
        if rec is None:
            _forget_dead()
            rec = _spawn()
        try:
            conn = _connect()
        except OSError as exc:
            raise registry.NetworkError(f"could not reach your network holder ({exc.strerror}):"
                                        f" its log, {log_path()}, may say why") from None
        try:
            call(conn, "hold", id=container_id)
            userns = os.open(f"/proc/{rec['pid']}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            conn.close()
            raise
    return conn, userns


def release(conn: socket.socket | None) -> None:
    """The container's network is gone: tell the holder, and if it was the last one, wait
    until the holder (and its pasta) have gone too. Never raises."""
    if conn is None:
        return
    rec = running()
    try:
        with conn:
            reply = call(conn, "release")
    except registry.NetworkError:
        return
    if reply.get("exiting") and rec:
        _wait_gone(rec["pid"], rec["start"])


def ask(op: str, **fields: Any) -> dict[str, Any] | None:
    """One request to the running holder on a connection of its own; None if none runs."""
    if running() is None:
        return None
    try:
        conn = _connect()
    except OSError:
        return None
    with conn:
        return call(conn, op, **fields)


def remove_network(network: dict[str, Any]) -> None:
    """``edu network rm``, rootless: the holder removes the bridge and its rules, if it has
    them (with no holder running, there are none)."""
    try:
        ask("remove", network=network)
    except registry.NetworkError:
        if running() is not None:  # not a holder that was just leaving
            raise


def cleanup_stale() -> bool:
    """Called by every container command: a holder with no container left is told to go (it
    goes at once unless a container is being started), a holder leaving on its own is waited
    for, and the pasta and files of a killed holder are removed. True if a holder went."""
    rec = _record()
    if rec is None and not _file("lock").exists():
        return False  # never used here
    if rec is not None and kernel.pid_alive(rec["pid"], rec["start"]):
        try:
            reply = ask("idle")
        except registry.NetworkError:
            reply = None
        if reply and reply.get("exiting"):
            _wait_gone(rec["pid"], rec["start"])
            return True
    with _locked():  # a leaving holder keeps this until it is gone
        if running() is None and _record() is not None:
            _forget_dead()
            return True
    return False


def _forget_dead() -> None:
    """A dead holder's leftovers: its pasta (by pid and start time), its files."""
    rec = _record()
    if rec:
        _stop(rec.get("pasta", 0), rec.get("pasta_start", ""))
    for kind in ("json", "sock", "pasta.pid"):
        _file(kind).unlink(missing_ok=True)


def _spawn() -> dict[str, Any]:
    """Start a holder (``python -m edu_runtime.networks.holder``) and wait until it is ready."""
    import shutil

    if not shutil.which("pasta"):
        raise registry.NetworkError(
            "rootless networks need pasta (from the passt package), which is not installed: "
            "apt-get install passt, or run the container with --network none")
    r, w = os.pipe()
    # The holder must not be adopted by us (a subreaper while a container starts): we would
    # not reap it, and its exit would leave a zombie. Its parent exits before run() returns.
    subreaper = kernel.get_child_subreaper()
    kernel.prctl(kernel.PR_SET_CHILD_SUBREAPER, 0)
    env = {**os.environ, "EDU_STATE_DIR": str(paths.state_dir()),
           "EDU_RUN_DIR": str(paths.run_dir())}  # root in its namespace, but our paths
    try:
        with open(log_path(), "ab") as out:
            subprocess.run([sys.executable, "-m", "edu_runtime.networks.holder", str(w)], env=env,
                           stdin=subprocess.DEVNULL, stdout=out, stderr=out, pass_fds=[w])
    finally:
        os.close(w)
        if subreaper:
            kernel.prctl(kernel.PR_SET_CHILD_SUBREAPER, 1)
    try:
        ready, _, _ = select.select([r], [], [], READY_TIMEOUT)
        answer = os.read(r, 4096).decode() if ready else ""
    finally:
        os.close(r)
    rec = running()
    if answer.strip() != "ready" or rec is None:
        raise registry.NetworkError(
            answer.strip() or f"your network holder did not start (in {READY_TIMEOUT:.0f} s): "
            f"its log, {log_path()}, says why")
    return rec


# ---- the holder ------------------------------------------------------------------------------

@dataclass
class _Held:
    """One container the holder serves: its network and the ports relayed to it."""

    id: str
    network: dict[str, Any] | None = None
    ip: str = ""
    relays: list[Any] = field(default_factory=list)
    ports: list[str] = field(default_factory=list)  # as `edu ps` would show them


@dataclass
class _Udp:
    """A published UDP port: the host's socket, and one socket inside per client."""

    host: socket.socket
    target: tuple[str, int]
    peers: dict[Any, socket.socket] = field(default_factory=dict)


class Holder:
    """The holder's event loop: requests, published ports, and leaving when unused."""

    def __init__(self, listener: socket.socket, lock_fd: int, record: dict[str, Any]):
        self.listener, self.lock_fd, self.record = listener, lock_fd, record
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ, ("accept", None))
        self.held: dict[socket.socket, _Held] = {}

    def serve(self) -> None:
        """Until no container is left and no ``edu`` is about to add one."""
        while True:
            for key, _ in self.sel.select(timeout=1.0):
                kind, data = key.data
                getattr(self, f"_on_{kind}")(key.fileobj, data)
            if not self.held and self._leave():
                return

    # ---- connections and requests ------------------------------------------------------------

    def _on_accept(self, listener, _) -> None:
        conn, _ = listener.accept()
        self.sel.register(conn, selectors.EVENT_READ, ("request", None))

    def _on_request(self, conn, _) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(conn, 65536, 16)
            while data and not data.endswith(b"\n"):
                more = conn.recv(65536)
                if not more:
                    break
                data += more
        except OSError:
            data, fds = b"", []
        if not data:  # closed: the container's network is gone (or a one-off asker left)
            self._drop(conn)
            return
        try:
            req = json.loads(data)
            reply = getattr(self, f"_op_{req['op']}")(conn, req, fds) or {}
        except registry.NetworkError as exc:
            reply = {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one bad request must not end the rest
            reply = {"error": f"the network holder could not do {data[:40]!r}: {exc}"}
        finally:
            for fd in fds:
                os.close(fd)  # the ports were dup'ed; the rest was not wanted
        try:
            client.send(conn, reply)
        except OSError:
            self._drop(conn)
        if reply.get("exiting"):
            os._exit(0)  # at once: whoever waits for us to be gone waits no longer

    def _drop(self, conn: socket.socket) -> None:
        """A connection closed: forget its container, if it held one."""
        try:
            self.sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        self._forget(conn)
        conn.close()

    def _forget(self, conn: socket.socket) -> None:
        """A container's network is gone: its relays, veth and (if last) bridge go too."""
        held = self.held.pop(conn, None)
        if held is None:
            return
        self._unpublish(held)
        self._detach(held)
        if held.network:
            self._retire(held.network)

    def _leave(self) -> bool:
        """Go, if nobody is starting a container (they hold the lock while they do): the
        files first (no one new finds us), then pasta; the namespace dies with us."""
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if self.held:  # someone registered while we were waiting to look
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
            return False
        for kind in ("json", "sock", "pasta.pid"):
            _file(kind).unlink(missing_ok=True)
        self.listener.close()
        _stop(self.record["pasta"], self.record["pasta_start"])
        return True  # the lock goes with the process

    def _reap_closed(self) -> None:
        """Forget containers whose connection has closed but is not yet read."""
        for conn in list(self.held):
            readable, _, _ = select.select([conn], [], [], 0)
            if readable and not conn.recv(1, socket.MSG_PEEK):
                self._drop(conn)

    # ---- the operations ----------------------------------------------------------------------

    def _op_hold(self, conn, req, fds) -> dict[str, Any]:
        self.held[conn] = _Held(req["id"])
        return {"pid": os.getpid()}

    def _op_release(self, conn, req, fds) -> dict[str, Any]:
        self._forget(conn)
        return self._op_idle(conn, req, fds)

    def _op_idle(self, conn, req, fds) -> dict[str, Any]:
        self._reap_closed()
        return {"exiting": not self.held and self._leave()}

    def _op_bridge(self, conn, req, fds) -> dict[str, Any]:
        from . import bridge, nat

        bridge.ensure_bridge(req["network"])
        nat.ensure_network(req["network"])
        return {}

    def _op_attach(self, conn, req, fds) -> dict[str, Any]:
        from . import bridge

        held = self.held[conn]
        self._op_bridge(conn, req, fds)
        held.network, held.ip = req["network"], req["ip"]
        return bridge.attach(req["network"], req["pid"], held.id, req["ip"])

    def _op_detach(self, conn, req, fds) -> dict[str, Any]:
        self._detach(self.held[conn])
        return {}

    def _detach(self, held: _Held) -> None:
        from . import bridge

        if held.ip:
            bridge.detach(held.id)
            held.ip = ""

    def _op_retire(self, conn, req, fds) -> dict[str, Any]:
        held = self.held.get(conn)
        if held is not None:
            held.network = None
        self._retire(req["network"])
        return {}

    def _retire(self, network: dict[str, Any]) -> None:
        """The last container out of a network takes its bridge and rules with it."""
        if any(h.network and h.network["name"] == network["name"] for h in self.held.values()):
            return
        self._op_remove(None, {"network": network}, [])

    def _op_remove(self, conn, req, fds) -> dict[str, Any]:
        from . import bridge, nat

        nat.remove_network(req["network"])
        bridge.remove_bridge(req["network"])
        return {}

    def _op_publish(self, conn, req, fds) -> dict[str, Any]:
        held = self.held[conn]
        for port, fd in zip(req["ports"], fds, strict=True):
            host = socket.socket(fileno=os.dup(fd))
            host.setblocking(False)
            target = (held.ip, port["container_port"])
            if port["proto"] == "tcp":
                relay: Any = host
                self.sel.register(host, selectors.EVENT_READ, ("connection", target))
            else:
                relay = _Udp(host, target)
                self.sel.register(host, selectors.EVENT_READ, ("datagram", relay))
            held.relays.append(relay)
            held.ports.append(f"{host.getsockname()[0]}:{host.getsockname()[1]} -> "
                              f"{target[0]}:{target[1]}/{port['proto']}")
        return {}

    def _op_unpublish(self, conn, req, fds) -> dict[str, Any]:
        self._unpublish(self.held[conn])
        return {}

    def _unpublish(self, held: _Held) -> None:
        for relay in held.relays:
            for s in [relay] if isinstance(relay, socket.socket) else \
                    [relay.host, *relay.peers.values()]:
                self.sel.unregister(s)
                s.close()
        held.relays, held.ports = [], []

    def _op_view(self, conn, req, fds) -> dict[str, Any]:
        from . import bridge, nat

        network = req["network"]
        if req.get("nat"):
            held = self.held.get(conn)
            return {"network rules": nat.rule_lines(f"edu-net:{network['bridge']}"),
                    "ports relayed by the holder": sorted(held.ports) if held else []}
        out: dict[str, Any] = {"holder's namespace": bridge.host_view(network,
                                                                      req.get("veth", ""))}
        if req.get("pid"):
            out["container"] = bridge.container_view(req["pid"])
        return out

    # ---- published ports ---------------------------------------------------------------------

    def _on_connection(self, host: socket.socket, target: tuple[str, int]) -> None:
        try:
            outside, _ = host.accept()
        except OSError:
            return
        # Made here, in the main thread, so the socket is in our namespace (a thread
        # inherits the namespace of the thread that starts it).
        inside = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        threading.Thread(target=_relay_tcp, args=(outside, inside, target),
                         daemon=True).start()

    def _on_datagram(self, host: socket.socket, relay: _Udp) -> None:
        try:
            data, peer = host.recvfrom(65536)
        except OSError:
            return
        inside = relay.peers.get(peer)
        if inside is None:
            inside = relay.peers[peer] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            inside.setblocking(False)
            inside.connect(relay.target)
            self.sel.register(inside, selectors.EVENT_READ, ("reply", (relay, peer)))
        try:
            inside.send(data)
        except OSError:
            pass  # a datagram lost, as datagrams may be

    def _on_reply(self, inside: socket.socket, where) -> None:
        relay, peer = where
        try:
            relay.host.sendto(inside.recv(65536), peer)
        except OSError:
            pass


def _relay_tcp(outside: socket.socket, inside: socket.socket, target) -> None:
    """One relayed connection: connect inside, then copy both ways until both ends close."""
    with outside, inside:
        outside.setblocking(True)
        try:
            inside.settimeout(10)
            inside.connect(target)
            inside.settimeout(None)
        except OSError:
            return
        back = threading.Thread(target=_copy, args=(inside, outside), daemon=True)
        back.start()
        _copy(outside, inside)
        back.join()


def _copy(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)  # the other direction may still have more to say
    except OSError:
        pass


def _make_namespace() -> dict[str, Any]:
    """Become root of a new user namespace with a network namespace, and connect it to the
    host with pasta (started by a helper left outside, which is where pasta must start)."""
    go_r, go_w = os.pipe()
    why_r, why_w = os.pipe()
    helper = os.fork()
    if helper == 0:
        code = 1
        try:
            os.close(go_w)
            os.close(why_r)
            if os.read(go_r, 1) == b"u":
                out = subprocess.run(PASTA + ["-P", str(_file("pasta.pid")), str(os.getppid())],
                                     stdin=subprocess.DEVNULL, capture_output=True, text=True)
                os.write(why_w, " ".join(line for line in out.stderr.splitlines()
                                         if "syslog" not in line).encode())
                code = out.returncode
        finally:
            os._exit(code)
    os.close(go_r)
    os.close(why_w)
    try:
        try:
            kernel.enter_user_namespace()  # a user and a mount namespace, our ids mapped to 0
        except OSError as exc:
            raise registry.NetworkError(
                f"could not make your own network namespace ({exc.strerror}): this host does "
                "not let users make user namespaces; edu doctor says how to allow them, or "
                "run the container with --network none") from None
        kernel.unshare(kernel.CLONE_NEWNET)
        # Our own /sys, which shows our namespace's devices (bridge.py reads them there):
        # a sysfs shows the devices of the network namespace it was mounted in.
        kernel.mount("none", "/", None, kernel.MS_REC | kernel.MS_SLAVE)
        kernel.mount("sysfs", "/sys", "sysfs", kernel.MS_NOSUID | kernel.MS_NODEV |
                     kernel.MS_NOEXEC)
        kernel.set_link_up("lo")
        os.write(go_w, b"u")
    finally:
        os.close(go_w)
    with os.fdopen(why_r) as f:
        why = f.read().strip()
    if kernel.wait_status(helper) != 0:
        raise registry.NetworkError(
            f"pasta could not connect your network namespace: {why or 'it failed'} (is "
            "/dev/net/tun usable by this user? Debian's default mode is 0666)")
    pasta = int(_file("pasta.pid").read_text())
    return {"pid": os.getpid(), "start": kernel.start_time(os.getpid()),
            "pasta": pasta, "pasta_start": kernel.start_time(pasta)}


def _main(ready_fd: int) -> None:
    os.setsid()  # out of the terminal's process group: Ctrl-C on a run must not reach us
    if os.fork():
        os._exit(0)  # our parent returns; init adopts us
    os.chdir("/")  # hold no directory of the caller's (it could not be unmounted)
    try:
        record = _make_namespace()
        # Requests come from edu processes that may hold the network registry's lock, and
        # this namespace is ours alone: the shared code must never wait for that lock here.
        registry.assume_locked()
        from . import bridge, nat  # noqa: F401 - paid once, before the first request

        nat.nft("-f", "-", script=INVALID_DROP)
        lock_fd = os.open(_file("lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        _file("sock").unlink(missing_ok=True)
        listener.bind(str(_file("sock")))
        listener.listen(64)
        tmp = _file(f"json.{os.getpid()}")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, _file("json"))
    except BaseException as exc:
        os.write(ready_fd, (str(exc) or type(exc).__name__).encode())
        raise
    os.write(ready_fd, b"ready\n")
    os.close(ready_fd)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    Holder(listener, lock_fd, record).serve()
    os._exit(0)


if __name__ == "__main__":
    try:
        _main(int(sys.argv[1]))
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
