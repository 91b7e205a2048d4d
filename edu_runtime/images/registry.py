"""Talking to a registry: ``docker pull``, ``push``, ``search``, ``login``, over plain HTTP calls.

A registry is a web server that keeps what the image store keeps: blobs named by their sha256,
and manifests that list them (the Registry HTTP API v2, which OCI standardised as the
distribution spec). Pulling is reading a manifest, then fetching each blob it names and checking
that its bytes hash to that name; pushing is the reverse: upload the blobs the registry lacks,
then the manifest. Nothing on the way is trusted (a proxy, a cache, a damaged disk can change
bytes): the digest is what catches it, so every blob is hashed as it streams to disk.

It is written on ``http.client`` from the standard library because the protocol is a dozen
requests and ``edu`` pays every import at start-up. What the code does is what Docker does:

- **Manifests** come as Docker schema 2 or OCI; a *manifest list* (OCI: *index*) names one
  manifest per platform, and the one for this host (linux/amd64 here) is chosen.
- **Auth** follows the registry's ``WWW-Authenticate`` answer to a 401: nothing (anonymous),
  ``Basic`` (the stored login on every request), or ``Bearer realm=...,service=...,scope=...``:
  ask the token service at *realm* for a token for that *scope* (Docker Hub works this way), with
  the stored login if there is one, and send the token instead.
- **Uploads** start with ``POST /v2/<name>/blobs/uploads/`` and end with ``PUT ...?digest=``,
  in one request or in ``PATCH`` chunks for large blobs. A blob the registry has is skipped
  (``HEAD``); one it has in another repository is *mounted* from there
  (``POST ...?mount=<digest>&from=<repo>``), which costs no upload at all.
- **Logins** live in ``config.json`` under ``paths.config_dir()`` (``~/.edu``, or
  ``$EDU_CONFIG``), mode 600, in Docker's ``{"auths": {REGISTRY: {"auth": base64(user:pass)}}}``.
- **Plain HTTP** is used for loopback registries (127.0.0.0/8, ::1, localhost), as Docker does,
  and for those named in ``$EDU_INSECURE_REGISTRIES`` or with ``--insecure``; HTTPS otherwise.

A pull downloads into the store's staging dir and adds the image in one store transaction, so a
pull that fails half-way (a digest mismatch, a dropped connection) leaves the store as it was.
The registry is not trusted either: a layer blob larger than ``EDU_MAX_LAYER_BYTES`` (see
``layers``) is not downloaded, a body that ends early or runs long is refused, redirects are
followed only to http(s) URLs and at most 10 times (as Docker's Go client), and a single-platform
image is checked against its config's architecture, as an index entry is against its platform.

Introduced in notebooks/04-images.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import ipaddress
import json
import os
import platform
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode, urljoin, urlsplit

from .. import paths
from .reference import DEFAULT_REGISTRY, Reference, parse
from .store import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    NO_SPACE,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Image,
    Store,
    StoreError,
    full_disk,
    sha256_bytes,
    write_atomic,
)

DOCKER_INDEX = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
IMAGE_MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_INDEX)
CONFIGS = (OCI_CONFIG, DOCKER_CONFIG)
LAYERS = (OCI_LAYER_GZIP, DOCKER_LAYER_GZIP, OCI_LAYER, DOCKER_LAYER)
ACCEPT = ", ".join(IMAGE_MANIFESTS + INDEXES)
SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
           "application/vnd.docker.distribution.manifest.v1+prettyjws")

DOCKER_HUB_HOST = "registry-1.docker.io"  # where docker.io's API answers
DOCKER_HUB_KEY = "https://index.docker.io/v1/"  # how Docker's config.json names Docker Hub
INSECURE_ENV = "EDU_INSECURE_REGISTRIES"  # comma-separated registries spoken to over HTTP
RECORD = "registry-repos.json"  # in the store: which repositories each blob went to or came from

MAX_JSON = 4 << 20  # manifests and configs are a few KB; a long history a few hundred
CHUNK = 1 << 20
UPLOAD_CHUNK = 64 << 20  # blobs larger than this go up in PATCH chunks of this size
TIMEOUT = 30.0
CATALOG_PAGE = 100
MAX_REDIRECTS = 10  # Go's http.Client stops after 10, and so does docker pull
REPOS_PER_BLOB = 5

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
_REDIRECTS = (301, 302, 303, 307, 308)


class RegistryError(StoreError):
    """A registry operation failed; the message says what failed and how to fix it."""


class AuthError(RegistryError):
    """The registry wants a login, or refused the one it was given."""


class NotFound(RegistryError):
    """The registry has no such repository, tag or digest."""


class NoCatalog(RegistryError):
    """The registry offers no catalog to search (Docker Hub, most hosted registries)."""


# ---- logins -------------------------------------------------------------------------------

def config_path() -> Path:
    """The file that keeps registry logins: ``config.json`` in ``paths.config_dir()``."""
    return paths.config_dir() / "config.json"


def normalize_registry(text: str) -> str:
    """``https://host:5000/`` or ``index.docker.io`` as the registry name edu uses."""
    name = text.strip().removeprefix("https://").removeprefix("http://").rstrip("/")
    return DEFAULT_REGISTRY if name in ("index.docker.io", DOCKER_HUB_HOST, "") else name


def _auth_key(registry: str) -> str:
    registry = normalize_registry(registry)
    return DOCKER_HUB_KEY if registry == DEFAULT_REGISTRY else registry


def _read_config() -> dict[str, Any]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise RegistryError(f"{path} is not valid JSON ({exc}): repair it, or delete it and "
                            "log in again.") from None
    return data if isinstance(data, dict) else {}


