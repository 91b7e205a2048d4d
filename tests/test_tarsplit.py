"""A layer's blob kept as its unpacked layer only: rebuilt byte for byte, or kept as a file.

Real layers (tarfile and ``layers.pack``), the real extractor, a store in a temp dir: every
rebuilt blob and tar is compared with the original bytes, and every refusal leaves the blob.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import zlib

import pytest

from edu_runtime.images import archive, layers, tarsplit
from edu_runtime.images.store import OCI_LAYER, OCI_LAYER_GZIP, Store, StoreError, _process


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def odd_tar(fmt: int = tarfile.PAX_FORMAT, tail: bytes = b"") -> bytes:
    """A tar with what real layers hold: long names, links, empty and odd-sized files,
    a whiteout, xattrs (PAX), a deep path (a ustar prefix), and zero padding after its end."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        def add(name, data=None, kind=tarfile.REGTYPE, **kw):
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.mode = kind, 1_700_000_000, 0o644
            for k, v in kw.items():
                setattr(info, k, v)
            if kind == tarfile.DIRTYPE:
                info.mode = 0o755
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
        add("etc", kind=tarfile.DIRTYPE)
        add("etc/hostname", b"layer\n")
        add("etc/empty", b"")
        add("etc/odd.bin", os.urandom(1000))
        add("etc/big.bin", os.urandom(300_000))
        if fmt != tarfile.USTAR_FORMAT:  # (ustar cannot hold it: a PAX or GNU long name)
            add("etc/" + "n" * 150, b"a long name\n")
        add("usr/" + "/".join(["deep"] * 20), kind=tarfile.DIRTYPE)
        add("usr/" + "/".join(["deep"] * 20) + "/f", b"deep\n")
        add("etc/link", kind=tarfile.LNKTYPE, linkname="etc/hostname")
        add("etc/sym", kind=tarfile.SYMTYPE, linkname="hostname")
        add("etc/.wh.gone", b"")
        if fmt == tarfile.PAX_FORMAT:
            add("etc/xattr", b"x", pax_headers={"SCHILY.xattr.user.note": "hi"})
    return buf.getvalue() + tail


def add_layer(store: Store, blob: bytes, diff_id: str) -> dict:
    with store.lease():
        digest = store.put_blob_bytes(blob)
        return store.ensure_layer(digest, diff_id)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_split_rebuilds_the_tar_byte_for_byte(tmp_path, fmt):
    data = odd_tar(fmt, tail=bytes(4096))
    dest = tmp_path / "layer"
    dest.mkdir()
    layers.extract(io.BytesIO(data), dest, rootless=False)
    with open(tmp_path / "split", "wb") as out:
        rec = tarsplit.Recorder(out)
        for i in range(0, len(data), 777):  # fed in odd pieces, as a stream comes
            rec.feed(data[i:i + 777])
        assert rec.close() and rec.tar_size == len(data)
    assert b"".join(tarsplit.tar_chunks(tmp_path / "split", dest)) == data
    # the split is the headers only: far smaller than the files
    assert (tmp_path / "split").stat().st_size < len(data) // 20


def test_a_cut_or_damaged_tar_is_not_split(tmp_path):
    data = odd_tar()
    for bad in (data[:700], data[:1024 + 100], data[:512] + b"\xff" * 512):
        with open(tmp_path / "s", "wb") as out:
            rec = tarsplit.Recorder(out)
            rec.feed(bad)
            assert not rec.close()


def test_an_uncompressed_blob_is_kept_as_its_layer(tmp_path):
    store = Store(tmp_path / "store")
    data = odd_tar()
    info = add_layer(store, data, sha(data))
    digest = sha(data)
    assert info["rebuild"] == "tar" and info["blob_size"] == len(data)
    assert not (store.blobs / digest[7:]).exists() and store.has_blob(digest)
    assert store.blob_size(digest) == len(data) and not store.is_gzip(digest)
    assert store.read_blob(digest) == data
    with store.open_layer_tar(digest) as f:
        assert f.read() == data
    assert store.verify() == []


