"""``python -m vm_compare.setup``: fetch the guest kernel and build the probe guest.

Run by scripts/setup.sh (so by ``make lab`` and ``make test``). Both steps are cached and
idempotent: the second run only checks that the files are there.
"""

from __future__ import annotations

import sys

from vm_compare import kernel_pkg, probe_guest


def main() -> int:
    """Make sure the pinned guest kernel and the probe guest's initramfs exist."""
    say = lambda msg: print(f"    {msg}", flush=True)  # noqa: E731
    try:
        info = kernel_pkg.ensure_kernel(progress=say)
        say(f"guest kernel {info.package} {info.version} at {info.vmlinuz}")
        say(f"probe guest initramfs at {probe_guest.ensure_probe_initramfs()}")
    except (kernel_pkg.KernelFetchError, probe_guest.GuestError) as exc:
        print(f"    {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
