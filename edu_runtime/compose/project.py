"""A compose file read into a project: the YAML, ``${VAR}`` filled in, checked, and each
service turned into what ``Container`` takes.

What happens, in Compose's order:

1. The project directory is the compose file's directory (``--project-directory``
   overrides it); a ``.env`` file there supplies variables, and the shell's environment
   wins over it.
2. The YAML is parsed (a syntax error says its line and column; a key given twice is an
   error, as Compose v2 makes it), then every string value is *interpolated*: ``${VAR}``,
   ``$VAR``, ``${VAR:-default}`` (unset or empty), ``${VAR-default}`` (unset),
   ``${VAR:?message}``, ``${VAR?message}``, ``${VAR:+other}``, and ``$$`` for a ``$``. An
   unset variable becomes an empty string, with a warning.
3. The result is validated (``schema``), then normalised: short and long forms of ports,
   volumes, networks and depends_on become one form; relative paths become absolute
   against the project directory; named volumes and networks get the project's prefix.

Names are Compose v2's: the project name is the directory's basename, lowercased, with
everything but ``a-z 0-9 _ -`` removed (``-p``, ``COMPOSE_PROJECT_NAME`` or the file's
top-level ``name`` override it, in that order);
containers are ``PROJECT-SERVICE-1``, the default network ``PROJECT_default``, volumes
``PROJECT_VOL``, networks ``PROJECT_NET``, and images built for a service without an
``image`` key ``PROJECT-SERVICE``. (docker-compose 1.29 joins with underscores:
``PROJECT_SERVICE_1``.)

Introduced in notebooks/08-web-app.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .schema import ComposeError, path_text, validate

#: The file names Compose looks for, in its order.
DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
#: Labels Compose puts on what it makes; ``down`` and ``ps`` find things by them.
PROJECT, SERVICE, NUMBER, HASH = ("com.docker.compose.project", "com.docker.compose.service",
                                  "com.docker.compose.container-number",
                                  "com.docker.compose.config-hash")
ONEOFF, WORKDIR, FILES = ("com.docker.compose.oneoff", "com.docker.compose.project.working_dir",
                          "com.docker.compose.project.config_files")
NETWORK_LABEL, VOLUME_LABEL = "com.docker.compose.network", "com.docker.compose.volume"
_PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")


@dataclass
class Service:
    """One service, normalised: the keyword arguments of its container, nearly."""

    name: str
    image: str  # what its container runs: the image key, or the image built for it
    build: dict[str, Any] | None = None  # {context, dockerfile, args, target}
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    ports: list[str] = field(default_factory=list)  # as edu run -p takes them
    volumes: list[str] = field(default_factory=list)  # as edu run -v takes them
    network: str = "default"  # the project's key for it
    aliases: list[str] = field(default_factory=list)
    depends_on: dict[str, str] = field(default_factory=dict)  # service: condition
    restart: str = "no"
    healthcheck: dict[str, Any] | None = None  # Docker's HealthConfig
    container_name: str | None = None
    hostname: str | None = None
    working_dir: str | None = None
    user: str | None = None
    init: bool = False
    read_only: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    mem_limit: str | int | None = None
    pids_limit: int | None = None
    cpus: float | None = None
    labels: dict[str, str] = field(default_factory=dict)
    logging: dict[str, Any] | None = None  # {"driver": ..., "options": {...}}, checked

    def config_hash(self) -> str:
        """What ``com.docker.compose.config-hash`` holds: a digest of the service's
        configuration (not of how its image is built), so ``up`` sees what changed."""
        data = {k: v for k, v in asdict(self).items()
                if k != "build" and (v or k != "logging")}  # hashes made before it stay
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass
class Resource:
    """A top-level network or volume: its name on the host, and whether ``up`` makes it."""

    key: str
    name: str
    external: bool = False


@dataclass
class Project:
    """A loaded compose project."""

    name: str
    directory: Path
    files: list[Path]
    services: dict[str, Service]
    networks: dict[str, Resource]
    volumes: dict[str, Resource]
    warnings: list[str] = field(default_factory=list)

    def container_name(self, service: str, number: int = 1) -> str:
        """``PROJECT-SERVICE-1``, or the service's ``container_name``."""
        return self.services[service].container_name or f"{self.name}-{service}-{number}"

    def order(self, services: list[str] | None = None) -> list[str]:
        """Services in start order (each after what it depends on), with their
        dependencies, or only ``services`` and theirs."""
        out: list[str] = []

        def visit(name: str) -> None:
            if name not in out:
                for dep in self.services[name].depends_on:
                    visit(dep)
                out.append(name)

        for name in services or self.services:
            if name not in self.services:
                raise ComposeError(f"no such service: {name}: the services are "
                                   f"{', '.join(self.services)}")
            visit(name)
        return out

    def labels(self, service: str, number: int = 1) -> dict[str, str]:
        """The labels of a service's container."""
        svc = self.services[service]
        return {**svc.labels, PROJECT: self.name, SERVICE: service, NUMBER: str(number),
                HASH: svc.config_hash(), ONEOFF: "False", WORKDIR: str(self.directory),
                FILES: ",".join(map(str, self.files))}