def _write_config(data: dict[str, Any]) -> Path:
    """Write config.json atomically, readable by its owner only (it holds passwords)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def stored_login(registry: str) -> tuple[str, str] | None:
    """The (user, password) kept for ``registry`` by ``edu login``, or None."""
    entry = _read_config().get("auths", {}).get(_auth_key(registry))
    auth = entry.get("auth") if isinstance(entry, dict) else None
    if not auth:
        return None
    try:
        user, _, password = base64.b64decode(auth, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise RegistryError(f"the login kept for {registry} in {config_path()} is damaged: "
                            f"log in again with 'edu login {registry}'.") from None
    return user, password


def save_login(registry: str, user: str, password: str) -> Path:
    """Keep a login as Docker does (base64 of ``user:password``); return the file's path."""
    data = _read_config()
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    data.setdefault("auths", {})[_auth_key(registry)] = {"auth": token}
    return _write_config(data)


def remove_login(registry: str) -> bool:
    """Forget the login for ``registry``; False if there was none."""
    data = _read_config()
    if data.get("auths", {}).pop(_auth_key(registry), None) is None:
        return False
    _write_config(data)
    return True


# ---- where and how to connect -------------------------------------------------------------

def plain_http(registry: str, insecure: bool = False) -> bool:
    """True if ``registry`` is spoken to over HTTP: loopback (as Docker does), or named insecure."""
    named = {r.strip() for r in os.environ.get(INSECURE_ENV, "").split(",") if r.strip()}
    if insecure or registry in named:
        return True
    host = urlsplit(f"//{registry}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_platform() -> tuple[str, str]:
    """This machine's (os, architecture) in OCI's words: ``("linux", "amd64")``."""
    return "linux", _ARCH.get(platform.machine(), platform.machine())


def _scope(repo: str, actions: str = "pull") -> str:
    return f"repository:{repo}:{actions}"


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` as ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


def _basic(credentials: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(":".join(credentials).encode()).decode()


def _error_detail(resp: http.client.HTTPResponse) -> str:
    """The registry's own words from an error body (``{"errors": [{"code", "message"}]}``)."""
    body = resp.read(64 << 10)
    try:
        errors = json.loads(body).get("errors") or []
        words = "; ".join(f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors)
    except (ValueError, AttributeError):
        words = ""
    return f": {words}" if words else ""


class _FileBody:
    """``length`` bytes of a file from ``offset``, counted as sent; reopened for a retry."""

    def __init__(self, path: Path, offset: int, length: int, on_bytes: Callable[[int], object]):
        self.path, self.offset, self.length, self.on_bytes = path, offset, length, on_bytes

    @contextlib.contextmanager
    def open(self) -> Iterator[_FileBody]:
        """Open the file at ``offset``: this object is then the body to send."""
        with open(self.path, "rb") as self._f:
            self._f.seek(self.offset)
            self._left = self.length
            yield self

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes, never past ``length``."""
        size = self._left if size < 0 else min(size, self._left)
        data = self._f.read(size)
        self._left -= len(data)
        self.on_bytes(len(data))
        return data


class Client:
    """One registry's HTTP API v2, with the auth it asks for, over kept-alive connections."""

    def __init__(self, registry: str, *, credentials: tuple[str, str] | None = None,
                 use_stored: bool = True, insecure: bool = False, timeout: float = TIMEOUT):
        self.registry = normalize_registry(registry)
        host = DOCKER_HUB_HOST if self.registry == DEFAULT_REGISTRY else self.registry
        self.base = f"{'http' if plain_http(self.registry, insecure) else 'https'}://{host}"
        if credentials is None and use_stored:
            credentials = stored_login(self.registry)
        self.credentials = credentials
        self.timeout = timeout
        self._conns: dict[tuple[str, str], http.client.HTTPConnection] = {}
        self._mode: str | None = None  # "basic" or "bearer", once the registry has said
        self._bearer: dict[str, str] = {}
        self._tokens: dict[tuple[str, ...], str] = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection."""
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    # ---- one HTTP exchange ----------------------------------------------------------------

    def _send(self, method: str, url: str, headers: dict[str, str],
              body: bytes | _FileBody | None = None, redirects: int = MAX_REDIRECTS
              ) -> http.client.HTTPResponse:
        """One request on a kept-alive connection, following redirects for GET and HEAD."""
        url = urljoin(self.base, url)
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        for attempt in (1, 2):
            conn = self._conns.get(key)
            reused = conn is not None
            if conn is None:
                cls = http.client.HTTPSConnection if parts.scheme == "https" \
                    else http.client.HTTPConnection
                conn = self._conns[key] = cls(parts.netloc, timeout=self.timeout,
                                              blocksize=CHUNK)
            try:
                if isinstance(body, _FileBody):
                    with body.open() as data:
                        conn.request(method, target, body=data, headers=headers)
                else:
                    conn.request(method, target, body=body, headers=headers)
                resp = conn.getresponse()
                break
            except (http.client.RemoteDisconnected, http.client.CannotSendRequest,
                    ConnectionResetError, BrokenPipeError) as exc:
                self._drop(key)
                if reused and attempt == 1:
                    continue  # the server had closed a kept-alive connection: once more
                raise self._unreachable(exc, parts.scheme, parts.netloc) from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop(key)
                raise self._unreachable(exc, parts.scheme, parts.netloc) from None
        if resp.status in _REDIRECTS and method in ("GET", "HEAD"):
            location = urljoin(url, resp.getheader("Location", ""))
            resp.read()
            if not redirects:
                raise RegistryError(f"{self.registry} redirected {target[:80]} more than "
                                    f"{MAX_REDIRECTS} times (a loop): the registry or a proxy "
                                    "in front of it is misconfigured. Nothing was stored.")
            if urlsplit(location).scheme not in ("http", "https"):
                raise RegistryError(f"{self.registry} redirected {target[:80]} to "
                                    f"{location[:80]!r}, which is not an http or https URL: "
                                    "refused. Nothing was stored.")
            if urlsplit(location).netloc != parts.netloc:  # never send a login elsewhere
                headers = {k: v for k, v in headers.items() if k != "Authorization"}
            return self._send(method, location, headers, None, redirects - 1)
        return resp

    def _drop(self, key: tuple[str, str]) -> None:
        conn = self._conns.pop(key, None)
        if conn is not None:
            conn.close()

    def _unreachable(self, exc: OSError | http.client.HTTPException, scheme: str,
                     netloc: str) -> RegistryError:
        host = urlsplit(f"//{netloc}").hostname
        if isinstance(exc, ConnectionRefusedError):
            why = "the connection was refused: nothing listens on that port"
        elif isinstance(exc, socket.gaierror):
            why = f"the name {host} does not resolve (DNS: {exc.strerror})"
        elif isinstance(exc, TimeoutError):
            why = f"it did not answer within {self.timeout:g} s"
        elif isinstance(exc, http.client.HTTPException):
            why = (f"it did not answer in HTTP ({type(exc).__name__}); if it speaks HTTPS, "
                   f"leave out --insecure and remove it from {INSECURE_ENV}")
        elif isinstance(exc, ssl.SSLCertVerificationError):
            why = (f"its TLS certificate is not trusted here ({exc.verify_message}). Add the "
                   "CA that signed it to /usr/local/share/ca-certificates and run "
                   "update-ca-certificates")
        elif isinstance(exc, ssl.SSLError):
            why = (f"the TLS handshake failed ({exc.reason or exc}). If it speaks plain HTTP, "
                   f"allow that with --insecure or {INSECURE_ENV}={netloc}")
        else:
            why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return RegistryError(f"Cannot reach the registry at {scheme}://{netloc}: {why}. Check "
                             "the address and that the registry is running.")

    # ---- auth -----------------------------------------------------------------------------

    def request(self, method: str, url: str, scopes: list[str], what: str, *,
                headers: dict[str, str] | None = None, body: bytes | _FileBody | None = None
                ) -> http.client.HTTPResponse:
        """Send a request with the auth the registry asks for; AuthError if it stays 401."""
        for attempt in (1, 2):
            resp = self._send(method, url, {**self._auth(scopes), **(headers or {})}, body)
            if resp.status != 401:
                return resp
            challenge = resp.getheader("WWW-Authenticate", "")
            detail = _error_detail(resp)
            if attempt == 2 or not self._accept(challenge, scopes):
                break
        if self.credentials is None:
            raise AuthError(f"{self.registry} wants a login to {what} (HTTP 401 unauthorized"
                            f"{detail}): log in first with 'edu login {self.registry}'.")
        raise AuthError(f"{self.registry} does not let {self.credentials[0]} {what} (HTTP 401 "
                        f"unauthorized{detail}): check that this account may do that, or log "
                        f"in again with 'edu login {self.registry}'.")

    def _auth(self, scopes: list[str]) -> dict[str, str]:
        if self._mode == "basic" and self.credentials:
            return {"Authorization": _basic(self.credentials)}
        if self._mode == "bearer":
            return {"Authorization": f"Bearer {self._token(scopes)}"}
        return {}

    def _accept(self, challenge: str, scopes: list[str]) -> bool:
        """Take up a 401's challenge; False if there is nothing new to answer it with."""
        scheme, params = _parse_challenge(challenge)
        if scheme == "basic":
            if self.credentials is None or self._mode == "basic":
                return False
            self._mode = "basic"
            return True
        if scheme == "bearer" and params.get("realm"):
            self._mode, self._bearer = "bearer", params
            self._tokens.pop(tuple(scopes), None)  # expired, or too narrow: ask again
            return True
        return False

    def _token(self, scopes: list[str]) -> str:
        """A bearer token for ``scopes`` from the registry's token service (cached)."""
        key = tuple(scopes)
        if key in self._tokens:
            return self._tokens[key]
        realm = self._bearer["realm"]
        query = [("service", self._bearer["service"])] if self._bearer.get("service") else []
        query += [("scope", s) for s in scopes]
        headers = {}
        if self.credentials:
            query.append(("account", self.credentials[0]))
            headers["Authorization"] = _basic(self.credentials)
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        resp = self._send("GET", url, headers)
        if resp.status != 200:
            detail = _error_detail(resp)
            if self.credentials:
                raise AuthError(f"the token service of {self.registry} ({realm}) refused the "
                                f"login of {self.credentials[0]} (HTTP {resp.status}{detail}): "
                                "check the user name and password, then log in again with "
                                f"'edu login {self.registry}'.")
            raise AuthError(f"the token service of {self.registry} ({realm}) gives no anonymous "
                            f"token (HTTP {resp.status}{detail}): log in first with "
                            f"'edu login {self.registry}'.")
        try:
            answer = json.loads(resp.read(MAX_JSON))
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{realm}, which {self.registry} names as its token service, "
                                "answered without a token: it is not a Docker token service.")
        self._tokens[key] = token
        return token

    def _fail(self, resp: http.client.HTTPResponse, what: str) -> RegistryError:
        """An error for an answer that was not the one expected."""
        detail = _error_detail(resp)
        if resp.status == 403:
            return AuthError(f"Cannot {what}: {self.registry} forbids it (HTTP 403{detail}). "
                             "Use an account that may do this: 'edu login "
                             f"{self.registry}'.")
        if resp.status == 404:
            hint = "The registry lacks part of the image: have it pushed again."
        elif resp.status >= 500:
            hint = "The registry itself failed: try again later, or read its log."
        else:
            hint = "The registry does not accept this request from edu."
        return RegistryError(f"Cannot {what}: {self.registry} answered HTTP {resp.status} "
                             f"{resp.reason}{detail}. {hint}")

    # ---- the API --------------------------------------------------------------------------

    def check_login(self) -> None:
        """Prove the credentials work: ``GET /v2/``, answering whatever challenge comes."""
        resp = self.request("GET", "/v2/", [], "log in")
        if resp.status != 200:
            raise self._fail(resp, f"log in to {self.registry}")
        resp.read()

    def manifest(self, repo: str, reference: str) -> tuple[bytes, str, str]:
        """The manifest or index that a tag or digest names: (bytes, media type, digest)."""
        sep = "@" if reference.startswith("sha256:") else ":"
        name = f"{self.registry}/{repo}{sep}{reference}"
        resp = self.request("GET", f"/v2/{repo}/manifests/{reference}", [_scope(repo)],
                            f"pull {name}", headers={"Accept": ACCEPT})
        if resp.status == 404:
            detail = _error_detail(resp).removeprefix(": ") or "manifest unknown"
            hint = "" if self.registry == DEFAULT_REGISTRY else \
                f"; 'edu search {self.registry}/{repo.rsplit('/', 1)[-1]}' lists what it holds"
            raise NotFound(f"No such image in {self.registry}: {repo}{sep}{reference} "
                           f"({detail}). Check the name and the tag{hint}.")
        if resp.status != 200:
            raise self._fail(resp, f"pull {name}")
        data = _read_json_bytes(resp, f"the manifest of {name}")
        digest = sha256_bytes(data)
        promised = reference if sep == "@" else resp.getheader("Docker-Content-Digest", "")
        if promised.startswith("sha256:") and promised != digest:
            raise RegistryError(f"the manifest of {name} hashes to {digest}, but the registry "
                                f"names it {promised}: it was altered on the way, or the "
                                "registry is damaged. Nothing was stored.")
        media = (resp.getheader("Content-Type") or "").split(";")[0].strip()
        return data, media, digest

    def has_blob(self, repo: str, digest: str, scopes: list[str]) -> bool:
        """``HEAD`` a blob: does this repository have it already?"""
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scopes,
                            f"push to {self.registry}/{repo}")
        resp.read()
        if resp.status in (200, 404):
            return resp.status == 200
        raise self._fail(resp, f"check for blob {digest[:19]}... in {self.registry}/{repo}")

    def blob(self, repo: str, desc: dict[str, Any], what: str) -> bytes:
        """A small blob (a config) read whole and verified against its descriptor."""
        resp = self._get_blob(repo, desc["digest"], what)
        data = _read_json_bytes(resp, what)
        self._verify(desc, sha256_bytes(data), len(data), what)
        return data

    def download(self, repo: str, desc: dict[str, Any], dest: Path,
                 on_bytes: Callable[[int], object], what: str) -> None:
        """Stream a blob into ``dest``, hashed on the way; refused unless it is as promised."""
        resp = self._get_blob(repo, desc["digest"], what)
        h, count = hashlib.sha256(), 0
        with open(dest, "wb") as out:
            try:
                while chunk := resp.read(CHUNK):
                    count += len(chunk)
                    if count > desc["size"]:
                        break  # longer than promised: the check below refuses it
                    h.update(chunk)
                    out.write(chunk)
                    on_bytes(len(chunk))
            except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:
                self.close()
                why = str(exc) or type(exc).__name__
                raise RegistryError(f"the download of {what} from {self.registry} broke off "
                                    f"after {count} of {desc['size']} bytes ({why}). Nothing "
                                    "was stored; pull again.") from None
        if count > desc["size"]:
            self.close()  # the rest of the body is unread: this connection is spent
        elif count < desc["size"] and resp.length:  # the server promised more, then hung up
            self.close()
            raise RegistryError(f"the download of {what} ({desc['digest'][:19]}...) from "
                                f"{self.registry} broke off after {count} of {desc['size']} "
                                f"bytes (the connection closed {resp.length} bytes early). "
                                "Nothing was stored; pull again.")
        self._verify(desc, "sha256:" + h.hexdigest(), count, what)

    def _get_blob(self, repo: str, digest: str, what: str) -> http.client.HTTPResponse:
        resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", [_scope(repo)],
                            f"pull {self.registry}/{repo}")
        if resp.status != 200:
            raise self._fail(resp, f"download {what}")
        return resp

    def _verify(self, desc: dict[str, Any], digest: str, size: int, what: str) -> None:
        if digest != desc["digest"] or size != desc["size"]:
            raise RegistryError(f"{what} from {self.registry} is damaged: its {size} bytes hash "
                                f"to {digest}, but the manifest promises {desc['size']} bytes "
                                f"with the digest {desc['digest']}. The registry's copy is "
                                "corrupt or was changed on the way. Nothing was stored; have "
                                "the image pushed again.")

    def upload(self, repo: str, digest: str, path: Path, size: int, *,
               mount_from: str | None = None, on_bytes: Callable[[int], object] = lambda n: None,
               chunk_size: int = UPLOAD_CHUNK) -> str:
        """Upload a blob, or mount it from ``mount_from``: ``Pushed`` or ``Mounted from R``."""
        what = f"push to {self.registry}/{repo}"
        scopes = [_scope(repo, "pull,push")]
        resp = None
        if mount_from:
            query = urlencode({"mount": digest, "from": mount_from})
            try:
                resp = self.request("POST", f"/v2/{repo}/blobs/uploads/?{query}",
                                    scopes + [_scope(mount_from)], what)
            except AuthError:
                resp = None  # may not read the other repository: upload it instead
            if resp is not None and resp.status == 201:
                resp.read()
                return f"Mounted from {mount_from}"
        if resp is None or resp.status != 202:  # 202 after a mount: an upload began instead
            if resp is not None:
                resp.read()
            resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", scopes, what)
        location = self._location(resp, 202, what)
        offset = 0
        while size - offset > chunk_size:  # chunked: PATCH a piece at a time
            body = _FileBody(path, offset, chunk_size, on_bytes)
            resp = self.request("PATCH", location, scopes, what, body=body, headers={
                "Content-Type": "application/octet-stream", "Content-Length": str(chunk_size),
                "Content-Range": f"{offset}-{offset + chunk_size - 1}"})
            location = self._location(resp, 202, what)
            offset += chunk_size
        sep = "&" if "?" in location else "?"
        body = _FileBody(path, offset, size - offset, on_bytes)
        resp = self.request("PUT", f"{location}{sep}{urlencode({'digest': digest})}", scopes,
                            what, body=body, headers={
                                "Content-Type": "application/octet-stream",
                                "Content-Length": str(size - offset)})
        if resp.status == 400:
            raise RegistryError(f"{self.registry} refused blob {digest[:19]}... as damaged"
                                f"{_error_detail(resp)}: the store's copy no longer matches "
                                "its digest. Remove the image and pull or load it again.")
        self._location(resp, 201, what)
        return "Pushed"

    def _location(self, resp: http.client.HTTPResponse, status: int, what: str) -> str:
        if resp.status != status:
            raise self._fail(resp, what)
        resp.read()
        return urljoin(self.base, resp.getheader("Location", ""))

    def put_manifest(self, repo: str, tag: str, data: bytes, media: str) -> str:
        """``PUT`` a manifest under a tag; return its digest."""
        what = f"push to {self.registry}/{repo}"
        resp = self.request("PUT", f"/v2/{repo}/manifests/{tag}", [_scope(repo, "pull,push")],
                            what, body=data, headers={"Content-Type": media})
        if resp.status != 201:
            raise self._fail(resp, f"push the manifest of {self.registry}/{repo}:{tag}")
        resp.read()
        return resp.getheader("Docker-Content-Digest") or sha256_bytes(data)

    def catalog(self, page_size: int = CATALOG_PAGE) -> Iterator[str]:
        """Every repository name in ``/v2/_catalog``, page after page (the ``Link`` header)."""
        url: str | None = f"/v2/_catalog?n={page_size}"
        while url:
            try:
                resp = self.request("GET", url, ["registry:catalog:*"], "list its catalog")
            except AuthError as exc:
                raise NoCatalog(f"{self.registry} does not let edu list its catalog ({exc}) "
                                "Many registries keep it private; Docker Hub has none.") from None
            if resp.status in (400, 403, 404, 405, 501):
                resp.read()
                raise NoCatalog(f"{self.registry} has no catalog to search (HTTP "
                                f"{resp.status} to /v2/_catalog). Docker Hub and most hosted "
                                "registries offer none: search on their website, or pull "
                                "the full name.")
            if resp.status != 200:
                raise self._fail(resp, f"list the catalog of {self.registry}")
            try:
                repos = json.loads(_read_json_bytes(resp, "the catalog"))["repositories"]
            except (ValueError, KeyError, TypeError):
                raise NoCatalog(f"{self.registry} answered /v2/_catalog with something that is "
                                "not a catalog: it offers none to search.") from None
            yield from (r for r in repos or [] if isinstance(r, str))
            link = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', resp.getheader("Link", ""))
            url = link.group(1) if link else None

    def tags(self, repo: str) -> list[str]:
        """The tags of a repository (``/v2/<name>/tags/list``); empty if it has none."""
        resp = self.request("GET", f"/v2/{repo}/tags/list", [_scope(repo)],
                            f"list the tags of {repo}")
        if resp.status == 404:
            resp.read()
            return []
        if resp.status != 200:
            raise self._fail(resp, f"list the tags of {self.registry}/{repo}")
        try:
            return sorted(json.loads(_read_json_bytes(resp, "a tag list")).get("tags") or [])
        except (ValueError, AttributeError):
            return []


def _read_json_bytes(resp: http.client.HTTPResponse, what: str) -> bytes:
    """A JSON body, read whole, refused past MAX_JSON or if it stops short."""
    try:
        data = resp.read(MAX_JSON + 1)
    except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:
        resp.close()
        raise RegistryError(f"reading {what} broke off ({str(exc) or type(exc).__name__}): "
                            "the registry stopped answering. Nothing was stored; pull "
                            "again.") from None
    if resp.length:  # it promised more, then hung up
        resp.close()
        raise RegistryError(f"reading {what} broke off after {len(data)} bytes, "
                            f"{resp.length} bytes short of what the registry promised. Nothing "
                            "was stored; pull again.")
    if len(data) > MAX_JSON:
        resp.close()
        raise RegistryError(f"{what} is larger than {MAX_JSON >> 20} MiB, which no real "
                            "manifest or config is: refused.")
    return data


# ---- progress -----------------------------------------------------------------------------

class Progress:
    """Docker's per-layer lines (``3f4d90098f5b: Pull complete``); bars at a terminal.

    ``Progress(None)`` says nothing; ``Progress(sys.stdout)`` prints as ``docker pull`` does.
    """

    def __init__(self, out: TextIO | None, bars: bool | None = None):
        self.out = out
        self.bars = bool(out is not None and out.isatty()) if bars is None else bars

    def line(self, text: str) -> None:
        """Print one line of the operation's story."""
        if self.out is not None:
            print(text, file=self.out, flush=True)

    def layer(self, digest: str, status: str) -> None:
        """``<12 hex digits>: <status>``, as Docker names layers."""
        self.line(f"{digest.removeprefix('sha256:')[:12]}: {status}")

    def note(self, digest: str, status: str) -> None:
        """A layer status shown at a terminal only, as a sign of life in a long step."""
        if self.bars:
            self.layer(digest, status)

    @contextlib.contextmanager
    def transfer(self, digest: str, total: int, verb: str) -> Iterator[Callable[[int], object]]:
        """A byte counter for one blob: a tqdm bar at a terminal, else nothing."""
        if not self.bars:
            yield lambda n: None
            return
        from ..progress import bar

        with bar(total=total, desc=f"{digest.removeprefix('sha256:')[:12]}: {verb}", unit="B",
                  unit_scale=True, unit_divisor=1024, leave=False, file=self.out) as bar:
            yield bar.update


# ---- which repositories hold which blobs (for cross-repository mounts) --------------------

def _read_record(store: Store) -> dict[str, dict[str, list[str]]]:
    try:
        data = json.loads((store.root / RECORD).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def known_repos(store: Store, registry: str, digest: str) -> list[str]:
    """Repositories of ``registry`` that this store pushed ``digest`` to or pulled it from."""
    return list(_read_record(store).get(registry, {}).get(digest, []))


def remember(store: Store, registry: str, repo: str, digests: list[str]) -> None:
    """Record that ``repo`` on ``registry`` has these blobs (newest first, a few per blob)."""
    with store.lock():
        record = _read_record(store)
        blobs = record.setdefault(registry, {})
        for digest in digests:
            blobs[digest] = ([repo] + [r for r in blobs.get(digest, []) if r != repo])[
                :REPOS_PER_BLOB]
        for reg in record.values():  # forget blobs the store no longer has
            for digest in [d for d in reg if not store.has_blob(d)]:
                del reg[digest]
        write_atomic(store.root / RECORD, json.dumps(record, indent=1, sort_keys=True).encode())


# ---- pull ---------------------------------------------------------------------------------

@dataclass
class Pulled:
    """What ``pull`` did: the image, the registry's digest for it, and whether it was new."""

    image: Image
    digest: str  # the manifest's (or the index's) digest, as the registry names it
    downloaded: bool  # False: the store had the image, and the tag already pointed at it


@dataclass
class _Layer:
    desc: dict[str, Any]
    diff_id: str
    blob: str | None = None  # the store's blob for it, when it has one already
    tmp: Path | None = None  # else where it was downloaded to
    media: str = ""


def pull(store: Store, ref: str | Reference, *, progress: Progress | None = None,
         insecure: bool = False, client: Client | None = None) -> Pulled:
    """``docker pull``: an image's manifest, config and layers into ``store``, all verified."""
    ref = parse(ref) if isinstance(ref, str) else ref
    try:
        return _pull(store, ref, progress or Progress(None), client or Client(
            ref.registry, insecure=insecure))
    except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:
        # Every read of a body that can stop has its own sentence; this is the net under them.
        raise RegistryError(f"Cannot pull {ref.familiar()}: the connection to {ref.registry} "
                            f"broke off ({str(exc) or type(exc).__name__}). Nothing was "
                            "stored; pull again.") from None


def _pull(store: Store, ref: Reference, say: Progress, client: Client) -> Pulled:
    reference = ref.digest or ref.tag or "latest"
    name = ref.familiar()
    with client as reg:
        data, media, top_digest = reg.manifest(ref.repository, reference)
        say.line(f"{reference}: Pulling from {ref.repository}")
        manifest = _image_manifest(reg, ref.repository, name, data, media)
        config = reg.blob(ref.repository, manifest["config"], f"the config of {name}")
        diff_ids = _diff_ids(config, len(manifest["layers"]), name)
        tags = [str(ref)] if ref.tag and not ref.digest else []
        blobs = [d["digest"] for d in manifest["layers"] + [manifest["config"]]]
        existing = _image_with_config(store, sha256_bytes(config))
        if existing is not None:
            moved = [t for t in tags if t not in existing.tags]
            for t in moved:
                store.tag(existing.manifest_digest, t)
            remember(store, ref.registry, ref.repository, blobs)
            return Pulled(store.get(existing.manifest_digest), top_digest, bool(moved))
        try:
            with store.lease():  # what it reuses stays while it downloads the rest
                image = _fetch(store, reg, ref.repository, name, manifest, config, diff_ids,
                               tags, say)
        except OSError as exc:
            if exc.errno in NO_SPACE:
                raise RegistryError(str(full_disk(f"pulling {name}", store.root, exc))) \
                    from None
            raise RegistryError(f"Cannot pull {name}: writing to the store at {store.root} "
                                f"failed ({exc.strerror or exc}). Nothing was stored; free "
                                "some space and pull again.") from None
    remember(store, ref.registry, ref.repository, blobs)
    return Pulled(image, top_digest, True)


def _image_manifest(reg: Client, repo: str, name: str, data: bytes, media: str
                    ) -> dict[str, Any]:
    """The image manifest for this host: ``data`` itself, or the one its index picks."""
    doc = _json(data, f"the manifest of {name}")
    media = doc.get("mediaType") or media
    if doc.get("schemaVersion") == 1 or media in SCHEMA1:
        raise RegistryError(f"{name} has a Docker schema 1 manifest, which Docker itself no "
                            "longer reads and edu does not either: push the image again with a "
                            "current docker or edu.")
    if media in INDEXES or (media not in IMAGE_MANIFESTS and "manifests" in doc):
        desc = _pick_platform(doc, name)
        data, media, _ = reg.manifest(repo, desc["digest"])
        doc = _json(data, f"the manifest of {name}")
        media = doc.get("mediaType") or desc.get("mediaType") or media
    if media not in IMAGE_MANIFESTS and not (media in ("", "application/json")
                                             and "config" in doc):
        raise RegistryError(f"{name} is a {media or 'manifest of no media type'}, which edu "
                            "cannot pull: it reads Docker schema 2 and OCI image manifests and "
                            "indexes.")
    config = doc.get("config")
    layers = doc.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise RegistryError(f"the manifest of {name} has no config or no layers list: the "
                            "registry holds a damaged image.")
    if config.get("mediaType", OCI_CONFIG) not in CONFIGS:
        raise RegistryError(f"{name} is not a container image: its config is a "
                            f"{config.get('mediaType')!r} (an artifact such as a Helm chart or "
                            "a signature), which edu cannot run.")
    for n, desc in enumerate([config] + layers):
        what = "its config" if n == 0 else f"layer {n}"
        _check_descriptor(desc, f"{what} of {name}")
        if n and desc.get("mediaType", OCI_LAYER_GZIP) not in LAYERS:
            why = " (zstd, which edu cannot unpack yet)" if "zstd" in str(desc.get(
                "mediaType")) else ""
            raise RegistryError(f"layer {n} of {name} has the media type "
                                f"{desc.get('mediaType')!r}{why}: edu pulls gzip and plain tar "
                                "layers only. Push the image with gzip layers.")
    return doc


def _pick_platform(index: dict[str, Any], name: str) -> dict[str, Any]:
    """The entry of a manifest list or OCI index that runs on this host."""
    os_name, arch = host_platform()
    found = []
    for entry in index.get("manifests") or []:
        plat = entry.get("platform") if isinstance(entry, dict) else None
        if not isinstance(plat, dict):
            continue
        found.append(f"{plat.get('os')}/{plat.get('architecture')}")
        if (plat.get("os"), plat.get("architecture")) == (os_name, arch):
            _check_descriptor(entry, f"the {os_name}/{arch} entry of {name}")
            return entry
    raise RegistryError(f"{name} has no image for {os_name}/{arch}, only for "
                        f"{', '.join(found) or 'no platform at all'}: it cannot run here.")


def _check_descriptor(desc: Any, what: str) -> None:
    ok = isinstance(desc, dict) and isinstance(desc.get("digest"), str) \
        and isinstance(desc.get("size"), int) and desc["size"] >= 0
    if not ok or not _DIGEST.fullmatch(desc["digest"]):
        shown = str(desc.get("digest") if isinstance(desc, dict) else desc)[:80]
        raise RegistryError(f"{what} has the digest {shown!r} or no size: edu reads sha256 "
                            "digests only (sha256: and 64 lowercase hex digits).")


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        raise RegistryError(f"{what} is not a JSON object: the registry holds a damaged image.")
    return doc


def _diff_ids(config: bytes, n_layers: int, name: str) -> list[str]:
    cfg = _json(config, f"the config of {name}")
    diff_ids = (cfg.get("rootfs") or {}).get("diff_ids")
    if cfg.get("os", "linux") != "linux":
        raise RegistryError(f"{name} is a {cfg.get('os')!r} image; edu runs Linux images only.")
    os_name, arch = host_platform()
    if cfg.get("architecture", arch) != arch:
        raise RegistryError(f"{name} has no image for {os_name}/{arch}, only for "
                            f"{cfg.get('os', 'linux')}/{cfg.get('architecture')} (its config "
                            "says so): it cannot run here. Pull a tag built for "
                            f"{os_name}/{arch}, or a multi-platform one.")
    if not isinstance(diff_ids, list) or len(diff_ids) != n_layers or not all(
            isinstance(d, str) and _DIGEST.fullmatch(d) for d in diff_ids):
        raise RegistryError(f"the config of {name} does not list one sha256 diff_id per layer "
                            f"of its manifest ({n_layers}): the image is damaged.")
    return diff_ids


def _image_with_config(store: Store, config_digest: str) -> Image | None:
    """The image in the store whose ID (config digest) this is, if any."""
    try:
        return store.get(config_digest)
    except StoreError:
        return None


def _fetch(store: Store, reg: Client, repo: str, name: str, manifest: dict[str, Any],
           config: bytes, diff_ids: list[str], tags: list[str], say: Progress) -> Image:
    """Download the layers the store lacks into staging, then add the image in one transaction."""
    from . import layers  # tarfile and friends: only commands that unpack pay for them

    plan = [_Layer(desc, diff_id, media=desc.get("mediaType", OCI_LAYER_GZIP))
            for desc, diff_id in zip(manifest["layers"], diff_ids, strict=True)]
    for layer in plan:
        layer.blob = _local_blob(store, layer)
        say.layer(layer.desc["digest"], "Already exists" if layer.blob else "Pulling fs layer")
    try:
        limit = layers.max_layer_bytes()
    except layers.LayerError as exc:
        raise RegistryError(f"Cannot pull {name}: {exc}") from None
    with store.staging() as stage:
        for n, layer in enumerate(plan, 1):
            if layer.blob:
                continue
            digest = layer.desc["digest"]
            if layer.desc["size"] > limit:
                raise RegistryError(f"{name} was refused: layer {n} ({digest[:19]}...) is "
                                    f"{layer.desc['size']} bytes, larger than any layer may "
                                    f"unpack to; {layers.limit_hint(limit)}. "
                                    "Nothing was stored.")
            layer.tmp = stage / digest[7:]
            with say.transfer(digest, layer.desc["size"], "Downloading") as update:
                reg.download(repo, layer.desc, layer.tmp, update, f"layer {n} of {name}")
            say.layer(digest, "Verifying Checksum")
            say.layer(digest, "Download complete")
        try:
            with store.transaction():
                blobs = []
                for layer in plan:
                    digest = layer.desc["digest"]
                    blob = layer.blob or store.put_blob_file(layer.tmp, expected=digest)
                    if layer.tmp:
                        say.note(digest, "Extracting")
                    store.ensure_layer(blob, layer.diff_id)
                    if layer.tmp:
                        say.layer(digest, "Pull complete")
                    blobs.append((blob, layer.media))
                return store.add_image(config, blobs, tags, sha256_bytes(config))
        except (StoreError, layers.LayerError) as exc:
            raise RegistryError(f"{name} was refused: {exc}") from exc


def _local_blob(store: Store, layer: _Layer) -> str | None:
    """The store's blob for this layer: the same blob, or another with the same content
    (held in the pull's lease, so that GC leaves it until the image is added)."""
    if store.hold([layer.desc["digest"]]):
        return layer.desc["digest"]
    info = store.layer_info(layer.diff_id)
    if info and store.hold([info["blob"]], [layer.diff_id]):
        layer.media = OCI_LAYER_GZIP if store.is_gzip(info["blob"]) else OCI_LAYER
        return info["blob"]
    return None


# ---- push ---------------------------------------------------------------------------------

@dataclass
class Pushed:
    """What ``push`` did: the manifest's digest and size, as ``docker push`` prints them."""

    reference: Reference
    digest: str
    size: int


def push(store: Store, ref: str | Reference, *, progress: Progress | None = None,
         insecure: bool = False, client: Client | None = None,
         chunk_size: int = UPLOAD_CHUNK) -> Pushed:
    """``docker push``: the blobs the registry lacks (or mounts), then the manifest."""
    ref = parse(ref) if isinstance(ref, str) else ref
    if ref.digest or not ref.tag:
        raise RegistryError(f"cannot push {ref.familiar()}: push NAME:TAG; a digest is what "
                            "the registry computes from what is pushed.")
    with store.lease():  # an image removed meanwhile stays whole until it is pushed
        return _push(store, ref, progress or Progress(None), insecure, client, chunk_size)


def _push(store: Store, ref: Reference, say: Progress, insecure: bool, client: Client | None,
          chunk_size: int) -> Pushed:
    image = store.use(str(ref))
    manifest = store.read_blob(image.manifest_digest)
    if sha256_bytes(manifest) != image.manifest_digest:
        raise RegistryError(f"the manifest of {ref.familiar()} in the store at {store.root} is "
                            "damaged: remove the image and pull or load it again.")
    descs = list(image.manifest["layers"]) + [image.manifest["config"]]
    say.line(f"The push refers to repository [{ref.name}]")
    for desc in reversed(image.manifest["layers"]):
        say.layer(desc["digest"], "Preparing")
    with client or Client(ref.registry, insecure=insecure) as reg:
        for desc in descs:
            status = _push_blob(store, reg, ref.repository, desc, say, chunk_size)
            if desc is not image.manifest["config"]:
                say.layer(desc["digest"], status)
        digest = reg.put_manifest(ref.repository, ref.tag, manifest,
                                  image.manifest.get("mediaType", OCI_MANIFEST))
    remember(store, ref.registry, ref.repository, [d["digest"] for d in descs])
    say.line(f"{ref.tag}: digest: {digest} size: {len(manifest)}")
    return Pushed(ref, digest, len(manifest))


def _push_blob(store: Store, reg: Client, repo: str, desc: dict[str, Any], say: Progress,
               chunk_size: int) -> str:
    digest = desc["digest"]
    path = store.blob_path(digest)
    if not path.is_file():
        raise RegistryError(f"blob {digest[:19]}... is missing from the store at {store.root}: "
                            "remove the image and pull or load it again.")
    if reg.has_blob(repo, digest, [_scope(repo, "pull,push")]):
        return "Layer already exists"
    sources = [r for r in known_repos(store, reg.registry, digest) if r != repo]
    size = path.stat().st_size
    with say.transfer(digest, size, "Pushing") as update:
        return reg.upload(repo, digest, path, size, mount_from=sources[0] if sources else None,
                          on_bytes=update, chunk_size=chunk_size)


# ---- search, login ------------------------------------------------------------------------

@dataclass
class Found:
    """One search result: a repository, some of its tags, and where it is."""

    name: str
    tags: list[str]
    where: str  # the registry, or "local"


def search_registry(registry: str, term: str, *, limit: int = 25, insecure: bool = False,
                    page_size: int = CATALOG_PAGE) -> list[Found]:
    """Repositories in a registry's catalog whose names contain ``term``, with their tags."""
    registry = normalize_registry(registry)
    if registry == DEFAULT_REGISTRY:
        raise NoCatalog("docker.io (Docker Hub) has no catalog to search: its search is the "
                        "website hub.docker.com. Give a registry that has one, such as "
                        "'edu search 127.0.0.1:5000/TERM'.")
    found = []
    with Client(registry, insecure=insecure) as reg:
        for repo in reg.catalog(page_size):
            if term.lower() in repo.lower():
                found.append(Found(f"{registry}/{repo}", reg.tags(repo), registry))
                if len(found) >= limit:
                    break
    return found


def search_local(store: Store, term: str, *, limit: int = 25) -> list[Found]:
    """Images in the store whose names contain ``term``."""
    by_name: dict[str, list[str]] = {}
    for image in store.images():
        for tag in image.tags:
            ref = parse(tag)
            if term.lower() in ref.familiar_name.lower():
                by_name.setdefault(ref.familiar_name, []).append(ref.tag or "")
    return [Found(n, sorted(t), "local") for n, t in sorted(by_name.items())][:limit]


def login(registry: str, user: str, password: str, *, insecure: bool = False) -> Path:
    """``docker login``: check the login with the registry, then keep it (mode 600)."""
    registry = normalize_registry(registry)
    with Client(registry, credentials=(user, password), insecure=insecure) as reg:
        reg.check_login()
    return save_login(registry, user, password)
