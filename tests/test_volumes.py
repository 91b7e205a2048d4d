"""Volumes and edu cp for real: data that outlives containers, bind mounts of host paths,
read-only mounts, and copies in and out of running and stopped containers that a hostile
symlink inside the container cannot turn against the host."""

from __future__ import annotations

import inspect as pyinspect
import json
import os
import stat
import tempfile
import time
from pathlib import Path

import pytest
from conftest import need, running

from edu_runtime import container, mounts, paths, volumes
from edu_runtime.container import Container
from edu_runtime.life import enter
from edu_runtime.life.control import remove_dir
from edu_runtime.life.cp import CopyError, copy_from, copy_to, split_arg
from edu_runtime.safepath import ensure_in_root, open_in_root
from edu_runtime.volumes import VolumeError, parse

WIRED = "volumes" in pyinspect.signature(Container.__init__).parameters


@pytest.fixture
def wired(monkeypatch):
    """Until container.py takes ``volumes=``: the Volumes step right after the special
    mounts, and the record's ``mounts``, exactly as the wiring will do. A no-op after it."""
    if not any(s.name == "volumes" for s in container.plan()):
        plain = container.plan

        def plan():
            steps = plain()
            at = next(i for i, s in enumerate(steps)
                      if isinstance(s, mounts.SpecialFilesystems))
            return steps[:at + 1] + [volumes.Volumes()] + steps[at + 1:]

        monkeypatch.setattr(container, "plan", plan)
    if not WIRED:
        write = Container._write_record

        def write_record(self, *args, **kw):
            write(self, *args, **kw)
            rec = json.loads(self.paths.record.read_text())
            rec["mounts"] = [m.to_record() for m in getattr(self.config, "volumes", [])]
            self.paths.record.write_text(json.dumps(rec, indent=1))

        monkeypatch.setattr(Container, "_write_record", write_record)


def make(image, command, vols, **kw) -> Container:
    """``Container(..., volumes=vols)``, or the same by hand before the wiring."""
    if WIRED:
        return Container(image, command, volumes=vols, **kw)
    c = Container(image, command, **kw)
    c.config.volumes = volumes.resolve(vols, c.id)
    return c


def run(image, command, vols=(), **kw) -> tuple[int, str]:
    """Run a --rm container with ``-v vols``; (exit code, stdout and stderr)."""
    with tempfile.TemporaryFile() as out:
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            code = make(image, command, list(vols), remove=True, **kw).run()
        finally:
            for fd, saved_fd in zip((1, 2), saved, strict=True):
                os.dup2(saved_fd, fd)
                os.close(saved_fd)
        out.seek(0)
        return code, out.read().decode()


@pytest.fixture
def vol_names():
    """Volume names unique to this test; whatever is left of them is removed after it."""
    tag = f"t{os.getpid()}x{time.monotonic_ns() % 10**9}"
    names = [f"{tag}-{i}" for i in range(4)]
    yield names
    for n in names:
        if (volumes.volumes_dir() / n).exists():
            volumes.rm(n)


# ---- -v specs ------------------------------------------------------------------------------

def test_parse_good_specs():
    assert parse("/srv/app:/app") == volumes.Mount("bind", "/srv/app", "/app")
    assert parse("/srv/app/:/app/:ro").read_only
    assert parse("/srv/app:/app:ro").destination == "/app"
    named = parse("data_1.x:/var/lib/db:rw,nocopy")
    assert (named.type, named.name, named.read_only, named.copy_image) == \
        ("volume", "data_1.x", False, False)
    assert named.source == str(volumes.volumes_dir() / "data_1.x" / "_data")
    anon = parse("/scratch")
    assert (anon.type, anon.anonymous, anon.destination) == ("volume", True, "/scratch")


@pytest.mark.parametrize("spec, words", [
    ("./data:/data", "invalid characters for a local volume name"),
    ("data/sub:/data", "If you meant a host directory, use an absolute path"),
    ("~/x:/x", "invalid characters"),
    ("x:/data", "invalid characters"),  # one character is too short, as in Docker
    ("data:relative", "must be absolute"),
    ("/a:/b:ro:extra", "invalid volume specification"),
    (":/data", "invalid volume specification"),
    ("/host:/", "cannot be '/'"),
    ("vol:/proc/sys", "over /proc"),
    ("vol:/data:rx", "invalid mode 'rx'"),
    ("vol:/data:ro,rw", "ro and rw together"),
    ("/host:/data:nocopy", "nocopy is for volumes"),
])
def test_bad_specs_are_sentences(spec, words):
    with pytest.raises(VolumeError, match=words.replace("(", r"\(")):
        parse(spec)


