"""A classroom's shared base images (edu_runtime/images/shared.py), with a real student.

Root shares debian and busybox into a shared directory (``edu image share``); a fresh
rootless student who lacks them gets them from there on ``edu run``, ``edu build`` FROM and
``edu pull``, told so in one line; in their container ``/bin/sh`` is uid 0, and apt-get
installs a package in a RUN step of their build (apt's sandbox user cannot exist in their
one-uid namespace: rootfs.apt_layer). Root-owned layers used in place would show as
``nobody`` to them (why the blobs are copied). A hostile or stale shared store (a student
can write to it, a blob is missing or does not hash to its name) gives one sentence and
leaves the student's store as it was. Timing is in bench/shared_images.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest
from conftest import need
from shr_students import shared_dir, students

from edu_runtime.images import shared
from edu_runtime.images.store import Store, StoreError


@pytest.fixture(scope="module")
def shared_images(busybox, python):
    """debian:12 and busybox shared by root (``edu image share``) into a temp shared dir."""
    need(Store().images() and any("docker.io/library/debian:12" in i.tags
                                  for i in Store().images()),
         "root's store has debian:12 ('make test' bootstraps it: edu bootstrap debian)")
    with shared_dir() as where:
        out = subprocess.run([python, "-m", "edu_cli.main", "image", "share", "debian:12",
                              "busybox"], capture_output=True, text=True,
                             env={**os.environ, "EDU_SHARED_DIR": str(where)})
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("Shared debian:12, debian:bookworm, debian:latest")
        yield where


def test_a_student_takes_shared_images_runs_them_as_root_and_apt_installs(shared_images):
    where = shared_images
    with students("a") as (ann,):
        env = {"EDU_SHARED_DIR": str(where)}
        listed = ann.edu("image", "share", "--list", env=env)
        assert listed.returncode == 0 and "debian:12" in listed.stdout, listed.stderr

        ran = ann.edu("run", "--rm", "--network", "none", "debian", "stat", "-c", "%u",
                      "/bin/sh", env=env)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == "0\n"
        assert (f"Unable to find image 'debian' locally: copying it from this machine's "
                f"shared images ({where})") in ran.stderr

        pulled = ann.edu("pull", "busybox", env=env)
        assert pulled.returncode == 0, pulled.stderr
        assert f"Copied busybox:latest from this machine's shared images ({where})" in pulled.stdout

        # A root-owned file is nobody's in the student's one-uid user namespace: the reason
        # the shared layers are not used in place.
        seen = ann.run(["unshare", "-r", "stat", "-c", "%u", str(where / "index.json")])
        assert seen.stdout == "65534\n", seen.stderr

        ctx = ann.home / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(
            "FROM debian:bookworm\n"
            "RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends hello"
            " >/dev/null && hello && stat -c %u /usr/bin/hello\n")
        subprocess.run(["chown", "-R", f"{ann.uid}:{ann.gid}", str(ctx)], check=True)
        # Through pasta, the student's way out (and networks.holder's INVALID_DROP).
        built = ann.edu("build", "-t", "shr-apt", str(ctx), env=env)
        assert built.returncode == 0, built.stdout + built.stderr
        assert "copying it from this machine's shared images" in built.stdout
        assert "Hello, world!\n0\n" in built.stdout
        assert "setgroups" not in built.stdout
        # The apt setting is a layer of its own, not in the image the build made.
        layers = ann.edu("run", "--rm", "--network", "none", "shr-apt", "sh", "-c",
                         "hello && cat /etc/apt/apt.conf.d/00edu-rootless | tail -1")
        assert layers.stdout == 'Hello, world!\nAPT::Sandbox::User "root";\n', layers.stderr
        saved = ann.edu("save", "-o", str(ann.home / "apt.tar"), "shr-apt")
        assert saved.returncode == 0, saved.stderr
        listing = subprocess.run(["tar", "-xOf", str(ann.home / "apt.tar"), "--wildcards",
                                  "*.tar"], capture_output=True)
        assert b"00edu-rootless" not in listing.stdout
        assert ann.edu("image", "verify").returncode == 0


def _copy_of(where, tmp):
    """A copy of the shared dir (root's, 0755) to damage."""
    tmp.mkdir(parents=True, exist_ok=True)
    copy = tmp / "shared"
    subprocess.run(["cp", "-a", str(where), str(copy)], check=True)
    return copy


def test_hostile_or_stale_shared_stores_get_a_sentence(shared_images, tmp_path):
    index = json.loads((shared_images / "index.json").read_text())
    manifest_digest = index["tags"]["docker.io/library/debian:12"]
    manifest = json.loads(shared._blob(shared_images, manifest_digest).read_bytes())
    layer = manifest["layers"][0]["digest"]

    def attempt(damage) -> str:
        where = _copy_of(shared_images, tmp_path / uuid.uuid4().hex[:6])
        damage(where)
        store = Store(tmp_path / uuid.uuid4().hex[:6] / "store")
        with pytest.raises(StoreError) as err:
            shared.take(store, "debian:12", where, say=lambda _line: None)
        assert store.images() == [] and list(store.blobs.iterdir()) == []
        assert list(store.layers.iterdir()) == []
        return str(err.value)

    msg = attempt(lambda w: shared._blob(w, layer).unlink())
    assert "is damaged or stale" in msg and "is missing" in msg and "share it again" in msg
    msg = attempt(lambda w: shared._blob(w, layer).write_bytes(b"not the layer"))
    assert "does not hash to its name" in msg
    msg = attempt(lambda w: shared._blob(w, manifest_digest).unlink())
    assert "is damaged or stale" in msg
    msg = attempt(lambda w: os.chmod(w, 0o777))
    assert "not trusted" in msg and "can be written by others (mode 0777)" in msg
    msg = attempt(lambda w: os.chmod(w / "blobs/sha256", 0o775))
    assert "can be written by its group" in msg
    msg = attempt(lambda w: os.chown(w / "index.json", 1, 1))
    assert "belongs to uid 1, not root" in msg
    msg = attempt(lambda w: (w / "index.json").write_text("{not json"))
    assert "is not valid JSON" in msg

    # As a student, through the CLI: one sentence, exit 125, no traceback, nothing made.
    with students("h") as (hal,), shared_dir() as open_dir:
        subprocess.run(["cp", "-a", f"{shared_images}/.", str(open_dir)], check=True)
        os.chmod(open_dir, 0o757)
        out = hal.edu("run", "--rm", "--network", "none", "debian", "true",
                      env={"EDU_SHARED_DIR": str(open_dir)})
        assert out.returncode == 125
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
        assert "are not trusted" in out.stderr and "sudo chmod -R go-w" in out.stderr
        assert hal.edu("images", "-q").stdout.strip() == ""


def test_only_root_shares(shared_images):
    with students("n") as (nat,):
        out = nat.edu("image", "share", "debian", env={"EDU_SHARED_DIR": str(shared_images)})
        assert out.returncode == 1 and "sharing images needs root" in out.stderr
        assert "Traceback" not in out.stderr
        # edu bootstrap (and a lesson's lesson.image) take the shared copy too.
        out = nat.edu("bootstrap", "busybox", env={"EDU_SHARED_DIR": str(shared_images)})
        assert out.returncode == 0, out.stderr
        assert "copying it from this machine's shared images" in out.stderr
        made = nat.edu("create", "--name", "shr-c", "busybox", "true")
        assert made.returncode == 0, made.stderr


def test_unsharing_removes_the_tags_and_then_the_blobs_no_tag_names(shared_images, python):
    with shared_dir() as where:
        subprocess.run(["cp", "-a", f"{shared_images}/.", str(where)], check=True)
        env = {**os.environ, "EDU_SHARED_DIR": str(where)}

        def edu(*argv):
            return subprocess.run([python, "-m", "edu_cli.main", *argv], capture_output=True,
                                  text=True, env=env)
        blobs = set(os.listdir(where / "blobs/sha256"))
        out = edu("image", "share", "--rm", "debian:latest", "debian:bookworm")
        assert out.returncode == 0, out.stderr
        listed = edu("image", "share", "--list").stdout
        assert "debian:12 " in listed and "debian:latest" not in listed
        assert set(os.listdir(where / "blobs/sha256")) == blobs  # debian:12 still names them
        assert edu("image", "share", "--rm", "debian:12").returncode == 0
        assert "debian" not in edu("image", "share", "--list").stdout
        left = set(os.listdir(where / "blobs/sha256"))
        assert left < blobs and len(left) == 3  # busybox's manifest, config and layer
        out = edu("image", "share", "--rm", "debian:12")
        assert out.returncode == 1 and "debian:12 is not shared" in out.stderr
