"""Shared test helpers.

``need(condition, reason)`` skips a test on a host that cannot run it, but under CI (CI=true,
as .ci/run runs) a missing capability is a failure: CI's machine is set up to run everything,
so a skip there would hide a broken install step.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

import pytest

# numpy's BLAS starts a pool of native threads when it is imported (matplotlib imports it),
# and a threaded process never forks a container itself (life/remote.py): keep the test
# process single-threaded, so the tests that fork here keep doing so.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (in CI) unless ``condition`` holds."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must be able to run this, but: {reason}")
    pytest.skip(reason)


def wait_for(pred, timeout: float = 10.0) -> bool:
    """Poll ``pred`` until it is true (True) or ``timeout`` seconds have passed (False)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def root():
    """The test needs root (CI runs as root)."""
    need(os.geteuid() == 0, "needs root")


@pytest.fixture(scope="session")
def python() -> str:
    """The interpreter running the tests (the project's .venv under make test)."""
    return sys.executable


HOST_PATHS = ["/", "/bin", "/etc", "/etc/passwd", "/home", "/root", "/run", "/tmp", "/usr",
              "/usr/bin", "/var", "/var/lib"]


def _host_fingerprint() -> dict[str, tuple[int, int, int]]:
    out = {}
    for p in HOST_PATHS:
        try:
            st = os.lstat(p)
            out[p] = (st.st_mode, st.st_uid, st.st_gid)
        except OSError:
            pass
    return out


#: Test modules that open libvirt in this process. libvirt's event loop runs in a thread that
#: lives as long as the process (virEventRegisterDefaultImpl cannot be undone), and a
#: threaded process never forks a container itself: these run last, so every test before
#: them forks its containers here, as the CLI does.
LIBVIRT_IN_PROCESS = ("test_compare.py", "test_libvirt_guest.py")


def pytest_collection_modifyitems(items):
    """Run the modules that start libvirt's event thread last (a stable sort)."""
    items.sort(key=lambda item: item.path.name in LIBVIRT_IN_PROCESS)


def _threads() -> set[str]:
    """This process's threads (task ids), but libvirt's event loop, which stays by design."""
    import threading

    keep = {str(t.native_id) for t in threading.enumerate() if t.name == "libvirt-events"}
    return set(os.listdir("/proc/self/task")) - keep


@pytest.fixture(autouse=True)
def leaves_no_thread():
    """A test leaves no thread running: the test process must stay single-threaded, or the
    containers later tests start here would be made by the supervisor instead."""
    before = _threads()
    yield
    left = _threads() - before
    for _ in range(50):  # a thread that was told to stop may need a moment to end
        if not left:
            return
        import time

        time.sleep(0.02)
        left &= _threads()
    import threading

    assert not left, f"the test left {len(left)} thread(s) running: {threading.enumerate()}"


@pytest.fixture(scope="session", autouse=True)
def host_is_untouched():
    """Tests unpack hostile layers and follow containers' symlinks: whatever they do, the
    host's own directories must keep their modes and owners (a bug here once chmodded /)."""
    before = _host_fingerprint()
    passwd = _passwd()
    yield
    assert _host_fingerprint() == before, "a test changed the host's directories"
    assert _passwd() == passwd, "a test changed /etc/passwd"


def _passwd() -> list[str]:
    """/etc/passwd, less the student accounts of other test sessions running at the same
    time (tests/accounts.py names them edu-st-PID); this session's own must be gone."""
    mine = f"edu-st-{os.getpid()}:"
    # (and issue 17's: shr-X-PID per test, hub-PID-N per hub test, each removed by its test)
    return [line for line in Path("/etc/passwd").read_text().splitlines()
            if not line.startswith(("edu-st-", "shr-", "hub-")) or line.startswith(mine)]


@pytest.fixture(scope="session")
def busybox():
    """The busybox base image in the default store (what `make test` bootstraps)."""
    from edu_runtime.images import bootstrap
    from edu_runtime.images.store import Store

    need(os.geteuid() == 0, "the runtime tests run as root (CI does)")
    return bootstrap.bootstrap(Store(), "busybox", progress=False)


