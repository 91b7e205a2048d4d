"""Base images built from Debian packages: busybox, debian, and python and node on top of it.

Everything here is built for real: busybox from the host's busybox-static, debian with
debootstrap from the host's mirror (once per session; the .debs are cached in
/var/cache/edu/debootstrap), python and node with apt-get inside a real overlay. The built
images are then run with chroot, and read back layer by layer.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import need

from edu_runtime import kernel, overlay
from edu_runtime.images import bootstrap as bs
from edu_runtime.images.store import Store

IS_ROOT = os.geteuid() == 0


def mounts() -> list[str]:
    """This process's mount table, without the per-mount ids that change on every mount."""
    return sorted(f"{m['mount_point']} {m['fstype']} {m['source']}" for m in kernel.mountinfo())


def labels(image) -> dict[str, str]:
    return image.config["config"]["Labels"]


def dpkg_list(admindir: Path) -> list[str]:
    out = subprocess.run(["dpkg-query", f"--admindir={admindir}", "-W",
                          "-f=${Package}=${Version}\n"], capture_output=True, text=True,
                         check=True).stdout
    return sorted(out.split())


def chroot(root: Path, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["chroot", str(root), "/bin/sh", "-c", script], capture_output=True,
                          text=True, timeout=60)


def run_in_image(store: Store, image, script: str, scratch: Path) -> subprocess.CompletedProcess:
    """Run ``script`` in a real overlay of the image's layers, in a throwaway mount namespace
    (made by util-linux unshare, independently of the code under test)."""
    upper, work, merged = scratch / "upper", scratch / "work", scratch / "merged"
    for d in (upper, work, merged):
        d.mkdir(parents=True)
    opts = overlay.mount_options(store.lowerdirs(image), upper, work, rootless=False)
    setup = (f"mount -t overlay overlay -o {shlex.quote(opts)} {merged} && "
             f"mount -t proc proc {merged}/proc && "
             f"exec chroot {merged} /bin/sh -c {shlex.quote(script)}")
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", setup],
                          capture_output=True, text=True, timeout=60)


# ---- fast: names, mirrors, tags -----------------------------------------------------------

def test_unknown_name_says_which_are_known(tmp_path):
    with pytest.raises(bs.BootstrapError, match="known: busybox, debian, python, node"):
        bs.bootstrap(Store(tmp_path), "alpine")


def test_mirror_comes_from_the_hosts_apt_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    assert bs.host_mirror("bookworm", tmp_path) == bs.DEFAULT_MIRROR
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n")
    assert bs.host_mirror("bookworm", tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text(
        "# deb http://old.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one-line.example/debian bookworm main\n")
    assert bs.host_mirror("bookworm", tmp_path) == "http://one-line.example/debian"
    assert bs.host_mirror("trixie", tmp_path) == bs.DEFAULT_MIRROR


def test_unreachable_mirror_is_a_sentence():
    with pytest.raises(bs.BootstrapError, match="cannot reach the Debian mirror"):
        bs._check_mirror("http://127.0.0.1:9/debian")


def test_missing_debootstrap_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(bs.os, "geteuid", lambda: 0)
    monkeypatch.setattr(bs.shutil, "which", lambda name: None)
    with pytest.raises(bs.BootstrapError, match="apt-get install debootstrap"):
        bs.bootstrap(Store(tmp_path), "debian", progress=False)


@pytest.mark.parametrize("version,depth,tags", [
    ("1:1.35.0-4+deb12u1+b1", 3, ["1.35.0", "1.35", "1"]),
    ("3.11.2-1+b1", 2, ["3.11", "3"]),
    ("18.20.4+dfsg-1~deb12u2", 1, ["18"]),
])
def test_tags_follow_the_package_version(version, depth, tags):
    assert bs._version_tags(version, depth) == tags


# ---- busybox ------------------------------------------------------------------------------

def _busybox_installed() -> bool:
    return subprocess.run(["dpkg-query", "-W", "-f=${Status}", "busybox-static"],
                          capture_output=True, text=True).stdout == "install ok installed"


@pytest.fixture(scope="module")
def busybox(tmp_path_factory):
    need(_busybox_installed(), "needs busybox-static (apt-get install busybox-static)")
    store = Store(tmp_path_factory.mktemp("busybox") / "store")
    return store, bs.bootstrap(store, "busybox", progress=False)


def test_busybox_layer_has_every_applet_linked_to_busybox(busybox):
    store, image = busybox
    assert len(image.diff_ids) == 1
    layer = store.layer_dir(image.diff_ids[0])
    binary = os.path.realpath(layer / "bin/busybox")
    full = subprocess.run(["/bin/busybox", "--list-full"], capture_output=True, text=True,
                          check=True).stdout.split()
    for path in full:
        assert os.path.realpath(layer / path) == binary, path  # relative: stays in the layer
    names = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True,
                           check=True).stdout.split()
    assert set(names) <= {os.path.basename(p) for p in full} | {"busybox"}
    assert stat.S_IMODE(os.stat(layer / "tmp").st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(layer / "root").st_mode) == 0o700
    for d in ("home", "var", "proc", "sys", "dev"):
        assert (layer / d).is_dir() and not os.listdir(layer / d)
    users = (layer / "etc/passwd").read_text()
    assert users.startswith("root:x:0:0:") and "\nnobody:x:65534:65534:" in users
    assert "nobody:x:65534:" in (layer / "etc/group").read_text()


