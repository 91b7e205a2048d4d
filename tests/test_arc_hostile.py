"""Bad input for images: bombs, conflicting layer entries, setuid files, hostile registries.

Issue 16, "Archives and registries". Every input here is real: tars and archives written by the
test, and a small hostile registry (``http.server`` on a free loopback port) that serves
crafted manifests and blobs: truncated, slow, with wrong digests, unknown media types, other
platforms, redirects. Every refusal is one sentence (``edu pull``/``edu load`` exit 1, as
Docker's do), never a traceback, and the store is compared file by file before and after:
blobs, unpacked layers, tags, leases and staging dirs. A retry after the fix succeeds.

Where Docker is the reference (duplicate and conflicting entries in one layer), the same
layer is loaded into the real dockerd (overlay2) and what it unpacked is read from the
image's ``GraphDriver.Data.UpperDir``: edu must refuse what Docker refuses and keep what it
keeps.

Introduced in notebooks/04-images (the hostile-input part of issue 16).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import need
from test_layers import d, entry, hard, make_tar, sym

from edu_runtime import kernel
from edu_runtime.images import archive, layers, registry
from edu_runtime.images.archive import ArchiveError
from edu_runtime.images.layers import LayerError
from edu_runtime.images.registry import RegistryError
from edu_runtime.images.store import OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, Store

pytestmark = pytest.mark.usefixtures("root")

MiB = 1 << 20
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
HOST_ARCH = registry.host_platform()[1]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def zeros_layer(size: int, name: str = "zeros") -> bytes:
    """A layer tar holding one file of ``size`` zero bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    return buf.getvalue()


