"""A registry of your own (images/local_registry.py), image signing (images/signing.py), and
lesson 04's other runtime needs: debian:11 beside debian:12, and a lesson's reset stopping the
registry it started.

Every registry here is Debian's docker-registry on a free loopback port, with its storage
under a temp state dir (EDU_STATE_DIR and EDU_RUN_DIR point at tmp_path), never the test
suite's :5000. Keys are throwaways in temp GNUPGHOMEs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, need

from edu_runtime.images import local_registry, registry, signing
from edu_runtime.images.registry import RegistryError
from edu_runtime.images.store import Store


@pytest.fixture
def state(tmp_path, monkeypatch):
    """A state and a run dir of the test's own: the registries' records and storage."""
    need(shutil.which("docker-registry") is not None,
         "needs docker-registry (apt-get install docker-registry)")
    monkeypatch.setenv("EDU_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("EDU_RUN_DIR", str(tmp_path / "run"))
    yield tmp_path
    for served in local_registry.running():
        local_registry.stop(served.name)


def zombies_of(pid: int) -> list[str]:
    """Children of ``pid`` that have exited and were not reaped."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == pid:
                out.append(p.name)
    return out


def test_a_registry_starts_on_a_free_loopback_port_and_stops_with_its_storage(state, root):
    served = local_registry.start("t-reg")
    assert served.port != local_registry.TEST_PORT and served.address.startswith("127.0.0.1:")
    assert served.alive() and local_registry.find("t-reg") == served
    assert local_registry.start("t-reg") == served  # running already: the same one
    assert [s.name for s in local_registry.running()] == ["t-reg"]
    # It listens on loopback only.
    listening = Path("/proc/net/tcp").read_text()
    assert f"0100007F:{served.port:04X}" in listening
    assert f"00000000:{served.port:04X}" not in listening

    # Push an image to it: the blob is where blob_path says, its bytes hash to its name.
    from edu_runtime.images import bootstrap

    store = Store(state / "store")
    bootstrap.bootstrap(store, "busybox", progress=False)
    ref = f"{served.address}/t/busybox:1"
    store.tag("busybox:latest", ref)
    pushed = registry.push(store, ref)
    layer = store.get(ref).manifest["layers"][0]
    data = served.blob_path(layer["digest"]).read_bytes()
    import hashlib

    assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["digest"]
    assert served.blob_path(pushed.digest).is_file()
    assert [f.name for f in registry.search_registry(served.address, "busy")] == \
        [f"{served.address}/t/busybox"]

    stopped = local_registry.stop("t-reg")
    assert stopped == served and not served.alive()
    assert not zombies_of(os.getpid())  # this process started it, and reaped it
    assert not Path(served.root).exists()
    assert local_registry.find("t-reg") is None and local_registry.running() == []
    assert local_registry.stop("t-reg") is None  # already gone: nothing to say


def test_port_5000_and_bad_names_are_refused(state):
    with pytest.raises(RegistryError, match="test suite's registry"):
        local_registry.start("t-reg", port=5000)
    with pytest.raises(RegistryError, match="not a registry name"):
        local_registry.start("../etc")
    assert local_registry.running() == []


def test_a_taken_port_is_a_sentence_with_the_registrys_own_words(state):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        with pytest.raises(RegistryError, match="did not start.*address already in use"):
            local_registry.start("t-reg", port=taken)
    assert not (state / "state" / "registries" / "t-reg").exists()


def test_a_missing_program_says_how_to_install_it(state, monkeypatch):
    monkeypatch.setenv("PATH", str(state))
    with pytest.raises(RegistryError, match="apt-get install docker-registry"):
        local_registry.start("t-reg")


