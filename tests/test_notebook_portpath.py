"""Lesson 08's figure of what is behind ``-p``: drawn from what the lesson read off a host
(its recording: a real run's values), it fits a projector, names each kernel object with
the name and number the kernel gave it, and a replay says so in its subtitle."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

from conftest import REPO  # noqa: E402
from test_plots import fits_a_projector  # noqa: E402

from edu_runtime.notebook.portpath import port_path  # noqa: E402

BEHIND = json.loads((REPO / "lessons/recordings/08-web-app/behind.json").read_text())


def test_the_path_names_each_kernel_object_and_fits_a_projector():
    fig = port_path(BEHIND, 8080)
    words = "\n".join(t.get_text() for t, _ in fits_a_projector(fig))
    assert fig.get_suptitle() == "Behind -p 8080:80: one request, four kernel objects"
    veth, entry = BEHIND["veth"], BEHIND["entry"]
    for shown in (BEHIND["bridge"], BEHIND["gateway"], veth["host"],
                  f"ifindex {veth['ifindex']}", f"eth0, ifindex {veth['eth0_ifindex']}",
                  f"to {BEHIND['ip']}:80", *BEHIND["netns"].values(),
                  f"sent      {entry['original']}", f"answered  {entry['reply']}"):
        assert shown in words, shown
    assert "read live off this machine" in words


def test_a_replayed_path_says_so():
    banner = "replay of a real run on lab-vm, 2026-12-06"
    words = [t.get_text() for t, _ in fits_a_projector(port_path(BEHIND, 20100, banner))]
    assert banner in words