def config_for(*tars: bytes, arch: str = HOST_ARCH) -> bytes:
    return json.dumps({"architecture": arch, "os": "linux", "config": {"Cmd": ["sh"]},
                       "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in tars]}}
                      ).encode()


# ---- what the store looks like --------------------------------------------------------------

def store_state(store: Store) -> dict[str, str]:
    """Every file and dir in the store with a hash of its content (but the lock file)."""
    out = {}
    for p in sorted(store.root.rglob("*")):
        if p.name == "lock":
            continue
        rel = str(p.relative_to(store.root))
        out[rel] = "dir" if p.is_dir() and not p.is_symlink() else \
            hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.is_file() else "other"
    return out


def assert_untouched(store: Store, before: dict[str, str]) -> None:
    """Nothing half-made: the same blobs, layers, tags; no lease, no staging dir."""
    assert store_state(store) == before
    assert list(store.tmp.iterdir()) == []
    assert [p.name for p in store.pins.iterdir() if p.name.startswith("lease-")] == []


def one_sentence(err: str) -> str:
    """An edu error on stderr: one line, ``edu: ...``, no traceback."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edu: "), err
    return lines[0]


def edu(*argv: str, state: Path, **env: str) -> subprocess.CompletedProcess:
    """The real ``edu`` CLI on a private state dir (pull and load make no container)."""
    return subprocess.run([sys.executable, "-m", "edu_cli.main", *argv], capture_output=True,
                          text=True, timeout=120,
                          env=dict(os.environ, EDU_STATE_DIR=str(state), **env))


@pytest.fixture(autouse=True)
def no_limit_from_outside(monkeypatch, tmp_path):
    monkeypatch.delenv(layers.LIMIT_ENV, raising=False)
    monkeypatch.setenv("EDU_CONFIG", str(tmp_path / "edu-config"))  # no stored logins


# ---- decompression bombs and oversized members ------------------------------------------------

def written(dest: Path) -> int:
    return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.parametrize("case", ["one huge member", "many members", "padding"])
def test_a_bomb_is_refused_before_anything_past_the_limit_is_written(tmp_path, monkeypatch,
                                                                      case):
    monkeypatch.setenv(layers.LIMIT_ENV, "1m")
    if case == "one huge member":
        tar = zeros_layer(32 * MiB)
    elif case == "many members":
        tar = make_tar(*(entry(f"f{i}", data=bytes(300_000)) for i in range(8)))
    else:  # a small file, then 32 MiB of zero blocks after the end-of-archive marker
        tar = make_tar(entry("small", data=b"x")) + bytes(32 * MiB)
    bomb = gzip.compress(tar, 9, mtime=0)
    assert len(bomb) < 64 << 10  # a few tens of kB that would expand to 32 MiB
    dest = tmp_path / "layer"
    dest.mkdir()
    with pytest.raises(LayerError) as refused:
        layers.extract(io.BytesIO(bomb), dest)
    message = str(refused.value)
    assert "EDU_MAX_LAYER_BYTES" in message and "1 MiB" in message and "refused before" \
        in message, message
    assert written(dest) <= MiB
    # Raised, it unpacks: the limit is the only thing that refused it.
    monkeypatch.setenv(layers.LIMIT_ENV, "64m")
    ok = tmp_path / "ok"
    ok.mkdir()
    assert layers.extract(io.BytesIO(bomb), ok).diff_id == sha(tar)


def test_a_bad_limit_setting_is_a_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv(layers.LIMIT_ENV, "lots")
    with pytest.raises(LayerError, match=r"EDU_MAX_LAYER_BYTES='lots' is not a size: give "
                                         r"bytes, or a number with a unit"):
        layers.extract(io.BytesIO(make_tar()), tmp_path)
    monkeypatch.setenv(layers.LIMIT_ENV, "2G")
    assert layers.max_layer_bytes() == 2 << 30
    monkeypatch.delenv(layers.LIMIT_ENV)
    assert layers.max_layer_bytes() == 8 << 30


# ---- archives written by the test -------------------------------------------------------------

def oci_archive(path: Path, blobs: list[tuple[bytes, str]], config: bytes, *,
                tag: str = "arc-test:1", index: dict | None = None,
                damage: bool = False) -> Path:
    """An OCI image layout as a tar (what ``docker save`` 25+ and skopeo write), by hand."""
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": sha(config), "size": len(config)},
                           "layers": [{"mediaType": media, "digest": sha(b), "size": len(b)}
                                      for b, media in blobs]}).encode()
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}'}
    for data in [b for b, _ in blobs] + [config, manifest]:
        files[f"blobs/sha256/{sha(data)[7:]}"] = data
    desc = {"mediaType": OCI_MANIFEST, "digest": sha(manifest), "size": len(manifest),
            "annotations": {"io.containerd.image.name": f"docker.io/library/{tag}"}}
    if index is not None:  # a nested index: platform entries, then the one top entry
        data = json.dumps(index).encode()
        files[f"blobs/sha256/{sha(data)[7:]}"] = data
        desc = {**desc, "mediaType": OCI_INDEX, "digest": sha(data), "size": len(data)}
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [desc]}).encode()
    if damage:  # one bit of the first layer flipped: the same size, another digest
        name = f"blobs/sha256/{sha(blobs[0][0])[7:]}"
        files[name] = files[name][:-1] + bytes([files[name][-1] ^ 1])
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_edu_load_refuses_a_bomb_and_loads_it_once_the_limit_is_raised(tmp_path):
    tar = zeros_layer(24 * MiB)
    bomb = oci_archive(tmp_path / "bomb.tar", [(gzip.compress(tar, 9, mtime=0),
                                                OCI_LAYER_GZIP)], config_for(tar))
    state = tmp_path / "state"
    store = Store(state / "store")
    before = store_state(store)
    cli = edu("load", "-i", str(bomb), state=state, EDU_MAX_LAYER_BYTES="4m")
    assert cli.returncode == 1
    line = one_sentence(cli.stderr)
    assert f"Cannot load {bomb}:" in line and "EDU_MAX_LAYER_BYTES" in line and "4 MiB" in line
    assert line.endswith("Nothing was loaded; the image store is as it was.")
    assert_untouched(store, before)

    ok = edu("load", "-i", str(bomb), state=state, EDU_MAX_LAYER_BYTES="32m")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "Loaded image: arc-test:1"

    # A compressed archive is a bomb too when it expands past the limit (it is unpacked
    # into staging to be read): refused mid-way, staging gone.
    plain = docker_archive(tmp_path / "plain.tar", zeros_layer(24 * MiB, "other"), "arc-test:2")
    packed = tmp_path / "bomb.tar.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes(), 9, mtime=0))
    before = store_state(store)
    cli = edu("load", "-i", str(packed), state=state, EDU_MAX_LAYER_BYTES="4m")
    assert cli.returncode == 1
    assert "decompresses to more than 4194304 bytes" in one_sentence(cli.stderr)
    assert_untouched(store, before)


def test_edu_load_of_a_truncated_archive_is_a_sentence_and_the_whole_one_loads(tmp_path):
    tar = make_tar(entry("srv/data.bin", data=os.urandom(300_000)))
    full = docker_archive(tmp_path / "full.tar", tar, "arc-trunc:1").read_bytes()
    state = tmp_path / "state"
    store = Store(state / "store")
    before = store_state(store)
    cut = tmp_path / "cut.tar"
    for at, why in ((100, "is not a tar archive (or is cut short)"),
                    (150_000, "it ends in the middle of a file: it is truncated")):
        cut.write_bytes(full[:at])
        cli = edu("load", "-i", str(cut), state=state)
        assert cli.returncode == 1 and why in one_sentence(cli.stderr)
        assert_untouched(store, before)
    cut.write_bytes(gzip.compress(full, mtime=0)[:-5000])
    with pytest.raises(ArchiveError, match="is compressed but cannot be decompressed"):
        archive.load(store, cut)
    assert_untouched(store, before)
    cut.write_bytes(full)  # fetched again, whole
    ok = edu("load", "-i", str(cut), state=state)
    assert ok.returncode == 0 and ok.stdout.strip() == "Loaded image: arc-trunc:1", ok.stderr


def test_edu_load_of_a_damaged_blob_names_it_and_the_good_archive_loads(tmp_path):
    tar = make_tar(entry("srv/data.bin", data=os.urandom(100_000)))
    blob = gzip.compress(tar, mtime=0)
    layer = [(blob, OCI_LAYER_GZIP)]
    state = tmp_path / "state"
    store = Store(state / "store")
    before = store_state(store)
    bad = oci_archive(tmp_path / "bad.tar", layer, config_for(tar), damage=True)
    cli = edu("load", "-i", str(bad), state=state)
    assert cli.returncode == 1
    line = one_sentence(cli.stderr)
    assert f"blobs/sha256/{sha(blob)[7:]}, hashes to sha256:" in line  # it names the blob
    assert "the archive is damaged or was altered. Save it again" in line
    assert_untouched(store, before)
    good = oci_archive(tmp_path / "good.tar", layer, config_for(tar))
    ok = edu("load", "-i", str(good), state=state)
    assert ok.returncode == 0 and ok.stdout.strip() == "Loaded image: arc-test:1", ok.stderr


def test_edu_load_platforms_and_unknown_layer_types(tmp_path):
    tar = make_tar(entry("hello", data=b"hi\n"))
    layer = (gzip.compress(tar, mtime=0), OCI_LAYER_GZIP)
    store = Store(tmp_path / "store")
    before = store_state(store)
    arm = oci_archive(tmp_path / "arm.tar", [layer], config_for(tar, arch="arm64"))
    with pytest.raises(ArchiveError, match=rf"has no image for linux/{HOST_ARCH}, only for "
                                           r"linux/arm64 \(its config says so\)"):
        archive.load(store, arm)
    assert_untouched(store, before)

    # An index of two other platforms names both; one with this host's platform loads.
    config = config_for(tar)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": sha(config), "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha(layer[0]),
                            "size": len(layer[0])}]}
    mdata = json.dumps(manifest).encode()

    def index(*arches: str) -> dict:
        return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": sha(mdata), "size": len(mdata),
             "platform": {"os": "linux", "architecture": a}} for a in arches]}
    others = oci_archive(tmp_path / "others.tar", [layer], config,
                         index=index("arm64", "s390x"))
    with pytest.raises(ArchiveError, match=rf"has no linux/{HOST_ARCH} image \(it has: "
                                           r"linux/arm64, linux/s390x\)"):
        archive.load(store, others)
    assert_untouched(store, before)
    [image] = archive.load(store, oci_archive(tmp_path / "ours.tar", [layer], config,
                                              index=index(HOST_ARCH)))
    assert image.familiar_tags() == ["arc-test:1"]

    weird = oci_archive(tmp_path / "weird.tar", [(layer[0], "application/x-edu-weird")],
                        config)
    before = store_state(store)  # (the store has this layer already: refused all the same)
    with pytest.raises(ArchiveError, match="has the media type 'application/x-edu-weird', "
                                           "which edu cannot unpack"):
        archive.load(store, weird)
    assert_untouched(store, before)


# ---- a hostile registry -----------------------------------------------------------------------

class Hostile:
    """A registry that serves what the test puts in ``routes``, and misbehaves on request.

    ``routes[path] = (status, headers, body, mode)``; mode ``truncate`` promises the whole
    body and sends half, then hangs up; ``stall`` sends half and waits until the test ends."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes, str]] = {}
        self.seen: list[str] = []
        self.done = threading.Event()
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # a kept-alive connection nobody closes cannot hold stop() long

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?")[0]
                hostile.seen.append(path)
                status, headers, body, mode = hostile.routes.get(path, (
                    404, {"Content-Type": "application/json"},
                    b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}',
                    ""))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if mode in ("truncate", "stall"):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    if mode == "stall":
                        hostile.done.wait(60)
                    self.close_connection = True
                    return
                self.wfile.write(body)

            do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.routes["/v2/"] = (200, {"Content-Type": "application/json"}, b"{}", "")
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def blob(self, repo: str, data: bytes, mode: str = "", body: bytes | None = None) -> dict:
        """Serve ``data`` as a blob (or ``body`` in its place); return its descriptor."""
        self.routes[f"/v2/{repo}/blobs/{sha(data)}"] = (
            200, {"Content-Type": "application/octet-stream"},
            data if body is None else body, mode)
        return {"digest": sha(data), "size": len(data)}

    def manifest(self, repo: str, tag: str, doc: dict, media: str) -> str:
        data = json.dumps(doc).encode()
        for ref in (tag, sha(data)):
            self.routes[f"/v2/{repo}/manifests/{ref}"] = (
                200, {"Content-Type": media, "Docker-Content-Digest": sha(data)}, data, "")
        return sha(data)

    def image(self, repo: str, tag: str, tars: list[bytes], *, arch: str = HOST_ARCH,
              layer_media: str = OCI_LAYER_GZIP, mode: str = "", body: bytes | None = None
              ) -> dict:
        """Publish an image of gzip layers; ``mode``/``body`` apply to its last layer."""
        config = config_for(*tars, arch=arch)
        descs = []
        for n, tar in enumerate(tars, 1):
            last = n == len(tars)
            descs.append({"mediaType": layer_media, **self.blob(
                repo, gzip.compress(tar, 9, mtime=0), mode if last else "",
                body if last else None)})
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                          **self.blob(repo, config)}, "layers": descs}
        self.manifest(repo, tag, doc, OCI_MANIFEST)
        return doc

    def stop(self) -> None:
        """Release stalled answers, stop, and join every handler thread."""
        self.done.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    server = Hostile()
    yield server
    server.stop()


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "state" / "store")