def test_duplicate_mount_point_is_refused():
    with pytest.raises(VolumeError, match="duplicate mount point: /data"):
        volumes.check(["/tmp:/data", "/srv:/data/"])


# ---- volumes in containers -----------------------------------------------------------------

def test_named_volume_outlives_its_container_until_rm(busybox, no_leaks, wired, vol_names):
    name = vol_names[0]
    code, out = run(busybox, ["sh", "-c", "echo kept > /data/note"], [f"{name}:/data"])
    assert code == 0, out
    data = Path(volumes.inspect(name)["Mountpoint"])
    assert (data / "note").read_text() == "kept\n"  # the container is gone, its data is not
    code, out = run(busybox, ["cat", "/data/note"], [f"{name}:/data"])
    assert (code, out) == (0, "kept\n")
    assert name in [v["Name"] for v in volumes.ls()]
    volumes.rm(name)
    assert not data.exists() and name not in [v["Name"] for v in volumes.ls()]
    with pytest.raises(VolumeError, match="no such volume"):
        volumes.inspect(name)


def test_empty_named_volume_is_filled_from_the_image_once(busybox, no_leaks, wired, vol_names):
    filled, skipped = vol_names[:2]
    code, image_passwd = run(busybox, ["cat", "/etc/passwd"])
    code, out = run(busybox, ["sh", "-c", "cat /etc/passwd; rm /etc/group"], [f"{filled}:/etc"])
    assert (code, out) == (0, image_passwd)
    data = Path(volumes.inspect(filled)["Mountpoint"])
    assert (data / "passwd").read_text() == image_passwd and not (data / "group").exists()
    # Not empty any more: the next container sees the volume as it was left. (On a bridge
    # network, /etc/hosts and /etc/resolv.conf are mounted on top, inside it, as in Docker.)
    names = set(run(busybox, ["ls", "/etc"], [f"{filled}:/etc"])[1].split())
    assert "passwd" in names and "group" not in names
    names = set(run(busybox, ["ls", "/etc"], [f"{skipped}:/etc:nocopy"])[1].split())
    assert not names & {"passwd", "group"}


def test_read_only_volume_refuses_writes(busybox, no_leaks, wired, vol_names):
    code, out = run(busybox, ["sh", "-c", "touch /ro/x 2>&1; echo rc=$?; touch /rw/x; "
                              "echo rc=$?; grep -E ' /(ro|rw) ' /proc/self/mountinfo"],
                    [f"{vol_names[0]}:/ro:ro", f"{vol_names[1]}:/rw"])
    assert "Read-only file system" in out and "rc=1" in out and "rc=0" in out
    options = {line.split()[4]: line.split()[5].split(",") for line in out.splitlines()
               if line[:1].isdigit()}
    assert "ro" in options["/ro"] and "rw" in options["/rw"]


def test_bind_mount_of_a_host_dir_and_file(busybox, no_leaks, wired, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "hello").write_text("from the host\n")
    (tmp_path / "app.conf").write_text("x=1\n")
    code, out = run(busybox, ["sh", "-c", "cat /app/hello /etc/app.conf; echo back > "
                              "/app/written; echo no > /etc/app.conf 2>&1; echo rc=$?"],
                    [f"{tmp_path}/src:/app", f"{tmp_path}/app.conf:/etc/app.conf:ro"])
    assert out.startswith("from the host\nx=1\n") and "rc=1" in out, out
    assert (tmp_path / "src" / "written").read_text() == "back\n"  # written through
    assert (tmp_path / "app.conf").read_text() == "x=1\n"


def test_missing_bind_source_is_created_and_said(busybox, no_leaks, wired, tmp_path):
    source = tmp_path / "new" / "dir"
    mount, = volumes.resolve([f"{source}:/data"])
    assert source.is_dir() and "created the missing bind-mount source directory" in mount.note
    assert run(busybox, ["sh", "-c", "echo hi > /data/f"], [f"{source}:/data"])[0] == 0
    assert (source / "f").read_text() == "hi\n"


def test_anonymous_volume_goes_with_a_removed_container(busybox, no_leaks, wired):
    before = {v["Name"] for v in volumes.ls()}
    code, out = run(busybox, ["sh", "-c", "echo x > /scratch/f; ls /scratch"], ["/scratch"])
    assert (code, out) == (0, "f\n")
    assert {v["Name"] for v in volumes.ls()} == before


