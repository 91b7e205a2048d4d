"""What Docker 20.10's classic builder makes of each case in tests/dockerfiles: the reference.

The builder of this course is checked by difference: build a Dockerfile with ``docker build``
and with edu, and compare what comes out. This module is the Docker half. ``reference(case)``
builds one case directory with ``DOCKER_BUILDKIT=0 docker build --network none --force-rm``
and returns what a second builder must reproduce: the config fields a Dockerfile sets, the
layer count and history, every file of the image with its mode, owner, size and link target,
what the image prints when run, and the ``Step N/M : ...`` lines. Images, build containers and
intermediate images are removed afterwards, success or not.

A case is a directory: a ``Dockerfile``, its context files, an optional ``.dockerignore``, and
an optional ``args.json`` with ``build_args`` ({NAME: VALUE}), ``target`` (a stage name) and
``before`` (a list of {"dir", "tag"}: sub-cases built and tagged first, for ONBUILD). Every
case starts from our busybox: ``ARG BASE`` before the first FROM, which ``reference`` sets to
``edu-test-busybox:latest`` (``load_base`` puts it into Docker), and a builder under test sets
to its own busybox. Nothing needs the network, and RUN uses busybox applets only.

Per case, what it covers and where BuildKit (Docker 23+) would not give the same: ``CASES``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import tarfile
import tempfile
from pathlib import Path

CASES_DIR = Path(__file__).resolve().parent / "dockerfiles"
BASE_TAG = "edu-test-busybox:latest"
#: Fields of the image config that Dockerfile instructions set.
CONFIG_FIELDS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "ExposedPorts", "User", "Labels",
                 "Volumes", "StopSignal", "Shell", "Healthcheck", "OnBuild")
#: What docker export adds to every container's root; not part of the image.
EXPORT_ADDED = ("dev", "proc", "sys", ".dockerenv", "etc/hostname", "etc/hosts",
                "etc/resolv.conf", "etc/mtab")
_ENV = {**os.environ, "DOCKER_BUILDKIT": "0"}

# Every case, with what it covers and how BuildKit (Docker 23 and later) would differ. Some
# differences hold for all: BuildKit prints "#5 [2/4] RUN ..." instead of "Step N/M :", records
# RUN as "RUN /bin/sh -c ... # buildkit" in the history instead of "/bin/sh -c ..." (with
# "|N ARG=value" in front when build args are in scope), leaves a RUN that changes nothing
# without a layer, and never copies the Dockerfile or .dockerignore when they are ignored.
CASES: dict[str, dict[str, str]] = {
    "multistage": {
        "covers": "FROM ... AS (upper and lower case), COPY --from=stage by name and by index",
        "buildkit": "builds only the stages the last one needs (the classic builder builds "
                    "all of them, in order)."},
    "copy-from-image": {
        "covers": "COPY --from=IMAGE that is no stage; --from is not substituted in 20.10",
        "buildkit": "same result; it would also substitute variables in --from."},
    "run-forms": {
        "covers": "RUN shell form, RUN exec form (recorded without /bin/sh -c), a RUN that "
                  "changes nothing (history entry, no layer)",
        "buildkit": "same layers; history says 'RUN /bin/sh -c ... # buildkit'."},
    "copy-chown": {
        "covers": "COPY --chown with user:group names, ids, a user alone, a directory",
        "buildkit": "same owners; it would also accept --chmod (classic: an error)."},
    "add-local": {
        "covers": "ADD of a file, a directory, a local .tar and .tar.gz (unpacked, owners kept)",
        "buildkit": "same; ADD --checksum and git sources exist only there."},
    "cmd-entrypoint-exec": {
        "covers": "ENTRYPOINT and CMD in exec form: CMD as ENTRYPOINT's arguments",
        "buildkit": "same."},
    "entrypoint-shell": {
        "covers": "ENTRYPOINT shell form (CMD never reaches it), CMD before ENTRYPOINT",
        "buildkit": "same config; newer frontends warn (JSONArgsRecommended)."},
    "env-forms": {
        "covers": "ENV NAME=VALUE with quotes and escapes, the old ENV NAME VALUE form, values "
                  "that read the environment from before the instruction, PATH extended",
        "buildkit": "same values; newer frontends warn about the old form "
                    "(LegacyKeyValueFormat)."},
    "arg-build-arg": {
        "covers": "ARG before FROM (empty in the stage until declared again), defaults, "
                  "--build-arg, ARG with several names, ARG into ENV, ARGs not in the final env",
        "buildkit": "same values; classic records each ARG as an empty layer in the history and "
                    "prefixes later RUN entries with |N NAME=value."},
    "workdir": {
        "covers": "WORKDIR absolute, relative, from ENV; made if missing (a layer each, in "
                  "the classic builder); COPY to . and ..",
        "buildkit": "same directories; it makes them in fewer layers."},
    "metadata": {
        "covers": "EXPOSE (protocols, ranges, upper case), LABEL (quoted keys, continuation), "
                  "STOPSIGNAL, MAINTAINER, USER by name",
        "buildkit": "same config; MAINTAINER is deprecated there and warned about."},
    "volume": {
        "covers": "VOLUME in both forms, and mixed (``/data [\"/logs\"]`` is not JSON: the "
                  "words are /data and [/logs]); a RUN after VOLUME writing into the volume",
        "buildkit": "keeps /data/after.txt: the classic builder drops what a RUN writes into "
                    "a declared volume."},
    "shell": {
        "covers": "SHELL changing RUN's and the shell form CMD's interpreter",
        "buildkit": "same."},
    "healthcheck": {
        "covers": "HEALTHCHECK with --interval --timeout --start-period --retries, shell and "
                  "exec forms, inherited from a stage, then HEALTHCHECK NONE. Durations left "
                  "out are inherited from the image below: 20.10's commit merges them, so the "
                  "final NONE still carries Interval 10s, Timeout 5s, StartPeriod 2s, Retries 3",
        "buildkit": "replaces the whole Healthcheck: NONE carries no durations; it also knows "
                    "--start-interval (an unknown flag in 20.10)."},
    "healthcheck-options": {
        "covers": "HEALTHCHECK durations with fractions and milliseconds, --retries=1",
        "buildkit": "same."},
    "onbuild": {
        "covers": "ONBUILD RUN, COPY and ENV triggers stored by parent/ and run in the child",
        "buildkit": "same triggers; it refuses ONBUILD COPY --from in them."},
    "comments-continuations": {
        "covers": "# syntax= (ignored), comments, indented comments and instructions, lower "
                  "case instructions, continuations with comment and empty lines, a line "
                  "ending in an escaped backslash",
        "buildkit": "# syntax= would pull that frontend image; newer frontends make an empty "
                    "continuation line an error rather than a warning."},
    "escape-backtick": {
        "covers": "# escape=` : backtick continuations and escapes, backslashes literal, a "
                  "COPY source with a backslash in its name",
        "buildkit": "same."},
    "substitution": {
        "covers": "${VAR:-default} and ${VAR:+alt} in FROM, ${VAR:?msg}, quotes and escapes, "
                  "substitution in ENV WORKDIR COPY LABEL EXPOSE (word splitting) STOPSIGNAL "
                  "VOLUME USER, and none in RUN and CMD",
        "buildkit": "same for these forms; it also knows ${VAR-default}, ${VAR#pattern} and "
                    "more, which 20.10 refuses."},
    "dockerignore": {
        "covers": ".dockerignore with comments, *.log, ! exceptions (also inside an ignored "
                  "directory), a leading / and ./, **, an escaped #, and the Dockerfile "
                  "itself; COPY . copies what is left",
        "buildkit": "the same files; a directory ignored but holding a re-included file keeps "
                    "its own mode there (classic: made 0755)."},
    "whiteout": {
        "covers": "a RUN deleting files of lower layers: whiteouts, a deleted base file",
        "buildkit": "same files."},
    "opaque-dir": {
        "covers": "a RUN replacing a directory of a lower layer: an opaque directory",
        "buildkit": "same files; its differ may write whiteouts for each old entry instead of "
                    "an opaque marker."},
    "new-dirs": {
        "covers": "COPY and ADD into directories that do not exist (made with parents), "
                  "WORKDIR making its directory, relative destinations",
        "buildkit": "same files; the made directories' times differ."},
    "copy-sources": {
        "covers": "COPY wildcards and [classes], several sources, a directory's contents, a "
                  "symlink source (followed), a symlink inside a directory (kept), JSON form "
                  "with a space, sources with .. and ./ inside the context",
        "buildkit": "same files."},
    "target": {
        "covers": "--target: the build stops at the named stage",
        "buildkit": "does not build the stage after the target at all (classic: parses it, "
                    "builds up to the target)."},
}


class DockerError(Exception):
    """docker failed; the message has the command and its output."""


def run(*cmd: str, check: bool = True, timeout: int = 300,
        stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run a docker command; raise DockerError with its output when it fails."""
    r = subprocess.run(cmd, capture_output=True, timeout=timeout, env=_ENV, input=stdin)
    if check and r.returncode != 0:
        raise DockerError(f"{' '.join(cmd)} exited {r.returncode}:\n"
                          f"{r.stdout.decode(errors='replace')}"
                          f"{r.stderr.decode(errors='replace')}")
    return r