LAYER = make_tar(entry("etc/motd", data=b"hello from a hostile registry\n"))
LAYER2 = make_tar(entry("srv/data.bin", data=os.urandom(300_000)))


def refused(store: Store, ref: str, match: str, **kw) -> str:
    """Pull ``ref``: it must be refused with ``match`` and leave ``store`` as it was."""
    before = store_state(store)
    with pytest.raises(RegistryError) as err:
        registry.pull(store, ref, **kw)
    message = str(err.value)
    assert match in message, message
    assert_untouched(store, before)
    return message


@pytest.mark.parametrize("damage", ["truncate", "wrong digest", "too long"])
def test_a_damaged_download_stores_nothing_and_a_retry_after_the_fix_succeeds(
        hostile, store, tmp_path, damage):
    ref = f"{hostile.host}/arc/img:v1"
    good = gzip.compress(LAYER2, 9, mtime=0)
    if damage == "truncate":
        hostile.image("arc/img", "v1", [LAYER, LAYER2], mode="truncate")
        why = "broke off after"
    elif damage == "wrong digest":  # the same length, other bytes
        hostile.image("arc/img", "v1", [LAYER, LAYER2], body=good[:-1] + bytes([good[-1] ^ 1]))
        why = "is damaged: its"
    else:
        hostile.image("arc/img", "v1", [LAYER, LAYER2], body=good + b"more")
        why = "is damaged: its"
    message = refused(store, ref, why)
    assert f"layer 2 of {ref}" in message and "Nothing was stored" in message
    if damage != "truncate":
        assert f"the digest {sha(good)}" in message  # it names the blob

    state = store.root.parent
    cli = edu("pull", ref, state=state)
    assert cli.returncode == 1 and why in one_sentence(cli.stderr)
    assert list(store.tmp.iterdir()) == []

    hostile.image("arc/img", "v1", [LAYER, LAYER2])  # the registry is repaired
    ok = edu("pull", ref, state=state)
    assert ok.returncode == 0, ok.stderr
    assert "Status: Downloaded newer image" in ok.stdout
    image = Store(store.root).get(ref)
    assert image.diff_ids == [sha(LAYER), sha(LAYER2)]


