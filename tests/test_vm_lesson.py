"""What lesson 01 (containers vs VMs) shows beside `edu compare`, from data alone (no boot,
no libvirt: test_compare.py boots the real thing): the domain XML's key lines and what
libvirt added, the host's ps of a container and a guest side by side, the start-up ratio,
and figures of a replayed result saying so."""

from __future__ import annotations

import pytest
from test_plots import check_figures, drawn_texts, synthetic

from vm_compare import compare, domain, plots, processes

#: What libvirt 9 gave back for our busybox guest (libvirt_guest.completed_xml), trimmed.
COMPLETED = """<domain type='qemu'>
  <name>edu-guest-906abb09</name>
  <uuid>002edf32-b8ba-5586-bda4-b932b6cf74a7</uuid>
  <metadata xmlns:edu="https://github.com/edu-containers/vm_compare/owner">
    <edu:owner owner="17841:1057883"/>
  </metadata>
  <memory unit='KiB'>262144</memory>
  <currentMemory unit='KiB'>262144</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <kernel>/var/cache/edu/guest/kernel/6.1.192-3/boot/vmlinuz-6.1.0-57-amd64</kernel>
    <initrd>/var/cache/edu/guest/images/minimal-71bc4366c859-82891ed2b9fdd4d7/initrd.img</initrd>
    <cmdline>console=ttyS0 printk.time=1 panic=-1</cmdline>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
  </features>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
  </cpu>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' index='0' model='none'/>
    <controller type='pci' index='0' model='pci-root'/>
    <serial type='pty'>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
    </serial>
    <input type='mouse' bus='ps2'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""

#: The same guest as domain_xml wrote it, before libvirt completed it.
OURS = """<domain type="qemu">
  <name>edu-guest-busybox</name>
  <uuid>5a9c2f0e-0000-5000-8000-000000000000</uuid>
  <metadata>
    <edu:owner owner="1:1"/>
  </metadata>
  <memory unit="MiB">256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch="x86_64" machine="pc">hvm</type>
    <kernel>/var/cache/edu/guest/kernel/6.1.192-3/boot/vmlinuz-6.1.0-57-amd64</kernel>
    <initrd>/var/cache/edu/guest/images/minimal-71bc4366c859-82891ed2b9fdd4d7/initrd.img</initrd>
    <cmdline>console=ttyS0 printk.time=1 panic=-1</cmdline>
  </os>
  <features>
    <acpi />
  </features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <serial type="pty">
      <target port="0" />
    </serial>
    <controller type="usb" model="none" />
    <memballoon model="none" />
  </devices>
