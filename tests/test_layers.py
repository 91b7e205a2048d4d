"""Layer tars: unpacked onto the real filesystem, checked with lstat and getxattr, and stacked
with a real overlay mount, so what is tested is what a container will see.

Tars are built here with Python's tarfile (to control every header, hostile ones included) and
with GNU tar (to meet a real tool's choices). Overlay mounts happen in a forked child in a
private mount namespace, so they vanish with it; each test that mounts checks that.
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
import tarfile
import tempfile
import traceback
import uuid
from pathlib import Path

import pytest
from conftest import need

from edu_runtime import kernel, overlay
from edu_runtime.images import layers
from edu_runtime.images.layers import LayerError, Limits

pytestmark = pytest.mark.usefixtures("root")

# A file capability: version 2, cap_net_raw (13) permitted and effective, as `setcap` writes.
CAP_NET_RAW = bytes.fromhex("01000002" "00200000" "00000000" "00000000" "00000000")


# ---- building tars ------------------------------------------------------------------------

def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs) -> tuple:
    """One member: a TarInfo with ``attrs`` set, and its data."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 1_600_000_000
    for key, value in attrs.items():
        setattr(info, key, value)
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    return info, data


def d(name: str, **attrs) -> tuple:
    """A directory member."""
    return entry(name, tarfile.DIRTYPE, **attrs)


def sym(name: str, target: str, **attrs) -> tuple:
    """A symlink member."""
    return entry(name, tarfile.SYMTYPE, linkname=target, **attrs)


def hard(name: str, target: str) -> tuple:
    """A hardlink member."""
    return entry(name, tarfile.LNKTYPE, linkname=target)


def xattrs(**values: bytes) -> dict[str, str]:
    """PAX headers for xattrs, encoded the way tarfile decodes them."""
    return {f"SCHILY.xattr.{k.replace('__', '.')}": v.decode("utf-8", "surrogateescape")
            for k, v in values.items()}


