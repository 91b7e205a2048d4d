"""edu pull, push, search, login and logout against real registries, and beside real Docker.

Every registry here is Debian's ``docker-registry`` (distribution 2.8) started by the test on a
free loopback port with its own storage dir: without auth, with htpasswd (bcrypt) basic auth,
and with token auth, where the token service is a small HTTP server in this test that signs
RS256 JWTs (``openssl dgst``) with a key whose self-signed certificate is the registry's
``rootcertbundle`` and rides in the token's ``x5c`` header. What the registry did is read back
from its access log (a mount is a ``POST ...?mount=``, an upload a ``PATCH`` or ``PUT``).

dockerd pushes what edu pulls and runs, and pulls and runs what edu pushes. Logins go to a
temp ``EDU_CONFIG``, stores to temp state dirs: the default store and ``~/.edu`` are not touched.
``need`` skips a test on a host without the tools, and fails it under CI.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import io
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import need
from test_archive import docker, run  # noqa: F401  (docker is a fixture: dockerd, cleaned up)

from edu_runtime.images import archive, layers, registry
from edu_runtime.images.registry import AuthError, NoCatalog, NotFound, Progress, RegistryError
from edu_runtime.images.store import OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, Image, Store

DOCKER_INDEX = "application/vnd.docker.distribution.manifest.list.v2+json"


# ---- registries -----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RegistryServer:
    """docker-registry on a free loopback port, with its own storage dir and log."""

    def __init__(self, work: Path, auth: dict | None = None):
        self.host = f"127.0.0.1:{free_port()}"
        self.root, self.log = work / "storage", work / "registry.log"
        config = {"version": 0.1, "log": {"level": "info"},
                  "storage": {"filesystem": {"rootdirectory": str(self.root)},
                              "delete": {"enabled": True}},
                  "http": {"addr": self.host, "secret": secrets.token_hex(16)}}
        if auth:
            config["auth"] = auth
        (work / "config.yml").write_text(json.dumps(config))  # JSON is YAML
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["docker-registry", "serve", str(work / "config.yml")],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", int(self.host.split(":")[1])), 1).close()
                return
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"docker-registry did not start:\n{self.log.read_text()[-2000:]}")

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request, from the access log."""
        return [(m, p, int(s)) for m, p, s in
                re.findall(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3}) ', self.log.read_text())]

    def blob_file(self, digest: str) -> Path:
        hexpart = digest.removeprefix("sha256:")
        return self.root / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def start_registry(tmp_path) -> Iterator[Callable[..., RegistryServer]]:
    """Start registries (no auth, or the ``auth`` section given); stopped and reaped after."""
    need(shutil.which("docker-registry") is not None,
         "docker-registry is not installed (apt-get install docker-registry)")
    started: list[RegistryServer] = []

    def start(auth: dict | None = None) -> RegistryServer:
        work = tmp_path / f"registry-{len(started)}"
        work.mkdir()
        started.append(RegistryServer(work, auth))
        return started[-1]
    yield start
    for server in started:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(autouse=True)
def edu_config(tmp_path, monkeypatch) -> Path:
    """Logins go to a temp EDU_CONFIG, for the API here and for the ``edu`` it runs."""
    config = tmp_path / "edu-config"
    monkeypatch.setenv("EDU_CONFIG", str(config))
    monkeypatch.delenv(registry.INSECURE_ENV, raising=False)
    return config


def edu(*argv: str, state: Path | None = None, stdin: str | None = None
        ) -> subprocess.CompletedProcess:
    env = dict(os.environ, **({"EDU_STATE_DIR": str(state)} if state else {}))
    return subprocess.run([sys.executable, "-m", "edu_cli.main", *argv], capture_output=True,
                          text=True, timeout=300, env=env, input=stdin)


# ---- images -----------------------------------------------------------------------------------

def copy_image(src: Store, image: Image, dst: Store, tags: list[str]) -> Image:
    """The same image (same blobs, same ID) in another store."""
    blobs = []
    for desc in image.manifest["layers"]:
        dst.put_blob_file(src.blob_path(desc["digest"]), expected=desc["digest"])
        blobs.append((desc["digest"], desc["mediaType"]))
    return dst.add_image(src.read_blob(image.config_digest), blobs, tags)


