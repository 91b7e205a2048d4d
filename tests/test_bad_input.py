"""Bad input, everywhere (issue 16): every value Docker refuses, edu refuses too.

Each bad ``run`` flag goes through real ``docker run`` and real ``edu run``: the exit codes
must be the same (125 mostly, 1 for a missing argument), edu's answer is one line that
starts ``edu: `` (what failed, how to fix it), never a traceback, and nothing is made: no
container record, network, volume, image tag, veth, mount or cgroup, on either side. The
same values through the API (``Container(...)``, ``networks.create``, ``volumes.create``)
raise a ValueError (or the runtime's StepError) with the same sentence, before anything is
made. A property test (hypothesis) feeds names and ``-p`` values: each is accepted only
where Docker accepts it, or refused with a sentence, and makes nothing.

Values Docker's daemon takes at create and refuses only as the container starts (``LATE``)
are compared with ``docker run --rm`` (125 both); edu refuses them before it makes
anything. Where edu is stricter than Docker (``STRICTER``), it refuses with a sentence
and 125.

The docker side runs in one batch per module, the edu side four at a time: no container
starts for a refused value, so the file takes about 15 seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker_reference as ref
import pytest
from conftest import need, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edu_runtime import flags, networks, volumes
from edu_runtime.life import states
from edu_runtime.steps import StepError

MARK = f"bad-{uuid.uuid4().hex[:8]}"  # the command of every container this file tries

#: ``run`` flags Docker refuses before it makes anything, and the API's spelling of each
#: (None: the CLI alone can say it, e.g. a flag without its value).
CASES: list[tuple[list[str], dict | None]] = [
    (["--name", "a/b"], {"name": "a/b"}),
    (["--name", "x"], {"name": "x"}),
    (["--name", "a b"], {"name": "a b"}),
    (["-m", "3"], {"memory": "3"}),
    (["-m", "1.5m"], {"memory": "1.5m"}),
    (["-m", "abc"], {"memory": "abc"}),
    (["-m", "-1"], {"memory": "-1"}),
    (["-m", "10x"], {"memory": "10x"}),
    (["-m", ""], {"memory": ""}),
    (["-p", "70000:80"], {"publish": ["70000:80"]}),
    (["-p", "65536"], {"publish": ["65536"]}),
    (["-p", "1-3:80-81"], {"publish": ["1-3:80-81"]}),
    (["-p", "abc"], {"publish": ["abc"]}),
    (["-p", "1.2.3.4:80:80:80"], {"publish": ["1.2.3.4:80:80:80"]}),
    (["-p", "999.1.1.1:80:80"], {"publish": ["999.1.1.1:80:80"]}),
    (["-p", "80/xyz"], {"publish": ["80/xyz"]}),
    (["-p", ""], {"publish": [""]}),
    (["-p", "80:"], {"publish": ["80:"]}),
    (["-p", "-1:80"], None),  # argparse takes -1:80 for a flag: the API says "not a port"
    (["--cpus", "-1"], {"cpus": -1}),
    (["--cpus", "1000"], {"cpus": 1000}),
    (["--cpus", "abc"], {"cpus": "abc"}),
    (["--cpus", ""], {"cpus": ""}),
    (["--cpus", "nan"], {"cpus": float("nan")}),
    (["--pids-limit", "abc"], {"pids_limit": "abc"}),
    (["--pids-limit", "1.5"], {"pids_limit": 1.5}),
    (["--pids-limit", ""], {"pids_limit": ""}),
    (["--pids-limit"], None),
    (["-w", "relative"], {"workdir": "relative"}),
    (["-e", "=x"], {"env": {"": "x"}}),
    (["-e", "="], None),
    (["-e", ""], None),
    (["--restart", "always:3"], None),
    (["--restart", "bogus"], None),
    (["--restart", "ALWAYS"], None),
    (["--restart", "on-failure:x"], None),
    (["--restart", "on-failure:-1"], None),
    (["--restart", "no:1"], None),
    (["--rm", "--restart", "always"], None),
    (["--rm", "--restart", "on-failure:2"], None),
    (["-v", ":/x"], {"volumes": [":/x"]}),
    (["-v", "/a:/b:zz"], {"volumes": ["/a:/b:zz"]}),
    (["-v", "r l:/x"], {"volumes": ["r l:/x"]}),
    (["-v", "x:/x:nocopy"], {"volumes": ["x:/x:nocopy"]}),
    (["-v", "/a:rel"], {"volumes": ["/a:rel"]}),
    (["-v", ""], {"volumes": [""]}),
    (["-v", "/a:/b:ro:x"], {"volumes": ["/a:/b:ro:x"]}),
    (["-v", "/a:/b:ro,rw"], {"volumes": ["/a:/b:ro,rw"]}),
    (["-v", "/a:/b:"], {"volumes": ["/a:/b:"]}),
    (["--network", ""], {"network": ""}),
    (["--bogus-flag"], None),
]

#: Image names Docker refuses (``docker run NAME``): the reference's sentence, not "not found".
BAD_IMAGES = ["UPPER", "a b", "busybox:", "busybox@sha256:xyz"]

#: Where ``docker run -v`` would make a missing bind source (removed after Docker's turn).
BIND = f"/tmp/{MARK}-src"

#: Values Docker's daemon takes at create and refuses when the container starts (125, and
#: ``docker run --rm`` removes what it made); edu refuses them before it makes anything.
LATE: list[tuple[list[str], dict]] = [
    (["-u", "a:b:c"], {"user": "a:b:c"}),
    (["-u", "99999999999"], {"user": "99999999999"}),
    (["-u", "-1"], {"user": "-1"}),
    (["-u", "x:"], {"user": "x:"}),
    (["--network", "bad\nname"], {"network": "bad\nname"}),
    (["--network", "Bad/Name"], {"network": "Bad/Name"}),
    (["-p", "80/sctp"], {"publish": ["80/sctp"]}),
    (["-v", f"{BIND}:/proc/x"], {"volumes": [f"{BIND}:/proc/x"]}),
]

#: Values Docker takes, which edu refuses with a sentence (exit 125): a container port 0,
#: a memory limit of 0 (Docker: none), a hostname that would add a line to /etc/hosts.
STRICTER: list[tuple[list[str], dict]] = [
    (["-p", "80:0"], {"publish": ["80:0"]}),
    (["-m", "0"], {"memory": "0"}),
    (["-h", "a\nb"], {"hostname": "a\nb"}),
]

#: What the API alone can be given: wrong types, NUL bytes (argv cannot carry them).
API_ONLY: list[dict] = [
    {"env": {"A\0": "1"}}, {"env": {"A": "x\0y"}}, {"env": {"A=B": "1"}}, {"env": ["A=1"]},
    {"memory": [64]}, {"memory": True}, {"cpus": [1]}, {"pids_limit": "many"},
    {"publish": "80"}, {"volumes": "/a:/b"}, {"user": "a\0b"}, {"user": 0},
    {"network": 5}, {"entrypoint": "sh"}, {"cpus": True}, {"pids_limit": True},
]


#: Every name a case gives (networks, volumes, images): none of them may appear.
NAMED = {"busybox", "x", "r l", "rel", "a", "Bad/Name", "bad\nname", "nosuchnet", "_x",
         "café", "x\ny", "a b", *(i.split(":")[0].split("@")[0] for i in BAD_IMAGES)}


def _ids(cases) -> list[str]:
    return [" ".join(argv).replace("\n", "\\n") or "''" for argv, _ in cases]


def edu(python: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "edu_cli.main", *argv], capture_output=True,
                          text=True, timeout=60)


def _run_argv(argv: list[str], image: str) -> list[str]:
    # A flag that lacks its value swallows the image: Docker and edu then both say so.
    return ["run", *argv, image, "true", MARK]


def made() -> set[tuple[str, str]]:
    """Everything a refused run could leave on this host, as (kind, name) pairs: container
    records, cgroups, mounts, veths, and the networks, volumes and image tags its values
    name (or an anonymous volume no container has). Compared as ``made() - before``, without
    what belongs to another container that is still there: other work on this host may
    start containers, networks and volumes meanwhile."""
    from edu_runtime.images.store import Store

    state = snapshot()
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    records = states.records()
    used = {m.get("Name") for r in records for m in r.get("mounts") or []}
    things = ({("container", c) for c in state["containers"]}
              | {("cgroup", c) for c in state["cgroups"]}
              | {("mount", line.split()[4]) for line in mounts  # Docker's are its own
                 if not line.split()[4].startswith(("/var/lib/docker", "/run/docker"))}
              | {("link", n) for n in os.listdir("/sys/class/net")  # edu's: [vc]eth + id[:8]
                 if re.fullmatch(r"[vc]eth[0-9a-f]{8}", n)}
              | {("network", n["name"]) for n in networks.ls() if n["name"] in NAMED}
              | {("volume", v["Name"]) for v in volumes.ls()
                 if v["Name"] in NAMED or (len(v["Name"]) == 64 and v["Name"] not in used)}
              | {("tag", t) for img in Store().images() for t in img.familiar_tags()
                 if t.split(":")[0] in NAMED})
    others = {r["id"] for r in records if MARK not in (r.get("command") or [])}
    return {t for t in things if not any(cid[:8] in t[1] for cid in others)}


def left(new: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """What of ``new`` is still there and is not another container's: a container of other
    work on this host has its directory, cgroups and veth a moment before its record (and
    after, as it goes)."""
    from edu_runtime import paths

    mine = {r["id"] for r in states.records() if MARK in (r.get("command") or [])}
    cdir = paths.state_dir() / "containers"
    where = {"container": lambda n: cdir / n, "cgroup": Path,
             "link": lambda n: Path("/sys/class/net") / n}
    return {(kind, name) for kind, name in new
            if kind not in where
            or any(cid[:8] in name for cid in mine)
            or where[kind](name).exists()
            and not any(r["id"][:8] in name for r in states.records())}


def docker_made() -> set[str]:
    """Docker's containers that run this file's command, and its volumes named in a case
    (other work on this host may use Docker meanwhile)."""
    ps = ref.run("docker", "ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Command}}")
    names = {"x", "r l", "rel"}
    vols = ref.run("docker", "volume", "ls", "-q").stdout.decode().split()
    return ({line for line in ps.stdout.decode().splitlines() if MARK in line}
            | {f"volume {v}" for v in vols if v in names})


@pytest.fixture(scope="module")
def docker_answers():
    """Each case through real ``docker run``, in one batch: {case: (exit code, stderr)}."""
    need(ref.docker_up(), "dockerd is not running: scripts/services.sh start docker")
    base = ref.load_base()
    before = docker_made()
    answers = {}
    for argv, _ in CASES:
        out = subprocess.run(["docker", *_run_argv(argv, base)], capture_output=True,
                             text=True, timeout=60)
        answers[tuple(argv)] = (out.returncode, out.stderr)
    for argv, _ in LATE:
        out = subprocess.run(["docker", "run", "--rm", *argv, base, "true",
                              MARK], capture_output=True, text=True, timeout=60)
        answers[tuple(argv)] = (out.returncode, out.stderr)
    shutil.rmtree(BIND, ignore_errors=True)  # docker run -v made it, before it refused
    for image in BAD_IMAGES:
        out = subprocess.run(["docker", "run", image, "true"], capture_output=True, text=True,
                             timeout=60)
        answers[(image,)] = (out.returncode, out.stderr)
    assert docker_made() == before, "docker made something for a refused value"
    return answers


@pytest.fixture(scope="module")
def edu_answers(python, busybox):
    """Each case (and each stricter one) through ``edu run``, four at a time, with what the
    host had before and after."""
    before = made()
    argvs = ([_run_argv(argv, "busybox") for argv, _ in CASES + LATE + STRICTER]
             + [["run", image, "true", MARK] for image in BAD_IMAGES])
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda argv: edu(python, *argv), argvs))
    yield {tuple(a): o for a, o in zip(argvs, outs, strict=True)}, before, made()
    accepted = [r["id"] for r in states.records() if MARK in (r.get("command") or [])]
    if accepted:  # a value wrongly taken made a container: the tests say which; remove it
        edu(python, "rm", "-f", *accepted)


def _one_sentence(out: subprocess.CompletedProcess) -> str:
    err = out.stderr
    assert "Traceback" not in err, err
    assert err.startswith("edu: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert out.stdout == ""
    return err[len("edu: "):-1]


@pytest.mark.parametrize("argv, _kw", CASES, ids=_ids(CASES))
def test_refused_as_docker_refuses_it(docker_answers, edu_answers, argv, _kw):
    code, theirs = docker_answers[tuple(argv)]
    assert code in (1, 125), f"docker accepted {argv}: {theirs}"
    ours = edu_answers[0][tuple(_run_argv(argv, "busybox"))]
    assert ours.returncode == code, (ours.stderr, theirs)
    _one_sentence(ours)


@pytest.mark.parametrize("image", BAD_IMAGES)
def test_bad_image_names_get_the_references_sentence(docker_answers, edu_answers, image):
    code, theirs = docker_answers[(image,)]
    assert code == 125 and "invalid reference format" in theirs, theirs
    ours = edu_answers[0][("run", image, "true", MARK)]
    assert ours.returncode == 125 and "invalid reference format" in _one_sentence(ours)


@pytest.mark.parametrize("argv, _kw", LATE, ids=_ids(LATE))
def test_refused_before_docker_would_start_it(docker_answers, edu_answers, argv, _kw):
    code, theirs = docker_answers[tuple(argv)]
    assert code == 125, theirs
    ours = edu_answers[0][tuple(_run_argv(argv, "busybox"))]
    assert ours.returncode == 125, ours.stderr
    _one_sentence(ours)


@pytest.mark.parametrize("argv, _kw", STRICTER, ids=_ids(STRICTER))
def test_stricter_than_docker_with_a_sentence(edu_answers, argv, _kw):
    ours = edu_answers[0][tuple(_run_argv(argv, "busybox"))]
    assert ours.returncode == 125, ours.stderr
    _one_sentence(ours)


def test_nothing_was_made(edu_answers):
    _, before, after = edu_answers
    assert left(after - before) == set()
    assert not os.path.exists(BIND)  # edu makes no bind source for a refused run


def _api_error(kw: dict) -> Exception:
    from edu_runtime.container import Container

    with pytest.raises((ValueError, StepError)) as exc:
        Container("busybox", ["true", MARK], **kw)
    return exc.value


def test_the_api_says_the_same_sentence(edu_answers):
    """Each case the API can express raises a ValueError (or StepError) whose text is the
    CLI's sentence; the API-only values (wrong types, NUL bytes) raise one-line sentences
    too, and nothing is made."""
    before = made()
    for argv, kw in CASES + LATE + STRICTER:
        if kw is None:
            continue
        cli = _one_sentence(edu_answers[0][tuple(_run_argv(argv, "busybox"))])
        assert str(_api_error(kw)) == cli, argv
    for kw in API_ONLY:
        text = str(_api_error(kw))
        assert text and text.isprintable(), (kw, text)
    assert left(made() - before) == set()


@pytest.mark.parametrize("verb, name", [
    ("volume", "a"), ("volume", "a b"), ("volume", "_x"), ("volume", "Bad/Name"),
    ("volume", "café"), ("volume", "x\ny"),
    ("volume", "-x"), ("network", "a b"), ("network", "Bad/Name"), ("network", "x\ny"),
])
def test_volume_and_network_names(python, verb, name):
    """``volume create`` refuses what Docker refuses, with its exit code (1, a daemon error;
    125 for a flag); ``network create`` holds names to the same rule (Docker takes any
    string, but a network's name becomes a bridge and file names here). The API raises the
    same sentence; nothing is made."""
    before = made()
    out = edu(python, verb, "create", name)
    said = _one_sentence(out)
    if verb == "volume" and name != "x\ny":  # Docker's answer, for the same name
        need(ref.docker_up(), "dockerd is not running: scripts/services.sh start docker")
        theirs = subprocess.run(["docker", "volume", "create", name], capture_output=True,
                                text=True, timeout=60)
        assert theirs.returncode == out.returncode, theirs.stderr
    assert out.returncode == (125 if name.startswith("-") else 1)
    if not name.startswith("-"):
        create = volumes.create if verb == "volume" else networks.create
        with pytest.raises((ValueError, networks.NetworkError)) as exc:
            create(name)
        assert str(exc.value) in said
    assert left(made() - before) == set()


# ---- properties: any string is accepted as Docker accepts it, or refused with a sentence ----

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
#: Characters that matter to these grammars, and some that never should pass.
_CHARS = st.sampled_from(list("aZ09_.-/: \n\t\0@é[]") + ["1", "8", "0"])
_TEXT = st.text(_CHARS, max_size=12) | st.text(max_size=8)


def _docker_name(text: str) -> bool:
    """moby's RestrictedNamePattern, the rule Docker applies to container names."""
    return re.fullmatch(r"/?[a-zA-Z0-9][a-zA-Z0-9_.-]+", text) is not None


@settings(max_examples=150, **SETTINGS)
@given(name=_TEXT)
def test_container_names_property(name):
    """Through the API: a name is taken exactly when Docker's rule takes it; a refusal is a
    one-line sentence; nothing is made (a Container is only made, never started)."""
    from edu_runtime.container import Container

    try:
        c = Container("busybox", ["true", MARK], name=name, network="none")
    except states.NameInUse:  # a name Docker's rule takes, which a container here has
        assert _docker_name(name)
        return
    except ValueError as exc:
        assert not _docker_name(name) and str(exc).isprintable(), (name, exc)
    else:
        assert _docker_name(name) or name == "", name
        assert not c.paths.dir.exists()


@settings(max_examples=60, **SETTINGS)
@given(tail=_TEXT)
def test_volume_and_network_names_property(tail):
    """``volumes.create`` and ``networks.create`` take a name exactly when it matches
    Docker's volume-name rule (networks: up to 64 characters); each made is removed."""
    name = f"bad{tail}"
    ok = _docker_name(name)
    try:
        volumes.create(name)
    except volumes.VolumeError as exc:
        assert not ok and str(exc).isprintable(), (name, exc)
    else:
        assert ok, name
        volumes.rm(name)
    try:
        networks.create(name)
    except networks.NetworkError as exc:
        assert not (ok and len(name) <= 64) and str(exc).isprintable(), (name, exc)
    else:
        assert ok, name
        networks.rm(name)


_PORT_PART = st.sampled_from(["", "0", "1", "80", "080", "8080", "65535", "65536", "70000",
                              "-1", "1-3", "abc", "1.2.3.4", "127.0.0.1", "999.1.1.1", " "])
_PORT = (st.lists(_PORT_PART, min_size=1, max_size=4).map(":".join)
         .flatmap(lambda s: st.sampled_from(["", "/tcp", "/udp", "/TCP", "/sctp", "/x"])
                  .map(lambda p: s + p)) | _TEXT)

def test_port_specs_property():
    """``-p`` values: a refusal is a one-line sentence naming the spec; every value edu
    accepts goes into one ``docker create`` at the end, which must take them all: edu is
    never more lenient than Docker."""
    from edu_runtime.networks import nat

    accepted = {"80", "0:80", "127.0.0.1::80", "8080:80/udp"}

    @settings(max_examples=200, **SETTINGS)
    @given(spec=_PORT)
    def parse(spec):
        try:
            nat.parse_port(spec)
        except nat.PortError as exc:
            assert str(exc).startswith("invalid port specification ") and \
                str(exc).isprintable(), (spec, exc)
        else:
            accepted.add(spec)

    parse()
    need(ref.docker_up(), "dockerd is not running: scripts/services.sh start docker")
    argv = [x for spec in sorted(accepted) for x in ("-p", spec)]
    out = subprocess.run(["docker", "create", *argv, ref.load_base(), "true"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (sorted(accepted), out.stderr)
    ref.run("docker", "rm", "-f", out.stdout.strip())


def test_flags_checks_are_sentences():
    """flags.py's own checks, directly."""
    assert flags.cpus("0.5", available=2) == 0.5
    assert flags.pids_limit("-1") is None and flags.pids_limit(20) == 20
    assert flags.user("") == "" and flags.user("1000:1000") == "1000:1000"
    for bad in (lambda: flags.cpus("inf"), lambda: flags.user("a:b:c"),
                lambda: flags.env({"": "x"}), lambda: flags.network("")):
        with pytest.raises(flags.BadValue):
            bad()


#: ``exec`` values Docker refuses once the container runs (126, as runc cannot start the
#: process), and a missing command (1, the CLI's). ``wait`` of no such container is 1 too.
EXEC_CASES: list[list[str]] = [["-w", "relative", "C", "true"],
                               ["-w", "/no/such/dir", "C", "true"],
                               ["-u", "nosuch", "C", "true"],
                               ["C"]]


def test_exec_and_wait_are_refused_as_docker_refuses_them(python, busybox, cli):
    need(ref.docker_up(), "dockerd is not running: scripts/services.sh start docker")
    base = ref.load_base()
    theirs_name, ours_name = f"{MARK}-d", cli.name()
    ref.run("docker", "run", "-d", "--name", theirs_name, base, "sh", "-c", "sleep 60", MARK)
    try:
        cli("run", "-d", "--name", ours_name, "busybox", "sh", "-c", "sleep 60", MARK)
        for argv in EXEC_CASES:
            theirs = subprocess.run(["docker", "exec", *(theirs_name if a == "C" else a
                                                         for a in argv)],
                                    capture_output=True, text=True, timeout=60)
            ours = edu(python, "exec", *(ours_name if a == "C" else a for a in argv))
            assert theirs.returncode in (1, 126), (argv, theirs.stderr)
            assert ours.returncode == theirs.returncode, (argv, ours.stderr, theirs.stderr)
            assert "Traceback" not in ours.stderr and ours.stderr.count("\n") == 1, ours.stderr
        theirs = subprocess.run(["docker", "wait", f"{MARK}-none"], capture_output=True,
                                text=True, timeout=60)
        ours = edu(python, "wait", f"{MARK}-none")
        assert theirs.returncode == ours.returncode == 1, (ours.stderr, theirs.stderr)
        assert "No such container" in theirs.stderr and "no such container" in \
            ours.stderr.lower(), ours.stderr
    finally:
        subprocess.run(["docker", "rm", "-f", theirs_name], capture_output=True, timeout=60)


#: The image verbs beside ``run``: each bad name (IMG) must be refused as Docker refuses it.
IMAGE_VERBS = [["pull", "IMG"], ["tag", "BASE", "IMG"], ["rmi", "IMG"], ["history", "IMG"],
               ["push", "IMG"], ["save", "-o", "OUT", "IMG"], ["build", "-q", "-t", "IMG", "CTX"]]


def test_bad_image_names_are_refused_by_every_image_verb_as_docker_refuses_them(
        python, busybox, tmp_path):
    """Same exit codes as Docker's (1; 125 for build's -t flag), one sentence that says the
    reference is invalid (rmi, history and save said "No such image" before), nothing made."""
    need(ref.docker_up(), "dockerd is not running: scripts/services.sh start docker")
    base = ref.load_base()
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    out = tmp_path / "out.tar"
    before = made()
    for verb in IMAGE_VERBS:
        for image in BAD_IMAGES:
            def argv(base_image: str, verb=verb, image=image) -> list[str]:
                swap = {"IMG": image, "BASE": base_image, "OUT": str(out),
                        "CTX": str(tmp_path)}
                return [swap.get(a, a) for a in verb]
            theirs = subprocess.run(["docker", *argv(base)], capture_output=True, text=True,
                                    timeout=60)
            ours = edu(python, *argv("busybox"))
            assert theirs.returncode in (1, 125), (verb, image, theirs.stderr)
            assert ours.returncode == theirs.returncode, (verb, image, ours.stderr,
                                                          theirs.stderr)
            assert "invalid reference format" in theirs.stderr, theirs.stderr
            err = ours.stderr  # one line: "edu: ..." or, for rmi as Docker's, "Error: ..."
            assert "Traceback" not in err and err.count("\n") == 1 and ours.stdout == "", err
            assert err.startswith(("edu: ", "Error: ")), (verb, image, err)
            assert "invalid reference format" in err, (verb, image, err)
            assert not out.exists()
    assert left(made() - before) == set()


#: ``create`` beside ``docker create``: 1 for what Docker's daemon refuses (a name, a restart
#: policy, an image name), 125 for what its flags refuse (``run`` is 125 for all).
CREATE_CASES = [["--name", "a/b"], ["--restart", "bogus"], ["--restart", "always:3"],
                ["--restart", "on-failure:abc"], ["-m", "abc"], ["-p", "70000:80"]]


def test_create_is_refused_with_docker_creates_exit_codes(python, busybox):
    need(ref.docker_up(), "dockerd is not running: scripts/services.sh start docker")
    base = ref.load_base()
    before = made()
    cases = [(argv, "IMG") for argv in CREATE_CASES] + [([], image) for image in BAD_IMAGES]
    for argv, image in cases:
        theirs = subprocess.run(["docker", "create", *argv,
                                 base if image == "IMG" else image, "true", MARK],
                                capture_output=True, text=True, timeout=60)
        ours = edu(python, "create", *argv, "busybox" if image == "IMG" else image, "true",
                   MARK)
        assert theirs.returncode in (1, 125), (argv, image, theirs.stderr)
        assert ours.returncode == theirs.returncode, (argv, image, ours.stderr, theirs.stderr)
        _one_sentence(ours)
    assert left(made() - before) == set()
    assert not [line for line in docker_made() if MARK in line]
