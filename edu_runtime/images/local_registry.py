"""A registry of your own: ``docker run -d -p 5000:5000 registry:2``, done with Debian's package.

Docker's documentation starts a private registry as a container of the ``registry`` image. Here
the same program (distribution, packaged by Debian as ``docker-registry``) runs as a plain
process, started by a lesson and stopped by its reset:

- it listens on **127.0.0.1 only**, on a free port the kernel picks (never 5000, which the
  test suite's registry uses), so nothing outside this machine can reach it, and loopback
  means plain HTTP for edu and Docker alike;
- its blobs live in ``state_dir()/registries/NAME/storage``, laid out the way the registry
  keeps them (``docker/registry/v2/blobs/sha256/ab/abcd.../data``), so a lesson can look at,
  or tamper with, the very bytes it serves;
- a small record in ``run_dir()/registries/NAME.json`` names its process by pid *and* start
  time, so ``stop`` never signals a later process that was given the same pid, and a
  registry left running by a kernel that died is still found and stopped.

``stop`` kills it, waits for it to be gone (and reaps it when this process started it), and
deletes its storage: what a lesson pushed there goes with it.

Introduced in notebooks/04-images.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import kernel, paths
from .registry import RegistryError

PROGRAMS = ("docker-registry", "registry")  # Debian's name, and upstream's
TEST_PORT = 5000  # the test suite's registry (scripts/registry.yml): never ours
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}")
_children: dict[int, subprocess.Popen] = {}  # the registries this process started, to reap


@dataclass
class Served:
    """A running registry: its name, where it listens, its process and its storage."""

    name: str
    port: int
    pid: int
    started: str  # the process's start time (kernel.start_time): with pid, one process
    root: str  # its directory: config.yml, registry.log and storage/

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``: the registry part of an image name (``127.0.0.1:PORT/a/b:1``)."""
        return f"127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        """Where it keeps repositories and blobs (distribution's filesystem driver)."""
        return Path(self.root) / "storage"

    def blob_path(self, digest: str) -> Path:
        """The file holding a blob's bytes, as this registry stores it."""
        hexpart = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"

    def alive(self) -> bool:
        """True while its process runs (the same process, not a later one with its pid)."""
        return kernel.pid_alive(self.pid, self.started)


def _records() -> Path:
    return paths.run_dir() / "registries"


def _dirs() -> Path:
    return paths.state_dir() / "registries"


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise RegistryError(f"{name!r} is not a registry name: use letters, digits, '_', '.' "
                            "and '-', starting with a letter or digit (at most 64).")
    return name


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One start or stop at a time (two kernels of one lesson, a reset meanwhile)."""
    _records().mkdir(parents=True, exist_ok=True)
    with open(_records() / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _read(name: str) -> Served | None:
    try:
        return Served(**json.loads((_records() / f"{name}.json").read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def _reap() -> None:
    """Reap the registries this process started that have exited (stopped from elsewhere)."""
    for pid, proc in list(_children.items()):
        if proc.poll() is None and not kernel.pid_alive(pid):  # exiting: let it finish
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_TIMEOUT)
        if proc.returncode is not None:
            del _children[pid]


def find(name: str) -> Served | None:
    """The registry called ``name`` if it runs; None if it does not (any more)."""
    _reap()
    served = _read(_check_name(name))
    return served if served is not None and served.alive() else None


def running() -> list[Served]:
    """Every registry started here that still runs, by name."""
    _reap()
    out = []
    for path in sorted(_records().glob("*.json")) if _records().is_dir() else []:
        served = _read(path.stem)
        if served is not None and served.alive():
            out.append(served)
    return out


def program() -> str:
    """The registry program's path; a sentence saying how to install it if it is missing."""
    for name in PROGRAMS:
        found = shutil.which(name)
        if found:
            return found
    raise RegistryError("docker-registry is not installed, and a registry of your own runs "
                        "it: run 'apt-get install docker-registry' (scripts/setup.sh does), "
                        "then try again.")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (never the test suite's 5000)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != TEST_PORT:
            return port


def start(name: str, port: int | None = None) -> Served:
    """Start the registry ``name`` on 127.0.0.1 (a free port unless ``port``), or return it
    if it runs already. Raises RegistryError, with the end of its log, if it cannot start."""
    _check_name(name)
    if port == TEST_PORT:
        raise RegistryError(f"port {TEST_PORT} is the test suite's registry: leave it be, "
                            "and let the kernel pick a free port (port=None).")
    binary = program()
    _reap()
    with _locked():
        old = _read(name)
        if old is not None and old.alive():
            return old
        _forget(name)  # a registry that died, or a kernel's restart: start afresh
        root = _dirs() / name
        root.mkdir(parents=True, mode=0o700)
        last = ""
        for _ in range(3):  # a free port can be taken between our probe and its bind
            served, last = _spawn(binary, name, root, port or free_port())
            if served is not None:
                tmp = _records() / f".{name}.{os.getpid()}.tmp"
                tmp.write_text(json.dumps(asdict(served)))
                tmp.replace(_records() / f"{name}.json")
                return served
            if port is not None or "address already in use" not in last:
                break
        shutil.rmtree(root, ignore_errors=True)
    raise RegistryError(f"the registry {name} did not start ({binary}): {_words(last)}")


def _spawn(binary: str, name: str, root: Path, port: int) -> tuple[Served | None, str]:
    """One attempt: the registry on ``port``, ready to answer ``GET /v2/``; or its log."""
    config = {"version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
              "storage": {"filesystem": {"rootdirectory": str(root / "storage")},
                          "delete": {"enabled": True}},
              "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)}}
    (root / "config.yml").write_text(json.dumps(config, indent=1))  # JSON is YAML
    log = root / "registry.log"
    with open(log, "wb") as out:
        # A session of its own: a Ctrl-C (SIGINT) to the notebook's kernel leaves it running
        # for the reset to stop. Popen forks and execs in C: safe in a threaded kernel.
        proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=root)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        if _answers(port):
            _children[proc.pid] = proc
            return Served(name, port, proc.pid, kernel.start_time(proc.pid), str(root)), ""
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    return None, log.read_text(errors="replace")[-2000:]


def _words(log: str) -> str:
    """What a registry's log says went wrong: the last ``msg="..."`` of it, or its end."""
    found = re.findall(r'msg="((?:[^"\\]|\\.)*)"', log)
    return found[-1].replace('\\"', '"') if found else (log.strip()[-500:] or "it said nothing")


def _answers(port: int) -> bool:
    """The Registry API answers ``GET /v2/`` with 200 on this port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/v2/")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def stop(name: str) -> Served | None:
    """Stop the registry ``name`` and delete its storage; what was stopped, or None if it
    was not running (its leftovers, if any, are deleted all the same)."""
    _check_name(name)
    with _locked():
        served = _read(name)
        if served is not None and served.alive():
            _kill(served)
        else:
            served = None
        _forget(name)
    _reap()
    return served


def _kill(served: Served) -> None:
    """SIGTERM, then SIGKILL; return once the process is gone (reaped, if it is ours)."""
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(served.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            child = _children.get(served.pid)
            if child is not None and child.poll() is not None:
                del _children[served.pid]
                return
            if child is None and not served.alive():  # another process's child: gone, or
                return  # a zombie its parent reaps
            time.sleep(0.02)
    raise RegistryError(f"the registry {served.name} (pid {served.pid}) did not stop: kill "
                        "it by hand, then run the reset again.")


def _forget(name: str) -> None:
    """Delete a registry's record and its directory (config, log, storage)."""
    (_records() / f"{name}.json").unlink(missing_ok=True)
    shutil.rmtree(_dirs() / name, ignore_errors=True)