def docker_up() -> bool:
    """Whether the docker CLI is installed and dockerd answers."""
    try:
        return run("docker", "version", "--format", "{{.Server.Version}}", check=False,
                   timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def load_base() -> str:
    """Put our busybox (edu bootstrap, saved by edu) into Docker as edu-test-busybox:latest."""
    from edu_runtime.images import archive, bootstrap
    from edu_runtime.images.store import Store

    store = Store()
    image = bootstrap.bootstrap(store, "busybox", progress=False)
    have = run("docker", "image", "inspect", "--format", "{{.Id}}", BASE_TAG, check=False)
    if have.returncode == 0 and have.stdout.decode().strip() == image.id:
        return BASE_TAG
    with tempfile.TemporaryDirectory() as tmp:
        # Saved by ID: the tar carries no tag, so Docker's busybox:latest is left alone.
        out = archive.save(store, [image.short_id], Path(tmp) / "busybox.tar")
        run("docker", "load", "-i", str(out))
    run("docker", "tag", image.id, BASE_TAG)
    return BASE_TAG


def case_args(case_dir: Path) -> dict:
    """The case's args.json ({} without one)."""
    path = Path(case_dir) / "args.json"
    return json.loads(path.read_text()) if path.exists() else {}


def reference(case_dir: Path) -> dict:
    """Build ``case_dir`` with docker's classic builder; what came out (see the module doc)."""
    case_dir = Path(case_dir)
    args = case_args(case_dir)
    made: list[str] = []  # image IDs and tags to remove afterwards
    try:
        for before in args.get("before", []):
            _build(case_dir / before["dir"], before["tag"], {}, None, made)
            made.append(before["tag"])
        tag = f"edu-ref-{case_dir.name}:{secrets.token_hex(4)}"
        result = _build(case_dir, tag, args.get("build_args", {}), args.get("target"), made)
        made.append(tag)
        if result["exit_code"] != 0:
            return result
        result.update(_inspect(tag))
        result.update(_saved(tag))
        result["files"] = _files(tag)
        out = run("docker", "run", "--rm", "--network", "none", tag, check=False)
        result["output"] = out.stdout.decode(errors="replace")
        result["run_stderr"] = out.stderr.decode(errors="replace")
        result["run_exit_code"] = out.returncode
        return result
    finally:
        remove(made)


def remove(made: list[str]) -> None:
    """Remove our tags, then the step images left untagged (never a tagged one: the base)."""
    for ref in reversed(made):
        if not re.fullmatch(r"[0-9a-f]{12}", ref):
            run("docker", "rmi", "-f", ref, check=False)
            continue
        tags = run("docker", "image", "inspect", "--format", "{{len .RepoTags}}", ref,
                   check=False).stdout.decode().strip()
        if tags == "0":  # and not forced: an image with children stays
            run("docker", "rmi", ref, check=False)


def _build(context: Path, tag: str, build_args: dict[str, str], target: str | None,
           made: list[str]) -> dict:
    cmd = ["docker", "build", "--network", "none", "--force-rm", "-t", tag,
           "--build-arg", f"BASE={BASE_TAG}"]
    for name, value in build_args.items():
        cmd += ["--build-arg", f"{name}={value}"]
    if target:
        cmd += ["--target", target]
    r = run(*cmd, str(context), check=False, timeout=600)
    log = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    log = re.sub(r"\x1b\[[0-9;]*m", "", log)  # the colours of the build's stderr
    # Each step's image: they stay behind as cache (or dangling, after a failure).
    made += re.findall(r"^ ---> ([0-9a-f]{12})$", log, re.MULTILINE)
    return {"exit_code": r.returncode, "log": log,
            "steps": re.findall(r"^(Step \d+/\d+ : .*)$", log, re.MULTILINE),
            "warnings": [line for line in log.splitlines()
                         if "[WARNING]" in line or "[Warning]" in line]}


def _inspect(tag: str) -> dict:
    info = json.loads(run("docker", "image", "inspect", tag).stdout)[0]
    config = info.get("Config") or {}
    history = [json.loads(line) for line in run(
        "docker", "history", "--no-trunc", "--format", "{{json .}}", tag
    ).stdout.decode().splitlines()]
    return {
        "config": {key: config.get(key) for key in CONFIG_FIELDS},
        "layers": len(info["RootFS"]["Layers"]),
        "history": [{"created_by": h["CreatedBy"], "size": h["Size"]}
                    for h in reversed(history)],
    }


def _saved(tag: str) -> dict:
    """From ``docker save``: the config's history (with empty_layer) and each layer's members.

    Each layer is listed as it is stored, so whiteouts (``.wh.NAME``) and opaque markers
    (``DIR/.wh..wh..opq``) show: ``layer_members`` is one list of names per layer.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "image.tar"
        run("docker", "save", "-o", str(out), tag)
        with tarfile.open(out) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))[0]
            config = json.load(tar.extractfile(manifest["Config"]))
            members = []
            for name in manifest["Layers"]:
                with tarfile.open(fileobj=tar.extractfile(name)) as layer:
                    members.append(sorted(m.name.rstrip("/") for m in layer))
    return {"image_history": [{"created_by": h.get("created_by", ""),
                               "empty_layer": bool(h.get("empty_layer"))}
                              for h in config.get("history", [])],
            "layer_members": members}


def _files(tag: str) -> dict[str, dict]:
    """Every path of the image (docker export of an unstarted container, minus its additions)."""
    cid = run("docker", "create", "--network", "none", tag).stdout.decode().strip()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "export.tar"
            run("docker", "export", "-o", str(out), cid)
            return files_of_tar(out)
    finally:
        run("docker", "rm", "-f", "-v", cid, check=False)  # -v: its anonymous volumes too


def files_of_tar(path: Path) -> dict[str, dict]:
    """path -> {type, mode, uid, gid, size, link, sha256} for each member of a root fs tar."""
    import hashlib

    files = {}
    with tarfile.open(path) as tar:
        for info in tar:
            rel = info.name.strip("/").removeprefix("./")
            if not rel or rel == "." or rel.split("/")[0] in EXPORT_ADDED or rel in EXPORT_ADDED:
                continue
            kind = ("dir" if info.isdir() else "symlink" if info.issym() else
                    "hardlink" if info.islnk() else "file" if info.isfile() else "other")
            entry = {"type": kind, "mode": info.mode & 0o7777, "uid": info.uid,
                     "gid": info.gid, "size": info.size if kind == "file" else 0,
                     "link": info.linkname or None}
            if kind == "file":
                entry["sha256"] = hashlib.sha256(tar.extractfile(info).read()).hexdigest()
            files[rel] = entry
    return files


def cases() -> list[Path]:
    """Every case directory, sorted."""
    return sorted(p for p in CASES_DIR.iterdir() if (p / "Dockerfile").is_file())