# ---- names ------------------------------------------------------------------------------------

def normalise_name(text: str) -> str:
    """Compose v2's project name from a directory name: lowercase, only [a-z0-9_-], and no
    leading ``_`` or ``-``."""
    return re.sub(r"[^a-z0-9_-]", "", text.lower()).lstrip("_-")


def check_project_name(name: str) -> str:
    """``name`` if Compose v2 would take it from ``-p``; else ComposeError."""
    if not _PROJECT_NAME.fullmatch(name):
        raise ComposeError(f"invalid project name {name!r}: use lowercase letters, digits, "
                           "dashes and underscores, starting with a letter or digit")
    return name


# ---- files, .env and interpolation ----------------------------------------------------------

def find_file(directory: Path) -> Path:
    """The compose file in ``directory``, as Compose looks for it."""
    for name in DEFAULT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise ComposeError(f"no configuration file provided: not found in {directory} (looked "
                       f"for {', '.join(DEFAULT_FILES)}): cd to the project, or give -f FILE")


def read_dotenv(path: Path, what: str = "env file") -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, blank lines, an optional ``export``, and
    single or double quotes around the value), as Compose reads ``.env`` and ``env_file``."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise ComposeError(f"{what} {path} not found: create it, or fix the path") from None
    except OSError as exc:
        raise ComposeError(f"cannot read {what} {path}: {exc.strerror}") from None
    out = {}
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, eq, value = line.partition("=")
        key = key.strip()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key):
            raise ComposeError(f"{path}, line {n}: {line!r} is not KEY=VALUE: write each "
                               "variable as NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        if eq:
            out[key] = value
    return out


_VAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
                  r"|(?P<invalid>))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?",
                     re.DOTALL)


def interpolate(value: str, env: dict[str, str], path: str, warnings: list[str]) -> str:
    """``value`` with its ``${VAR}`` forms filled in from ``env`` (see the module doc)."""
    def one(m: re.Match) -> str:
        if m.group("escaped"):
            return "$"
        if m.group("named"):
            name = m.group("named")
            return _value(name, env, path, warnings)
        body = m.group("braced")
        b = _BRACED.fullmatch(body) if body is not None else None
        if b is None:
            raise ComposeError(f"{path}: invalid interpolation format in {value!r}: write "
                               "${NAME} or ${NAME:-default}, and escape a literal $ as $$")
        name, op, arg = b.group("name"), b.group("op"), b.group("arg") or ""
        have = env.get(name)
        if op is None:
            return _value(name, env, path, warnings)
        empty = have is None or (op.startswith(":") and have == "")
        if op.endswith("-"):
            return arg if empty else have
        if op.endswith("+"):
            return "" if empty else arg
        if empty:  # ?: required
            raise ComposeError(f"{path}: required variable {name} is missing a value"
                               + (f": {arg}" if arg else "") + f" (set {name} in the "
                               "environment or in .env)")
        return have

    return _VAR.sub(one, value)


def _value(name: str, env: dict[str, str], path: str, warnings: list[str]) -> str:
    if name not in env:
        note = f"The {name!r} variable is not set. Defaulting to a blank string."
        if note not in warnings:
            warnings.append(note)
        return ""
    return env[name]


def _interpolate_all(data: Any, env: dict[str, str], at: list, warnings: list[str]) -> Any:
    if isinstance(data, dict):
        return {k: _interpolate_all(v, env, [*at, k], warnings) for k, v in data.items()}
    if isinstance(data, list):
        return [_interpolate_all(v, env, [*at, i], warnings) for i, v in enumerate(data)]
    if isinstance(data, str):
        return interpolate(data, env, path_text(at), warnings)
    return data


