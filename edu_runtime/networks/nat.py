"""NAT: how packets leave a bridge network, and how ``-p 8080:80`` lets them in.

A container's address (10.77.0.2) means nothing outside this host, so three kinds of rule
sit in netfilter, the kernel's packet filter, in one nftables table that edu owns,
``ip edu`` (IPv4 only, like edu's networks; ``nft list table ip edu`` shows it all):

- **masquerade** (source NAT): a packet from 10.77.0.0/16 leaving through any device that is
  not an edu bridge gets the host's address as its source, so replies find their way back;
- **DNAT** (destination NAT) for each published port: a packet for HOSTPORT on one of the
  host's addresses is rewritten to CONTAINER_IP:PORT, in ``prerouting`` (from outside) and
  in ``output`` (from the host itself). 127.0.0.1 works too, which needs
  ``route_localnet`` on the bridge and a masquerade of 127.0.0.0/8 sources, so the
  container can answer; a ``guard`` rule drops packets *from* the bridge for 127.0.0.0/8,
  or a container could reach the host's loopback services (CVE-2020-8558);
- **forward** accepts for the bridges, and a drop between two edu networks (Docker isolates
  them too).

Why text (``nft -f -``) to write and JSON (``nft -j``) to read: the text is what a student
types and reads in the lesson, and one ``nft -f`` batch is applied all or nothing; reading
back needs handles and comments, which JSON gives without parsing prose. Each rule carries a
comment: ``edu-net:BRIDGE`` for a network's rules, ``edu:CONTAINER_ID`` for a container's,
so undo deletes exactly its own rules, found by comment. The text and the JSON go through
libnftables, the library inside the ``nft`` command: the same language and output, but no
new process per command (5 ms each, several per container start).

An accept in one nftables table does not overrule a drop in another: a packet must pass every
base chain on its hook. dockerd sets iptables' FORWARD policy to DROP, and with
``br_netfilter`` even packets between two containers on one bridge cross that chain. So
when dockerd's ``DOCKER-USER`` chain exists (and it stays when dockerd stops), edu inserts
accept rules for its bridges there, with ``iptables``, the way Docker asks users to.

DNAT holds no socket, so a host program listening on the published port would silently stop
getting its connections, and one started later would succeed and never see any. So edu
does what docker-proxy does: it *holds* each published port with a socket of its own, for
as long as the container runs. bind() is the check, atomic and exactly the kernel's own
rule; /proc/net/tcp and udp are only read afterwards, to say who has the port. A TCP port is
held listening, with SO_REUSEADDR, as Go's listener in docker-proxy is: a closing
connection's TIME_WAIT does not block us, and any later bind() fails. DNAT rewrites every
connection before it could reach that socket. A UDP port is held bound, without
SO_REUSEADDR, which for UDP would let a second socket share it.

Introduced in notebooks/08-web-app.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import struct
import subprocess
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .. import kernel
from . import registry

FAMILY, TABLE = "ip", "edu"

_TABLE = f"""table {FAMILY} {TABLE} {{
\tchain publish {{
\t}}
\tchain prerouting {{
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tfib daddr type local jump publish
\t}}
\tchain output {{
\t\ttype nat hook output priority -100; policy accept;
\t\tfib daddr type local jump publish
\t}}
\tchain postrouting {{
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t}}
\tchain forward {{
\t\ttype filter hook forward priority filter; policy accept;
\t}}
\tchain guard {{
\t\ttype filter hook prerouting priority raw; policy accept;
\t}}
}}
"""


class PortError(registry.NetworkError):
    """A port that cannot be published: bad syntax, or in use."""


# ---- -p and -P -------------------------------------------------------------------------------

@dataclass(frozen=True)
class PortMapping:
    """One published port: HOST_IP:HOST_PORT -> CONTAINER_PORT/PROTO (host_port 0: any)."""

    container_port: int
    proto: str = "tcp"
    host_ip: str = "0.0.0.0"
    host_port: int = 0

    def __str__(self) -> str:
        return f"{self.host_ip}:{self.host_port}->{self.container_port}/{self.proto}"

    def to_dict(self) -> dict[str, Any]:
        """As stored in the network's record."""
        return asdict(self)