def add_layers(store: Store, base: Image, tag: str, work: Path,
               contents: list[dict[str, bytes]]) -> Image:
    """``base`` plus one gzip layer per dict of {path: bytes}, tagged ``tag``."""
    blobs = [(d["digest"], d["mediaType"]) for d in base.manifest["layers"]]
    diff_ids, history = list(base.diff_ids), list(base.config.get("history", []))
    for files in contents:
        layer_dir = work / secrets.token_hex(4)
        for name, data in files.items():
            (layer_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (layer_dir / name).write_bytes(data)
        buf = io.BytesIO()
        stats = layers.pack(layer_dir, buf, compress=True)
        blobs.append((store.put_blob_bytes(buf.getvalue(), stats.digest), OCI_LAYER_GZIP))
        diff_ids.append(stats.diff_id)
        history.append({"created": "2026-01-01T00:00:00Z",
                        "created_by": f"edu test: add {', '.join(files)}"})
    config = {**base.config, "rootfs": {"type": "layers", "diff_ids": diff_ids},
              "history": history}
    return store.add_image(json.dumps(config).encode(), blobs, [tag])


@pytest.fixture
def state(tmp_path, busybox) -> Path:
    """An edu state dir whose store holds busybox:latest (copied from the default store)."""
    path = tmp_path / "state"
    copy_image(Store(), busybox, Store(path / "store"), ["busybox:latest"])
    return path


def multi_layer(state: Path, tag: str, work: Path) -> Image:
    """busybox plus three layers (one of 600 kB of random bytes), tagged ``tag``."""
    store = Store(state / "store")
    work.mkdir(exist_ok=True)
    return add_layers(store, store.get("busybox"), tag, work, [
        {"etc/one.txt": b"layer one\n"},
        {"srv/random.bin": secrets.token_bytes(600_000)},
        {"srv/three.txt": b"layer three\n"}])


def push_busybox(state: Path, reg: RegistryServer, repo: str, tag: str = "v1"
                 ) -> tuple[Store, Image]:
    """busybox from ``state``'s store, pushed to ``reg`` as ``repo:tag``: (store, image)."""
    src = Store(state / "store")
    src.tag("busybox", f"{reg.host}/{repo}:{tag}")
    registry.push(src, f"{reg.host}/{repo}:{tag}")
    return src, src.get("busybox")


def listing(root: Path) -> dict[str, int]:
    """Every file and dir under ``root`` with its size (but the lock file, which any writer
    creates): to compare a store before and after."""
    return {str(p.relative_to(root)): (p.lstat().st_size if p.is_file() else -1)
            for p in sorted(root.rglob("*")) if p.name != "lock"}


def lines_of(progress: io.StringIO) -> list[str]:
    return progress.getvalue().splitlines()


# ---- no auth: push, pull, skip, mount, chunks -----------------------------------------------

def test_push_then_pull_round_trip(start_registry, state, tmp_path):
    reg = start_registry()
    ref = f"{reg.host}/edu/multi:v1"
    image = multi_layer(state, ref, tmp_path / "layers")
    src = Store(state / "store")
    out = io.StringIO()
    pushed = registry.push(src, ref, progress=Progress(out))
    assert pushed.digest == image.manifest_digest  # our OCI manifest, byte for byte
    assert lines_of(out)[0] == f"The push refers to repository [{reg.host}/edu/multi]"
    assert sum(line.endswith(": Pushed") for line in lines_of(out)) == 4
    assert lines_of(out)[-1] == f"v1: digest: {image.manifest_digest} size: {pushed.size}"

    before = len(reg.requests())
    out = io.StringIO()
    registry.push(src, ref, progress=Progress(out))  # everything is there: HEAD, then skip
    assert sum(line.endswith(": Layer already exists") for line in lines_of(out)) == 4
    again = reg.requests()[before:]
    assert not [r for r in again if r[0] in ("POST", "PATCH")]
    assert [r for r in again if r[0] == "PUT"] == [("PUT", "/v2/edu/multi/manifests/v1", 201)]

    fresh = Store(tmp_path / "fresh")
    out = io.StringIO()
    pulled = registry.pull(fresh, ref, progress=Progress(out))
    assert pulled.downloaded and pulled.digest == image.manifest_digest
    assert pulled.image.id == image.id and pulled.image.diff_ids == image.diff_ids
    assert pulled.image.tags == [ref]
    assert all(fresh.layer_dir(d).is_dir() for d in image.diff_ids)
    assert (fresh.layer_dir(image.diff_ids[-1]) / "srv/three.txt").read_bytes() == \
        b"layer three\n"
    assert lines_of(out)[0] == "v1: Pulling from edu/multi"
    assert sum(line.endswith(": Pull complete") for line in lines_of(out)) == 4
    assert registry.known_repos(fresh, reg.host, image.manifest["layers"][0]["digest"]) == \
        ["edu/multi"]

    before = len(reg.requests())  # pulled again: the config is checked, no layer fetched
    again = registry.pull(fresh, ref)
    assert not again.downloaded and again.image.manifest_digest == pulled.image.manifest_digest
    blob_gets = [r for r in reg.requests()[before:] if r[0] == "GET" and "/blobs/" in r[1]]
    assert blob_gets == [("GET", f"/v2/edu/multi/blobs/{image.config_digest}", 200)]

    by_digest = registry.pull(Store(tmp_path / "by-digest"),
                              f"{reg.host}/edu/multi@{pulled.digest}")
    assert by_digest.image.id == image.id and by_digest.image.tags == []


def test_cli_push_and_pull_print_like_docker(start_registry, state, tmp_path):
    reg = start_registry()
    name = f"{reg.host}/edu/busybox"
    assert edu("tag", "busybox", name, state=state).returncode == 0
    pushed = edu("push", name, state=state)
    assert pushed.returncode == 0, pushed.stderr
    lines = pushed.stdout.splitlines()
    assert lines[:2] == ["Using default tag: latest",
                         f"The push refers to repository [{name}]"]
    assert re.fullmatch(r"[0-9a-f]{12}: Preparing", lines[2])
    assert re.fullmatch(r"[0-9a-f]{12}: Pushed", lines[3])
    assert re.fullmatch(r"latest: digest: sha256:[0-9a-f]{64} size: \d+", lines[-1])

    fresh = tmp_path / "fresh-state"
    pulled = edu("pull", name, state=fresh)
    assert pulled.returncode == 0, pulled.stderr
    lines = pulled.stdout.splitlines()
    digest = pushed.stdout.split("digest: ")[1].split()[0]
    assert lines[:2] == ["Using default tag: latest", "latest: Pulling from edu/busybox"]
    assert [line.split(": ", 1)[1] for line in lines[2:6]] == [
        "Pulling fs layer", "Verifying Checksum", "Download complete", "Pull complete"]
    assert lines[6:] == [f"Digest: {digest}",
                         f"Status: Downloaded newer image for {name}:latest", f"{name}:latest"]
    again = edu("pull", f"{name}:latest", state=fresh)
    assert f"Status: Image is up to date for {name}:latest" in again.stdout
    assert edu("run", "--rm", name, "echo", "pulled and run", state=fresh).stdout == \
        "pulled and run\n"
    removed = edu("rmi", name, state=fresh)
    assert removed.returncode == 0 and f"Untagged: {name}:latest" in removed.stdout
    assert Store(fresh / "store").images() == []


def test_cross_repository_mount(start_registry, state, tmp_path):
    reg = start_registry()
    src = Store(state / "store")
    image = multi_layer(state, f"{reg.host}/edu/one:v1", tmp_path / "layers")
    registry.push(src, f"{reg.host}/edu/one:v1")
    src.tag(image.manifest_digest, f"{reg.host}/edu/two:v1")
    before = len(reg.requests())
    out = io.StringIO()
    registry.push(src, f"{reg.host}/edu/two:v1", progress=Progress(out))
    assert sum(line.endswith(": Mounted from edu/one") for line in lines_of(out)) == 4
    done = reg.requests()[before:]
    mounts = [r for r in done if r[0] == "POST" and "mount=" in r[1]]
    assert len(mounts) == 5 and all(r[2] == 201 and "from=edu%2Fone" in r[1] for r in mounts)
    assert not [r for r in done if r[0] == "PATCH" or (r[0] == "PUT" and "/blobs/" in r[1])]

    # A blob known from a pull is mounted too: pull from two, push to three.
    fresh = Store(tmp_path / "fresh")
    registry.pull(fresh, f"{reg.host}/edu/two:v1")
    fresh.tag(f"{reg.host}/edu/two:v1", f"{reg.host}/edu/three:v1")
    before = len(reg.requests())
    registry.push(fresh, f"{reg.host}/edu/three:v1")
    mounts = [r for r in reg.requests()[before:] if "mount=" in r[1]]
    assert len(mounts) == 5 and all("from=edu%2Ftwo" in r[1] for r in mounts)


def test_chunked_upload(start_registry, state, tmp_path):
    reg = start_registry()
    ref = f"{reg.host}/edu/chunked:v1"
    image = multi_layer(state, ref, tmp_path / "layers")
    registry.push(Store(state / "store"), ref, chunk_size=128 << 10)
    patches = [r for r in reg.requests() if r[0] == "PATCH"]
    assert len(patches) >= 4 and all(r[2] == 202 for r in patches)  # 600 kB in 128 kB pieces
    pulled = registry.pull(Store(tmp_path / "fresh"), ref)  # every blob verified on the way
    assert pulled.image.id == image.id


# ---- manifest lists and OCI indexes -----------------------------------------------------------

def put_manifest(reg: RegistryServer, repo: str, tag: str, doc: dict, media: str) -> str:
    """PUT a manifest by hand; return its digest."""
    data = json.dumps(doc).encode()
    conn = http.client.HTTPConnection(reg.host, timeout=30)
    conn.request("PUT", f"/v2/{repo}/manifests/{tag}", body=data,
                 headers={"Content-Type": media})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 201, body
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload_bytes(reg: RegistryServer, repo: str, data: bytes, tmp: Path) -> dict:
    """Upload ``data`` as a blob; return its descriptor."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    tmp.write_bytes(data)
    with registry.Client(reg.host) as client:
        client.upload(repo, digest, tmp, len(data))
    return {"digest": digest, "size": len(data)}


@pytest.mark.parametrize("index_type", [DOCKER_INDEX, OCI_INDEX])
def test_pull_picks_this_platform_from_an_index(start_registry, state, tmp_path, index_type):
    reg = start_registry()
    repo = "edu/multiarch"
    src, amd64 = push_busybox(state, reg, repo, "amd64")
    arm_config = json.dumps({**amd64.config, "architecture": "arm64", "variant": "v8"}).encode()
    arm = {**amd64.manifest, "config": {**amd64.manifest["config"],
                                        **upload_bytes(reg, repo, arm_config, tmp_path / "c")}}
    arm_digest = put_manifest(reg, repo, "arm64", arm, OCI_MANIFEST)
    entry = {"mediaType": OCI_MANIFEST}
    amd_entry = {**entry, "digest": amd64.manifest_digest,
                 "size": len(src.read_blob(amd64.manifest_digest)),
                 "platform": {"os": "linux", "architecture": "amd64"}}
    arm_entry = {**entry, "digest": arm_digest, "size": len(json.dumps(arm)),
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}
    index = {"schemaVersion": 2, "mediaType": index_type, "manifests": [arm_entry, amd_entry]}
    index_digest = put_manifest(reg, repo, "multi", index, index_type)

    fresh = Store(tmp_path / "fresh")
    pulled = registry.pull(fresh, f"{reg.host}/{repo}:multi")
    assert pulled.digest == index_digest  # what Docker prints as Digest: the index's
    assert pulled.image.id == amd64.id and pulled.image.config["architecture"] == "amd64"

    put_manifest(reg, repo, "armonly", {**index, "manifests": [arm_entry]}, index_type)
    with pytest.raises(RegistryError, match=r"has no image for linux/amd64, only for "
                                            r"linux/arm64: it cannot run here"):
        registry.pull(fresh, f"{reg.host}/{repo}:armonly")


def test_unsupported_media_types_are_refused(start_registry, state, tmp_path):
    reg = start_registry()
    repo = "edu/odd"
    _, image = push_busybox(state, reg, repo)
    helm = {**image.manifest, "config": {**image.manifest["config"],
                                         "mediaType": "application/vnd.cncf.helm.config.v1+json"}}
    put_manifest(reg, repo, "helm", helm, OCI_MANIFEST)
    zstd = {**image.manifest, "layers": [{**image.manifest["layers"][0], "mediaType":
                                          "application/vnd.oci.image.layer.v1.tar+zstd"}]}
    put_manifest(reg, repo, "zstd", zstd, OCI_MANIFEST)
    fresh = Store(tmp_path / "fresh")
    with pytest.raises(RegistryError, match="is not a container image"):
        registry.pull(fresh, f"{reg.host}/{repo}:helm")
    with pytest.raises(RegistryError, match=r"zstd, which edu cannot unpack yet"):
        registry.pull(fresh, f"{reg.host}/{repo}:zstd")
    assert fresh.images() == []


# ---- failures leave nothing behind ------------------------------------------------------------

@pytest.mark.parametrize("damage", ["blob", "diff_id"])
def test_damaged_image_leaves_the_store_as_it_was(start_registry, state, tmp_path, damage):
    reg = start_registry()
    ref = f"{reg.host}/edu/damaged:v1"
    image = multi_layer(state, ref, tmp_path / "layers")
    registry.push(Store(state / "store"), ref)
    if damage == "blob":  # flip one byte of the last layer in the registry's storage
        data = bytearray(reg.blob_file(image.manifest["layers"][-1]["digest"]).read_bytes())
        data[len(data) // 2] ^= 0xFF
        reg.blob_file(image.manifest["layers"][-1]["digest"]).write_bytes(bytes(data))
        expected = r"is damaged: its \d+ bytes hash to sha256:[0-9a-f]{64}, but the manifest " \
                   r"promises"
    else:  # a consistent registry, but the config lies about the last layer's content
        config = {**image.config, "rootfs": {"type": "layers", "diff_ids": image.diff_ids[:-1]
                                             + ["sha256:" + "0" * 64]}}
        desc = upload_bytes(reg, "edu/damaged", json.dumps(config).encode(), tmp_path / "c")
        put_manifest(reg, "edu/damaged", "v1", {**image.manifest, "config": {
            **image.manifest["config"], **desc}}, OCI_MANIFEST)
        expected = r"unpacks to sha256:[0-9a-f]{64}, but the image config says"

    fresh_state = tmp_path / "fresh"
    fresh = Store(fresh_state / "store")
    before = listing(fresh.root)
    with pytest.raises(RegistryError, match=expected):
        registry.pull(fresh, ref)
    assert listing(fresh.root) == before
    assert list(fresh.tmp.iterdir()) == []

    cli = edu("pull", ref, state=fresh_state)
    assert cli.returncode == 1 and "Nothing was stored" in cli.stderr
    assert re.search(expected, cli.stderr) and "Traceback" not in cli.stderr
    assert listing(fresh.root) == before


def test_unreachable_and_unknown(start_registry, state, tmp_path):
    port = free_port()  # nothing listens there
    cli = edu("pull", f"127.0.0.1:{port}/edu/nothing:v1", state=tmp_path / "s")
    assert cli.returncode == 1
    assert cli.stderr.strip() == (
        f"edu: Cannot reach the registry at http://127.0.0.1:{port}: the connection was "
        "refused: nothing listens on that port. Check the address and that the registry is "
        "running.")
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        host = f"127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(RegistryError, match="did not answer within 1 s"):
            registry.pull(Store(tmp_path / "store"), f"{host}/x:y",
                          client=registry.Client(host, timeout=1))

    reg = start_registry()
    with pytest.raises(NotFound, match=rf"No such image in {reg.host}: edu/nothing:v1 "
                                       r"\(MANIFEST_UNKNOWN manifest unknown\)"):
        registry.pull(Store(tmp_path / "store"), f"{reg.host}/edu/nothing:v1")
    push_busybox(state, reg, "edu/there")
    cli = edu("pull", f"{reg.host}/edu/there:v2", state=tmp_path / "s")
    assert cli.returncode == 1 and (
        f"No such image in {reg.host}: edu/there:v2 (MANIFEST_UNKNOWN manifest unknown). "
        f"Check the name and the tag; 'edu search {reg.host}/there' lists what it holds."
        in cli.stderr)
    nothing = edu("push", f"{reg.host}/edu/not-here:v1", state=state)
    assert nothing.returncode == 1 and "No such image" in nothing.stderr


# ---- search -----------------------------------------------------------------------------------

def test_search_the_catalog(start_registry, state):
    reg = start_registry()
    for repo in ("edu/alpha", "edu/beta", "other/alphabet"):
        src, _ = push_busybox(state, reg, repo)
    src.tag("busybox", "localhost/alpha-local:1")
    out = edu("search", f"{reg.host}/alpha", state=state)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()]
    assert rows == [["NAME", "TAGS", "WHERE"],
                    [f"{reg.host}/edu/alpha", "v1", reg.host],
                    [f"{reg.host}/other/alphabet", "v1", reg.host],
                    [f"{reg.host}/edu/alpha", "v1", "local", "store"],
                    [f"{reg.host}/other/alphabet", "v1", "local", "store"],
                    ["localhost/alpha-local", "1", "local", "store"]]
    limited = edu("search", "--limit", "1", "--registry", reg.host, "alpha", state=state)
    assert [line.split()[0] for line in limited.stdout.splitlines()] == \
        ["NAME", f"{reg.host}/edu/alpha", f"{reg.host}/edu/alpha"]
    before = len(reg.requests())
    everything = registry.search_registry(reg.host, "", page_size=1)  # one repo a page
    assert [f.name for f in everything] == [f"{reg.host}/{r}" for r in
                                            ("edu/alpha", "edu/beta", "other/alphabet")]
    pages = [r for r in reg.requests()[before:] if r[1].startswith("/v2/_catalog")]
    assert len(pages) >= 3 and all(r[2] == 200 for r in pages)
    assert "last=" in pages[1][1]


@contextlib.contextmanager
def serving(answer: Callable[[str, str | None], tuple[int, bytes]]) -> Iterator[str]:
    """A loopback HTTP server whose GETs ``answer(path, authorization)`` gives (status, JSON)
    for; yields its ``host:port``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            status, body = answer(self.path, self.headers.get("Authorization"))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def no_catalog(path: str, authorization: str | None) -> tuple[int, bytes]:
    """A registry that answers /v2/ and nothing else, as many hosted registries do."""
    if path == "/v2/":
        return 200, b"{}"
    return 404, b'{"errors":[{"code":"UNSUPPORTED"}]}'


def test_search_says_when_there_is_no_catalog(state):
    with serving(no_catalog) as host:
        out = edu("search", f"{host}/busybox", state=state)
        assert out.returncode == 1
        assert f"edu: {host} has no catalog to search (HTTP 404 to /v2/_catalog)" in out.stderr
        assert "busybox   latest   local store" in out.stdout  # the local hits still show
    hub = edu("search", "busybox", state=state)
    assert hub.returncode == 1 and "docker.io (Docker Hub) has no catalog" in hub.stderr
    with pytest.raises(NoCatalog):
        registry.search_registry("index.docker.io", "x")


# ---- logins -----------------------------------------------------------------------------------

def test_basic_auth_login_push_pull_logout(start_registry, state, tmp_path, edu_config):
    need(shutil.which("htpasswd") is not None,
         "htpasswd is not installed (apt-get install apache2-utils)")
    line = subprocess.run(["htpasswd", "-Bbn", "student", "s3cret pass"], check=True,
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / "htpasswd").write_text(line + "\n")
    reg = start_registry({"htpasswd": {"realm": "edu-test", "path": str(tmp_path / "htpasswd")}})
    name = f"{reg.host}/edu/private:v1"
    assert edu("tag", "busybox", name, state=state).returncode == 0

    anonymous = edu("push", name, state=state)
    assert anonymous.returncode == 1
    assert f"edu: {reg.host} wants a login to push to {reg.host}/edu/private (HTTP 401 " \
           "unauthorized" in anonymous.stderr
    assert f"log in first with 'edu login {reg.host}'." in anonymous.stderr

    wrong = edu("login", "-u", "student", "--password-stdin", reg.host, stdin="wrong\n")
    assert wrong.returncode == 1 and "Login did not succeed" in wrong.stderr
    assert f"{reg.host} does not let student log in (HTTP 401" in wrong.stderr
    assert not (edu_config / "config.json").exists()

    ok = edu("login", "-u", "student", "--password-stdin", reg.host, stdin="s3cret pass\n")
    assert ok.returncode == 0 and ok.stdout == "Login Succeeded\n", ok.stderr
    path = edu_config / "config.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text()) == {"auths": {reg.host: {
        "auth": base64.b64encode(b"student:s3cret pass").decode()}}}
    insecure = edu("login", "-u", "student", "-p", "s3cret pass", reg.host)
    assert insecure.returncode == 0 and "Using --password via the CLI is insecure" in \
        insecure.stderr

    pushed = edu("push", name, state=state)
    assert pushed.returncode == 0, pushed.stderr
    pulled = edu("pull", name, state=tmp_path / "fresh")
    assert pulled.returncode == 0 and "Status: Downloaded newer image" in pulled.stdout

    out = edu("logout", reg.host)
    assert out.stdout == f"Removing login credentials for {reg.host}\n"
    assert json.loads(path.read_text()) == {"auths": {}}
    assert edu("logout", reg.host).stdout == f"Not logged in to {reg.host}\n"
    with pytest.raises(AuthError, match="wants a login to pull"):
        registry.pull(Store(tmp_path / "again"), name)