def test_a_restarted_container_keeps_its_anonymous_volume(busybox, no_leaks, wired):
    command = ["sh", "-c", "echo run >> /scratch/runs"]
    c = make(busybox, command, ["/scratch"])
    try:
        assert c.run() == 0
        again = make(busybox, command, ["/scratch"], container_id=c.id)  # what restart does
        assert again.run() == 0
        mount, = again.config.volumes
        assert mount.anonymous and mount.name == c.config.volumes[0].name
        assert Path(mount.source, "runs").read_text() == "run\nrun\n"
    finally:
        remove_dir(c.paths.dir)
        c.store.unpin(c.id)
    volumes.rm(mount.name)


def test_rm_v_and_prune_take_only_unused_anonymous_volumes(vol_names):
    need(os.access(paths.state_dir().parent, os.W_OK), "the state directory is not writable")
    named = volumes.create(vol_names[0])["Name"]
    anon = volumes.create(anonymous=True)["Name"]
    other = volumes.create(anonymous=True)["Name"]
    assert volumes.inspect(anon)["Labels"] == {volumes.ANONYMOUS_LABEL: ""}
    rec = {"id": "f" * 64, "mounts": [{"Type": "volume", "Name": n} for n in (named, anon)]}
    assert volumes.remove_anonymous_of(rec) == [anon]
    assert other in volumes.prune()
    assert {v["Name"] for v in volumes.ls()} >= {named} and \
        not {anon, other} & {v["Name"] for v in volumes.ls()}


def test_rm_refuses_a_volume_in_use(busybox, no_leaks, wired, vol_names):
    name = vol_names[0]
    c = make(busybox, ["sleep", "60"], [f"{name}:/data"], remove=True)
    c.start()
    try:
        with pytest.raises(VolumeError, match="volume is in use by container " + c.id[:12]):
            volumes.rm(name)
        assert volumes.users(name) == [c.id]
    finally:
        c.kill()
        c.wait()
    volumes.rm(name)  # free once the container is removed


def test_observe_lists_the_volume_mounts(busybox, no_leaks, wired, vol_names, tmp_path):
    c = make(busybox, ["true"], [f"{vol_names[0]}:/data:ro", f"{tmp_path}:/host"],
             remove=True, observe=True)
    assert c.run() == 0
    rec = next(s for s in c.trace.steps if s.name == "volumes")
    assert rec.before == {"volumes": {
        "/data": {"source": vol_names[0], "type": "volume", "mounted": False, "ro": False},
        "/host": {"source": str(tmp_path), "type": "bind", "mounted": False, "ro": False}}}
    assert rec.after["volumes"]["/data"] == {"source": vol_names[0], "type": "volume",
                                             "mounted": True, "ro": True}
    assert rec.after["volumes"]["/host"]["mounted"] is True
    assert ("mount", "bind", "/data") in rec.syscalls


def test_mount_point_is_made_inside_the_root_whatever_the_symlinks(tmp_path):
    """A hostile image: /evil -> / and /up -> ../../../.. must not lead mkdir to the host."""
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("/", root / "evil")
    os.symlink("../../../../..", root / "up")
    os.symlink("/nowhere/at/all", root / "dangling")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        for path, made in (("/evil/made/here", "made/here"), ("/up/tmp/x", "tmp/x")):
            os.close(ensure_in_root(fd, path))
            assert (root / made).is_dir()
        os.close(ensure_in_root(fd, "/evil/etc/conf", directory=False))
        assert (root / "etc" / "conf").is_file()
        assert not Path("/made").exists() and not Path("/etc/conf").exists()
        with pytest.raises(CopyError, match="symbolic link to a path that does not exist"):
            ensure_in_root(fd, "/dangling/x")
    finally:
        os.close(fd)


# ---- edu cp --------------------------------------------------------------------------------

def sh(record, script: str) -> str:
    with tempfile.TemporaryFile() as out:
        code = enter.exec_in(record, ["sh", "-c", script], stdout=out.fileno(),
                             stderr=out.fileno())
        out.seek(0)
        text = out.read().decode()
    assert code == 0, text
    return text


def test_split_arg():
    assert split_arg("web:/etc/passwd") == ("web", "/etc/passwd")
    assert split_arg("web:") == ("web", "/")
    assert split_arg("./a:b") == (None, "./a:b")
    assert split_arg("/tmp/a:b") == (None, "/tmp/a:b")
    assert split_arg("notes.txt") == (None, "notes.txt")