def _port(text: str, spec: str) -> int:
    if re.fullmatch(r"[0-9]+-[0-9]+", text):
        raise PortError(f"invalid port specification {spec!r}: port ranges are not supported "
                        "by edu: publish each port with its own -p")
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise PortError(f"invalid port specification {spec!r}: {text!r} is not a port "
                        "(1 to 65535); the form is [IP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp]")
    return int(text)


def parse_port(spec: str) -> PortMapping:
    """Parse one ``-p`` value as Docker does: ``80``, ``8080:80``, ``127.0.0.1:8080:80``,
    ``127.0.0.1::80`` and each with ``/tcp`` or ``/udp``."""
    rest, _, proto = spec.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp"):
        raise PortError(f"invalid port specification {spec!r}: protocol {proto!r} is not "
                        "supported, use /tcp or /udp")
    if rest.startswith("["):
        raise PortError(f"invalid port specification {spec!r}: edu's networks are IPv4 "
                        "only; give an IPv4 address or none")
    parts = rest.split(":")
    if len(parts) > 3 or not parts[-1]:
        raise PortError(f"invalid port specification {spec!r}: the form is "
                        "[IP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp]")
    host_ip = parts[0] if len(parts) == 3 else ""
    host_port = parts[-2] if len(parts) >= 2 else ""
    if host_ip:
        try:
            host_ip = str(ipaddress.IPv4Address(host_ip))
        except ValueError:
            raise PortError(f"invalid port specification {spec!r}: {host_ip!r} is not an "
                            "IPv4 address") from None
    return PortMapping(_port(parts[-1], spec), proto, host_ip or "0.0.0.0",
                       # host port 0, as none: any free port (Docker's too)
                       _port(host_port, spec) if host_port.strip("0") else 0)


def parse_publish(specs: list[str], publish_all: bool = False,
                  exposed: dict[str, Any] | None = None) -> list[PortMapping]:
    """``-p`` values, plus with ``-P`` each of the image's EXPOSEd ports on a random port."""
    mappings = [parse_port(s) for s in specs]
    if publish_all:
        done = {(m.container_port, m.proto) for m in mappings}
        for key in sorted(exposed or {}):
            m = parse_port(key)
            if (m.container_port, m.proto) not in done:
                mappings.append(m)
    seen: dict[tuple[str, int], PortMapping] = {}
    for m in mappings:
        if not m.host_port:
            continue
        for (proto, port), other in seen.items():
            if proto == m.proto and port == m.host_port and _overlap(other.host_ip, m.host_ip):
                raise PortError(f"host port {m.host_port}/{m.proto} is published twice "
                                f"({other} and {m}): give each -p its own host port")
        seen[(m.proto, m.host_port)] = m
    return mappings


def _overlap(a: str, b: str) -> bool:
    return a == b or "0.0.0.0" in (a, b)


# ---- holding the host ports ------------------------------------------------------------------

def reserve(mappings: list[PortMapping]) -> tuple[list[PortMapping], list[socket.socket]]:
    """Hold each host port with a socket (port 0: the kernel picks one); the mappings with
    their real ports, and the sockets to keep open while the container runs.

    Raises PortError, holding nothing, if any port is taken.
    """
    held: list[socket.socket] = []
    out = []
    try:
        for m in mappings:
            kind = socket.SOCK_STREAM if m.proto == "tcp" else socket.SOCK_DGRAM
            sock = socket.socket(socket.AF_INET, kind)
            held.append(sock)
            if m.proto == "tcp":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            kernel.note("bind", f"{m.host_ip}:{m.host_port}", m.proto)  # as asked: 0 is any
            try:
                sock.bind((m.host_ip, m.host_port))
            except OSError as exc:
                raise _port_error(m, exc) from None
            if m.proto == "tcp":
                kernel.note("listen", f"{m.host_ip}:{m.host_port}")
                sock.listen(1)
            out.append(replace(m, host_port=sock.getsockname()[1]))
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return out, held