def test_slow_and_short_bodies_are_sentences(hostile, store):
    doc = hostile.image("arc/slow", "v1", [LAYER, LAYER2], mode="stall")
    ref = f"{hostile.host}/arc/slow:v1"
    message = refused(store, ref, "broke off after",
                      client=registry.Client(hostile.host, timeout=2))
    assert f"layer 2 of {ref}" in message and "timed out" in message

    def misbehave(path: str, mode: str) -> None:
        status, headers, body, _ = hostile.routes[path]
        hostile.routes[path] = (status, headers, body, mode)
    hostile.image("arc/slow", "v1", [LAYER, LAYER2])
    misbehave("/v2/arc/slow/manifests/v1", "stall")
    refused(store, ref, f"reading the manifest of {ref} broke off (timed out): the registry "
                        "stopped answering. Nothing was stored; pull again.",
            client=registry.Client(hostile.host, timeout=2))
    misbehave("/v2/arc/slow/manifests/v1", "")
    misbehave(f"/v2/arc/slow/blobs/{doc['config']['digest']}", "truncate")
    refused(store, ref, f"reading the config of {ref} broke off after")


def test_a_bomb_from_a_registry_is_refused_under_the_limit(hostile, store, monkeypatch):
    monkeypatch.setenv(layers.LIMIT_ENV, "2m")
    ref = f"{hostile.host}/arc/bomb:v1"
    doc = hostile.image("arc/bomb", "v1", [LAYER, zeros_layer(16 * MiB)])
    blob = doc["layers"][1]["digest"]
    message = refused(store, ref, "refused before it was written; the limit is 2 MiB "
                                  "(EDU_MAX_LAYER_BYTES); if you trust this image, raise it, "
                                  "e.g. EDU_MAX_LAYER_BYTES=4m")
    assert message.startswith(f"{ref} was refused: layer {blob[:19]}... was not unpacked: "
                              "layer member 'zeros' is 16777216 bytes")  # it names the blob

    # A layer whose blob alone is larger than the limit is not even downloaded.
    big = os.urandom(3 * MiB)
    hostile.image("arc/bomb", "big", [LAYER, make_tar(entry("big", data=big))])
    hostile.seen.clear()
    refused(store, f"{hostile.host}/arc/bomb:big", "larger than any layer may unpack to")
    assert [p for p in hostile.seen if "/blobs/" in p and p.endswith(
        sha(gzip.compress(make_tar(entry("big", data=big)), 9, mtime=0)))] == []

    monkeypatch.setenv(layers.LIMIT_ENV, "32m")
    assert registry.pull(store, ref).image.diff_ids[1] == sha(zeros_layer(16 * MiB))