</domain>"""


def test_the_domain_xmls_key_lines_raw_then_their_meaning():
    lines = domain.key_lines(COMPLETED)
    assert [e["what"] for e in lines] == ["hypervisor", "memory", "vcpu", "machine", "kernel",
                                          "initrd", "cmdline", "cpu model", "emulator",
                                          "serial"]
    by = {e["what"]: e for e in lines}
    assert by["hypervisor"]["line"] == "<domain type='qemu'>"
    assert "TCG" in by["hypervisor"]["means"]
    assert "256 MiB" in by["memory"]["means"] and "1 virtual CPU" in by["vcpu"]["means"]
    assert "6.1.0-57-amd64" in by["kernel"]["means"] and "own kernel" in by["kernel"]["means"]
    assert "qemu-system-x86_64 process" in by["emulator"]["means"]
    assert "pc-i440fx-7.2" in by["machine"]["means"] and "qemu64" in by["cpu model"]["means"]
    # Raw lines fit a projector: a long path is cut in its middle, its ends kept.
    initrd = {e["what"]: e for e in domain.key_lines(COMPLETED, width=60)}["initrd"]["line"]
    assert len(initrd) == 60 and initrd.startswith("<initrd>/var/cache")
    assert initrd.endswith("initrd.img</initrd>") and "…" in initrd
    kvm = domain.key_lines(COMPLETED.replace("type='qemu'", "type='kvm'", 1))
    assert "KVM" in kvm[0]["means"] and "TCG" not in kvm[0]["means"]
    text = domain.explain(COMPLETED)
    assert all(len(line) <= domain.WIDTH for line in text.splitlines())
    assert text.splitlines()[0] == "<domain type='qemu'>"
    assert text.splitlines()[1].startswith("    → the hypervisor")


def test_what_libvirt_added_is_its_own_choices_only():
    added = domain.added_by_libvirt(OURS, COMPLETED)
    for line in ("<emulator>/usr/bin/qemu-system-x86_64</emulator>",
                 "<model fallback='forbid'>qemu64</model>",
                 "<type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>",
                 "<input type='mouse' bus='ps2'/>"):
        assert line in added
    # Ours (the quotes aside), the name, the uuid, the owner and closing tags are not new.
    assert not [a for a in added if a.startswith(("<name>", "<uuid>", "</", "<edu:owner",
                                                  "<kernel>", "<cmdline>", "<acpi"))]
    assert "<on_poweroff>destroy</on_poweroff>" not in added


def _row(pid, ppid, argv, user="root", threads=1, rss=1024):
    return {"pid": pid, "ppid": ppid, "user": user, "comm": argv[0].rsplit("/", 1)[-1],
            "threads": threads, "rss_kib": rss, "argv": argv}


TABLE = [
    _row(1, 0, ["/sbin/init"]),
    _row(900, 1, ["/usr/bin/tini", "-s", "--", "libvirtd"]),
    _row(1200, 1, ["/work/.venv/bin/python", "-m", "edu_cli.supervise", "--daemonize"]),
    _row(1234, 1200, ["sleep", "3600"]),
    _row(1300, 1, ["sleep", "3600"]),  # somebody else's, on a shared host
    _row(5678, 900, ["/usr/bin/qemu-system-x86_64", "-name", "guest=edu-guest-1,debug"],
         user="libvirt-qemu", threads=4, rss=225000),
]


def test_the_hosts_ps_has_the_containers_sleep_and_only_qemu_of_the_guest():
    seen = processes.classify(TABLE, {1234}, 5678)
    assert [r["pid"] for r in seen["rows"]] == [1234, 5678]
    container, qemu = seen["rows"]
    assert container["who"].startswith("the container's sleep")
    assert container["parent"] == "python -m edu_cli.supervise --daemonize"
    assert qemu["who"] == "the whole guest, its sleep included"
    assert qemu["parent"] == "tini -s -- libvirtd"
    assert seen["running_command"] == [
        {"pid": 1234, "whose": "the container"},
        {"pid": 1300, "whose": "neither (something else on this host)"}]
    assert seen["qemu_children"] == []
    assert processes.classify(TABLE + [_row(5700, 5678, ["x"])], {1234},
                              5678)["qemu_children"] == [5700]


def test_the_guests_ps_is_read_from_its_console():
    console = ("[    0.5] Run /init as init process\n"
               "EDU-GUEST-READY boot_id=b uname=6.1.0-57-amd64 uptime=2.0\n"
               "PID   USER     COMMAND\n"
               "    1 root     {run} /.edu/busybox sh /.edu/run\n"
               "    2 root     [kthreadd]\n"
               "[    2.1] random: crng init done\n"
               "   89 root     /bin/sh -c ps; echo EDU-PS-END; exec sleep 3600\n"
               "   90 root     ps\n"
               "EDU-PS-END\n")
    listing = processes.guest_listing(console, "EDU-GUEST-READY")
    assert listing.splitlines() == [
        "PID   USER     COMMAND", "    1 root     {run} /.edu/busybox sh /.edu/run",
        "    2 root     [kthreadd]",
        "   89 root     /bin/sh -c ps; echo EDU-PS-END; exec sleep 3600", "   90 root     ps"]


def test_the_report_fits_a_projector_and_says_whose_sleep_is_where():
    guest_ps = "PID   USER     COMMAND\n" + "".join(
        f"{n:5d} root     [kworker/{n}]\n" for n in range(1, 40)) + \
        "   89 root     /bin/sh -c ps; echo EDU-PS-END; exec sleep 3600\n   90 root     ps\n"
    result = {"image": "busybox", "accel": "tcg", "command": "sleep 3600",
              "container": {"ps": "PID   USER     COMMAND\n    1 root     sh -c ps\n"},
              "guest": {"ps": guest_ps}, **processes.classify(TABLE, {1234}, 5678)}
    text = processes.report(result)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= processes.WIDTH and len(lines) <= 30, text
    assert "sleep 3600" in text and "... 35 more" in text and "[kworker/40]" not in text
    assert ("Host processes running `sleep 3600`: 1 of the container's (pid 1234), 1 of "
            "something else on this host; none of the guest's.") in " ".join(lines)
    assert "Child processes of the guest's qemu: none. The guest's" in " ".join(lines[-3:])


def test_the_startup_ratio_is_the_guests_median_over_the_containers():
    result = synthetic()
    assert compare.startup_ratio(result) == pytest.approx(7.1 / 0.028)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plots._plt().close("all")


def test_figures_of_a_replayed_result_say_so():
    banner = ("replay of a real run on Debian GNU/Linux 12 (bookworm), 2 cores, Linux "
              "6.1.0-57-amd64, 2026-01-31")
    figures = check_figures({**synthetic(), "replay": banner})
    for name, fig in figures.items():
        words = [t.get_text() for t, _ in drawn_texts(fig)]
        assert [w for w in words if banner in w and "TCG" in w], name
    live = plots.figures(synthetic())
    assert not [t for fig in live.values() for t, _ in drawn_texts(fig)
                if "replay of" in t.get_text()]
    png = plots.png(live["startup.png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_a_recording_keeps_no_progress_bar_widget(monkeypatch):
    """The measurement's tqdm bar is a widget: shown live, but not recorded (its text/plain
    is only "HBox(children=...)"); a figure is recorded."""
    from types import SimpleNamespace

    from edu_runtime.notebook import replay

    shown = []
    pub = SimpleNamespace(publish=lambda data, metadata=None: shown.append(data))
    monkeypatch.setattr(replay, "_ipython", lambda: SimpleNamespace(display_pub=pub))
    with replay.Capture() as cap:
        pub.publish({replay.WIDGET_MIME: {"model_id": "1"}, "text/plain": "HBox(children=())"})
        pub.publish({"image/png": "iVBOR", "text/plain": "<figure>"})
    assert cap.outputs == [{"data": {"image/png": "iVBOR", "text/plain": "<figure>"}}]
    assert len(shown) == 2  # both still shown live