def _port_error(m: PortMapping, exc: OSError) -> PortError:
    where = f"Bind for {m.host_ip}:{m.host_port} failed"
    if exc.errno == errno.EADDRNOTAVAIL:
        return PortError(f"{where}: {m.host_ip} is not an address of this host: publish on "
                         "one of its addresses (ip -4 addr), or leave the IP out for all")
    if exc.errno == errno.EACCES:
        start = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text().strip()
        return PortError(f"{where}: ports below {start} are privileged and edu runs without "
                         f"root here: publish on a higher port (-p 8080:{m.container_port}), "
                         "or let users bind it (as root: sysctl "
                         f"net.ipv4.ip_unprivileged_port_start={m.host_port})")
    if exc.errno != errno.EADDRINUSE:
        return PortError(f"{where}: {exc.strerror}")
    for cid, (network, ep) in sorted(registry.endpoints().items()):
        for p in ep.get("ports", []):
            if (p["proto"], p["host_port"]) == (m.proto, m.host_port) and \
                    _overlap(p["host_ip"], m.host_ip):
                return PortError(f"{where}: port is already allocated (container "
                                 f"{ep.get('name') or cid[:12]} on network {network} "
                                 f"publishes {PortMapping(**p)}): choose another host port, "
                                 "or stop that container")
    who = who_uses(m.proto, m.host_port)
    if who and f"(uid {os.geteuid()})" not in who:  # another user's: not ours to stop
        return PortError(f"{where}: address already in use ({who}): choose another host "
                         "port; in a classroom each user publishes on their own range "
                         "(EDU_PORTS, or \"ports\" in ~/.config/edu/course.json)")
    return PortError(f"{where}: address already in use"
                     + (f" ({who})" if who else " by another program on this host")
                     + ": choose another host port, or stop that program "
                     "(ss -ltnup shows who listens where)")