def parse_yaml(text: str, file: str) -> Any:
    """The YAML document; ComposeError with line and column for a syntax error or a key
    given twice."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise ComposeError(f"{file}, line {mark.line + 1}, column {mark.column + 1}: "
                                   f"key {key!r} is given twice in one mapping (first at line "
                                   f"{seen[key]}): keep one")
            seen[key] = key_node.start_mark.line + 1
        return loader.construct_mapping(node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ComposeError(f"{file}{where}: invalid YAML: {problem}: fix the YAML there "
                           "(indent with spaces, put a space after each colon)") from None


# ---- loading ---------------------------------------------------------------------------------

def load(files: list[str | Path] | None = None, *, project_name: str | None = None,
         project_directory: str | Path | None = None, environ: dict[str, str] | None = None,
         cwd: str | Path | None = None) -> Project:
    """Read, interpolate, validate and normalise a compose project (nothing is made)."""
    cwd = Path(cwd or os.getcwd())
    if files:
        paths = [Path(f) for f in files]  # errors name them as given
    else:
        found = find_file(Path(project_directory) if project_directory else cwd)
        paths = [Path(found.name) if found.parent == cwd else found]
    directory = (Path(project_directory) if project_directory else (cwd / paths[0]).parent
                 ).absolute()
    if project_directory and not directory.is_dir():
        raise ComposeError(f"project directory {directory} does not exist: give an "
                           "existing directory")
    env = read_dotenv(directory / ".env", ".env file") if (directory / ".env").is_file() else {}
    env.update(os.environ if environ is None else environ)
    warnings: list[str] = []
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            text = (cwd / path).read_text()
        except FileNotFoundError:
            raise ComposeError(f"compose file {path} not found: check the -f path") from None
        except OSError as exc:
            raise ComposeError(f"cannot read compose file {path}: {exc.strerror}") from None
        data = parse_yaml(text, str(path))
        if not isinstance(data, dict):
            validate(data, str(path))  # says what the top level must be
        data = _interpolate_all(data, env, [], warnings)
        # Compose v2's top-level name (newer than the vendored schema, which refuses it).
        top_name = data.pop("name", None) if isinstance(data, dict) else None
        if top_name is not None:
            merged["name"] = check_project_name(str(top_name))
        validate(data, str(path))
        merged = _merge(merged, data)
    top_name = merged.pop("name", None)
    name = project_name or env.get("COMPOSE_PROJECT_NAME") or top_name
    if name:
        check_project_name(name)
    else:
        name = normalise_name(directory.name)
        if not name:
            raise ComposeError(f"cannot make a project name from the directory "
                               f"{directory.name!r}: give one with -p NAME")
    project = Project(name=name, directory=directory, files=[cwd / p for p in paths],
                      services={}, networks={}, volumes={}, warnings=warnings)
    try:
        _normalise(project, merged, env)
    except ComposeError as exc:  # named after the file, as the schema's errors are
        if len(paths) > 1:
            raise
        raise ComposeError(f"{paths[0]}: {exc}") from None
    return project


def _merge(base: dict, over: dict) -> dict:
    """Several -f files: later ones extend and override earlier ones, key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) \
            else v
    return out


def _resources(project: Project, data: dict, kind: str) -> dict[str, Resource]:
    out = {}
    for key, opts in (data.get(kind) or {}).items():
        opts = opts or {}
        ext = opts.get("external")
        external = bool(ext)
        name = opts.get("name") or (ext.get("name") if isinstance(ext, dict) else None) or (
            key if external else f"{project.name}_{key}")
        if opts.get("driver") not in (None, "local" if kind == "volumes" else "bridge"):
            raise ComposeError(f"{kind}.{key}.driver: edu compose supports only the "
                               f"{'local' if kind == 'volumes' else 'bridge'} driver: remove "
                               "the driver key")
        out[key] = Resource(key, name, external)
    return out