class TokenIssuer:
    """A Docker token service (served by ``serving(issuer.answer)``): anonymous callers get
    pull, users with the password get what they ask for. Tokens are RS256 JWTs signed by
    ``openssl dgst`` with a self-signed key, whose certificate rides in the ``x5c`` header."""

    ISSUER, SERVICE = "edu-test-issuer", "edu-test-registry"

    def __init__(self, work: Path, users: dict[str, str]):
        need(shutil.which("openssl") is not None, "openssl is not installed")
        self.key, self.cert = work / "token.key", work / "token.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=edu test token issuer", "-keyout", str(self.key),
                        "-out", str(self.cert)], check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.users = users
        self.asked: list[tuple[str | None, list[str]]] = []  # (user, scopes) per token
        self.realm = ""  # where it is served: see test_token_auth

    def registry_auth(self) -> dict:
        return {"token": {"realm": self.realm, "service": self.SERVICE, "issuer": self.ISSUER,
                          "rootcertbundle": str(self.cert)}}

    def answer(self, path: str, authorization: str | None) -> tuple[int, bytes]:
        query = parse_qs(urlsplit(path).query)
        user = None
        if authorization:
            name, _, password = base64.b64decode(authorization.split()[1]).decode() \
                .partition(":")
            if self.users.get(name) != password:
                return 401, b'{"details": "wrong user name or password"}'
            user = name
        scopes = query.get("scope", [])
        self.asked.append((user, scopes))
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            wanted = actions.split(",")
            granted = wanted if user else [a for a in wanted if a == "pull" and
                                           kind == "repository"]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        token = self.sign({"iss": self.ISSUER, "sub": user or "", "aud": self.SERVICE,
                           "exp": now + 300, "nbf": now - 10, "iat": now,
                           "jti": secrets.token_hex(8), "access": access})
        return 200, json.dumps({"token": token, "expires_in": 300}).encode()

    def sign(self, claims: dict) -> str:
        def b64url(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = f"{b64url(json.dumps(header).encode())}." \
                        f"{b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), check=True,
                                   capture_output=True).stdout
        return f"{signing_input}.{b64url(signature)}"


