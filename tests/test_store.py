"""The image store: references, verified blobs, shared layers, tags, GC, and concurrency.

Layers here are real tar files unpacked by the real extractor into a store in a temp dir.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import multiprocessing
import os
import tarfile
from pathlib import Path

import pytest

from edu_runtime.images import reference
from edu_runtime.images.store import OCI_LAYER_GZIP, Store, StoreError

# ---- references ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,full,familiar", [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest"),
    ("docker.io/library/debian:12", "docker.io/library/debian:12", "debian:12"),
    ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
    ("localhost:5000/app:v1", "localhost:5000/app:v1", "localhost:5000/app:v1"),
    ("127.0.0.1:5000/team/app:1.0-rc", "127.0.0.1:5000/team/app:1.0-rc",
     "127.0.0.1:5000/team/app:1.0-rc"),
    ("registry.example.com/a/b/c", "registry.example.com/a/b/c:latest",
     "registry.example.com/a/b/c:latest"),
    ("busybox@sha256:" + "ab" * 32, "docker.io/library/busybox@sha256:" + "ab" * 32,
     "busybox@sha256:" + "ab" * 32),
    ("app:v2@sha256:" + "cd" * 32, "docker.io/library/app:v2@sha256:" + "cd" * 32,
     "app:v2@sha256:" + "cd" * 32),
])
def test_reference_parses_like_docker(text, full, familiar):
    ref = reference.parse(text)
    assert str(ref) == full and ref.familiar() == familiar


@pytest.mark.parametrize("text,why", [
    ("Busybox", "lowercase"), ("busybox:", "tag"), ("a b", "spaces"), ("", "empty"),
    ("busybox@sha256:123", "digest"), ("-app", "repository"), ("app:" + "x" * 129, "tag"),
])
def test_reference_refusals_say_why(text, why):
    with pytest.raises(reference.ReferenceError, match=why):
        reference.parse(text)


# ---- helpers: real layers -----------------------------------------------------------------

def layer_tar(files: dict[str, bytes | None], mode: int = 0o644) -> bytes:
    """An uncompressed layer tar; None makes a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), mode
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def add_image(store: Store, layers: list[bytes], tags=(), cmd=("sh",)):
    """Gzip each layer into a blob, write a config, and add the image."""
    blobs, diff_ids = [], []
    for raw in layers:
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        blobs.append((store.put_blob_bytes(gzip.compress(raw, mtime=0)), OCI_LAYER_GZIP))
    config = {"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
              "config": {"Cmd": list(cmd), "Env": ["PATH=/bin"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids},
              "history": [{"created_by": f"layer {i}"} for i in range(len(layers))]}
    return store.add_image(json.dumps(config).encode(), blobs, list(tags))


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if "tmp" not in p.relative_to(root).parts[:1] and p.name != "lock")


BASE = layer_tar({"bin/": None, "bin/sh": b"#!fake shell\n", "etc/": None,
                  "etc/os-release": b"base\n"})


# ---- blobs, layers, images ----------------------------------------------------------------

def test_add_image_unpacks_each_layer_once(tmp_path):
    store = Store(tmp_path / "store")
    a = add_image(store, [BASE, layer_tar({"app/": None, "app/a": b"a"})], ["app-a:1"])
    b = add_image(store, [BASE, layer_tar({"app/": None, "app/b": b"b"})], ["app-b:1"])
    assert a.diff_ids[0] == b.diff_ids[0]
    assert len(list(store.layers.glob("*/"))) == 3  # one base, two app layers
    base = store.layer_dir(a.diff_ids[0])
    assert (base / "etc/os-release").read_text() == "base\n"
    assert store.lowerdirs(a) == [store.layer_dir(a.diff_ids[1]), base]
    assert store.get("app-a:1").id == a.id == store.get(a.short_id).id
    assert store.get(f"app-a@{a.manifest_digest}").id == a.id


def test_blob_is_verified(tmp_path):
    store = Store(tmp_path / "store")
    with pytest.raises(StoreError, match="corrupt"):
        store.put_blob_bytes(b"hello", expected="sha256:" + "0" * 64)
    assert listing(store.root) == listing(Store(tmp_path / "empty").root)