def test_busybox_config_and_tags(busybox):
    _, image = busybox
    cfg = image.config["config"]
    assert cfg["Cmd"] == ["sh"]
    assert cfg["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert image.config["os"] == "linux" and image.config["architecture"]
    assert "docker.io/library/busybox:latest" in image.tags
    version = labels(image)["org.opencontainers.image.version"]
    upstream = version.split(":")[-1].split("-")[0]  # 1:1.35.0-4+b1 -> 1.35.0
    assert f"docker.io/library/busybox:{upstream}" in image.tags


def test_busybox_labels_match_dpkg(busybox):
    _, image = busybox
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "busybox-static"],
                             capture_output=True, text=True, check=True).stdout
    assert labels(image)[bs.PACKAGES] == f"busybox-static={version}"
    assert labels(image)[bs.SOURCE] == "debian:busybox-static"
    assert labels(image)[bs.BUILT_BY] == "edu bootstrap"


def test_busybox_runs_in_a_chroot(busybox):
    need(IS_ROOT, "chroot needs root")
    store, image = busybox
    done = chroot(store.layer_dir(image.diff_ids[0]), "echo hi; ls /")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert lines[0] == "hi" and {"bin", "etc", "tmp", "usr"} <= set(lines)


def test_busybox_is_deterministic(busybox, tmp_path):
    _, first = busybox
    again = bs.bootstrap(Store(tmp_path / "other"), "busybox", progress=False)
    assert again.id == first.id
    assert again.manifest_digest == first.manifest_digest  # the gzip blob is the same too


def test_bootstrap_again_does_no_work_unless_refresh(busybox, monkeypatch):
    store, image = busybox

    def no_work(*args):
        raise AssertionError("the busybox layer was built again")

    with monkeypatch.context() as m:
        m.setattr(bs, "_busybox_entries", no_work)
        assert bs.bootstrap(store, "busybox", progress=False).id == image.id
    calls = []
    real = bs._busybox_entries
    monkeypatch.setattr(bs, "_busybox_entries", lambda *a: calls.append(1) or real(*a))
    assert bs.bootstrap(store, "busybox", progress=False, refresh=True).id == image.id
    assert calls == [1]


# ---- the build runner: output, exit codes, and nothing left behind ------------------------

def _children() -> set[int]:
    me, found = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat_line = kernel.read(f"/proc/{entry}/stat", "") or ""
            fields = stat_line.rpartition(")")[2].split()
            if len(fields) > 1 and fields[1] == str(me):
                found.add(int(entry))
    return found


def _gone(pid: int) -> bool:
    text = kernel.read(f"/proc/{pid}/stat")
    return text is None or text.rpartition(")")[2].split()[0] == "Z"


def test_run_streams_output_and_reports_the_exit_code(tmp_path, monkeypatch):
    need(IS_ROOT, "unshare(CLONE_NEWNS) needs root")
    monkeypatch.setenv("EDU_CACHE_DIR", str(tmp_path))
    bar = bs._Progress("test", ["run"], False)
    code, tail, log = bs._run(["/bin/sh", "-c", "echo one; echo two >&2; exit 3"],
                              bs._BUILD_ENV, "test", bar)
    assert (code, list(tail)) == (3, ["one", "two"])
    assert log.read_text() == "one\ntwo\n"


def test_ctrl_c_leaves_no_mount_and_no_process(tmp_path, monkeypatch):
    need(IS_ROOT, "unshare(CLONE_NEWNS) needs root")
    monkeypatch.setenv("EDU_CACHE_DIR", str(tmp_path))
    target, pidfile = tmp_path / "mnt", tmp_path / "grandchild.pid"
    target.mkdir()
    before_mounts, before_children = mounts(), _children()

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(KeyboardInterrupt):
            bs._run(["/bin/sh", "-c", f"sleep 31 & echo $! > {pidfile}; echo up; exec sleep 30"],
                    bs._BUILD_ENV, "test", bs._Progress("test", ["run"], False),
                    prepare=lambda: kernel.mount("tmpfs", str(target), "tmpfs"))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert mounts() == before_mounts and not os.listdir(target)
    assert _children() <= before_children  # the child was reaped
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(grandchild), "the build's own children must be killed too"


