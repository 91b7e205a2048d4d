"""Image references, parsed the way Docker parses them.

``busybox`` means ``docker.io/library/busybox:latest``; ``localhost:5000/app:v1`` names a
registry because its first component has a ``:`` (a port), a ``.`` (a domain) or is
``localhost``; ``name@sha256:...`` pins content instead of a tag. The grammar is Docker's
(distribution/reference), so a name that Docker refuses is refused here with the reason.

Introduced in notebooks/04-images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
                     r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])"
                     r"(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class ReferenceError(ValueError):
    """A reference Docker would refuse; the message says which part is wrong."""


@dataclass(frozen=True)
class Reference:
    """A parsed image reference: registry, repository path, and a tag and/or digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository`` in full, e.g. ``docker.io/library/busybox``."""
        return f"{self.registry}/{self.repository}"

    @property
    def familiar_name(self) -> str:
        """The short name Docker prints: ``busybox``, ``user/app``, ``localhost:5000/app``."""
        if self.registry == DEFAULT_REGISTRY:
            return self.repository.removeprefix("library/")
        return self.name

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def familiar(self) -> str:
        """The reference as Docker prints it: ``busybox:latest``."""
        out = self.familiar_name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def with_tag(self, tag: str) -> Reference:
        """The same repository with another tag (and no digest)."""
        return Reference(self.registry, self.repository, tag, None)


def parse(text: str, default_tag: bool = True) -> Reference:
    """Parse ``text`` as Docker does; with ``default_tag`` a bare name gets ``:latest``."""
    if not text or any(c.isspace() for c in text):
        raise ReferenceError(f"invalid reference format: {text!r} is empty or has spaces")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise ReferenceError(f"invalid reference format: {digest!r} is not a sha256 "
                                 "digest (sha256: and 64 lowercase hex digits)")
    tag = None
    slash, colon = rest.rfind("/"), rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise ReferenceError(f"invalid reference format: tag {tag!r} may only hold "
                                 "letters, digits, '_', '.' and '-' (at most 128)")
    registry, path = DEFAULT_REGISTRY, rest
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        if not _DOMAIN.fullmatch(first):
            raise ReferenceError(f"invalid reference format: registry {first!r}")
        registry, path = first, remainder
    if not _NAME.fullmatch(path):
        hint = " (repository names must be lowercase)" if path != path.lower() else ""
        raise ReferenceError(f"invalid reference format: repository name {path!r}{hint}")
    if len(registry) + 1 + len(path) > 255:
        raise ReferenceError("invalid reference format: name longer than 255 characters")
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(registry, path, tag, digest)