def test_platforms(hostile, store):
    amd = hostile.image("arc/plat", "amd", [LAYER])
    arm = hostile.image("arc/plat", "arm", [LAYER2], arch="arm64")
    entry_of = {
        name: {"mediaType": OCI_MANIFEST, "digest": sha(json.dumps(doc).encode()),
               "size": len(json.dumps(doc).encode()),
               "platform": {"os": "linux", "architecture": arch}}
        for name, doc, arch in (("amd", amd, HOST_ARCH), ("arm", arm, "arm64"),
                                ("s390x", arm, "s390x"))}

    def index(*names: str) -> dict:
        return {"schemaVersion": 2, "mediaType": OCI_INDEX,
                "manifests": [entry_of[n] for n in names]}
    hostile.manifest("arc/plat", "arm-only", index("arm", "s390x"), OCI_INDEX)
    refused(store, f"{hostile.host}/arc/plat:arm-only",
            f"has no image for linux/{HOST_ARCH}, only for linux/arm64, linux/s390x: it "
            "cannot run here")
    # A single-platform image is checked against its config.
    refused(store, f"{hostile.host}/arc/plat:arm",
            "only for linux/arm64 (its config says so): it cannot run here")
    # An index holding only this host's platform is fine.
    hostile.manifest("arc/plat", "amd-only", index("amd"), OCI_INDEX)
    pulled = registry.pull(store, f"{hostile.host}/arc/plat:amd-only")
    assert pulled.image.config["architecture"] == HOST_ARCH