def test_a_child_that_cannot_start_says_so(tmp_path, monkeypatch):
    need(IS_ROOT, "unshare(CLONE_NEWNS) needs root")
    monkeypatch.setenv("EDU_CACHE_DIR", str(tmp_path))
    with pytest.raises(bs.BootstrapError, match="could not start the test build: .*nowhere"):
        bs._run(["/bin/true"], bs._BUILD_ENV, "test", bs._Progress("test", ["run"], False),
                prepare=lambda: kernel.mount("none", str(tmp_path / "nowhere"), "tmpfs"))


# ---- debian, python, node: built once per session -----------------------------------------

def _need_build_tools() -> None:
    need(IS_ROOT, "building debian, python and node needs root")
    need(shutil.which("debootstrap") is not None,
         "needs debootstrap (apt-get install debootstrap)")
    need(shutil.which("unshare") is not None, "needs unshare (util-linux)")


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """A store for the slow images, and how long each build took and what it left mounted."""
    return {"store": Store(tmp_path_factory.mktemp("bootstrap") / "store"), "mounts": {},
            "seconds": {}}


def _build(built, name):
    _need_build_tools()
    if name not in built["seconds"]:
        before, start = mounts(), time.monotonic()
        image = bs.bootstrap(built["store"], name, progress=False)
        built["seconds"][name] = time.monotonic() - start
        built["mounts"][name] = (before, mounts())
        built[name] = image
    return built["store"], built[name]


@pytest.mark.slow
def test_debian_is_bookworm_and_runs(built):
    store, image = _build(built, "debian")
    assert len(image.diff_ids) == 1
    done = chroot(store.layer_dir(image.diff_ids[0]), "cat /etc/debian_version /etc/os-release")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("12.") and "VERSION_CODENAME=bookworm" in done.stdout
    assert {"docker.io/library/debian:bookworm", "docker.io/library/debian:12",
            "docker.io/library/debian:latest"} <= set(image.tags)
    assert image.config["config"]["Cmd"] == ["bash"]


@pytest.mark.slow
def test_debian_is_clean(built):
    store, image = _build(built, "debian")
    layer = store.layer_dir(image.diff_ids[0])
    assert not os.listdir(layer / "var/lib/apt/lists")
    assert not list(layer.glob("var/cache/apt/*.bin"))
    assert not list(layer.glob("var/cache/apt/archives/*.deb"))
    assert not any((layer / "var/log" / f).exists()
                   for f in ("dpkg.log", "bootstrap.log", "alternatives.log"))
    assert not os.listdir(layer / "dev")
    # Docker-like defaults, not the host's files that debootstrap copied in.
    assert "nameserver 1.1.1.1" in (layer / "etc/resolv.conf").read_text()
    assert (layer / "etc/hostname").read_text() == "localhost\n"
    assert "localhost" in (layer / "etc/hosts").read_text()
    # Docker's debian speed-ups, which made the build itself faster too.
    assert (layer / "etc/dpkg/dpkg.cfg.d/docker-apt-speedup").read_text() == "force-unsafe-io\n"
    assert (layer / "etc/apt/apt.conf.d/docker-no-languages").exists()


@pytest.mark.slow
def test_debian_labels_pin_the_package_list(built):
    store, image = _build(built, "debian")
    found = dpkg_list(store.layer_dir(image.diff_ids[0]) / "var/lib/dpkg")
    got = labels(image)
    assert got[bs.SUITE_LABEL] == "bookworm" and got[bs.MIRROR_LABEL] == bs.host_mirror()
    assert got[f"{bs.PACKAGES}.count"] == str(len(found))
    listing = "\n".join(found) + "\n"
    assert got[f"{bs.PACKAGES}.sha256"] == hashlib.sha256(listing.encode()).hexdigest()
    assert " ".join(found) in image.config["history"][0]["comment"]


@pytest.mark.slow
def test_debian_again_is_instant(built):
    store, image = _build(built, "debian")
    start = time.monotonic()
    assert bs.bootstrap(store, "debian", progress=False).id == image.id
    assert time.monotonic() - start < 2


