"""A class on one machine (issue 16): 60 ``edu run`` at once, from 60 processes.

Thirty ``edu run --rm busybox echo ...`` and thirty ``edu run -d busybox sleep ...`` start
together on the default bridge, while a detached container prints a numbered line every
100 ms to ``edu logs -f`` and to ``edu attach``. All 60 succeed: each ``--rm`` one printed
its line and left no record, each ``-d`` one printed its id and is running, then removed.
Both relays deliver every line, in order, none lost (attach from the line it joined at).
Each detached container's PID 1 holds its three standard streams and nothing else. The host
is as it was afterwards (tests/hoststate.py).

How long it takes (against the same 60 one after another, divided by the cores) and the
relays' largest gap are measured in bench/class_day.py, which this test shares its parts
with: timing is not asserted here.
"""

from __future__ import annotations

import os
import sys
import uuid

import hoststate
from conftest import REPO

from edu_runtime.life import control, states

sys.path.insert(0, str(REPO / "bench"))

STUDENTS = 30


def test_sixty_students_start_at_once_and_the_relays_keep_flowing(busybox):
    import class_day

    prefix = f"cc-{uuid.uuid4().hex[:8]}"
    before = hoststate.snapshot()
    mine: set[str] = set()
    printer = class_day.Printer(f"{prefix}-printer")
    mine.add(printer.id)
    try:
        assert printer.flowing(), "edu logs -f and edu attach never showed a line"
        _, results = class_day.at_once(class_day.commands(prefix, STUDENTS))
        mine |= {out.strip() for code, out, _ in results[1::2] if code == 0}
        assert [(code, err) for code, _, err in results if code != 0] == []
        for i in range(STUDENTS):
            code, out, _ = results[2 * i]  # --rm: its line, and no record left
            assert out == f"{prefix}-r{i}\n"
            code, out, _ = results[2 * i + 1]  # -d: its id, and running
            rec = control.find(f"{prefix}-d{i}")
            assert rec["id"] == out.strip() and rec["status"] == states.RUNNING
            # Its PID 1 holds stdin, stdout and stderr, nothing of the supervisor's (the
            # nft netlink socket) or of the clients waiting their turn (their terminals).
            assert sorted(os.listdir(f"/proc/{rec['pid']}/fd"), key=int) == ["0", "1", "2"]
        assert not [r for r in states.records() if r.get("name", "").startswith(
            f"{prefix}-r")]
    finally:
        read = printer.stop()
        class_day.remove_detached(prefix, STUDENTS)
    assert not [r for r in states.records() if r.get("name", "").startswith(prefix)]

    lines, err = read["logs"]
    assert err == "" and lines[-1] == "end"
    assert lines[:-1] == [str(n) for n in range(len(lines) - 1)], "logs -f lost a line"
    lines, err = read["attach"]
    assert lines[-1] == "end", err
    first = int(lines[0])
    assert lines[:-1] == [str(n) for n in range(first, first + len(lines) - 1)], \
        "attach lost a line"
    assert hoststate.wait_clean(before, mine=mine) == {}