def test_unknown_media_types(hostile, store):
    hostile.image("arc/media", "layer", [LAYER], layer_media="application/x-edu-weird")
    refused(store, f"{hostile.host}/arc/media:layer",
            "has the media type 'application/x-edu-weird': edu pulls gzip and plain tar layers")
    doc = hostile.image("arc/media", "ok", [LAYER])
    hostile.manifest("arc/media", "odd", {**doc, "mediaType": "application/x-edu-manifest"},
                     "application/x-edu-manifest")
    refused(store, f"{hostile.host}/arc/media:odd", "is a application/x-edu-manifest, which "
                                                     "edu cannot pull")
    hostile.routes["/v2/arc/media/manifests/html"] = (
        200, {"Content-Type": "text/html"}, b"<html>a login page</html>", "")
    refused(store, f"{hostile.host}/arc/media:html", "is not a JSON object")
    # By digest, the manifest must hash to it.
    digest = sha(json.dumps(doc).encode())
    other = json.dumps({**doc, "annotations": {"x": "y"}}).encode()
    hostile.routes[f"/v2/arc/media/manifests/{digest}"] = (
        200, {"Content-Type": OCI_MANIFEST}, other, "")
    refused(store, f"{hostile.host}/arc/media@{digest}", f"hashes to {sha(other)}, but the "
                                                         f"registry names it {digest}")


def test_redirects(hostile, store):
    cdn = Hostile()  # blobs served from elsewhere, as registries send them to a CDN
    try:
        doc = hostile.image("arc/redir", "v1", [LAYER])
        layer = doc["layers"][0]["digest"]
        data = gzip.compress(LAYER, 9, mtime=0)
        cdn.routes[f"/cdn/{layer[7:]}"] = (200, {}, data, "")
        path = f"/v2/arc/redir/blobs/{layer}"
        hostile.routes[path] = (307, {"Location": f"http://{cdn.host}/cdn/{layer[7:]}"}, b"",
                                "")
        assert registry.pull(store, f"{hostile.host}/arc/redir:v1").image.diff_ids == \
            [sha(LAYER)]
        assert f"/cdn/{layer[7:]}" in cdn.seen
    finally:
        cdn.stop()
    fresh = Store(store.root.parent / "fresh")
    hostile.routes[path] = (302, {"Location": path}, b"", "")  # a loop
    refused(fresh, f"{hostile.host}/arc/redir:v1", "more than 10 times (a loop)")
    hostile.routes[path] = (302, {"Location": "file:///etc/shadow"}, b"", "")
    refused(fresh, f"{hostile.host}/arc/redir:v1", "which is not an http or https URL")


