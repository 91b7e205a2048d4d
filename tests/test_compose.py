"""``edu compose`` for real: containers, networks and volumes made from compose files, with
Compose v2's names and labels, start order (depends_on, service_healthy), environment
(lists, maps, env_file, ``${VAR}`` from the shell and ``.env``), published ports fetched,
named volumes kept by ``down`` and removed by ``down -v``, bind mounts, a second ``up`` that
leaves unchanged containers alone, validation errors that name the path in the file, and an
``up`` that fails half-way leaving only what ``ps`` lists and ``down`` removes.

The reference test runs the same file with Debian's ``docker-compose`` 1.29 against dockerd.

Introduced in notebooks/08-web-app.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
from conftest import need, wait_for

from edu_runtime import compose

PROJECT_LABEL = "com.docker.compose.project"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def edu(*argv: str, cwd: Path, check: bool = True, env: dict | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "edu_cli.main", *argv], cwd=cwd, text=True,
                         capture_output=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    return out


def leftovers(name: str) -> dict[str, list[str]]:
    """What of project ``name`` is on the host: containers, networks, volumes."""
    from edu_runtime import networks, volumes
    from edu_runtime.life import control

    return {"containers": [r["name"] for r in control.ls(all=True,
                                                          labels={PROJECT_LABEL: name})],
            "networks": [n["name"] for n in networks.ls() if n["name"].startswith(name + "_")
                         or (n.get("labels") or {}).get(PROJECT_LABEL) == name],
            "volumes": [v["Name"] for v in volumes.ls() if v["Name"].startswith(name + "_")
                        or (v.get("Labels") or {}).get(PROJECT_LABEL) == name]}


NOTHING = {"containers": [], "networks": [], "volumes": []}


@pytest.fixture
def project(tmp_path, busybox):
    """A project directory named cmp-RANDOM (so the project is named after it); whatever
    the test made is removed afterwards, and the test fails if anything was left."""
    need(os.geteuid() == 0, "root")
    d = tmp_path / f"cmp-{secrets.token_hex(3)}"
    d.mkdir()
    yield d
    if (d / "compose.yaml").exists():
        edu("compose", "down", "-v", "-t", "0", cwd=d, check=False)
    assert leftovers(d.name) == NOTHING


def write(d: Path, text: str, name: str = "compose.yaml") -> Path:
    path = d / name
    path.write_text(textwrap.dedent(text))
    return path


#: The file both edu compose and docker-compose 1.29 run (IMAGE differs: busybox in edu's
#: store, our busybox loaded into dockerd). db says it is ready a second after it starts;
#: web, which waits for db to be healthy, writes its start after that into the shared
#: volume, and serves a bind-mounted directory on a published port.
APP = """
services:
  web:
    image: ${IMAGE:-busybox}
    command: ["sh", "-c", "echo web-start >> /shared/log; exec httpd -f -p 8000 -h /www"]
    depends_on:
      db:
        condition: service_healthy
    ports:
      - "127.0.0.1:${WEB_PORT}:8000"
    environment:
      - FROM_SHELL=${SHELL_VAR}
      - FROM_DOTENV=${DOTENV_VAR:-unset}
      - DEFAULTED=${NOT_SET_ANYWHERE:-fallback}
      - ESCAPED=$$HOME
    env_file: app.env
    volumes:
      - shared:/shared
      - ./www:/www:ro
  db:
    image: ${IMAGE:-busybox}
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 1; echo db-ready >> /shared/log;
              touch /shared/ready; sleep 1000 & wait"]
    environment:
      ROLE: database
      NUMBER: 5
    healthcheck:
      test: ["CMD", "test", "-f", "/shared/ready"]
      interval: 200ms
      retries: 50
    volumes:
      - shared:/shared
volumes:
  shared: {}