def make_tar(*entries: tuple) -> bytes:
    """A PAX tar of ``entries``, in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def unpack(data: bytes, dest: Path, **kw) -> layers.ExtractStats:
    """Extract the tar bytes ``data`` into ``dest``, made empty first."""
    dest.mkdir(parents=True, exist_ok=True)
    return layers.extract(io.BytesIO(data), dest, **kw)


# ---- looking at trees ---------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, tuple]:
    """Everything a layer promises about each path under ``root`` (not root itself)."""
    out = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            rel = str(path.relative_to(root))
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISREG(kind):
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(kind):
                what = os.readlink(path)
            elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
                what = (os.major(st.st_rdev), os.minor(st.st_rdev))
            else:
                what = None
            attrs = {}
            if stat.S_ISREG(kind) or stat.S_ISDIR(kind):
                attrs = {a: os.getxattr(path, a) for a in sorted(os.listxattr(path))}
            link = None
            if not stat.S_ISDIR(kind) and st.st_nlink > 1:
                link = inodes.setdefault(st.st_ino, rel)  # the first name of the inode
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        st.st_mtime_ns // 10**9, what, attrs, link)
    return out


def in_mount_ns(tmp_path: Path, fn) -> None:
    """Run ``fn()`` in a forked child in a private mount namespace: its mounts die with it."""
    errors = tmp_path / "child-error.txt"

    def child() -> int:
        try:
            kernel.unshare(kernel.CLONE_NEWNS)
            kernel.mount("none", "/", None, kernel.MS_REC | kernel.MS_PRIVATE)
            fn()
            return 0
        except BaseException:  # noqa: B036 - reported to the parent through the file
            errors.write_text(traceback.format_exc())
            return 1

    code = kernel.in_child(child, timeout=60)
    assert code == 0, errors.read_text() if errors.exists() else kernel.errno_name(code)
    leftover = [m["mount_point"] for m in kernel.mountinfo()
                if m["mount_point"].startswith(str(tmp_path))]
    assert leftover == [], "mounts leaked out of the child's namespace"


def need_overlay() -> None:
    """Skip (fail in CI) without overlayfs."""
    need("overlay" in Path("/proc/filesystems").read_text(), "no overlayfs (modprobe overlay)")


def listing(path: Path) -> list[str]:
    """Names in ``path``, sorted."""
    return sorted(os.listdir(path))


# ---- metadata -----------------------------------------------------------------------------

def test_owners_modes_links_xattrs_fifo(tmp_path):
    data = make_tar(
        d("./"),
        d("etc"),
        d("tmp", mode=0o1777),
        d("usr/local/share", mode=0o2775, uid=0, gid=50),
        entry("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n"),
        sym("etc/localtime", "/usr/share/zoneinfo/UTC", uid=7, gid=8, mtime=1_500_000_000),
        entry("bin/ping", data=b"\x7fELF", mode=0o4755,
              pax_headers=xattrs(security__capability=CAP_NET_RAW, user__note=b"hi")),
        entry("bin/newgrp", data=b"x", mode=0o2755, uid=0, gid=42),
        hard("bin/ping6", "bin/ping"),
        entry("home/alice/notes", data=b"mine", uid=1000, gid=1001, mode=0o600),
        entry("run/initctl", tarfile.FIFOTYPE, mode=0o600),
    )
    dest = tmp_path / "layer"
    stats = unpack(data, dest)
    assert (stats.members, stats.bytes, stats.whiteouts, stats.opaque_dirs) == (11, 35, 0, 0)

    assert stat.S_IMODE(os.lstat(dest / "tmp").st_mode) == 0o1777
    usr_share = os.lstat(dest / "usr/local/share")
    assert (stat.S_IMODE(usr_share.st_mode), usr_share.st_gid) == (0o2775, 50)
    # setuid survives chown because chmod comes after it; the capability survives both.
    ping = os.lstat(dest / "bin/ping")
    assert stat.S_IMODE(ping.st_mode) == 0o4755
    assert os.getxattr(dest / "bin/ping", "security.capability") == CAP_NET_RAW
    assert os.getxattr(dest / "bin/ping", "user.note") == b"hi"
    newgrp = os.lstat(dest / "bin/newgrp")
    assert (stat.S_IMODE(newgrp.st_mode), newgrp.st_gid) == (0o2755, 42)
    # A hardlink inside the layer is the same inode.
    assert os.lstat(dest / "bin/ping6").st_ino == ping.st_ino
    assert ping.st_nlink == 2
    notes = os.lstat(dest / "home/alice/notes")
    assert (notes.st_uid, notes.st_gid, stat.S_IMODE(notes.st_mode)) == (1000, 1001, 0o600)
    # An absolute symlink stays a link, with its own owner and mtime (lchown, lutimes).
    link = os.lstat(dest / "etc/localtime")
    assert stat.S_ISLNK(link.st_mode)
    assert os.readlink(dest / "etc/localtime") == "/usr/share/zoneinfo/UTC"
    assert (link.st_uid, link.st_gid, link.st_mtime) == (7, 8, 1_500_000_000)
    assert stat.S_ISFIFO(os.lstat(dest / "run/initctl").st_mode)
    assert os.lstat(dest / "etc/passwd").st_mtime == 1_600_000_000
    # Parents the tar did not list are made 0755, as tar makes them.
    assert stat.S_IMODE(os.lstat(dest / "home/alice").st_mode) == 0o755


def test_directory_metadata_is_applied_last(tmp_path):
    data = make_tar(
        entry("d/f", data=b"1"),
        d("d", mode=0o750, mtime=12345, uid=5, gid=6),  # after its contents
        d("e", mode=0o751, mtime=23456),  # before its contents: still its metadata
        entry("e/f", data=b"2"),
        d("ro", mode=0o555),  # read-only, and still filled
        entry("ro/f", data=b"3"),
        # "p/re" is listed, then removed with p (a symlink replaces it), then made again as a
        # plain parent through it: the listed metadata belonged to the old directory and is
        # not applied to the new one. (A path named twice is refused: test_arc_hostile.)
        d("q"), d("p/re", mode=0o777), sym("p", "q"), entry("p/re/x"),
    )
    dest = tmp_path / "layer"
    unpack(data, dest)
    st = os.lstat(dest / "d")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime, st.st_uid, st.st_gid) == (0o750, 12345, 5, 6)
    st = os.lstat(dest / "e")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o751, 23456)
    assert stat.S_IMODE(os.lstat(dest / "ro").st_mode) == 0o555
    assert (dest / "ro/f").read_bytes() == b"3"
    assert stat.S_IMODE(os.lstat(dest / "q/re").st_mode) == 0o755


def test_whiteouts_and_opaque_dirs_become_overlay_markers(tmp_path):
    data = make_tar(
        d("etc"),
        entry("etc/.wh.motd"),
        d("var/cache"),
        entry("var/cache/.wh..wh..opq"),
        entry("var/cache/new", data=b"n"),
        entry(".wh..wh..plnk"),  # AUFS bookkeeping: ignored
    )
    dest = tmp_path / "layer"
    stats = unpack(data, dest, rootless=False)
    assert (stats.whiteouts, stats.opaque_dirs) == (1, 1)
    st = os.lstat(dest / "etc/motd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert not (dest / "etc/.wh.motd").exists()
    assert os.getxattr(dest / "var/cache", "trusted.overlay.opaque") == b"y"
    assert listing(dest / "var/cache") == ["new"]
    assert listing(dest) == ["etc", "var"]


def test_rootless_markers_use_user_xattrs(tmp_path, monkeypatch):
    data = make_tar(d("a"), entry("a/.wh.gone"), entry("b/.wh..wh..opq"))
    dest = tmp_path / "mknod"
    unpack(data, dest, rootless=True)
    assert os.getxattr(dest / "b", "user.overlay.opaque") == b"y"
    assert stat.S_ISCHR(os.lstat(dest / "a/gone").st_mode)

    # Without mknod (not root, not in a user namespace), the xattr whiteout of Linux 6.7+.
    def no_mknod(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "mknod", no_mknod)
    dest = tmp_path / "xattr"
    stats = unpack(data, dest, rootless=True)
    gone = os.lstat(dest / "a/gone")
    assert stat.S_ISREG(gone.st_mode) and gone.st_size == 0
    assert os.getxattr(dest / "a/gone", "user.overlay.whiteout") == b"y"
    assert os.getxattr(dest / "a", "user.overlay.opaque") == b"x"  # "holds xattr whiteouts"
    assert stats.whiteouts == 1


NOBODY = 65534


@pytest.mark.parametrize("userns", [False, True], ids=["plain-user", "user-namespace"])
def test_rootless_for_real(userns):
    """Unpack as ``nobody``: whiteouts are still 0:0 devices (any user may make that one since
    Linux 5.8), markers are user.overlay.*, and owners outside our ids are skipped."""
    data = make_tar(d("a"), entry("a/.wh.gone"), entry("b/.wh..wh..opq"),
                    entry("f", data=b"x", uid=1000, gid=1000))
    base = Path(tempfile.mkdtemp(prefix="edu-test-rootless-"))  # tmp_path is root's only
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
                kernel.prctl(kernel.PR_SET_DUMPABLE, 1)  # setuid cleared it; uid_map needs it
                try:
                    kernel.unshare(kernel.CLONE_NEWUSER)
                except OSError as exc:
                    report.write_text(json.dumps({"no_userns": exc.strerror}))
                    return 0
                Path("/proc/self/setgroups").write_text("deny")
                Path("/proc/self/uid_map").write_text(f"0 {NOBODY} 1")
                Path("/proc/self/gid_map").write_text(f"0 {NOBODY} 1")
            stats = layers.extract(io.BytesIO(data), dest)
            report.write_text(json.dumps({"skipped": stats.skipped,
                                          "whiteouts": stats.whiteouts}))
            return 0

        assert kernel.in_child(child, timeout=30) == 0
        result = json.loads(report.read_text())
        need("no_userns" not in result, f"no user namespaces: {result.get('no_userns')}")
        gone = os.lstat(dest / "a/gone")
        assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
        assert os.getxattr(dest / "b", "user.overlay.opaque") == b"y"
        assert os.listxattr(dest / "b") == ["user.overlay.opaque"]  # no trusted.* as nobody
        assert os.lstat(dest / "f").st_uid == NOBODY
        # In the namespace only uid 1000 (unmapped) fails; outside it all three chowns do.
        assert result == {"whiteouts": 1, "skipped": 1 if userns else 3}
    finally:
        shutil.rmtree(base)


def test_rootless_skips_owners_it_cannot_set(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chown", refuse)
    stats = unpack(make_tar(entry("f", data=b"x", uid=1000)), tmp_path / "a", rootless=True)
    assert stats.skipped == 1
    with pytest.raises(LayerError, match="'f'"):
        unpack(make_tar(entry("f", data=b"x", uid=1000)), tmp_path / "b", rootless=False)


def test_parent_symlinks_resolve_inside_the_layer(tmp_path):
    data = make_tar(d("x"), sym("etc", "/x"), entry("etc/passwd", data=b"inside"))
    dest = tmp_path / "layer"
    unpack(data, dest)
    assert (dest / "x/passwd").read_bytes() == b"inside"
    assert os.readlink(dest / "etc") == "/x"


def test_gnu_tar_archives(tmp_path):
    need(shutil.which("tar") is not None, "GNU tar is not installed")
    src = tmp_path / "src"
    deep = src / ("long-directory-name-" * 4) / ("and-a-long-file-name-" * 4)
    deep.parent.mkdir(parents=True)
    deep.write_bytes(b"deep")
    (src / "bin").mkdir()
    (src / "bin/tool").write_bytes(b"tool")
    os.chmod(src / "bin/tool", 0o4711)
    os.setxattr(src / "bin/tool", "user.origin", b"gnu")
    os.link(src / "bin/tool", src / "bin/tool2")
    os.symlink("/usr/share/zoneinfo/UTC", src / "localtime")
    os.chown(src / "bin", 1234, 5678)
    for fmt in ("posix", "gnu"):
        archive = tmp_path / f"{fmt}.tar"
        # --xattrs would switch GNU tar to posix (PAX) format; gnu uses ././@LongLink.
        flags = ["--xattrs", "--xattrs-include=user.*"] if fmt == "posix" else []
        subprocess.run(["tar", "-C", str(src), f"--format={fmt}", *flags, "--numeric-owner",
                        "-cf", str(archive), "."], check=True)
        assert (b"././@LongLink" in archive.read_bytes()) == (fmt == "gnu")
        dest = tmp_path / fmt
        dest.mkdir()
        layers.extract(archive, dest)
        want = snapshot(src)
        if fmt == "gnu":
            want = {k: v[:6] + ({},) + v[7:] for k, v in want.items()}
        assert snapshot(dest) == want


# ---- digests ------------------------------------------------------------------------------

def test_digests_cover_the_raw_and_the_uncompressed_bytes(tmp_path):
    tar = make_tar(entry("a", data=b"a" * 5000), d("b"))
    blob = gzip.compress(tar)
    stats = unpack(blob, tmp_path / "gz")
    assert stats.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert stats.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    (tmp_path / "layer.tar").write_bytes(tar)
    (tmp_path / "plain").mkdir()
    stats = layers.extract(tmp_path / "layer.tar", tmp_path / "plain")  # a path works too
    assert stats.diff_id == stats.digest == "sha256:" + hashlib.sha256(tar).hexdigest()
    # Docker's empty layer: 1024 zero bytes, with its well-known diff_id.
    stats = unpack(bytes(1024), tmp_path / "empty")
    assert stats.diff_id == ("sha256:5f70bf18a086007016e948b04aed3b82"
                             "103a36bea41755b6cddfaf10ace3c6ef")


def test_unsupported_or_damaged_streams_are_refused(tmp_path):
    with pytest.raises(LayerError, match="zstd"):
        unpack(b"\x28\xb5\x2f\xfd" + bytes(100), tmp_path / "zstd")
    tar = bytearray(make_tar(entry("a", data=b"1"), entry("b", data=b"2"), entry("c")))
    second = tar.index(b"b\0") + 148  # the checksum field of member b's header
    tar[second:second + 6] = b"777777"
    with pytest.raises(LayerError, match="corrupt"):
        unpack(bytes(tar), tmp_path / "bad")
    with pytest.raises(LayerError, match="not a valid tar"):
        unpack(gzip.compress(bytes(tar))[:-20], tmp_path / "truncated")
    (tmp_path / "full").mkdir()
    (tmp_path / "full/x").touch()
    with pytest.raises(LayerError, match="not empty"):
        layers.extract(io.BytesIO(make_tar()), tmp_path / "full")



def test_gzip_members_and_padding_read_as_gzip_reads_them(tmp_path):
    """The blob is gunzipped in a thread of its own, by zlib: a gzip of several members (as
    pigz and concatenation make), zero padding after it, and a big member (more than one
    chunk) unpack as gzip.GzipFile reads them; garbage after the end is refused."""
    big = os.urandom(3 << 20)
    tar = make_tar(d("srv"), entry("srv/big", data=big), entry("srv/small", data=b"s\n"),
                   sym("srv/link", "small"))
    blob = gzip.compress(tar[:5000], mtime=0) + gzip.compress(tar[5000:], mtime=0) + bytes(700)
    assert gzip.decompress(blob) == tar
    stats = unpack(blob, tmp_path / "members")
    assert stats.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert stats.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert (tmp_path / "members/srv/big").read_bytes() == big
    assert os.readlink(tmp_path / "members/srv/link") == "small"
    with pytest.raises(LayerError, match="not a valid tar"):
        unpack(gzip.compress(tar, mtime=0) + b"PK\3\4 not gzip", tmp_path / "garbage")


def test_a_refused_layer_stops_its_gunzip_thread(tmp_path):
    """A member refused half-way through a blob many chunks long: extract raises at once,
    and the thread that was gunzipping ahead is gone, with nothing left to read it."""
    import threading

    before = threading.active_count()
    tar = make_tar(*(entry(f"f{i}", data=os.urandom(1 << 20)) for i in range(12)),
                   entry("../evil", data=b"x"), *(entry(f"g{i}", data=os.urandom(1 << 20))
                                                   for i in range(12)))
    with pytest.raises(LayerError, match="escapes the layer root"):
        unpack(gzip.compress(tar, 1), tmp_path / "refused")
    assert threading.active_count() == before
    assert (tmp_path / "refused/f11").stat().st_size == 1 << 20


def test_a_directory_replaced_between_members_is_resolved_again(tmp_path, outside):
    """Files of one directory in a row reuse its resolved fd; a member that replaces that
    directory (made implicitly for them) with a symlink, here one leaving the layer, is
    followed inside the layer, as if every member were resolved anew."""
    inside = str(outside).lstrip("/")  # where the symlink lands, resolved in the layer
    tar = make_tar(entry(f"{inside}/kept", data=b"k"), entry("a/one", data=b"1"),
                   entry("a/two", data=b"2"), sym("a", str(outside)),
                   entry("a/three", data=b"3"), d("c"), entry("b/x", data=b"x"),
                   sym("b", "c"), entry("b/y", data=b"y"))
    unpack(tar, tmp_path / "layer")
    root = tmp_path / "layer"
    assert os.readlink(root / "a") == str(outside)
    assert sorted(p.name for p in (root / inside).iterdir()) == ["kept", "three"]
    assert os.readlink(root / "b") == "c"
    assert sorted(p.name for p in (root / "c").iterdir()) == ["y"]


# ---- hostile layers -----------------------------------------------------------------------

HOSTILE = {
    "dotdot": ([entry("../evil", data=b"x")], "'../evil' escapes the layer root"),
    "absolute": ([entry("/abs", data=b"x")], "'/abs' is an absolute path"),
    "inner-dotdot": ([entry("a/../../evil", data=b"x")], "'a/../../evil' escapes"),
    "hardlink-absolute": ([hard("passwd", "/etc/passwd")], "'passwd'"),
    "hardlink-dotdot": ([hard("passwd", "../../etc/passwd")], "'passwd'"),
    "hardlink-non-member": ([hard("shadow", "etc/shadow")], "not an earlier file"),
    "hardlink-via-symlink": ([sym("l", "/etc"), hard("h", "l/passwd")], "'h'"),
    "block-device": ([entry("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0)],
                     "'dev/sda' is a block device (8:0)"),
    "char-device": ([entry("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3)],
                    "'dev/null' is a character device (1:3)"),
    "dangling-parent": ([sym("etc", "/nowhere"), entry("etc/passwd", data=b"x")],
                        "'etc' in this layer is a symlink"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_members_are_refused(tmp_path, case):
    entries, message = HOSTILE[case]
    outside = tmp_path / "outside"
    dest = tmp_path / "deep/er/layer"
    with pytest.raises(LayerError) as err:
        unpack(make_tar(*entries), dest)
    assert message in str(err.value)
    assert dest.is_dir()  # left for the caller (the store) to delete
    assert not outside.exists() and not (tmp_path / "evil").exists()
    assert not (tmp_path / "deep/evil").exists()


@pytest.mark.parametrize("limits, entries, message", [
    (Limits(max_member_bytes=10), [entry("big", data=b"x" * 11)], "'big' is 11 bytes"),
    (Limits(max_total_bytes=10), [entry("a", data=b"x" * 6), entry("b", data=b"x" * 6)],
     "larger than 10 bytes (reached at member 'b')"),
    (Limits(max_members=3), [entry(n) for n in "abcd"], "more than 3 members (reached at 'd')"),
], ids=["member", "total", "count"])
def test_limits(tmp_path, limits, entries, message):
    with pytest.raises(LayerError) as err:
        unpack(make_tar(*entries), tmp_path / "layer", limits=limits)
    assert message in str(err.value)


@pytest.fixture
def outside(tmp_path) -> Path:
    """A directory beside the layer holding one file: nothing may change it."""
    path = tmp_path / "outside"
    path.mkdir(mode=0o700)
    (path / "xxx").write_text("original")
    yield path
    assert (path / "xxx").read_text() == "original"
    assert sorted(p.name for p in path.iterdir()) == ["xxx"]
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o700


def test_parent_symlinks_cannot_leave_the_layer(tmp_path, outside):
    dest = tmp_path / "layer"
    in_real_root = Path("/", f"edu-test-evil-{uuid.uuid4().hex}")
    up_name = f"edu-test-up-{uuid.uuid4().hex}"
    naive_up = Path(os.path.normpath(dest / "../../..")) / up_name  # where `up/` would go
    try:
        unpack(make_tar(
            # `link -> /` then `link/NAME`: resolved inside the layer, never in the real /.
            sym("link", "/"), entry(f"link/{in_real_root.name}", data=b"evil"),
            # `up -> ../../..` then `up/NAME`: ".." stops at the layer root.
            sym("up", "../../.."), entry(f"up/{up_name}", data=b"evil"),
            sym("parent", ".."), entry("parent/outside/xxx", data=b"evil"),
        ), dest)
        assert not in_real_root.exists() and not naive_up.exists()
    finally:
        for path in (in_real_root, naive_up):  # only if the extractor is broken
            if path.exists():
                path.unlink()
    assert (dest / in_real_root.name).read_bytes() == b"evil"
    assert (dest / up_name).read_bytes() == b"evil"
    assert (dest / "outside/xxx").read_bytes() == b"evil"


def test_a_file_never_writes_through_a_symlink(tmp_path, outside):
    # A second entry for the symlink's path is refused (a path named twice, as Docker does);
    # `outside` checks that nothing was written through it either way.
    dest = tmp_path / "layer"
    with pytest.raises(LayerError, match="'a' appears twice"):
        unpack(make_tar(sym("a", str(outside / "xxx")), entry("a", data=b"replaced")), dest)
    assert os.readlink(dest / "a") == str(outside / "xxx")


def test_hardlink_to_a_symlink_links_the_symlink(tmp_path, outside):
    # The target is a sentinel file, not /etc/passwd: a broken extractor must not break CI.
    dest = tmp_path / "layer"
    target = str(outside / "xxx")
    unpack(make_tar(sym("s", target), hard("h", "s")), dest)
    assert os.readlink(dest / "s") == target and os.readlink(dest / "h") == target
    assert os.lstat(dest / "s").st_ino == os.lstat(dest / "h").st_ino
    with pytest.raises(LayerError, match="'h' appears twice"):
        unpack(make_tar(sym("s", target), hard("h", "s"), entry("h", data=b"evil")),
               tmp_path / "again")


def test_directory_metadata_never_lands_outside(tmp_path, outside):
    # The directory's metadata is applied at the end, when "later" (made for later/sub) has
    # become a symlink to outside.
    dest = tmp_path / "layer"
    unpack(make_tar(d("later/sub", mode=0o777), sym("later", str(outside))), dest)
    assert os.readlink(dest / "later") == str(outside)


# ---- overlay ------------------------------------------------------------------------------

def two_layers(tmp_path: Path, **kw) -> tuple[Path, Path]:
    """A base layer and one that deletes a file and replaces a directory's contents."""
    base = make_tar(
        entry("a", data=b"a"), entry("b", data=b"b"),
        d("d"), entry("d/x", data=b"x"), entry("d/y", data=b"y"),
        d("keep"), entry("keep/k", data=b"k"), entry("keep/gone", data=b"g"),
    )
    top = make_tar(
        entry(".wh.a"), d("keep"), entry("keep/.wh.gone"),
        d("d"), entry("d/.wh..wh..opq"), entry("d/new", data=b"new"),
    )
    lower, upper = tmp_path / "l1", tmp_path / "l2"
    unpack(base, lower, **kw)
    unpack(top, upper, **kw)
    return lower, upper