def who_uses(proto: str, port: int) -> str:
    """Who has ``port``, from /proc/net/{tcp,udp}[6]: e.g. ``python3 (pid 42) on 0.0.0.0, of
    user ann (uid 1001)``. The socket's owner (its uid) shows even across users; its process
    only where we may read its fds (root's, or our own): else ``a socket on 0.0.0.0 of user
    ann (uid 1001), whose processes are not yours to see``."""
    inodes: dict[str, tuple[str, str]] = {}
    for name in (proto, proto + "6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            addr, _, hexport = f[1].rpartition(":")
            # 0A is LISTEN for TCP; 07 is an unconnected, bound socket for UDP.
            if int(hexport, 16) == port and f[3] in ("0A", "07"):
                inodes[f[9]] = (_addr(addr), _user(int(f[7])))
    if not inodes:
        return ""
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            inode = target[8:-1] if target.startswith("socket:[") else ""
            if inode in inodes:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                addr, user = inodes[inode]
                if b"edu_cli.supervise" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return (f"a container of user {user}: edu's supervisor (pid {pid}) holds "
                            f"it on {addr}")
                return f"{comm} (pid {pid}) on {addr}, of user {user}"
    return ", ".join(sorted({f"a socket on {addr} of user {user}, whose processes are not "
                             "yours to see" for addr, user in inodes.values()}))


def _user(uid: int) -> str:
    """A user's name and uid, as ``ann (uid 1001)``."""
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _addr(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # /proc prints IPv6 as four host-order 32-bit words.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return f"[{ipaddress.IPv6Address(words)}]"


# ---- nft -------------------------------------------------------------------------------------

_NETLINK_NETFILTER = 12
_NFT_MSG_GETGEN = (10 << 8) | 16  # NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN

class _Nft:
    """libnftables, the library the ``nft`` command is a thin front end to, through ctypes.

    The same commands and scripts as ``nft``, with the same output, but without starting a
    process for each one (about 5 ms apiece here; a container start needs several). One
    context per network namespace, since its netlink socket acts in the namespace it was
    opened in.
    """

    JSON = 1 << 4       # NFT_CTX_OUTPUT_JSON: `nft -j`
    STATELESS = 1 << 2  # NFT_CTX_OUTPUT_STATELESS: `nft -s`, no counters

    def __init__(self):
        import ctypes
        import threading

        try:
            lib = ctypes.CDLL("libnftables.so.1")
        except OSError:
            raise registry.NetworkError(
                "nftables is not installed, and bridge networking needs it for NAT: "
                "apt-get install nftables") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
        for fn in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, fn).restype = ctypes.c_char_p
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.lib, self.lock, self.ctxs = lib, threading.Lock(), {}

    def run(self, command: str, flags: int = 0) -> str:
        """Run one command (or a whole script); its output, or NetworkError with nft's words."""
        netns = os.stat("/proc/thread-self/ns/net").st_ino
        with self.lock:
            ctx = self.ctxs.get(netns)
            if ctx is None:
                ctx = self.ctxs[netns] = self.lib.nft_ctx_new(0)
                self.lib.nft_ctx_buffer_output(ctx)
                self.lib.nft_ctx_buffer_error(ctx)
            self.lib.nft_ctx_output_set_flags(ctx, flags)
            rc = self.lib.nft_run_cmd_from_buffer(ctx, command.encode())
            out = self.lib.nft_ctx_get_output_buffer(ctx).decode()
            err = self.lib.nft_ctx_get_error_buffer(ctx).decode()
        if rc:
            raise registry.NetworkError(err.strip() or f"nft failed: {command.strip()}")
        return out


_nft: _Nft | None = None


def nft(*args: str, script: str | None = None) -> str:
    """What ``nft ARGS`` prints (``-j``: JSON, ``-s``: no counters, ``-f -``: run
    ``script``), through libnftables; NetworkError if nft refuses."""
    global _nft
    if _nft is None:
        _nft = _Nft()
    flags = (_Nft.JSON if "-j" in args else 0) | (_Nft.STATELESS if "-s" in args else 0)
    words = [a for a in args if a not in ("-j", "-s")]
    if words[:2] == ["-f", "-"]:
        command = script or ""
    else:
        command = " ".join(words)
    if words[:1] != ["list"]:
        _note(command)
    try:
        return _nft.run(command, flags)
    except registry.NetworkError as exc:
        raise registry.NetworkError(f"nft {' '.join(args)} failed: {exc}") from None


def _note(command: str) -> None:
    """Note each rule (a script's lines) for the trace; a block (the table) on one line."""
    if not kernel.recording():
        return
    if "{" in command:
        kernel.note("nft", " ".join(command.split()))
        return
    for line in command.splitlines():
        if line.strip():
            kernel.note("nft", line.strip())


def table_exists() -> bool:
    """Whether edu's table (``ip edu``) is in the kernel."""
    try:
        nft("list", "table", FAMILY, TABLE)
        return True
    except registry.NetworkError:
        return False


def rules() -> list[dict[str, Any]]:
    """edu's rules from ``nft -j list table ip edu``: chain, handle and comment of each."""
    return _listed() or []


def _listed() -> list[dict[str, Any]] | None:
    """``rules()``, or None when edu's table is not there: one listing answers both."""
    try:
        data = json.loads(nft("-j", "list", "table", FAMILY, TABLE))
    except registry.NetworkError as exc:
        if "No such file or directory" in str(exc):  # (nft's words for a missing table)
            return None
        raise
    return [{"chain": r["chain"], "handle": r["handle"], "comment": r.get("comment", "")}
            for item in data["nftables"] if (r := item.get("rule"))]


def rule_lines(tag: str) -> list[str]:
    """The rules carrying comment ``tag`` as ``nft list`` prints them, ``chain: rule``."""
    if not table_exists():
        return []
    out, chain = [], ""
    for line in nft("list", "table", FAMILY, TABLE).splitlines():
        words = line.split()
        if words[:1] == ["chain"]:
            chain = words[1]
        elif f'comment "{tag}"' in line:
            out.append(f"{chain}: {line.strip()}")
    return out


def _delete_tagged(keep) -> list[str]:
    """Delete every rule whose comment ``keep(comment)`` refuses; the comments deleted."""
    doomed = [r for r in rules() if r["comment"].startswith("edu") and not keep(r["comment"])]
    if doomed:
        nft("-f", "-", script="".join(
            f"delete rule {FAMILY} {TABLE} {r['chain']} handle {r['handle']}\n"
            for r in doomed))
    return sorted({r["comment"] for r in doomed})


def ensure_table() -> None:
    """Create edu's table and its chains, unless it is there."""
    with registry.locked():
        if not table_exists():
            nft("-f", "-", script=_TABLE)


def network_rules(network: dict[str, Any]) -> str:
    """The nft lines for one network's bridge: guard, masquerade, forward."""
    br, subnet = network["bridge"], network["subnet"]
    tag = f'comment "edu-net:{br}"'
    add = f"add rule {FAMILY} {TABLE}"
    return "\n".join([
        f'{add} guard iifname "{br}" ip daddr 127.0.0.0/8 drop {tag}',
        f'{add} postrouting ip saddr {subnet} oifname != "edu*" masquerade {tag}',
        f'{add} postrouting ip saddr 127.0.0.0/8 oifname "{br}" masquerade {tag}',
        f'{add} forward iifname "{br}" oifname "edu*" oifname != "{br}" drop {tag}',
        f'{add} forward iifname "{br}" accept {tag}',
        f'{add} forward oifname "{br}" ct state established,related accept {tag}',
        f'{add} forward oifname "{br}" ct status dnat accept {tag}',
    ]) + "\n"


#: bridge -> nftables' ruleset generation at which its rules were last seen in place
_rules_seen: dict[str, int] = {}


def generation() -> int:
    """nftables' ruleset generation: the kernel counts every change to any table, so an
    unchanged number means an unchanged ruleset. One netlink request (NFT_MSG_GETGEN) of
    about 15 µs, against a listing's 0.3 to 2 ms (it grows with the ruleset)."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                             _NETLINK_NETFILTER)
        try:  # nlmsghdr, then nfgenmsg (family, version, resource id)
            sock.send(struct.pack("=IHHII", 20, _NFT_MSG_GETGEN, 1, 1, 0) + bytes(4))
            data = sock.recv(4096)
        finally:
            sock.close()
    except OSError as exc:
        raise registry.NetworkError(f"nftables' ruleset generation: {exc.strerror}") from None
    length, kind = struct.unpack_from("=IH", data)
    offset = 20 if kind != 2 else length  # NLMSG_ERROR: no attributes to read
    while offset + 4 <= length:  # its attributes: NFTA_GEN_ID (1) is the number
        size, kind = struct.unpack_from("=HH", data, offset)
        if kind & 0x7FFF == 1:
            return struct.unpack_from(">I", data, offset + 4)[0]
        offset += (size + 3) & ~3
    raise registry.NetworkError("nftables did not say its ruleset generation: is nf_tables "
                                "loaded? (modprobe nf_tables)")


def network_ready(network: dict[str, Any]) -> bool:
    """Whether a network's rules are in place (checks only; remembered until nftables'
    ruleset changes, so a process forked from this one knows it too)."""
    return _rules_in_place(network) is True


def _rules_in_place(network: dict[str, Any]) -> bool | None:
    """True: the network's rules are in place (seen now, or seen at this very ruleset
    generation); False: edu's table is there without them; None: there is no table."""
    bridge = network["bridge"]
    try:
        gen: int | None = generation()
    except registry.NetworkError:
        gen = None  # not known: listed every time, and nothing remembered
    if gen is not None and _rules_seen.get(bridge) == gen:
        return True
    found = _listed()
    if found is None:
        return None
    if not any(r["comment"] == f"edu-net:{bridge}" for r in found):
        return False
    if gen is not None:
        _rules_seen[bridge] = gen
    return True