def test_a_layer_edu_compressed_is_rebuilt_with_the_same_digest(tmp_path):
    """``edu build`` packs layers with gzip level 1: the blob is recompressed identically."""
    src = tmp_path / "src"
    (src / "app").mkdir(parents=True)
    (src / "app" / "data.bin").write_bytes(os.urandom(200_000))
    # past GzipCheck.PREFIX: compared up to it, rebuilt and hashed whole
    (src / "app" / "big.bin").write_bytes(os.urandom(tarsplit.GzipCheck.PREFIX + 100_000))
    (src / "app" / "text").write_text("hello\n" * 5000)
    os.symlink("text", src / "app" / "link")
    out = io.BytesIO()
    stats = layers.pack(src, out, compress=True, level=1)
    blob = out.getvalue()
    store = Store(tmp_path / "store")
    info = add_layer(store, blob, stats.diff_id)
    assert info["rebuild"] == "gzip-1" and not (store.blobs / stats.digest[7:]).exists()
    assert store.read_blob(stats.digest) == blob and store.is_gzip(stats.digest)
    # blob_path gives a file again (push reads it), which GC drops once no lease holds it
    store.add_image(json.dumps({"rootfs": {"type": "layers", "diff_ids": [stats.diff_id]}})
                    .encode(), [(stats.digest, OCI_LAYER_GZIP)], ["tsp-app:1"])
    with store.lease():
        path = store.blob_path(stats.digest)
        assert path.read_bytes() == blob
        store.prune()
        assert path.exists()  # held: a push may be reading it
    store.prune()
    assert not path.exists() and store.has_blob(stats.digest)
    assert store.verify() == []
    store.remove("tsp-app:1")
    assert list(store.blobs.iterdir()) == [] and list(store.layers.iterdir()) == []
    assert list(store.rebuild.iterdir()) == []


def test_a_blob_compressed_elsewhere_stays(tmp_path):
    """A gzip whose header claims level 1 but whose bytes another compressor made (as Go's
    gzip, pigz...) cannot be rebuilt: its blob stays, and the layer is unpacked as ever."""
    data = odd_tar()
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_FILTERED)
    body = c.compress(data) + c.flush()
    blob = (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff" + body
            + zlib.crc32(data).to_bytes(4, "little") + len(data).to_bytes(4, "little"))
    assert gzip.decompress(blob) == data
    store = Store(tmp_path / "store")
    info = add_layer(store, blob, sha(data))
    assert "rebuild" not in info and (store.blobs / sha(blob)[7:]).read_bytes() == blob
    assert list(store.rebuild.iterdir()) == []
    with store.lease():  # (nothing names the layer: the lease keeps it for compact)
        store.hold([sha(blob)], [sha(data)])
        assert store.compact() == {"blobs": 0, "bytes": 0}
        assert store.layer_info(sha(data))["rebuild"] is False  # tried once, not again
        assert (store.blobs / sha(blob)[7:]).read_bytes() == blob


def test_compact_takes_the_other_levels_and_saves_round_trip(tmp_path):
    data = odd_tar()
    blob6 = gzip.compress(data, compresslevel=6, mtime=0)
    store = Store(tmp_path / "store")
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [sha(data)]}}).encode()
    with store.lease():
        store.put_blob_bytes(blob6)
        store.add_image(config, [(sha(blob6), OCI_LAYER_GZIP)], ["tsp-six:1"])
    assert (store.blobs / sha(blob6)[7:]).exists()  # level 6: not checked on the way in
    done = store.compact()
    assert done["blobs"] == 1 and done["bytes"] > 0 and store.compact()["blobs"] == 0
    assert not (store.blobs / sha(blob6)[7:]).exists() and store.verify() == []
    # edu save: the OCI layout carries the very blob, the docker-archive the very tar
    archive.save(store, ["tsp-six:1"], tmp_path / "oci", format="oci")
    assert (tmp_path / "oci/blobs/sha256" / sha(blob6)[7:]).read_bytes() == blob6
    archive.save(store, ["tsp-six:1"], tmp_path / "d.tar")
    with tarfile.open(tmp_path / "d.tar") as tar:
        assert tar.extractfile(f"{sha(data)[7:]}/layer.tar").read() == data
    # and a docker-archive loaded (plain tar layers) keeps no blob, only the layer
    other = Store(tmp_path / "other")
    image, = archive.load(other, tmp_path / "d.tar")
    assert image.manifest["layers"][0]["mediaType"] == OCI_LAYER
    assert list(p.name for p in other.rebuild.glob("*.blob")) == [f"{sha(data)[7:]}.blob"]
    assert sorted(p.name for p in other.blobs.iterdir()) == sorted(
        [image.config_digest[7:], image.manifest_digest[7:]])  # the JSON only
    assert other.read_blob(sha(data)) == data and other.verify() == []


