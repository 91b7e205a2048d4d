"""A compose file checked twice: against the official compose-spec JSON schema, then against
the subset ``edu compose`` implements.

The schema is the compose-spec's own (``edu_runtime/data/compose-spec.json``, vendored from
Debian's docker-compose 1.29.2; its README says where from). It knows every key Compose
knows, so a typo (``imgae``) or a wrong type (``ports: 80``) is refused the way Compose
refuses it. What the schema allows but edu does not do (``deploy``, ``secrets``,
``network_mode``) is refused second, by name: a key that would be silently ignored would
make a file that *looks* like it works, and does something else.

Each error is one sentence that starts with the path in the file (``services.web.ports[0]``)
and ends with what to do.

Introduced in notebooks/08-web-app.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

#: What edu compose does, level by level. Everything else the schema allows is refused.
TOP_LEVEL = {"version", "services", "volumes", "networks"}
SERVICE = {"image", "build", "command", "entrypoint", "environment", "env_file", "ports",
           "volumes", "networks", "depends_on", "restart", "healthcheck", "container_name",
           "hostname", "working_dir", "user", "init", "read_only", "cap_add", "cap_drop",
           "mem_limit", "pids_limit", "cpus", "labels", "logging"}
BUILD = {"context", "dockerfile", "args", "target"}
HEALTHCHECK = {"test", "interval", "timeout", "retries", "start_period", "disable"}
SERVICE_NETWORK = {"aliases"}
PORT = {"target", "published", "host_ip", "protocol", "mode"}
VOLUME_MOUNT = {"type", "source", "target", "read_only", "volume"}
NETWORK = {"external", "name", "driver"}
VOLUME = {"external", "name", "driver"}


class ComposeError(ValueError):
    """A compose file (or a command on it) refused: one sentence, with the fix."""

    exit_code = 1  # docker compose's own, for a file it refuses or a service that fails


def path_text(parts) -> str:
    """``services.web.ports[0]`` for ("services", "web", "ports", 0)."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "the file"


@cache
def spec() -> dict[str, Any]:
    """The vendored compose-spec JSON schema."""
    text = resources.files("edu_runtime").joinpath("data/compose-spec.json").read_text()
    return json.loads(text)


def _jsonschema():
    """jsonschema, imported without rfc3987_syntax: that module builds a grammar for one
    string format ("iri") at import, about 1.7 s, on every ``edu compose`` command, and the
    compose schema does not use it (formats are not checked here). Where it was imported
    before (a notebook), nothing changes."""
    import sys

    if "jsonschema" in sys.modules or "rfc3987_syntax" in sys.modules:
        import jsonschema

        return jsonschema
    sys.modules["rfc3987_syntax"] = None  # an ImportError, which jsonschema allows for
    try:
        import jsonschema
    finally:
        del sys.modules["rfc3987_syntax"]
    return jsonschema


def validate(data: Any, file: str = "") -> None:
    """Raise ComposeError for the first thing the compose specification refuses in ``data``
    (the parsed YAML), then for the first key the edu subset does not support."""
    jsonschema = _jsonschema()

    where = f"{file}: " if file else ""
    if not isinstance(data, dict):
        raise ComposeError(f"{where}the top level must be a mapping with a services key, "
                           f"not a {_kind(data)}: start the file with 'services:'")
    # The file names draft 2019-09 by an old URL jsonschema no longer knows: said here.
    validator = jsonschema.Draft201909Validator(spec())
    errors = list(validator.iter_errors(data))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        raise ComposeError(where + describe(error))
    if not data.get("services"):
        raise ComposeError(f"{where}no services are defined: add a services key with at "
                           "least one service (services: {web: {image: busybox}})")
    _subset(data, where)


def describe(error) -> str:
    """One sentence for a jsonschema error: the path, what is wrong, what to do."""
    path = path_text(error.absolute_path)
    v = error.validator
    if v == "additionalProperties":
        bad_name = re.findall(r"'([^']+)' does not match any of the regexes", error.message)
        if bad_name and not error.schema.get("properties"):  # a name, not a misspelt key
            return (f"{path}: {bad_name[0]!r} is not a valid name here: use only letters, "
                    "digits, '.', '_' and '-'")
        extra = bad_name or re.findall(r"'([^']+)' was unexpected", error.message) or ["?"]
        what = path + "." + extra[0] if error.absolute_path else extra[0]
        return (f"{what}: {extra[0]!r} is not a key the compose specification allows here: "
                "check its spelling and indentation, or remove it")
    if v == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return (f"{path} must be {_article(want)}, not {_article(_kind(error.instance))}: "
                "write it in that form")
    if v == "enum":
        return (f"{path} is {error.instance!r}, which is not one of "
                f"{', '.join(map(str, error.validator_value))}: use one of those")
    if v == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message) or ["?"]
        return f"{path} needs a {missing[0]!r} key: add it"
    if v == "uniqueItems":
        return f"{path} lists the same item twice: keep one of each"
    if v in ("oneOf", "anyOf"):
        return f"{path} is not in any form the compose specification allows: see its " \
               "documentation for this key and write it in one of those forms"
    return f"{path}: {error.message}: fix it as the compose specification says"


def _article(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _kind(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _refuse(keys, allowed: set[str], path: list, where: str) -> None:
    for key in keys:
        if key not in allowed and not str(key).startswith("x-"):
            raise ComposeError(
                f"{where}{path_text([*path, key])}: {key!r} is valid Compose but edu compose "
                f"does not support it: remove it (edu compose supports "
                f"{', '.join(sorted(allowed))} here)")


def _subset(data: dict, where: str) -> None:
    _refuse(data, TOP_LEVEL, [], where)
    for name, svc in data["services"].items():
        at = ["services", name]
        svc = svc or {}
        _refuse(svc, SERVICE, at, where)
        if isinstance(svc.get("build"), dict):
            _refuse(svc["build"], BUILD, [*at, "build"], where)
        if isinstance(svc.get("healthcheck"), dict):
            _refuse(svc["healthcheck"], HEALTHCHECK, [*at, "healthcheck"], where)
        if isinstance(svc.get("networks"), dict):
            for net, opts in svc["networks"].items():
                _refuse(opts or {}, SERVICE_NETWORK, [*at, "networks", net], where)
        for i, port in enumerate(svc.get("ports") or []):
            if isinstance(port, dict):
                _refuse(port, PORT, [*at, "ports", i], where)
        for i, vol in enumerate(svc.get("volumes") or []):
            if isinstance(vol, dict):
                _refuse(vol, VOLUME_MOUNT, [*at, "volumes", i], where)
                if isinstance(vol.get("volume"), dict):
                    _refuse(vol["volume"], {"nocopy"}, [*at, "volumes", i, "volume"], where)
    for kind, allowed in (("networks", NETWORK), ("volumes", VOLUME)):
        for name, opts in (data.get(kind) or {}).items():
            _refuse(opts or {}, allowed, [kind, name], where)
            if isinstance(opts, dict) and isinstance(opts.get("external"), dict):
                _refuse(opts["external"], {"name"}, [kind, name, "external"], where)
