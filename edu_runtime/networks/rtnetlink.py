"""rtnetlink messages: the ones a container start sends, packed by hand, and each described.

``ip link``, ``ip addr`` and ``ip route`` are netlink requests: a 16-byte header (length,
type, flags, sequence number, port), a fixed part (``ifinfomsg`` for a link, ``ifaddrmsg``
for an address, ``rtmsg`` for a route) and attributes, each a (length, type) pair and a
value padded to 4 bytes, nested for a link's kind and a veth's peer. The kernel answers
each with an acknowledgement carrying an errno (0: done).

bridge.py sends most requests through pyroute2. The veth step's six, and the deletes of
undos, are packed here with ``struct``: pyroute2 spent about 9 ms of Python on the six, on
every container start, against well under 1 ms for the kernel (``strace -T``). A request
is a plain dict in pyroute2's shape (``header``, the fixed fields, ``attrs``), so
``describe`` tells both kinds the same way in a step's trace.

Introduced in notebooks/08-web-app.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

from .. import kernel

# From <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if.h>, <linux/if_link.h>, <linux/veth.h>.
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x200, 0x400, 0x300
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 17, 18, 20, 24
IFF_UP = 0x1
MAIN_TABLE, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1
RTM_NAMES = {16: "RTM_NEWLINK", 17: "RTM_DELLINK", 18: "RTM_GETLINK", 19: "RTM_SETLINK",
             20: "RTM_NEWADDR", 21: "RTM_DELADDR", 22: "RTM_GETADDR", 24: "RTM_NEWROUTE",
             25: "RTM_DELROUTE", 26: "RTM_GETROUTE"}
_PREFIXES = ("IFLA_INFO_", "IFLA_", "IFA_", "RTA_", "VETH_INFO_")

#: Attribute name -> (type number in its message or nest, how its value is packed).
_ATTRS = {"IFLA_ADDRESS": (1, "mac"), "IFLA_IFNAME": (3, "str"), "IFLA_MASTER": (10, "u32"),
          "IFLA_LINKINFO": (18, "nest"), "IFLA_NET_NS_FD": (28, "u32"),
          "IFLA_INFO_KIND": (1, "str"), "IFLA_INFO_DATA": (2, "nest"),
          "VETH_INFO_PEER": (1, "link"),
          "IFA_ADDRESS": (1, "ip"), "IFA_LOCAL": (2, "ip"),
          "RTA_GATEWAY": (5, "ip"), "RTA_TABLE": (15, "u32")}
_IFINFOMSG, _IFADDRMSG, _RTMSG, _HEADER = "=BxHiII", "=BBBBI", "=BBBBBBBBI", "=IHHII"


# ---- the requests -----------------------------------------------------------------------------

def new_veth(name: str, master: int, peer: str, netns_fd: int, mac: str) -> dict[str, Any]:
    """``ip link add NAME master BRIDGE up type veth peer PEER netns FD address MAC``."""
    peer_attrs = [("IFLA_IFNAME", peer), ("IFLA_NET_NS_FD", netns_fd), ("IFLA_ADDRESS", mac)]
    return _msg(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, flags=IFF_UP, change=IFF_UP,
                attrs=[("IFLA_IFNAME", name), ("IFLA_MASTER", master),
                       ("IFLA_LINKINFO", {"attrs": [
                           ("IFLA_INFO_KIND", "veth"),
                           ("IFLA_INFO_DATA", {"attrs": [
                               ("VETH_INFO_PEER", {"attrs": peer_attrs})]})]})])


def del_link(name: str) -> dict[str, Any]:
    """``ip link del NAME`` (a veth's other end goes with it)."""
    return _msg(RTM_DELLINK, 0, attrs=[("IFLA_IFNAME", name)])


def get_link(name: str) -> dict[str, Any]:
    """``ip link show NAME``."""
    return _msg(RTM_GETLINK, 0, attrs=[("IFLA_IFNAME", name)])


def set_up(index: int) -> dict[str, Any]:
    """``ip link set DEV up``."""
    return _msg(RTM_NEWLINK, 0, index=index, flags=IFF_UP, change=IFF_UP)


def add_address(index: int, ip: str, prefixlen: int) -> dict[str, Any]:
    """``ip addr add IP/PREFIXLEN dev DEV``."""
    return _msg(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, family=socket.AF_INET, index=index,
                prefixlen=prefixlen, attrs=[("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)])


def add_default_route(gateway: str) -> dict[str, Any]:
    """``ip route add default via GATEWAY``."""
    return _msg(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, family=socket.AF_INET,
                attrs=[("RTA_TABLE", MAIN_TABLE), ("RTA_GATEWAY", gateway)])


def _msg(kind: int, create: int, **fields: Any) -> dict[str, Any]:
    return {"header": {"type": kind, "flags": NLM_F_REQUEST | create}, "attrs": [], **fields}


# ---- sending ------------------------------------------------------------------------------------

class Socket:
    """A NETLINK_ROUTE socket (here, or ``sock``: one made in another network namespace)
    that sends one request at a time and waits for its answer."""

    def __init__(self, sock: socket.socket | None = None, netns: str = ""):
        self.sock = sock or socket.socket(socket.AF_NETLINK,
                                          socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                          socket.NETLINK_ROUTE)
        self.netns, self.seq = netns, 0

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def request(self, msg: dict[str, Any]) -> bytes:
        """Send ``msg``; its answer's payload (b"" for an acknowledgement), or OSError with
        the kernel's errno."""
        if kernel.recording():
            kernel.note("netlink", *describe(msg, self.netns))
        self.seq += 1
        ack = 0 if msg["header"]["type"] == RTM_GETLINK else NLM_F_ACK
        body = pack(msg)
        self.sock.send(struct.pack(_HEADER, 16 + len(body), msg["header"]["type"],
                                   msg["header"]["flags"] | ack, self.seq, 0) + body)
        while True:
            data = self.sock.recv(65536)
            length, kind, _, seq, _ = struct.unpack_from(_HEADER, data)
            if seq != self.seq:  # not ours (a late answer to an earlier request)
                continue
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", data, 16)[0]
                if code:
                    raise OSError(code, os.strerror(code))
                return b""
            return data[16:length]

    def link_index(self, name: str) -> int:
        """The index of device ``name`` in this socket's namespace."""
        return struct.unpack_from(_IFINFOMSG, self.request(get_link(name)))[2]


# ---- packing ------------------------------------------------------------------------------------

def pack(msg: dict[str, Any]) -> bytes:
    """A request's fixed part and attributes, as the kernel reads them."""
    kind = msg["header"]["type"]
    if kind in (RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK):
        head = _link_head(msg)
    elif kind == RTM_NEWADDR:
        head = struct.pack(_IFADDRMSG, msg["family"], msg["prefixlen"], 0, 0, msg["index"])
    else:
        head = struct.pack(_RTMSG, msg["family"], 0, 0, 0, MAIN_TABLE, RTPROT_BOOT, 0,
                           RTN_UNICAST, 0)
    return head + _attrs(msg["attrs"])


def _link_head(msg: dict[str, Any]) -> bytes:
    return struct.pack(_IFINFOMSG, 0, 0, msg.get("index", 0), msg.get("flags", 0),
                       msg.get("change", 0))


def _attrs(attrs: list[tuple[str, Any]]) -> bytes:
    out = b""
    for name, value in attrs:
        number, how = _ATTRS[name]
        if how == "str":
            data = value.encode() + b"\0"
        elif how == "u32":
            data = struct.pack("=I", value)
        elif how == "mac":
            data = bytes.fromhex(value.replace(":", ""))
        elif how == "ip":
            data = socket.inet_aton(value)
        elif how == "nest":
            data = _attrs(value["attrs"])
        else:  # a veth's peer: a link of its own, fixed part and attributes
            data = _link_head(value) + _attrs(value["attrs"])
        out += struct.pack("=HH", 4 + len(data), number) + data + b"\0" * (-len(data) % 4)
    return out


# ---- describing -------------------------------------------------------------------------------

def describe(msg, netns: str = "") -> tuple[str, str]:
    """A netlink request as a student reads it: ``("RTM_NEWLINK", "create ifname=... up")``.
    ``msg`` is one of the dicts above, or a pyroute2 message (the same shape)."""
    # ``netns`` names the namespace it was sent in when not ours: there ifindexes are its
    # own, so they stay numbers; ours are shown by name. A namespace's fd is <fd>.
    header = msg["header"]
    words = [f"netns={netns}"] if netns else []
    if header["flags"] & NLM_F_DUMP == NLM_F_DUMP:
        words.append("dump")
    elif header["flags"] & NLM_F_CREATE:
        words.append("create")
    words += _fields(msg, header["type"], by_name=not netns)
    return RTM_NAMES.get(header["type"]) or str(header["type"]), " ".join(words)


def _dev(index: int, by_name: bool) -> str:
    if by_name:
        try:
            return socket.if_indextoname(index)
        except OSError:
            pass
    return str(index)


def _fields(msg, kind: int, by_name: bool) -> list[str]:
    """``name=value`` words for a message's non-default fields and its attributes."""
    # Plain dict reads: pyroute2's own msg.get() searches the attributes too, and costs.
    field = dict.get
    attrs = [(a[0], a[1]) for a in field(msg, "attrs") or ()]
    named = dict(attrs)
    words = []
    if field(msg, "index"):
        words.append(f"dev={_dev(msg['index'], by_name)}")
    if field(msg, "change", 0) & IFF_UP:
        words.append("up" if field(msg, "flags", 0) & IFF_UP else "down")
    if kind == RTM_NEWROUTE and "RTA_DST" not in named:
        words.append("dst=default")
    if field(msg, "family") == socket.AF_INET and not attrs:
        words.append("family=inet")
    for name, value in attrs:
        if name in ("IFLA_LINKINFO", "IFLA_INFO_DATA"):
            words += _fields(value, 0, by_name)
            continue
        if name == "VETH_INFO_PEER":
            words.append(f"peer=({' '.join(_fields(value, 0, by_name=False))})")
            continue
        if (name, value) in (("IFA_LOCAL", named.get("IFA_ADDRESS")), ("RTA_TABLE", MAIN_TABLE)):
            continue  # the same as the address; the main routing table
        if name == "IFLA_MASTER":
            value = _dev(value, by_name)
        elif name == "IFLA_NET_NS_FD":
            value = "<fd>"
        elif name == "IFA_ADDRESS":
            value = f"{value}/{msg['prefixlen']}"
        elif name == "RTA_DST":
            value = f"{value}/{msg['dst_len']}"
        key = next((name[len(p):] for p in _PREFIXES if name.startswith(p)), name)
        words.append(f"{key.lower()}={value}")
    return words