# ---- duplicate and conflicting entries in one layer: as Docker does ----------------------------

def x(name: str, text: str) -> tuple:
    return entry(name, data=text.encode())


# name -> (members, what edu and Docker keep: {path: content}, or None: both refuse it)
CONFLICTS = {
    "file then file": ([x("a", "one"), x("a", "two")], None),
    "dot-slash then plain": ([x("./a", "one"), x("a", "two")], None),
    "file then dir": ([x("a", "one"), d("a"), x("a/in", "in")], None),
    "dir then file": ([d("a"), x("a/in", "in"), x("a", "file")], None),
    "dir then dir": ([d("a"), x("a/1", "1"), d("a"), x("a/2", "2")], None),
    "symlink then file": ([sym("a", "/etc/passwd"), x("a", "file")], None),
    "link then the file again": ([x("a", "old"), hard("h", "a"), x("a", "new")], None),
    "hardlink to a later member": ([hard("h", "a"), x("a", "one")], None),
    "hardlink to a dir": ([d("a"), hard("h", "a")], None),
    "hardlink to itself": ([x("a", "one"), hard("a", "a")], None),
    "file then whiteout": ([x("a", "one"), entry(".wh.a")], None),
    "dir then whiteout": ([d("a"), x("a/in", "in"), entry(".wh.a")], None),
    "whiteout twice": ([entry(".wh.a"), entry(".wh.a")], None),
    "whiteout then file": ([entry(".wh.a"), x("a", "back")], {"a": "back"}),
    "whiteout then dir": ([entry(".wh.a"), d("a"), x("a/in", "in")],
                          {"a": "dir", "a/in": "in"}),
    "implicit dir then its entry": ([x("a/in", "in"), d("a")], {"a": "dir", "a/in": "in"}),
    "implicit dir then a file": ([x("a/in", "in"), x("a", "file")], {"a": "file"}),
    "implicit dir then a symlink": ([x("a/in", "in"), sym("a", "/x")], {"a": "->/x"}),
    "opaque dir keeps its own files": ([d("a"), x("a/in", "in"), entry("a/.wh..wh..opq")],
                                       {"a": "dir", "a/in": "in"}),
}