def test_stopped_from_another_process_and_a_dead_one_is_cleaned_up(state):
    served = local_registry.start("t-reg")
    # Another process (a new kernel's reset) stops it by its record.
    code = ("from edu_runtime.images import local_registry as r; "
            "s = r.stop('t-reg'); print(s.port if s else 'none')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=os.environ, cwd=REPO, timeout=60)
    assert out.stdout.strip() == str(served.port), out.stderr
    assert local_registry.find("t-reg") is None  # and this process reaps its child
    assert not zombies_of(os.getpid())

    # One that died (killed by hand): a stop says nothing was running, and cleans up.
    served = local_registry.start("t-reg")
    os.kill(served.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while served.alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert local_registry.stop("t-reg") is None
    assert not Path(served.root).exists()
    assert not zombies_of(os.getpid())


def test_a_lessons_reset_stops_the_registry_it_started(state, monkeypatch, tmp_path):
    from edu_runtime.notebook import Lesson

    course = tmp_path / "course"
    (course / "notebooks").mkdir(parents=True)
    (course / "lessons").mkdir()
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# 97 Scratch"}],
          "metadata": {"edu": {"parts": {}}}, "nbformat": 4, "nbformat_minor": 5}
    (course / "notebooks" / "97-scratch.ipynb").write_text(json.dumps(nb))
    monkeypatch.setenv("EDU_COURSE_DIR", str(course))
    lesson = Lesson("97-scratch", quiet=True)
    lesson.made(registry="t-lesson")
    served = local_registry.start("t-lesson")
    said = Lesson("97-scratch", quiet=True, fresh=False).reset()  # a new kernel: on disk
    assert said.removed == [f"stopped registry t-lesson on {served.address}"]
    assert not served.alive() and not Path(served.root).exists()
    assert str(Lesson("97-scratch", quiet=True).reset()).endswith("the host is as it was.")


# ---- signing ---------------------------------------------------------------------------------

def test_a_signature_verifies_and_a_tampered_manifest_or_another_name_does_not():
    need(all(shutil.which(t) for t in ("gpg", "gpgconf", "skopeo")), "needs gnupg and skopeo")
    manifest = json.dumps({"schemaVersion": 2, "layers": [{"digest": "sha256:" + "a" * 64}]},
                          indent=1).encode()
    name = "127.0.0.1:40000/edu/busybox:latest"
    with signing.throwaway_key() as key:
        assert len(key.fingerprint) == 40 and key.home.is_dir()
        assert os.environ.get("GNUPGHOME") != str(key.home)  # ours is not touched
        sig = signing.sign(manifest, name, key)
        said = signing.payload(sig, key)
        import hashlib

        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        assert said["critical"]["identity"]["docker-reference"] == name
        assert said["critical"]["image"]["docker-manifest-digest"] == digest
        good = signing.verify(manifest, name, key, sig)
        assert good.ok and good.said == f"Signature verified, digest {digest}"
        tampered = manifest.replace(b"a" * 64, b"b" * 64)
        bad = signing.verify(tampered, name, key, sig)
        assert not bad.ok and "does not match" in bad.said and digest in bad.said
        other = signing.verify(manifest, name.replace("busybox", "debian"), key, sig)
        assert not other.ok and "does not match" in other.said
        home = key.home
    assert not home.exists()
    deadline = time.monotonic() + 5  # its gpg-agent is gone (a daemon: init reaps it)
    while time.monotonic() < deadline:
        agents = subprocess.run(["pgrep", "-f", f"gpg-agent --homedir {home}"],
                                capture_output=True, text=True).stdout.split()
        if not agents:
            break
        time.sleep(0.1)
    assert not agents


def test_missing_signing_tools_are_a_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(signing.SigningError, match="apt-get install gnupg skopeo"):
        with signing.throwaway_key():
            pass


# ---- debian:11 beside debian:12 --------------------------------------------------------------

@pytest.mark.slow
def test_debian_11_is_bullseye_beside_12(root):
    """In the default store (what lesson 04 uses; built once, about 30 s, then instant)."""
    need(shutil.which("debootstrap") is not None, "needs debootstrap")
    from edu_runtime.images import bootstrap as bs

    store = Store()
    old = bs.bootstrap(store, "debian:11", progress=False)
    new = bs.bootstrap(store, "debian:12", progress=False)
    assert old.id != new.id
    assert {"docker.io/library/debian:bullseye", "docker.io/library/debian:11"} <= set(old.tags)
    assert "docker.io/library/debian:latest" in new.tags  # latest stays Debian 12
    assert "docker.io/library/debian:latest" not in old.tags
    labels = old.config["config"]["Labels"]
    assert labels[bs.SUITE_LABEL] == "bullseye" and labels[bs.VERSION].startswith("11.")
    start = time.monotonic()
    assert bs.bootstrap(store, "debian:bullseye", progress=False).id == old.id
    assert time.monotonic() - start < 2
    layer = store.layer_dir(old.diff_ids[0])
    assert (layer / "etc/debian_version").read_text().startswith("11.")
    assert (store.layer_dir(new.diff_ids[0]) / "etc/debian_version").read_text().startswith("12.")
    with pytest.raises(bs.BootstrapError, match="debian:11 beside debian:12"):
        bs.bootstrap(store, "debian:10", progress=False)