def test_token_auth(start_registry, state, tmp_path):
    issuer = TokenIssuer(tmp_path, {"alice": "wonderland"})
    with serving(issuer.answer) as token_host:
        issuer.realm = f"http://{token_host}/token"
        reg = start_registry(issuer.registry_auth())
        name = f"{reg.host}/edu/tokens:v1"
        src = Store(state / "store")
        src.tag("busybox", name)
        with pytest.raises(AuthError, match=rf"{reg.host} wants a login to push to "
                                            rf"{reg.host}/edu/tokens \(HTTP 401"):
            registry.push(src, name)  # an anonymous token: pull only
        assert issuer.asked[-1] == (None, ["repository:edu/tokens:pull,push"])

        wrong = edu("login", "-u", "alice", "-p", "looking-glass", reg.host)
        assert wrong.returncode == 1
        assert f"the token service of {reg.host} ({issuer.realm}) refused the login of alice " \
               "(HTTP 401)" in wrong.stderr
        ok = edu("login", "-u", "alice", "--password-stdin", reg.host, stdin="wonderland")
        assert ok.returncode == 0, ok.stderr

        out = io.StringIO()
        registry.push(src, name, progress=Progress(out))
        assert "Pushed" in out.getvalue()
        assert ("alice", ["repository:edu/tokens:pull,push"]) in issuer.asked
        src.tag(name, f"{reg.host}/edu/mounted:v1")  # a mount needs pull on the source too
        out = io.StringIO()
        registry.push(src, f"{reg.host}/edu/mounted:v1", progress=Progress(out))
        assert "Mounted from edu/tokens" in out.getvalue()
        assert ("alice", ["repository:edu/mounted:pull,push",
                          "repository:edu/tokens:pull"]) in issuer.asked
        found = registry.search_registry(reg.host, "tok")  # alice may read the catalog
        assert [f.name for f in found] == [f"{reg.host}/edu/tokens"]
        assert found[0].tags == ["v1"]

        assert edu("logout", reg.host).returncode == 0
        pulled = registry.pull(Store(tmp_path / "fresh"), name)  # anonymous pull is allowed
        assert pulled.image.id == src.get(name).id
        assert (None, ["repository:edu/tokens:pull"]) in issuer.asked
        with pytest.raises(NoCatalog, match="does not let edu list its catalog"):
            registry.search_registry(reg.host, "tok")