def merged_view(tmp_path: Path, lowers: list[Path], userxattr: bool) -> dict[str, list[str]]:
    """Mount ``lowers`` (top first) read-only and list what a container would see."""
    merged = tmp_path / "merged"
    merged.mkdir()
    result = tmp_path / "view.json"
    opts = "lowerdir=" + ":".join(str(p) for p in lowers) + (",userxattr" if userxattr else "")

    def look() -> None:
        kernel.mount("overlay", str(merged), "overlay", kernel.MS_RDONLY, opts)
        view = {"/": listing(merged), "d": listing(merged / "d"),
                "keep": listing(merged / "keep")}
        result.write_text(json.dumps(view))

    in_mount_ns(tmp_path, look)
    return json.loads(result.read_text())


@pytest.mark.parametrize("mode", ["root", "rootless-mknod", "rootless-xattr-whiteouts"])
def test_layers_stack_as_a_real_overlay(tmp_path, monkeypatch, mode):
    need_overlay()
    if mode == "rootless-xattr-whiteouts":
        def no_mknod(*args, **kwargs):
            raise PermissionError(1, "Operation not permitted")
        monkeypatch.setattr(os, "mknod", no_mknod)
    rootless = mode != "root"
    lower, upper = two_layers(tmp_path, rootless=rootless)
    view = merged_view(tmp_path, [upper, lower], userxattr=rootless)
    assert view == {"/": ["b", "d", "keep"], "d": ["new"], "keep": ["k"]}


