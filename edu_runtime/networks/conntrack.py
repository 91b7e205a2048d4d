"""The kernel's connection table: ``conntrack -L``, read from ``/proc/net/nf_conntrack``.

Netfilter remembers every connection that crosses the host's packet filter (with
``br_netfilter``, even those between two containers on one bridge), each as two tuples:

- the **original** direction, as its first packet left the sender: ``src=127.0.0.1
  dst=127.0.0.1 sport=44168 dport=8080`` (the notebook asking for the published port);
- the **reply** direction, as the answers will come: ``src=10.77.0.3 dst=10.77.0.1 sport=80
  dport=44168``. When the two differ, NAT happened: here the destination was rewritten to
  the container's port 80 (DNAT, ``-p 8080:80``) and the source to the bridge's gateway
  (masquerade), so the container answers the gateway and the kernel puts the addresses back.

An entry stays for a while after its connection closes (TCP's TIME_WAIT: 120 s, UDP: 30 s),
so the table is a short history too: what a container asked, and whom. A container that
looked up a name in DNS, or opened a connection out of the host, leaves an entry from its
address; one that did not leaves none. That makes it evidence, where a timing is only a
hint.

Each line is parsed as it stands (the ``conntrack`` command prints the same fields, in the
same order, without the leading ``ipv4     2``); reading needs root, and the module
``nf_conntrack`` with its /proc file (Debian's kernel has both).

Introduced in notebooks/08-web-app.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

TABLE = Path("/proc/net/nf_conntrack")
_PAIR = re.compile(r"(\w+)=(\S+)")


class ConntrackError(RuntimeError):
    """The connection table could not be read; the sentence says why and the fix."""


@dataclass(frozen=True)
class Tuple:
    """One direction of a connection: addresses and ports (ports 0 when the protocol has
    none)."""

    src: str
    dst: str
    sport: int = 0
    dport: int = 0

    def __str__(self) -> str:
        if self.sport or self.dport:
            return f"{self.src}:{self.sport} -> {self.dst}:{self.dport}"
        return f"{self.src} -> {self.dst}"


@dataclass(frozen=True)
class Entry:
    """One line of the table: protocol, state, the two directions, seconds left, flags."""

    proto: str
    state: str
    original: Tuple
    reply: Tuple
    timeout: int
    flags: tuple[str, ...] = field(default=())
    line: str = ""

    @property
    def key(self) -> tuple[str, Tuple]:
        """What names the connection (its protocol and original tuple)."""
        return self.proto, self.original

    @property
    def dnat(self) -> bool:
        """The destination was rewritten: the reply comes from elsewhere than asked."""
        return (self.reply.src, self.reply.sport) != (self.original.dst, self.original.dport)

    @property
    def snat(self) -> bool:
        """The source was rewritten (masquerade): the reply goes elsewhere than it came."""
        return (self.reply.dst, self.reply.dport) != (self.original.src, self.original.sport)

    def said(self) -> str:
        """The entry in one line: ``tcp TIME_WAIT 127.0.0.1:44168 -> 127.0.0.1:8080,
        answered by 10.77.0.3:80 -> 10.77.0.1:44168``."""
        return (f"{self.proto} {self.state or '-'} {self.original}, answered by {self.reply}")


def parse(line: str) -> Entry | None:
    """One line of /proc/net/nf_conntrack (or of ``conntrack -L``); None if not a connection."""
    words = line.split()
    if words and words[0] in ("ipv4", "ipv6"):
        words = words[2:]
    if len(words) < 3 or not words[1].isdigit():
        return None
    proto, timeout = words[0], int(words[2])
    rest = words[3:]
    state = rest[0] if rest and "=" not in rest[0] and not rest[0].startswith("[") else ""
    tuples: list[dict[str, str]] = []
    for word in rest:
        got = _PAIR.fullmatch(word)
        if not got:
            continue
        key, value = got[1], got[2]
        if key == "src":
            tuples.append({})
        if tuples and key in ("src", "dst", "sport", "dport") and key not in tuples[-1]:
            tuples[-1][key] = value
    if len(tuples) < 2:
        return None

    def as_tuple(d: dict[str, str]) -> Tuple:
        return Tuple(d.get("src", ""), d.get("dst", ""), int(d.get("sport", 0)),
                     int(d.get("dport", 0)))

    flags = tuple(w.strip("[]") for w in rest if w.startswith("[") and w.endswith("]"))
    return Entry(proto, state, as_tuple(tuples[0]), as_tuple(tuples[1]), timeout, flags,
                 line.strip())


def entries(table: Path = TABLE) -> list[Entry]:
    """Every connection the kernel tracks now (``conntrack -L``)."""
    try:
        text = table.read_text()
    except FileNotFoundError:
        raise ConntrackError(f"{table} does not exist: load the module (modprobe "
                             "nf_conntrack) or install conntrack and use conntrack -L") from None
    except PermissionError:
        raise ConntrackError(f"{table} is root's to read: run this as root") from None
    return [e for e in (parse(line) for line in text.splitlines()) if e is not None]


def involving(address: str, table: Path = TABLE) -> list[Entry]:
    """The connections with ``address`` at either end, in either direction."""
    return [e for e in entries(table)
            if address in (e.original.src, e.original.dst, e.reply.src, e.reply.dst)]


def opened_by(address: str, before: set | None = None, table: Path = TABLE) -> list[Entry]:
    """The connections ``address`` opened itself (the original direction's source), leaving
    out those already in ``before`` (a set of ``Entry.key`` taken earlier)."""
    before = before or set()
    return [e for e in entries(table) if e.original.src == address and e.key not in before]


def keys(table: Path = TABLE) -> set:
    """The keys of every entry now: a ``before`` for ``opened_by``."""
    return {e.key for e in entries(table)}
