"""vm_compare: boot a real virtual machine and measure it against a container.

The lessons put a container and a VM side by side on the student's own machine. This package
holds the VM half: a pinned Debian guest kernel (``kernel_pkg``), a readable initramfs writer
(``initramfs``), a tiny probe guest that boots and reports back (``probe_guest``), the
probes ``edu doctor`` runs (``probes``), guests made of an edu image's files
(``guest_image``), booting them through libvirt (``libvirt_guest``) and by hand with
libvirt's own command line (``raw_qemu``), and ``edu compare`` (``compare``, ``plots``).
Lesson 01 adds the domain XML's key lines explained (``domain``) and the host's ps of a
container and a guest side by side (``processes``).

Nothing heavy is imported here: ``libvirt`` is imported inside the functions that need it, so
``import vm_compare`` (and the ``edu`` CLI) stays fast. Import the submodules you need.

Introduced in notebooks/01-containers-vs-vms.
"""