def ensure_network(network: dict[str, Any]) -> None:
    """Add a network's rules unless they are there, and its DOCKER-USER accepts if needed.
    Runs on every start: rules seen in place at an unchanged ruleset generation are not
    listed again."""
    with registry.locked():
        ready = _rules_in_place(network)
        if ready is None:
            nft("-f", "-", script=_TABLE)
        if not ready:
            nft("-f", "-", script=network_rules(network))
        docker_user_ensure(network["bridge"])


def remove_network(network: dict[str, Any]) -> None:
    """Remove a network's rules and its DOCKER-USER accepts."""
    with registry.locked():
        tag = f"edu-net:{network['bridge']}"
        _delete_tagged(lambda comment: comment != tag)
        docker_user_remove(network["bridge"])


def publish(container_id: str, ip: str, mappings: list[PortMapping]) -> None:
    """DNAT each host port to ``ip``: one rule per port, tagged with the container's id."""
    lines = []
    for m in mappings:
        daddr = "" if m.host_ip == "0.0.0.0" else f"ip daddr {m.host_ip} "
        lines.append(f"add rule {FAMILY} {TABLE} publish {daddr}{m.proto} dport {m.host_port} "
                     f'dnat to {ip}:{m.container_port} comment "edu:{container_id}"\n')
    if lines:
        with registry.locked():
            ensure_table()
            nft("-f", "-", script="".join(lines))