def test_pack_an_overlay_upper_dir(tmp_path):
    need_overlay()
    base = tmp_path / "base"
    unpack(make_tar(
        entry("file", data=b"f"), entry("other", data=b"o"), entry("stays", data=b"s"),
        d("dir"), entry("dir/old", data=b"old"), d("dir/sub"), entry("dir/sub/x", data=b"x"),
    ), base)
    rw, merged = tmp_path / "rw", tmp_path / "merged"
    for p in (rw / "upper", rw / "work", merged):
        p.mkdir(parents=True)

    def change() -> None:
        opts = overlay.mount_options([base], rw / "upper", rw / "work", rootless=False)
        kernel.mount("overlay", str(merged), "overlay", 0, opts)
        (merged / "file").unlink()
        (merged / "other").unlink()
        shutil.rmtree(merged / "dir")
        (merged / "dir").mkdir()
        (merged / "dir/new").write_bytes(b"new")

    in_mount_ns(tmp_path, change)
    out = io.BytesIO()
    stats = layers.pack(rw / "upper", out, upper=True)
    names = tarfile.open(fileobj=io.BytesIO(out.getvalue())).getnames()
    assert names == [".wh.file", ".wh.other", "dir", "dir/.wh..wh..opq", "dir/new"]
    assert stats.members == 5 and stats.bytes == 3

    # The packed change, stacked on the base, shows what the container saw.
    top = tmp_path / "top"
    unpack(out.getvalue(), top)
    view_dir = tmp_path / "view"
    view_dir.mkdir()
    result = view_dir / "view.json"

    def look() -> None:
        kernel.mount("overlay", str(merged), "overlay", kernel.MS_RDONLY,
                     f"lowerdir={top}:{base}")
        result.write_text(json.dumps([listing(merged), listing(merged / "dir")]))

    in_mount_ns(tmp_path, look)
    assert json.loads(result.read_text()) == [["dir", "stays"], ["new"]]