def test_cp_both_ways_keeps_modes(busybox, no_leaks, tmp_path):
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (src / "run.sh").chmod(0o751)
    (src / "sub" / "secret").write_text("s\n")
    (src / "sub" / "secret").chmod(0o600)
    (src / "sub").chmod(0o700)
    os.symlink("../run.sh", src / "sub" / "link")
    with running(busybox) as (c, rec):
        done = copy_to(rec, str(src), "/opt")  # /opt is new: it gets the tree's contents
        assert (done.files, done.dirs, done.links) == (2, 2, 1)
        assert sh(rec, "/opt/run.sh; stat -c '%a %n' /opt/run.sh /opt/sub /opt/sub/secret; "
                  "readlink /opt/sub/link").split("\n")[:5] == [
            "ran", "751 /opt/run.sh", "700 /opt/sub", "600 /opt/sub/secret", "../run.sh"]
        copy_to(rec, str(src / "run.sh"), "/tmp")  # into an existing directory
        assert sh(rec, "cat /tmp/run.sh") == "#!/bin/sh\necho ran\n"
        out = tmp_path / "out"
        out.mkdir()
        copy_from(rec, "/opt", str(out))  # an existing directory: copied into it
        assert stat.S_IMODE((out / "opt" / "run.sh").stat().st_mode) == 0o751
        assert (out / "opt" / "sub" / "secret").read_text() == "s\n"
        assert os.readlink(out / "opt" / "sub" / "link") == "../run.sh"
        copy_from(rec, "/opt/.", str(out / "flat"))  # SRC/. : the contents
        assert sorted(os.listdir(out / "flat")) == ["run.sh", "sub"]
        copy_from(rec, "/etc/passwd", str(out / "pw"))
        assert (out / "pw").read_text().startswith("root:x:0:0")


def test_cp_errors_are_sentences(busybox, no_leaks, tmp_path):
    (tmp_path / "f").write_text("x")
    with running(busybox, read_only=True) as (c, rec):
        with pytest.raises(CopyError, match="could not find container .*:/no/such"):
            copy_from(rec, "/no/such", str(tmp_path))
        with pytest.raises(CopyError, match="directory container .*:/no/such does not exist"):
            copy_to(rec, str(tmp_path / "f"), "/no/such/f")
        with pytest.raises(CopyError, match="cannot copy a directory to a file"):
            copy_from(rec, "/etc", str(tmp_path / "f"))
        with pytest.raises(CopyError, match="destination directory .* does not exist"):
            copy_from(rec, "/etc/passwd", str(tmp_path / "newdir") + "/")
        with pytest.raises(CopyError, match="read-only.*--read-only"):
            copy_to(rec, str(tmp_path / "f"), "/f")