def unpublish(container_id: str) -> None:
    """Delete the container's rules (found by their ``edu:ID`` comment)."""
    with registry.locked():
        _delete_tagged(lambda comment: comment != f"edu:{container_id}")


def cleanup_stale(alive: set[str]) -> list[str]:
    """Delete the rules of containers not in ``alive``; the ids whose rules went."""
    with registry.locked():
        gone = _delete_tagged(lambda c: not c.startswith("edu:") or c[4:] in alive)
    return [c[4:] for c in gone]


def teardown_all() -> None:
    """Delete edu's table and every DOCKER-USER rule edu added."""
    with registry.locked():
        if table_exists():
            nft("delete", "table", FAMILY, TABLE)
        docker_user_remove(None)


# ---- iptables' DOCKER-USER -------------------------------------------------------------------

def _iptables(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["iptables", "-w", *args], capture_output=True, text=True)


def docker_user_exists() -> bool:
    """Whether dockerd's DOCKER-USER chain is in iptables' filter table (dockerd made it)."""
    return bool(shutil.which("iptables")) and \
        _iptables("-t", "filter", "-n", "-L", "DOCKER-USER").returncode == 0


def _docker_user_specs(bridge: str) -> list[list[str]]:
    tag = ["-m", "comment", "--comment", f"edu-net:{bridge}", "-j", "ACCEPT"]
    return [["-i", bridge, *tag],
            ["-o", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED,DNAT", *tag]]


#: bridge -> DOCKER-USER as nftables listed it right after edu's accepts went in
_docker_user_seen: dict[str, str] = {}


def _iptables_is_nft() -> bool:
    """Whether ``iptables`` is iptables-nft, whose chains nftables can list (Debian's default)."""
    found = shutil.which("iptables")
    return bool(found) and os.path.realpath(found).endswith("xtables-nft-multi")


def _docker_user_nft() -> str | None:
    """DOCKER-USER as ``nft -s list chain ip filter DOCKER-USER`` prints it; None if absent."""
    try:
        return nft("-s", "list", "chain", "ip", "filter", "DOCKER-USER")
    except registry.NetworkError:
        return None


def docker_user_ensure(bridge: str, check_only: bool = False) -> None:
    """Insert accepts for ``bridge`` at the top of DOCKER-USER, when that chain exists
    (``check_only``: see whether they are there, and remember it, but insert nothing).

    With iptables-nft the chain is an nftables chain, so a warm process (the supervisor)
    checks it in-process: unchanged since edu's accepts went in means they are still there,
    and no ``iptables`` process is started (three per container otherwise)."""
    fast = _iptables_is_nft()
    if check_only and not fast:  # iptables processes, and nothing to remember them by
        return
    if fast:
        seen = _docker_user_nft()
        if seen is None or _docker_user_seen.get(bridge) == seen:
            return
    if not docker_user_exists():
        return
    for spec in reversed(_docker_user_specs(bridge)):
        if _iptables("-C", "DOCKER-USER", *spec).returncode:
            if check_only:
                return
            kernel.note("iptables", shlex.join(["-I", "DOCKER-USER", *spec]))
            done = _iptables("-I", "DOCKER-USER", *spec)
            if done.returncode:
                raise registry.NetworkError(
                    f"iptables -I DOCKER-USER failed ({done.stderr.strip()}): dockerd's "
                    f"FORWARD policy would drop {bridge}'s packets; check iptables -S")
    if fast and (seen := _docker_user_nft()) is not None:
        _docker_user_seen[bridge] = seen


def docker_user_lines() -> list[str]:
    """edu's rules in DOCKER-USER, as ``iptables -S`` prints them."""
    if not docker_user_exists():
        return []
    listing = _iptables("-S", "DOCKER-USER").stdout.splitlines()
    return [line for line in listing if re.search(r"--comment \"?edu-net:", line)]


def docker_user_remove(bridge: str | None) -> None:
    """Delete edu's DOCKER-USER rules for ``bridge`` (None: for every bridge)."""
    if bridge is None:
        _docker_user_seen.clear()
    else:
        _docker_user_seen.pop(bridge, None)
    for line in docker_user_lines():
        if bridge is None or f"edu-net:{bridge}" in line.replace('"', "").split():
            _iptables("-D", *shlex.split(line)[1:])