def test_login_file_and_rules_without_a_registry(edu_config, monkeypatch):
    registry.save_login("docker.io", "me", "pw:with:colons")
    registry.save_login("127.0.0.1:5000", "you", "x")
    data = json.loads((edu_config / "config.json").read_text())
    assert set(data["auths"]) == {"https://index.docker.io/v1/", "127.0.0.1:5000"}  # Docker's
    assert registry.stored_login("index.docker.io") == ("me", "pw:with:colons")
    assert (edu_config / "config.json").stat().st_mode & 0o777 == 0o600
    assert registry.remove_login("docker.io") and not registry.remove_login("docker.io")
    assert registry.stored_login("127.0.0.1:5000") == ("you", "x")

    assert registry.plain_http("127.0.0.1:5000") and registry.plain_http("127.9.9.9")
    assert registry.plain_http("localhost:5000") and registry.plain_http("[::1]:5000")
    assert not registry.plain_http("registry.example.com")
    monkeypatch.setenv(registry.INSECURE_ENV, "registry.example.com, other:5000")
    assert registry.plain_http("registry.example.com") and registry.plain_http("other:5000")
    assert registry.Client("docker.io", use_stored=False).base == "https://registry-1.docker.io"
    assert registry.host_platform() == ("linux", "amd64")