def test_refused_image_leaves_store_as_it_was(tmp_path):
    store = Store(tmp_path / "store")
    add_image(store, [BASE], ["base:1"])
    before = listing(store.root)
    good = layer_tar({"x": b"x"})
    lie = {"architecture": "amd64", "os": "linux", "config": {},
           "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]}}
    with pytest.raises(StoreError, match="corrupt"), store.transaction():
        blob = store.put_blob_bytes(gzip.compress(good, mtime=0))
        store.add_image(json.dumps(lie).encode(), [(blob, OCI_LAYER_GZIP)], ["liar:1"])
    assert listing(store.root) == before
    assert [i.familiar_tags() for i in store.images()] == [["base:1"]]


def test_transaction_rolls_back_everything_it_added(tmp_path):
    store = Store(tmp_path / "store")
    before = listing(store.root)
    with pytest.raises(RuntimeError), store.transaction():
        add_image(store, [BASE], ["half:1"])
        raise RuntimeError("killed half-way")
    assert listing(store.root) == before
    with pytest.raises(StoreError, match="No such image"):
        store.get("half:1")


def test_tag_rmi_and_prune(tmp_path):
    store = Store(tmp_path / "store")
    img = add_image(store, [BASE, layer_tar({"a": b"1"})], ["one:1"])
    store.tag("one:1", "two:latest")
    assert store.get("two").id == img.id
    with pytest.raises(StoreError, match="2 tags"):
        store.remove(img.short_id)
    assert store.remove("one:1") == ["Untagged: one:1"]
    assert store.get("two").id == img.id  # still there
    done = store.remove("two")
    assert done[0] == "Untagged: two:latest" and done[1] == f"Deleted: {img.id}"
    assert list(store.layers.iterdir()) == [] and list(store.blobs.iterdir()) == []


def test_prune_keeps_pinned_layers_and_drops_dangling(tmp_path):
    store = Store(tmp_path / "store")
    old = add_image(store, [BASE, layer_tar({"v": b"1"})], ["app:1"])
    add_image(store, [BASE, layer_tar({"v": b"2"})], ["app:1"])  # retag: old is dangling
    assert [i.tags for i in store.images() if i.id == old.id] == [[]]
    store.pin("container-x", old.diff_ids)
    stats = store.prune()
    assert stats["images"] == 1
    assert all(store.layer_dir(d).is_dir() for d in old.diff_ids)  # pinned: kept
    store.unpin("container-x")
    store.prune()
    assert not store.layer_dir(old.diff_ids[1]).exists()
    assert store.layer_dir(old.diff_ids[0]).is_dir()  # the base is still used by app:1


def test_stale_staging_of_a_dead_process_is_cleaned(tmp_path):
    store = Store(tmp_path / "store")
    pid = os.fork()
    if pid == 0:
        (store.tmp / f"{os.getpid()}-dead").mkdir()
        os._exit(0)
    os.waitpid(pid, 0)
    assert store.clean_staging() == 1 and list(store.tmp.iterdir()) == []


def _add_many(root: str, who: int) -> None:
    store = Store(Path(root))
    for i in range(5):
        add_image(store, [BASE, layer_tar({f"f{who}-{i}": b"x"})], [f"p{who}:{i}"])


def test_concurrent_writers_lose_nothing(tmp_path):
    root = str(tmp_path / "store")
    Store(Path(root))
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_add_many, args=(root, w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = Store(Path(root))
    tags = sorted(t for img in store.images() for t in img.familiar_tags())
    assert tags == sorted(f"p{w}:{i}" for w in range(3) for i in range(5))
    assert len(list(store.layers.glob("*/"))) == 16  # one shared base + 15 own layers
    assert list(store.tmp.iterdir()) == []


def test_index_is_never_half_written(tmp_path):
    store = Store(tmp_path / "store")
    add_image(store, [BASE], ["a:1"])
    json.loads(store.index_path.read_text())
    assert not list(store.root.glob(".index.json*"))