def view(root: Path) -> dict[str, str]:
    """A layer dir as {path: file content, 'dir', '->target' or 'whiteout'}."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = os.lstat(p)
        rel = str(p.relative_to(root))
        if stat.S_ISDIR(st.st_mode):
            out[rel] = "dir"
        elif stat.S_ISLNK(st.st_mode):
            out[rel] = "->" + os.readlink(p)
        elif stat.S_ISCHR(st.st_mode):
            out[rel] = "whiteout"
        else:
            out[rel] = p.read_text()
    return out


@pytest.mark.parametrize("case", sorted(CONFLICTS))
def test_conflicting_entries_in_one_layer(tmp_path, case):
    members, expected = CONFLICTS[case]
    dest = tmp_path / "layer"
    dest.mkdir()
    data = make_tar(*members)
    if expected is None:
        with pytest.raises(LayerError, match="refused"):
            layers.extract(io.BytesIO(data), dest, rootless=False)
    else:
        layers.extract(io.BytesIO(data), dest, rootless=False)
        got = view(dest)
        assert {k: v for k, v in got.items() if v != "whiteout"} == expected


def docker_archive(path: Path, tar: bytes, tag: str) -> Path:
    config = config_for(tar)
    files = {"layer/layer.tar": tar, "config.json": config,
             "manifest.json": json.dumps([{"Config": "config.json", "RepoTags": [tag],
                                           "Layers": ["layer/layer.tar"]}]).encode()}
    with tarfile.open(path, "w") as out:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return path


def test_docker_treats_the_conflicts_as_edu_does(tmp_path):
    """The reference: each conflicting layer into the real dockerd (overlay2)."""
    need(shutil.which("docker") is not None, "docker is not installed")
    info = subprocess.run(["docker", "info", "-f", "{{.Driver}}"], capture_output=True,
                          text=True, timeout=60)
    need(info.returncode == 0 and info.stdout.strip() == "overlay2",
         f"dockerd with overlay2 is needed: {info.stderr.strip() or info.stdout.strip()}")
    made = []
    try:
        for n, case in enumerate(sorted(CONFLICTS)):
            members, expected = CONFLICTS[case]
            tag = f"arc-conflict-{os.getpid()}-{n}:1"
            archive_path = docker_archive(tmp_path / f"{n}.tar", make_tar(*members), tag)
            load = subprocess.run(["docker", "load", "-i", str(archive_path)],
                                  capture_output=True, text=True, timeout=120)
            if load.returncode == 0:
                made.append(tag)
            assert (load.returncode != 0) == (expected is None), (case, load.stderr)
            if expected is None:
                continue
            upper = json.loads(subprocess.run(
                ["docker", "image", "inspect", "-f", "{{json .GraphDriver.Data}}", tag],
                capture_output=True, text=True, timeout=60, check=True).stdout)["UpperDir"]
            got = view(Path(upper))
            assert {k: v for k, v in got.items() if v != "whiteout"} == expected, case
    finally:
        if made:
            subprocess.run(["docker", "rmi", *made], capture_output=True, timeout=120)


# ---- setuid and setgid in rootless unpacks ------------------------------------------------------

NOBODY = 65534


@pytest.mark.parametrize("userns", [False, True], ids=["plain-user", "user-namespace"])
def test_rootless_setuid_is_kept_only_where_the_owner_is(tmp_path, userns):
    """As ``nobody``: a setuid-root file whose owner cannot be set would be setuid-*nobody* on
    the host, so its bits are cleared; in a user namespace mapping uid 0 (Docker rootless's
    case) it keeps them. A setgid directory keeps its bit (it only picks new files' group)."""
    data = make_tar(entry("bin/su", data=b"#!su", mode=0o4755, uid=0, gid=0),
                    entry("bin/wall", data=b"#!wall", mode=0o2755, uid=0, gid=5),
                    d("var/mail", mode=0o2775, uid=0, gid=0))
    base = Path(tempfile.mkdtemp(prefix="arc-rootless-"))
    try:
        dest, report = base / "layer", base / "report.json"
        dest.mkdir()
        for path in (base, dest):
            os.chown(path, NOBODY, NOBODY)

        def child() -> int:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            if userns:
                kernel.prctl(kernel.PR_SET_DUMPABLE, 1)
                kernel.unshare(kernel.CLONE_NEWUSER)
                Path("/proc/self/setgroups").write_text("deny")
                Path("/proc/self/uid_map").write_text(f"0 {NOBODY} 1")
                Path("/proc/self/gid_map").write_text(f"0 {NOBODY} 1")
            stats = layers.extract(io.BytesIO(data), dest)
            report.write_text(json.dumps({"stripped": stats.stripped}))
            return 0

        assert kernel.in_child(child, timeout=30) == 0
        modes = {n: stat.S_IMODE(os.lstat(dest / n).st_mode)
                 for n in ("bin/su", "bin/wall", "var/mail")}
        if userns:  # uid 0 is mapped: su is setuid to the namespace's root; gid 5 is not
            assert modes == {"bin/su": 0o4755, "bin/wall": 0o755, "var/mail": 0o2775}
            assert json.loads(report.read_text()) == {"stripped": 1}
        else:
            assert modes == {"bin/su": 0o755, "bin/wall": 0o755, "var/mail": 0o2775}
            assert json.loads(report.read_text()) == {"stripped": 2}
        assert os.lstat(dest / "bin/su").st_uid == NOBODY
    finally:
        shutil.rmtree(base)
    # As root (not rootless), the image's owners and bits are kept, as Docker keeps them.
    rooted = tmp_path / "rooted"
    rooted.mkdir()
    assert layers.extract(io.BytesIO(data), rooted, rootless=False).stripped == 0
    assert stat.S_IMODE(os.lstat(rooted / "bin/su").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(rooted / "bin/wall").st_mode) == 0o2755