"""


def app_dir(d: Path) -> int:
    """Write APP and its files into ``d``; the web port."""
    write(d, APP)
    (d / ".env").write_text("DOTENV_VAR=from-dotenv\nSHELL_VAR=dotenv-loses\n")
    (d / "app.env").write_text("# an env_file\nFROM_ENV_FILE='quoted value'\nROLE=web\n")
    (d / "www").mkdir()
    (d / "www" / "index.html").write_text("hello from a bind mount\n")
    return free_port()


def fetch(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as r:
        return r.read().decode()


def container_env(run_exec, name: str) -> dict[str, str]:
    out = run_exec(name, "env")
    return dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)


WANT_ENV = {"FROM_SHELL": "from-shell", "FROM_DOTENV": "from-dotenv", "DEFAULTED": "fallback",
            "ESCAPED": "$HOME", "FROM_ENV_FILE": "quoted value", "ROLE": "web"}


def test_up_names_labels_order_env_ports_volumes_and_down(project):
    d = project
    name = d.name
    port = app_dir(d)
    env = {"WEB_PORT": str(port), "SHELL_VAR": "from-shell"}
    out = edu("compose", "up", "-d", cwd=d, env=env)
    # Names as Compose v2 makes them, said as it says them.
    for line in (f"Network {name}_default  Created", f"Volume {name}_shared  Created",
                 f"Container {name}-db-1  Started", f"Container {name}-db-1  Healthy",
                 f"Container {name}-web-1  Started"):
        assert line in out.stderr, out.stderr
    assert {k: sorted(v) for k, v in leftovers(name).items()} == {
        "containers": [f"{name}-db-1", f"{name}-web-1"], "networks": [f"{name}_default"],
        "volumes": [f"{name}_shared"]}
    info = json.loads(edu("inspect", f"{name}-web-1", cwd=d).stdout)[0]
    labels = info["Config"]["Labels"]
    assert labels[PROJECT_LABEL] == name
    assert labels["com.docker.compose.service"] == "web"
    assert labels["com.docker.compose.container-number"] == "1"
    assert len(labels["com.docker.compose.config-hash"]) == 64
    from edu_runtime import networks, volumes

    assert networks.inspect(f"{name}_default")["labels"] == {
        PROJECT_LABEL: name, "com.docker.compose.network": "default"}
    assert volumes.inspect(f"{name}_shared")["Labels"] == {
        PROJECT_LABEL: name, "com.docker.compose.volume": "shared"}

    # Start order: web waited for db's healthcheck (db is ready a second after it starts).
    data = Path(volumes.inspect(f"{name}_shared")["Mountpoint"])
    assert (data / "log").read_text() == "db-ready\nweb-start\n"
    # The environment inside: shell over .env, defaults, $$, env_file, environment over it.
    print(edu("compose", "ps", cwd=d, env=env).stdout)  # shown if a check below fails
    print(edu("compose", "logs", cwd=d, env=env).stdout)
    seen = container_env(lambda c, *a: edu("exec", c, *a, cwd=d).stdout, f"{name}-web-1")
    assert {k: seen.get(k) for k in WANT_ENV} == WANT_ENV
    assert container_env(lambda c, *a: edu("exec", c, *a, cwd=d).stdout,
                         f"{name}-db-1")["NUMBER"] == "5"
    # The published port answers, from the bind-mounted directory.
    assert fetch(port) == "hello from a bind mount\n"
    # The network alias: web reaches db by its service name.
    edu("exec", f"{name}-web-1", "ping", "-c", "1", "-W", "2", "db", cwd=d)

    ps = edu("compose", "ps", cwd=d).stdout
    assert f"{name}-web-1" in ps and f"127.0.0.1:{port}->8000/tcp" in ps and "(healthy)" in ps

    # A second up leaves unchanged containers alone; a changed service is recreated.
    ids = {r["name"]: r["id"] for r in compose.ps(compose.load(cwd=d, environ={
        **os.environ, **env}))}
    again = edu("compose", "up", "-d", cwd=d, env=env)
    assert f"Container {name}-web-1  Running" in again.stderr
    assert f"Container {name}-db-1  Running" in again.stderr
    changed = edu("compose", "up", "-d", "-t", "1", cwd=d,
                  env={**env, "SHELL_VAR": "changed"})
    assert f"Container {name}-db-1  Running" in changed.stderr
    assert f"Container {name}-web-1  Recreate" in changed.stderr
    now = {r["name"]: r["id"] for r in compose.ps(compose.load(cwd=d, environ={
        **os.environ, **env}))}
    assert now[f"{name}-db-1"] == ids[f"{name}-db-1"]
    assert now[f"{name}-web-1"] != ids[f"{name}-web-1"]

    # stop, start, restart keep the containers.
    edu("compose", "stop", "-t", "1", cwd=d, env=env)
    assert all(r["state"] == "exited" for r in compose.ps(compose.load(cwd=d, environ=env)))
    edu("compose", "start", cwd=d, env=env)
    assert all(r["state"] == "running" for r in compose.ps(compose.load(cwd=d, environ=env)))
    assert wait_for(lambda: _answers(port), 10)
    out = edu("compose", "restart", "-t", "1", "web", cwd=d, env=env)
    assert out.stderr.strip() == f"Container {name}-web-1  Restarted"
    after = {r["name"]: (r["id"], r["state"])
             for r in compose.ps(compose.load(cwd=d, environ=env))}
    assert after[f"{name}-web-1"] == (now[f"{name}-web-1"], "running")
    assert wait_for(lambda: _answers(port), 10)

    # down keeps the named volume; down -v removes it; nothing else is left either way.
    out = edu("compose", "down", "-t", "1", cwd=d, env=env)
    assert f"Network {name}_default  Removed" in out.stderr
    assert leftovers(name) == {**NOTHING, "volumes": [f"{name}_shared"]}
    assert (data / "log").exists()
    edu("compose", "down", "-v", cwd=d, env=env)
    assert leftovers(name) == NOTHING


def _answers(port: int) -> bool:
    try:
        return fetch(port) == "hello from a bind mount\n"
    except OSError:
        return False


def test_up_attached_prints_prefixed_logs_and_exit_codes(project):
    d = project
    write(d, """
        services:
          first:
            image: busybox
            command: echo one
          second:
            image: busybox
            command: sh -c 'echo two; exit 3'
            depends_on:
              first: {condition: service_completed_successfully}
        """)
    out = edu("compose", "up", cwd=d)
    assert f"Container {d.name}-first-1  Exited" in out.stderr  # waited for, then second
    name = d.name
    assert f"Attaching to {name}-first-1, {name}-second-1" in out.stdout
    assert f"{name}-first-1   | one" in out.stdout
    assert f"{name}-second-1  | two" in out.stdout
    assert f"{name}-second-1 exited with code 3" in out.stdout
    logs = edu("compose", "logs", "second", cwd=d).stdout
    assert logs.strip() == f"{name}-second-1  | two"


def test_build_section_builds_with_args(project):
    d = project
    (d / "img").mkdir()
    (d / "img" / "Dockerfile.edu").write_text(
        "FROM busybox\nARG GREETING\nRUN echo \"$GREETING\" > /greeting\nCMD cat /greeting\n")
    write(d, """
        services:
          app:
            build:
              context: img
              dockerfile: Dockerfile.edu
              args:
                GREETING: built by compose
        """)
    tag = f"{d.name}-app"
    try:
        edu("compose", "build", cwd=d)
        out = edu("compose", "up", cwd=d)
        assert f"{d.name}-app-1  | built by compose" in out.stdout
    finally:
        edu("compose", "down", cwd=d, check=False)
        edu("rmi", "-f", tag, cwd=d, check=False)


def test_failed_service_is_named_and_what_was_made_is_listed_then_removed(project):
    d = project
    name = d.name
    write(d, """
        services:
          good:
            image: busybox
            command: ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]
          bad:
            image: busybox
            command: ["/no/such/program"]
            depends_on: [good]
          never:
            image: busybox
            command: ["true"]
            depends_on: [bad]
        """)
    out = edu("compose", "up", "-d", cwd=d, check=False)
    assert out.returncode == 1
    err = out.stderr.strip().splitlines()[-1]
    assert err.startswith("edu: service 'bad' failed to start:"), out.stderr
    assert "edu compose down" in err
    listed = {r["service"]: r["state"] for r in compose.ps(compose.load(cwd=d))}
    assert listed["good"] == "running"
    assert listed["bad"] in ("created", "exited")
    assert "never" not in listed
    assert set(leftovers(name)["containers"]) == {f"{name}-good-1", f"{name}-bad-1"}
    edu("compose", "down", "-t", "1", cwd=d)
    assert leftovers(name) == NOTHING


def test_service_healthy_on_an_unhealthy_dependency_fails_naming_it(project):
    d = project
    write(d, """
        services:
          db:
            image: busybox
            command: ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]
            healthcheck: {test: "exit 1", interval: 100ms, retries: 2}
          app:
            image: busybox
            command: ["true"]
            depends_on: {db: {condition: service_healthy}}
        """)
    out = edu("compose", "up", "-d", cwd=d, check=False)
    assert out.returncode == 1
    assert f"service 'app' failed to start: dependency failed to start: container " \
           f"{d.name}-db-1 is unhealthy" in out.stderr
    edu("compose", "down", "-t", "1", cwd=d)


BAD = {
    "typo": ("services:\n  web:\n    imgae: busybox\n",
             "services.web.imgae: 'imgae' is not a key the compose specification allows"),
    "type": ("services:\n  web:\n    image: busybox\n    ports: 80\n",
             "services.web.ports must be an array, not a number"),
    "port": ("services:\n  web:\n    image: busybox\n    ports: ['1:2:3:4']\n",
             "services.web.ports[0]: invalid port specification '1:2:3:4'"),
    "port-range": ("services:\n  web:\n    image: busybox\n    ports: ['80-81:80-82']\n",
                   "services.web.ports[0]: invalid port specification '80-81:80-82': the "
                   "host range and the container range must have the same length"),
    "base60": ("services:\n  web:\n    image: busybox\n    ports:\n      - 1100:30\n",
               "services.web.ports[0]: 66030 is not a port: YAML reads"),
    "unsupported": ("services:\n  web:\n    image: busybox\n    deploy: {replicas: 2}\n",
                    "services.web.deploy: 'deploy' is valid Compose but edu compose does "
                    "not support it"),
    "unsupported-top": ("services:\n  web: {image: busybox}\nsecrets: {}\n",
                        "secrets: 'secrets' is valid Compose but edu compose does not "
                        "support it"),
    "unsupported-build": ("services:\n  web:\n    build: {context: ., cache_from: [x]}\n",
                          "services.web.build.cache_from: 'cache_from' is valid Compose"),
    "depends": ("services:\n  web:\n    image: busybox\n    depends_on: [db]\n",
                "services.web.depends_on: service 'web' depends on undefined service 'db'"),
    "cycle": ("services:\n  a: {image: busybox, depends_on: [b]}\n"
              "  b: {image: busybox, depends_on: [a]}\n",
              "dependency cycle detected: a -> b -> a"),
    "yaml": ("services:\n  web:\n    image: busybox\n   ports: []\n",
             "line 4, column 4: invalid YAML"),
    "duplicate": ("services:\n  web:\n    image: busybox\n    image: debian\n",
                  "line 4, column 5: key 'image' is given twice in one mapping (first at "
                  "line 3)"),
    "volume": ("services:\n  web:\n    image: busybox\n    volumes: ['data:/data']\n",
               "services.web.volumes[0]: service refers to undefined volume 'data'"),
    "network": ("services:\n  web:\n    image: busybox\n    networks: [front]\n",
                "services.web.networks: service 'web' refers to undefined network 'front'"),
    "two-networks": ("services:\n  web:\n    image: busybox\n    networks: [a, b]\n"
                     "networks: {a: {}, b: {}}\n",
                     "services.web.networks: edu compose puts a service on one network"),
    "restart": ("services:\n  web:\n    image: busybox\n    restart: sometimes\n",
                "services.web.restart: invalid restart policy 'sometimes'"),
    "condition": ("services:\n  web:\n    image: busybox\n    depends_on: {db: {condition: "
                  "ready}}\n  db: {image: busybox}\n",
                  "services.web.depends_on.db.condition is 'ready', which is not one of"),
    "interpolation": ("services:\n  web:\n    image: busybox\n    command: echo ${\n",
                      "services.web.command: invalid interpolation format"),
    "required": ("services:\n  web:\n    image: ${MUST_BE_SET:?give an image}\n",
                 "services.web.image: required variable MUST_BE_SET is missing a value: "
                 "give an image"),
    "healthcheck": ("services:\n  web:\n    image: busybox\n    healthcheck: {test: 'true', "
                    "interval: soon}\n", "services.web.healthcheck.interval: "),
    "no-image": ("services:\n  web:\n    command: 'true'\n",
                 "services.web: service 'web' has neither an image nor a build context"),
    "no-services": ("version: '3.8'\n", "no services are defined"),
    "list": ("- web\n", "the top level must be a mapping"),
    "service-name": ("services:\n  web app: {image: busybox}\n",
                     "services: 'web app' is not a valid name here: use only letters"),
    "port-target": ("services:\n  web:\n    image: busybox\n    ports: [{published: 80}]\n",
                    "services.web.ports[0]: a port in the long form needs a target"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_are_refused_with_the_path(tmp_path, case):
    text, want = BAD[case]
    (tmp_path / "compose.yaml").write_text(text)
    with pytest.raises(compose.ComposeError) as err:
        compose.load(cwd=tmp_path, environ={})
    assert want in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_refuses_a_bad_file_in_one_sentence_and_makes_nothing(tmp_path):
    d = tmp_path / "cmp-bad"
    d.mkdir()
    (d / "compose.yaml").write_text("services:\n  web:\n    image: busybox\n    ports: ['x']\n")
    out = edu("compose", "up", "-d", cwd=d, check=False)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith("edu: compose.yaml: services.web.ports[0]")
    assert leftovers("cmp-bad") == NOTHING
    out = edu("compose", "-f", "nope.yaml", "ps", cwd=d, check=False)
    assert out.returncode == 1 and "not found" in out.stderr


def test_names_and_interpolation(tmp_path):
    from edu_runtime.compose import project as p

    assert p.normalise_name("My App.v2") == "myappv2"
    assert p.normalise_name("_-x") == "x"
    with pytest.raises(compose.ComposeError):
        p.check_project_name("Bad")
    env = {"A": "1", "E": ""}
    warn: list[str] = []
    assert p.interpolate("$A ${A} ${B:-d} ${E:-e} ${E-e} ${A:+s} $$A ${B}", env, "x", warn) \
        == "1 1 d e  s $A "
    assert warn == ["The 'B' variable is not set. Defaulting to a blank string."]
    d = tmp_path / "Web App"
    d.mkdir()
    (d / "docker-compose.yml").write_text(
        "services:\n  web:\n    image: busybox\n    container_name: fixed\n"
        "    networks: {back: {aliases: [api]}}\n    volumes: [{type: volume, source: v, "
        "target: /v, read_only: true}, /anon]\n"
        "    ports: [{target: 80, published: 8081}, '9000-9001:90-91']\n"
        "networks: {back: {}, ext: {external: true, name: theirs}}\n"
        "volumes: {v: {}}\n")
    proj = compose.load(cwd=d, environ={})
    assert proj.name == "webapp"
    assert proj.container_name("web") == "fixed"
    svc = proj.services["web"]
    assert svc.volumes == ["webapp_v:/v:ro", "/anon"]
    assert svc.ports == ["8081:80/tcp", "9000:90", "9001:91"]
    assert (svc.network, svc.aliases) == ("back", ["api"])
    assert proj.networks["back"].name == "webapp_back"
    assert (proj.networks["ext"].name, proj.networks["ext"].external) == ("theirs", True)
    assert compose.load(cwd=d, environ={}, project_name="other").name == "other"
    assert compose.load(cwd=d, environ={"COMPOSE_PROJECT_NAME": "fromenv"}).name == "fromenv"
    text = (d / "docker-compose.yml").read_text()
    (d / "docker-compose.yml").write_text("name: ${TOP:-top}\n" + text)
    assert compose.load(cwd=d, environ={}).name == "top"  # Compose v2's top-level name
    assert compose.load(cwd=d, environ={"COMPOSE_PROJECT_NAME": "env"}).name == "env"
    with pytest.raises(compose.ComposeError, match="invalid project name 'Top'"):
        compose.load(cwd=d, environ={"TOP": "Top"})


def test_vendored_schema_is_debians_unchanged():
    path = Path(compose.__file__).parent.parent / "data" / "compose-spec.json"
    data = path.read_bytes()
    assert len(data) == 25738
    assert hashlib.sha256(data).hexdigest() == \
        "0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac"
    debian = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")
    need(debian.exists(), "Debian's docker-compose is not installed (scripts/setup.sh --test)")
    assert debian.read_bytes() == data


# ---- the reference: Debian's docker-compose 1.29 against dockerd ----------------------------

def _docker_up() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0


def test_same_file_as_docker_compose_1_29(project):
    """The same file (APP) run by ``edu compose`` and by Debian's docker-compose 1.29.2
    against dockerd, compared: start order (web after db is healthy), the environment seen
    inside web, the published port answering, and the named volume kept by ``down`` and
    removed by ``down -v``.

    Names differ, and the test says how: 1.29 joins a project and a service with
    underscores (``PROJECT_web_1``), Compose v2 and edu with dashes (``PROJECT-web-1``).
    Networks (``PROJECT_default``) and volumes (``PROJECT_shared``) are named alike."""
    need(shutil.which("docker-compose") is not None,
         "docker-compose is not installed (scripts/setup.sh --test installs Debian's)")
    need(_docker_up(), "dockerd is not running")
    from docker_reference import load_base

    image = load_base()
    d = project
    name = d.name
    runs = {}
    for tool in ("edu", "docker"):
        port = app_dir(d) if tool == "edu" else free_port()
        env = {"WEB_PORT": str(port), "SHELL_VAR": "from-shell",
               **({"IMAGE": image} if tool == "docker" else {})}
        if tool == "edu":
            def up(*a, env=env):
                return edu("compose", *a, cwd=d, env=env)

            def ex(c, *a):
                return edu("exec", c, *a, cwd=d).stdout

            web = f"{name}-web-1"

            def vol_ls():
                return leftovers(name)["volumes"]

            def log():
                from edu_runtime import volumes

                mount = volumes.inspect(f"{name}_shared")["Mountpoint"]
                return (Path(mount) / "log").read_text()
        else:
            def up(*a, env=env):
                out = subprocess.run(["docker-compose", "-p", name, *a], cwd=d, text=True,
                                     capture_output=True, timeout=180, env={**os.environ, **env})
                assert out.returncode == 0, out.stdout + out.stderr
                return out

            def ex(c, *a):
                return subprocess.run(["docker", "exec", c, *a], capture_output=True,
                                      text=True, check=True).stdout

            web = f"{name}_web_1"

            def vol_ls():
                out = subprocess.run(["docker", "volume", "ls", "-q"], capture_output=True,
                                     text=True, check=True).stdout.split()
                return [v for v in out if v.startswith(name + "_")]

            def log():
                return ex(f"{name}_db_1", "cat", "/shared/log")
        try:
            up("up", "-d")
            got = {"order": log(), "env": {k: container_env(ex, web).get(k) for k in WANT_ENV},
                   "page": fetch(port) if tool == "edu" else _fetch_when_up(port)}
            up("down", "-t", "1")
            got["kept"] = vol_ls()
            up("down", "-v")
            got["after_v"] = vol_ls()
        finally:
            if tool == "docker":
                subprocess.run(["docker-compose", "-p", name, "down", "-v", "-t", "0"],
                               cwd=d, capture_output=True, env={**os.environ, **env})
            else:
                edu("compose", "down", "-v", "-t", "0", cwd=d, check=False)
        runs[tool] = got
    assert runs["edu"] == runs["docker"], runs
    assert runs["edu"]["order"] == "db-ready\nweb-start\n"
    assert runs["edu"]["kept"] == [f"{name}_shared"] and runs["edu"]["after_v"] == []


def _fetch_when_up(port: int) -> str:
    assert wait_for(lambda: _answers(port), 10)
    return fetch(port)


def test_ctrl_c_on_an_attached_up_stops_the_services(project):
    import signal

    d = project
    write(d, """
        services:
          loop:
            image: busybox
            command: ["sh", "-c", "trap 'echo bye; exit 0' TERM; echo ready; sleep 1000 & wait"]
        """)
    proc = subprocess.Popen([sys.executable, "-m", "edu_cli.main", "compose", "up"], cwd=d,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # up has started it, and attaches
        assert first.startswith("Attaching to"), first + proc.stderr.read()
        assert proc.stdout.readline() == f"{d.name}-loop-1  | ready\n"  # attached
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Gracefully stopping..." in err and "Traceback" not in err
    # Stopped as docker stop does: SIGTERM, which it trapped, so it exited 0 (not 137).
    assert [r["status"][:10] for r in compose.ps(compose.load(cwd=d))] == ["Exited (0)"]


def test_label_filters():
    from edu_runtime.life import control

    have = {"a": "1", "b": ""}
    assert control.has_labels(have, None) and control.has_labels(have, {"a": "1"})
    assert control.has_labels(have, {"b": None}) and not control.has_labels(have, {"a": "2"})
    assert not control.has_labels(have, {"c": None})
    assert control.labels_of({"spec": {"labels": have}}) == have
    assert control.labels_of({"spec": {}}) == {}


def test_pull_and_up_fetch_a_missing_image_from_a_registry(project):
    """The test registry on 127.0.0.1:5000 (setup.sh --test) stands for Docker Hub."""
    need(subprocess.run(["curl", "-sf", "-m", "3", "http://127.0.0.1:5000/v2/"],
                        capture_output=True).returncode == 0, "the test registry is not up")
    d = project
    ref = f"127.0.0.1:5000/cmp-busybox:{d.name}"
    edu("tag", "busybox", ref, cwd=d)
    try:
        edu("push", ref, cwd=d)
        edu("rmi", ref, cwd=d)
        write(d, f"services:\n  app:\n    image: {ref}\n    command: echo pulled\n")
        out = edu("compose", "pull", cwd=d)
        assert f"Service app  Pulling {ref}" in out.stderr
        edu("rmi", ref, cwd=d)
        out = edu("compose", "up", cwd=d)  # missing: pulled first, as Compose does
        assert f"Pulling {ref}" in out.stderr and f"{d.name}-app-1  | pulled" in out.stdout
        edu("compose", "down", cwd=d)
        # An image that cannot be had: refused before anything is made.
        write(d, f"services:\n  app:\n    image: {ref}\n  gone:\n"
                 f"    image: 127.0.0.1:5000/cmp-no-such-image:{d.name}\n")
        out = edu("compose", "up", "-d", cwd=d, check=False)
        assert out.returncode == 1
        assert "edu: service 'gone': cannot pull 127.0.0.1:5000/cmp-no-such-image" in out.stderr
        assert leftovers(d.name) == NOTHING
    finally:
        edu("compose", "down", cwd=d, check=False)
        edu("rmi", ref, cwd=d, check=False)


def test_down_by_project_name_without_the_file(project):
    d = project
    write(d, "services:\n  one:\n    image: busybox\n    command: sleep 100\n")
    edu("compose", "up", "-d", cwd=d)
    (d / "compose.yaml").rename(d / "elsewhere.yaml")
    out = edu("compose", "down", cwd=d, check=False)
    assert out.returncode == 1 and "no configuration file provided" in out.stderr
    out = edu("compose", "-p", d.name, "down", "-t", "0", cwd=d)
    assert f"Container {d.name}-one-1  Removed" in out.stderr
    assert leftovers(d.name) == NOTHING