@pytest.fixture
def cli(python, busybox):
    """The ``edu`` command as a student types it (as root, busybox in the store):
    ``cli("run", ...)`` asserts exit 0 unless ``check=False``; ``cli.name()`` gives a fresh
    container name, whose container is removed (``edu rm -f``) after the test."""
    import subprocess
    import uuid

    need(os.geteuid() == 0, "root")
    made: list[str] = []

    def run(*argv: str, check: bool = True, timeout: float = 120):
        out = subprocess.run([python, "-m", "edu_cli.main", *argv], capture_output=True,
                             text=True, timeout=timeout)
        if check:
            assert out.returncode == 0, out.stdout + out.stderr
        return out
    run.name = lambda: made.append(f"t-{uuid.uuid4().hex[:8]}") or made[-1]
    yield run
    for name in made:
        run("rm", "-f", name, check=False)


@pytest.fixture(scope="session")
def kernel():
    """The cached guest kernel; fetched once if missing (about 70 MB from the Debian mirror)."""
    from vm_compare import kernel_pkg

    try:
        return kernel_pkg.ensure_kernel(progress=lambda _msg: None)
    except kernel_pkg.KernelFetchError as err:
        need(False, f"guest kernel unavailable: {err}")


def store_with_busybox(state: Path, busybox):
    """A store of its own under state dir ``state``, holding the shared store's busybox (its
    blobs copied, not built again); the Store."""
    from edu_runtime.images.store import Store

    store, shared = Store(state / "store"), Store()
    with store.transaction():
        for d in busybox.manifest["layers"]:
            store.put_blob_file(shared.blob_path(d["digest"]), d["digest"])
        store.add_image(shared.read_blob(busybox.config_digest),
                        [(d["digest"], d["mediaType"]) for d in busybox.manifest["layers"]],
                        ["busybox:latest"])
    return store


def snapshot() -> dict:
    """What a container or an exec could leak: mounts, our children, edu cgroups, container
    dirs, and whether we are (still) a subreaper."""
    from edu_runtime import kernel, paths

    kids = sorted(p.name for p in Path("/proc").iterdir() if p.name.isdigit()
                  and kernel.proc_status(p.name).get("PPid") == str(os.getpid()))
    cdir = paths.state_dir() / "containers"
    return {"mounts": Path("/proc/self/mountinfo").read_text().count("\n"), "children": kids,
            # Per-container cgroups live under an `edu` parent in each hierarchy.
            "cgroups": sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/edu/*")
                              if p.is_dir()),
            "containers": sorted(p.name for p in cdir.iterdir()) if cdir.exists() else [],
            "subreaper": kernel.get_child_subreaper()}


@pytest.fixture
def no_leaks():
    """The test leaves no mount, child, cgroup or container directory behind."""
    before = snapshot()
    yield
    assert snapshot() == before


@contextlib.contextmanager
def running(image, command=("sleep", "60"), **kw):
    """A started container and its record; killed, waited for and removed afterwards."""
    import json

    from edu_runtime.container import Container

    c = Container(image, list(command), remove=True, **kw)
    c.start()
    try:
        yield c, json.loads(c.paths.record.read_text())
    finally:
        c.kill()
        c.wait()


# mountinfo of a pure cgroup v2 host and of a hybrid one (v1 controllers, cpu and cpuacct
# on separate mounts, plus a v2 tree), for tests of cgroup discovery on hosts CI is not.
PURE_V2_MOUNTINFO = (
    "25 1 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n"
    "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n")

HYBRID_MOUNTINFO = (
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer\n"
    "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")


@pytest.fixture(scope="session")
def student():
    """A real non-root user (``useradd -m``) with their own copy of the course in their home
    (tests/accounts.py); removed with everything of theirs at the end of the session."""
    import accounts

    need(os.geteuid() == 0, "making a user account needs root (CI runs as root)")
    need(shutil.which("useradd") is not None and shutil.which("setpriv") is not None,
         "useradd and setpriv (passwd, util-linux) are needed")
    account = accounts.create()
    yield account
    accounts.remove(account)