def _normalise(project: Project, data: dict, env: dict[str, str]) -> None:
    project.networks = _resources(project, data, "networks")
    project.volumes = _resources(project, data, "volumes")
    for name, raw in data["services"].items():
        project.services[name] = _service(project, name, raw or {}, env)
    uses_default = any(s.network == "default" for s in project.services.values())
    if uses_default and "default" not in project.networks:
        project.networks["default"] = Resource("default", f"{project.name}_default")
    for name, svc in project.services.items():
        for dep in svc.depends_on:
            if dep not in project.services:
                raise ComposeError(f"services.{name}.depends_on: service {name!r} depends on "
                                   f"undefined service {dep!r}: define {dep} under services, "
                                   "or remove it from depends_on")
    _check_cycles(project)
    names: dict[str, str] = {}
    for name in project.services:
        cname = project.container_name(name)
        if cname in names:
            raise ComposeError(f"services.{name}.container_name: {cname!r} is also "
                               f"service {names[cname]}'s container name: give each its own")
        names[cname] = name


def _check_cycles(project: Project) -> None:
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = trail[trail.index(name):] + [name]
            raise ComposeError(f"dependency cycle detected: {' -> '.join(cycle)}: remove "
                               "one of these depends_on entries")
        state[name] = 1
        for dep in project.services[name].depends_on:
            visit(dep, [*trail, name])
        state[name] = 2

    for name in project.services:
        visit(name, [])


def _words(value: Any, path: str) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    try:
        return shlex.split(str(value))
    except ValueError as exc:
        raise ComposeError(f"{path}: cannot split {value!r} into words ({exc}): check its "
                           "quotes, or write it as a list") from None


def _str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _key_values(value: Any, env: dict[str, str], path: str) -> dict[str, str]:
    """environment, labels, build args: a list of KEY[=VALUE] or a mapping; a key without a
    value takes the project environment's (and is left out when that has none)."""
    out: dict[str, str] = {}
    items = value.items() if isinstance(value, dict) else (
        (k, v if eq else None) for k, eq, v in (s.partition("=") for s in value or []))
    for key, val in items:
        if val is None:
            if key in env:
                out[key] = env[key]
        else:
            out[key] = _str(val)
    return out