# ---- pack ---------------------------------------------------------------------------------

RICH = [
    d("etc"), entry("etc/passwd", data=b"root:x:0:0\n"), entry("etc/.wh.motd"),
    sym("etc/localtime", "/usr/share/zoneinfo/UTC", uid=3, gid=4),
    d("tmp", mode=0o1777), d("srv", mode=0o2750, uid=33, gid=33),
    entry("bin/ping", data=b"\x7fELF", mode=0o4755,
          pax_headers=xattrs(security__capability=CAP_NET_RAW, user__x=b"\xff\x00bin")),
    hard("bin/ping6", "bin/ping"),
    d("var/lib/apt"), entry("var/lib/apt/.wh..wh..opq"), entry("var/lib/apt/lists", data=b"l"),
    entry("run/fifo", tarfile.FIFOTYPE, mode=0o620, uid=1, gid=2),
    entry("home/u/" + "n" * 150, data=b"long name", uid=1000, gid=1000),
    d("ro", mode=0o500), entry("ro/f", data=b"r", mode=0o400),
]


def test_pack_round_trip_is_exact_and_deterministic(tmp_path):
    first = tmp_path / "first"
    unpack(make_tar(*RICH), first)
    blobs = []
    for _ in range(2):
        out = io.BytesIO()
        stats = layers.pack(first, out, upper=True)
        blobs.append(out.getvalue())
    assert blobs[0] == blobs[1]
    assert stats.diff_id == stats.digest == "sha256:" + hashlib.sha256(blobs[0]).hexdigest()
    assert stats.size == len(blobs[0])

    members = tarfile.open(fileobj=io.BytesIO(blobs[0])).getmembers()
    names = [m.name for m in members]
    assert names[:3] == ["bin", "bin/ping", "bin/ping6"]  # sorted, no "./", dirs first
    assert "etc/.wh.motd" in names and "var/lib/apt/.wh..wh..opq" in names
    assert all(m.uname == m.gname == "" for m in members)
    ping6 = members[names.index("bin/ping6")]
    assert ping6.islnk() and ping6.linkname == "bin/ping"

    second = tmp_path / "second"
    again = unpack(blobs[0], second)
    assert (again.whiteouts, again.opaque_dirs, again.bytes) == (1, 1, stats.bytes)
    assert snapshot(second) == snapshot(first)


def test_pack_gzip_is_deterministic_and_digests_match(tmp_path):
    src = tmp_path / "src"
    unpack(make_tar(*RICH), src)
    plain, gz1, gz2 = io.BytesIO(), io.BytesIO(), io.BytesIO()
    p = layers.pack(src, plain)
    g = layers.pack(src, gz1, compress=True)
    layers.pack(src, gz2, compress=True)
    assert gz1.getvalue() == gz2.getvalue()
    assert gzip.decompress(gz1.getvalue()) == plain.getvalue()
    assert g.diff_id == p.diff_id == "sha256:" + hashlib.sha256(plain.getvalue()).hexdigest()
    assert g.digest == "sha256:" + hashlib.sha256(gz1.getvalue()).hexdigest()
    assert g.size == len(gz1.getvalue())
    # Not an upper dir: overlay markers are not translated, and never leak as xattrs.
    members = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(plain.getvalue()))}
    assert members["etc/motd"].ischr() and "etc/.wh.motd" not in members
    assert not any("overlay" in k for m in members.values() for k in m.pax_headers)
    back = unpack(gz1.getvalue(), tmp_path / "back")
    assert back.diff_id == p.diff_id and back.whiteouts == 1
