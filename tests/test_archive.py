"""edu save and edu load, checked against the real tools: dockerd 20.10, docker build, skopeo.

The image under test is real: busybox-static with a setuid file, a sticky /tmp, an absolute
symlink, and a second layer that deletes a file of the first (a whiteout across layers). What
Docker sees is compared with what edu has, file by file: ``docker export`` of a container
against the overlay view of the store's layer dirs. Hostile archives must be refused with a
sentence, leave the store byte-for-byte as it was, and write nothing anywhere else.

Docker and skopeo are required with ``need``: a skip here, a failure under CI.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import need

from edu_runtime.images import archive, layers
from edu_runtime.images.archive import ArchiveError
from edu_runtime.images.store import OCI_LAYER_GZIP, Store, StoreError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "echo", "cat", "stat", "readlink", "rm", "mkdir", "chmod", "pwd", "test")
SUID_MODE = 0o4755


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run(*cmd: str, env: dict[str, str] | None = None, timeout: int = 180,
        check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    if check and r.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


# ---- fixtures: tools, and cleaning up what we make in Docker ------------------------------

@pytest.fixture
def docker(root):
    """dockerd is up; yields a tracker whose images and containers are removed afterwards."""
    need(shutil.which("docker") is not None, "the docker CLI is not installed")
    up = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                        capture_output=True, text=True, timeout=30)
    need(up.returncode == 0, "dockerd is not running: scripts/services.sh start docker")
    tracker = DockerThings()
    yield tracker
    tracker.clean()


class DockerThings:
    """Names that are ours in Docker: unique per test, removed even when the test fails."""

    def __init__(self) -> None:
        self.repo = f"localhost/edu-archive-test-{secrets.token_hex(4)}"
        self.images: list[str] = []
        self.containers: list[str] = []

    def tag(self, name: str) -> str:
        ref = f"{self.repo}:{name}"
        self.images.append(ref)
        return ref

    def clean(self) -> None:
        for cid in self.containers:
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True, timeout=60)
        for ref in reversed(self.images):
            subprocess.run(["docker", "rmi", "-f", ref], capture_output=True, timeout=60)


@pytest.fixture
def skopeo():
    """skopeo is installed."""
    need(shutil.which("skopeo") is not None, "skopeo is not installed (apt-get install skopeo)")


# ---- building a real image ----------------------------------------------------------------

def make_base_layers(work: Path) -> tuple[Path, Path]:
    """Layer 1: busybox, /etc, /tmp 1777, a setuid file, an absolute symlink, a file to delete.
    Layer 2, as an overlay upper dir: a whiteout for that file, and a new file."""
    need(BUSYBOX.is_file(), "/bin/busybox is missing (apt-get install busybox-static)")
    low = work / "layer1"
    for d in ("bin", "etc", "srv", "usr/local/bin"):
        (low / d).mkdir(parents=True)
    shutil.copy2(BUSYBOX, low / "bin/busybox")
    for applet in APPLETS:
        (low / "bin" / applet).symlink_to("busybox")
    (low / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                    "nobody:x:65534:65534:nobody:/:/bin/false\n")
    (low / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (low / "etc/deleteme.txt").write_text("this file is deleted by layer 2\n")
    (low / "etc/abs-link").symlink_to("/etc/passwd")
    (low / "tmp").mkdir()
    os.chmod(low / "tmp", 0o1777)
    suid = low / "usr/local/bin/suid-tool"
    suid.write_text("#!/bin/sh\necho suid\n")
    os.chmod(suid, SUID_MODE)
    up = work / "layer2"
    (up / "etc").mkdir(parents=True)
    (up / "etc/hello.txt").write_text("hello from layer 2\n")
    os.mknod(up / "etc/deleteme.txt", stat.S_IFCHR | 0o000, os.makedev(0, 0))  # a whiteout
    return low, up


def add_layers_image(store: Store, dirs: list[tuple[Path, bool]], tags: list[str],
                     config: dict) -> object:
    """Pack each (dir, is_upper) with layers.pack as a gzip blob, and add the image."""
    blobs, diff_ids = [], []
    for d, upper in dirs:
        buf = io.BytesIO()
        stats = layers.pack(d, buf, upper=upper, compress=True)
        blobs.append((store.put_blob_bytes(buf.getvalue(), stats.digest), OCI_LAYER_GZIP))
        diff_ids.append(stats.diff_id)
    config = {**config, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    return store.add_image(json.dumps(config).encode(), blobs, tags)


BASE_CONFIG = {
    "architecture": "amd64", "os": "linux", "created": "2024-05-01T12:00:00Z",
    "config": {"Cmd": ["sh", "-c", "echo hello from edu"], "WorkingDir": "/srv",
               "Env": ["PATH=/usr/local/bin:/bin", "GREETING=hi there"],
               "Labels": {"course": "edu", "lesson": "03-images"}},
    "history": [
        {"created": "2024-05-01T12:00:00Z", "created_by": "edu test: busybox, /etc, /tmp"},
        {"created": "2024-05-01T12:00:01Z", "created_by": "edu test: rm /etc/deleteme.txt"},
    ],
}


@pytest.fixture
def base(root, tmp_path):
    """A store holding the real two-layer busybox image, tagged ``TAG``."""
    store = Store(tmp_path / "store")
    low, up = make_base_layers(tmp_path / "src")
    tag = f"localhost/edu-archive-base-{secrets.token_hex(4)}:base"
    image = add_layers_image(store, [(low, False), (up, True)], [tag], BASE_CONFIG)
    return store, image, tag


# ---- what is in an image: the overlay view of the layer dirs, and docker export -----------

def _is_whiteout(st: os.stat_result, path: str) -> bool:
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return True
    return stat.S_ISREG(st.st_mode) and st.st_size == 0 and _xattr(path, "whiteout")


def _xattr(path: str, name: str) -> bytes | None:
    for prefix in ("trusted.overlay.", "user.overlay."):
        try:
            return os.getxattr(path, prefix + name, follow_symlinks=False)
        except OSError:
            continue
    return None


def _entry(kind: str, mode: int, uid: int, gid: int, extra: object = None) -> tuple:
    # Go's tar writer keeps the file-type bits in the mode; a link's own mode means nothing.
    return (kind, mode & 0o7777 if kind != "link" else 0, uid, gid, extra)


def merged_view(store: Store, image) -> dict[str, tuple]:
    """The container's root as overlayfs would show it, from the store's layer dirs."""
    view: dict[str, tuple] = {}

    def drop(rel: str, keep_self: bool = False) -> None:
        for k in [k for k in view if k.startswith(rel + "/") or (k == rel and not keep_self)]:
            del view[k]

    for diff_id in image.diff_ids:
        root = str(store.layer_dir(diff_id))
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            rel_dir = "" if rel_dir == "." else rel_dir
            if rel_dir and _xattr(dirpath, "opaque") == b"y":
                drop(rel_dir, keep_self=True)
            for name in sorted(dirnames + filenames):
                path = os.path.join(dirpath, name)
                rel = f"{rel_dir}/{name}" if rel_dir else name
                st = os.lstat(path)
                if _is_whiteout(st, path):
                    drop(rel)
                    continue
                mode = stat.S_IMODE(st.st_mode)
                if stat.S_ISDIR(st.st_mode):
                    if view.get(rel, ("dir",))[0] != "dir":
                        drop(rel)
                    view[rel] = _entry("dir", mode, st.st_uid, st.st_gid)
                    continue
                drop(rel)
                if stat.S_ISLNK(st.st_mode):
                    view[rel] = _entry("link", mode, st.st_uid, st.st_gid, os.readlink(path))
                elif stat.S_ISREG(st.st_mode):
                    with open(path, "rb") as f:
                        view[rel] = _entry("file", mode, st.st_uid, st.st_gid, sha(f.read()))
                else:
                    view[rel] = _entry("other", mode, st.st_uid, st.st_gid, st.st_rdev)
    return view


DOCKER_MADE = ("dev", "proc", "sys", ".dockerenv", "etc/hostname", "etc/hosts",
               "etc/resolv.conf", "etc/mtab")


def docker_view(docker: DockerThings, image: str, tmp_path: Path) -> dict[str, tuple]:
    """``docker export`` of a (never started) container: the root filesystem Docker built."""
    cid = run("docker", "create", "--network", "none", image).stdout.strip()
    docker.containers.append(cid)
    out = tmp_path / f"export-{cid[:12]}.tar"
    run("docker", "export", "-o", str(out), cid)
    view = {}
    with tarfile.open(out) as tar:
        for info in tar:
            rel = info.name.strip("/").removeprefix("./")
            if not rel or rel == "." or rel.split("/")[0] in DOCKER_MADE or rel in DOCKER_MADE:
                continue
            if info.isdir():
                view[rel] = _entry("dir", info.mode, info.uid, info.gid)
            elif info.issym():
                view[rel] = _entry("link", info.mode, info.uid, info.gid, info.linkname)
            elif info.isfile():
                data = tar.extractfile(info).read()
                view[rel] = _entry("file", info.mode, info.uid, info.gid, sha(data))
            else:
                view[rel] = _entry("other", info.mode, info.uid, info.gid, None)
    return view


def store_listing(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its type, mode and (for files) content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if path == os.path.join(root, "lock"):
                continue  # the empty file flock(2) needs, made on first use
            st = os.lstat(path)
            digest = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    digest = sha(f.read())
            out[os.path.relpath(path, root)] = (st.st_mode, digest)
    return out


# ---- edu save -> docker load -> docker run --------------------------------------------------

def test_docker_loads_and_runs_edu_save(base, docker, tmp_path):
    store, image, tag = base
    docker.images.append(tag)
    out = archive.save(store, [tag], tmp_path / "base.tar")
    loaded = run("docker", "load", "-i", str(out))
    assert f"Loaded image: {tag}" in loaded.stdout
    inspect = json.loads(run("docker", "inspect", tag).stdout)[0]
    assert inspect["Id"] == image.id  # the config bytes went through untouched
    assert inspect["RootFS"]["Layers"] == image.diff_ids
    script = ("echo $GREETING; cat /etc/hello.txt; pwd; stat -c '%a' /tmp; "
              "stat -c '%a %u' /usr/local/bin/suid-tool; readlink /etc/abs-link; "
              "test -e /etc/deleteme.txt && echo present || echo deleted; "
              "/usr/local/bin/suid-tool")
    r = run("docker", "run", "--rm", "--network", "none", tag, "sh", "-c", script)
    assert r.stdout.splitlines() == ["hi there", "hello from layer 2", "/srv", "1777",
                                     "4755 0", "/etc/passwd", "deleted", "suid"]
    assert run("docker", "run", "--rm", "--network", "none", tag).stdout == "hello from edu\n"
    # Everything else, file by file: what Docker unpacked is what edu has.
    assert docker_view(docker, tag, tmp_path) == merged_view(store, image)
    # Saved by ID, an image has no RepoTags, and Docker loads it by ID.
    by_id = archive.save(store, [image.short_id], tmp_path / "by-id.tar")
    assert f"Loaded image ID: {image.id}" in run("docker", "load", "-i", str(by_id)).stdout


# ---- docker build -> docker save -> edu load ----------------------------------------------

DOCKERFILE = """\
FROM {base}
COPY greeting.txt /srv/greeting.txt
RUN rm /etc/hello.txt && mkdir -p /var/data && echo built > /var/data/built.txt \\
    && chmod 4750 /var/data/built.txt