def test_cp_cannot_be_turned_against_the_host(busybox, no_leaks, tmp_path):
    """Symlinks a container makes resolve inside the container, on the way in and out."""
    secret = tmp_path / "host-secret"
    secret.write_text("host only\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "payload").write_text("payload\n")
    with running(busybox) as (c, rec):
        sh(rec, f"ln -s / /etc/x; ln -s ../../../../../.. /tmp/up; "
                f"ln -s {outside}/planted /tmp/link; mkdir -p {outside}")
        # Reading through the links finds the container's files, never the host's.
        for path in (f"/etc/x{secret}", f"/tmp/up{secret}"):
            with pytest.raises(CopyError, match="could not find"):
                copy_from(rec, path, str(tmp_path / "stolen"))
        copy_from(rec, "/etc/x/etc/passwd", str(tmp_path / "passwd"))
        assert "/nonexistent" in (tmp_path / "passwd").read_text()  # busybox's nobody
        # Writing through them lands inside the container.
        copy_to(rec, str(tmp_path / "payload"), f"/etc/x{outside}/via-root-link")
        copy_to(rec, str(tmp_path / "payload"), "/tmp/link")
        assert os.listdir(outside) == []
        assert sh(rec, f"cat {outside}/via-root-link; test -L /tmp/link || cat /tmp/link") \
            == "payload\npayload\n"
        # A symlink copied out stays a symlink: it is not followed on the host.
        copy_from(rec, "/etc/x", str(tmp_path / "x"))
        assert os.readlink(tmp_path / "x") == "/"


def test_cp_out_drops_setuid_and_skips_device_nodes(busybox, no_leaks, tmp_path):
    with running(busybox) as (c, rec):
        sh(rec, "mkdir /tmp/d; cp /bin/busybox /tmp/d/suid; chmod 4755 /tmp/d/suid; "
                "mknod /tmp/d/disk b 8 0; mkfifo /tmp/d/fifo")
        done = copy_from(rec, "/tmp/d", str(tmp_path))
        assert stat.S_IMODE((tmp_path / "d" / "suid").stat().st_mode) == 0o755
        assert sorted(os.listdir(tmp_path / "d")) == ["suid"]
        assert sorted(p.rsplit("/", 1)[1] for p in done.skipped) == ["disk", "fifo"]
        copy_to(rec, str(tmp_path / "d" / "suid"), "/tmp/back")
        assert sh(rec, "stat -c %a /tmp/back").strip() == "755"


def test_cp_with_a_stopped_container_goes_through_its_overlay(busybox, no_leaks, tmp_path):
    (tmp_path / "added").write_text("added later\n")
    c = Container(busybox, ["sh", "-c", "echo made > /made-inside; rm /etc/group"])
    try:
        assert c.run() == 0
        rec = json.loads(c.paths.record.read_text())
        assert rec["status"] == "exited"
        copy_from(rec, "/made-inside", str(tmp_path / "made"))
        assert (tmp_path / "made").read_text() == "made\n"
        with pytest.raises(CopyError, match="could not find"):
            copy_from(rec, "/etc/group", str(tmp_path / "group"))  # its whiteout holds
        copy_to(rec, str(tmp_path / "added"), "/usr/bin/added")  # a directory of the image
        upper = c.paths.upper
        assert (upper / "usr" / "bin" / "added").read_text() == "added later\n"
        assert (upper / "made-inside").exists()
        assert not (upper / "usr" / "bin" / "busybox").exists()  # nothing else copied up
        mountinfo = Path("/proc/self/mountinfo").read_text()
        assert str(c.paths.dir) not in mountinfo  # the detached mount is gone with its fd
    finally:
        remove_dir(c.paths.dir)
        c.store.unpin(c.id)


def test_cp_refuses_a_container_whose_process_is_gone(busybox, no_leaks, tmp_path):
    rec = {"id": "0" * 64, "name": "ghost", "status": "running", "pid": 0, "cgroup": {}}
    with pytest.raises(CopyError, match="its process is gone.*edu prune"):
        copy_from(rec, "/etc", str(tmp_path))


def test_open_in_root_keeps_dotdot_inside(tmp_path):
    (tmp_path / "a").mkdir()
    fd = os.open(tmp_path / "a", os.O_PATH | os.O_DIRECTORY)
    try:
        inner = open_in_root(fd, "/../../..")
        assert os.fstat(inner).st_ino == os.fstat(fd).st_ino
        os.close(inner)
    finally:
        os.close(fd)


def test_an_images_volume_is_an_anonymous_volume(busybox, no_leaks, wired):
    """VOLUME in an image: `docker run` mounts an anonymous volume there, filled from the
    image, so what the container writes is not in its upper dir; --rm takes it away; a -v
    on the same path wins."""
    import copy as copy_

    img = copy_.deepcopy(busybox)
    img.config.setdefault("config", {})["Volumes"] = {"/etc": {}}
    before = {v["Name"] for v in volumes.ls()}
    c = Container(img, ["sh", "-c", "echo new > /etc/written; cat /etc/passwd | head -1"],
                  remove=False, network="none")
    try:
        assert c.config.volume_specs == ["/etc"]
        assert c.run() == 0
        upper = c.paths.upper
        assert not (upper / "etc" / "written").exists()  # in the volume, not the layer
        (made,) = {v["Name"] for v in volumes.ls()} - before
        data = volumes.volumes_dir() / made / "_data"
        assert (data / "written").read_text() == "new\n" and (data / "passwd").exists()
    finally:
        volumes.remove_anonymous(c.config.volumes, c.id)
        remove_dir(c.paths.dir)
    assert {v["Name"] for v in volumes.ls()} == before
    code, _ = run(img, ["true"])  # --rm: the anonymous volume goes with the container
    assert code == 0 and {v["Name"] for v in volumes.ls()} == before
    named = Container(img, ["true"], volumes=["/tmp/edu-not-etc:/etc"], network="none")
    assert named.config.volume_specs == ["/tmp/edu-not-etc:/etc"]  # the -v, once
