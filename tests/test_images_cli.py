"""The image commands as a student types them, and an image built by real Docker run by edu.

Each test works in its own store (EDU_STATE_DIR), so nothing here touches the default one.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest
from conftest import need


@pytest.fixture
def edu(tmp_path, python):
    env = dict(os.environ, EDU_STATE_DIR=str(tmp_path / "state"))

    def run(*argv, check=True):
        out = subprocess.run([python, "-m", "edu_cli.main", *argv], capture_output=True,
                             text=True, timeout=300, env=env)
        if check:
            assert out.returncode == 0, out.stderr
        return out
    run("bootstrap", "busybox")
    return run


def test_images_history_inspect(edu):
    lines = edu("images").stdout.splitlines()
    assert lines[0].split()[:3] == ["REPOSITORY", "TAG", "IMAGE"]
    assert "SHARED SIZE" in lines[0] and "UNIQUE SIZE" in lines[0]
    assert any(line.split()[:2] == ["busybox", "latest"] for line in lines[1:])
    hist = edu("history", "busybox").stdout.splitlines()
    assert hist[0].split()[:2] == ["LAYER", "CREATED"] and len(hist) >= 2
    info = json.loads(edu("inspect", "busybox").stdout)[0]
    assert info["Id"].startswith("sha256:") and "busybox:latest" in info["RepoTags"]
    assert info["Config"]["Cmd"] == ["sh"] and info["RootFS"]["Type"] == "layers"


def test_tag_rmi_prune(edu):
    edu("tag", "busybox", "localhost:5000/me/box:v1")
    assert "localhost:5000/me/box" in edu("images").stdout
    out = edu("rmi", "localhost:5000/me/box:v1").stdout
    assert out.strip() == "Untagged: localhost:5000/me/box:v1"
    bad = edu("rmi", "nope:1", check=False)
    assert bad.returncode == 1 and "No such image: nope:1" in bad.stderr
    bad = edu("tag", "busybox", "Bad:Name", check=False)
    assert bad.returncode == 1 and "lowercase" in bad.stderr
    out = edu("image", "prune", "-f").stdout
    assert "Total reclaimed space" in out
    refused = edu("image", "prune", check=False)  # no terminal, no -f: refuse, don't guess
    assert refused.returncode == 1 and "-f" in refused.stderr


def test_save_load_round_trip(edu, tmp_path):
    tar = tmp_path / "bb.tar"
    edu("save", "-o", str(tar), "busybox")
    ident = json.loads(edu("inspect", "busybox").stdout)[0]["Id"]
    for tag in json.loads(edu("inspect", "busybox").stdout)[0]["RepoTags"]:
        edu("rmi", tag)
    assert "busybox" not in edu("images").stdout
    out = edu("load", "-i", str(tar)).stdout
    assert "Loaded image: busybox:latest" in out
    assert json.loads(edu("inspect", "busybox").stdout)[0]["Id"] == ident
    bad = edu("load", "-i", str(tmp_path / "missing.tar"), check=False)
    assert bad.returncode == 1 and "missing.tar" in bad.stderr


def test_image_built_by_docker_runs_in_edu(edu, tmp_path):
    """docker build (classic builder) FROM our busybox, docker save, edu load, edu run:
    the same output as docker run."""
    need(subprocess.run(["docker", "version"], capture_output=True).returncode == 0,
         "dockerd is not running (scripts/services.sh start docker)")
    name = f"edu-test-{uuid.uuid4().hex[:8]}"
    tar = tmp_path / "bb.tar"
    edu("save", "-o", str(tar), "busybox")
    subprocess.run(["docker", "load", "-i", str(tar)], check=True, capture_output=True)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "greeting.txt").write_text("hello from a Dockerfile\n")
    (ctx / "Dockerfile").write_text(
        "FROM busybox:latest\nCOPY greeting.txt /srv/\nRUN rm /bin/vi && echo built > /built\n"
        "WORKDIR /srv\nENV WHO=edu\nCMD [\"sh\", \"-c\", \"cat greeting.txt /built; echo $WHO; "
        "ls /bin/vi 2>&1 | head -1; pwd\"]\n")
    try:
        subprocess.run(["docker", "build", "-q", "-t", name, str(ctx)], check=True,
                       capture_output=True, env=dict(os.environ, DOCKER_BUILDKIT="0"))
        want = subprocess.run(["docker", "run", "--rm", "--network", "none", name],
                              capture_output=True, text=True, check=True).stdout
        saved = tmp_path / "built.tar"
        subprocess.run(["docker", "save", "-o", str(saved), name], check=True)
        edu("load", "-i", str(saved))
        got = edu("run", "--rm", name).stdout
        assert got == want and "hello from a Dockerfile" in got and "/srv" in got
    finally:
        subprocess.run(["docker", "rmi", "-f", name, "busybox:latest"], capture_output=True)
