"""networks/conntrack.py: ``conntrack -L`` read from /proc/net/nf_conntrack. The lines are the
kernel's own (taken on this machine: a request to a published port, a container's query to
its database, a DNS lookup that left the host); the last test reads the live table while a
real connection is open."""

from __future__ import annotations

import os
import socket

from conftest import need

from edu_runtime.networks import conntrack

PUBLISHED = ("ipv4     2 tcp      6 116 TIME_WAIT src=127.0.0.1 dst=127.0.0.1 sport=44168 "
             "dport=18088 src=10.78.0.3 dst=10.78.0.1 sport=80 dport=44168 [ASSURED] mark=0 "
             "zone=0 use=2")
DATABASE = ("ipv4     2 tcp      6 116 TIME_WAIT src=10.78.0.3 dst=10.78.0.2 sport=47940 "
            "dport=3306 src=10.78.0.2 dst=10.78.0.3 sport=3306 dport=47940 [ASSURED] mark=0 "
            "zone=0 use=2")
LOOKUP = ("ipv4     2 udp      17 25 src=10.78.0.3 dst=10.255.255.53 sport=45117 dport=53 "
          "src=10.255.255.53 dst=192.0.2.2 sport=53 dport=45117 mark=0 zone=0 use=2")
PING = ("ipv4     2 icmp     1 29 src=10.78.0.3 dst=10.78.0.2 type=8 code=0 id=7 src=10.78.0.2 "
        "dst=10.78.0.3 type=0 code=0 id=7 mark=0 zone=0 use=2")


def test_a_published_port_is_dnat_and_masquerade():
    e = conntrack.parse(PUBLISHED)
    assert (e.proto, e.state, e.timeout, e.flags) == ("tcp", "TIME_WAIT", 116, ("ASSURED",))
    assert e.original == conntrack.Tuple("127.0.0.1", "127.0.0.1", 44168, 18088)
    assert e.reply == conntrack.Tuple("10.78.0.3", "10.78.0.1", 80, 44168)
    assert e.dnat and e.snat
    assert e.said() == ("tcp TIME_WAIT 127.0.0.1:44168 -> 127.0.0.1:18088, answered by "
                        "10.78.0.3:80 -> 10.78.0.1:44168")


def test_a_connection_on_the_bridge_is_not_rewritten_and_a_lookup_out_is_masqueraded():
    db = conntrack.parse(DATABASE)
    assert not db.dnat and not db.snat
    out = conntrack.parse(LOOKUP)
    assert (out.proto, out.state, out.original.dport) == ("udp", "", 53)
    assert out.snat and not out.dnat  # the host's address replaced the container's
    ping = conntrack.parse(PING)  # no ports: both directions still read
    assert str(ping.original) == "10.78.0.3 -> 10.78.0.2"
    assert conntrack.parse("") is None and conntrack.parse("garbage here") is None


def test_what_an_address_opened_leaves_out_what_was_there_before(tmp_path):
    table = tmp_path / "nf_conntrack"
    table.write_text(PUBLISHED + "\n" + DATABASE + "\n")
    before = conntrack.keys(table)
    table.write_text(PUBLISHED + "\n" + DATABASE + "\n" + LOOKUP + "\n")
    assert [e.original.dport for e in conntrack.opened_by("10.78.0.3", table=table)] == [3306, 53]
    assert [e.original.dport for e in conntrack.opened_by("10.78.0.3", before, table)] == [53]
    assert len(conntrack.involving("10.78.0.3", table)) == 3


def test_a_missing_table_is_one_sentence(tmp_path):
    try:
        conntrack.entries(tmp_path / "absent")
    except conntrack.ConntrackError as err:
        assert "modprobe nf_conntrack" in str(err)
    else:
        raise AssertionError("no error")


def test_the_live_table_shows_an_open_connection():
    need(os.geteuid() == 0, "root reads the connection table")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            sport = client.getsockname()[1]
            seen = [e for e in conntrack.involving("127.0.0.1")
                    if e.original == conntrack.Tuple("127.0.0.1", "127.0.0.1", sport, port)]
    assert [e.proto for e in seen] == ["tcp"]