ENV BUILT=yes
CMD ["cat", "/srv/greeting.txt"]
"""


def test_edu_loads_what_docker_built_and_saved(base, docker, tmp_path):
    store, image, tag = base
    docker.images.append(tag)
    run("docker", "load", "-i", str(archive.save(store, [tag], tmp_path / "base.tar")))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(base=tag))
    (ctx / "greeting.txt").write_text("greetings from docker build\n")
    app = docker.tag("app")
    run("docker", "build", "--network", "none", "--force-rm", "-t", app, str(ctx),
        env={"DOCKER_BUILDKIT": "0"}, timeout=300)
    saved = tmp_path / "docker-save.tar"
    run("docker", "save", "-o", str(saved), app, tag)  # two images sharing two layers

    fresh = Store(tmp_path / "fresh")
    images = archive.load(fresh, saved)
    by_tag = {t: i for i in images for t in i.tags}
    got = by_tag[f"{app}"]
    inspect = json.loads(run("docker", "inspect", app).stdout)[0]
    assert got.id == inspect["Id"]
    assert got.diff_ids == inspect["RootFS"]["Layers"]
    assert got.diff_ids[:2] == image.diff_ids
    assert got.config["config"]["Cmd"] == inspect["Config"]["Cmd"] == ["cat",
                                                                       "/srv/greeting.txt"]
    assert got.config["config"]["Env"] == inspect["Config"]["Env"]
    assert "BUILT=yes" in got.config["config"]["Env"]
    assert by_tag[tag].id == image.id
    # Each change is in the layer that made it: COPY, then RUN's whiteout and new file.
    copy_layer, run_layer = (fresh.layer_dir(d) for d in got.diff_ids[2:])
    assert (copy_layer / "srv/greeting.txt").read_text() == "greetings from docker build\n"
    st = os.lstat(run_layer / "etc/hello.txt")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert (run_layer / "var/data/built.txt").read_text() == "built\n"
    assert stat.S_IMODE(os.lstat(run_layer / "var/data/built.txt").st_mode) == 0o4750
    view = merged_view(fresh, got)
    assert "etc/hello.txt" not in view and "etc/deleteme.txt" not in view
    assert view == docker_view(docker, app, tmp_path)
    # docker save lists images in Go map order: any order will do.
    assert sorted(archive.summary(images)) == [f"Loaded image: {t}" for t in sorted([app, tag])]


# ---- skopeo: it reads edu's OCI layouts; edu reads its layouts and archives ---------------

def test_skopeo_reads_edu_oci_layouts(base, docker, skopeo, tmp_path):
    store, image, tag = base
    manifest = store.read_blob(image.manifest_digest)
    config = store.read_blob(image.config_digest)
    assert sha(config) == image.id
    layout = archive.save(store, [tag], tmp_path / "layout", format="oci")
    packed = archive.save(store, [tag], tmp_path / "layout.tar", format="oci-archive")
    for where in (f"oci:{layout}:base", f"oci-archive:{packed}:base"):
        assert run("skopeo", "inspect", "--raw", where).stdout.encode() == manifest
        assert run("skopeo", "inspect", "--config", "--raw", where).stdout.encode() == config
        seen = json.loads(run("skopeo", "inspect", where).stdout)
        assert seen["Digest"] == image.manifest_digest
        assert seen["Layers"] == [d["digest"] for d in image.manifest["layers"]]
    # And a layout skopeo read can go on into Docker and run.
    copied = docker.tag("from-oci")
    run("skopeo", "copy", "-q", f"oci:{layout}:base", f"docker-daemon:{copied}")
    r = run("docker", "run", "--rm", "--network", "none", copied, "cat", "/etc/hello.txt")
    assert r.stdout == "hello from layer 2\n"


def test_edu_loads_skopeo_layouts_and_archives(base, docker, skopeo, tmp_path):
    store, image, tag = base
    docker.images.append(tag)
    run("docker", "load", "-i", str(archive.save(store, [tag], tmp_path / "base.tar")))
    docker_layers = json.loads(run("docker", "inspect", tag).stdout)[0]["RootFS"]["Layers"]
    named = "localhost/edu-from-skopeo:v1"
    for dest in (f"oci:{tmp_path / 'sk-oci'}:base", f"oci-archive:{tmp_path / 'sk.tar'}:{named}",
                 f"docker-archive:{tmp_path / 'sk-d.tar'}:{tag}"):
        run("skopeo", "copy", "-q", f"docker-daemon:{tag}", dest)
    for path, tags in ((tmp_path / "sk-oci", []), (tmp_path / "sk.tar", [named]),
                       (tmp_path / "sk-d.tar", [tag])):
        fresh = Store(tmp_path / f"store-{path.name}")
        [got] = archive.load(fresh, path)
        assert got.diff_ids == docker_layers == image.diff_ids
        assert got.familiar_tags() == tags
        assert merged_view(fresh, got) == merged_view(store, image)
    # skopeo's oci: names the image only "base", with no repository: it loads untagged.
    [untagged] = archive.load(Store(tmp_path / "again"), tmp_path / "sk-oci")
    assert archive.summary([untagged])[0].startswith(f"Loaded image ID: {untagged.id}")


# ---- edu to edu: every format round-trips, byte-identical each time -----------------------

@pytest.mark.parametrize("fmt,name", [("docker", "x.tar"), ("oci", "x-dir"),
                                      ("oci-archive", "x-oci.tar")])
def test_round_trip_every_format(base, tmp_path, fmt, name):
    store, image, tag = base
    out = archive.save(store, [tag, image.id], tmp_path / name, format=fmt)
    fresh = Store(tmp_path / "fresh")
    [got] = archive.load(fresh, out)
    assert (got.id, got.diff_ids, got.tags) == (image.id, image.diff_ids, image.tags)
    assert got.config == image.config
    assert merged_view(fresh, got) == merged_view(store, image)
    if fmt != "oci":
        again = archive.save(store, [tag], tmp_path / f"again-{name}", format=fmt)
        assert again.read_bytes() == out.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_two_images_share_layers_in_one_archive(base, tmp_path):
    store, image, tag = base
    config = store.read_blob(image.config_digest).replace(b"hello from edu", b"hello again")
    child = store.add_image(config, [(d["digest"], d["mediaType"])
                                     for d in image.manifest["layers"]], ["child:1"])
    out = archive.save(store, [tag, "child:1"], tmp_path / "two.tar")
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
    assert sum(n.endswith("/layer.tar") for n in names) == 2  # two layers, written once each
    assert manifest[0]["Layers"] == manifest[1]["Layers"]
    assert [m["RepoTags"] for m in manifest] == [[tag], ["child:1"]]
    got = archive.load(Store(tmp_path / "fresh"), out)
    assert [i.id for i in got] == [image.id, child.id]


def test_progress_bars_count_bytes(base, tmp_path, capsys):
    store, image, tag = base
    out = archive.save(store, [tag], tmp_path / "p.tar", progress=True)
    archive.load(Store(tmp_path / "fresh"), out, progress=True)
    err = capsys.readouterr().err
    assert err.count("100%") >= 4 and "layer " + image.diff_ids[0][7:19] in err


def test_save_failure_leaves_no_file(base, tmp_path):
    store, image, tag = base
    blob = store.blob_path(image.manifest["layers"][1]["digest"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # damage the store's copy
    blob.write_bytes(bytes(data))
    for fmt, name in (("docker", "d.tar"), ("oci", "o"), ("oci-archive", "o.tar")):
        with pytest.raises(ArchiveError, match="damaged"):
            archive.save(store, [tag], tmp_path / name, format=fmt)
        assert not (tmp_path / name).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "store"]


def test_save_refusals_say_why(base, tmp_path):
    store, image, tag = base
    with pytest.raises(StoreError, match="No such image"):
        archive.save(store, ["nope:1"], tmp_path / "x.tar")
    with pytest.raises(ArchiveError, match="unknown archive format"):
        archive.save(store, [tag], tmp_path / "x.tar", format="zip")
    with pytest.raises(ArchiveError, match="does not exist"):
        archive.save(store, [tag], tmp_path / "no/such/dir/x.tar")
    (tmp_path / "full").mkdir()
    (tmp_path / "full/keep").write_text("mine")
    with pytest.raises(ArchiveError, match="not an empty directory"):
        archive.save(store, [tag], tmp_path / "full", format="oci")
    assert (tmp_path / "full/keep").read_text() == "mine"


# ---- the Docker 25+ layout ----------------------------------------------------------------

FIXTURE = FIXTURES / "docker25-save.tar"


def _generator():
    sys.path.insert(0, str(FIXTURES))
    try:
        import make_docker25_archive
    finally:
        sys.path.remove(str(FIXTURES))
    return make_docker25_archive


def test_docker25_fixture_is_what_its_generator_writes():
    assert FIXTURE.read_bytes() == _generator().build()
    assert FIXTURE.stat().st_size < 32 * 1024


def test_load_reads_docker25_save(tmp_path):
    gen = _generator()
    store = Store(tmp_path / "store")
    [image] = archive.load(store, FIXTURE)
    assert image.familiar_tags() == ["docker25-fixture:latest", "docker25-fixture:v1"]
    assert image.id == sha(gen.CONFIG) and image.diff_ids == gen.DIFF_IDS
    assert image.config["config"]["Cmd"] == ["/hello.txt"]
    low, top = (store.layer_dir(d) for d in image.diff_ids)
    assert (low / "hello.txt").read_text() == "hello from layer one\n"
    assert (low / "etc/motd").is_file()
    assert _is_whiteout(os.lstat(top / "etc/motd"), str(top / "etc/motd"))
    view = merged_view(store, image)
    assert sorted(k for k, v in view.items() if v[0] == "file") == ["greeting.txt", "hello.txt"]
    # The same archive read the OCI way (index.json and its annotations) gives the same image.
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(unpacked, filter="data")
    (unpacked / "manifest.json").unlink()
    [again] = archive.load(Store(tmp_path / "oci-way"), unpacked)
    assert (again.id, again.diff_ids, again.tags) == (image.id, image.diff_ids, image.tags)


def test_real_tools_accept_the_docker25_fixture(docker, skopeo, tmp_path):
    gen = _generator()
    seen = json.loads(run("skopeo", "inspect", f"oci-archive:{FIXTURE}:latest").stdout)
    assert seen["Layers"] == gen.DIFF_IDS
    docker.images += ["docker25-fixture:latest", "docker25-fixture:v1"]
    out = run("docker", "load", "-i", str(FIXTURE)).stdout
    assert "Loaded image: docker25-fixture:v1" in out
    assert json.loads(run("docker", "inspect", "docker25-fixture:v1").stdout)[0]["Id"] \
        == sha(gen.CONFIG)


# ---- hostile and broken archives ----------------------------------------------------------

def tiny_layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tiny_image(store: Store, tag: str, text: bytes) -> object:
    raw = tiny_layer({"hello.txt": text})
    blob = store.put_blob_bytes(gzip.compress(raw, mtime=0))
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/hello.txt"]},
              "rootfs": {"type": "layers", "diff_ids": [sha(raw)]}}
    return store.add_image(json.dumps(config).encode(), [(blob, OCI_LAYER_GZIP)], [tag])


def read_tar(path: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(path) as tar:
        return [(i, tar.extractfile(i).read() if i.isfile() else None) for i in tar]


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, data: bytes | None = None, kind: bytes = tarfile.REGTYPE,
           link: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info, data


def edit(members, name_end: str, change) -> list:
    """Apply ``change(info, data) -> (info, data) | None`` to the member ending ``name_end``."""
    out = []
    for info, data in members:
        if info.name.endswith(name_end):
            changed = change(info, data)
            if changed is not None:
                out.append(changed)
        else:
            out.append((info, data))
    return out


def set_manifest(members, **fields) -> list:
    """Change fields of the first image in manifest.json."""
    def change(info, data):
        entries = json.loads(data)
        entries[0].update(fields)
        return info, json.dumps(entries).encode()
    return edit(members, "manifest.json", change)


def replace(members, name_end: str, data: bytes) -> list:
    return edit(members, name_end, lambda info, _: (info, data))


def flip(data: bytes) -> bytes:
    return data[:600] + bytes([data[600] ^ 1]) + data[601:]


def escaping_layer_archive() -> list:
    """A well-formed archive whose layer tar has ``../../../sentinel`` inside."""
    raw = tiny_layer({"../../../sentinel": b"pwned", "ok.txt": b"ok"})
    config = {"architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": [sha(raw)]}}
    cfg = json.dumps(config).encode()
    manifest = [{"Config": f"{sha(cfg)[7:]}.json", "RepoTags": ["evil:1"],
                 "Layers": ["l/layer.tar"]}]
    return [member("manifest.json", json.dumps(manifest).encode()),
            member(f"{sha(cfg)[7:]}.json", cfg), member("l/layer.tar", raw)]


# case -> what the refusal must say
HOSTILE = {
    "dotdot member": "outside the archive",
    "absolute member": "outside the archive",
    "config outside": "outside the archive",
    "layer outside": "outside the archive",
    "symlink out": "outside the archive",
    "absolute symlink": "outside the archive",
    "huge manifest": "at most",
    "malformed manifest": "not valid JSON",
    "deeply nested manifest": "not valid JSON",
    "manifest of the wrong shape": "should be a list",
    "missing layer": "no file",
    "corrupt layer": "diff_id",
    "config not its name": "hashes to",
    "a device": "device",
    "a file twice": "twice",
    "bad tag": "not valid",
    "escaping layer member": "escapes the layer root",
    "second image corrupt": "diff_id",
}


def make_hostile(case: str, good: list, two: list) -> list:
    """``good`` (one image) or ``two`` (two images) made bad the way ``case`` says."""
    if case == "dotdot member":
        return good + [member("../sentinel", b"pwned")]
    if case == "absolute member":
        return good + [member("/tmp/edu-pwned", b"pwned")]
    if case == "config outside":
        return set_manifest(good, Config="../../etc/passwd")
    if case == "layer outside":
        return set_manifest(good, Layers=["../../../../etc/passwd"])
    if case == "symlink out":
        return edit(good, "layer.tar", lambda info, _: member(
            info.name, kind=tarfile.SYMTYPE, link="../../../etc/passwd"))
    if case == "absolute symlink":
        return edit(good, "layer.tar", lambda info, _: member(
            info.name, kind=tarfile.SYMTYPE, link="/etc/passwd"))
    if case == "huge manifest":
        return replace(good, "manifest.json",
                       b'["' + b"x" * (archive.MAX_JSON_BYTES + 10) + b'"]')
    if case == "malformed manifest":
        return replace(good, "manifest.json", b"[{")
    if case == "deeply nested manifest":
        return replace(good, "manifest.json", b"[" * 200_000)
    if case == "manifest of the wrong shape":
        return replace(good, "manifest.json", b'{"Config": 1}')
    if case == "missing layer":
        return edit(good, "layer.tar", lambda info, data: None)
    if case == "corrupt layer":
        return edit(good, "layer.tar", lambda info, data: (info, flip(data)))
    if case == "config not its name":
        config = next(i.name for i, _ in good if i.name.endswith(".json") and "/" not in i.name
                      and i.name != "manifest.json")
        return edit(good, config, lambda info, data: (info, data.replace(b"hello", b"HELLO")))
    if case == "a device":
        return good + [member("dev", kind=tarfile.CHRTYPE)]
    if case == "a file twice":
        return good + [member("manifest.json", b"[]")]
    if case == "bad tag":
        return set_manifest(good, RepoTags=["Bad Tag"])
    if case == "escaping layer member":
        return escaping_layer_archive()
    if case == "second image corrupt":  # image 1 is fine and is added first; then image 2 fails
        second = json.loads(next(d for i, d in two if i.name == "manifest.json"))[1]
        return edit(two, second["Layers"][0], lambda info, data: (info, flip(data)))
    raise AssertionError(case)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_and_change_nothing(tmp_path, case):
    why = HOSTILE[case]
    store = Store(tmp_path / "store")
    tiny_image(store, "already:here", b"I was here first\n")
    source = Store(tmp_path / "source")
    tiny_image(source, "good:1", b"good\n")
    tiny_image(source, "good:2", b"also good\n")
    good = read_tar(archive.save(source, ["good:1"], tmp_path / "good.tar"))
    two = read_tar(archive.save(source, ["good:1", "good:2"], tmp_path / "two.tar"))
    members = make_hostile(case, good, two)
    bad = write_tar(tmp_path / "bad.tar", members)
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("untouched")
    before_store = store_listing(store.root)
    before_all = sorted(p for p in tmp_path.rglob("*") if not p.is_relative_to(store.root))

    with pytest.raises(ArchiveError) as refused:
        archive.load(store, bad)
    message = str(refused.value)
    assert message.startswith(f"Cannot load {bad}: ") and why in message, message
    assert message.endswith("Nothing was loaded; the image store is as it was.")
    assert store_listing(store.root) == before_store
    assert sentinel.read_text() == "untouched"
    assert sorted(p for p in tmp_path.rglob("*") if not p.is_relative_to(store.root)) \
        == before_all
    assert not Path("/tmp/edu-pwned").exists()
    assert [i.familiar_tags() for i in store.images()] == [["already:here"]]


@pytest.mark.parametrize("case,why", [
    ("digest", "sha256 digests only"), ("blob", "does not hash to its name"),
    ("size", "does not hash to its name"), ("layout", "imageLayoutVersion"),
    ("empty", "no manifests"), ("platform", "has no linux/"),
])
def test_hostile_oci_layouts_are_refused(tmp_path, case, why):
    source = Store(tmp_path / "source")
    image = tiny_image(source, "good:1", b"good\n")
    layout = archive.save(source, ["good:1"], tmp_path / "layout", format="oci")
    index_path = layout / "index.json"
    index = json.loads(index_path.read_text())
    if case == "digest":
        index["manifests"][0]["digest"] = "sha256:../../../../etc/passwd"
    elif case == "blob":
        cfg = layout / "blobs/sha256" / image.config_digest[7:]
        cfg.write_bytes(cfg.read_bytes().replace(b"hello", b"HELLO"))
    elif case == "size":
        index["manifests"][0]["size"] += 1
    elif case == "layout":
        (layout / "oci-layout").write_text("{}")
    elif case == "empty":
        index["manifests"] = []
    elif case == "platform":  # an index of other machines' images only
        nested = {"schemaVersion": 2, "mediaType": archive.OCI_INDEX, "manifests": [
            {**index["manifests"][0], "platform": {"architecture": "s390x", "os": "linux"}}]}
        data = json.dumps(nested).encode()
        (layout / "blobs/sha256" / sha(data)[7:]).write_bytes(data)
        index["manifests"] = [{"mediaType": archive.OCI_INDEX, "digest": sha(data),
                               "size": len(data)}]
    index_path.write_text(json.dumps(index))
    store = Store(tmp_path / "store")
    before = store_listing(store.root)
    with pytest.raises(ArchiveError, match=why):
        archive.load(store, layout)
    assert store_listing(store.root) == before and store.images() == []


def test_a_layout_dir_with_a_symlink_out_is_refused(tmp_path):
    source = Store(tmp_path / "source")
    image = tiny_image(source, "good:1", b"good\n")
    layout = archive.save(source, ["good:1"], tmp_path / "layout", format="oci")
    blob = layout / "blobs/sha256" / image.manifest["layers"][0]["digest"][7:]
    blob.unlink()
    blob.symlink_to("/etc/passwd")
    with pytest.raises(ArchiveError, match="outside the archive"):
        archive.load(Store(tmp_path / "store"), layout)


def test_not_an_archive(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(ArchiveError, match="not a tar archive"):
        archive.load(Store(tmp_path / "store"), junk)
    with pytest.raises(ArchiveError, match="does not exist"):
        archive.load(Store(tmp_path / "store"), tmp_path / "missing.tar")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArchiveError, match="neither a docker-archive"):
        archive.load(Store(tmp_path / "store"), empty)


def test_compressed_archives_load_like_docker_load(tmp_path):
    source = Store(tmp_path / "source")
    image = tiny_image(source, "good:1", b"good\n")
    plain = archive.save(source, ["good:1"], tmp_path / "good.tar").read_bytes()
    packed = tmp_path / "good.tar.gz"
    packed.write_bytes(gzip.compress(plain))
    store = Store(tmp_path / "store")
    [got] = archive.load(store, packed)
    assert got.id == image.id and list(store.tmp.iterdir()) == []


def test_loading_again_reuses_layers(tmp_path):
    source = Store(tmp_path / "source")
    tiny_image(source, "good:1", b"good\n")
    out = archive.save(source, ["good:1"], tmp_path / "good.tar")
    store = Store(tmp_path / "store")
    [first] = archive.load(store, out)
    before = store_listing(store.root)
    [second] = archive.load(store, out)
    assert second.manifest_digest == first.manifest_digest
    assert {k: v for k, v in store_listing(store.root).items() if k != "index.json"} == \
        {k: v for k, v in before.items() if k != "index.json"}