# ---- beside Docker ----------------------------------------------------------------------------

DOCKERFILE = """\
FROM {base}
RUN echo one > /one.txt
RUN head -c 300000 /dev/urandom > /random.bin && md5sum /random.bin > /random.md5
RUN echo three > /three.txt && rm /one.txt
CMD ["sh", "-c", "cat /three.txt /random.md5; ls /one.txt 2>&1; md5sum /random.bin"]
"""


def test_docker_pushes_edu_pulls_and_runs(docker, start_registry, state, tmp_path):  # noqa: F811
    reg = start_registry()
    base = f"localhost/edu-registry-test-{secrets.token_hex(4)}:base"
    Store(state / "store").tag("busybox", base)
    docker.images.append(base)
    run("docker", "load", "-i", str(archive.save(Store(state / "store"), [base],
                                                 tmp_path / "base.tar")))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    name = f"{reg.host}/edu/built:v1"
    docker.images.append(name)
    run("docker", "build", "--network", "none", "--force-rm", "-t", name, str(ctx),
        env={"DOCKER_BUILDKIT": "0"}, timeout=300)
    run("docker", "push", name)
    want = run("docker", "run", "--rm", "--network", "none", name).stdout

    pulled = edu("pull", name, state=state)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.count(": Already exists") == 1  # busybox: same diff_id, other gzip
    assert pulled.stdout.count(": Pull complete") == 3
    repo_digest = json.loads(run("docker", "inspect", name).stdout)[0]["RepoDigests"][0]
    assert f"Digest: {repo_digest.split('@')[1]}" in pulled.stdout
    got = edu("run", "--rm", "--network", "none", name, state=state)
    assert got.returncode == 0, got.stderr
    assert got.stdout == want and "three" in want and "No such file" in want
    docker_id = json.loads(run("docker", "inspect", name).stdout)[0]["Id"]
    assert Store(state / "store").get(name).id == docker_id
    assert edu("rmi", name, state=state).returncode == 0


def test_edu_pushes_docker_pulls_and_runs(docker, start_registry, state, tmp_path):  # noqa: F811
    reg = start_registry()
    name = f"{reg.host}/edu/from-edu:v1"
    image = multi_layer(state, name, tmp_path / "layers")
    pushed = edu("push", name, state=state)
    assert pushed.returncode == 0, pushed.stderr
    docker.images.append(name)
    run("docker", "pull", name)
    inspect = json.loads(run("docker", "inspect", name).stdout)[0]
    assert inspect["Id"] == image.id
    assert inspect["RepoDigests"] == [f"{reg.host}/edu/from-edu@{image.manifest_digest}"]
    script = "cat /etc/one.txt /srv/three.txt; wc -c < /srv/random.bin"
    want = run("docker", "run", "--rm", "--network", "none", name, "sh", "-c", script).stdout
    got = edu("run", "--rm", "--network", "none", name, "sh", "-c", script, state=state)
    assert got.stdout == want == "layer one\nlayer three\n600000\n"
