"""``edu compare``: the same image as a container and as a VM, measured side by side."""

from __future__ import annotations

import sys
from pathlib import Path

from .errors import UserError


def compare_cmd(args) -> int:
    """``edu compare [--quick] [--runs N] [--image NAME] [--full-disk] [--debian-sizes]
    [--out DIR]``."""
    import time

    from vm_compare import compare

    out = Path(args.out)
    started = time.monotonic()
    try:
        from edu_runtime.progress import bar as progress_bar

        bar = progress_bar(total=None, unit="step", desc="edu compare", file=sys.stderr)

        def say(text: str) -> None:
            bar.set_postfix_str(text[:70])
            bar.update(1)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        bar = None

        def say(text: str) -> None:
            print(text, file=sys.stderr)
    try:
        result = compare.run(quick=args.quick, runs=args.runs, image=args.image,
                             full_disk=args.full_disk, debian_sizes=args.debian_sizes,
                             out=out, progress=say)
    except (compare.CompareError, RuntimeError) as exc:  # BootError, GuestImageError too
        raise UserError(f"the comparison stopped: {exc}") from None
    finally:
        if bar is not None:
            bar.close()
    accel = result["machine"]["accel"]
    print(f"image {result['image']}, guest {result['guest']}, VM under {accel.upper()}"
          + ("" if accel == "kvm" else " (QEMU's emulator: no working KVM here)"))
    for name, row in result["startup"].items():
        print(f"  {name:28s} {row['median_s'] * 1e3:9.1f} ms  "
              f"[{row['min_s'] * 1e3:.1f} .. {row['max_s'] * 1e3:.1f}]")
    for name, why in result.get("skipped", {}).items():
        print(f"  {name:28s} left out: {why}")
    print(f"  libvirt's own overhead: {result['libvirt_overhead_ms']:.0f} ms")
    for name, kib in result["memory"]["pss_kib"].items():
        print(f"  memory, {name:24s} {kib / 1024:8.1f} MiB PSS")
    for key, why in result["scale"]["stopped"].items():
        points = result["scale"][key]
        print(f"  scale, {key:10s} {', '.join(str(p['count']) for p in points):12s}"
              + (f" stopped: {why}" if why else ""))
    k = result["kernel"]
    print(f"  kernel: host {k['host']['uname']}, container {k['container']['uname']} "
          f"(same boot_id: {k['container']['boot_id'] == k['host']['boot_id']}), guest "
          f"{k['guest']['uname']} (same boot_id: {k['guest']['boot_id'] == k['host']['boot_id']})")
    print(f"saved {out / 'compare.json'} and {len(result.get('figures', []))} figures "
          f"in {time.monotonic() - started:.0f} s")
    return 0


def register(sub) -> None:
    """Add ``compare`` to the ``edu`` parser."""
    p = sub.add_parser("compare", help="the same image as a container and as a VM, measured")
    p.add_argument("--quick", action="store_true",
                   help="minimal guest, busybox, 3 runs: about 2 minutes")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--image", default="busybox")
    p.add_argument("--full-disk", action="store_true",
                   help="boot a qcow2 disk with systemd instead of an initramfs")
    p.add_argument("--debian-sizes", action="store_true",
                   help="also size debian and its full-disk guest (built once, then cached; "
                        "not booted)")
    p.add_argument("--out", default="compare-results", help="where the JSON and PNGs go")
    p.set_defaults(func=compare_cmd)
