"""Lesson 09's Node.js app (lessons/apps/node-app), for real: npm installs express in the
build from the npm registry, the image answers over HTTP on a published port, a code change
rebuilds with `npm install` from the cache and only `COPY . .` new, and a package.json change
runs `npm install` again; docker build (the classic builder) caches the same steps.

One build from nothing (``--no-cache``) is shared by the module; the later builds work on a
copy of the app. Everything made is removed afterwards: tags, the cache entries of the
changed builds, containers, and what Docker was lent.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import need

from edu_runtime.images import bootstrap, build, explain
from edu_runtime.images.store import Store, StoreError
from edu_runtime.notebook import apps, building

NPM_STEP = "RUN npm install"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def edu(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "edu_cli.main", *argv], capture_output=True,
                          text=True, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def get(url: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def lock_packages(context: Path) -> dict[str, str]:
    """node_modules/NAME -> version, as package-lock.json pins them."""
    lock = json.loads((context / "package-lock.json").read_text())
    return {k: v["version"] for k, v in lock["packages"].items() if k}


def is_package(path: Path) -> bool:
    """A package's own directory: node_modules/NAME or node_modules/@SCOPE/NAME."""
    up = path.parent
    return up.name == "node_modules" or (up.name.startswith("@")
                                         and up.parent.name == "node_modules")