def _service(project: Project, name: str, raw: dict, env: dict[str, str]) -> Service:
    at = f"services.{name}"
    build = raw.get("build")
    if build is not None:
        build = {"context": build} if isinstance(build, str) else dict(build)
        context = project.directory / str(build.get("context") or ".")
        if not context.is_dir():
            raise ComposeError(f"{at}.build.context: {context} is not a directory: give the "
                               "directory that holds the Dockerfile")
        dockerfile = build.get("dockerfile")
        build = {"context": str(context),
                 "dockerfile": str(context / dockerfile) if dockerfile else None,
                 "args": _key_values(build.get("args") or {}, env, f"{at}.build.args"),
                 "target": build.get("target")}
    image = raw.get("image")
    if not image and build is None:
        raise ComposeError(f"{at}: service {name!r} has neither an image nor a build context "
                           "specified: add image: NAME or build: DIRECTORY")
    svc = Service(name=name, image=str(image or f"{project.name}-{name}"), build=build)
    from ..images.reference import ReferenceError, parse

    try:
        parse(svc.image)
    except ReferenceError as exc:
        raise ComposeError(f"{at}.image: {exc}") from None
    if "command" in raw and raw["command"] is not None:
        svc.command = _words(raw["command"], f"{at}.command")
    if "entrypoint" in raw and raw["entrypoint"] is not None:
        svc.entrypoint = _words(raw["entrypoint"], f"{at}.entrypoint")
    env_files = raw.get("env_file") or []
    for i, f in enumerate([env_files] if isinstance(env_files, str) else env_files):
        try:
            svc.environment.update(read_dotenv(project.directory / f))
        except ComposeError as exc:
            raise ComposeError(f"{at}.env_file[{i}]: {exc}") from None
    svc.environment.update(_key_values(raw.get("environment") or {}, env,
                                       f"{at}.environment"))
    svc.labels = _key_values(raw.get("labels") or {}, env, f"{at}.labels")
    for i, port in enumerate(raw.get("ports") or []):
        svc.ports += _ports(port, f"{at}.ports[{i}]")
    from ..networks import nat

    try:
        nat.parse_publish(svc.ports)
    except nat.PortError as exc:
        raise ComposeError(f"{at}.ports: {exc}") from None
    for i, vol in enumerate(raw.get("volumes") or []):
        svc.volumes.append(_volume(project, vol, f"{at}.volumes[{i}]"))
    from .. import volumes

    try:
        volumes.check(svc.volumes)
    except volumes.VolumeError as exc:
        raise ComposeError(f"{at}.volumes: {exc}") from None
    nets = raw.get("networks")
    if nets:
        keys = list(nets)
        if len(keys) > 1:
            raise ComposeError(f"{at}.networks: edu compose puts a service on one network, "
                               f"and this one lists {len(keys)} ({', '.join(keys)}): keep one")
        svc.network = keys[0]
        if isinstance(nets, dict):
            svc.aliases = [str(a) for a in (nets[keys[0]] or {}).get("aliases") or []]
        if svc.network not in project.networks and svc.network != "default":
            raise ComposeError(f"{at}.networks: service {name!r} refers to undefined network "
                               f"{svc.network!r}: declare it under the top-level networks key")
    deps = raw.get("depends_on") or {}
    svc.depends_on = {d: (deps[d] or {}).get("condition", "service_started")
                      if isinstance(deps, dict) else "service_started" for d in deps}
    restart = str(raw.get("restart") or "no")
    policy, colon, retries = restart.partition(":")
    if policy == "unless-stopped" and not colon:
        restart = "always"  # edu has no daemon to restart: the two differ only there
    elif not ((policy in ("no", "always") and not colon)
              or (policy == "on-failure" and (not colon or retries.isdigit()))):
        raise ComposeError(f"{at}.restart: invalid restart policy {restart!r}: use no, "
                           "always, on-failure[:N] or unless-stopped")
    svc.restart = restart
    if raw.get("healthcheck") is not None:
        svc.healthcheck = _healthcheck(raw["healthcheck"], f"{at}.healthcheck")
    from ..life import states

    for key in ("container_name", "hostname", "working_dir", "user"):
        if raw.get(key) is not None:
            setattr(svc, key, str(raw[key]))
    try:
        if svc.container_name:
            states.valid_name(svc.container_name)
        if svc.hostname:
            states.valid_hostname(svc.hostname)
        if svc.working_dir:
            states.valid_workdir(svc.working_dir)
        for a in [name, *svc.aliases]:
            states.valid_alias(a)
    except ValueError as exc:
        raise ComposeError(f"{at}: {exc}") from None
    svc.init, svc.read_only = bool(raw.get("init")), bool(raw.get("read_only"))
    svc.cap_add, svc.cap_drop = list(raw.get("cap_add") or []), list(raw.get("cap_drop") or [])
    svc.mem_limit, svc.pids_limit = raw.get("mem_limit"), raw.get("pids_limit")
    svc.cpus = float(raw["cpus"]) if raw.get("cpus") is not None else None
    if raw.get("logging"):  # docker run's --log-driver and --log-opt
        from ..life import logs

        driver = raw["logging"].get("driver")
        opts = {k: str(v) for k, v in (raw["logging"].get("options") or {}).items()
                if v is not None}
        try:
            svc.logging = {"driver": driver, "options": logs.check(driver, opts)}
        except logs.LogOptError as exc:
            raise ComposeError(f"{at}.logging: {exc}") from None
    return svc


def _ports(port: Any, path: str) -> list[str]:
    """One ports entry as ``edu run -p`` values (a range becomes one value per port)."""
    if isinstance(port, dict):
        if port.get("mode", "ingress") not in ("ingress", "host"):
            raise ComposeError(f"{path}.mode: use host or ingress")
        host = str(port.get("published") or "")
        ip = port.get("host_ip") or ""
        spec = ":".join(p for p in (ip, host) if p or ip) + (":" if host or ip else "")
        if not port.get("target"):
            raise ComposeError(f"{path}: a port in the long form needs a target (the "
                               "container's port): add target: PORT")
        return [f"{spec}{port['target']}/{port.get('protocol') or 'tcp'}"]
    if isinstance(port, int) and port > 65535:
        raise ComposeError(f"{path}: {port} is not a port: YAML reads an unquoted HOST:CONTAINER "
                           "such as 8080:80 as a base-60 number, so quote it: \"8080:80\"")
    text = str(port)
    rest, slash, proto = text.partition("/")
    parts = rest.split(":")
    if len(parts) > 3 or not parts[-1]:
        raise ComposeError(f"{path}: invalid port specification {text!r}: the form is "
                           "[IP:][HOST:]CONTAINER[/PROTOCOL]")
    ip = parts[0] if len(parts) == 3 else None
    inner = _range(parts[-1], path, text)
    outer = _range(parts[-2], path, text) if len(parts) >= 2 and parts[-2] else None
    if outer is not None and len(outer) != len(inner):
        raise ComposeError(f"{path}: invalid port specification {text!r}: the host range "
                           "and the container range must have the same length")
    out = []
    for i, cport in enumerate(inner):
        host = "" if outer is None else str(outer[i])
        front = [] if ip is None else [ip]
        spec = ":".join([*front, host, str(cport)]) if (len(parts) >= 2) else str(cport)
        out.append(spec + slash + proto)
    from ..networks import nat

    for spec in out:
        try:
            nat.parse_port(spec)
        except nat.PortError as exc:
            raise ComposeError(f"{path}: {exc}") from None
    return out


