"""`edu build` as a real student (rootless): WORKDIR, COPY, COPY --chown, ADD of a local tar
and RUN make the same layers as the same build done as root, except where one mapped uid
cannot hold an owner (COPY --chown to another user, an archive's owners): those files are
root's, and the build says so for --chown. The student then runs the image."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
from conftest import need

DOCKERFILE = """\
FROM busybox
WORKDIR /app/work
COPY a.txt .
RUN mkdir -p /srv/old && echo stale > /srv/old/stale && echo gone > /srv/gone
RUN rm -rf /srv/old /srv/gone /bin/vi && mkdir /srv/old && echo new > /srv/old/new
COPY --chown=root:root conf/ /srv/old/
COPY --chown=1000:1000 data /data/
ADD arch.tar /opt/
RUN echo ran > /app/ran && chmod 640 /app/work/a.txt
CMD ["cat", "/app/work/a.txt"]
"""

#: What root's build gives other owners than a rootless one can (one uid is mapped: root).
OTHER_OWNERS = {"data/": (1000, 1000), "opt/t/": (33, 44)}


def _context(where: Path, uid: int, gid: int) -> Path:
    ctx = where / f"ctx-{uuid.uuid4().hex[:8]}"
    # conf/stale is a directory: copied where a hidden layer has a file of that name, it
    # works only if the build's mount honours the opaque directory above that layer.
    (ctx / "conf/stale").mkdir(parents=True)
    (ctx / "conf/stale/x").write_text("x\n")
    (ctx / "data/sub").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "a.txt").write_text("hello from COPY\n")
    (ctx / "conf/app.conf").write_text("key=value\n")
    (ctx / "data/sub/b").write_text("data\n")
    os.chmod(ctx / "data/sub/b", 0o600)
    os.chmod(ctx / "conf/app.conf", 0o644)
    os.symlink("sub/b", ctx / "data/link")
    # A tar whose members have their own owners, a setuid file and a 0750 directory.
    members = io.BytesIO()
    with tarfile.open(fileobj=members, mode="w") as tar:
        d = tarfile.TarInfo("t")
        d.type, d.mode, d.uid, d.gid, d.mtime = tarfile.DIRTYPE, 0o750, 33, 44, 1_600_000_000
        tar.addfile(d)
        body = b"in the tar\n"
        f = tarfile.TarInfo("t/in")
        f.mode, f.uid, f.gid, f.mtime, f.size = 0o4755, 33, 44, 1_600_000_000, len(body)
        tar.addfile(f, io.BytesIO(body))
    (ctx / "arch.tar").write_bytes(members.getvalue())
    subprocess.run(["chown", "-R", f"{uid}:{gid}", str(ctx)], check=True)
    return ctx


def _layers(archive: Path) -> list[dict[str, tuple]]:
    """Each layer of a docker-archive: member name -> (type, mode, uid, gid, link, sha256);
    mtimes left out (a RUN's files get the time they were made)."""
    out = []
    with tarfile.open(archive) as outer:
        manifest = json.loads(outer.extractfile("manifest.json").read())
        for path in manifest[0]["Layers"]:
            members = {}
            with tarfile.open(fileobj=outer.extractfile(path), mode="r:*") as layer:
                for m in layer:
                    data = layer.extractfile(m).read() if m.isfile() else b""
                    members[m.name] = (m.type, m.mode, m.uid, m.gid, m.linkname,
                                       hashlib.sha256(data).hexdigest())
            out.append(members)
    return out


def _as_rootless(members: dict[str, tuple]) -> dict[str, tuple]:
    """Root's layer as one mapped uid can hold it: the other owners become root's."""
    fixed = {}
    for name, (kind, mode, uid, gid, link, digest) in members.items():
        if any((name + "/").startswith(prefix) for prefix in OTHER_OWNERS):
            uid = gid = 0
        fixed[name] = (kind, mode, uid, gid, link, digest)
    return fixed


@pytest.fixture
def root_edu(python, busybox):
    """``edu ...`` as root; the images it tagged are removed afterwards."""
    tags = []

    def run(*argv):
        out = subprocess.run([python, "-m", "edu_cli.main", *argv], capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        if argv[0] == "build":
            tags.append(argv[argv.index("-t") + 1])
        return out
    yield run
    for tag in tags:
        subprocess.run([python, "-m", "edu_cli.main", "rmi", "-f", tag], capture_output=True)


def test_rootless_build_with_copy_add_workdir_and_run(student, root_edu, tmp_path):
    need(os.path.exists("/proc/self/ns/user"), "user namespaces")
    boot = student.edu("bootstrap", "busybox")
    assert boot.returncode == 0, boot.stderr
    ctx = _context(student.home, student.uid, student.gid)
    tag = f"edu-test-rootless-{uuid.uuid4().hex[:8]}"
    saved = student.home / f"{tag}.tar"
    try:
        built = student.edu("build", "--network", "none", "-t", tag, str(ctx))
        assert built.returncode == 0, built.stdout + built.stderr
        assert "Traceback" not in built.stderr
        assert f"Successfully tagged {tag}:latest" in built.stdout
        # What one mapped uid cannot hold is said, not silently dropped.
        assert "[WARNING]: COPY --chown=1000:1000" in built.stdout
        assert "[WARNING]" not in built.stdout.replace("[WARNING]: COPY --chown=1000:1000", "")

        # The student runs what they built: the merged files are what the Dockerfile says,
        # but for ADD's setuid file of 33:44: the student's unpack could not give it that
        # owner, so its setuid bit was dropped on disk (a setuid-*student* file on the host
        # otherwise: images/layers.py); the layer still records the Dockerfile's mode.
        shown = student.edu("run", "--rm", "--network", "none", tag, "sh", "-c",
                            "cat /app/work/a.txt /app/ran; ls /srv/old | xargs; "
                            "ls /srv/gone /bin/vi 2>&1 | wc -l; stat -c '%a %u:%g' /opt/t; "
                            "stat -c '%a %u:%g %Y' /opt/t/in /data/sub/b /srv/old/app.conf; "
                            "readlink /data/link; pwd")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines() == [
            "hello from COPY", "ran", "app.conf new stale", "2",
            "750 0:0", "755 0:0 1600000000", "600 0:0 "
            + str(int(os.stat(ctx / "data/sub/b").st_mtime)),
            "644 0:0 " + str(int(os.stat(ctx / "conf/app.conf").st_mtime)),
            "sub/b", "/app/work"]
        assert student.edu("run", "--rm", "--network", "none", tag).stdout == \
            "hello from COPY\n"

        # The same build as root: layer for layer the same files, modes, owners, whiteouts
        # and opaque directories, but for the owners one mapped uid cannot hold.
        assert student.edu("save", "-o", str(saved), tag).returncode == 0
        root_tag = f"{tag}-root"
        root_edu("build", "--no-cache", "--network", "none", "-t", root_tag, str(ctx))
        mine = _layers(saved)
        saved.unlink()
        root_edu("save", "-o", str(tmp_path / "root.tar"), root_tag)
        theirs = _layers(tmp_path / "root.tar")
        assert len(mine) == len(theirs) == 9  # busybox and a layer for each step but CMD
        for layer in theirs:
            assert all(m[2:4] == (0, 0) for name, m in layer.items()
                       if not any((name + "/").startswith(p) for p in OTHER_OWNERS))
        assert [_as_rootless(layer) for layer in theirs] == mine
        # What differs, exactly: root could give COPY --chown's and the archive's owners.
        owners = {name: m[2:4] for layer in theirs for name, m in layer.items()}
        assert owners["data/sub/b"] == (1000, 1000) and owners["opt/t/in"] == (33, 44)
        # The RUN that deleted files made whiteouts, and the directory it replaced is opaque.
        assert {"srv/.wh.gone", "bin/.wh.vi", "srv/old/.wh..wh..opq"} <= set(mine[4])
    finally:
        student.edu("rmi", "-f", tag)
        shutil.rmtree(ctx, ignore_errors=True)
        saved.unlink(missing_ok=True)