def test_a_damaged_layer_is_said_and_nothing_half_made(tmp_path):
    store = Store(tmp_path / "store")
    data = odd_tar()
    info = add_layer(store, data, sha(data))
    (store.layer_dir(info["diff_id"]) / "etc/hostname").write_bytes(b"LAYER\n")  # same size
    problems = store.verify()
    assert len(problems) == 1 and "is damaged" in problems[0] and info["diff_id"] in problems[0]
    with pytest.raises(StoreError, match="does not hash|corrupt"):
        store.blob_path(sha(data))
    assert not (store.blobs / sha(data)[7:]).exists() and list(store.tmp.iterdir()) == []
    os.unlink(store.layer_dir(info["diff_id"]) / "etc/odd.bin")
    with pytest.raises(StoreError, match="cannot rebuild its blob"):
        store.read_blob(sha(data))


def test_a_blob_another_process_holds_keeps_its_file(tmp_path):
    """Another process's lease names the blob (a push reading it): the file stays until GC
    runs with that lease gone."""
    data = odd_tar()
    store = Store(tmp_path / "store")
    lease = store.pins / "lease-1-tsp.json"
    lease.write_text(json.dumps({"pid": 1, "process": _process(1), "blobs": [sha(data)],
                                 "layers": []}))
    add_layer(store, data, sha(data))
    assert (store.blobs / sha(data)[7:]).exists() and store.has_blob(sha(data))
    store.prune()
    assert (store.blobs / sha(data)[7:]).exists()
    lease.unlink()
    store.prune()  # nothing names the layer now: blob, stub, split and layer all go
    assert list(store.blobs.iterdir()) == [] and list(store.layers.iterdir()) == []
    assert list(store.rebuild.iterdir()) == []


def test_a_blob_past_the_compared_prefix_that_ends_otherwise_stays(tmp_path):
    """GzipCheck compares the first 4 MB, then the blob's trailer with the tar's own CRC-32
    and length: zero padding after a level-1 gzip (or a second member) is not rebuilt, so
    its blob stays, whatever its first 4 MB say."""
    src = tmp_path / "src"
    (src / "app").mkdir(parents=True)
    (src / "app" / "big.bin").write_bytes(os.urandom(tarsplit.GzipCheck.PREFIX + 100_000))
    out = io.BytesIO()
    stats = layers.pack(src, out, compress=True, level=1)
    for tail in (bytes(512), gzip.compress(b"", compresslevel=1, mtime=0)):
        blob = out.getvalue() + tail
        assert gzip.decompress(blob) == gzip.decompress(out.getvalue())
        store = Store(tmp_path / f"store-{len(tail)}")
        info = add_layer(store, blob, stats.diff_id)
        assert "rebuild" not in info and (store.blobs / sha(blob)[7:]).read_bytes() == blob


def test_a_lease_on_a_blob_kept_as_its_layer_keeps_the_layer_through_gc(tmp_path):
    """A pull or build holds a blob the store keeps only as its layer (say, one it found
    with the same content): another process's prune must leave layer, split and stub."""
    data = odd_tar()
    store = Store(tmp_path / "store")
    add_layer(store, data, sha(data))  # nothing names it afterwards
    assert not (store.blobs / sha(data)[7:]).exists() and store.has_blob(sha(data))
    other = Store(tmp_path / "store")
    with store.lease():
        assert store.hold([sha(data)])  # the blob only, as registry._local_blob holds it
        other.prune()
        assert store.read_blob(sha(data)) == data
    other.prune()
    assert list(store.layers.iterdir()) == [] and list(store.rebuild.iterdir()) == []


def test_a_refused_transaction_leaves_a_blob_that_was_there_before(tmp_path):
    """A blob stored before an import whose transaction then fails is still a file after it
    (a blob is dropped for its layer only once the layer is in for good)."""
    data = odd_tar()
    store = Store(tmp_path / "store")
    with store.lease():
        store.put_blob_bytes(data)
        with pytest.raises(RuntimeError):
            with store.transaction():
                store.ensure_layer(sha(data), sha(data))
                raise RuntimeError("the import fails after the layer")
        assert (store.blobs / sha(data)[7:]).read_bytes() == data
        assert store.layer_info(sha(data)) is None
        store.ensure_layer(sha(data), sha(data))  # outside a transaction: dropped at once
    assert not (store.blobs / sha(data)[7:]).exists() and store.read_blob(sha(data)) == data