@pytest.mark.slow
@pytest.mark.parametrize("name,check,expect", [
    ("python", "python3 -c 'print(1+1)'", "2"),
    ("node", "node -e 'console.log(1+1)'", "2"),
    ("node", "npm --version | cut -d. -f1", "9"),  # Debian 12's npm, as the primer needs
])
def test_runs_through_a_real_overlay(built, tmp_path, name, check, expect):
    store, image = _build(built, name)
    before = mounts()
    done = run_in_image(store, image, check, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expect
    assert mounts() == before
    build_before, build_after = built["mounts"][name]
    assert build_after == build_before, "the build left something mounted"


@pytest.mark.slow
@pytest.mark.parametrize("name,package,cmd,tag,share", [
    ("python", "python3", ["python3"], "python:3.11", 0.5),
    ("node", "nodejs", ["node"], "node:18", 2.5),  # npm's node-* packages: 2 x debian
])
def test_top_layer_is_small_and_clean(built, name, package, cmd, tag, share):
    store, image = _build(built, name)
    _, debian = _build(built, "debian")
    assert image.diff_ids[:-1] == debian.diff_ids and len(image.diff_ids) == 2
    base_size, top_size = image.layer_sizes
    assert top_size < share * base_size
    base, top = store.layer_dir(image.diff_ids[0]), store.layer_dir(image.diff_ids[1])
    lists = top / "var/lib/apt/lists"
    assert not lists.exists() or not os.listdir(lists)
    assert not list(top.glob("var/cache/apt/archives/*.deb"))
    # The host's resolv.conf and hosts were bind-mounted, never written: no trace at all.
    for rel in ("etc/resolv.conf", "etc/hosts"):
        assert not os.path.lexists(top / rel)
    for dirpath, dirnames, filenames in os.walk(top):
        for entry in filenames:
            st = os.lstat(os.path.join(dirpath, entry))
            assert not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0), "a whiteout"
            assert not entry.startswith(".wh.")
        for entry in dirnames:
            # Overlay makes each *new* directory opaque; it must not hide anything of the base.
            path = os.path.join(dirpath, entry)
            try:
                os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False)
            except OSError:
                continue
            assert not os.path.lexists(base / os.path.relpath(path, top)), path
    got = labels(image)
    assert got[bs.BASE_LABEL] == debian.id
    assert f"{package}={got['org.opencontainers.image.version']}" in got[bs.PACKAGES].split()
    assert image.config["config"]["Cmd"] == cmd
    assert f"docker.io/library/{tag}" in image.tags
    assert image.config["history"][-2]["created_by"].startswith("/bin/sh -c apt-get")


def test_host_cas_are_named_with_their_digests(tmp_path):
    assert bs.host_cas(tmp_path / "missing") == {}
    (tmp_path / "b.crt").write_bytes(b"B")
    (tmp_path / "a.crt").write_bytes(b"A")
    (tmp_path / "notes.txt").write_bytes(b"not a certificate")
    assert bs.host_cas(tmp_path) == {"a.crt": hashlib.sha256(b"A").hexdigest(),
                                     "b.crt": hashlib.sha256(b"B").hexdigest()}
    assert "update-ca-certificates" not in bs._apt_script("nodejs npm")
    assert bs._apt_script("nodejs npm", True).endswith(
        "&& cp /tmp/host-ca/*.crt /usr/local/share/ca-certificates/ && update-ca-certificates")


@pytest.mark.slow
def test_node_trusts_the_cas_the_host_added(built, tmp_path):
    """What update-ca-certificates made of the host's added CAs is in node's bundle (none
    added, none there), and the label names them; the mount they came through left no
    trace in the layer."""
    store, image = _build(built, "node")
    cas = bs.host_cas()
    assert labels(image)[bs.HOST_CA_LABEL] == " ".join(f"{n}={d}" for n, d in cas.items())
    assert labels(image)[bs.SOURCE] == "debian:nodejs,npm"
    top = store.layer_dir(image.diff_ids[-1])
    assert not os.path.lexists(top / "tmp/host-ca")
    bundle = (top / "etc/ssl/certs/ca-certificates.crt").read_text()
    for name in cas:
        pem = (bs.HOST_CA_DIR / name).read_text().strip()
        assert pem in bundle, name
        assert (top / "usr/local/share/ca-certificates" / name).read_text().strip() == pem
    if not cas:
        assert not list((top / "usr/local/share/ca-certificates").glob("*.crt"))
    assert "update-ca-certificates" in image.config["history"][-2]["created_by"] or not cas


@pytest.mark.slow
def test_apt_failure_shows_its_output_and_leaves_nothing(built, monkeypatch):
    store, debian = _build(built, "debian")
    monkeypatch.setitem(bs._APT_IMAGES, "python", ("no-such-package-edu", ["python3"], 2))
    before, tags = mounts(), {t for i in store.images() for t in i.tags}
    staging = set(os.listdir(store.tmp))
    with pytest.raises(bs.BootstrapError) as caught:
        bs.bootstrap(store, "python", progress=False, refresh=True)
    message = str(caught.value)
    assert "apt-get failed (exit 100) installing no-such-package-edu" in message
    assert "Unable to locate package no-such-package-edu" in message  # apt's own words
    assert mounts() == before and set(os.listdir(store.tmp)) == staging
    assert {t for i in store.images() for t in i.tags} == tags