def _range(text: str, path: str, spec: str) -> list[int]:
    lo, dash, hi = text.partition("-")
    if not (lo.isdigit() and (not dash or hi.isdigit())):
        raise ComposeError(f"{path}: invalid port specification {spec!r}: {text!r} is not "
                           "a port number or a range such as 8000-8001")
    lo_n, hi_n = int(lo), int(hi) if dash else int(lo)
    if hi_n < lo_n:
        raise ComposeError(f"{path}: invalid port range {text!r} in {spec!r}: the range ends "
                           "before it starts")
    return list(range(lo_n, hi_n + 1))


def _volume(project: Project, vol: Any, path: str) -> str:
    """One volumes entry as an ``edu run -v`` value."""
    if isinstance(vol, dict):
        kind, source, target = vol.get("type"), vol.get("source"), vol.get("target")
        if kind not in ("volume", "bind"):
            raise ComposeError(f"{path}.type: edu compose mounts volume and bind, not "
                               f"{kind!r}: use one of those")
        if not target:
            raise ComposeError(f"{path}: a {kind} mount needs a target: add target: /path")
        modes = (["ro"] if vol.get("read_only") else []) + (
            ["nocopy"] if (vol.get("volume") or {}).get("nocopy") else [])
        if kind == "bind" and not source:
            raise ComposeError(f"{path}: a bind mount needs a source: add source: ./dir")
        short = f"{source}:{target}" if source else str(target)
        if modes:
            short += ":" + ",".join(modes)
        if kind == "volume" and source and source.startswith((".", "/", "~")):
            raise ComposeError(f"{path}.source: a volume's source is a volume name, not a "
                               "path: use type: bind for a host directory")
        if kind == "bind":
            return _bind(project, short, path)
        vol = short
    text = str(vol)
    parts = text.split(":")
    if len(parts) == 1:
        return text  # an anonymous volume
    source = parts[0]
    if source.startswith((".", "/", "~")):
        return _bind(project, text, path)
    if source not in project.volumes:
        raise ComposeError(f"{path}: service refers to undefined volume {source!r}: declare "
                           f"it under the top-level volumes key (volumes: {{{source}: {{}}}})")
    return ":".join([project.volumes[source].name, *parts[1:]])


def _bind(project: Project, text: str, path: str) -> str:
    source, _, rest = text.partition(":")
    host = Path(os.path.expanduser(source))
    if not host.is_absolute():
        host = project.directory / host
    return f"{os.path.normpath(host)}:{rest}"


def _healthcheck(raw: dict, path: str) -> dict[str, Any]:
    """Compose's healthcheck keys as Docker's HealthConfig (durations in nanoseconds)."""
    from ..images.dockerfile import DockerfileError, duration_ns
    from ..life import health

    if raw.get("disable"):
        return {"Test": ["NONE"]}
    test = raw.get("test")
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    config: dict[str, Any] = {"Test": list(test or [])}
    for key, field_ in (("interval", "Interval"), ("timeout", "Timeout"),
                        ("start_period", "StartPeriod")):
        if raw.get(key) is not None:
            try:
                config[field_] = duration_ns(str(raw[key]))
            except DockerfileError as exc:
                raise ComposeError(f"{path}.{key}: {exc.message} (write it as 500ms, 30s, "
                                   "1m30s)") from None
    if raw.get("retries") is not None:
        config["Retries"] = int(raw["retries"])
    try:
        return health.check(config)
    except health.HealthcheckError as exc:
        raise ComposeError(f"{path}: {exc}") from None
