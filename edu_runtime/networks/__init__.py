"""Networking: ``docker network`` and ``--network``, ``-p``, and names between containers.

The room has four parts, each readable alone:

- ``registry``: the records. Networks, their subnets, the addresses leased to containers
  (IPAM), and the ``/etc/hosts`` and ``resolv.conf`` each container reads. Files only: it
  imports no kernel code.
- ``bridge`` and ``nat``: the kernel objects. A Linux bridge per network, a veth pair per
  container, and nftables rules for the way out (masquerade) and for ``-p`` (DNAT).
  Rootless, ``holder`` keeps a user and network namespace of the user's own (RootlessKit's
  design) where the same objects are made, with pasta as its way out.
- ``steps``: the network steps of a container's plan (loopback, the name files, joining the
  user's holder).
- ``manage``: where they meet: removing a network, cleaning up after a killed ``edu``, and
  keeping bridges warm while a supervisor lives.

Used as ``from edu_runtime import networks``: ``networks.create("web")``, ``networks.ls()``,
``networks.inspect("web")``, ``networks.rm("web")``.

Introduced in notebooks/08-web-app.
"""

import importlib
from typing import Any

#: The public names, and the module of the room each comes from. Imported when first used
#: (PEP 562), so ``edu run --network none`` pays for none of them.
_FROM = {**dict.fromkeys(("cleanup_stale", "hold_warm", "release_warm", "retire_if_unused",
                          "rm", "teardown_all", "warm_holder", "warm_up"), "manage"),
         **dict.fromkeys(("DEFAULT", "DEFAULT_BRIDGE", "PREDEFINED", "NetworkError",
                          "alive_ids", "create", "endpoints", "get", "inspect", "lease", "ls",
                          "release", "release_stale", "uses_bridge"), "registry")}
__all__ = sorted(_FROM)


def __getattr__(name: str) -> Any:
    module = _FROM.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FROM))