def layer_of(store: Store, tag: str, instruction: str) -> str:
    """The diff_id of the layer the instruction made in ``tag``."""
    for h in explain.history(store.get(tag)):
        if h["layer"] and instruction.split(None, 1)[1] in h["created_by"]:
            return h["layer"]
    raise AssertionError(f"no layer of {instruction!r} in {tag}")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app built once from nothing, in a copy that later tests change; its builds."""
    need(os.geteuid() == 0, "builds run their RUN steps in containers as root")
    store = Store()
    bootstrap.bootstrap(store, "node", progress=False)  # built from Debian once, if missing
    context = apps.copy("node-app", tmp_path_factory.mktemp("l09") / "node-app")
    # A node_modules of the student's own, which .dockerignore must keep out of COPY . .
    (context / "node_modules/express").mkdir(parents=True)
    (context / "node_modules/express/package.json").write_text('{"version": "0.0.0-host"}')
    made = {"tags": [], "remembered": [], "containers": [], "context": context}

    def build_it(no_cache: bool = False) -> dict:
        tag = f"l09-test-{uuid.uuid4().hex[:8]}"
        made["tags"].append(tag)
        built = building.build_image(context, tag, progress=False, no_cache=no_cache)
        built["output"] = Path(built["log"]).read_text()
        made["remembered"] += built["remembered"]
        return built

    made["build"] = build_it
    made["first"] = build_it(no_cache=True)
    made["remembered"].clear()  # the first build's cache is the app's own: the lesson's too
    yield made
    for name in made["containers"]:
        edu("rm", "-f", name, check=False)
    for tag in made["tags"]:
        building.log_path(tag).unlink(missing_ok=True)
        try:
            store.remove(tag)
        except StoreError:
            pass
    build.forget(store, made["remembered"])


def test_npm_installs_what_the_lock_pins(app):
    store, first = Store(), app["first"]
    pinned = lock_packages(app["context"])
    assert f"added {len(pinned)} packages" in first["output"]  # npm's own words, in the build
    assert [r["cached"] for r in first["rows"]] == [False] * 7
    npm = store.layer_dir(layer_of(store, first["tag"], NPM_STEP)) / "app/node_modules"
    installed = {f"node_modules/{p.parent.relative_to(npm)}":
                 json.loads(p.read_text())["version"]
                 for p in npm.glob("**/package.json") if is_package(p.parent)}
    assert installed == pinned
    assert pinned["node_modules/express"].startswith("5.")


def test_dockerignore_keeps_the_hosts_node_modules_out(app):
    store = Store()
    code = store.layer_dir(store.get(app["first"]["tag"]).diff_ids[-1])  # COPY . .
    assert (code / "app/server.js").is_file() and (code / "app/Dockerfile").is_file()
    assert not (code / "app/node_modules").exists()


def test_it_answers_on_a_published_port(app):
    name, port = f"l09-test-{uuid.uuid4().hex[:8]}", free_port()
    app["containers"].append(name)
    cid = edu("run", "-d", "--name", name, "-p", f"{port}:8080", app["first"]["tag"]).stdout
    assert get(f"http://127.0.0.1:{port}/") == f"Hello from {cid.strip()[:12]}, version 1\n"
    versions = json.loads(get(f"http://127.0.0.1:{port}/version"))
    assert versions["version"] == "1" and versions["node"].startswith("v18.")
    assert versions["express"] == lock_packages(app["context"])["node_modules/express"]
    edu("stop", name)  # SIGTERM, which server.js takes: exit 0, not the 137 of a kill
    assert json.loads(edu("inspect", name).stdout)[0]["State"]["ExitCode"] == 0
    edu("rm", name)
    app["containers"].remove(name)


def test_a_code_change_rebuilds_only_the_code_layer(app):
    store, first, server = Store(), app["first"], app["context"] / "server.js"
    original = server.read_text()
    server.write_text(original.replace("VERSION = '1'", "VERSION = '2'")
                      + f"// {uuid.uuid4()}\n")
    try:
        changed = app["build"]()
    finally:
        server.write_text(original)
    assert [r["cached"] for r in changed["rows"][1:]] == [True] * 3 + [False] * 3
    assert "added" not in changed["output"]  # npm did not run
    assert changed["rows"][3]["id"] == first["rows"][3]["id"]  # the npm step's image
    before, after = store.get(first["tag"]).diff_ids, store.get(changed["tag"]).diff_ids
    assert after[:-1] == before[:-1] and after[-1] != before[-1]
    assert layer_of(store, changed["tag"], NPM_STEP) == layer_of(store, first["tag"], NPM_STEP)
    code = store.layer_dir(after[-1]) / "app/server.js"
    assert "VERSION = '2'" in code.read_text()


def test_a_package_json_change_runs_npm_install_again(app):
    store, first, package = Store(), app["first"], app["context"] / "package.json"
    original = package.read_text()
    meta = json.loads(original)
    meta["description"] += f" ({uuid.uuid4().hex[:8]})"
    package.write_text(json.dumps(meta, indent=2) + "\n")
    try:
        changed = app["build"]()
    finally:
        package.write_text(original)
    assert [r["cached"] for r in changed["rows"][1:]] == [True] + [False] * 5
    assert f"added {len(lock_packages(app['context']))} packages" in changed["output"]
    assert layer_of(store, changed["tag"], NPM_STEP) != layer_of(store, first["tag"], NPM_STEP)


def test_docker_build_caches_the_same_steps(app, tmp_path):
    """The same three builds through Docker 20.10's classic builder, from the same node
    image (lent to Docker): the same steps come from the cache, and npm installs the same
    express."""
    from docker_reference import docker_up

    from edu_runtime.notebook import docker

    need(docker_up(), "dockerd must answer (scripts/services.sh start docker)")
    context = apps.copy("node-app", tmp_path / "node-app")
    tags = [f"l09-test-docker-{uuid.uuid4().hex[:8]}:{n}" for n in (1, 2, 3)]
    server, package = context / "server.js", context / "package.json"

    def docker_build(tag: str, *flags: str) -> list[bool]:
        out = docker.docker("build", *flags, "-t", tag, str(context),
                            env={"DOCKER_BUILDKIT": "0"}, timeout=600).stdout
        return [r["cached"] for r in building.read_steps(out)]

    seen = {}
    try:
        with docker.borrowed("node", f"l09-test-node-{uuid.uuid4().hex[:8]}:edu") as base:
            dockerfile = context / "Dockerfile"
            dockerfile.write_text(dockerfile.read_text().replace("FROM node", f"FROM {base}"))
            seen["first"] = docker_build(tags[0], "--no-cache")
            express = docker.docker("run", "--rm", tags[0], "node", "-p",
                                    "require('express/package.json').version").stdout.strip()
            server.write_text(server.read_text() + f"// {uuid.uuid4()}\n")
            seen["code"] = docker_build(tags[1])
            package.write_text(package.read_text().replace(
                '"private"', f'"keywords": ["{uuid.uuid4().hex[:8]}"],\n  "private"'))
            seen["package"] = docker_build(tags[2])
    finally:
        for tag in tags:
            docker.docker("rmi", tag, check=False)
    assert express == lock_packages(context)["node_modules/express"]
    # FROM reads as not cached in both; the rest: as edu's builds in the tests above.
    assert seen["first"] == [False] * 7
    assert seen["code"] == [False] + [True] * 3 + [False] * 3
    assert seen["package"] == [False, True] + [False] * 5
