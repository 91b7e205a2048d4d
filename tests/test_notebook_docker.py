"""Docker beside edu: a lesson lends Docker edu's own image under a tag of its own, and
Docker's store is as it was afterwards (needs dockerd, as CI has)."""

from __future__ import annotations

import os

import pytest
from conftest import need

from edu_runtime.notebook import docker


@pytest.fixture
def dockerd(root, busybox):
    need(docker.docker_answers(), "needs a Docker daemon (CI starts one)")


def _tags() -> set[str]:
    out = docker.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    return set(out.split())


def test_a_borrowed_image_runs_in_docker_and_leaves_no_tag(dockerd, busybox):
    tag = f"edu-borrow-test-{os.getpid()}:edu"
    before = _tags()
    had_it = docker.has_image(busybox.id)
    with docker.borrowed("busybox", tag) as name:
        assert name == tag and tag in _tags()
        shown = docker.docker("run", "--rm", "--network", "none", name, "sh", "-c",
                              "echo from docker").stdout
        assert shown.strip() == "from docker"
        # The same image, named by the same digest in both stores.
        assert docker.docker("image", "inspect", "-f", "{{.Id}}", name).stdout.strip() \
            == busybox.id
    assert _tags() == before
    assert docker.has_image(busybox.id) == had_it


def test_a_failing_docker_command_says_what_docker_said(dockerd):
    with pytest.raises(docker.DockerError, match="No such image"):
        docker.docker("image", "inspect", "edu-no-such-image:never")


def test_an_image_docker_lacks_is_loaded_and_deleted_again(dockerd, tmp_path):
    """A new image (busybox plus a label only this test knows): Docker has never seen its
    ID, so it is loaded, and it goes with the tag."""
    from edu_runtime.images import build
    from edu_runtime.images.store import Store

    store = Store()
    (tmp_path / "Dockerfile").write_text(f"FROM busybox\nLABEL test.pid={os.getpid()}\n")
    name = f"edu-borrow-new-{os.getpid()}:1"
    img = build.build(store, build.Options(context=tmp_path, tags=[name], quiet=True))
    try:
        assert not docker.has_image(img.id)
        with docker.borrowed(name, f"edu-borrowed-{os.getpid()}:edu") as tag:
            labels = docker.docker("image", "inspect", "-f", "{{json .Config.Labels}}",
                                   tag).stdout
            assert f'"test.pid":"{os.getpid()}"' in labels
        assert not docker.has_image(img.id)
    finally:
        store.remove(name)
